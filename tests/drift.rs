//! Detector behaviour on synthetic streams (300 or more streams each): in-control
//! run length against the configured ARL0, and how fast real changes are caught.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Beta, Distribution};
use segwatch::drift::{Baseline, Cusum, PitEwma, State};

/// Per-case Dice: Beta with this mean and standard deviation, and with
/// probability `failure` a failure (uniform below 0.5).
#[derive(Clone, Copy)]
struct Model {
    mean: f64,
    sd: f64,
    failure: f64,
}

impl Model {
    fn sample(&self, rng: &mut StdRng) -> f64 {
        if rand::RngExt::random::<f64>(rng) < self.failure {
            return rand::RngExt::random::<f64>(rng) * 0.5;
        }
        let common = self.mean * (1.0 - self.mean) / (self.sd * self.sd) - 1.0;
        Beta::new(self.mean * common, (1.0 - self.mean) * common)
            .unwrap()
            .sample(rng)
    }
}

const STREAMS: u64 = 400;
const BASELINE: usize = 200;

/// The stream's detectors: PIT-EWMA and, if `with_cusum`, the Bernoulli CUSUM.
struct Detectors {
    baseline: Baseline,
    ewma: PitEwma,
    cusum: Cusum,
    states: [State; 2],
    with_cusum: bool,
}

impl Detectors {
    fn new(rng: &mut StdRng, model: Model, arl0: f64, with_cusum: bool) -> Detectors {
        let baseline = Baseline::new((0..BASELINE).map(|_| model.sample(rng)).collect()).unwrap();
        Detectors {
            cusum: Cusum::new(&baseline, 0.5),
            ewma: PitEwma::for_arl0(arl0, &baseline),
            baseline,
            states: [PitEwma::START, Cusum::START],
            with_cusum,
        }
    }

    /// Feeds a case; true when any detector alarms.
    fn feed(&mut self, dice: f64) -> bool {
        let ewma = self
            .ewma
            .update(&mut self.states[0], &self.baseline, dice)
            .alarm;
        let cusum = self.with_cusum && self.cusum.update(&mut self.states[1], dice).alarm;
        ewma || cusum
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Mean in-control run length of PIT-EWMA over STREAMS streams.
fn in_control_run_length(model: Model, arl0: f64, seed: u64) -> f64 {
    let mut total = 0.0;
    for stream in 0..STREAMS {
        let mut rng = StdRng::seed_from_u64(seed * 1_000_003 + stream);
        let mut detectors = Detectors::new(&mut rng, model, arl0, false);
        let mut t = 0u32;
        let cap = (arl0 * 20.0) as u32;
        loop {
            t += 1;
            if detectors.feed(model.sample(&mut rng)) || t >= cap {
                break;
            }
        }
        total += t as f64;
    }
    total / STREAMS as f64
}

/// Delays (cases after the change at case 50) until any detector alarms, for
/// streams without an earlier false alarm.
fn detection_delays(before: Model, after: Model, arl0: f64, seed: u64) -> Vec<f64> {
    let mut delays = Vec::new();
    for stream in 0..STREAMS {
        let mut rng = StdRng::seed_from_u64(seed * 1_000_003 + stream);
        let mut detectors = Detectors::new(&mut rng, before, arl0, true);
        let early = (0..50).any(|_| detectors.feed(before.sample(&mut rng)));
        if early {
            continue;
        }
        let delay = (1..=2000)
            .find(|_| detectors.feed(after.sample(&mut rng)))
            .unwrap_or(2000);
        delays.push(delay as f64);
    }
    delays
}

#[test]
fn in_control_run_length_matches_the_configured_arl0() {
    for (arl0, model, seed) in [
        (
            500.0,
            Model {
                mean: 0.88,
                sd: 0.05,
                failure: 0.0,
            },
            1,
        ),
        (
            1000.0,
            Model {
                mean: 0.95,
                sd: 0.02,
                failure: 0.02,
            },
            2,
        ),
        (
            2000.0,
            Model {
                mean: 0.75,
                sd: 0.12,
                failure: 0.05,
            },
            3,
        ),
    ] {
        let arl = in_control_run_length(model, arl0, seed);
        eprintln!("ARL0 {arl0}: mean in-control run length {arl:.0}");
        assert!(
            (arl - arl0).abs() <= 0.25 * arl0,
            "ARL0 {arl0}: mean run length {arl:.0}"
        );
    }
}

#[test]
fn a_drop_of_five_dice_points_is_caught_within_25_cases() {
    let before = Model {
        mean: 0.88,
        sd: 0.05,
        failure: 0.0,
    };
    let after = Model {
        mean: 0.83,
        ..before
    };
    let delays = detection_delays(before, after, 1000.0, 2);
    assert!(delays.len() >= 300);
    let m = median(delays);
    eprintln!("median delay after a 0.05 drop: {m}");
    assert!(m <= 25.0, "median delay {m}");
}

#[test]
fn a_failure_rate_rise_from_3_to_10_percent_is_caught_within_80_cases() {
    let before = Model {
        mean: 0.9,
        sd: 0.04,
        failure: 0.03,
    };
    let after = Model {
        failure: 0.10,
        ..before
    };
    let delays = detection_delays(before, after, 1000.0, 3);
    assert!(delays.len() >= 300);
    let m = median(delays);
    eprintln!("median delay after a failure rate rise: {m}");
    assert!(m <= 80.0, "median delay {m}");
}
