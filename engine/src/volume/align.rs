//! Exact alignment of grids that sample the same lattice: axes stored in another
//! order or direction, or a different extent along them. Voxels are moved, never
//! interpolated.

use super::dot;
use super::{
    BoundingBox, GRID_TOLERANCE_MM, GRID_TOLERANCE_RAD, Grid, GridMismatch, LabelVolume, Labels,
};

/// Where the voxels of a source grid land on a target grid: source axis `a` runs
/// along target axis `axes[a]`, reversed when `flip[a]`, and source voxel (0, 0, 0)
/// is target voxel `origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridMap {
    /// Target axis that each source axis (x, y, z) runs along; a permutation.
    pub axes: [usize; 3],
    /// Whether each source axis runs against its target axis.
    pub flip: [bool; 3],
    /// Target voxel index of source voxel (0, 0, 0); may lie outside the target.
    pub origin: [i64; 3],
}

impl GridMap {
    /// The map of a grid onto itself.
    pub const IDENTITY: GridMap = GridMap {
        axes: [0, 1, 2],
        flip: [false; 3],
        origin: [0; 3],
    };

    /// Target index of a source voxel.
    pub fn target_index(&self, source: [usize; 3]) -> [i64; 3] {
        let mut target = self.origin;
        for a in 0..3 {
            let step = if self.flip[a] {
                -(source[a] as i64)
            } else {
                source[a] as i64
            };
            target[self.axes[a]] += step;
        }
        target
    }

    /// Target extent (min, max per target axis) of a source box.
    pub fn map_box(&self, bbox: BoundingBox) -> ([i64; 3], [i64; 3]) {
        let (a, b) = (self.target_index(bbox.min), self.target_index(bbox.max));
        (
            [0, 1, 2].map(|t| a[t].min(b[t])),
            [0, 1, 2].map(|t| a[t].max(b[t])),
        )
    }

    /// The same map with the target origin moved by `shift` (target voxels).
    pub fn shifted(mut self, shift: [i64; 3]) -> GridMap {
        for (o, s) in self.origin.iter_mut().zip(shift) {
            *o += s;
        }
        self
    }

    /// Whether the axes keep their order and direction.
    pub fn keeps_axes(&self) -> bool {
        self.axes == [0, 1, 2] && self.flip == [false; 3]
    }
}

impl Grid {
    fn column(&self, axis: usize) -> [f64; 3] {
        [
            self.affine[0][axis],
            self.affine[1][axis],
            self.affine[2][axis],
        ]
    }

    fn origin_mm(&self) -> [f64; 3] {
        [self.affine[0][3], self.affine[1][3], self.affine[2][3]]
    }

    /// Finds where this grid's voxels land on `target`, when both sample the same
    /// lattice: every axis parallel (or antiparallel) to one of the target's with the
    /// same spacing, and the origins a whole number of voxels apart.
    pub fn map_onto(&self, target: &Grid) -> Result<GridMap, GridMismatch> {
        if self.dims != target.dims {
            return Err(GridMismatch::Dims(self.dims, target.dims));
        }
        let dims = self.dims as usize;
        let mut map = GridMap::IDENTITY;
        for a in 0..dims {
            let direction = super::unit(self.column(a));
            let (b, cos) = (0..dims)
                .map(|b| (b, dot(direction, super::unit(target.column(b)))))
                .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
                .unwrap_or((a, 0.0));
            let angle = cos.abs().min(1.0).acos();
            if angle > GRID_TOLERANCE_RAD || map.axes[..a].contains(&b) {
                return Err(GridMismatch::Orientation {
                    axis: ['x', 'y', 'z'][a],
                    angle_rad: angle,
                });
            }
            if (self.spacing[a] - target.spacing[b]).abs() > GRID_TOLERANCE_MM {
                return Err(GridMismatch::Spacing(
                    self.spacing_vec(),
                    target.spacing_vec(),
                ));
            }
            map.axes[a] = b;
            map.flip[a] = cos < 0.0;
        }
        let offset: Vec<f64> = (0..3)
            .map(|r| self.origin_mm()[r] - target.origin_mm()[r])
            .collect();
        let offset = [offset[0], offset[1], offset[2]];
        let columns: Vec<[f64; 3]> = (0..dims).map(|b| target.column(b)).collect();
        let steps = solve(&columns, offset);
        let mut residual = offset;
        for (b, step) in steps.iter().enumerate() {
            let whole = step.round();
            map.origin[b] = whole as i64;
            for (r, value) in residual.iter_mut().enumerate() {
                *value -= whole * columns[b][r];
            }
        }
        let distance_mm = dot(residual, residual).sqrt();
        if distance_mm > GRID_TOLERANCE_MM {
            return Err(GridMismatch::Origin { distance_mm });
        }
        Ok(map)
    }

    /// Checks that `other` samples exactly the same points in the same order. The
    /// error names the first property that differs.
    pub fn check_same(&self, other: &Grid) -> Result<(), GridMismatch> {
        let map = self.map_onto(other)?;
        if !map.keeps_axes() {
            return Err(GridMismatch::Layout);
        }
        if map.origin != [0; 3] {
            let shift: Vec<f64> = (0..3)
                .map(|a| map.origin[a] as f64 * self.spacing[a])
                .collect();
            return Err(GridMismatch::Origin {
                distance_mm: shift.iter().map(|v| v * v).sum::<f64>().sqrt(),
            });
        }
        if self.shape != other.shape {
            return Err(GridMismatch::Shape(self.shape_vec(), other.shape_vec()));
        }
        Ok(())
    }

    /// Where this grid's voxels land on `target` when they cover it exactly, as
    /// the same grid stored with axes in another order or direction.
    pub fn map_covering(&self, target: &Grid) -> Result<GridMap, GridMismatch> {
        let map = self.map_onto(target)?;
        let (min, max) = map.map_box(BoundingBox {
            min: [0; 3],
            max: [0, 1, 2].map(|a| self.shape[a] - 1),
        });
        if (0..3).all(|t| min[t] == 0 && max[t] == target.shape[t] as i64 - 1) {
            return Ok(map);
        }
        let mut shape = [0usize; 3];
        for a in 0..3 {
            shape[map.axes[a]] = self.shape[a];
        }
        let shape = shape[..self.dims as usize].to_vec();
        Err(if shape != target.shape_vec() {
            GridMismatch::Shape(target.shape_vec(), shape)
        } else {
            GridMismatch::Origin {
                distance_mm: (0..3)
                    .map(|t| (min[t] as f64 * target.spacing[t]).powi(2))
                    .sum::<f64>()
                    .sqrt(),
            }
        })
    }

    /// Whether this grid's voxels all land inside `target` (a slice range of it).
    pub fn map_inside(&self, target: &Grid) -> Result<GridMap, GridMismatch> {
        let map = self.map_onto(target)?;
        let (min, max) = map.map_box(BoundingBox {
            min: [0; 3],
            max: [0, 1, 2].map(|a| self.shape[a] - 1),
        });
        if (0..3).all(|t| min[t] >= 0 && max[t] < target.shape[t] as i64) {
            Ok(map)
        } else {
            Err(GridMismatch::Extent)
        }
    }

    /// This grid cut or grown to target voxels `min..=max` along its own axes.
    pub fn window(&self, min: [i64; 3], max: [i64; 3]) -> Grid {
        let mut grid = self.clone();
        for r in 0..3 {
            grid.affine[r][3] += (0..3)
                .map(|a| self.affine[r][a] * min[a] as f64)
                .sum::<f64>();
        }
        grid.shape = [0, 1, 2].map(|a| (max[a] - min[a] + 1) as usize);
        grid
    }
}

/// Least-squares coefficients of `columns` that sum to `target` (exact when the
/// columns span it); a 2- or 3-column system by its normal equations.
fn solve(columns: &[[f64; 3]], target: [f64; 3]) -> Vec<f64> {
    let n = columns.len();
    let gram: Vec<Vec<f64>> = (0..n)
        .map(|i| (0..n).map(|j| dot(columns[i], columns[j])).collect())
        .collect();
    let rhs: Vec<f64> = (0..n).map(|i| dot(columns[i], target)).collect();
    // Gaussian elimination with partial pivoting on an n×n system (n ≤ 3).
    let mut m: Vec<Vec<f64>> = gram
        .iter()
        .zip(&rhs)
        .map(|(row, r)| row.iter().copied().chain([*r]).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        if m[col][col].abs() < 1e-12 {
            continue;
        }
        let pivot_row = m[col].clone();
        for (row, values) in m.iter_mut().enumerate() {
            if row != col {
                let factor = values[col] / pivot_row[col];
                for (v, p) in values.iter_mut().zip(&pivot_row).skip(col) {
                    *v -= factor * p;
                }
            }
        }
    }
    (0..n)
        .map(|i| {
            if m[i][i].abs() < 1e-12 {
                0.0
            } else {
                m[i][n] / m[i][i]
            }
        })
        .collect()
}

impl LabelVolume {
    /// The same labels stored in `target`'s axis order and direction; the volume must
    /// cover exactly the target grid.
    pub fn reoriented_onto(&self, target: &Grid) -> Result<LabelVolume, GridMismatch> {
        let map = self.grid.map_covering(target)?;
        if map == GridMap::IDENTITY {
            return Ok(LabelVolume {
                grid: target.clone(),
                labels: self.labels.clone(),
            });
        }
        let labels = match &self.labels {
            Labels::U8(v) => Labels::U8(remap(v, self.grid.shape, &map, target.shape)),
            Labels::U16(v) => Labels::U16(remap(v, self.grid.shape, &map, target.shape)),
        };
        Ok(LabelVolume {
            grid: target.clone(),
            labels,
        })
    }
}

/// Copies every voxel to its target position.
fn remap<T: Copy + Default>(
    source: &[T],
    shape: [usize; 3],
    map: &GridMap,
    target_shape: [usize; 3],
) -> Vec<T> {
    let mut out = vec![T::default(); source.len()];
    let stride = [1, target_shape[0], target_shape[0] * target_shape[1]];
    let index = |t: [i64; 3]| (0..3).map(|a| t[a] as usize * stride[a]).sum::<usize>();
    let mut i = 0;
    for z in 0..shape[2] {
        for y in 0..shape[1] {
            for x in 0..shape[0] {
                out[index(map.target_index([x, y, z]))] = source[i];
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume(grid: Grid) -> LabelVolume {
        let n = grid.len();
        LabelVolume::new(grid, Labels::U8((0..n).map(|i| (i % 251) as u8).collect())).unwrap()
    }

    fn value(v: &LabelVolume, [x, y, z]: [usize; 3]) -> u16 {
        v.labels
            .get(x + v.grid.shape[0] * (y + v.grid.shape[1] * z))
    }

    /// The world position of voxel index `i`.
    fn world(grid: &Grid, i: [usize; 3]) -> [f64; 3] {
        std::array::from_fn(|r| {
            grid.affine[r][3] + (0..3).map(|a| grid.affine[r][a] * i[a] as f64).sum::<f64>()
        })
    }

    #[test]
    fn reorients_flipped_and_permuted_axes_exactly() {
        let target = Grid::axis_aligned([4, 5, 3], [0.8, 0.9, 2.5], 3);
        // Same lattice stored z, x, y with y reversed: source axis 0 is target z,
        // axis 1 target x, axis 2 target y running backwards from its far end.
        let mut source = Grid::axis_aligned([3, 4, 5], [2.5, 0.8, 0.9], 3);
        source.affine = [
            [0.0, 0.8, 0.0, 0.0],
            [0.0, 0.0, -0.9, 0.9 * 4.0],
            [2.5, 0.0, 0.0, 0.0],
        ];
        let source = volume(source);
        let map = source.grid.map_onto(&target).unwrap();
        assert_eq!(map.axes, [2, 0, 1]);
        assert_eq!(map.flip, [false, false, true]);
        let moved = source.reoriented_onto(&target).unwrap();
        for z in 0..3 {
            for y in 0..4 {
                for x in 0..5 {
                    // Every voxel keeps its world position.
                    let t = map.target_index([z, y, x]);
                    let t = [t[0] as usize, t[1] as usize, t[2] as usize];
                    let (a, b) = (world(&source.grid, [z, y, x]), world(&target, t));
                    assert!((0..3).all(|r| (a[r] - b[r]).abs() < 1e-9));
                    assert_eq!(value(&moved, t), value(&source, [z, y, x]));
                }
            }
        }
    }

    #[test]
    fn finds_whole_voxel_offsets_and_windows() {
        let target = Grid::axis_aligned([4, 5, 6], [0.8, 0.9, 2.5], 3);
        let mut shifted = target.clone();
        shifted.affine[2][3] += 2.0 * 2.5;
        let map = shifted.map_onto(&target).unwrap();
        assert_eq!(map.origin, [0, 0, 2]);
        assert_eq!(target.window([0, 0, 2], [3, 4, 7]).affine, {
            let mut g = shifted.clone();
            g.shape = [4, 5, 6];
            g.affine
        });
        // Half a voxel off is not the same lattice.
        let mut half = target.clone();
        half.affine[0][3] += 0.4;
        assert!(matches!(
            half.map_onto(&target),
            Err(GridMismatch::Origin { .. })
        ));
        // A grid that only partly covers the target cannot be reoriented onto it.
        let err = volume(shifted).reoriented_onto(&target).unwrap_err();
        assert!(matches!(err, GridMismatch::Origin { .. }), "{err}");
    }

    #[test]
    fn planar_grids_ignore_the_third_axis() {
        let target = Grid::axis_aligned([6, 4, 1], [0.5, 0.5, 1.0], 2);
        let mut other = target.clone();
        other.affine[2][2] = 3.0; // another slice thickness
        other.spacing[2] = 3.0;
        assert_eq!(other.map_onto(&target), Ok(GridMap::IDENTITY));
        assert_eq!(target.check_same(&other), Ok(()));
    }
}
