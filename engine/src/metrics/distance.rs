//! Surface-distance metrics of one structure from its two surfaces: HD, HD95,
//! ASSD, MASD and NSD.

use rayon::join;

use super::edt::nearest_site_distances;
use super::surface::Surface;

/// Surface-distance metrics of one structure. Infinite when a surface is missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceMetrics {
    /// Hausdorff distance in mm: the larger of the two directed maxima.
    pub hd_mm: f64,
    /// The larger of the two directed 95th-percentile distances, in mm.
    pub hd95_mm: f64,
    /// Average symmetric surface distance in mm: mean over both surfaces pooled.
    pub assd_mm: f64,
    /// Mean average surface distance in mm: mean of the two directed means.
    pub masd_mm: f64,
    /// Normalized surface Dice: share of both surfaces within the tolerance, in [0, 1].
    pub nsd: f64,
}

impl SurfaceMetrics {
    /// Both structures empty: perfect agreement by convention.
    pub const BOTH_EMPTY: SurfaceMetrics = SurfaceMetrics {
        hd_mm: 0.0,
        hd95_mm: 0.0,
        assd_mm: 0.0,
        masd_mm: 0.0,
        nsd: 1.0,
    };
    /// One structure empty: no surface to measure against.
    pub const ONE_EMPTY: SurfaceMetrics = SurfaceMetrics {
        hd_mm: f64::INFINITY,
        hd95_mm: f64::INFINITY,
        assd_mm: f64::INFINITY,
        masd_mm: f64::INFINITY,
        nsd: 0.0,
    };
}

/// Relative slack of the NSD tolerance: NIfTI and DICOM store spacing in
/// float32, so a distance of exactly the tolerance in the user's units (10
/// voxels of 1.2 mm against 12 mm) comes out up to 2⁻²⁴ relatively above it.
/// One float32 epsilon (2⁻²³) covers that with room for rounding in the
/// distance itself; distinct lattice distances this close to the tolerance
/// would need spacing finer than a float32 header can state.
pub const TOLERANCE_RELATIVE_SLACK: f64 = f32::EPSILON as f64;

/// Whether a distance counts as within the NSD tolerance (see
/// [`TOLERANCE_RELATIVE_SLACK`]).
fn within_tolerance(distance_mm: f64, tolerance_mm: f64) -> bool {
    distance_mm <= tolerance_mm * (1.0 + TOLERANCE_RELATIVE_SLACK)
}

/// Metrics between two non-empty surfaces on the same lattice. Weighted surfaces
/// (surfel mode) follow surface-distance; unweighted ones (voxel mode) MONAI.
pub fn surface_metrics(
    pred: &Surface,
    reference: &Surface,
    spacing: [f64; 3],
    tolerance_mm: f64,
) -> SurfaceMetrics {
    if pred.points.is_empty() || reference.points.is_empty() {
        return if pred.points.is_empty() && reference.points.is_empty() {
            SurfaceMetrics::BOTH_EMPTY
        } else {
            SurfaceMetrics::ONE_EMPTY
        };
    }
    let (p_to_r, r_to_p) = join(
        || nearest_site_distances(&pred.points, &reference.points, spacing),
        || nearest_site_distances(&reference.points, &pred.points, spacing),
    );
    match (&pred.weights, &reference.weights) {
        (Some(pw), Some(rw)) => weighted_summary(
            Directed::new(p_to_r, pw),
            Directed::new(r_to_p, rw),
            tolerance_mm,
        ),
        _ => unweighted_summary(p_to_r, r_to_p, tolerance_mm),
    }
}

/// MONAI conventions: every surface voxel weighs the same, percentiles interpolate
/// linearly, ASSD pools both directions.
fn unweighted_summary(mut a: Vec<f64>, mut b: Vec<f64>, tolerance_mm: f64) -> SurfaceMetrics {
    let max = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let within = |v: &[f64]| {
        v.iter()
            .filter(|&&d| within_tolerance(d, tolerance_mm))
            .count()
    };
    let n = (a.len() + b.len()) as f64;
    SurfaceMetrics {
        hd_mm: max(&a).max(max(&b)),
        assd_mm: (sum(&a) + sum(&b)) / n,
        masd_mm: (sum(&a) / a.len() as f64 + sum(&b) / b.len() as f64) / 2.0,
        nsd: (within(&a) + within(&b)) as f64 / n,
        hd95_mm: percentile(&mut a, 0.95).max(percentile(&mut b, 0.95)),
    }
}

/// Linear-interpolation percentile (numpy and torch default) of a non-empty list.
fn percentile(values: &mut [f64], q: f64) -> f64 {
    let position = q * (values.len() - 1) as f64;
    let lo = position.floor() as usize;
    let (_, &mut low, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    if above.is_empty() {
        return low;
    }
    let high = above.iter().copied().fold(f64::INFINITY, f64::min);
    low + (high - low) * (position - lo as f64)
}

/// One direction's distances with their surface-element weights, sorted by
/// (distance, weight) as surface-distance does.
struct Directed {
    pairs: Vec<(f64, f64)>,
    total: f64,
}

impl Directed {
    fn new(distances: Vec<f64>, weights: &[f64]) -> Self {
        let mut pairs: Vec<(f64, f64)> =
            distances.into_iter().zip(weights.iter().copied()).collect();
        pairs.sort_unstable_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
        let total = pairs.iter().map(|p| p.1).sum();
        Directed { pairs, total }
    }

    /// Area-weighted nearest rank: the first distance whose cumulative weight
    /// fraction reaches `fraction`.
    fn percentile(&self, fraction: f64) -> f64 {
        let mut cumulative = 0.0;
        for &(d, w) in &self.pairs {
            cumulative += w;
            if cumulative / self.total >= fraction {
                return d;
            }
        }
        self.pairs.last().map_or(f64::INFINITY, |p| p.0)
    }

    fn weighted_sum(&self) -> f64 {
        self.pairs.iter().map(|(d, w)| d * w).sum()
    }

    fn weight_within(&self, tolerance_mm: f64) -> f64 {
        self.pairs
            .iter()
            .filter(|p| within_tolerance(p.0, tolerance_mm))
            .map(|p| p.1)
            .sum()
    }
}

/// surface-distance conventions: surface elements weigh their area.
fn weighted_summary(a: Directed, b: Directed, tolerance_mm: f64) -> SurfaceMetrics {
    let total = a.total + b.total;
    SurfaceMetrics {
        hd_mm: a.percentile(1.0).max(b.percentile(1.0)),
        hd95_mm: a.percentile(0.95).max(b.percentile(0.95)),
        assd_mm: (a.weighted_sum() + b.weighted_sum()) / total,
        masd_mm: (a.weighted_sum() / a.total + b.weighted_sum() / b.total) / 2.0,
        nsd: (a.weight_within(tolerance_mm) + b.weight_within(tolerance_mm)) / total,
    }
}

#[cfg(test)]
mod tests {
    use crate::metrics::{SurfaceMode, overlap::overlap, score_labels};
    use crate::volume::{Grid, LabelVolume, Labels};

    /// A 20-voxel cube of label 1 starting at x = `x0` in a 40 × 24 × 24 grid
    /// of `spacing` mm.
    fn cube(x0: usize, spacing: f64) -> LabelVolume {
        let shape = [40, 24, 24];
        let grid = Grid::axis_aligned(shape, [spacing; 3], 3);
        let inside = |x: usize, y: usize, z: usize| {
            (x0..x0 + 20).contains(&x) && (2..22).contains(&y) && (2..22).contains(&z)
        };
        let labels = (0..grid.len())
            .map(|i| u8::from(inside(i % 40, (i / 40) % 24, i / (40 * 24))))
            .collect();
        LabelVolume::new(grid, Labels::U8(labels)).unwrap()
    }

    #[test]
    fn a_distance_of_exactly_the_tolerance_counts_within_it_in_both_modes() {
        // The spacing as a float32 header stores 1.2 mm; shifting the cube by
        // 10 voxels puts the farthest surface points exactly 12 mm away.
        let spacing = f64::from(1.2f32);
        assert!(10.0 * spacing > 12.0, "the float32 spacing overshoots");
        let (pred, reference) = (cube(5, spacing), cube(15, spacing));
        let counts = overlap(&pred.labels, &reference.labels, [40, 24, 24]);
        for mode in [SurfaceMode::Voxel, SurfaceMode::Surfel] {
            let nsd = |tolerance_mm: f64| {
                score_labels(&pred, &reference, &counts, &[(1, tolerance_mm)], mode)[0].nsd
            };
            assert_eq!(nsd(12.0), 1.0, "{mode:?}");
            // Those 12 mm distances exist: a hair less tolerance leaves them out.
            assert!(nsd(11.999) < 1.0, "{mode:?}");
        }
    }

    #[test]
    fn the_slack_is_relative_and_smaller_than_any_real_margin() {
        // 2 voxels of 0.8 mm (float32) against 1.6 mm is within; 1.6 mm plus
        // a micrometre is not stretched to cover 1.601 mm.
        assert!(super::within_tolerance(2.0 * f64::from(0.8f32), 1.6));
        assert!(!super::within_tolerance(1.601, 1.6));
        assert!(!super::within_tolerance(12.0 * (1.0 + 1e-6), 12.0));
    }
}
