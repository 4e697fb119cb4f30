//! The CT-like phantom the engine's benchmarks share (`benches/metrics.rs`,
//! `engine/examples/lesion_bench.rs`, each including this file by path): a
//! 512×512×300 grid of 0.8 × 0.8 × 1.5 mm and ten ellipsoid "organs".

/// The grid's shape, in voxels.
pub const SHAPE: [usize; 3] = [512, 512, 300];
/// The grid's spacing, in mm.
pub const SPACING: [f64; 3] = [0.8, 0.8, 1.5];

/// The organs: centre and radii in voxels; organ `i` is label `i + 1`.
pub const ORGANS: [([f64; 3], [f64; 3]); 10] = [
    ([180.0, 250.0, 150.0], [110.0, 90.0, 60.0]),
    ([350.0, 260.0, 160.0], [40.0, 50.0, 40.0]),
    ([140.0, 330.0, 120.0], [30.0, 35.0, 45.0]),
    ([370.0, 330.0, 120.0], [30.0, 35.0, 45.0]),
    ([260.0, 300.0, 150.0], [12.0, 12.0, 120.0]),
    ([270.0, 220.0, 140.0], [60.0, 15.0, 12.0]),
    ([210.0, 200.0, 170.0], [15.0, 12.0, 15.0]),
    ([256.0, 200.0, 40.0], [45.0, 40.0, 25.0]),
    ([170.0, 300.0, 200.0], [6.0, 6.0, 5.0]),
    ([340.0, 300.0, 200.0], [6.0, 6.0, 5.0]),
];

/// Sets `label` inside the ellipsoid of centre `c` and radii `r` (voxels),
/// clipped to the grid.
pub fn ellipsoid(labels: &mut [u8], c: [f64; 3], r: [f64; 3], label: u8) {
    let lo = |a: usize| (c[a] - r[a]).max(0.0) as usize;
    let hi = |a: usize| ((c[a] + r[a]) as usize).min(SHAPE[a] - 1);
    for z in lo(2)..=hi(2) {
        for y in lo(1)..=hi(1) {
            for x in lo(0)..=hi(0) {
                let d: f64 = [x, y, z]
                    .iter()
                    .enumerate()
                    .map(|(a, &v)| ((v as f64 - c[a]) / r[a]).powi(2))
                    .sum();
                if d <= 1.0 {
                    labels[x + SHAPE[0] * (y + SHAPE[1] * z)] = label;
                }
            }
        }
    }
}
