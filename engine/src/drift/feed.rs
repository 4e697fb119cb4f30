//! Feeding scored cases to their streams, in case-time order: the pure core of
//! the service's drift task. The store loads what this needs and persists what
//! it changes; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::incident::{ALL, Incident, Incidents, StreamId};
use super::limits::CusumDesign;
use super::{
    Baseline, Design, Detector, Metric, Observation, RunLengthTarget, StreamProfile, StreamState,
    Update,
};

/// One scored case: its Dice per structure (structures empty on both sides
/// left out), its mean, and the other metrics its schema watches.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredCase {
    /// Stored id of the evaluation result the case comes from.
    pub result_id: i64,
    /// Site (hospital) that sent the case.
    pub site: String,
    /// Model name.
    pub model: String,
    /// Model version: each version has its own baselines, streams and incidents.
    pub model_version: String,
    /// Case time.
    pub observed_at: DateTime<Utc>,
    /// (structure name, Dice) for each structure scored.
    pub structures: Vec<(String, f64)>,
    /// Mean Dice over `structures`; None when there is none.
    pub mean_dice: Option<f64>,
    /// (structure, metric, value) of the other metrics the schema watches, as
    /// scored (ECE as is, not its complement); a case without a value for
    /// one (no reference lesion, no probabilities) leaves it out.
    pub watched: Vec<(String, Metric, f64)>,
}

/// A stream of the deployment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// Model name.
    pub model: String,
    /// Model version.
    pub model_version: String,
    /// Site and structure within the version.
    pub stream: StreamId,
}

/// A stream's stored state.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    /// The baseline its state was built on.
    pub baseline_id: i64,
    /// Detector state; starts afresh when the version's baseline changes.
    pub state: StreamState,
    /// Detectors running on it: its share of the budget.
    pub pairs: usize,
    /// Changed since loaded.
    pub changed: bool,
}

/// A model version's active baseline, failure thresholds and open incidents.
#[derive(Debug, Clone, Default)]
pub struct VersionContext {
    /// Stored id of the version's active baseline.
    pub baseline_id: i64,
    /// (metric, structure or "all" for the per-case mean) → sample of
    /// scores ([`Metric::score`]: the complement of ECE).
    pub samples: BTreeMap<(Metric, String), Baseline>,
    /// Structure → Dice failure threshold.
    pub failure_thresholds: BTreeMap<String, f64>,
    /// (structure, metric) pairs besides Dice the schema watches: other
    /// metrics feed streams only there (and where the baseline has a sample).
    pub watched: BTreeSet<(String, Metric)>,
    /// The version's open incidents, updated as cases alarm.
    pub incidents: Incidents,
    /// Incidents closed while feeding, with the case time that closed them.
    pub closed: Vec<(Incident, DateTime<Utc>)>,
}

/// How streams are fed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FeedSettings {
    /// What sets every detector's in-control run length.
    pub target: RunLengthTarget,
    /// An incident closes after this much case time without alarms.
    pub incident_hold: Duration,
    /// Failure threshold of structures the schema leaves unset.
    pub default_failure_threshold: f64,
}

/// What a stream's detectors were computed with: stored once per stream and
/// baseline for as long as it stays the same, for audit and replay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    /// The stream's target in-control run length, in cases.
    pub target_cases: f64,
    /// Dice below this is a failure (CUSUM and guard rail).
    pub failure_threshold: f64,
    /// Each running detector's parameters and limit (the guard rail's table of
    /// window limits is left out: replay recomputes it).
    pub designs: Vec<Design>,
}

/// One case fed to one stream: every detector's step and what it used.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamUpdate {
    /// Stored id of the evaluation result of the case.
    pub result_id: i64,
    /// The stream updated.
    pub key: StreamKey,
    /// The baseline the stream's state is built on.
    pub baseline_id: i64,
    /// Case time.
    pub observed_at: DateTime<Utc>,
    /// (stream, detector) pairs sharing the false-alert budget.
    pub pairs: usize,
    /// The stream's case rate over its window, in cases a day.
    pub cases_per_day: f64,
    /// The case came earlier in case time than one already fed.
    pub late: bool,
    /// What the steps were computed with.
    pub parameters: Arc<Parameters>,
    /// One step per running detector, in the order of `parameters.designs`.
    pub updates: Vec<Update>,
}

/// Designs for one stream kind, baseline and target (and guard-rail window
/// scale), computed once.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DesignKey {
    baseline_id: i64,
    structure: String,
    metric: Metric,
    target_bits: u64,
    window_scale: i32,
    threshold_bits: u64,
}

/// The designs of a stream's detectors for its baseline, profile and target.
/// The guard rail's table of window limits is sized by the case rate rounded up
/// to a power of two, so it is recomputed when the rate doubles, not on every
/// small change.
pub fn parameters(baseline: &Baseline, profile: &StreamProfile, target: f64) -> Parameters {
    parameters_with(baseline, profile, target, |key| key.design())
}

/// As [`parameters`], with the CUSUM's design from `cusum`.
fn parameters_with(
    baseline: &Baseline,
    profile: &StreamProfile,
    target: f64,
    mut cusum: impl FnMut(CusumKey) -> Option<CusumDesign>,
) -> Parameters {
    let profile = StreamProfile {
        cases_per_day: 2f64.powi(window_scale(profile.cases_per_day)),
        ..*profile
    };
    let threshold = profile.failure_threshold;
    let designs = Detector::ALL
        .into_iter()
        .filter_map(|d| match d {
            Detector::Cusum if d.runs_on(profile.structure_is_mean) => cusum(CusumKey {
                threshold_bits: threshold.to_bits(),
                failures: baseline.failures(threshold),
                cases: baseline.len() as u64,
                target_bits: target.to_bits(),
            })
            .map(Design::Cusum),
            _ => Design::new(d, baseline, &profile, target),
        })
        .collect();
    Parameters {
        target_cases: target,
        failure_threshold: threshold,
        designs,
    }
}

/// Everything a CUSUM design depends on: streams of other structures whose
/// baselines have as many failures share it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CusumKey {
    threshold_bits: u64,
    failures: u64,
    cases: u64,
    target_bits: u64,
}

impl CusumKey {
    fn design(self) -> Option<CusumDesign> {
        CusumDesign::new(
            f64::from_bits(self.threshold_bits),
            self.failures,
            self.cases,
            f64::from_bits(self.target_bits),
        )
    }
}

fn window_scale(cases_per_day: f64) -> i32 {
    cases_per_day.max(1.0).log2().ceil() as i32
}

/// Feeds cases to streams, keeping designs between calls.
#[derive(Debug, Default)]
pub struct Feeder {
    designs: HashMap<DesignKey, Arc<Parameters>>,
    /// CUSUM designs, the costliest part of a stream's parameters.
    cusums: HashMap<CusumKey, Option<CusumDesign>>,
}

/// Designs kept at most (the cache is cleared past it).
const DESIGN_CACHE: usize = 4096;

impl Feeder {
    /// Feeds `cases` (in case-time order) to their streams. `streams` holds the
    /// stored state of the streams they touch (missing ones start fresh);
    /// `contexts` each model version's baseline and open incidents (versions
    /// without an active baseline are skipped); `active_pairs` counts the
    /// (stream, detector) pairs of the deployment active in the last 30 days,
    /// streams in `streams` included. Returns every stream's update, in the
    /// order fed.
    pub fn feed(
        &mut self,
        settings: &FeedSettings,
        cases: &[ScoredCase],
        streams: &mut BTreeMap<StreamKey, StreamRecord>,
        contexts: &mut BTreeMap<(String, String), VersionContext>,
        mut active_pairs: usize,
    ) -> Vec<StreamUpdate> {
        let mut records = Vec::new();
        for case in cases {
            let version = (case.model.clone(), case.model_version.clone());
            let Some(context) = contexts.get_mut(&version) else {
                continue;
            };
            let dice = case
                .structures
                .iter()
                .map(|(structure, dice)| (structure.as_str(), Metric::Dice, *dice));
            let mean = case.mean_dice.map(|mean| (ALL, Metric::Dice, mean));
            let watched = case
                .watched
                .iter()
                .filter(|(structure, metric, _)| {
                    context.watched.contains(&(structure.clone(), *metric))
                })
                .map(|(structure, metric, value)| (structure.as_str(), *metric, *value));
            let mut inputs: Vec<(StreamId, f64)> = Vec::new();
            for (structure, metric, value) in dice.chain(mean).chain(watched) {
                let sampled = context
                    .samples
                    .contains_key(&(metric, structure.to_owned()));
                if sampled && value.is_finite() {
                    for site in [case.site.as_str(), ALL] {
                        inputs.push((stream_id(site, structure, metric), metric.score(value)));
                    }
                }
            }
            // Every stream of the case joins the budget before any is fed, so
            // the first case already sees its site's and the pooled streams.
            for (stream, _) in &inputs {
                let key = StreamKey {
                    model: case.model.clone(),
                    model_version: case.model_version.clone(),
                    stream: stream.clone(),
                };
                let record = streams.entry(key).or_insert_with(|| StreamRecord {
                    baseline_id: context.baseline_id,
                    state: StreamState::default(),
                    pairs: 0,
                    changed: true,
                });
                if record.baseline_id != context.baseline_id {
                    active_pairs = active_pairs.saturating_sub(record.pairs);
                    *record = StreamRecord {
                        baseline_id: context.baseline_id,
                        state: StreamState::default(),
                        pairs: 0,
                        changed: true,
                    };
                }
                if record.pairs == 0 {
                    record.pairs = Detector::ALL
                        .iter()
                        .filter(|d| d.runs_on(stream.structure == ALL))
                        .count();
                    active_pairs += record.pairs;
                }
            }
            for (stream, score) in inputs {
                let key = StreamKey {
                    model: case.model.clone(),
                    model_version: case.model_version.clone(),
                    stream: stream.clone(),
                };
                let baseline = &context.samples[&(stream.metric, stream.structure.clone())];
                let threshold = stream.metric.failure_score(
                    context
                        .failure_thresholds
                        .get(&stream.structure)
                        .copied()
                        .unwrap_or(settings.default_failure_threshold),
                );
                let Some(record) = streams.get_mut(&key) else {
                    continue;
                };
                let profile = StreamProfile {
                    structure_is_mean: stream.structure == ALL,
                    failure_threshold: threshold,
                    cases_per_day: record.state.cases_per_day(),
                };
                let target = settings.target.cases(active_pairs, profile.cases_per_day);
                let parameters =
                    self.parameters(context.baseline_id, &stream, baseline, &profile, target);
                let late = record.state.is_late(case.observed_at);
                let observation = Observation {
                    dice: score,
                    at: case.observed_at,
                };
                let updates = record
                    .state
                    .feed(&parameters.designs, baseline, observation);
                record.changed = true;
                for update in updates.iter().filter(|u| u.alarm) {
                    context.incidents.alarm(&stream, update, case.observed_at);
                }
                records.push(StreamUpdate {
                    result_id: case.result_id,
                    key,
                    baseline_id: context.baseline_id,
                    observed_at: case.observed_at,
                    pairs: active_pairs,
                    cases_per_day: profile.cases_per_day,
                    late,
                    parameters,
                    updates,
                });
            }
            let closed = context
                .incidents
                .close_quiet(case.observed_at, settings.incident_hold);
            context
                .closed
                .extend(closed.into_iter().map(|i| (i, case.observed_at)));
        }
        records
    }

    fn parameters(
        &mut self,
        baseline_id: i64,
        stream: &StreamId,
        baseline: &Baseline,
        profile: &StreamProfile,
        target: f64,
    ) -> Arc<Parameters> {
        let key = DesignKey {
            baseline_id,
            structure: stream.structure.clone(),
            metric: stream.metric,
            target_bits: target.to_bits(),
            window_scale: window_scale(profile.cases_per_day),
            threshold_bits: profile.failure_threshold.to_bits(),
        };
        if self.designs.len() >= DESIGN_CACHE {
            self.designs.clear();
            self.cusums.clear();
        }
        let cusums = &mut self.cusums;
        self.designs
            .entry(key)
            .or_insert_with(|| {
                Arc::new(parameters_with(baseline, profile, target, |key| {
                    *cusums.entry(key).or_insert_with(|| key.design())
                }))
            })
            .clone()
    }
}

fn stream_id(site: &str, structure: &str, metric: Metric) -> StreamId {
    StreamId {
        site: site.to_owned(),
        structure: structure.to_owned(),
        metric,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::incident::ALL;

    fn settings() -> FeedSettings {
        FeedSettings {
            target: RunLengthTarget::Arl0 { cases: 2000.0 },
            incident_hold: Duration::days(3),
            default_failure_threshold: 0.5,
        }
    }

    /// A sample of `values` as the detectors see them ([`Metric::score`]).
    fn sample(metric: Metric, values: impl Iterator<Item = f64>) -> Baseline {
        Baseline::new(values.map(|v| metric.score(v)).collect()).unwrap()
    }

    fn context(watched: &[(&str, Metric)]) -> VersionContext {
        let spread = |lo: f64, hi: f64| (0..200).map(move |i| lo + (hi - lo) * i as f64 / 199.0);
        VersionContext {
            baseline_id: 1,
            samples: BTreeMap::from([
                (
                    (Metric::Dice, "mets".into()),
                    sample(Metric::Dice, spread(0.5, 0.9)),
                ),
                (
                    (Metric::LesionSensitivity, "mets".into()),
                    sample(Metric::LesionSensitivity, spread(0.6, 1.0)),
                ),
                (
                    (Metric::LesionSensitivity, "nodules".into()),
                    sample(Metric::LesionSensitivity, spread(0.6, 1.0)),
                ),
                (
                    (Metric::Ece, "liver".into()),
                    sample(Metric::Ece, spread(0.02, 0.06)),
                ),
            ]),
            watched: watched.iter().map(|(s, m)| (s.to_string(), *m)).collect(),
            ..VersionContext::default()
        }
    }

    fn case(i: i64, watched: Vec<(&str, Metric, f64)>) -> ScoredCase {
        ScoredCase {
            result_id: i,
            site: "a".into(),
            model: "m".into(),
            model_version: "v".into(),
            observed_at: DateTime::<Utc>::from_timestamp(1_700_000_000 + 3600 * i, 0).unwrap(),
            structures: vec![("mets".into(), 0.7)],
            mean_dice: None,
            watched: watched
                .into_iter()
                .map(|(s, m, v)| (s.to_owned(), m, v))
                .collect(),
        }
    }

    #[test]
    fn other_metrics_feed_only_structures_the_schema_watches_and_the_baseline_samples() {
        let mut contexts = BTreeMap::from([(
            ("m".to_owned(), "v".to_owned()),
            context(&[
                ("mets", Metric::LesionSensitivity),
                ("liver", Metric::Ece),
                ("liver", Metric::LesionSensitivity),
            ]),
        )]);
        let mut streams = BTreeMap::new();
        let values = vec![
            ("mets", Metric::LesionSensitivity, 0.5),
            // Sampled, not watched.
            ("nodules", Metric::LesionSensitivity, 0.5),
            ("liver", Metric::Ece, 0.03),
            // Watched, not sampled.
            ("liver", Metric::LesionSensitivity, 1.0),
            ("liver", Metric::Ece, f64::NAN),
        ];
        let fed = Feeder::default().feed(
            &settings(),
            &[case(0, values)],
            &mut streams,
            &mut contexts,
            0,
        );
        let mut keys: Vec<(String, String, Metric)> = streams
            .keys()
            .map(|k| {
                (
                    k.stream.site.clone(),
                    k.stream.structure.clone(),
                    k.stream.metric,
                )
            })
            .collect();
        keys.sort();
        let want = |site: &str, structure: &str, metric| (site.into(), structure.into(), metric);
        assert_eq!(
            keys,
            [
                want("a", "liver", Metric::Ece),
                want("a", "mets", Metric::Dice),
                want("a", "mets", Metric::LesionSensitivity),
                want(ALL, "liver", Metric::Ece),
                want(ALL, "mets", Metric::Dice),
                want(ALL, "mets", Metric::LesionSensitivity),
            ]
        );
        assert_eq!(fed.len(), 6);
        // Each stream's failure threshold is its metric's, in score units.
        for update in &fed {
            let threshold = update.key.stream.metric.failure_score(0.5);
            assert_eq!(update.parameters.failure_threshold, threshold);
        }
    }

    /// Feeds 60 cases whose `metric` of `structure` is `value` to a version
    /// watching it; the (structure, metric) of the incidents opened.
    fn incidents_after(structure: &str, metric: Metric, value: f64) -> Vec<(String, Metric)> {
        let mut contexts = BTreeMap::from([(
            ("m".to_owned(), "v".to_owned()),
            context(&[(structure, metric)]),
        )]);
        let cases: Vec<ScoredCase> = (0..60)
            .map(|i| case(i, vec![(structure, metric, value)]))
            .collect();
        let mut streams = BTreeMap::new();
        Feeder::default().feed(&settings(), &cases, &mut streams, &mut contexts, 0);
        contexts
            .into_values()
            .flat_map(|c| c.incidents.open)
            .map(|i| (i.stream.structure, i.stream.metric))
            .collect()
    }

    #[test]
    fn a_rise_of_ece_alarms_and_a_fall_does_not() {
        // The baseline's ECE spans 0.02 to 0.06: 0.09 is worse than all of it.
        assert_eq!(
            incidents_after("liver", Metric::Ece, 0.09),
            [("liver".to_owned(), Metric::Ece)]
        );
        // Better calibration than every baseline case is no drift.
        assert!(incidents_after("liver", Metric::Ece, 0.005).is_empty());
    }

    #[test]
    fn a_drop_of_lesion_sensitivity_alarms_and_a_rise_does_not() {
        // The baseline's sensitivity spans 0.6 to 1.
        assert_eq!(
            incidents_after("mets", Metric::LesionSensitivity, 0.5),
            [("mets".to_owned(), Metric::LesionSensitivity)]
        );
        assert!(incidents_after("mets", Metric::LesionSensitivity, 1.0).is_empty());
    }
}
