//! Times the one-pass overlap count on one thread over two NIfTI label maps, for
//! bench/run.sh to compare with numpy. Usage:
//! `overlap_throughput PRED REF [--repeat N]`; the last line is
//! `GVOXELS_PER_SECOND <median>`.

use std::path::Path;
use std::time::Instant;

use segwatch::formats::Limits;
use segwatch::formats::nifti::read_path;
use segwatch::metrics::overlap::overlap_serial;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: overlap_throughput PRED REF [--repeat N]";
    let (pred, reference) = match (args.get(1), args.get(2)) {
        (Some(p), Some(r)) => (p, r),
        _ => return Err(usage.into()),
    };
    let repeat = match args.iter().position(|a| a == "--repeat") {
        Some(i) => args.get(i + 1).ok_or(usage)?.parse::<usize>()?,
        None => 5,
    };
    let limits = Limits::default();
    let pred = read_path(Path::new(pred), &limits)?;
    let reference = read_path(Path::new(reference), &limits)?;
    let voxels = pred.grid.len() as f64;
    let mut seconds = Vec::new();
    for run in 0..repeat {
        let start = Instant::now();
        let overlap = overlap_serial(&pred.labels, &reference.labels, pred.grid.shape);
        let elapsed = start.elapsed().as_secs_f64();
        if run == 0 {
            for label in overlap.present_labels() {
                let o = overlap.get(label);
                println!(
                    "label {label}: tp {} fp {} fn {}",
                    o.tp,
                    o.pred_voxels - o.tp,
                    o.ref_voxels - o.tp
                );
            }
        }
        println!("run {run}: {elapsed:.4} s");
        seconds.push(elapsed);
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!("GVOXELS_PER_SECOND {:.3}", voxels / median / 1e9);
    Ok(())
}
