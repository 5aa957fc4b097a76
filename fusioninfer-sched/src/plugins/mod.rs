//! Built-in plugins, registered under their GAIE / llm-d type names by
//! [`Registry::with_builtins`](crate::Registry::with_builtins):
//!
//! | type | role |
//! |---|---|
//! | `single-profile-handler` | profile handler (default for one profile) |
//! | `pd-profile-handler`, `disagg-profile-handler` | profile handlers for prefill/decode |
//! | `prefix-based-pd-decider`, `always-disagg-pd-decider` | PD deciders |
//! | `prefill-header-handler` | post-decision: `x-prefiller-host-port` |
//! | `max-score-picker` (default picker), `random-picker`, `weighted-random-picker`, `round-robin-picker` | pickers |
//! | `queue-scorer`, `running-requests-size-scorer`, `kv-cache-utilization-scorer`, `lora-affinity-scorer` | scorers |
//! | `prefix-cache-scorer` | scorer + post-decision (index update) |
//! | `precise-prefix-cache-scorer` | scorer from engines' KV events, approximate fallback |
//! | `active-request-scorer` | scorer + post-decision + post-response (load accounting) |
//! | `by-label`, `prefill-filter`, `decode-filter` | filters |

mod active_request;
mod filters;
mod pickers;
mod precise_prefix;
mod prefix;
mod profile;
mod scorers;

pub use active_request::ActiveRequestScorer;
pub use filters::ByLabel;
pub use pickers::{MaxScorePicker, RandomPicker, RoundRobinPicker, WeightedRandomPicker};
pub use precise_prefix::{DEFAULT_KV_EVENTS_PORT, PrecisePrefixCacheScorer};
pub use prefix::{PrefixCacheConfig, PrefixCacheScorer, PrefixMatch};
pub use profile::{
    AlwaysDisaggPdDecider, PREFILL_HEADER_HANDLER_TYPES, PdProfileHandler, PrefillHeaderHandler,
    PrefixBasedPdDecider, SingleProfileHandler,
};
pub use scorers::{
    KvCacheUtilizationScorer, LoraAffinityScorer, QueueScorer, RunningRequestsScorer,
};

use crate::registry::Registry;

/// Parameters of plugins that take none: anything but `{}` is an error.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoParameters {}

/// `value` if it is at least 1, else an error naming `parameter`.
pub(crate) fn at_least_one(parameter: &str, value: usize) -> Result<usize, crate::PluginError> {
    if value == 0 {
        Err(crate::PluginError::bad_parameter(
            parameter,
            "must be at least 1",
        ))
    } else {
        Ok(value)
    }
}

pub(crate) fn register_builtins(registry: &mut Registry) {
    profile::register(registry);
    pickers::register(registry);
    scorers::register(registry);
    active_request::register(registry);
    prefix::register(registry);
    precise_prefix::register(registry);
    filters::register(registry);
}
