//! Label volumes and the voxel grid they live on.
//!
//! Voxels are stored x-fastest (NIfTI order): index = x + nx·(y + ny·z). A 2D image
//! has `nz == 1` and `dims == 2`.

mod align;
mod mask;
mod segments;

pub use align::GridMap;
pub use mask::BoxMask;
pub use segments::{FractionMap, Layout, Segment, Segmentation};
use serde::Serialize;

/// Tolerance for spacing and origin when comparing grids, in mm.
pub const GRID_TOLERANCE_MM: f64 = 1e-3;
/// Tolerance for axis directions when comparing grids, in radians.
pub const GRID_TOLERANCE_RAD: f64 = 1e-4;

/// The sampling grid of an image: shape, spacing and voxel-to-world affine.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Grid {
    /// Voxels along x, y, z (z is 1 for 2D images).
    pub shape: [usize; 3],
    /// Voxel size along x, y, z in mm (always positive).
    pub spacing: [f64; 3],
    /// Rows of the 3×4 voxel-index-to-world (RAS+, mm) affine.
    pub affine: [[f64; 4]; 3],
    /// 2 for planar images, 3 for volumes.
    pub dims: u8,
}

/// Why two grids are not the same.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GridMismatch {
    /// One grid is 2D and the other 3D: (this grid's, the other's) `dims`.
    #[error("dimensionality differs: {0}D vs {1}D")]
    Dims(u8, u8),
    /// Voxel counts per axis differ: the two shapes, 2 or 3 entries each.
    #[error("shape differs: {0:?} vs {1:?}")]
    Shape(Vec<usize>, Vec<usize>),
    /// Voxel sizes differ by more than [`GRID_TOLERANCE_MM`]: (this grid's, the other's), in mm.
    #[error("spacing differs: {0:?} mm vs {1:?} mm")]
    Spacing(Vec<f64>, Vec<f64>),
    /// An axis is off every axis of the other grid by more than [`GRID_TOLERANCE_RAD`],
    /// or along one that another axis already runs along.
    #[error("orientation differs: axis {axis} points {angle_rad:.2e} rad apart")]
    Orientation {
        /// This grid's axis that points elsewhere: `'x'`, `'y'` or `'z'`.
        axis: char,
        /// Angle between it and the closest axis of the other grid, in radians.
        angle_rad: f64,
    },
    /// The origins (world position of voxel (0, 0, 0)) differ: off the other's lattice by
    /// more than [`GRID_TOLERANCE_MM`], or by whole voxels where the grids must coincide.
    #[error("origin differs by {distance_mm:.4} mm")]
    Origin {
        /// How far apart, in mm: the off-lattice residual, or the whole-voxel shift.
        distance_mm: f64,
    },
    /// Same lattice, but axes permuted or flipped: alignable with [`Grid::map_onto`].
    #[error("the same voxels are stored with axes in another order or direction")]
    Layout,
    /// Same lattice, but some voxels of this grid fall outside the other one.
    #[error("the segmentation reaches outside the other image")]
    Extent,
}

impl Grid {
    /// A grid with an axis-aligned affine built from the spacing.
    pub fn axis_aligned(shape: [usize; 3], spacing: [f64; 3], dims: u8) -> Self {
        let mut affine = [[0.0; 4]; 3];
        for (axis, row) in affine.iter_mut().enumerate() {
            row[axis] = spacing[axis];
        }
        Grid {
            shape,
            spacing,
            affine,
            dims,
        }
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the grid holds no voxel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Volume of one voxel in mL (mm³ / 1000).
    pub fn voxel_volume_ml(&self) -> f64 {
        self.spacing.iter().product::<f64>() / 1000.0
    }

    /// Shape in array axis order, 2 or 3 entries.
    pub fn shape_vec(&self) -> Vec<usize> {
        self.shape[..self.dims as usize].to_vec()
    }

    /// Spacing in array axis order, 2 or 3 entries.
    pub fn spacing_vec(&self) -> Vec<f64> {
        self.spacing[..self.dims as usize].to_vec()
    }

    /// Why the grid cannot place voxels in the world, if it cannot: a spacing
    /// that is not finite or outside [`SPACING_RANGE_MM`], a non-finite affine,
    /// or axes that are zero or (nearly) parallel, so that voxels collapse.
    pub fn degeneracy(&self) -> Option<String> {
        let axes = self.dims as usize;
        if let Some(axis) = (0..axes).find(|&a| !SPACING_RANGE_MM.contains(&self.spacing[a])) {
            return Some(format!(
                "voxel spacing {} mm along axis {axis} is outside {} to {} mm",
                self.spacing[axis],
                SPACING_RANGE_MM.start(),
                SPACING_RANGE_MM.end()
            ));
        }
        if self.affine.iter().flatten().any(|v| !v.is_finite()) {
            return Some("the affine has non-finite values".into());
        }
        let column = |a: usize| [0, 1, 2].map(|r| self.affine[r][a]);
        let norm = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
        let columns: Vec<[f64; 3]> = (0..axes).map(column).collect();
        if let Some(axis) = columns.iter().position(|c| norm(*c) == 0.0) {
            return Some(format!(
                "the affine's axis {axis} is zero: every voxel along it lands on one point"
            ));
        }
        let scale: f64 = columns.iter().map(|c| norm(*c)).product();
        let volume = if axes == 3 {
            let [a, b, c] = [columns[0], columns[1], columns[2]];
            (a[0] * (b[1] * c[2] - b[2] * c[1]) - a[1] * (b[0] * c[2] - b[2] * c[0])
                + a[2] * (b[0] * c[1] - b[1] * c[0]))
                .abs()
        } else {
            let [a, b] = [columns[0], columns[1]];
            norm([
                a[1] * b[2] - a[2] * b[1],
                a[2] * b[0] - a[0] * b[2],
                a[0] * b[1] - a[1] * b[0],
            ])
        };
        (volume < DEGENERATE_RATIO * scale)
            .then(|| "the affine's axes are (nearly) parallel: the grid is singular".into())
    }
}

/// Voxel spacings accepted, in mm: a micrometre to a metre.
pub const SPACING_RANGE_MM: std::ops::RangeInclusive<f64> = 1e-3..=1e3;
/// Axes spanning less than this share of the volume their lengths allow are
/// taken as parallel.
const DEGENERATE_RATIO: f64 = 1e-6;

/// The dot product of two 3-vectors.
pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// The cross product of two 3-vectors.
pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// The unit vector along `v`, or zero if `v` is zero.
fn unit(v: [f64; 3]) -> [f64; 3] {
    let norm = (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    if norm > 0.0 {
        v.map(|c| c / norm)
    } else {
        [0.0; 3]
    }
}

/// Voxel labels, stored in the narrowest type that holds them.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Labels 0–255, one byte per voxel, x fastest.
    U8(Vec<u8>),
    /// Labels 0–65535, two bytes per voxel, x fastest.
    U16(Vec<u16>),
}

impl Labels {
    /// Number of voxels.
    pub fn len(&self) -> usize {
        match self {
            Labels::U8(v) => v.len(),
            Labels::U16(v) => v.len(),
        }
    }

    /// True when there is no voxel.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label at a voxel index.
    pub fn get(&self, index: usize) -> u16 {
        match self {
            Labels::U8(v) => v[index] as u16,
            Labels::U16(v) => v[index],
        }
    }
}

/// A label map on its grid. Label 0 is background.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelVolume {
    /// The grid the labels are sampled on.
    pub grid: Grid,
    /// One label per voxel of `grid`, x fastest; `labels.len() == grid.len()`.
    pub labels: Labels,
}

/// Why a label volume could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{voxels} labels for a grid of {expected} voxels")]
pub struct LengthMismatch {
    /// Number of labels given.
    pub voxels: usize,
    /// Number of voxels in the grid (product of its shape).
    pub expected: usize,
}

impl LabelVolume {
    /// Pairs labels with their grid; the voxel count must match the shape.
    pub fn new(grid: Grid, labels: Labels) -> Result<Self, LengthMismatch> {
        if labels.len() != grid.len() {
            return Err(LengthMismatch {
                voxels: labels.len(),
                expected: grid.len(),
            });
        }
        Ok(LabelVolume { grid, labels })
    }
}

/// An inclusive box of voxel indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BoundingBox {
    /// Lowest voxel index along x, y, z (inclusive).
    pub min: [usize; 3],
    /// Highest voxel index along x, y, z (inclusive); `max[a] >= min[a]`.
    pub max: [usize; 3],
}

impl BoundingBox {
    /// The box holding a single voxel.
    pub fn point(p: [usize; 3]) -> Self {
        BoundingBox { min: p, max: p }
    }

    /// The smallest box holding both.
    pub fn union(self, other: BoundingBox) -> Self {
        BoundingBox {
            min: [0, 1, 2].map(|a| self.min[a].min(other.min[a])),
            max: [0, 1, 2].map(|a| self.max[a].max(other.max[a])),
        }
    }

    /// Union of two optional boxes.
    pub fn union_opt(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.union(b)),
            (a, None) => a,
            (None, b) => b,
        }
    }

    /// Voxels along each axis.
    pub fn extent(&self) -> [usize; 3] {
        [0, 1, 2].map(|a| self.max[a] - self.min[a] + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn singular_or_absurd_grids_are_named() {
        let good = Grid::axis_aligned([4, 4, 4], [0.8, 0.8, 2.5], 3);
        assert_eq!(good.degeneracy(), None);
        let zero = Grid {
            affine: [[0.0; 4]; 3],
            ..good.clone()
        };
        assert!(zero.degeneracy().unwrap().contains("axis 0 is zero"));
        let mut parallel = good.clone();
        parallel.affine[1][2] = 0.8;
        parallel.affine[2][2] = 0.0;
        parallel.affine[1][1] = 0.8;
        parallel.affine[0][2] = 0.0;
        parallel.affine[0][1] = 0.0;
        // Columns 1 and 2 are now both along y.
        assert!(parallel.degeneracy().unwrap().contains("parallel"));
        let huge = Grid::axis_aligned([4, 4, 4], [3e38, 1.0, 1.0], 3);
        assert!(huge.degeneracy().unwrap().contains("axis 0"));
        // A planar image only needs two independent axes.
        let planar = Grid {
            affine: [
                [0.5, 0.0, 0.0, 0.0],
                [0.0, 0.5, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0],
            ],
            ..Grid::axis_aligned([4, 4, 1], [0.5, 0.5, 1.0], 2)
        };
        assert_eq!(planar.degeneracy(), None);
    }

    fn grid() -> Grid {
        Grid::axis_aligned([4, 5, 6], [0.8, 0.8, 1.5], 3)
    }

    #[test]
    fn same_grid_accepts_tiny_differences() {
        let mut other = grid();
        other.spacing[2] += 5e-4;
        other.affine[0][3] += 5e-4;
        assert_eq!(grid().check_same(&other), Ok(()));
    }

    #[test]
    fn grid_mismatch_names_what_differs() {
        let mut other = grid();
        other.shape[1] = 7;
        assert!(matches!(
            grid().check_same(&other),
            Err(GridMismatch::Shape(..))
        ));

        let mut other = grid();
        other.spacing[2] = 1.6;
        let err = grid().check_same(&other).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spacing differs: [0.8, 0.8, 1.5] mm vs [0.8, 0.8, 1.6] mm"
        );

        let mut other = grid();
        other.affine[0][3] = 2.0;
        assert!(matches!(
            grid().check_same(&other),
            Err(GridMismatch::Origin { .. })
        ));

        // Flip the y axis: the voxels are stored in another direction.
        let mut other = grid();
        other.affine[1][1] = -0.8;
        assert_eq!(grid().check_same(&other), Err(GridMismatch::Layout));

        // Rotate the y axis by 0.01 rad about x.
        let mut other = grid();
        other.affine[1][1] = 0.8 * 0.01f64.cos();
        other.affine[2][1] = 0.8 * 0.01f64.sin();
        let err = grid().check_same(&other).unwrap_err();
        assert!(
            matches!(err, GridMismatch::Orientation { axis: 'y', .. }),
            "{err}"
        );

        let mut other = grid();
        other.dims = 2;
        assert_eq!(grid().check_same(&other), Err(GridMismatch::Dims(3, 2)));
    }

    #[test]
    fn label_volume_checks_length() {
        let err = LabelVolume::new(grid(), Labels::U8(vec![0; 3])).unwrap_err();
        assert_eq!(err.expected, 120);
    }
}
