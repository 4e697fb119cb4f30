//! Surface points of every structure of a label map, in one pass over the volume.

use rayon::prelude::*;

use super::SurfaceMode;
use super::edt::Point;
use super::overlap::LabelValue;
use super::surfel_area;
use crate::volume::{Grid, Labels};

/// The surface of one structure: lattice points and, in surfel mode, the area
/// (length in 2D) of each point's surface element.
///
/// In voxel mode the lattice is the voxel grid; in surfel mode it is the corner
/// lattice, where point k along an axis lies between voxels k − 1 and k.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Surface {
    /// Surface points as lattice coordinates (x, y, z).
    pub points: Vec<Point>,
    /// Surfel mode: each point's element area in mm² (length in mm in 2D), parallel
    /// to `points`; None in voxel mode, where every point weighs the same.
    pub weights: Option<Vec<f64>>,
}

/// Surfaces of the `wanted` labels, in that order. Outside the image is background.
pub fn label_surfaces(
    labels: &Labels,
    grid: &Grid,
    mode: SurfaceMode,
    wanted: &[u16],
) -> Vec<Surface> {
    match labels {
        Labels::U8(v) => extract(v, grid, mode, wanted),
        Labels::U16(v) => extract(v, grid, mode, wanted),
    }
}

/// Maps a label to its position in `wanted`.
struct Slots {
    slot: Vec<u32>,
    count: usize,
}

impl Slots {
    const NONE: u32 = u32::MAX;

    fn new<T: LabelValue>(wanted: &[u16]) -> Self {
        let mut slot = vec![Self::NONE; T::COUNT];
        for (i, &label) in wanted.iter().enumerate() {
            if let Some(s) = slot.get_mut(label as usize)
                && label != 0
            {
                *s = i as u32;
            }
        }
        Slots {
            slot,
            count: wanted.len(),
        }
    }

    #[inline(always)]
    fn of(&self, label: usize) -> Option<usize> {
        let s = self.slot[label];
        (s != Self::NONE).then_some(s as usize)
    }
}

/// Surface pieces found in one slice, per wanted label.
type SlicePieces = Vec<(Vec<Point>, Vec<f64>)>;

fn extract<T: LabelValue>(
    labels: &[T],
    grid: &Grid,
    mode: SurfaceMode,
    wanted: &[u16],
) -> Vec<Surface> {
    let slots = Slots::new::<T>(wanted);
    let planar = grid.dims == 2;
    let slices: Vec<SlicePieces> = match mode {
        SurfaceMode::Voxel => (0..grid.shape[2])
            .into_par_iter()
            .map(|z| voxel_slice(labels, grid.shape, planar, z, &slots))
            .collect(),
        SurfaceMode::Surfel => {
            let corner_slices = if planar { 1 } else { grid.shape[2] + 1 };
            let areas = if planar {
                surfel_area::contour_lengths(grid.spacing).to_vec()
            } else {
                surfel_area::surface_areas(grid.spacing).to_vec()
            };
            (0..corner_slices)
                .into_par_iter()
                .map(|k| corner_slice(labels, grid.shape, planar, k, &slots, &areas))
                .collect()
        }
    };
    (0..slots.count)
        .map(|s| {
            let points = slices
                .iter()
                .flat_map(|slice| slice[s].0.iter().copied())
                .collect();
            let weights = (mode == SurfaceMode::Surfel).then(|| {
                slices
                    .iter()
                    .flat_map(|slice| slice[s].1.iter().copied())
                    .collect()
            });
            Surface { points, weights }
        })
        .collect()
}

/// Row `y` of slice `z`, or None outside the image.
fn row<T>(labels: &[T], shape: [usize; 3], y: isize, z: isize) -> Option<&[T]> {
    let inside = y >= 0 && z >= 0 && (y as usize) < shape[1] && (z as usize) < shape[2];
    inside.then(|| {
        let start = shape[0] * (y as usize + shape[1] * z as usize);
        &labels[start..start + shape[0]]
    })
}

/// Voxels of slice `z` with a face neighbour of another label (or outside).
fn voxel_slice<T: LabelValue>(
    labels: &[T],
    shape: [usize; 3],
    planar: bool,
    z: usize,
    slots: &Slots,
) -> SlicePieces {
    let mut pieces: SlicePieces = vec![(Vec::new(), Vec::new()); slots.count];
    let nx = shape[0];
    let zi = z as isize;
    for y in 0..shape[1] {
        let y_i = y as isize;
        let Some(here) = row(labels, shape, y_i, zi) else {
            continue;
        };
        let neighbours = [
            row(labels, shape, y_i - 1, zi),
            row(labels, shape, y_i + 1, zi),
            if planar {
                Some(here)
            } else {
                row(labels, shape, y_i, zi - 1)
            },
            if planar {
                Some(here)
            } else {
                row(labels, shape, y_i, zi + 1)
            },
        ];
        for (x0, chunk) in here.chunks(16).enumerate().map(|(c, v)| (c * 16, v)) {
            if chunk.iter().fold(T::default(), |acc, &v| acc | v) == T::default() {
                continue;
            }
            for (dx, &l) in chunk.iter().enumerate() {
                let x = x0 + dx;
                if l == T::default() {
                    continue;
                }
                let Some(s) = slots.of(l.index()) else {
                    continue;
                };
                let interior = x > 0
                    && x + 1 < nx
                    && here[x - 1] == l
                    && here[x + 1] == l
                    && neighbours.iter().all(|r| r.is_some_and(|r| r[x] == l));
                if !interior {
                    pieces[s].0.push([x as u32, y as u32, z as u32]);
                }
            }
        }
    }
    pieces
}

/// Corners of corner-slice `k` whose 2×2×2 (2×2) neighbourhood mixes a wanted
/// label with others, each with its surface element's area.
fn corner_slice<T: LabelValue>(
    labels: &[T],
    shape: [usize; 3],
    planar: bool,
    k: usize,
    slots: &Slots,
    areas: &[f64],
) -> SlicePieces {
    let mut pieces: SlicePieces = vec![(Vec::new(), Vec::new()); slots.count];
    let k_i = k as isize;
    let nx = shape[0] as isize;
    let mut column = vec![T::default(); shape[0] + 2];
    let mut mixed = vec![false; shape[0] + 2];
    for j in 0..=shape[1] {
        let j_i = j as isize;
        // Neighbour rows in bit order: (b, c) = (0, 0), (0, 1), (1, 0), (1, 1) in 3D,
        // b = 0, 1 in 2D; b along y, c along z, each offset by −1 for bit 0.
        let rows: Vec<Option<&[T]>> = if planar {
            vec![row(labels, shape, j_i - 1, 0), row(labels, shape, j_i, 0)]
        } else {
            vec![
                row(labels, shape, j_i - 1, k_i - 1),
                row(labels, shape, j_i - 1, k_i),
                row(labels, shape, j_i, k_i - 1),
                row(labels, shape, j_i, k_i),
            ]
        };
        if rows.iter().all(Option::is_none) {
            continue;
        }
        // Per column x (shifted by one, with a background column on each side):
        // the label when all neighbour rows agree there, and whether they disagree.
        for x in 0..shape[0] {
            let mut labels = rows.iter().map(|r| r.map_or(T::default(), |r| r[x]));
            let first = labels.next().unwrap_or_default();
            column[x + 1] = first;
            mixed[x + 1] = labels.any(|v| v != first);
        }
        let at = |r: &Option<&[T]>, x: isize| match r {
            Some(r) if x >= 0 && x < nx => r[x as usize],
            _ => T::default(),
        };
        for i in 0..=nx {
            let (left, right) = (i as usize, i as usize + 1);
            if !mixed[left] && !mixed[right] && column[left] == column[right] {
                continue;
            }
            // Neighbours in code-bit order: a (along x) is the most significant.
            let mut values = [T::default(); 8];
            let n = 2 * rows.len();
            for a in 0..2 {
                for (r, rw) in rows.iter().enumerate() {
                    values[a * rows.len() + r] = at(rw, i - 1 + a as isize);
                }
            }
            let values = &values[..n];
            for (idx, &l) in values.iter().enumerate() {
                let seen_before = values[..idx].contains(&l);
                if l == T::default() || seen_before {
                    continue;
                }
                let Some(s) = slots.of(l.index()) else {
                    continue;
                };
                let code = values
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| **v == l)
                    .fold(0usize, |c, (bit, _)| c | (1 << (n - 1 - bit)));
                pieces[s].0.push([i as u32, j as u32, k as u32]);
                pieces[s].1.push(areas[code]);
            }
        }
    }
    pieces
}
