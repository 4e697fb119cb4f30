//! Times the readers' agreement the worker computes for a case: one counting
//! pass per label over the AI's and every reader's label map, on one thread.
//! Usage: `reader_agreement [--readers N]` (default 3) on a synthetic
//! 512 × 512 × 128 CT-sized case with five structures; the last line is
//! `SECONDS_PER_CASE <median of 5>`.

use std::time::Instant;

use segwatch::compare::readers::{DEFAULT_AMBIGUOUS_BELOW, label_agreement};
use segwatch::volume::Labels;

const SHAPE: [usize; 3] = [512, 512, 128];

/// Five box-shaped structures, shifted `shift` voxels along x.
fn labels(shift: usize) -> Labels {
    let mut out = vec![0u8; SHAPE.iter().product()];
    for z in 16..112 {
        for y in 64..448 {
            for x in 0..SHAPE[0] {
                let label = (x + shift) / 96;
                if (1..=5).contains(&label) {
                    out[x + SHAPE[0] * (y + SHAPE[1] * z)] = label as u8;
                }
            }
        }
    }
    Labels::U8(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let readers = match args.iter().position(|a| a == "--readers") {
        Some(i) => args
            .get(i + 1)
            .ok_or("usage: reader_agreement [--readers N]")?
            .parse()?,
        None => 3,
    };
    let ai = labels(0);
    let maps: Vec<Labels> = (1..=readers).map(labels).collect();
    let refs: Vec<&Labels> = maps.iter().collect();
    let mut seconds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        for label in 1..=5 {
            let a = label_agreement(&ai, &refs, label, DEFAULT_AMBIGUOUS_BELOW)?;
            assert_eq!(a.readers, readers);
        }
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    println!(
        "{} voxels, {readers} readers, 5 structures, one thread",
        ai.len()
    );
    println!("SECONDS_PER_CASE {:.3}", seconds[2]);
    Ok(())
}
