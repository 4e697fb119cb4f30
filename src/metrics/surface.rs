//! Surface extraction and surface-distance metrics (HD, HD95, ASSD, MASD, NSD) for
//! one structure, on the structure's bounding box only.

use rayon::join;

use super::{SurfaceMode, edt, surfel_area};
use crate::volume::{BoundingBox, Grid, Labels};

/// A box of voxels in image index space; it may reach one voxel past the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Image index of the region's first voxel (may be −1).
    pub origin: [isize; 3],
    /// Voxels along x, y, z.
    pub dims: [usize; 3],
}

impl Region {
    /// `bbox` grown by one voxel on every side (not along z for 2D images), so that
    /// every voxel of the structure has all its neighbours inside the region.
    pub fn around(bbox: BoundingBox, planar: bool) -> Region {
        let margin = |axis: usize| if planar && axis == 2 { 0 } else { 1 };
        Region {
            origin: [0, 1, 2].map(|a| bbox.min[a] as isize - margin(a) as isize),
            dims: [0, 1, 2].map(|a| bbox.extent()[a] + 2 * margin(a)),
        }
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    /// True when the region holds no voxel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A binary structure that can paint itself into a region.
pub trait Mask: Sync {
    /// Where the structure is, or None when it is empty.
    fn bbox(&self) -> Option<BoundingBox>;
    /// Writes 1 where the structure is and 0 elsewhere (including outside the image)
    /// into `out`, laid out x-fastest over `region`.
    fn fill(&self, region: &Region, out: &mut [u8]);
}

/// One label of a label map.
pub struct LabelMask<'a> {
    pub labels: &'a Labels,
    pub shape: [usize; 3],
    pub label: u16,
    pub bbox: Option<BoundingBox>,
}

impl Mask for LabelMask<'_> {
    fn bbox(&self) -> Option<BoundingBox> {
        self.bbox
    }

    fn fill(&self, region: &Region, out: &mut [u8]) {
        match self.labels {
            Labels::U8(v) => fill_label(v, self.shape, self.label, region, out),
            Labels::U16(v) => fill_label(v, self.shape, self.label, region, out),
        }
    }
}

fn fill_label<T: Copy + Into<u16>>(
    labels: &[T],
    shape: [usize; 3],
    label: u16,
    region: &Region,
    out: &mut [u8],
) {
    out.fill(0);
    let [rx, ry, rz] = region.dims;
    let inside = |axis: usize, local: usize| -> Option<usize> {
        let v = region.origin[axis] + local as isize;
        (v >= 0 && (v as usize) < shape[axis]).then_some(v as usize)
    };
    // x range of the region that lies inside the image.
    let x_lo = (-region.origin[0]).max(0) as usize;
    let x_hi =
        ((shape[0] as isize - region.origin[0]).min(rx as isize)).max(x_lo as isize) as usize;
    for lz in 0..rz {
        let Some(z) = inside(2, lz) else { continue };
        for ly in 0..ry {
            let Some(y) = inside(1, ly) else { continue };
            let src_start =
                (region.origin[0] + x_lo as isize) as usize + shape[0] * (y + shape[1] * z);
            let src = &labels[src_start..src_start + (x_hi - x_lo)];
            let dst_start = x_lo + rx * (ly + ry * lz);
            for (d, &s) in out[dst_start..dst_start + (x_hi - x_lo)]
                .iter_mut()
                .zip(src)
            {
                *d = (s.into() == label) as u8;
            }
        }
    }
}

/// Surface points of one structure on the lattice where distances are measured.
struct Surface {
    /// Lattice points along x, y, z.
    lattice: [usize; 3],
    /// 1 at surface points, over the whole lattice.
    sites: Vec<u8>,
    /// Lattice indices of the surface points.
    points: Vec<usize>,
    /// Area (length in 2D) of each point's surface element; None when all weigh the same.
    weights: Option<Vec<f64>>,
}

/// Voxel surface: voxels of the structure with a face neighbour outside it.
/// The region has a one-voxel margin, so neighbours never leave it.
fn voxel_surface(mask: &[u8], dims: [usize; 3], planar: bool) -> Surface {
    let [nx, ny, nz] = dims;
    let mut sites = vec![0u8; mask.len()];
    let mut points = Vec::new();
    let (z_range, sz) = if planar {
        (0..nz, 0)
    } else {
        (1..nz.saturating_sub(1), nx * ny)
    };
    for z in z_range {
        for y in 1..ny.saturating_sub(1) {
            let row = nx * (y + ny * z);
            for x in 1..nx.saturating_sub(1) {
                let i = row + x;
                if mask[i] == 0 {
                    continue;
                }
                let interior = mask[i - 1] & mask[i + 1] & mask[i - nx] & mask[i + nx];
                let interior = if planar {
                    interior
                } else {
                    interior & mask[i - sz] & mask[i + sz]
                };
                if interior == 0 {
                    sites[i] = 1;
                    points.push(i);
                }
            }
        }
    }
    Surface {
        lattice: dims,
        sites,
        points,
        weights: None,
    }
}

/// Surfel surface: corners of the half-voxel-shifted lattice whose 2×2(×2)
/// neighbourhood is mixed, each weighted by the area (length) of its surface piece.
/// Corner (i, j, k) has the region voxels (i..=i+1, j..=j+1, k..=k+1) around it.
fn surfel_surface(mask: &[u8], dims: [usize; 3], planar: bool, table: &[f64]) -> Surface {
    let [nx, ny, nz] = dims;
    let lattice = if planar {
        [nx - 1, ny - 1, 1]
    } else {
        [nx - 1, ny - 1, nz - 1]
    };
    let [cx, cy, cz] = lattice;
    let full = table.len() - 1;
    let mut sites = vec![0u8; cx * cy * cz];
    let mut points = Vec::new();
    let mut weights = Vec::new();
    let at = |x: usize, y: usize, z: usize| mask[x + nx * (y + ny * z)] as usize;
    for k in 0..cz {
        for j in 0..cy {
            for i in 0..cx {
                let code = if planar {
                    // Bit 8 >> (2a + b) for the voxel at offset (a, b).
                    (at(i, j, k) << 3)
                        | (at(i, j + 1, k) << 2)
                        | (at(i + 1, j, k) << 1)
                        | at(i + 1, j + 1, k)
                } else {
                    // Bit 128 >> (4a + 2b + c) for the voxel at offset (a, b, c).
                    (at(i, j, k) << 7)
                        | (at(i, j, k + 1) << 6)
                        | (at(i, j + 1, k) << 5)
                        | (at(i, j + 1, k + 1) << 4)
                        | (at(i + 1, j, k) << 3)
                        | (at(i + 1, j, k + 1) << 2)
                        | (at(i + 1, j + 1, k) << 1)
                        | at(i + 1, j + 1, k + 1)
                };
                if code != 0 && code != full {
                    let index = i + cx * (j + cy * k);
                    sites[index] = 1;
                    points.push(index);
                    weights.push(table[code]);
                }
            }
        }
    }
    Surface {
        lattice,
        sites,
        points,
        weights: Some(weights),
    }
}

/// Distances in mm from each surface point of `from` to the nearest point of `to`.
fn directed_distances(from: &Surface, to: &Surface, spacing: [f64; 3]) -> Vec<f64> {
    let squared = edt::squared_distances(&to.sites, to.lattice, spacing);
    from.points.iter().map(|&i| squared[i].sqrt()).collect()
}

/// Surface-distance metrics of one structure. Infinite when a surface is missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SurfaceMetrics {
    pub hd_mm: f64,
    pub hd95_mm: f64,
    pub assd_mm: f64,
    pub masd_mm: f64,
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

/// Computes the surface metrics of two non-empty masks on one grid.
pub fn surface_metrics(
    pred: &dyn Mask,
    reference: &dyn Mask,
    grid: &Grid,
    mode: SurfaceMode,
    tolerance_mm: f64,
) -> SurfaceMetrics {
    let (Some(p_box), Some(r_box)) = (pred.bbox(), reference.bbox()) else {
        return if pred.bbox().is_none() && reference.bbox().is_none() {
            SurfaceMetrics::BOTH_EMPTY
        } else {
            SurfaceMetrics::ONE_EMPTY
        };
    };
    let planar = grid.dims == 2;
    let region = Region::around(p_box.union(r_box), planar);
    let spacing = grid.spacing;
    let table = match mode {
        SurfaceMode::Voxel => Vec::new(),
        SurfaceMode::Surfel if planar => surfel_area::contour_lengths(spacing).to_vec(),
        SurfaceMode::Surfel => surfel_area::surface_areas(spacing).to_vec(),
    };
    let extract = |mask: &dyn Mask| {
        let mut buffer = vec![0u8; region.len()];
        mask.fill(&region, &mut buffer);
        match mode {
            SurfaceMode::Voxel => voxel_surface(&buffer, region.dims, planar),
            SurfaceMode::Surfel => surfel_surface(&buffer, region.dims, planar, &table),
        }
    };
    let (p_surface, r_surface) = join(|| extract(pred), || extract(reference));
    let (p_to_r, r_to_p) = join(
        || directed_distances(&p_surface, &r_surface, spacing),
        || directed_distances(&r_surface, &p_surface, spacing),
    );
    match (&p_surface.weights, &r_surface.weights) {
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
    let high = above.iter().copied().fold(f64::INFINITY, f64::min);
    if above.is_empty() {
        low
    } else {
        low + (high - low) * (position - lo as f64)
    }
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

    /// Area-weighted nearest-rank percentile: the first distance whose cumulative
    /// weight fraction reaches `fraction`.
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
