//! The scheduler: an `EndpointPickerConfig` turned into plugins, and the scheduling cycle.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use fusioninfer_api::epp_config::EndpointPickerConfig;

use crate::decision::{Decision, ProfileRunResult, Rejection, Routed, SchedulingResult, Target};
use crate::endpoint::Endpoint;
use crate::error::{ConfigError, PluginError};
use crate::framework::{CycleState, Plugin, ProfileResults, ResponseInfo, ScoredEndpoint};
use crate::plugins::{
    MaxScorePicker, PREFILL_HEADER_HANDLER_TYPES, PrefillHeaderHandler, SingleProfileHandler,
};
use crate::registry::{PluginContext, PluginResolver, Registry};
use crate::request::Request;
use crate::saturation::SaturationDetector;

/// Picks endpoints for requests according to an `EndpointPickerConfig`.
///
/// Shareable across threads: plugins keep their state behind locks. Decisions depend only on
/// the inputs, the seed and the sequence of calls, so tests are reproducible.
pub struct Scheduler {
    profiles: Vec<Profile>,
    handler: Arc<dyn Plugin>,
    post_decision: Vec<Arc<dyn Plugin>>,
    post_response: Vec<Arc<dyn Plugin>>,
    plugins: Vec<Arc<dyn Plugin>>,
    saturation: SaturationDetector,
    seed: u64,
    cycles: AtomicU64,
}

struct Profile {
    name: String,
    filters: Vec<Arc<dyn Plugin>>,
    scorers: Vec<(Arc<dyn Plugin>, f64)>,
    picker: Arc<dyn Plugin>,
}

/// Builds a [`Scheduler`]; see [`Scheduler::builder`].
pub struct SchedulerBuilder<'a> {
    config: &'a EndpointPickerConfig,
    registry: Option<&'a Registry>,
    seed: Option<u64>,
}

impl<'a> SchedulerBuilder<'a> {
    /// Plugin types to use instead of [`Registry::with_builtins`].
    pub fn registry(mut self, registry: &'a Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Seed for all randomness (tie breaks, random pickers); random if not set.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Builds every plugin and checks that the profiles make sense.
    pub fn build(self) -> Result<Scheduler, ConfigError> {
        let builtins;
        let registry = match self.registry {
            Some(registry) => registry,
            None => {
                builtins = Registry::with_builtins();
                &builtins
            }
        };
        let config = self.config;
        let saturation = SaturationDetector::from_config(config.saturation_detector.as_ref())?;
        let builder = PluginBuilder {
            registry,
            config,
            built: RefCell::new(BTreeMap::new()),
            building: RefCell::new(Vec::new()),
        };
        let mut plugins = Vec::with_capacity(config.plugins.len());
        for spec in &config.plugins {
            plugins.push((spec.instance_name(), builder.build(spec.instance_name())?));
        }

        let profiles = config
            .scheduling_profiles
            .iter()
            .map(|profile| build_profile(profile, &builder))
            .collect::<Result<Vec<_>, _>>()?;

        let mut handlers = plugins
            .iter()
            .filter(|(_, p)| p.as_profile_handler().is_some());
        let handler: Arc<dyn Plugin> = match (handlers.next(), handlers.next()) {
            (Some((_, handler)), None) => handler.clone(),
            (Some((first, _)), Some((second, _))) => {
                return Err(ConfigError::ProfileHandler(format!(
                    "{first:?} and {second:?} are both profile handlers; declare one"
                )));
            }
            (None, _) if profiles.len() == 1 => Arc::new(SingleProfileHandler),
            (None, _) => {
                return Err(ConfigError::ProfileHandler(format!(
                    "{} profiles need a profile handler plugin (e.g. pd-profile-handler)",
                    profiles.len()
                )));
            }
        };
        let profile_names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        let handler_role = handler
            .as_profile_handler()
            .ok_or_else(|| ConfigError::ProfileHandler("not a profile handler".into()))?;
        handler_role
            .validate_profiles(&profile_names)
            .map_err(ConfigError::ProfileHandler)?;

        // Hooks run once per decision even when several profiles share the plugin; a PD handler
        // without a declared header handler gets the default one, as upstream deployments do.
        let mut post_decision: Vec<Arc<dyn Plugin>> = plugins
            .iter()
            .filter(|(_, p)| p.as_post_decision().is_some())
            .map(|(_, p)| p.clone())
            .collect();
        let has_header_handler = config
            .plugins
            .iter()
            .any(|spec| PREFILL_HEADER_HANDLER_TYPES.contains(&spec.type_.as_str()));
        if let Some(prefill) = handler_role.prefill_profile()
            && !has_header_handler
        {
            post_decision.push(Arc::new(PrefillHeaderHandler::new(prefill)));
        }
        let post_response = plugins
            .iter()
            .filter(|(_, p)| p.as_post_response().is_some())
            .map(|(_, p)| p.clone())
            .collect();

        Ok(Scheduler {
            profiles,
            handler,
            post_decision,
            post_response,
            plugins: plugins.into_iter().map(|(_, p)| p).collect(),
            saturation,
            seed: self.seed.unwrap_or_else(|| fastrand::u64(..)),
            cycles: AtomicU64::new(0),
        })
    }
}

fn build_profile(
    spec: &fusioninfer_api::epp_config::SchedulingProfile,
    builder: &PluginBuilder<'_>,
) -> Result<Profile, ConfigError> {
    let profile_error = |message: String| ConfigError::Profile {
        profile: spec.name.clone(),
        message,
    };
    let mut filters = Vec::new();
    let mut scorers = Vec::new();
    let mut picker: Option<(&str, Arc<dyn Plugin>)> = None;
    for reference in &spec.plugins {
        let name = reference.plugin_ref.as_str();
        let plugin = builder.build(name)?;
        let mut role_found = false;
        if plugin.as_filter().is_some() {
            filters.push(plugin.clone());
            role_found = true;
        }
        if plugin.as_scorer().is_some() {
            scorers.push((plugin.clone(), reference.weight.unwrap_or(1.0)));
            role_found = true;
        }
        if plugin.as_picker().is_some() {
            if let Some((first, _)) = &picker {
                return Err(profile_error(format!(
                    "has two pickers, {first:?} and {name:?}"
                )));
            }
            picker = Some((name, plugin.clone()));
            role_found = true;
        }
        if !role_found {
            return Err(profile_error(format!(
                "plugin {name:?} (type {:?}) is not a filter, scorer or picker",
                builder.type_of(name).unwrap_or_default()
            )));
        }
    }
    let picker = picker
        .map(|(_, p)| p)
        .unwrap_or_else(|| Arc::new(MaxScorePicker::new(1)));
    Ok(Profile {
        name: spec.name.clone(),
        filters,
        scorers,
        picker,
    })
}

/// Builds plugin instances on demand so that a plugin may refer to one declared after it.
struct PluginBuilder<'a> {
    registry: &'a Registry,
    config: &'a EndpointPickerConfig,
    built: RefCell<BTreeMap<String, Arc<dyn Plugin>>>,
    building: RefCell<Vec<String>>,
}

impl PluginBuilder<'_> {
    fn build(&self, name: &str) -> Result<Arc<dyn Plugin>, ConfigError> {
        self.resolve(name)?.ok_or_else(|| {
            ConfigError::Invalid(vec![fusioninfer_api::epp_config::ConfigError {
                field: "plugins".into(),
                message: format!("no plugin named {name:?}"),
            }])
        })
    }
}

impl PluginResolver for PluginBuilder<'_> {
    fn resolve(&self, name: &str) -> Result<Option<Arc<dyn Plugin>>, ConfigError> {
        if let Some(plugin) = self.built.borrow().get(name) {
            return Ok(Some(plugin.clone()));
        }
        let Some(spec) = self.config.plugin(name) else {
            return Ok(None);
        };
        if self.building.borrow().iter().any(|n| n == name) {
            let mut chain = self.building.borrow().clone();
            chain.push(name.to_owned());
            return Err(ConfigError::ReferenceCycle(chain.join(" -> ")));
        }
        let factory =
            self.registry
                .factory(&spec.type_)
                .ok_or_else(|| ConfigError::UnknownPluginType {
                    name: name.to_owned(),
                    type_name: spec.type_.clone(),
                    known: self.registry.type_names().collect::<Vec<_>>().join(", "),
                })?;
        let context = PluginContext {
            name,
            type_name: &spec.type_,
            parameters: spec.parameters.as_ref(),
            resolver: self,
        };
        self.building.borrow_mut().push(name.to_owned());
        let result = factory(&context);
        self.building.borrow_mut().pop();
        let plugin = result.map_err(|error| match error {
            PluginError::BadParameter { parameter, message } => ConfigError::BadParameter {
                name: name.to_owned(),
                type_name: spec.type_.clone(),
                parameter,
                message,
            },
            PluginError::Dependency(inner) => *inner,
        })?;
        self.built
            .borrow_mut()
            .insert(name.to_owned(), plugin.clone());
        Ok(Some(plugin))
    }

    fn type_of(&self, name: &str) -> Option<&str> {
        self.config.plugin(name).map(|spec| spec.type_.as_str())
    }
}

impl Scheduler {
    /// Starts building a scheduler for `config`.
    pub fn builder(config: &EndpointPickerConfig) -> SchedulerBuilder<'_> {
        SchedulerBuilder {
            config,
            registry: None,
            seed: None,
        }
    }

    /// Parses `yaml` as an `EndpointPickerConfig` and builds a scheduler with the built-in
    /// plugins and `seed`.
    pub fn from_yaml(yaml: &str, seed: u64) -> Result<Scheduler, ConfigError> {
        let config = EndpointPickerConfig::parse(yaml).map_err(ConfigError::Invalid)?;
        Scheduler::builder(&config).seed(seed).build()
    }

    /// The saturation thresholds in force.
    pub fn saturation(&self) -> &SaturationDetector {
        &self.saturation
    }

    /// Profile names in configuration order.
    pub fn profile_names(&self) -> impl Iterator<Item = &str> {
        self.profiles.iter().map(|p| p.name.as_str())
    }

    /// Decides where `request` goes among `endpoints`, as of `now`. Runs the post-decision
    /// hooks (index updates, load accounting) before returning a routing.
    pub fn schedule(&self, request: &Request, endpoints: &[Endpoint], now: Instant) -> Decision {
        let cycle_id = self.cycles.fetch_add(1, Ordering::Relaxed);
        let mut cycle = CycleState::new(cycle_id, now, mix_seed(self.seed, cycle_id));
        if endpoints.is_empty() {
            return Decision::Rejected(Rejection::no_endpoint("the pool has no endpoints"));
        }
        let Some(handler) = self.handler.as_profile_handler() else {
            return Decision::Rejected(Rejection::internal("profile handler lost its role"));
        };
        let profile_names: Vec<&str> = self.profile_names().collect();
        let mut results = ProfileResults::new();
        // Each profile runs at most once, so a handler cannot loop forever.
        loop {
            let next = handler.pick(request, &cycle, &profile_names, &results);
            if next.is_empty() {
                break;
            }
            for name in next {
                let Some(profile) = self.profiles.iter().find(|p| p.name == name) else {
                    return Decision::Rejected(Rejection::internal(format!(
                        "profile handler picked unknown profile {name:?}"
                    )));
                };
                if results.contains_key(&name) {
                    return Decision::Rejected(Rejection::internal(format!(
                        "profile handler picked {name:?} twice"
                    )));
                }
                let result = self.run_profile(profile, request, endpoints, &mut cycle);
                results.insert(name, result);
            }
        }
        let result = match handler.process_results(request, &cycle, results) {
            Ok(result) => result,
            Err(rejection) => return Decision::Rejected(rejection),
        };
        let Some(primary_targets) = result
            .profiles
            .get(&result.primary_profile)
            .filter(|r| !r.targets.is_empty())
        else {
            return Decision::Rejected(Rejection::internal(format!(
                "primary profile {:?} has no target",
                result.primary_profile
            )));
        };
        let primary = primary_targets.targets[0].destination;
        let fallbacks = primary_targets.targets[1..]
            .iter()
            .map(|t| t.destination)
            .collect();
        let mut headers = result.headers.clone();
        for hook in self
            .post_decision
            .iter()
            .filter_map(|p| p.as_post_decision())
        {
            hook.post_decision(request, &cycle, endpoints, &result, &mut headers);
        }
        Decision::Routed(Routed {
            primary,
            fallbacks,
            headers,
            result,
            cycle: cycle_id,
        })
    }

    /// Reports the outcome of a routed request to the post-response hooks.
    pub fn on_response(
        &self,
        request: &Request,
        routed: &Routed,
        response: &ResponseInfo,
        now: Instant,
    ) {
        for hook in self
            .post_response
            .iter()
            .filter_map(|p| p.as_post_response())
        {
            hook.post_response(request, routed, response, now);
        }
    }

    /// The KV-event feeds of the configured plugins (`precise-prefix-cache-scorer`): the
    /// router subscribes to the endpoints' KV events for each, and tokenizes requests
    /// ([`Request::token_ids`]) when there is any.
    pub fn kv_event_feeds(&self) -> Vec<crate::kv_index::KvEventFeed> {
        self.plugins
            .iter()
            .filter_map(|p| p.kv_event_feed().cloned())
            .collect()
    }

    /// Makes plugins forget endpoints that are no longer in the pool (e.g. prefix-index
    /// entries of deleted pods).
    pub fn retain_endpoints(&self, live: &[SocketAddr]) {
        let live: BTreeSet<SocketAddr> = live.iter().copied().collect();
        let is_live = |address: SocketAddr| live.contains(&address);
        for plugin in &self.plugins {
            plugin.retain_endpoints(&is_live);
        }
    }

    fn run_profile(
        &self,
        profile: &Profile,
        request: &Request,
        endpoints: &[Endpoint],
        cycle: &mut CycleState,
    ) -> Result<ProfileRunResult, Rejection> {
        let mut candidates: Vec<&Endpoint> = endpoints.iter().collect();
        for filter in profile.filters.iter().filter_map(|p| p.as_filter()) {
            filter.filter(request, cycle, &mut candidates);
        }
        if candidates.is_empty() {
            return Err(Rejection::no_endpoint(format!(
                "profile {:?}: no endpoint passed the filters",
                profile.name
            )));
        }
        let filtered = candidates.len();
        let now = cycle.now();
        candidates.retain(|endpoint| !self.saturation.is_saturated(endpoint, now));
        if candidates.is_empty() {
            return Err(Rejection::saturated(format!(
                "profile {:?}: all {filtered} candidate endpoints are saturated or have stale metrics",
                profile.name
            )));
        }
        let mut scored: Vec<ScoredEndpoint<'_>> = candidates
            .iter()
            .map(|&endpoint| ScoredEndpoint {
                endpoint,
                score: 0.0,
            })
            .collect();
        for (plugin, weight) in &profile.scorers {
            let Some(scorer) = plugin.as_scorer() else {
                continue;
            };
            let scores = scorer.score(request, cycle, &candidates);
            if scores.len() != candidates.len() {
                return Err(Rejection::internal(format!(
                    "profile {:?}: a scorer returned {} scores for {} candidates",
                    profile.name,
                    scores.len(),
                    candidates.len()
                )));
            }
            for (entry, score) in scored.iter_mut().zip(scores) {
                let score = if score.is_nan() {
                    0.0
                } else {
                    score.clamp(0.0, 1.0)
                };
                entry.score += weight * score;
            }
        }
        let Some(picker) = profile.picker.as_picker() else {
            return Err(Rejection::internal("picker lost its role"));
        };
        let picks = picker.pick(cycle, &scored);
        if picks.is_empty() || picks.iter().any(|&i| i >= scored.len()) {
            return Err(Rejection::internal(format!(
                "profile {:?}: the picker returned {picks:?} for {} candidates",
                profile.name,
                scored.len()
            )));
        }
        Ok(ProfileRunResult {
            targets: picks
                .into_iter()
                .map(|i| Target::at(scored[i].endpoint.address))
                .collect(),
        })
    }
}

/// SplitMix64 of seed and cycle number: independent-looking streams per cycle, so decisions
/// do not depend on how many random numbers earlier cycles drew.
fn mix_seed(seed: u64, cycle: u64) -> u64 {
    let mut z = seed ^ cycle.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Builds the result of a profile that ran, for handlers that pass results through.
pub(crate) fn single_result(
    name: &str,
    results: ProfileResults,
) -> Result<SchedulingResult, Rejection> {
    match results.into_iter().find(|(n, _)| n == name) {
        Some((_, Ok(result))) => Ok(SchedulingResult::single(name, result)),
        Some((_, Err(rejection))) => Err(rejection),
        None => Err(Rejection::internal(format!("profile {name:?} did not run"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedulers_are_shareable_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Scheduler>();
    }

    #[test]
    fn cycles_get_distinct_seeds() {
        let seeds: BTreeSet<u64> = (0..1000).map(|cycle| mix_seed(42, cycle)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_ne!(mix_seed(1, 0), mix_seed(2, 0));
    }
}
