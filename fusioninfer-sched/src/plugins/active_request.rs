//! `active-request-scorer` (llm-d): load accounting between metric scrapes. Counts the
//! requests this scheduler routed and has not yet seen answered, per endpoint; fewer scores
//! higher. Requests never answered expire after `requestTimeout` (default `2m`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::decision::{Routed, SchedulingResult};
use crate::duration::parse_go_duration;
use crate::endpoint::Endpoint;
use crate::error::PluginError;
use crate::framework::{CycleState, Plugin, PostDecision, PostResponse, ResponseInfo, Scorer};
use crate::registry::Registry;
use crate::request::Request;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Parameters {
    request_timeout: Option<String>,
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("active-request-scorer", |c| {
        let parameters: Parameters = c.parameters()?;
        let timeout = match parameters.request_timeout {
            None => Duration::from_secs(120),
            Some(text) => match parse_go_duration(&text) {
                Ok(timeout) if !timeout.is_zero() => timeout,
                Ok(_) => {
                    return Err(PluginError::bad_parameter(
                        "requestTimeout",
                        "must be positive",
                    ));
                }
                Err(message) => return Err(PluginError::bad_parameter("requestTimeout", message)),
            },
        };
        Ok(Arc::new(ActiveRequestScorer::new(timeout)))
    });
}

/// Scores endpoints by the requests routed to them and still in flight.
#[derive(Debug)]
pub struct ActiveRequestScorer {
    timeout: Duration,
    state: Mutex<InFlight>,
}

#[derive(Debug, Default)]
struct InFlight {
    /// Cycle → endpoints it occupies (one per profile that picked one).
    requests: HashMap<u64, Vec<SocketAddr>>,
    /// Start order, for expiry.
    started: VecDeque<(Instant, u64)>,
    counts: HashMap<SocketAddr, u32>,
}

impl InFlight {
    fn finish(&mut self, cycle: u64) {
        for endpoint in self.requests.remove(&cycle).unwrap_or_default() {
            if let Some(count) = self.counts.get_mut(&endpoint) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&endpoint);
                }
            }
        }
    }

    fn expire(&mut self, now: Instant, timeout: Duration) {
        while let Some(&(started, cycle)) = self.started.front() {
            if now.saturating_duration_since(started) < timeout {
                break;
            }
            self.started.pop_front();
            self.finish(cycle);
        }
    }
}

impl ActiveRequestScorer {
    /// Forgets unanswered requests after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        ActiveRequestScorer {
            timeout,
            state: Mutex::new(InFlight::default()),
        }
    }

    /// Requests in flight on `endpoint`.
    pub fn in_flight(&self, endpoint: SocketAddr) -> u32 {
        self.lock().counts.get(&endpoint).copied().unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, InFlight> {
        // A panic elsewhere leaves the counts usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Plugin for ActiveRequestScorer {
    fn as_scorer(&self) -> Option<&dyn Scorer> {
        Some(self)
    }
    fn as_post_decision(&self) -> Option<&dyn PostDecision> {
        Some(self)
    }
    fn as_post_response(&self) -> Option<&dyn PostResponse> {
        Some(self)
    }
    fn retain_endpoints(&self, is_live: &dyn Fn(SocketAddr) -> bool) {
        self.lock().counts.retain(|&endpoint, _| is_live(endpoint));
    }
}

impl Scorer for ActiveRequestScorer {
    fn score(&self, _: &Request, cycle: &mut CycleState, candidates: &[&Endpoint]) -> Vec<f64> {
        let mut state = self.lock();
        state.expire(cycle.now(), self.timeout);
        let max = state.counts.values().copied().max().unwrap_or(0);
        candidates
            .iter()
            .map(|endpoint| match state.counts.get(&endpoint.address) {
                Some(&count) if max > 0 => f64::from(max - count) / f64::from(max),
                _ => 1.0,
            })
            .collect()
    }
}

impl PostDecision for ActiveRequestScorer {
    fn post_decision(
        &self,
        _: &Request,
        cycle: &CycleState,
        _: &[Endpoint],
        result: &SchedulingResult,
        _: &mut BTreeMap<String, String>,
    ) {
        let endpoints: Vec<SocketAddr> = result
            .profiles
            .values()
            .filter_map(|r| r.targets.first())
            .map(|t| t.endpoint)
            .collect();
        let mut state = self.lock();
        state.expire(cycle.now(), self.timeout);
        for &endpoint in &endpoints {
            *state.counts.entry(endpoint).or_default() += 1;
        }
        state.requests.insert(cycle.id(), endpoints);
        state.started.push_back((cycle.now(), cycle.id()));
    }
}

impl PostResponse for ActiveRequestScorer {
    fn post_response(&self, _: &Request, routed: &Routed, _: &ResponseInfo, now: Instant) {
        let mut state = self.lock();
        state.finish(routed.cycle);
        state.expire(now, self.timeout);
    }
}
