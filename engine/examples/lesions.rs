//! Prints the lesion-wise metrics of one label of two NIfTI label maps as JSON,
//! for `scripts/peers/check_lesions.py`:
//!
//! ```sh
//! cargo run --release -p segwatch-engine --example lesions -- PRED.nii.gz REF.nii.gz \
//!     [--label 1] [--connectivity 26] [--threshold 0.5 | --brats | --brats-dilation N]
//!     [--min-reference-mm3 V]
//! ```

use std::path::Path;

use segwatch_engine::formats::{Limits, nifti};
use segwatch_engine::metrics::lesions::{LesionSettings, Matching, lesion_metrics};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [pred, reference] = [0, 1].map(|i| args.get(i).ok_or("usage: lesions PRED REF [options]"));
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let label = option("--label").map_or(Ok(1), |v| v.parse())?;
    let mut settings = LesionSettings::default();
    if let Some(c) = option("--connectivity") {
        settings.connectivity = c.parse()?;
    }
    if let Some(t) = option("--threshold") {
        settings.matching = Matching::Iou {
            threshold: t.parse()?,
        };
    }
    if args.iter().any(|a| a == "--brats") {
        settings.matching = Matching::AnyOverlap;
    }
    if let Some(d) = option("--brats-dilation") {
        settings.matching = Matching::Brats2023 {
            dilation: d.parse()?,
        };
    }
    if let Some(v) = option("--min-reference-mm3") {
        settings.min_reference_mm3 = v.parse()?;
    }
    let read = |path: &String| nifti::read_path(Path::new(path), &Limits::default());
    let metrics = lesion_metrics(&read(pred?)?, &read(reference?)?, label, &settings)?;
    println!("{}", serde_json::to_string(&metrics)?);
    Ok(())
}
