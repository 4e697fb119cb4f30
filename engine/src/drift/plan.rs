//! The alert planner: expected false alerts a month for each detector of a
//! fleet, and detection delays for typical changes, before going live.
//!
//! False alerts come from the exact run lengths behind the limits (harmonic
//! mean over baselines for PIT-EWMA, an exact sum over the baseline's failure
//! count for the CUSUM, the union bound for the guard rail). Delays come from
//! streams simulated with fixed seeds through the same [`StreamState::feed`]
//! the service runs.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Beta, Distribution};
use serde::{Deserialize, Serialize};

use super::calibration::binomial_cdf;
use super::limits::{CusumDesign, DAYS_PER_MONTH, ewma_harmonic_run_length, ewma_limit};
use super::{
    Baseline, Design, Detector, Metric, Observation, RunLengthTarget, StreamProfile, StreamState,
};

/// A per-case Dice law: Beta with this mean and standard deviation, and with
/// probability `failure_rate` a failure (uniform between 0.05 and 0.45).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiceModel {
    /// Mean Dice of non-failures (clamped to 0.05–0.99 when sampling).
    pub mean: f64,
    /// Standard deviation of the Dice of non-failures.
    pub sd: f64,
    /// Chance that a case is a failure, in [0, 1].
    pub failure_rate: f64,
}

impl DiceModel {
    /// One case's Dice.
    pub fn sample(&self, rng: &mut StdRng) -> f64 {
        if rng.random::<f64>() < self.failure_rate {
            return rng.random_range(0.05..0.45);
        }
        let mean = self.mean.clamp(0.05, 0.99);
        let common = mean * (1.0 - mean) / (self.sd * self.sd) - 1.0;
        Beta::new(mean * common, (1.0 - mean) * common).map_or(mean, |b| b.sample(rng))
    }
}

/// A fleet to plan for.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// Sites sending cases.
    pub sites: u32,
    /// Structures per case (each site also has a per-case mean stream).
    pub structures: u32,
    /// Structures whose schema watches each other metric (`drift_metrics`):
    /// each gets a site and a pooled stream of that metric, assumed fed by
    /// every case. Metrics left out (or Dice) add nothing.
    pub watched: BTreeMap<Metric, u32>,
    /// Cases a day at each site.
    pub cases_per_day: f64,
    /// Cases in each stream's baseline.
    pub baseline_cases: usize,
    /// What sets every detector's in-control run length.
    pub target: RunLengthTarget,
    /// Baseline failure rate of the structures, in [0, 1].
    pub failure_rate: f64,
    /// Dice below this is a failure.
    pub failure_threshold: f64,
}

/// One kind of stream of a fleet: its metric, how many, and its case rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct StreamKind {
    metric: Metric,
    count: u32,
    cases_per_day: f64,
    structure_is_mean: bool,
}

impl StreamKind {
    /// Its (stream, detector) pairs, as the service's feed counts them.
    fn pairs(&self) -> usize {
        let runs = Detector::ALL
            .iter()
            .filter(|d| d.runs_on(self.structure_is_mean))
            .count();
        self.count as usize * runs
    }
}

impl Fleet {
    /// Dice streams of each site and pooled, for each structure and the
    /// per-case mean; then a site and a pooled stream of each watched
    /// structure's other metric (no mean stream of them). The first is a
    /// site's Dice structure stream.
    fn stream_kinds(&self) -> Vec<StreamKind> {
        let pooled = self.cases_per_day * self.sites as f64;
        let dice = [
            (self.sites * self.structures, self.cases_per_day, false),
            (self.sites, self.cases_per_day, true),
            (self.structures, pooled, false),
            (1, pooled, true),
        ]
        .map(|(count, rate, mean)| (Metric::Dice, count, rate, mean));
        let others = self
            .watched
            .iter()
            .filter(|(metric, _)| **metric != Metric::Dice)
            .flat_map(|(&metric, &structures)| {
                [
                    (metric, self.sites * structures, self.cases_per_day, false),
                    (metric, structures, pooled, false),
                ]
            });
        dice.into_iter()
            .chain(others)
            .map(
                |(metric, count, cases_per_day, structure_is_mean)| StreamKind {
                    metric,
                    count,
                    cases_per_day,
                    structure_is_mean,
                },
            )
            .collect()
    }

    /// Streams, and (stream, detector) pairs sharing the budget.
    pub fn streams_and_pairs(&self) -> (u32, usize) {
        let kinds = self.stream_kinds();
        let streams = kinds.iter().map(|k| k.count).sum();
        let pairs = kinds.iter().map(StreamKind::pairs).sum();
        (streams, pairs)
    }

    fn profile(&self, kind: &StreamKind) -> StreamProfile {
        StreamProfile {
            structure_is_mean: kind.structure_is_mean,
            failure_threshold: self.failure_threshold,
            cases_per_day: kind.cases_per_day,
        }
    }
}

/// Expected false alerts a month of one detector over the whole fleet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FalseAlerts {
    /// The detector.
    pub detector: Detector,
    /// Streams of the fleet it runs on.
    pub streams: u32,
    /// False alerts a month over those streams.
    pub per_month: f64,
    /// The figure is an upper bound rather than an expectation.
    pub upper_bound: bool,
}

/// The streams of one metric of a fleet, and their expected false alerts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricStreams {
    /// The metric watched.
    pub metric: Metric,
    /// Structures watching it.
    pub structures: u32,
    /// Its streams (site and pooled; for Dice also the per-case mean).
    pub streams: u32,
    /// Their (stream, detector) pairs.
    pub pairs: usize,
    /// Expected false alerts a month over them, all detectors (an upper bound:
    /// the guard rail's is one).
    pub per_month: f64,
}

/// Expected false alerts a month of each running (stream kind, detector).
fn expected_by_kind(fleet: &Fleet) -> Vec<(StreamKind, Detector, f64)> {
    let (_, pairs) = fleet.streams_and_pairs();
    let kinds = fleet.stream_kinds();
    Detector::ALL
        .into_iter()
        .flat_map(|detector| kinds.iter().map(move |kind| (*kind, detector)))
        .filter(|(kind, detector)| detector.runs_on(kind.structure_is_mean) && kind.count > 0)
        .map(|(kind, detector)| {
            let target = fleet.target.cases(pairs, kind.cases_per_day);
            let cases_a_month = DAYS_PER_MONTH * kind.cases_per_day;
            let rate = false_alarm_rate(detector, fleet, target);
            (kind, detector, kind.count as f64 * cases_a_month * rate)
        })
        .collect()
}

/// Expected false alerts a month, per detector.
pub fn false_alerts(fleet: &Fleet) -> Vec<FalseAlerts> {
    per_detector(&expected_by_kind(fleet))
}

fn per_detector(expected: &[(StreamKind, Detector, f64)]) -> Vec<FalseAlerts> {
    Detector::ALL
        .into_iter()
        .map(|detector| {
            let mine = expected.iter().filter(|(_, d, _)| *d == detector);
            FalseAlerts {
                detector,
                streams: mine.clone().map(|(kind, _, _)| kind.count).sum(),
                per_month: mine.map(|(_, _, per_month)| per_month).sum(),
                upper_bound: detector == Detector::GuardRail,
            }
        })
        .collect()
}

/// Streams, pairs and expected false alerts of each metric the fleet watches.
fn per_metric(fleet: &Fleet, expected: &[(StreamKind, Detector, f64)]) -> Vec<MetricStreams> {
    Metric::ALL
        .into_iter()
        .filter_map(|metric| {
            let structures = match metric {
                Metric::Dice => fleet.structures,
                other => *fleet.watched.get(&other)?,
            };
            let kinds: Vec<StreamKind> = fleet
                .stream_kinds()
                .into_iter()
                .filter(|k| k.metric == metric)
                .collect();
            Some(MetricStreams {
                metric,
                structures,
                streams: kinds.iter().map(|k| k.count).sum(),
                pairs: kinds.iter().map(StreamKind::pairs).sum(),
                per_month: expected
                    .iter()
                    .filter(|(kind, _, _)| kind.metric == metric)
                    .map(|(_, _, per_month)| per_month)
                    .sum(),
            })
        })
        .collect()
}

/// Mean false alarms per case of one detector on one stream with a target run
/// length, over the fleet's baselines (for the guard rail, an upper bound).
pub fn false_alarm_rate(detector: Detector, fleet: &Fleet, target: f64) -> f64 {
    let n = fleet.baseline_cases;
    match detector {
        Detector::PitEwma => 1.0 / ewma_harmonic_run_length(n, ewma_limit(n, target).width),
        Detector::Cusum => cusum_false_alarm_rate(fleet, target),
        Detector::GuardRail => 1.0 / target,
    }
}

/// Mean false alarms per case of the CUSUM over baselines: the exact sum over
/// the baseline's failure count.
fn cusum_false_alarm_rate(fleet: &Fleet, target: f64) -> f64 {
    let n = fleet.baseline_cases as u64;
    let p = fleet.failure_rate;
    let mut rate = 0.0;
    let mut below = 0.0;
    for k in 0..=n {
        let cdf = binomial_cdf(k, n, p);
        let pmf = cdf - below;
        below = cdf;
        if pmf < 1e-9 {
            if cdf > 0.5 {
                break;
            }
            continue;
        }
        if let Some(design) = CusumDesign::new(fleet.failure_threshold, k, n, target) {
            rate += pmf / design.run_length(p);
        }
    }
    rate
}

/// A change to detect on a site's structure stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Per-case Dice law before the change (and of the baseline).
    pub before: DiceModel,
    /// Per-case Dice law after it.
    pub after: DiceModel,
}

/// Detection delays of a change over simulated streams.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delays {
    /// Streams simulated.
    pub streams: usize,
    /// Streams that raised a false alarm before the change (left out of the delays).
    pub false_alarm_before: usize,
    /// Median delay in cases after the change; None when fewer than half were detected.
    pub median_cases: Option<f64>,
    /// 90th-percentile delay in cases; None when fewer than 90 % were detected.
    pub p90_cases: Option<f64>,
    /// Median delay in days; None as `median_cases`.
    pub median_days: Option<f64>,
    /// 90th-percentile delay in days; None as `p90_cases`.
    pub p90_days: Option<f64>,
    /// Share of the streams kept that detected the change within the horizon.
    pub detected: f64,
    /// Days after the change the simulation looked.
    pub horizon_days: f64,
    /// Share of the streams kept that detected the change within 10 days.
    pub detected_within_10_days: f64,
}

/// Cases fed before the change, so the stream is past its warm-up and has a
/// full guard-rail window.
const CASES_BEFORE: u32 = 100;

/// Delays until any detector of a site's structure stream alarms after
/// `change`, over `streams` simulated streams (fixed `seed`), each with its own
/// baseline, looking at most `horizon_days` after the change.
pub fn detection_delays(
    fleet: &Fleet,
    change: &Change,
    streams: usize,
    horizon_days: f64,
    seed: u64,
) -> Delays {
    let (_, pairs) = fleet.streams_and_pairs();
    let kind = fleet.stream_kinds()[0];
    let rate = kind.cases_per_day;
    let target = fleet.target.cases(pairs, rate);
    let profile = fleet.profile(&kind);
    let step = Duration::milliseconds((86_400_000.0 / rate) as i64);
    let horizon = (horizon_days * rate).ceil() as u32;
    let start = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
    let mut delays = Vec::new();
    let mut false_alarm_before = 0;
    // The CUSUM's design depends on the baseline only through its failure count.
    let mut cusums: std::collections::HashMap<u64, Option<Design>> = Default::default();
    for s in 0..streams {
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(s as u64));
        let values = (0..fleet.baseline_cases)
            .map(|_| change.before.sample(&mut rng))
            .collect();
        let Ok(baseline) = Baseline::new(values) else {
            continue;
        };
        let failures = baseline.failures(fleet.failure_threshold);
        let cusum = cusums
            .entry(failures)
            .or_insert_with(|| Design::new(Detector::Cusum, &baseline, &profile, target))
            .clone();
        let designs: Vec<Design> = [Detector::GuardRail, Detector::PitEwma]
            .into_iter()
            .filter_map(|d| Design::new(d, &baseline, &profile, target))
            .chain(cusum)
            .collect();
        let mut state = StreamState::default();
        let mut at = start;
        let mut feed = |state: &mut StreamState, model: &DiceModel, rng: &mut StdRng| {
            at += step;
            let case = Observation {
                dice: model.sample(rng),
                at,
            };
            state
                .feed(&designs, &baseline, case)
                .iter()
                .any(|u| u.alarm)
        };
        if (0..CASES_BEFORE).any(|_| feed(&mut state, &change.before, &mut rng)) {
            false_alarm_before += 1;
            continue;
        }
        let delay = (1..=horizon).find(|_| feed(&mut state, &change.after, &mut rng));
        delays.push(delay.map_or(f64::INFINITY, f64::from));
    }
    delays.sort_by(f64::total_cmp);
    let percentile = |q: f64| -> Option<f64> {
        let v = *delays.get(((delays.len() as f64 * q).ceil() as usize).saturating_sub(1))?;
        v.is_finite().then_some(v)
    };
    let share = |within: f64| {
        delays.iter().filter(|&&d| d <= within).count() as f64 / delays.len().max(1) as f64
    };
    let detected = share(f64::MAX);
    let detected_within_10_days = share(10.0 * rate);
    Delays {
        streams,
        false_alarm_before,
        median_cases: percentile(0.5),
        p90_cases: percentile(0.9),
        median_days: percentile(0.5).map(|c| c / rate),
        p90_days: percentile(0.9).map(|c| c / rate),
        detected,
        horizon_days,
        detected_within_10_days,
    }
}

/// The changes the planner reports: Dice drops of 0.02, 0.05 and 0.10 at each
/// structure spread, and a failure rate rising from 3 % to 10 %.
pub fn standard_changes(spreads: &[(f64, f64)]) -> Vec<(String, Change)> {
    let mut changes = Vec::new();
    for &(mean, sd) in spreads {
        for drop in [0.02, 0.05, 0.10] {
            let before = DiceModel {
                mean,
                sd,
                failure_rate: 0.0,
            };
            let after = DiceModel {
                mean: mean - drop,
                ..before
            };
            changes.push((
                format!("Dice −{drop:.2} (mean {mean:.2}, sd {sd:.2})"),
                Change { before, after },
            ));
        }
    }
    let before = DiceModel {
        mean: 0.90,
        sd: 0.04,
        failure_rate: 0.03,
    };
    changes.push((
        "failure rate 3 % → 10 % (mean 0.90, sd 0.04)".into(),
        Change {
            before,
            after: DiceModel {
                failure_rate: 0.10,
                ..before
            },
        },
    ));
    changes
}

/// Structure spreads the planner reports delays for by default: liver-like
/// (mean 0.95, sd 0.02) and pancreas-like (mean 0.80, sd 0.07).
pub const DEFAULT_SPREADS: [(f64, f64); 2] = [(0.95, 0.02), (0.80, 0.07)];

/// A whole plan: the fleet's budget split, expected false alerts and delays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Sites of the fleet.
    pub sites: u32,
    /// Structures per case.
    pub structures: u32,
    /// Cases a day at each site.
    pub cases_per_day: f64,
    /// Cases in each stream's baseline.
    pub baseline_cases: usize,
    /// Streams: per site and pooled, for each structure and the per-case mean,
    /// and for each other metric a structure watches.
    pub streams: u32,
    /// (stream, detector) pairs sharing the budget.
    pub pairs: usize,
    /// In-control run length of each pair in days (None for a per-case override).
    pub run_length_days: Option<f64>,
    /// Expected false alerts a month, per detector.
    pub false_alerts: Vec<FalseAlerts>,
    /// All detectors together.
    pub false_alerts_per_month: f64,
    /// Streams, pairs and expected false alerts of each metric watched (Dice
    /// first; the others only where structures watch them).
    #[serde(default)]
    pub metrics: Vec<MetricStreams>,
    /// Delays of each standard change on a site's structure stream.
    pub delays: Vec<(String, Delays)>,
}

/// Days after a change the delay simulation looks.
pub const HORIZON_DAYS: f64 = 30.0;

/// Plans a fleet: false alerts, and delays over `streams` simulated streams per
/// change, looking `horizon_days` ahead.
pub fn plan(fleet: &Fleet, spreads: &[(f64, f64)], streams: usize, horizon_days: f64) -> Plan {
    let (stream_count, pairs) = fleet.streams_and_pairs();
    let expected = expected_by_kind(fleet);
    let false_alerts = per_detector(&expected);
    let delays = standard_changes(spreads)
        .into_iter()
        .enumerate()
        .map(|(i, (name, change))| {
            (
                name,
                detection_delays(fleet, &change, streams, horizon_days, 17 + i as u64),
            )
        })
        .collect();
    Plan {
        sites: fleet.sites,
        structures: fleet.structures,
        cases_per_day: fleet.cases_per_day,
        baseline_cases: fleet.baseline_cases,
        streams: stream_count,
        pairs,
        run_length_days: fleet.target.days(pairs),
        false_alerts_per_month: false_alerts.iter().map(|f| f.per_month).sum(),
        false_alerts,
        metrics: per_metric(fleet, &expected),
        delays,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Fleet {
        Fleet {
            sites: 20,
            structures: 10,
            watched: BTreeMap::new(),
            cases_per_day: 50.0,
            baseline_cases: 200,
            target: RunLengthTarget::Budget {
                false_alerts_per_month: 1.0,
            },
            failure_rate: 0.03,
            failure_threshold: 0.5,
        }
    }

    #[test]
    fn a_network_counts_its_streams_and_pairs() {
        // 20 × (10 + 1) site streams and 11 pooled; the CUSUM and the guard rail
        // skip the 21 mean streams.
        assert_eq!(network().streams_and_pairs(), (231, 231 * 3 - 2 * 21));
    }

    /// `segwatch simulate`'s deployment with `--lesions` and probabilities:
    /// lesion sensitivity on one structure, ECE on two.
    fn watching() -> Fleet {
        Fleet {
            sites: 3,
            structures: 3,
            watched: BTreeMap::from([(Metric::LesionSensitivity, 1), (Metric::Ece, 2)]),
            ..network()
        }
    }

    #[test]
    fn the_plan_counts_the_pairs_the_service_feeds() {
        use crate::drift::feed::{FeedSettings, Feeder, ScoredCase, VersionContext};
        use crate::drift::incident::ALL;
        let sample = || Baseline::new((0..200).map(|i| 0.6 + 0.3 * i as f64 / 199.0).collect());
        let mut samples = BTreeMap::new();
        for structure in ["liver", "spleen", "mets", ALL] {
            samples.insert((Metric::Dice, structure.to_owned()), sample().unwrap());
        }
        let watched = [
            ("mets", Metric::LesionSensitivity),
            ("liver", Metric::Ece),
            ("mets", Metric::Ece),
        ];
        for (structure, metric) in watched {
            samples.insert((metric, structure.to_owned()), sample().unwrap());
        }
        let context = VersionContext {
            baseline_id: 1,
            samples,
            watched: watched.iter().map(|(s, m)| (s.to_string(), *m)).collect(),
            ..VersionContext::default()
        };
        let mut contexts = BTreeMap::from([(("m".to_owned(), "v".to_owned()), context)]);
        let start = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let cases: Vec<ScoredCase> = ["a", "b", "c"]
            .into_iter()
            .enumerate()
            .map(|(i, site)| ScoredCase {
                result_id: i as i64,
                site: site.into(),
                model: "m".into(),
                model_version: "v".into(),
                observed_at: start + Duration::hours(i as i64),
                structures: ["liver", "spleen", "mets"]
                    .map(|s| (s.to_owned(), 0.8))
                    .to_vec(),
                mean_dice: Some(0.8),
                watched: watched
                    .iter()
                    .map(|(s, m)| (s.to_string(), *m, m.score(0.8)))
                    .collect(),
            })
            .collect();
        let settings = FeedSettings {
            target: network().target,
            incident_hold: Duration::days(3),
            default_failure_threshold: 0.5,
        };
        let mut streams = BTreeMap::new();
        let fed = Feeder::default().feed(&settings, &cases, &mut streams, &mut contexts, 0);
        let fed_pairs: usize = streams.values().map(|r| r.pairs).sum();
        let fleet = watching();
        assert_eq!(fleet.streams_and_pairs(), (streams.len() as u32, fed_pairs));
        // The budget the feed split is the plan's.
        assert_eq!(fed.last().map(|u| u.pairs), Some(fed_pairs));
        // 3 × (3 + 1) + 4 Dice streams; 3 × 3 + 3 other streams, none a mean.
        assert_eq!(fed_pairs, 16 * 3 - 2 * 4 + 12 * 3);
    }

    #[test]
    fn watched_metrics_share_the_budget_and_are_reported() {
        let dice_only = plan(
            &Fleet {
                watched: BTreeMap::new(),
                ..watching()
            },
            &[],
            10,
            1.0,
        );
        let watched = plan(&watching(), &[], 10, 1.0);
        assert!(watched.pairs > dice_only.pairs);
        // More pairs sharing one budget: each pair's run length is longer.
        let days = |p: &Plan| p.run_length_days.unwrap();
        let ratio = days(&watched) / days(&dice_only);
        assert!((ratio - watched.pairs as f64 / dice_only.pairs as f64).abs() < 1e-9);
        let rows: Vec<(Metric, u32, u32, usize)> = watched
            .metrics
            .iter()
            .map(|m| (m.metric, m.structures, m.streams, m.pairs))
            .collect();
        assert_eq!(
            rows,
            [
                (Metric::Dice, 3, 16, 40),
                (Metric::LesionSensitivity, 1, 4, 12),
                (Metric::Ece, 2, 8, 24),
            ]
        );
        let pairs: usize = watched.metrics.iter().map(|m| m.pairs).sum();
        assert_eq!(pairs, watched.pairs);
        let per_month: f64 = watched.metrics.iter().map(|m| m.per_month).sum();
        assert!((per_month - watched.false_alerts_per_month).abs() < 1e-9);
        assert!(watched.false_alerts_per_month <= 1.0, "{watched:?}");
        assert_eq!(dice_only.metrics.len(), 1);
    }

    #[test]
    fn expected_false_alerts_stay_within_the_budget() {
        // `segwatch simulate`'s deployment (the 20-site network's figures are
        // in docs/drift.md, from `segwatch drift plan`).
        let fleet = Fleet {
            sites: 3,
            structures: 5,
            cases_per_day: 8.0,
            ..network()
        };
        let rows = false_alerts(&fleet);
        let total: f64 = rows.iter().map(|r| r.per_month).sum();
        assert!(total <= 1.0, "{rows:?}");
        // Each detector gets its share: a third of the budget or less.
        for row in &rows {
            assert!(row.per_month <= 0.35, "{row:?}");
        }
    }
}
