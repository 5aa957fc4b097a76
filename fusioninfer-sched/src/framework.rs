//! The plugin interfaces. A plugin is one object that can play several roles (the prefix
//! scorer is also a post-decision hook); [`Plugin`] says which through its `as_*` methods.
//!
//! A scheduling cycle: the profile handler picks profiles to run; each profile filters the
//! endpoints, drops saturated ones, scores the rest (Σ weight × score) and lets its picker
//! choose; the handler combines the profile results; post-decision hooks then see the result
//! (and may add headers). After the response, post-response hooks run.

use std::any::Any;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use crate::decision::{ProfileRunResult, Rejection, Routed, SchedulingResult};
use crate::endpoint::Endpoint;
use crate::request::Request;

/// A configured plugin instance. Implement the `as_*` methods for the roles it plays.
pub trait Plugin: Send + Sync + 'static {
    /// This plugin as a filter.
    fn as_filter(&self) -> Option<&dyn Filter> {
        None
    }
    /// This plugin as a scorer.
    fn as_scorer(&self) -> Option<&dyn Scorer> {
        None
    }
    /// This plugin as a picker.
    fn as_picker(&self) -> Option<&dyn Picker> {
        None
    }
    /// This plugin as a profile handler.
    fn as_profile_handler(&self) -> Option<&dyn ProfileHandler> {
        None
    }
    /// This plugin as a prefill/decode decider (referenced by PD profile handlers).
    fn as_pd_decider(&self) -> Option<&dyn PdDecider> {
        None
    }
    /// This plugin as a hook run after each decision.
    fn as_post_decision(&self) -> Option<&dyn PostDecision> {
        None
    }
    /// This plugin as a hook run after each response.
    fn as_post_response(&self) -> Option<&dyn PostResponse> {
        None
    }
    /// The KV-event-fed index this plugin reads, which the router must feed.
    fn kv_event_feed(&self) -> Option<&crate::kv_index::KvEventFeed> {
        None
    }
    /// Forget state about endpoints for which `is_live` is false (they left the pool).
    fn retain_endpoints(&self, is_live: &dyn Fn(SocketAddr) -> bool) {
        let _ = is_live;
    }
}

/// Removes candidates that cannot serve a request.
pub trait Filter: Send + Sync {
    /// Keeps in `candidates` only the endpoints that pass.
    fn filter(&self, request: &Request, cycle: &mut CycleState, candidates: &mut Vec<&Endpoint>);
}

/// Rates candidates.
pub trait Scorer: Send + Sync {
    /// One score in `[0, 1]` per candidate, in the same order (higher is better). Values
    /// outside the range are clamped and NaN counts as 0.
    fn score(
        &self,
        request: &Request,
        cycle: &mut CycleState,
        candidates: &[&Endpoint],
    ) -> Vec<f64>;
}

/// A candidate with its weighted total score.
#[derive(Clone, Copy, Debug)]
pub struct ScoredEndpoint<'a> {
    /// The candidate.
    pub endpoint: &'a Endpoint,
    /// Σ weight × score over the profile's scorers.
    pub score: f64,
}

/// Chooses among scored candidates.
pub trait Picker: Send + Sync {
    /// Positions in `scored` of the chosen endpoints, best first; at least one when `scored`
    /// is not empty.
    fn pick(&self, cycle: &mut CycleState, scored: &[ScoredEndpoint<'_>]) -> Vec<usize>;
}

/// Results of the profiles run so far in a cycle, by profile name; a failed run holds why.
pub type ProfileResults = BTreeMap<String, Result<ProfileRunResult, Rejection>>;

/// Decides which profiles run for a request and how their results combine.
pub trait ProfileHandler: Send + Sync {
    /// Checks the configured profile names when the scheduler is built.
    fn validate_profiles(&self, profiles: &[&str]) -> Result<(), String>;

    /// The profiles to run next, among the configured `profiles`, given the results so far;
    /// empty when done.
    fn pick(
        &self,
        request: &Request,
        cycle: &CycleState,
        profiles: &[&str],
        results: &ProfileResults,
    ) -> Vec<String>;

    /// Combines the results into the decision, or says why the request cannot be served.
    fn process_results(
        &self,
        request: &Request,
        cycle: &CycleState,
        results: ProfileResults,
    ) -> Result<SchedulingResult, Rejection>;

    /// The profile whose pick becomes the prefill endpoint, for handlers that disaggregate;
    /// the scheduler then makes sure a header handler announces it.
    fn prefill_profile(&self) -> Option<&str> {
        None
    }
}

/// Decides whether a request is worth a separate prefill step.
pub trait PdDecider: Send + Sync {
    /// `input_tokens` of the prompt, of which `cached_tokens` are believed cached on the
    /// chosen decode endpoint.
    fn disaggregate(&self, input_tokens: u32, cached_tokens: u32) -> bool;
}

/// Runs after every successful decision, before the request is forwarded.
pub trait PostDecision: Send + Sync {
    /// Sees the result; may set headers on the forwarded request.
    fn post_decision(
        &self,
        request: &Request,
        cycle: &CycleState,
        endpoints: &[Endpoint],
        result: &SchedulingResult,
        headers: &mut BTreeMap<String, String>,
    );
}

/// What the router learned from the model server's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponseInfo {
    /// The endpoint that served the request (the gateway may have used a fallback).
    pub served_by: Option<SocketAddr>,
    /// HTTP status of the answer.
    pub status: u16,
}

/// Runs when a routed request has finished.
pub trait PostResponse: Send + Sync {
    /// Sees the decision and the outcome.
    fn post_response(
        &self,
        request: &Request,
        routed: &Routed,
        response: &ResponseInfo,
        now: Instant,
    );
}

/// Per-request scratch space shared by the plugins of one cycle: the time, a seeded random
/// source, and typed values plugins leave for each other (keyed by plugin instance name).
pub struct CycleState {
    id: u64,
    now: Instant,
    rng: fastrand::Rng,
    values: Vec<(String, Box<dyn Any + Send + Sync>)>,
}

impl CycleState {
    /// A fresh state for cycle `id` at `now` whose randomness derives from `seed`.
    pub fn new(id: u64, now: Instant, seed: u64) -> Self {
        CycleState {
            id,
            now,
            rng: fastrand::Rng::with_seed(seed),
            values: Vec::new(),
        }
    }

    /// The cycle number.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The time the request is being scheduled at.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Shuffles `items` with the cycle's random source.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        self.rng.shuffle(items);
    }

    /// A uniform random index in `0..n` (0 when `n` is 0).
    pub fn random_below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { self.rng.usize(..n) }
    }

    /// A uniform random number in `[0, 1)`.
    pub fn random_f64(&mut self) -> f64 {
        self.rng.f64()
    }

    /// The value stored under `key`, if it has type `T`.
    pub fn get<T: Any>(&self, key: &str) -> Option<&T> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// Stores `value` under `key`, replacing any earlier value.
    pub fn insert<T: Any + Send + Sync>(&mut self, key: &str, value: T) {
        match self.values.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = Box::new(value),
            None => self.values.push((key.to_owned(), Box::new(value))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_and_replaceable() {
        let mut cycle = CycleState::new(1, Instant::now(), 7);
        cycle.insert("a", 5u32);
        assert_eq!(cycle.get::<u32>("a"), Some(&5));
        assert_eq!(cycle.get::<String>("a"), None);
        cycle.insert("a", 6u32);
        assert_eq!(cycle.get::<u32>("a"), Some(&6));
        assert_eq!(cycle.get::<u32>("b"), None);
    }

    #[test]
    fn randomness_follows_the_seed() {
        let draw = |seed| {
            let mut cycle = CycleState::new(0, Instant::now(), seed);
            let mut items: Vec<u32> = (0..16).collect();
            cycle.shuffle(&mut items);
            (items, cycle.random_f64())
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }
}
