//! Command-line options of the endpoint picker, and loading the scheduler configuration they
//! name. The flags the planner passes (`--pool-name`, `--pool-namespace`, `--config-file`,
//! `--grpc-port`, `--grpc-health-port`, `--metrics-port`) are accepted exactly as written in
//! `fusioninfer_core::plan`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use fusioninfer_api::RoutingStrategy;
use fusioninfer_api::epp_config::EndpointPickerConfig;
use fusioninfer_sched::{ConfigError, Scheduler};

/// Where endpoints come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// Watch an InferencePool and its pods in a namespace.
    Kubernetes {
        /// InferencePool name.
        pool: String,
        /// Namespace of the pool and its pods.
        namespace: String,
    },
    /// A YAML or JSON file of endpoints, polled for changes.
    File(PathBuf),
}

/// The endpoint picker's flags.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "fusioninfer-epp",
    version,
    about = "FusionInfer endpoint picker: an Envoy ext_proc service choosing the model server for each OpenAI request",
    group(ArgGroup::new("source").required(true).args(["pool_name", "endpoints_file"])),
    group(ArgGroup::new("scheduling").args(["config_file", "strategy"])),
)]
pub struct Options {
    /// InferencePool to serve (Kubernetes endpoint source).
    #[arg(long, requires = "pool_namespace")]
    pub pool_name: Option<String>,
    /// Namespace of the InferencePool and its pods.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pool_namespace: Option<String>,
    /// Static endpoint source: a YAML or JSON list of `{address, labels, metricsAddress}`
    /// (or `{endpoints: [...]}`), re-read when it changes.
    #[arg(long, conflicts_with = "pool_name")]
    pub endpoints_file: Option<PathBuf>,
    /// How often the endpoints file is checked for changes.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub endpoints_file_poll_interval: Duration,
    /// EndpointPickerConfig (GAIE format) to schedule with.
    #[arg(long)]
    pub config_file: Option<PathBuf>,
    /// A built-in routing strategy (the planner's configs); default `prefix-cache` when
    /// neither this nor `--config-file` is given.
    #[arg(long)]
    pub strategy: Option<RoutingStrategy>,
    /// Seed for the scheduler's tie breaks (random when absent).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Address the three servers bind.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// ext_proc gRPC port (0 = any free port).
    #[arg(long, default_value_t = 9002)]
    pub grpc_port: u16,
    /// gRPC health port (services `liveness`, `readiness`, and the ext_proc service name).
    #[arg(long, default_value_t = 9003)]
    pub grpc_health_port: u16,
    /// Prometheus metrics port (`GET /metrics`).
    #[arg(long, default_value_t = 9090)]
    pub metrics_port: u16,
    /// Interval between two metric scrapes of one model server.
    #[arg(long, default_value = "50ms", value_parser = parse_duration)]
    pub refresh_metrics_interval: Duration,
    /// Timeout of one metric scrape.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub scrape_timeout: Duration,
    /// Most metric scrapes in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub scrape_concurrency: u32,
    /// Path of the model servers' Prometheus endpoint.
    #[arg(long, default_value = "/metrics")]
    pub model_server_metrics_path: String,
    /// Port of the model servers' Prometheus endpoint when it is not the serving port
    /// (a static endpoint's `metricsAddress` wins).
    #[arg(long)]
    pub model_server_metrics_port: Option<u16>,
    /// Largest request body accepted; larger ones get 413.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_request_body_bytes: usize,
    /// Base model names. When given, every other requested model counts as a LoRA adapter;
    /// when not, a model counts as an adapter if some server reports it as one.
    #[arg(long = "base-model", value_name = "NAME")]
    pub base_models: Vec<String>,
    /// The model's Hugging Face `tokenizer.json`, used to tokenize prompts when the scheduler
    /// has a `precise-prefix-cache-scorer` (default: the deterministic fallback tokenizer that
    /// `fusioninfer-sim` uses without a tokenizer file; it matches no real engine). Also read
    /// from the environment, so that a router template can set it without repeating the
    /// planner's arguments.
    #[arg(long, env = "FUSIONINFER_EPP_TOKENIZER")]
    pub tokenizer: Option<PathBuf>,
    /// The model's chat template (default: `chat_template.jinja` or `tokenizer_config.json`
    /// beside `--tokenizer`).
    #[arg(long, env = "FUSIONINFER_EPP_CHAT_TEMPLATE", requires = "tokenizer")]
    pub chat_template: Option<PathBuf>,
}

impl Options {
    /// The endpoint source the flags select.
    pub fn source(&self) -> SourceKind {
        match (&self.endpoints_file, &self.pool_name) {
            (Some(path), _) => SourceKind::File(path.clone()),
            (None, Some(pool)) => SourceKind::Kubernetes {
                pool: pool.clone(),
                namespace: self.pool_namespace.clone().unwrap_or_default(),
            },
            // clap's `source` group makes one of them required.
            (None, None) => SourceKind::File(PathBuf::new()),
        }
    }

    /// Options for a static endpoints file, everything else at its default: handy for tests
    /// and for embedding (local mode).
    pub fn for_endpoints_file(path: impl Into<PathBuf>) -> Options {
        let path: PathBuf = path.into();
        Options::try_parse_from([
            "fusioninfer-epp".as_ref(),
            "--endpoints-file".as_ref(),
            path.as_os_str(),
        ])
        .expect("the defaults parse")
    }

    /// The scheduler configuration text: the `--config-file` contents, or the planner's YAML
    /// for `--strategy` (default `prefix-cache`).
    pub fn scheduler_config_text(&self) -> Result<String, OptionsError> {
        match &self.config_file {
            Some(path) => std::fs::read_to_string(path).map_err(|source| OptionsError::Read {
                path: path.clone(),
                source,
            }),
            None => Ok(fusioninfer_core::strategy::endpoint_picker_config(
                self.strategy.unwrap_or_default(),
            )
            .to_owned()),
        }
    }

    /// Builds the scheduler the flags describe.
    pub fn build_scheduler(&self) -> Result<Scheduler, OptionsError> {
        let text = self.scheduler_config_text()?;
        let config = EndpointPickerConfig::parse(&text)
            .map_err(|errors| OptionsError::Scheduler(ConfigError::Invalid(errors)))?;
        let mut builder = Scheduler::builder(&config);
        if let Some(seed) = self.seed {
            builder = builder.seed(seed);
        }
        builder.build().map_err(OptionsError::Scheduler)
    }
}

/// Why the options cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// A file named by a flag cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The scheduler configuration is invalid.
    #[error("scheduler configuration: {0}")]
    Scheduler(ConfigError),
}

/// Parses `250ms`, `1s`, `1.5s`, `2m`, `100us` (a number and a unit; a bare number is
/// milliseconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 50ms or 1s"))?;
    let seconds = match unit.trim() {
        "" | "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "s" => value,
        "m" => value * 60.0,
        other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("50ms"), Ok(Duration::from_millis(50)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_millis(20)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn defaults_match_the_conventional_ports_and_intervals() {
        let options = Options::for_endpoints_file("/tmp/endpoints.yaml");
        assert_eq!(
            (
                options.grpc_port,
                options.grpc_health_port,
                options.metrics_port
            ),
            (9002, 9003, 9090)
        );
        assert_eq!(options.refresh_metrics_interval, Duration::from_millis(50));
        assert_eq!(
            options.source(),
            SourceKind::File("/tmp/endpoints.yaml".into())
        );
    }

    #[test]
    fn a_source_is_required_and_sources_are_exclusive() {
        assert!(Options::try_parse_from(["epp"]).is_err());
        assert!(
            Options::try_parse_from([
                "epp",
                "--endpoints-file",
                "f",
                "--pool-name",
                "p",
                "--pool-namespace",
                "n"
            ])
            .is_err()
        );
        assert!(
            Options::try_parse_from([
                "epp",
                "--endpoints-file",
                "f",
                "--strategy",
                "round-robin",
                "--config-file",
                "c"
            ])
            .is_err()
        );
    }

    #[test]
    fn strategy_shortcut_loads_the_planner_config_verbatim() {
        for strategy in RoutingStrategy::ALL {
            let options = Options::try_parse_from([
                "epp",
                "--endpoints-file",
                "f",
                "--strategy",
                strategy.as_str(),
            ])
            .expect("parses");
            assert_eq!(
                options.scheduler_config_text().unwrap(),
                fusioninfer_core::strategy::endpoint_picker_config(strategy)
            );
            options
                .build_scheduler()
                .unwrap_or_else(|e| panic!("{}: {e}", strategy.as_str()));
        }
        let default = Options::for_endpoints_file("f");
        assert_eq!(
            default.scheduler_config_text().unwrap(),
            fusioninfer_core::strategy::endpoint_picker_config(RoutingStrategy::PrefixCache)
        );
        let unknown =
            Options::try_parse_from(["epp", "--endpoints-file", "f", "--strategy", "fastest"]);
        assert!(unknown.is_err());
    }
}
