//! Simulations behind the drift detectors' constants, not tests: they print.
//! `cargo run --release --example drift_calibration -- ewma` prints the EWMA widths
//! that give a mean in-control run length of ARL0 for baselines of n values (the
//! table in `drift::ewma_width`); `-- cusum` prints the Bernoulli CUSUM's
//! in-control run lengths for several failure rates.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Beta, Distribution};
use segwatch::drift::{Baseline, Cusum, PitEwma};

/// Per-case Dice: Beta with this mean and standard deviation, and with
/// probability `failure` a failure (uniform below 0.5), as in `tests/drift.rs`.
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

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Mean in-control run length of PIT-EWMA with limit `width` over 1000 streams.
fn ewma_mean_run_length(model: &Model, n: usize, width: f64, arl0: f64) -> f64 {
    let streams = 1000u64;
    let mut total = 0.0;
    for stream in 0..streams {
        let mut rng = StdRng::seed_from_u64(77 * 1_000_003 + stream);
        let baseline = Baseline::new((0..n).map(|_| model.sample(&mut rng)).collect()).unwrap();
        let ewma = PitEwma {
            lambda: segwatch::drift::LAMBDA,
            width,
        };
        let mut state = PitEwma::START;
        let cap = (arl0 * 20.0) as u32;
        let mut t = 0;
        while t < cap
            && !ewma
                .update(&mut state, &baseline, model.sample(&mut rng))
                .alarm
        {
            t += 1;
        }
        total += (t + 1) as f64;
    }
    total / streams as f64
}

fn ewma_widths() {
    let model = Model {
        mean: 0.88,
        sd: 0.05,
        failure: 0.0,
    };
    for n in [100usize, 200, 500, 2000] {
        let widths: Vec<String> = [500.0, 1000.0, 2000.0, 5000.0]
            .iter()
            .map(|&arl0| {
                // Bisection: the run length grows with the width.
                let (mut lo, mut hi) = (1.5f64, 4.0f64);
                for _ in 0..14 {
                    let mid = (lo + hi) / 2.0;
                    if ewma_mean_run_length(&model, n, mid, arl0) < arl0 {
                        lo = mid
                    } else {
                        hi = mid
                    }
                }
                format!("{:.3}", (lo + hi) / 2.0)
            })
            .collect();
        println!("n {n}: {}", widths.join(", "));
    }
}

fn cusum_run_lengths() {
    for failure in [0.01, 0.02, 0.03, 0.05] {
        let model = Model {
            mean: 0.9,
            sd: 0.04,
            failure,
        };
        let mut run_lengths = Vec::new();
        for stream in 0..400 {
            let mut rng = StdRng::seed_from_u64(5 * 1_000_003 + stream);
            let baseline =
                Baseline::new((0..200).map(|_| model.sample(&mut rng)).collect()).unwrap();
            let cusum = Cusum::new(&baseline, 0.5);
            let mut state = Cusum::START;
            let mut t = 1;
            while t < 100_000 && !cusum.update(&mut state, model.sample(&mut rng)).alarm {
                t += 1;
            }
            run_lengths.push(t as f64);
        }
        let mean = run_lengths.iter().sum::<f64>() / run_lengths.len() as f64;
        println!(
            "failure rate {failure}: mean run length {mean:.0}, median {:.0}",
            median(run_lengths)
        );
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("ewma") => ewma_widths(),
        Some("cusum") => cusum_run_lengths(),
        _ => eprintln!("usage: drift_calibration ewma|cusum"),
    }
}
