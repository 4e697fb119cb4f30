//! False alarms and detection delays of lesion-sensitivity and ECE streams
//! beside Dice streams, through the drift task's own designs and detector step
//! (`drift::feed::parameters`, `StreamState::feed`) with each metric's score
//! and failure threshold (`drift::Metric`). Fixed seeds; not a test: it prints.
//!
//! `cargo run --release --example drift_metric_simulation -- --runs 400`
//!
//! Each run draws its own baseline of 200 cases. In control, a stream is fed
//! up to 5,000 cases at a target in-control run length of 5,000 cases per
//! detector; the false-alarm rate is first alarms over cases fed (the budget is
//! three detectors' 1/5,000). After a change, the delay is the cases from the
//! change to the first alarm (streams that alarmed in their 100 in-control
//! cases before it are counted apart).
//!
//! Case models: Dice Beta(mean 0.85, sd 0.05) with 3 % failures, dropping to
//! mean 0.80; lesion sensitivity of 1 + Poisson(2) reference lesions each found
//! with chance 0.85, dropping to 0.70 (a case feeds detected / reference
//! lesions, with many ties); ECE log-normal with median 0.04 (σ 0.4 in log),
//! rising to a median of 0.06.

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, LogNormal, Poisson};
use segwatch::drift::feed::{Parameters, parameters};
use segwatch::drift::plan::DiceModel;
use segwatch::drift::{
    Baseline, Detector, Metric, Observation, RECOMMENDED_BASELINE, StreamProfile, StreamState,
};

/// Target in-control run length of each detector, in cases.
const TARGET: f64 = 5_000.0;
/// In-control cases fed per run.
const HORIZON: u32 = 5_000;
/// In-control cases before a change.
const BEFORE_CHANGE: u32 = 100;
/// Cases looked at after a change.
const AFTER_CHANGE: u32 = 2_000;
/// Cases a day (sizes the guard rail's window table and case times).
const CASES_PER_DAY: f64 = 10.0;
/// Batches the in-control runs are split into for the spread of the rate.
const BATCHES: usize = 10;

/// One case's value of `metric`, as scored, in control or after the change.
fn value(metric: Metric, changed: bool, rng: &mut StdRng) -> f64 {
    match metric {
        Metric::Dice => DiceModel {
            mean: if changed { 0.80 } else { 0.85 },
            sd: 0.05,
            failure_rate: 0.03,
        }
        .sample(rng),
        Metric::LesionSensitivity => {
            let p = if changed { 0.70 } else { 0.85 };
            let extra: f64 = Poisson::new(2.0).map_or(0.0, |d| d.sample(rng));
            let lesions = 1 + extra as u32;
            let found = (0..lesions).filter(|_| rng.random::<f64>() < p).count();
            found as f64 / lesions as f64
        }
        Metric::Ece => {
            let median: f64 = if changed { 0.06 } else { 0.04 };
            let ece: f64 = LogNormal::new(median.ln(), 0.4).map_or(median, |d| d.sample(rng));
            ece.min(1.0)
        }
    }
}

/// A stream of `metric` with its own baseline and designs.
struct Stream {
    metric: Metric,
    baseline: Baseline,
    parameters: Parameters,
    state: StreamState,
    at: DateTime<Utc>,
}

impl Stream {
    fn new(metric: Metric, rng: &mut StdRng) -> Stream {
        let scores = (0..RECOMMENDED_BASELINE)
            .map(|_| metric.score(value(metric, false, rng)))
            .collect();
        let baseline = Baseline::new(scores).expect("scores in 0..=1");
        let profile = StreamProfile {
            structure_is_mean: false,
            failure_threshold: metric.failure_score(0.5),
            cases_per_day: CASES_PER_DAY,
        };
        Stream {
            metric,
            parameters: parameters(&baseline, &profile, TARGET),
            baseline,
            state: StreamState::default(),
            at: DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        }
    }

    /// Feeds one case; the detectors that alarmed.
    fn feed(&mut self, changed: bool, rng: &mut StdRng) -> Vec<Detector> {
        self.at += Duration::milliseconds((86_400_000.0 / CASES_PER_DAY) as i64);
        let case = Observation {
            dice: self.metric.score(value(self.metric, changed, rng)),
            at: self.at,
        };
        self.state
            .feed(&self.parameters.designs, &self.baseline, case)
            .into_iter()
            .filter(|u| u.alarm)
            .map(|u| u.detector)
            .collect()
    }
}

fn seed(metric: Metric, phase: u64, run: usize) -> u64 {
    (metric as u64 + 1) * 1_000_003 + phase * 100_003 + run as u64
}

struct InControl {
    alarms: usize,
    cases: u64,
    by_detector: [usize; 3],
    batch_rates: Vec<f64>,
}

fn in_control(metric: Metric, runs: usize) -> InControl {
    let mut outcome = InControl {
        alarms: 0,
        cases: 0,
        by_detector: [0; 3],
        batch_rates: Vec::new(),
    };
    let (mut batch_alarms, mut batch_cases) = (0, 0u64);
    for run in 0..runs {
        let mut rng = StdRng::seed_from_u64(seed(metric, 0, run));
        let mut stream = Stream::new(metric, &mut rng);
        let mut fed = 0;
        for _ in 0..HORIZON {
            fed += 1;
            let alarmed = stream.feed(false, &mut rng);
            if !alarmed.is_empty() {
                outcome.alarms += 1;
                batch_alarms += 1;
                for d in alarmed {
                    let i = Detector::ALL.iter().position(|x| *x == d).unwrap_or(0);
                    outcome.by_detector[i] += 1;
                }
                break;
            }
        }
        outcome.cases += fed;
        batch_cases += fed;
        if (run + 1) % (runs / BATCHES).max(1) == 0 {
            outcome
                .batch_rates
                .push(batch_alarms as f64 / batch_cases as f64);
            (batch_alarms, batch_cases) = (0, 0);
        }
    }
    outcome
}

/// Delays in cases after the change (infinite when never seen), and the
/// streams that alarmed before it.
fn delays(metric: Metric, runs: usize) -> (Vec<f64>, usize) {
    let mut delays = Vec::new();
    let mut early = 0;
    for run in 0..runs {
        let mut rng = StdRng::seed_from_u64(seed(metric, 1, run));
        let mut stream = Stream::new(metric, &mut rng);
        if (0..BEFORE_CHANGE).any(|_| !stream.feed(false, &mut rng).is_empty()) {
            early += 1;
            continue;
        }
        let delay = (1..=AFTER_CHANGE).find(|_| !stream.feed(true, &mut rng).is_empty());
        delays.push(delay.map_or(f64::INFINITY, f64::from));
    }
    delays.sort_by(f64::total_cmp);
    (delays, early)
}

fn quantile(sorted: &[f64], q: f64) -> String {
    let i = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
    match sorted.get(i) {
        Some(v) if v.is_finite() => format!("{v:.0}"),
        _ => "never".into(),
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let runs: usize = match argv.as_slice() {
        [flag, n] if flag == "--runs" => n.parse().expect("--runs N"),
        [] => 400,
        _ => panic!("usage: drift_metric_simulation [--runs N]"),
    };
    let budget = 3.0 / TARGET * 10_000.0;
    println!(
        "In control: {runs} runs of up to {HORIZON} cases per metric, own baseline of {RECOMMENDED_BASELINE} each, \
         target {TARGET} cases per detector (budget {budget:.1} false alarms per 10,000 cases for 3 detectors)"
    );
    println!(
        "| metric | runs with a false alarm | false alarms per 10,000 cases (± s.e.) | sd over {BATCHES} batches | first alarms cusum / guard_rail / pit_ewma |"
    );
    println!("|---|---|---|---|---|");
    for metric in Metric::ALL {
        let o = in_control(metric, runs);
        let rate = o.alarms as f64 / o.cases as f64 * 10_000.0;
        let se = (o.alarms as f64).sqrt() / o.cases as f64 * 10_000.0;
        let mean = o.batch_rates.iter().sum::<f64>() / o.batch_rates.len() as f64;
        let sd = (o
            .batch_rates
            .iter()
            .map(|r| (r - mean).powi(2))
            .sum::<f64>()
            / (o.batch_rates.len() as f64 - 1.0))
            .sqrt()
            * 10_000.0;
        println!(
            "| {metric} | {} of {runs} | {rate:.2} (± {se:.2}) | {sd:.2} | {} / {} / {} |",
            o.alarms, o.by_detector[0], o.by_detector[1], o.by_detector[2]
        );
    }
    println!();
    println!(
        "After a change ({runs} runs each, {BEFORE_CHANGE} in-control cases first, looking {AFTER_CHANGE} cases ahead):"
    );
    println!(
        "| change | median delay (cases) | p90 | detected within 200 cases | false alarm before |"
    );
    println!("|---|---|---|---|---|");
    for (metric, change) in [
        (Metric::Dice, "Dice mean 0.85 → 0.80"),
        (Metric::LesionSensitivity, "lesion detection 0.85 → 0.70"),
        (Metric::Ece, "ECE median 0.04 → 0.06"),
    ] {
        let (sorted, early) = delays(metric, runs);
        let within = sorted.iter().filter(|&&d| d <= 200.0).count() as f64 / sorted.len() as f64;
        println!(
            "| {change} | {} | {} | {:.0} % | {early} |",
            quantile(&sorted, 0.5),
            quantile(&sorted, 0.9),
            within * 100.0
        );
    }
}
