//! Times decoding of one segmentation file (NIfTI or DICOM SEG) from memory, for
//! bench/decode.sh to compare with nibabel and highdicom. Usage:
//! `decode_timing FILE [--repeat N]`; the last line is `SECONDS <median>`.

use std::time::Instant;

use segwatch::formats::{Limits, decode};
use segwatch::volume::Segmentation;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: decode_timing FILE [--repeat N]";
    let path = args.get(1).ok_or(usage)?;
    let repeat = match args.iter().position(|a| a == "--repeat") {
        Some(i) => args.get(i + 1).ok_or(usage)?.parse::<usize>()?,
        None => 5,
    };
    let bytes = std::fs::read(path)?;
    let mut seconds = Vec::new();
    for run in 0..repeat {
        let start = Instant::now();
        let decoded = decode(&bytes, &Limits::default())?;
        let elapsed = start.elapsed().as_secs_f64();
        if run == 0 {
            match &decoded {
                Segmentation::LabelMap(v) => println!("label map {:?}", v.grid.shape),
                Segmentation::Segments { grid, segments } => {
                    let voxels: u64 = segments.iter().map(|s| s.mask.voxels()).sum();
                    println!(
                        "{} segments on {:?}, {voxels} voxels",
                        segments.len(),
                        grid.shape
                    );
                }
            }
        }
        println!("run {run}: {elapsed:.4} s");
        seconds.push(elapsed);
    }
    seconds.sort_by(f64::total_cmp);
    println!("SECONDS {:.4}", seconds[seconds.len() / 2]);
    Ok(())
}
