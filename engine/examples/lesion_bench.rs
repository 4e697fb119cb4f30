//! Times lesion-wise metrics against the per-structure scoring of the same pair:
//! a 512×512×300 CT-like volume with 10 organs (labels 1–10) and 200 small lesions
//! (label 11). Prints the median of five runs of each and their ratio.
//!
//! ```sh
//! cargo run --release -p segwatch-engine --example lesion_bench
//! ```

use std::time::{Duration, Instant};

use segwatch_engine::metrics::lesions::{LesionSettings, lesion_metrics};
use segwatch_engine::metrics::pairing::{Request, evaluate};
use segwatch_engine::volume::{Grid, LabelVolume, Labels, Segmentation};

#[path = "../../benches/shared/ct_phantom.rs"]
mod ct_phantom;

use ct_phantom::{ORGANS, SHAPE, SPACING, ellipsoid};

/// The organs shifted by `shift` voxels along x and y, and the lesions: in the
/// prediction (`pred`), one in ten is missed, one in ten moved by 3 voxels, and
/// one in ten is shrunk; 20 more are invented.
fn volume(shift: f64, pred: bool) -> LabelVolume {
    let mut labels = vec![0u8; SHAPE.iter().product()];
    for (i, (c, r)) in ORGANS.iter().enumerate() {
        ellipsoid(
            &mut labels,
            [c[0] + shift, c[1] + shift, c[2]],
            *r,
            i as u8 + 1,
        );
    }
    // A fixed linear congruential sequence places the lesions.
    let mut state = 14u64;
    let mut uniform = |lo: f64, hi: f64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        lo + (hi - lo) * (state >> 11) as f64 / (1u64 << 53) as f64
    };
    for i in 0..220 {
        let c = [
            uniform(40.0, 472.0),
            uniform(40.0, 472.0),
            uniform(20.0, 280.0),
        ];
        let r = uniform(1.5, 5.0);
        let (present, centre, radius) = match (pred, i % 10, i >= 200) {
            (false, _, invented) => (!invented, c, r),
            (true, 0, _) => (false, c, r),
            (true, 1, _) => (true, [c[0] + 3.0, c[1], c[2]], r),
            (true, 2, _) => (true, c, 0.6 * r),
            (true, _, _) => (true, c, r),
        };
        if present {
            ellipsoid(&mut labels, centre, [radius; 3], 11);
        }
    }
    LabelVolume::new(Grid::axis_aligned(SHAPE, SPACING, 3), Labels::U8(labels)).unwrap()
}

/// Median time of five runs of `f`.
fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

fn main() {
    let (pred, reference) = (volume(1.0, true), volume(0.0, false));
    let settings = LesionSettings::default();
    let lesions = lesion_metrics(&pred, &reference, 11, &settings).unwrap();
    println!(
        "lesions: {} reference, {} predicted, tp {}, fp {}, fn {}, lesion-wise Dice {:.3}",
        lesions.ref_instances,
        lesions.pred_instances,
        lesions.tp,
        lesions.fp,
        lesions.fn_,
        lesions.lesion_dice
    );
    let (p, r) = (
        Segmentation::LabelMap(pred.clone()),
        Segmentation::LabelMap(reference.clone()),
    );
    let eval = median(|| drop(evaluate(&p, &r, &Request::default()).unwrap()));
    let lesion = median(|| drop(lesion_metrics(&pred, &reference, 11, &settings).unwrap()));
    println!(
        "evaluate (11 structures, overlap + surfaces): {eval:.2?}; lesion metrics (label 11): {lesion:.2?}; ratio {:.1} %",
        100.0 * lesion.as_secs_f64() / eval.as_secs_f64()
    );
    // BraTS-GLI: the reference dilated 3 times before matching.
    let gli = LesionSettings::brats2023("GLI").unwrap_or_default();
    let brats = median(|| drop(lesion_metrics(&pred, &reference, 11, &gli).unwrap()));
    println!(
        "lesion metrics, BraTS-GLI settings: {brats:.2?}; ratio {:.1} %",
        100.0 * brats.as_secs_f64() / eval.as_secs_f64()
    );
}
