//! Local mode: `fusioninfer up -f FILE` realises an `InferenceService` on this machine.
//!
//! For each replica of each serving role a model server — the simulator `fusioninfer-sim` by
//! default, or a command per role (a real engine such as vLLM), or addresses of servers that
//! already run — then the endpoint picker `fusioninfer-epp` with the router role's strategy or
//! EndpointPickerConfig (the text the planner puts in its ConfigMap) and a static endpoints file
//! carrying the labels the planner gives the role's pods, then Envoy in front with the picker as
//! its ext_proc filter. Everything binds 127.0.0.1. When the router names prefillers
//! (`pd-disaggregation`), each decoder gets a `fusioninfer-pd-sidecar` in front of it, as the
//! planner gives decode pods one, with the prefillers' addresses as its allowlist.
//!
//! * [`plan`]: what will run (pure, unit-tested): [`LocalPlan::new`];
//! * [`envoy`]: Envoy's bootstrap configuration;
//! * [`tools`]: finding the simulator, the picker and Envoy;
//! * [`process`]: children in their own process groups, stopped together, killed with `up`;
//! * [`probe`]: port checks and readiness probes;
//! * [`stack`]: starting, probing and stopping a [`Stack`];
//! * [`up`]: the command itself (flags, summary, live readiness, shutdown on a signal).
//!
//! Per-role settings, as flags of `up` or as annotations on the role's
//! `template.metadata.annotations` (flags win):
//!
//! | annotation | flag | meaning |
//! |---|---|---|
//! | `local.fusioninfer.io/addresses` | `--role-addresses ROLE=IP:PORT,…` | servers that already run (loopback only); nothing is started |
//! | `local.fusioninfer.io/command` | `--role-command 'ROLE=CMD'` | start CMD per replica; `{port}` `{replica}` `{model}` `{name}` are replaced, `PORT` is set |
//! | `local.fusioninfer.io/sim-args` | `--sim-args '…'` (all simulated roles) | extra simulator flags |
//! | `local.fusioninfer.io/model` | – | the served model name (default: the container's `--served-model-name`, `--model`, `--model-path` or `serve X`) |

pub mod envoy;
pub mod plan;
pub mod probe;
pub mod process;
pub mod stack;
pub mod tools;
pub mod up;

pub use plan::{
    Backend, BackendSource, Launch, LocalOptions, LocalPlan, PlanErrors, Ports, RolePlan,
    SchedulerOverride, SidecarPlan,
};
pub use stack::{GatewayState, Readiness, RunDir, Stack, ToolPaths, Tools, UpError};
pub use up::UpArgs;
