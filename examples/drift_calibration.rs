//! Computes the PIT-EWMA calibration table of `drift::limits` (not a test: it
//! prints). `cargo run --release --example drift_calibration` prints, for each
//! baseline size and limit width, the 10th percentile over baselines of the
//! in-control run length and its harmonic mean over baselines (what sets the
//! expected false-alert rate), as log10, in the layout of the table.
//!
//! Seeds are fixed, so the output is the table in the source, to the digit.
//!
//! `-- check` tests the result independently: for 200 baselines of 200 cases
//! drawn from a Dice law (Beta, mean 0.88, sd 0.05, 2 % failures), it runs the
//! PIT-EWMA at the limit for a target of 2,000 cases 200 times on fresh cases
//! of the same law and prints the distribution over baselines of the mean run
//! length, and the share of baselines below the target.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use segwatch::drift::Baseline;
use segwatch::drift::calibration::ewma_conditional_run_lengths;
use segwatch::drift::limits::{
    EWMA_DRAWS, EWMA_TABLE_SIZES, EWMA_TABLE_WIDTHS, LAMBDA, ewma_limit,
};
use segwatch::drift::plan::DiceModel;

fn check() {
    let model = DiceModel {
        mean: 0.88,
        sd: 0.05,
        failure_rate: 0.02,
    };
    let target = 2000.0;
    let limit = ewma_limit(200, target).limit;
    let mut lengths: Vec<f64> = (0..200u64)
        .into_par_iter()
        .map(|b| {
            let mut rng = StdRng::seed_from_u64(31_000 + b);
            let baseline =
                Baseline::new((0..200).map(|_| model.sample(&mut rng)).collect()).expect("Dice");
            let runs = 200;
            let mut total = 0u64;
            for _ in 0..runs {
                let (mut z, mut t) = (0.5, 0u64);
                loop {
                    t += 1;
                    z = LAMBDA * baseline.percentile_of(model.sample(&mut rng))
                        + (1.0 - LAMBDA) * z;
                    if z < limit || t >= 1_000_000 {
                        break;
                    }
                }
                total += t;
            }
            total as f64 / runs as f64
        })
        .collect();
    lengths.sort_by(f64::total_cmp);
    let at = |q: f64| lengths[((lengths.len() as f64 * q) as usize).min(lengths.len() - 1)];
    let below = lengths.iter().filter(|&&l| l < target).count();
    println!(
        "PIT-EWMA, baselines of 200, target {target}: mean run length over 200 baselines \
         p05 {:.0}, p10 {:.0}, p25 {:.0}, median {:.0}, p90 {:.0}; below target: {below} of 200 ({:.1} %)",
        at(0.05),
        at(0.10),
        at(0.25),
        at(0.5),
        at(0.9),
        below as f64 / 2.0
    );
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("check") {
        return check();
    }
    let widths = EWMA_TABLE_WIDTHS;
    let rows: Vec<(Vec<f64>, Vec<f64>)> = EWMA_TABLE_SIZES
        .par_iter()
        .map(|&n| {
            // Draws split in chunks with their own seeds, so both cores work.
            let chunks = 8;
            let per_chunk = EWMA_DRAWS / chunks;
            let lengths: Vec<Vec<f64>> = (0..chunks)
                .into_par_iter()
                .flat_map(|c| {
                    ewma_conditional_run_lengths(
                        LAMBDA,
                        n,
                        &widths,
                        per_chunk,
                        n as u64 * 1000 + c as u64,
                    )
                })
                .collect();
            let mut q10 = Vec::new();
            let mut harmonic = Vec::new();
            for w in 0..widths.len() {
                let mut column: Vec<f64> = lengths.iter().map(|l| l[w]).collect();
                column.sort_by(f64::total_cmp);
                q10.push(column[column.len() / 10].log10());
                let rate = column.iter().map(|l| 1.0 / l).sum::<f64>() / column.len() as f64;
                harmonic.push((1.0 / rate).log10());
            }
            (q10, harmonic)
        })
        .collect();
    let print = |name: &str, column: usize| {
        println!(
            "pub const {name}: [[f64; {}]; {}] = [",
            widths.len(),
            rows.len()
        );
        for row in &rows {
            let values = if column == 0 { &row.0 } else { &row.1 };
            let cells: Vec<String> = values.iter().map(|v| format!("{v:.3}")).collect();
            println!("    [{}],", cells.join(", "));
        }
        println!("];");
    };
    print("EWMA_Q10_LOG10", 0);
    print("EWMA_HARMONIC_LOG10", 1);
}
