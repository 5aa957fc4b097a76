//! Pickers: `max-score-picker`, `random-picker`, `weighted-random-picker` (GAIE) and
//! `round-robin-picker`. All take `maxNumOfEndpoints` (default 1): the picks beyond the first
//! become the decision's fallbacks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;

use crate::error::PluginError;
use crate::framework::{CycleState, Picker, Plugin, ScoredEndpoint};
use crate::registry::{PluginContext, Registry};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PickerParameters {
    #[serde(default = "one")]
    max_num_of_endpoints: usize,
}

fn one() -> usize {
    1
}

fn max_num_of_endpoints(context: &PluginContext<'_>) -> Result<usize, PluginError> {
    let parameters: PickerParameters = context.parameters()?;
    super::at_least_one("maxNumOfEndpoints", parameters.max_num_of_endpoints)
}

pub(crate) fn register(registry: &mut Registry) {
    registry.register("max-score-picker", |c| {
        Ok(Arc::new(MaxScorePicker::new(max_num_of_endpoints(c)?)))
    });
    registry.register("random-picker", |c| {
        Ok(Arc::new(RandomPicker::new(max_num_of_endpoints(c)?)))
    });
    registry.register("weighted-random-picker", |c| {
        Ok(Arc::new(WeightedRandomPicker::new(max_num_of_endpoints(
            c,
        )?)))
    });
    registry.register("round-robin-picker", |c| {
        Ok(Arc::new(RoundRobinPicker::new(max_num_of_endpoints(c)?)))
    });
}

/// The highest scores win; equal scores are ordered randomly (shuffle, then stable sort).
#[derive(Debug)]
pub struct MaxScorePicker {
    max_endpoints: usize,
}

impl MaxScorePicker {
    /// Picks up to `max_endpoints` endpoints.
    pub fn new(max_endpoints: usize) -> Self {
        MaxScorePicker {
            max_endpoints: max_endpoints.max(1),
        }
    }
}

impl Plugin for MaxScorePicker {
    fn as_picker(&self) -> Option<&dyn Picker> {
        Some(self)
    }
}

impl Picker for MaxScorePicker {
    fn pick(&self, cycle: &mut CycleState, scored: &[ScoredEndpoint<'_>]) -> Vec<usize> {
        if self.max_endpoints == 1 {
            return best_with_random_ties(cycle, scored).into_iter().collect();
        }
        let mut order: Vec<usize> = (0..scored.len()).collect();
        cycle.shuffle(&mut order);
        order.sort_by(|&a, &b| scored[b].score.total_cmp(&scored[a].score));
        order.truncate(self.max_endpoints);
        order
    }
}

/// The top score in one pass; among equal scores each is equally likely (reservoir sampling),
/// the same distribution as shuffling then sorting, without the sort.
fn best_with_random_ties(cycle: &mut CycleState, scored: &[ScoredEndpoint<'_>]) -> Option<usize> {
    let mut best: Option<usize> = None;
    let mut ties = 0;
    for (i, candidate) in scored.iter().enumerate() {
        let Some(current) = best else {
            best = Some(i);
            ties = 1;
            continue;
        };
        match candidate.score.total_cmp(&scored[current].score) {
            std::cmp::Ordering::Greater => {
                best = Some(i);
                ties = 1;
            }
            std::cmp::Ordering::Equal => {
                ties += 1;
                if cycle.random_below(ties) == 0 {
                    best = Some(i);
                }
            }
            std::cmp::Ordering::Less => {}
        }
    }
    best
}

/// Uniformly random endpoints, ignoring scores.
#[derive(Debug)]
pub struct RandomPicker {
    max_endpoints: usize,
}

impl RandomPicker {
    /// Picks up to `max_endpoints` endpoints.
    pub fn new(max_endpoints: usize) -> Self {
        RandomPicker {
            max_endpoints: max_endpoints.max(1),
        }
    }
}

impl Plugin for RandomPicker {
    fn as_picker(&self) -> Option<&dyn Picker> {
        Some(self)
    }
}

impl Picker for RandomPicker {
    fn pick(&self, cycle: &mut CycleState, scored: &[ScoredEndpoint<'_>]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..scored.len()).collect();
        cycle.shuffle(&mut order);
        order.truncate(self.max_endpoints);
        order
    }
}

/// Random endpoints with probability proportional to score (A-Res: key = u^(1/score), largest
/// keys win). Falls back to uniform when no score is positive.
#[derive(Debug)]
pub struct WeightedRandomPicker {
    max_endpoints: usize,
}

impl WeightedRandomPicker {
    /// Picks up to `max_endpoints` endpoints.
    pub fn new(max_endpoints: usize) -> Self {
        WeightedRandomPicker {
            max_endpoints: max_endpoints.max(1),
        }
    }
}

impl Plugin for WeightedRandomPicker {
    fn as_picker(&self) -> Option<&dyn Picker> {
        Some(self)
    }
}

impl Picker for WeightedRandomPicker {
    fn pick(&self, cycle: &mut CycleState, scored: &[ScoredEndpoint<'_>]) -> Vec<usize> {
        if !scored.iter().any(|s| s.score > 0.0) {
            return RandomPicker::new(self.max_endpoints).pick(cycle, scored);
        }
        let mut keyed: Vec<(f64, usize)> = scored
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let key = if s.score > 0.0 {
                    cycle.random_f64().max(1e-10).powf(1.0 / s.score)
                } else {
                    0.0
                };
                (key, i)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        keyed
            .into_iter()
            .take(self.max_endpoints)
            .map(|(_, i)| i)
            .collect()
    }
}

/// Rotates through the candidates (ordered by address, so the rotation is stable while the
/// candidate set is), ignoring scores.
#[derive(Debug)]
pub struct RoundRobinPicker {
    max_endpoints: usize,
    next: AtomicU64,
}

impl RoundRobinPicker {
    /// Picks up to `max_endpoints` consecutive endpoints of the rotation.
    pub fn new(max_endpoints: usize) -> Self {
        RoundRobinPicker {
            max_endpoints: max_endpoints.max(1),
            next: AtomicU64::new(0),
        }
    }
}

impl Plugin for RoundRobinPicker {
    fn as_picker(&self) -> Option<&dyn Picker> {
        Some(self)
    }
}

impl Picker for RoundRobinPicker {
    fn pick(&self, _cycle: &mut CycleState, scored: &[ScoredEndpoint<'_>]) -> Vec<usize> {
        if scored.is_empty() {
            return Vec::new();
        }
        let mut order: Vec<usize> = (0..scored.len()).collect();
        order.sort_by_key(|&i| scored[i].endpoint.address);
        let start = (self.next.fetch_add(1, Ordering::Relaxed) % scored.len() as u64) as usize;
        order.rotate_left(start);
        order.truncate(self.max_endpoints);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Endpoint;
    use std::time::Instant;

    fn endpoints(n: usize) -> Vec<Endpoint> {
        (0..n)
            .map(|i| Endpoint::new(format!("10.0.0.{}:8000", i + 1).parse().unwrap()))
            .collect()
    }

    fn scored<'a>(endpoints: &'a [Endpoint], scores: &[f64]) -> Vec<ScoredEndpoint<'a>> {
        endpoints
            .iter()
            .zip(scores)
            .map(|(endpoint, &score)| ScoredEndpoint { endpoint, score })
            .collect()
    }

    #[test]
    fn max_score_takes_the_best_and_breaks_ties_randomly() {
        let eps = endpoints(4);
        let picker = MaxScorePicker::new(2);
        let mut cycle = CycleState::new(0, Instant::now(), 1);
        assert_eq!(
            picker.pick(&mut cycle, &scored(&eps, &[0.1, 0.9, 0.5, 0.2])),
            [1, 2]
        );
        let mut winners = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut cycle = CycleState::new(0, Instant::now(), seed);
            winners.insert(
                MaxScorePicker::new(1).pick(&mut cycle, &scored(&eps, &[1.0, 1.0, 1.0, 0.0]))[0],
            );
        }
        assert_eq!(winners.into_iter().collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn weighted_random_follows_the_weights() {
        let eps = endpoints(2);
        let picker = WeightedRandomPicker::new(1);
        let mut first = 0;
        for seed in 0..2000 {
            let mut cycle = CycleState::new(0, Instant::now(), seed);
            if picker.pick(&mut cycle, &scored(&eps, &[3.0, 1.0]))[0] == 0 {
                first += 1;
            }
        }
        // P(first) = 3/4 under A-Res.
        assert!((1350..1650).contains(&first), "{first}");
        let mut cycle = CycleState::new(0, Instant::now(), 5);
        assert_eq!(picker.pick(&mut cycle, &scored(&eps, &[0.0, 0.0])).len(), 1);
    }

    #[test]
    fn round_robin_rotates_by_address() {
        let mut eps = endpoints(3);
        eps.reverse();
        let picker = RoundRobinPicker::new(1);
        let mut cycle = CycleState::new(0, Instant::now(), 0);
        let picked: Vec<_> = (0..6)
            .map(|_| {
                eps[picker.pick(&mut cycle, &scored(&eps, &[0.0; 3]))[0]]
                    .address
                    .to_string()
            })
            .collect();
        assert_eq!(
            picked,
            [
                "10.0.0.1:8000",
                "10.0.0.2:8000",
                "10.0.0.3:8000",
                "10.0.0.1:8000",
                "10.0.0.2:8000",
                "10.0.0.3:8000"
            ]
        );
    }
}
