//! Replaying one stream from its stored history: the cases it was fed, in the
//! order fed, with the target each was fed under, through the same designs and
//! detector step the feed runs. An auditor compares the result with what was
//! stored and sees why (and at which case) an alert fired.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::feed::{Parameters, parameters};
use super::{Baseline, Detector, Observation, StreamProfile, StreamState, Update};

/// One case of a stream's history, as fed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplayCase {
    /// Case time.
    pub observed_at: DateTime<Utc>,
    /// The case's Dice for the stream's structure (or its per-case mean).
    pub dice: f64,
    /// The target in-control run length the case was fed under, in cases.
    pub target_cases: f64,
}

/// What replay computed for one case.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayStep {
    /// Cases fed to the stream since its baseline started, this one included.
    pub t: u32,
    /// The case came earlier in case time than one already fed.
    pub late: bool,
    /// The stream's case rate before the case, in cases a day.
    pub cases_per_day: f64,
    /// The designs the case was fed through.
    pub parameters: Arc<Parameters>,
    /// One step per running detector, in the order of `parameters.designs`.
    pub updates: Vec<Update>,
}

/// Replays a stream from its baseline's start: `cases` in the order they were
/// fed, `structure_is_mean` for a per-case mean stream, `failure_threshold` the
/// structure's. Returns one step per case.
pub fn replay(
    baseline: &Baseline,
    structure_is_mean: bool,
    failure_threshold: f64,
    cases: &[ReplayCase],
) -> Vec<ReplayStep> {
    let mut state = StreamState::default();
    cases
        .iter()
        .enumerate()
        .map(|(i, case)| {
            let profile = StreamProfile {
                structure_is_mean,
                failure_threshold,
                cases_per_day: state.cases_per_day(),
            };
            let parameters = Arc::new(parameters(baseline, &profile, case.target_cases));
            let late = state.is_late(case.observed_at);
            let observation = Observation {
                dice: case.dice,
                at: case.observed_at,
            };
            let updates = state.feed(&parameters.designs, baseline, observation);
            ReplayStep {
                t: i as u32 + 1,
                late,
                cases_per_day: profile.cases_per_day,
                parameters,
                updates,
            }
        })
        .collect()
}

/// The first step that alarmed, and the detectors that alarmed there.
pub fn first_alarm(steps: &[ReplayStep]) -> Option<(usize, Vec<Detector>)> {
    steps.iter().enumerate().find_map(|(i, step)| {
        let alarmed: Vec<Detector> = step
            .updates
            .iter()
            .filter(|u| u.alarm)
            .map(|u| u.detector)
            .collect();
        (!alarmed.is_empty()).then_some((i, alarmed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::feed::{FeedSettings, Feeder, ScoredCase, VersionContext};
    use crate::drift::{Baseline, RunLengthTarget};
    use chrono::Duration;
    use std::collections::BTreeMap;

    #[test]
    fn replay_reproduces_the_feed_and_its_first_alarm() {
        let baseline = Baseline::new((0..200).map(|i| 0.8 + i as f64 / 1000.0).collect()).unwrap();
        let context = VersionContext {
            baseline_id: 1,
            samples: BTreeMap::from([(
                (crate::drift::Metric::Dice, "liver".to_owned()),
                baseline.clone(),
            )]),
            ..VersionContext::default()
        };
        let mut contexts = BTreeMap::from([(("m".to_owned(), "v".to_owned()), context)]);
        let settings = FeedSettings {
            target: RunLengthTarget::Arl0 { cases: 2000.0 },
            incident_hold: Duration::days(3),
            default_failure_threshold: 0.5,
        };
        let t0 = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        // 60 cases in control, then a drop; a few arrive late.
        let cases: Vec<ScoredCase> = (0..120)
            .map(|i| {
                let late = if i % 17 == 5 { 30 } else { 0 };
                let drop = if i >= 60 { 0.1 } else { 0.0 };
                ScoredCase {
                    result_id: i,
                    site: "a".into(),
                    model: "m".into(),
                    model_version: "v".into(),
                    observed_at: t0 + Duration::hours(2 * i - late),
                    structures: vec![("liver".into(), 0.8 + (i * 37 % 200) as f64 / 1000.0 - drop)],
                    mean_dice: None,
                    watched: Vec::new(),
                }
            })
            .collect();
        let mut streams = BTreeMap::new();
        let fed = Feeder::default().feed(&settings, &cases, &mut streams, &mut contexts, 0);
        let site: Vec<_> = fed.iter().filter(|u| u.key.stream.site == "a").collect();
        let history: Vec<ReplayCase> = site
            .iter()
            .map(|u| ReplayCase {
                observed_at: u.observed_at,
                dice: cases[u.result_id as usize].structures[0].1,
                target_cases: u.parameters.target_cases,
            })
            .collect();
        let steps = replay(&baseline, false, 0.5, &history);
        assert!(site.iter().any(|u| u.late));
        for (fed, step) in site.iter().zip(&steps) {
            assert_eq!(fed.updates, step.updates);
            assert_eq!(
                (fed.late, fed.cases_per_day),
                (step.late, step.cases_per_day)
            );
            assert_eq!(fed.parameters, step.parameters);
        }
        let (at, detectors) = first_alarm(&steps).expect("the drop alarms");
        assert!(
            at >= 60 && detectors.contains(&Detector::PitEwma),
            "{at} {detectors:?}"
        );
        let first_fed = site.iter().position(|u| u.updates.iter().any(|u| u.alarm));
        assert_eq!(first_fed, Some(at));
    }
}
