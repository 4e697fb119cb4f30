//! Writes a CT-sized case with probabilities, to time what probabilistic
//! scoring adds to `segwatch eval`: `probability_case DIR [--shape X,Y,Z]
//! [--structures N]` writes DIR/ref.nii (ellipsoids labelled 1 to N),
//! DIR/pred.nii (the same ellipsoids shifted by two voxels) and DIR/probs.nii
//! (float32, one channel per structure: a logistic ramp across the shifted
//! ellipsoid's border, 0 below 0.01). Default 512 × 512 × 300 and 10
//! structures. Then compare, e.g. with `/usr/bin/time -v`:
//! `segwatch eval DIR/pred.nii DIR/ref.nii --labels 1,…,N` with and without
//! `--probabilities DIR/probs.nii`.

use segwatch::formats::{nifti, probability_nifti};
use segwatch::volume::{Grid, LabelVolume, Labels};

/// Centre and radii (voxels) of structure `k` of `n` in `shape`.
fn ellipsoid(k: usize, n: usize, shape: [usize; 3]) -> ([f64; 3], [f64; 3]) {
    let t = (k as f64 + 0.5) / n as f64;
    let centre = [0.2 + 0.6 * t, 0.5 + 0.25 * (6.0 * t).sin(), 0.5];
    let centre = [0, 1, 2].map(|a| centre[a] * shape[a] as f64);
    let radii = [0.05, 0.07, 0.2].map(|f| f * shape[0].min(shape[2] * 2) as f64);
    (centre, radii)
}

/// Normalised radius of voxel p in an ellipsoid (1 on its border).
fn radius(p: [usize; 3], centre: [f64; 3], radii: [f64; 3]) -> f64 {
    (0..3)
        .map(|a| ((p[a] as f64 - centre[a]) / radii[a]).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: probability_case DIR [--shape X,Y,Z] [--structures N]";
    let dir = std::path::PathBuf::from(args.get(1).ok_or(usage)?);
    let option = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let shape: Vec<usize> = match option("--shape") {
        Some(s) => s.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![512, 512, 300],
    };
    let shape: [usize; 3] = shape.try_into().map_err(|_| usage)?;
    let n: usize = option("--structures").map_or(Ok(10), |s| s.parse())?;
    let grid = Grid::axis_aligned(shape, [0.8, 0.8, 1.5], 3);
    let index = |i: usize| {
        [
            i % shape[0],
            (i / shape[0]) % shape[1],
            i / (shape[0] * shape[1]),
        ]
    };
    let mut reference = vec![0u8; grid.len()];
    let mut pred = vec![0u8; grid.len()];
    let mut channels = Vec::with_capacity(n);
    for k in 0..n {
        let (centre, radii) = ellipsoid(k, n, shape);
        let shifted = [centre[0] + 2.0, centre[1], centre[2]];
        let mut channel = vec![0f32; grid.len()];
        for (i, p) in channel.iter_mut().enumerate() {
            let at = index(i);
            if radius(at, centre, radii) <= 1.0 {
                reference[i] = k as u8 + 1;
            }
            let r = radius(at, shifted, radii);
            if r < 1.6 {
                let prob = 1.0 / (1.0 + ((r - 1.0) * 12.0).exp());
                if prob >= 0.01 {
                    *p = prob as f32;
                }
                if prob >= 0.5 {
                    pred[i] = k as u8 + 1;
                }
            }
        }
        channels.push(channel);
    }
    std::fs::create_dir_all(&dir)?;
    for (name, labels) in [("ref.nii", reference), ("pred.nii", pred)] {
        let volume = LabelVolume::new(grid.clone(), Labels::U8(labels))?;
        std::fs::write(dir.join(name), nifti::encode(&volume, false))?;
    }
    std::fs::write(
        dir.join("probs.nii"),
        probability_nifti::encode(&grid, &channels, false),
    )?;
    println!("wrote {} ({shape:?}, {n} structures)", dir.display());
    Ok(())
}
