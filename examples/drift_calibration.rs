//! Computes the PIT-EWMA calibration table of `drift::limits` (not a test: it
//! prints). `cargo run --release --example drift_calibration` prints, for each
//! baseline size and limit width, the 10th percentile over baselines of the
//! in-control run length and its harmonic mean over baselines (what sets the
//! expected false-alert rate), as log10, in the layout of the table.
//!
//! Seeds are fixed, so the output is the table in the source, to the digit.

use rayon::prelude::*;
use segwatch::drift::calibration::ewma_conditional_run_lengths;
use segwatch::drift::limits::{EWMA_DRAWS, EWMA_TABLE_SIZES, EWMA_TABLE_WIDTHS, LAMBDA};

fn main() {
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
