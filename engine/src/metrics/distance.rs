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
    let within = |v: &[f64]| v.iter().filter(|&&d| d <= tolerance_mm).count();
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
            .filter(|p| p.0 <= tolerance_mm)
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
