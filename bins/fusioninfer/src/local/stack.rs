//! A running local stack: model servers, the endpoint picker and Envoy, started from a
//! [`LocalPlan`], probed until ready, stopped together.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::plan::{BackendSource, Launch, LocalPlan, PlanErrors};
use super::probe::{self, PortTaken};
use super::process::{self, StopReport, Supervisor};
use super::tools::{self, Tool, ToolMissing};

/// Series of the endpoint picker's gauge of ready endpoints.
pub const EPP_READY_SERIES: &str = "fusioninfer_epp_endpoints{state=\"ready\"}";

/// Explicit program paths (flags); `None` = look them up ([`tools::find`]).
#[derive(Clone, Debug, Default)]
pub struct ToolPaths {
    /// `--simulator`.
    pub simulator: Option<PathBuf>,
    /// `--epp`.
    pub epp: Option<PathBuf>,
    /// `--envoy`.
    pub envoy: Option<PathBuf>,
    /// `--pd-sidecar`.
    pub pd_sidecar: Option<PathBuf>,
}

/// The programs a plan needs, found.
#[derive(Clone, Debug)]
pub struct Tools {
    /// The simulator, when some role is simulated.
    pub simulator: Option<PathBuf>,
    /// The endpoint picker.
    pub epp: PathBuf,
    /// Envoy.
    pub envoy: PathBuf,
    /// The prefill/decode sidecar, when some decoder has one.
    pub pd_sidecar: Option<PathBuf>,
}

impl Tools {
    /// Finds what `plan` needs. Envoy is looked up last, so that its (most likely) absence is
    /// reported after the project's own binaries are known to be there.
    pub fn find(plan: &LocalPlan, paths: &ToolPaths) -> Result<Tools, ToolMissing> {
        let simulator = if plan
            .roles
            .iter()
            .any(|r| r.source == BackendSource::Simulator && !r.backends.is_empty())
        {
            Some(tools::find(Tool::Simulator, paths.simulator.as_deref())?)
        } else {
            None
        };
        let epp = tools::find(Tool::Epp, paths.epp.as_deref())?;
        let pd_sidecar = if plan.backends().any(|b| b.sidecar.is_some()) {
            Some(tools::find(Tool::PdSidecar, paths.pd_sidecar.as_deref())?)
        } else {
            None
        };
        let envoy = tools::find(Tool::Envoy, paths.envoy.as_deref())?;
        Ok(Tools {
            simulator,
            epp,
            envoy,
            pd_sidecar,
        })
    }
}

/// Why the stack cannot start or stopped on its own.
#[derive(Debug)]
pub enum UpError {
    /// The spec or the options cannot run locally.
    Plan(PlanErrors),
    /// Ports are taken (every one is listed).
    PortsTaken(Vec<PortTaken>),
    /// A program is missing.
    Tool(ToolMissing),
    /// Files or processes could not be created.
    Io(String),
    /// A child exited.
    Exited {
        /// Which one.
        name: String,
        /// How.
        status: String,
        /// Its log.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// Not ready in time.
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// The last readiness seen.
        readiness: Readiness,
        /// Where the logs are.
        logs: PathBuf,
    },
    /// A signal arrived while starting.
    Interrupted,
}

impl fmt::Display for UpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpError::Plan(errors) => write!(f, "the spec cannot run locally: {errors}"),
            UpError::PortsTaken(taken) => {
                for (i, t) in taken.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    let why = if t.error.kind() == std::io::ErrorKind::AddrInUse {
                        "is already in use".to_owned()
                    } else {
                        format!("cannot be bound ({})", t.error)
                    };
                    write!(
                        f,
                        "port {} on 127.0.0.1 {why}: it is planned for {}; stop what listens there or choose another port with {}",
                        t.port.port, t.port.what, t.port.flag
                    )?;
                }
                Ok(())
            }
            UpError::Tool(missing) => write!(f, "{missing}"),
            UpError::Io(message) => write!(f, "{message}"),
            UpError::Exited {
                name,
                status,
                log,
                tail,
            } => {
                write!(f, "{name} exited ({status}); log {}", log.display())?;
                if !tail.is_empty() {
                    write!(f, ", last lines:")?;
                    for line in tail.lines() {
                        write!(f, "\n    {line}")?;
                    }
                }
                Ok(())
            }
            UpError::Timeout {
                waited,
                readiness,
                logs,
            } => write!(
                f,
                "not ready after {:.0?}: {readiness} (logs in {}; real engines may need a longer --ready-timeout)",
                waited,
                logs.display()
            ),
            UpError::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl std::error::Error for UpError {}

/// Readiness of one serving role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleReadiness {
    /// Role name.
    pub name: String,
    /// Model servers answering `GET /health` with 200.
    pub ready: usize,
    /// Model servers in the role.
    pub total: usize,
}

/// Envoy's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayState {
    /// Not answering yet.
    Starting,
    /// The admin interface says LIVE.
    Live,
    /// A request through the listener (`GET /v1/models`, routed by the picker) succeeded.
    Serving,
}

/// What is ready, as shown while starting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    /// Per serving role.
    pub roles: Vec<RoleReadiness>,
    /// Endpoints the picker counts as ready (`None` while it does not answer).
    pub router: Option<usize>,
    /// Endpoints in total.
    pub router_total: usize,
    /// Envoy.
    pub gateway: GatewayState,
}

impl Readiness {
    /// Everything ready: every server healthy, the picker sees them all, Envoy serves.
    pub fn is_ready(&self) -> bool {
        self.roles.iter().all(|r| r.ready == r.total)
            && self.router == Some(self.router_total)
            && self.gateway == GatewayState::Serving
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for role in &self.roles {
            write!(f, "{} {}/{} · ", role.name, role.ready, role.total)?;
        }
        match self.router {
            Some(n) => write!(f, "router {n}/{} endpoints · ", self.router_total)?,
            None => write!(f, "router starting · ")?,
        }
        match self.gateway {
            GatewayState::Starting => write!(f, "gateway starting"),
            GatewayState::Live => write!(f, "gateway live"),
            GatewayState::Serving => write!(f, "gateway ready"),
        }
    }
}

/// Where the stack keeps its generated files and logs.
#[derive(Clone, Debug)]
pub enum RunDir {
    /// A fresh directory under the system's temporary directory, removed after a clean stop.
    Temporary,
    /// This directory (created if needed), kept.
    At(PathBuf),
}

/// A started stack. Dropping it stops every process (see [`process`]).
#[derive(Debug)]
pub struct Stack {
    plan: LocalPlan,
    run_dir: PathBuf,
    remove_run_dir: bool,
    supervisor: Supervisor,
    started: Instant,
    sticky_ready: Vec<bool>,
}

impl Stack {
    /// Checks every port, writes the endpoint picker's endpoints file and configuration and
    /// Envoy's, then starts the model servers, the endpoint picker and Envoy (in that order,
    /// without waiting: readiness is [`Stack::wait_ready`]'s job). The calling thread must
    /// outlive the stack (see [`process`]).
    pub fn start(plan: LocalPlan, tools: &Tools, run_dir: RunDir) -> Result<Stack, UpError> {
        let taken = probe::check_ports(&plan.ports_to_bind());
        if !taken.is_empty() {
            return Err(UpError::PortsTaken(taken));
        }
        let (dir, remove_run_dir) = match run_dir {
            RunDir::Temporary => (
                std::env::temp_dir().join(format!(
                    "fusioninfer-up-{}-{}",
                    plan.service,
                    std::process::id()
                )),
                true,
            ),
            RunDir::At(dir) => (dir, false),
        };
        let io = |what: &str, e: std::io::Error| UpError::Io(format!("{what}: {e}"));
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs)
            .map_err(|e| io(&format!("creating {}", logs.display()), e))?;
        let write = |name: &str, text: &str| -> Result<PathBuf, UpError> {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| io(&format!("writing {}", path.display()), e))?;
            Ok(path)
        };
        let endpoints = write("endpoints.json", &plan.endpoints_file())?;
        let epp_config = write("epp-config.yaml", &plan.router.config)?;
        let envoy_config = write("envoy.yaml", &plan.envoy_config())?;

        let mut stack = Stack {
            sticky_ready: vec![false; plan.backends().count()],
            plan,
            run_dir: dir,
            remove_run_dir,
            supervisor: Supervisor::new(),
            started: Instant::now(),
        };
        let spawn_error =
            |name: &str, e: std::io::Error| UpError::Io(format!("starting {name}: {e}"));
        let backends: Vec<_> = stack.plan.backends().cloned().collect();
        for backend in backends {
            let log = logs.join(format!("{}.log", backend.name));
            match &backend.launch {
                None => {}
                Some(Launch::Simulator(args)) => {
                    let program = tools
                        .simulator
                        .as_deref()
                        .ok_or_else(|| UpError::Io("no simulator binary was located".to_owned()))?;
                    stack
                        .supervisor
                        .spawn(&backend.name, program, args, &[], &log)
                        .map_err(|e| spawn_error(&backend.name, e))?;
                }
                Some(Launch::Shell(command)) => {
                    stack
                        .supervisor
                        .spawn(
                            &backend.name,
                            Path::new("/bin/sh"),
                            &["-c".to_owned(), format!("exec {command}")],
                            &[(
                                "PORT".to_owned(),
                                backend.engine_address().port().to_string(),
                            )],
                            &log,
                        )
                        .map_err(|e| spawn_error(&backend.name, e))?;
                }
            }
        }
        for backend in stack.plan.backends().filter(|b| b.launch.is_some()) {
            let Some(sidecar) = &backend.sidecar else {
                continue;
            };
            let program = tools.pd_sidecar.as_deref().ok_or_else(|| {
                UpError::Io("no prefill/decode sidecar binary was located".to_owned())
            })?;
            let name = format!("{}-sidecar", backend.name);
            stack
                .supervisor
                .spawn(
                    &name,
                    program,
                    &sidecar.args(backend.address),
                    &[("RUST_LOG".to_owned(), "info".to_owned())],
                    &logs.join(format!("{name}.log")),
                )
                .map_err(|e| spawn_error(&name, e))?;
        }
        let epp_args = stack.plan.epp_args(&endpoints, &epp_config);
        stack
            .supervisor
            .spawn(
                "endpoint picker",
                &tools.epp,
                &epp_args,
                &[("RUST_LOG".to_owned(), "info".to_owned())],
                &logs.join("epp.log"),
            )
            .map_err(|e| spawn_error("the endpoint picker", e))?;
        let envoy_args = vec![
            "-c".to_owned(),
            envoy_config.display().to_string(),
            // Several Envoys (tests, a second `up`) may run at once: no shared memory.
            "--disable-hot-restart".to_owned(),
            "--concurrency".to_owned(),
            "1".to_owned(),
            "--log-level".to_owned(),
            "warn".to_owned(),
        ];
        stack
            .supervisor
            .spawn(
                "envoy",
                &tools.envoy,
                &envoy_args,
                &[],
                &logs.join("envoy.log"),
            )
            .map_err(|e| spawn_error("envoy", e))?;
        Ok(stack)
    }

    /// The plan it runs.
    pub fn plan(&self) -> &LocalPlan {
        &self.plan
    }

    /// Where the generated files and logs are.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Process ids of the children, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.supervisor.children().iter().map(|c| c.pid()).collect()
    }

    /// Probes everything once.
    pub fn readiness(&mut self) -> Readiness {
        let backends: Vec<_> = self
            .plan
            .backends()
            .map(|b| (b.role.clone(), b.address))
            .collect();
        for (i, (_, address)) in backends.iter().enumerate() {
            if !self.sticky_ready[i] {
                self.sticky_ready[i] = probe::http_ok(*address, "/health");
            }
        }
        let roles = self
            .plan
            .roles
            .iter()
            .map(|role| RoleReadiness {
                name: role.name.clone(),
                ready: backends
                    .iter()
                    .zip(&self.sticky_ready)
                    .filter(|((r, _), ready)| *r == role.name && **ready)
                    .count(),
                total: role.backends.len(),
            })
            .collect();
        let router = probe::http_get(
            self.plan.router.metrics,
            "/metrics",
            Duration::from_millis(500),
        )
        .ok()
        .filter(|(status, _)| *status == 200)
        .map(|(_, body)| probe::sample(&body, EPP_READY_SERIES).unwrap_or(0.0) as usize);
        let router_total = backends.len();
        let mut gateway = GatewayState::Starting;
        if matches!(
            probe::http_get(
                self.plan.gateway.admin,
                "/ready",
                Duration::from_millis(500)
            ),
            Ok((200, _))
        ) {
            gateway = GatewayState::Live;
            if router == Some(router_total)
                && probe::http_ok(self.plan.gateway.listener, "/v1/models")
            {
                gateway = GatewayState::Serving;
            }
        }
        Readiness {
            roles,
            router,
            router_total,
            gateway,
        }
    }

    /// Probes until everything is ready, calling `progress` whenever the picture changes.
    /// Fails when a child exits, `timeout` passes, or `interrupted()` turns true. Returns the
    /// time since the start.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        interrupted: &dyn Fn() -> bool,
        progress: &mut dyn FnMut(&Readiness),
    ) -> Result<Duration, UpError> {
        let mut last: Option<Readiness> = None;
        loop {
            self.check()?;
            if interrupted() {
                return Err(UpError::Interrupted);
            }
            let now = self.readiness();
            if last.as_ref() != Some(&now) {
                progress(&now);
            }
            if now.is_ready() {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() >= timeout {
                return Err(UpError::Timeout {
                    waited: self.started.elapsed(),
                    readiness: now,
                    logs: self.run_dir.join("logs"),
                });
            }
            last = Some(now);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails if a child has exited.
    pub fn check(&mut self) -> Result<(), UpError> {
        match self.supervisor.exited() {
            None => Ok(()),
            Some(child) => Err(UpError::Exited {
                name: child.name.clone(),
                status: child
                    .status()
                    .map_or_else(|| "unknown status".to_owned(), |s| s.to_string()),
                log: child.log.clone(),
                tail: process::tail(&child.log, 12),
            }),
        }
    }

    /// Stops every process (SIGTERM to each process group, Envoy first, then the picker, then
    /// the model servers; SIGKILL after `grace` or once `force()` turns true). Removes the run
    /// directory if it was temporary and `keep_files` is false.
    pub fn stop(
        mut self,
        grace: Duration,
        force: &dyn Fn() -> bool,
        keep_files: bool,
    ) -> StopReport {
        let report = self.supervisor.stop(grace, force);
        if self.remove_run_dir && !keep_files {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
        report
    }
}
