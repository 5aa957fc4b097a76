//! Profile handlers and what disaggregation needs around them.
//!
//! - `single-profile-handler`: one profile, its pick is the decision.
//! - `pd-profile-handler` (llm-d, legacy parameters `threshold`, `hashBlockSize`, …) and
//!   `disagg-profile-handler` (llm-d, decider plugins): run the decode profile first, its pick
//!   is the primary destination; then run the prefill profile when the decider says the
//!   prompt's uncached part is worth a separate prefill. If prefill fails, decode alone serves.
//! - `prefix-based-pd-decider` {nonCachedTokens}, `always-disagg-pd-decider`: the deciders.
//! - `prefill-header-handler` {prefillProfile}: puts the prefill pick into
//!   [`PREFILLER_HOST_PORT`] on the request sent to the decode endpoint.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Deserialize;

use crate::decision::headers::{DATA_PARALLEL_HOST_PORT, PREFILLER_HOST_PORT};
use crate::decision::{Rejection, SchedulingResult};
use crate::endpoint::Endpoint;
use crate::error::PluginError;
use crate::framework::{
    CycleState, PdDecider, Plugin, PostDecision, ProfileHandler, ProfileResults,
};
use crate::plugins::NoParameters;
use crate::plugins::prefix::PrefixMatch;
use crate::registry::{PluginContext, Registry};
use crate::request::Request;
use crate::scheduler::single_result;

/// Plugin types that set the prefill header; a PD handler gets a default one otherwise.
pub use fusioninfer_api::epp_config::PREFILL_HEADER_HANDLER_TYPES;

const DEFAULT_PREFIX_PLUGIN: &str = "prefix-cache-scorer";

pub(crate) fn register(registry: &mut Registry) {
    registry.register("single-profile-handler", |c| {
        c.parameters::<NoParameters>()?;
        Ok(Arc::new(SingleProfileHandler))
    });
    registry.register("pd-profile-handler", |c| {
        Ok(Arc::new(pd_profile_handler(c)?))
    });
    registry.register("disagg-profile-handler", |c| {
        Ok(Arc::new(disagg_profile_handler(c)?))
    });
    registry.register("prefix-based-pd-decider", |c| {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Parameters {
            #[serde(default)]
            non_cached_tokens: u32,
        }
        Ok(Arc::new(PrefixBasedPdDecider {
            non_cached_tokens: c.parameters::<Parameters>()?.non_cached_tokens,
        }))
    });
    registry.register("always-disagg-pd-decider", |c| {
        c.parameters::<NoParameters>()?;
        Ok(Arc::new(AlwaysDisaggPdDecider))
    });
    registry.register("prefill-header-handler", |c| {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Parameters {
            prefill_profile: Option<String>,
        }
        let p: Parameters = c.parameters()?;
        Ok(Arc::new(PrefillHeaderHandler::new(
            p.prefill_profile.as_deref().unwrap_or("prefill"),
        )))
    });
}

/// Runs the only profile.
#[derive(Debug)]
pub struct SingleProfileHandler;

impl Plugin for SingleProfileHandler {
    fn as_profile_handler(&self) -> Option<&dyn ProfileHandler> {
        Some(self)
    }
}

impl ProfileHandler for SingleProfileHandler {
    fn validate_profiles(&self, profiles: &[&str]) -> Result<(), String> {
        match profiles {
            [_] => Ok(()),
            _ => Err(format!(
                "single-profile-handler needs exactly one profile, not {}",
                profiles.len()
            )),
        }
    }

    fn pick(
        &self,
        _: &Request,
        _: &CycleState,
        profiles: &[&str],
        results: &ProfileResults,
    ) -> Vec<String> {
        match (profiles, results.is_empty()) {
            ([profile], true) => vec![(*profile).to_owned()],
            _ => Vec::new(),
        }
    }

    fn process_results(
        &self,
        _: &Request,
        _: &CycleState,
        results: ProfileResults,
    ) -> Result<SchedulingResult, Rejection> {
        match results.keys().next().cloned() {
            Some(profile) => single_result(&profile, results),
            None => Err(Rejection::internal("no profile ran")),
        }
    }
}

/// When the decode pick needs a separate prefill.
enum PrefillDecision {
    /// A decider plugin decides.
    Decider(Arc<dyn Plugin>),
    /// Never (a disaggregation handler configured without a decider).
    Never,
}

/// Decode first (primary), prefill when worthwhile (llm-d's P/D handlers).
pub struct PdProfileHandler {
    decode_profile: String,
    prefill_profile: String,
    prefix_plugin: String,
    prefill: PrefillDecision,
    primary_port: Option<u16>,
}

impl std::fmt::Debug for PdProfileHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdProfileHandler")
            .field("decode_profile", &self.decode_profile)
            .field("prefill_profile", &self.prefill_profile)
            .field("prefix_plugin", &self.prefix_plugin)
            .field("primary_port", &self.primary_port)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PdParameters {
    /// Uncached prompt tokens from which prefill runs separately; 0 = always.
    #[serde(default)]
    threshold: u32,
    decode_profile: Option<String>,
    prefill_profile: Option<String>,
    prefix_plugin_type: Option<String>,
    prefix_plugin_name: Option<String>,
    /// Upstream converts matched blocks to characters with it; the prefix scorer's own block
    /// size is used instead (it is the one the match was computed with), so this is only checked.
    hash_block_size: Option<u32>,
    #[serde(default)]
    primary_port: u32,
    decider_plugin_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DisaggParameters {
    decode_profile: Option<String>,
    prefill_profile: Option<String>,
    encode_profile: Option<String>,
    prefix_plugin_type: Option<String>,
    prefix_plugin_name: Option<String>,
    #[serde(default)]
    primary_port: u32,
    prefill_decider_plugin_name: Option<String>,
    encode_decider_plugin_name: Option<String>,
}

fn pd_profile_handler(c: &PluginContext<'_>) -> Result<PdProfileHandler, PluginError> {
    let p: PdParameters = c.parameters()?;
    if p.hash_block_size == Some(0) {
        return Err(PluginError::bad_parameter(
            "hashBlockSize",
            "must be at least 1",
        ));
    }
    let prefill = match &p.decider_plugin_name {
        Some(name) => PrefillDecision::Decider(decider(c, "deciderPluginName", name)?),
        None => PrefillDecision::Decider(Arc::new(PrefixBasedPdDecider {
            non_cached_tokens: p.threshold,
        })),
    };
    Ok(PdProfileHandler {
        decode_profile: p.decode_profile.unwrap_or_else(|| "decode".into()),
        prefill_profile: p.prefill_profile.unwrap_or_else(|| "prefill".into()),
        prefix_plugin: prefix_plugin(c, p.prefix_plugin_type, p.prefix_plugin_name)?,
        prefill,
        primary_port: primary_port(p.primary_port)?,
    })
}

fn disagg_profile_handler(c: &PluginContext<'_>) -> Result<PdProfileHandler, PluginError> {
    let p: DisaggParameters = c.parameters()?;
    if p.encode_decider_plugin_name.is_some() {
        return Err(PluginError::bad_parameter(
            "encodeDeciderPluginName",
            "encode disaggregation is not supported",
        ));
    }
    if p.encode_profile.is_some() {
        return Err(PluginError::bad_parameter(
            "encodeProfile",
            "encode disaggregation is not supported",
        ));
    }
    let prefill = match &p.prefill_decider_plugin_name {
        Some(name) => PrefillDecision::Decider(decider(c, "prefillDeciderPluginName", name)?),
        None => PrefillDecision::Never,
    };
    Ok(PdProfileHandler {
        decode_profile: p.decode_profile.unwrap_or_else(|| "decode".into()),
        prefill_profile: p.prefill_profile.unwrap_or_else(|| "prefill".into()),
        prefix_plugin: prefix_plugin(c, p.prefix_plugin_type, p.prefix_plugin_name)?,
        prefill,
        primary_port: primary_port(p.primary_port)?,
    })
}

fn decider(
    c: &PluginContext<'_>,
    parameter: &str,
    name: &str,
) -> Result<Arc<dyn Plugin>, PluginError> {
    match c.plugin(name)? {
        Some(plugin) if plugin.as_pd_decider().is_some() => Ok(plugin),
        Some(_) => Err(PluginError::bad_parameter(
            parameter,
            format!("plugin {name:?} is not a prefill/decode decider"),
        )),
        None => Err(PluginError::bad_parameter(
            parameter,
            format!("{name:?} names no declared plugin"),
        )),
    }
}

/// The prefix scorer instance whose match tells how much of the prompt is cached. Upstream
/// defaults the name to the type; a name given explicitly must exist (and have the type, if
/// both are given).
fn prefix_plugin(
    c: &PluginContext<'_>,
    type_: Option<String>,
    name: Option<String>,
) -> Result<String, PluginError> {
    let explicit = name.is_some();
    let name = name
        .or_else(|| type_.clone())
        .unwrap_or_else(|| DEFAULT_PREFIX_PLUGIN.into());
    match (c.plugin_type(&name), &type_) {
        (Some(actual), Some(expected)) if actual != expected => Err(PluginError::bad_parameter(
            "prefixPluginType",
            format!("plugin {name:?} has type {actual:?}, not {expected:?}"),
        )),
        (None, _) if explicit => Err(PluginError::bad_parameter(
            "prefixPluginName",
            format!("{name:?} names no declared plugin"),
        )),
        _ => Ok(name),
    }
}

fn primary_port(port: u32) -> Result<Option<u16>, PluginError> {
    match port {
        0 => Ok(None),
        1..=65535 => Ok(u16::try_from(port).ok()),
        _ => Err(PluginError::bad_parameter(
            "primaryPort",
            format!("{port} is not a port (1-65535)"),
        )),
    }
}

impl Plugin for PdProfileHandler {
    fn as_profile_handler(&self) -> Option<&dyn ProfileHandler> {
        Some(self)
    }
}

impl ProfileHandler for PdProfileHandler {
    fn validate_profiles(&self, profiles: &[&str]) -> Result<(), String> {
        if !profiles.contains(&self.decode_profile.as_str()) {
            return Err(format!("no decode profile {:?}", self.decode_profile));
        }
        let uses_prefill = !matches!(self.prefill, PrefillDecision::Never);
        if uses_prefill && !profiles.contains(&self.prefill_profile.as_str()) {
            return Err(format!("no prefill profile {:?}", self.prefill_profile));
        }
        match profiles
            .iter()
            .find(|&&p| p != self.decode_profile && (p != self.prefill_profile || !uses_prefill))
        {
            Some(unused) => Err(format!("profile {unused:?} would never run")),
            None => Ok(()),
        }
    }

    fn pick(
        &self,
        request: &Request,
        cycle: &CycleState,
        _: &[&str],
        results: &ProfileResults,
    ) -> Vec<String> {
        let decode = match results.get(&self.decode_profile) {
            None => return vec![self.decode_profile.clone()],
            Some(Err(_)) => return Vec::new(),
            Some(Ok(decode)) => decode,
        };
        let (PrefillDecision::Decider(decider), Some(target)) =
            (&self.prefill, decode.targets.first())
        else {
            return Vec::new();
        };
        if results.contains_key(&self.prefill_profile) {
            return Vec::new();
        }
        let cached = cycle
            .get::<PrefixMatch>(&self.prefix_plugin)
            .map_or(0, |m| m.cached_tokens(target.endpoint));
        let wants_prefill = decider
            .as_pd_decider()
            .is_some_and(|d| d.disaggregate(request.estimated_tokens(), cached));
        if wants_prefill {
            vec![self.prefill_profile.clone()]
        } else {
            Vec::new()
        }
    }

    fn process_results(
        &self,
        _: &Request,
        _: &CycleState,
        mut results: ProfileResults,
    ) -> Result<SchedulingResult, Rejection> {
        let mut decode = match results.remove(&self.decode_profile) {
            Some(Ok(decode)) => decode,
            Some(Err(rejection)) => return Err(rejection),
            None => return Err(Rejection::internal("decode profile did not run")),
        };
        let mut headers = BTreeMap::new();
        if let Some(port) = self.primary_port {
            // Data parallel: the request enters at the pod's primary port and names the rank.
            if let Some(first) = decode.targets.first() {
                headers.insert(
                    DATA_PARALLEL_HOST_PORT.to_owned(),
                    first.endpoint.to_string(),
                );
            }
            for target in &mut decode.targets {
                target.destination = SocketAddr::new(target.endpoint.ip(), port);
            }
        }
        let mut result = SchedulingResult::single(&self.decode_profile, decode);
        result.headers = headers;
        if let Some(Ok(prefill)) = results.remove(&self.prefill_profile) {
            result
                .profiles
                .insert(self.prefill_profile.clone(), prefill);
        }
        Ok(result)
    }

    fn prefill_profile(&self) -> Option<&str> {
        match self.prefill {
            PrefillDecision::Never => None,
            PrefillDecision::Decider(_) => Some(&self.prefill_profile),
        }
    }
}

/// Disaggregates when at least `non_cached_tokens` prompt tokens are not cached on the decode
/// endpoint (always when 0).
#[derive(Debug)]
pub struct PrefixBasedPdDecider {
    /// The threshold in tokens.
    pub non_cached_tokens: u32,
}

impl Plugin for PrefixBasedPdDecider {
    fn as_pd_decider(&self) -> Option<&dyn PdDecider> {
        Some(self)
    }
}

impl PdDecider for PrefixBasedPdDecider {
    fn disaggregate(&self, input_tokens: u32, cached_tokens: u32) -> bool {
        input_tokens.saturating_sub(cached_tokens) >= self.non_cached_tokens
    }
}

/// Always disaggregates.
#[derive(Debug)]
pub struct AlwaysDisaggPdDecider;

impl Plugin for AlwaysDisaggPdDecider {
    fn as_pd_decider(&self) -> Option<&dyn PdDecider> {
        Some(self)
    }
}

impl PdDecider for AlwaysDisaggPdDecider {
    fn disaggregate(&self, _: u32, _: u32) -> bool {
        true
    }
}

/// Sets [`PREFILLER_HOST_PORT`] to the prefill profile's pick, and removes it when there is
/// none (so a client cannot choose the prefiller).
#[derive(Debug)]
pub struct PrefillHeaderHandler {
    prefill_profile: String,
}

impl PrefillHeaderHandler {
    /// Announces the pick of `prefill_profile`.
    pub fn new(prefill_profile: &str) -> Self {
        PrefillHeaderHandler {
            prefill_profile: prefill_profile.to_owned(),
        }
    }
}

impl Plugin for PrefillHeaderHandler {
    fn as_post_decision(&self) -> Option<&dyn PostDecision> {
        Some(self)
    }
}

impl PostDecision for PrefillHeaderHandler {
    fn post_decision(
        &self,
        _: &Request,
        _: &CycleState,
        _: &[Endpoint],
        result: &SchedulingResult,
        headers: &mut BTreeMap<String, String>,
    ) {
        match result.first_target(&self.prefill_profile) {
            Some(prefill) => headers.insert(
                PREFILLER_HOST_PORT.to_owned(),
                prefill.destination.to_string(),
            ),
            None => headers.remove(PREFILLER_HOST_PORT),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_decider_counts_uncached_tokens() {
        let decider = PrefixBasedPdDecider {
            non_cached_tokens: 100,
        };
        assert!(decider.disaggregate(150, 50));
        assert!(!decider.disaggregate(150, 51));
        assert!(!decider.disaggregate(10, 200));
        assert!(
            PrefixBasedPdDecider {
                non_cached_tokens: 0
            }
            .disaggregate(0, 0)
        );
    }
}
