//! The `fusioninfer up` command: flags, the summary, live readiness, and shutdown.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use fusioninfer_api::{InferenceService, RoutingStrategy};
use fusioninfer_core::manifest::parse_inference_services;

use super::plan::{
    Backend, BackendSource, LocalOptions, LocalPlan, Ports, SchedulerOverride, parse_addresses,
    split_args,
};
use super::probe;
use super::process::{install_signal_handlers, last_signal_name, signals_received};
use super::stack::{Readiness, RunDir, Stack, ToolPaths, Tools, UpError};

/// Flags of `fusioninfer up`.
#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    /// InferenceService manifest (`-` for standard input).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Which InferenceService of the file (needed when it holds several).
    #[arg(long)]
    pub name: Option<String>,
    /// Envoy's listener port: the OpenAI base URL is http://127.0.0.1:PORT/v1.
    #[arg(long, default_value_t = Ports::default().gateway)]
    pub port: u16,
    /// Envoy's admin port.
    #[arg(long, default_value_t = Ports::default().gateway_admin)]
    pub envoy_admin_port: u16,
    /// Port of the first model server; the others take the next ones, role after role.
    #[arg(long, default_value_t = Ports::default().first_backend)]
    pub backend_port: u16,
    /// The endpoint picker's ext_proc port; its gRPC health port is the next one.
    #[arg(long, default_value_t = Ports::default().epp_grpc)]
    pub epp_port: u16,
    /// The endpoint picker's metrics port.
    #[arg(long, default_value_t = Ports::default().epp_metrics)]
    pub epp_metrics_port: u16,
    /// Use model servers that already run for a role: ROLE=IP:PORT[,IP:PORT…] (loopback).
    #[arg(long, value_name = "ROLE=ADDRESSES")]
    pub role_addresses: Vec<String>,
    /// Start each replica of a role with a command: 'ROLE=vllm serve M --port {port}'
    /// ({port}, {replica}, {model}, {name} are replaced; $PORT is set).
    #[arg(long, value_name = "ROLE=COMMAND")]
    pub role_command: Vec<String>,
    /// Extra flags for every simulator, e.g. '--time-scale 0.1 --num-blocks 512'.
    #[arg(long, value_name = "FLAGS", allow_hyphen_values = true)]
    pub sim_args: Option<String>,
    /// Route with this strategy instead of the router role's.
    #[arg(long, conflicts_with = "epp_config")]
    pub strategy: Option<RoutingStrategy>,
    /// Route with this EndpointPickerConfig file instead of the router role's.
    #[arg(long)]
    pub epp_config: Option<PathBuf>,
    /// Seed of the endpoint picker's tie breaks.
    #[arg(long)]
    pub epp_seed: Option<u64>,
    /// The simulator binary (default: next to this binary, then PATH).
    #[arg(long)]
    pub simulator: Option<PathBuf>,
    /// The endpoint picker binary (default: next to this binary, then PATH).
    #[arg(long)]
    pub epp: Option<PathBuf>,
    /// The Envoy binary (default: PATH, then ./.venv/bin/envoy).
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// The prefill/decode sidecar binary, for decoders behind a `pd-disaggregation` router
    /// (default: next to this binary, then PATH).
    #[arg(long)]
    pub pd_sidecar: Option<PathBuf>,
    /// Keep generated files and logs here (default: a temporary directory, removed after a
    /// clean stop).
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Give up if not everything is ready after this many seconds.
    #[arg(long, default_value_t = 60)]
    pub ready_timeout: u64,
}

impl UpArgs {
    /// The local-mode options these flags describe.
    pub fn options(&self) -> Result<LocalOptions, String> {
        let mut role_addresses = BTreeMap::new();
        for item in &self.role_addresses {
            let (role, list) = item
                .split_once('=')
                .ok_or_else(|| format!("--role-addresses {item:?}: expected ROLE=IP:PORT,…"))?;
            let list =
                parse_addresses(list).map_err(|e| format!("--role-addresses {role}: {e}"))?;
            role_addresses.insert(role.to_owned(), list);
        }
        let mut role_commands = BTreeMap::new();
        for item in &self.role_command {
            let (role, command) = item
                .split_once('=')
                .ok_or_else(|| format!("--role-command {item:?}: expected ROLE=COMMAND"))?;
            role_commands.insert(role.to_owned(), command.to_owned());
        }
        let scheduler = match (&self.strategy, &self.epp_config) {
            (Some(s), _) => Some(SchedulerOverride::Strategy(*s)),
            (None, Some(path)) => Some(SchedulerOverride::Config {
                name: format!("EndpointPickerConfig {}", path.display()),
                text: std::fs::read_to_string(path)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?,
            }),
            (None, None) => None,
        };
        let epp_health = self
            .epp_port
            .checked_add(1)
            .ok_or("--epp-port must leave room for the health port after it")?;
        Ok(LocalOptions {
            ports: Ports {
                gateway: self.port,
                gateway_admin: self.envoy_admin_port,
                first_backend: self.backend_port,
                epp_grpc: self.epp_port,
                epp_health,
                epp_metrics: self.epp_metrics_port,
            },
            role_addresses,
            role_commands,
            sim_args: self.sim_args.as_deref().map(split_args).unwrap_or_default(),
            scheduler,
            epp_seed: self.epp_seed,
        })
    }
}

/// Picks the service named `name`, or the only one.
pub fn select_service(
    services: Vec<InferenceService>,
    name: Option<&str>,
) -> Result<InferenceService, String> {
    let names: Vec<String> = services
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect();
    match name {
        Some(name) => services
            .into_iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .ok_or_else(|| format!("no InferenceService {name:?} (found: {})", names.join(", "))),
        None if services.len() == 1 => Ok(services.into_iter().next().expect("one")),
        None if services.is_empty() => Err("no InferenceService in the file".to_owned()),
        None => Err(format!(
            "the file holds {} InferenceServices ({}); choose one with --name",
            services.len(),
            names.join(", ")
        )),
    }
}

/// The lines describing what will run.
pub fn summary(plan: &LocalPlan, tools: &Tools) -> String {
    let mut out = String::new();
    for role in &plan.roles {
        let (first, last) = (
            role.backends.first().map(|b| b.address.port()),
            role.backends.last().map(|b| b.address.port()),
        );
        let ports = match (first, last) {
            (Some(a), Some(b)) if a == b => format!("127.0.0.1:{a}"),
            (Some(a), Some(b)) => format!("127.0.0.1:{a}-{b}"),
            _ => "-".to_owned(),
        };
        let what = match &role.source {
            BackendSource::Simulator => "simulator".to_owned(),
            BackendSource::Command(c) => format!("`{}`", shorten(c, 40)),
            BackendSource::External => "already running".to_owned(),
        };
        out.push_str(&format!(
            "  {:<9} {:<18} {:<22} {}, model {}\n",
            role.name,
            format!("{} × {what}", role.backends.len()),
            ports,
            role.component_type.as_str(),
            role.model
        ));
    }
    let sidecars: Vec<&Backend> = plan.backends().filter(|b| b.sidecar.is_some()).collect();
    if let (Some(first), Some(sidecar)) = (
        sidecars.first(),
        sidecars.first().and_then(|b| b.sidecar.as_ref()),
    ) {
        let prefillers: Vec<String> = sidecar.prefillers.iter().map(|a| a.to_string()).collect();
        out.push_str(&format!(
            "  {:<9} {:<18} {:<22} in front of each decoder (server on {}, metrics {}); prefill targets {}\n",
            "pd",
            format!("{} × pd sidecar", sidecars.len()),
            first.address,
            sidecar.engine,
            sidecar.metrics,
            prefillers.join(", ")
        ));
    }
    out.push_str(&format!(
        "  {:<9} {:<18} {:<22} {}\n",
        "router", "endpoint picker", plan.router.grpc, plan.router.describe
    ));
    out.push_str(&format!(
        "  {:<9} {:<18} {:<22} {}\n",
        "gateway",
        "envoy",
        plan.gateway.listener,
        tools.envoy.display()
    ));
    out
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs `fusioninfer up`; returns the exit code (0 after a clean stop on a signal).
pub fn run(args: &UpArgs) -> ExitCode {
    match run_inner(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: &UpArgs) -> Result<ExitCode, String> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("reading standard input: {e}"))?
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| format!("reading {}: {e}", args.file.display()))?
    };
    let services =
        parse_inference_services(&text).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let isvc = select_service(services, args.name.as_deref())?;
    let plan = LocalPlan::new(&isvc, &args.options()?).map_err(|e| {
        format!(
            "{} cannot run locally: {e}",
            isvc.metadata.name.as_deref().unwrap_or("?")
        )
    })?;
    let taken = probe::check_ports(&plan.ports_to_bind());
    if !taken.is_empty() {
        return Err(UpError::PortsTaken(taken).to_string());
    }
    let tools = Tools::find(
        &plan,
        &ToolPaths {
            simulator: args.simulator.clone(),
            epp: args.epp.clone(),
            envoy: args.envoy.clone(),
            pd_sidecar: args.pd_sidecar.clone(),
        },
    )
    .map_err(|e| e.to_string())?;

    say(&format!(
        "fusioninfer up: {} from {}",
        plan.service,
        args.file.display()
    ));
    print!("{}", summary(&plan, &tools));

    install_signal_handlers();
    let run_dir = match &args.run_dir {
        Some(dir) => RunDir::At(dir.clone()),
        None => RunDir::Temporary,
    };
    let mut stack = Stack::start(plan, &tools, run_dir).map_err(|e| e.to_string())?;
    say(&format!("  files     {}", stack.run_dir().display()));
    let interrupted = || signals_received() > 0;
    let mut progress = |r: &Readiness| say(&format!("  starting: {r}"));
    let ready = stack.wait_ready(
        Duration::from_secs(args.ready_timeout),
        &interrupted,
        &mut progress,
    );
    let elapsed = match ready {
        Ok(elapsed) => elapsed,
        Err(UpError::Interrupted) => {
            say(&format!("{} while starting; stopping", last_signal_name()));
            let report = stack.stop(Duration::from_secs(5), &|| signals_received() > 1, false);
            say(&format!("stopped {} processes", report.stopped));
            return Ok(ExitCode::from(130));
        }
        Err(error) => {
            let dir = stack.run_dir().to_owned();
            stack.stop(Duration::from_secs(5), &|| false, true);
            return Err(format!(
                "{error}\n(files and logs kept in {})",
                dir.display()
            ));
        }
    };
    let plan = stack.plan();
    say(&format!(
        "ready in {:.1}s. OpenAI base URL: {}",
        elapsed.as_secs_f64(),
        plan.base_url()
    ));
    say(&format!(
        "  try: curl -s {}/chat/completions -H 'content-type: application/json' \\\n         -d '{{\"model\": \"{}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'",
        plan.base_url(),
        plan.model()
    ));
    say("Ctrl-C stops everything.");

    let failure = loop {
        if signals_received() > 0 {
            break None;
        }
        if let Err(error) = stack.check() {
            break Some(error);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    match failure {
        None => {
            say(&format!(
                "{}: stopping gateway, router and model servers",
                last_signal_name()
            ));
            let report = stack.stop(Duration::from_secs(5), &|| signals_received() > 1, false);
            let killed = if report.killed.is_empty() {
                String::new()
            } else {
                format!(
                    " ({} killed after the grace period)",
                    report.killed.join(", ")
                )
            };
            say(&format!("stopped {} processes{killed}", report.stopped));
            Ok(ExitCode::SUCCESS)
        }
        Some(error) => {
            let dir = stack.run_dir().to_owned();
            let report = stack.stop(Duration::from_secs(5), &|| signals_received() > 0, true);
            Err(format!(
                "{error}\nstopped the other {} processes; files and logs kept in {}",
                report.stopped,
                dir.display()
            ))
        }
    }
}
