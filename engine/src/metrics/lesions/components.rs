//! Connected components of one label, found on runs of voxels along x joined by
//! union-find (two passes: join runs that touch, then number the components).
//!
//! Written by hand because no well-kept crate labels components of a 2D/3D label
//! map stored as [`Labels`] (x fastest) with 6/18/26-connectivity. Runs keep the
//! memory proportional to the structure's boundary rather than to the grid: a
//! 512×512×300 CT with a few hundred lesions needs a few megabytes.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::volume::Labels;

/// Which voxels touch. A 2D image (one slice) has no neighbour along z, so
/// `Face` is 4-connectivity there and `Edge` and `Corner` are both 8-connectivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Connectivity {
    /// Voxels sharing a face: 6 neighbours in 3D, 4 in 2D.
    #[serde(rename = "6")]
    Face,
    /// Voxels sharing a face or an edge: 18 neighbours in 3D, 8 in 2D.
    #[serde(rename = "18")]
    Edge,
    /// Voxels sharing a face, an edge or a corner: 26 neighbours in 3D, 8 in 2D.
    #[default]
    #[serde(rename = "26")]
    Corner,
}

impl std::str::FromStr for Connectivity {
    type Err = String;

    /// The neighbour count: 6, 18 or 26, or 4 or 8 for a 2D image.
    fn from_str(name: &str) -> Result<Connectivity, String> {
        match name {
            "6" | "4" => Ok(Connectivity::Face),
            "18" => Ok(Connectivity::Edge),
            "26" | "8" => Ok(Connectivity::Corner),
            other => Err(format!(
                "unknown connectivity {other:?}: 6, 18 or 26 (4 or 8 in 2D)"
            )),
        }
    }
}

/// Voxels `start..end` along x of row `y + ny·z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    start: u32,
    end: u32,
}

/// The connected components of one label, numbered 0, 1, … in the storage order
/// (x fastest) of their first voxel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Components {
    /// The label's runs, row by row, x ascending within a row.
    runs: Vec<Run>,
    /// Runs of row `r` are `runs[row_start[r]..row_start[r + 1]]`.
    row_start: Vec<u32>,
    /// The component of each run.
    ids: Vec<u32>,
    /// Voxels of each component.
    voxels: Vec<u64>,
}

impl Components {
    /// Finds the components of `label` in a label map of `shape` (x, y, z).
    pub fn of_label(
        labels: &Labels,
        label: u16,
        shape: [usize; 3],
        connectivity: Connectivity,
    ) -> Self {
        let runs_by_row = match labels {
            Labels::U8(v) => match u8::try_from(label) {
                Ok(label) => row_runs(v, label, shape),
                Err(_) => vec![Vec::new(); shape[1] * shape[2]],
            },
            Labels::U16(v) => row_runs(v, label, shape),
        };
        Components::from_rows(runs_by_row, shape, connectivity)
    }

    /// These voxels dilated `iterations` times by the 18-neighbourhood (a voxel
    /// and the voxels sharing a face or an edge with it: scipy's
    /// `generate_binary_structure(3, 2)`), clipped to the grid of `shape`, and
    /// labelled with `connectivity`. Iterations beyond nx + ny + nz change
    /// nothing (the grid is covered by then) and are not run.
    pub fn dilated(&self, shape: [usize; 3], iterations: u32, connectivity: Connectivity) -> Self {
        let (nx, ny) = (shape[0], shape[1]);
        let rows = self.row_start.len() - 1;
        let mut runs_by_row: Vec<Vec<Run>> = (0..rows)
            .map(|r| {
                let (start, end) = self.row(r);
                self.runs[start..end].to_vec()
            })
            .collect();
        let saturated = shape.iter().sum::<usize>();
        for _ in 0..(iterations as usize).min(saturated) {
            runs_by_row = (0..rows)
                .into_par_iter()
                .map(|row| dilate_row(&runs_by_row, row, nx, ny))
                .collect();
        }
        Components::from_rows(runs_by_row, shape, connectivity)
    }

    /// The components of runs given row by row.
    fn from_rows(
        runs_by_row: Vec<Vec<Run>>,
        shape: [usize; 3],
        connectivity: Connectivity,
    ) -> Self {
        let mut row_start = Vec::with_capacity(runs_by_row.len() + 1);
        row_start.push(0);
        let mut runs = Vec::new();
        for row in runs_by_row {
            runs.extend(row);
            row_start.push(u32::try_from(runs.len()).expect("fewer than 2³² runs"));
        }
        let mut components = Components {
            runs,
            row_start,
            ids: Vec::new(),
            voxels: Vec::new(),
        };
        components.join(shape, connectivity);
        components
    }

    /// Number of components.
    pub fn count(&self) -> usize {
        self.voxels.len()
    }

    /// Voxels of each component.
    pub fn voxels(&self) -> &[u64] {
        &self.voxels
    }

    /// Shared voxels of every pair of overlapping components, as
    /// (component of `self`, component of `other`, voxels), sorted; both must
    /// come from grids of the same shape.
    pub fn overlaps(&self, other: &Components) -> Vec<(u32, u32, u64)> {
        let mut shared = std::collections::HashMap::new();
        for row in 0..self.row_start.len() - 1 {
            let (mut i, i_end) = self.row(row);
            let (mut j, j_end) = other.row(row);
            while i < i_end && j < j_end {
                let (a, b) = (self.runs[i], other.runs[j]);
                let common = a.end.min(b.end).saturating_sub(a.start.max(b.start));
                if common > 0 {
                    *shared.entry((self.ids[i], other.ids[j])).or_insert(0) += common as u64;
                }
                if a.end < b.end { i += 1 } else { j += 1 }
            }
        }
        let mut pairs: Vec<(u32, u32, u64)> =
            shared.into_iter().map(|((a, b), n)| (a, b, n)).collect();
        pairs.sort_unstable();
        pairs
    }

    /// Index range of row `row`'s runs.
    fn row(&self, row: usize) -> (usize, usize) {
        (
            self.row_start[row] as usize,
            self.row_start[row + 1] as usize,
        )
    }

    /// Joins touching runs and numbers the components. Each run is compared with
    /// the runs of the rows before it that hold neighbours: (y−1, z) and
    /// (y, z−1), and for 18- and 26-connectivity the diagonal rows (y±1, z−1).
    /// `slack` 1 lets runs touch diagonally along x, 0 requires shared x.
    fn join(&mut self, shape: [usize; 3], connectivity: Connectivity) {
        let (ny, nz) = (shape[1], shape[2]);
        let (straight, diagonal) = match connectivity {
            Connectivity::Face => (0, None),
            Connectivity::Edge => (1, Some(0)),
            Connectivity::Corner => (1, Some(1)),
        };
        let mut parent: Vec<u32> = (0..self.runs.len() as u32).collect();
        for z in 0..nz {
            for y in 0..ny {
                let row = y + ny * z;
                let mut earlier = Vec::with_capacity(4);
                if y > 0 {
                    earlier.push((row - 1, straight));
                }
                if z > 0 {
                    earlier.push((row - ny, straight));
                    if let Some(slack) = diagonal {
                        if y > 0 {
                            earlier.push((row - ny - 1, slack));
                        }
                        if y + 1 < ny {
                            earlier.push((row - ny + 1, slack));
                        }
                    }
                }
                for (other, slack) in earlier {
                    self.join_rows(&mut parent, row, other, slack);
                }
            }
        }
        // Roots are the first run of their component, so numbering runs in order
        // numbers components by their first voxel.
        self.ids = vec![0; self.runs.len()];
        for i in 0..self.runs.len() {
            let root = find(&mut parent, i as u32) as usize;
            if root == i {
                self.ids[i] = self.voxels.len() as u32;
                self.voxels.push(0);
            } else {
                self.ids[i] = self.ids[root];
            }
            let run = self.runs[i];
            self.voxels[self.ids[i] as usize] += (run.end - run.start) as u64;
        }
    }

    /// Unites the runs of `row` with the runs of `other` they touch.
    fn join_rows(&self, parent: &mut [u32], row: usize, other: usize, slack: u32) {
        let (mut i, i_end) = self.row(row);
        let (mut j, j_end) = self.row(other);
        while i < i_end && j < j_end {
            let (a, b) = (self.runs[i], self.runs[j]);
            if a.start < b.end + slack && b.start < a.end + slack {
                union(parent, i as u32, j as u32);
            }
            if a.end < b.end { i += 1 } else { j += 1 }
        }
    }
}

/// Row `row` of one 18-neighbourhood dilation of `rows` (ny rows per slice,
/// nx voxels per row): runs of the row itself and of the 4 rows sharing a face
/// with it grow by one voxel along x (face or edge neighbours); runs of the 4
/// diagonal rows, which share only an edge, are taken as they are (their
/// x-neighbours would be corner neighbours).
fn dilate_row(rows: &[Vec<Run>], row: usize, nx: usize, ny: usize) -> Vec<Run> {
    let (y, z) = (row % ny, row / ny);
    let nz = rows.len() / ny;
    let mut pieces = Vec::new();
    for dz in -1i64..=1 {
        for dy in -1i64..=1 {
            let (oy, oz) = (y as i64 + dy, z as i64 + dz);
            if oy < 0 || oz < 0 || oy >= ny as i64 || oz >= nz as i64 {
                continue;
            }
            let grow = u32::from(dy == 0 || dz == 0);
            pieces.extend(rows[oy as usize + ny * oz as usize].iter().map(|r| Run {
                start: r.start.saturating_sub(grow),
                end: (r.end + grow).min(nx as u32),
            }));
        }
    }
    pieces.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<Run> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match merged.last_mut() {
            // Overlapping or adjacent runs are one run.
            Some(last) if piece.start <= last.end => last.end = last.end.max(piece.end),
            _ => merged.push(piece),
        }
    }
    merged
}

/// The runs of `label` in every row (y, z), rows in storage order; slices in parallel.
fn row_runs<T: Copy + PartialEq + Send + Sync>(
    labels: &[T],
    label: T,
    shape: [usize; 3],
) -> Vec<Vec<Run>> {
    let nx = shape[0];
    labels
        .par_chunks(nx * shape[1])
        .flat_map_iter(|slice| {
            slice.chunks(nx).map(|row| {
                let mut runs = Vec::new();
                let mut x = 0;
                while let Some(start) = row[x..].iter().position(|&v| v == label) {
                    let start = x + start;
                    let end = row[start..]
                        .iter()
                        .position(|&v| v != label)
                        .map_or(nx, |n| start + n);
                    runs.push(Run {
                        start: start as u32,
                        end: end as u32,
                    });
                    x = end;
                }
                runs
            })
        })
        .collect()
}

/// The root of `i`'s set, halving the path on the way.
fn find(parent: &mut [u32], mut i: u32) -> u32 {
    while parent[i as usize] != i {
        let grandparent = parent[parent[i as usize] as usize];
        parent[i as usize] = grandparent;
        i = grandparent;
    }
    i
}

/// Merges the sets of `a` and `b`, keeping the smaller root.
fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    parent[ra.max(rb) as usize] = ra.min(rb);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Components of the voxels at `points` in a grid of `shape`.
    fn components_of(
        shape: [usize; 3],
        points: &[[usize; 3]],
        connectivity: Connectivity,
    ) -> Components {
        let mut labels = vec![0u8; shape.iter().product()];
        for p in points {
            labels[p[0] + shape[0] * (p[1] + shape[1] * p[2])] = 1;
        }
        Components::of_label(&Labels::U8(labels), 1, shape, connectivity)
    }

    /// The 8 voxels of the 2×2×2 cube whose lowest corner is `at`.
    fn cube(at: [usize; 3]) -> Vec<[usize; 3]> {
        (0..8)
            .map(|i| [at[0] + (i & 1), at[1] + ((i >> 1) & 1), at[2] + (i >> 2)])
            .collect()
    }

    #[test]
    fn cubes_touching_by_a_corner_merge_only_under_26_connectivity() {
        // Voxels (1,1,1) and (2,2,2) share only a corner.
        let points = [cube([0, 0, 0]), cube([2, 2, 2])].concat();
        let count = |c| components_of([4, 4, 4], &points, c).voxels().to_vec();
        assert_eq!(count(Connectivity::Face), [8, 8]);
        assert_eq!(count(Connectivity::Edge), [8, 8]);
        assert_eq!(count(Connectivity::Corner), [16]);
    }

    #[test]
    fn cubes_touching_by_an_edge_merge_under_18_and_26_connectivity() {
        // Voxels (1,1,z) and (2,2,z) share an edge along z.
        let points = [cube([0, 0, 0]), cube([2, 2, 0])].concat();
        let count = |c| components_of([4, 4, 2], &points, c).voxels().to_vec();
        assert_eq!(count(Connectivity::Face), [8, 8]);
        assert_eq!(count(Connectivity::Edge), [16]);
        assert_eq!(count(Connectivity::Corner), [16]);
    }

    #[test]
    fn a_2d_diagonal_joins_under_8_not_4_connectivity() {
        // #.#
        // .#.   a 3×3 image, one slice: 4-connectivity sees 3 lesions, 8 one.
        let points = [[0, 0, 0], [2, 0, 0], [1, 1, 0]];
        let face = components_of([3, 2, 1], &points, Connectivity::Face);
        assert_eq!(face.voxels(), [1, 1, 1]);
        for c in [Connectivity::Edge, Connectivity::Corner] {
            assert_eq!(components_of([3, 2, 1], &points, c).voxels(), [3]);
        }
        assert_eq!("4".parse(), Ok(Connectivity::Face));
        assert_eq!("8".parse(), Ok(Connectivity::Corner));
        assert!("10".parse::<Connectivity>().is_err());
    }

    #[test]
    fn a_u_shape_is_one_component_numbered_by_its_first_voxel() {
        // Two arms joined only at the bottom row: the union of two runs found
        // apart. A second lesion starts before the U's bottom is reached.
        // y0: #.#.#
        // y1: #.#..
        // y2: ###..
        let points = [
            [0, 0, 0],
            [2, 0, 0],
            [4, 0, 0],
            [0, 1, 0],
            [2, 1, 0],
            [0, 2, 0],
            [1, 2, 0],
            [2, 2, 0],
        ];
        let c = components_of([5, 3, 1], &points, Connectivity::Face);
        assert_eq!(c.voxels(), [7, 1]);
        let other = components_of([5, 3, 1], &[[2, 0, 0], [4, 0, 0]], Connectivity::Face);
        // Ours first: U (0) shares (2,0,0) with other's 0; lesion 1 shares (4,0,0) with other's 1.
        assert_eq!(c.overlaps(&other), [(0, 0, 1), (1, 1, 1)]);
    }

    /// Component sizes by flood fill from each unvisited voxel in storage order.
    fn flood_fill(shape: [usize; 3], on: &[bool], connectivity: Connectivity) -> Vec<u64> {
        let most = match connectivity {
            Connectivity::Face => 1,
            Connectivity::Edge => 2,
            Connectivity::Corner => 3,
        };
        let offsets: Vec<[i64; 3]> = (0..27)
            .map(|i| [i % 3 - 1, (i / 3) % 3 - 1, i / 9 - 1])
            .filter(|o| (1..=most).contains(&o.iter().filter(|&&v| v != 0).count()))
            .collect();
        let index =
            |p: [i64; 3]| (p[0] + shape[0] as i64 * (p[1] + shape[1] as i64 * p[2])) as usize;
        let mut seen = vec![false; on.len()];
        let mut sizes = Vec::new();
        for start in 0..on.len() {
            if !on[start] || seen[start] {
                continue;
            }
            seen[start] = true;
            let mut stack = vec![start];
            let mut size = 0;
            while let Some(i) = stack.pop() {
                size += 1;
                let p = [
                    i % shape[0],
                    (i / shape[0]) % shape[1],
                    i / (shape[0] * shape[1]),
                ]
                .map(|v| v as i64);
                for o in &offsets {
                    let q = [p[0] + o[0], p[1] + o[1], p[2] + o[2]];
                    if (0..3).all(|a| (0..shape[a] as i64).contains(&q[a]))
                        && on[index(q)]
                        && !seen[index(q)]
                    {
                        seen[index(q)] = true;
                        stack.push(index(q));
                    }
                }
            }
            sizes.push(size);
        }
        sizes
    }

    #[test]
    fn one_dilation_adds_the_face_and_edge_neighbours_clipped_to_the_grid() {
        // A voxel inside: itself, 6 face and 12 edge neighbours (no corners). At a
        // grid corner: itself, 3 face and 3 edge neighbours. In one slice: the 3×3
        // square (in-plane diagonals are edge neighbours).
        let dilate = |shape, at| {
            components_of(shape, &[at], Connectivity::Corner)
                .dilated(shape, 1, Connectivity::Corner)
                .voxels()
                .to_vec()
        };
        assert_eq!(dilate([5, 5, 5], [2, 2, 2]), [19]);
        assert_eq!(dilate([5, 5, 5], [0, 0, 0]), [7]);
        assert_eq!(dilate([5, 5, 1], [2, 2, 0]), [9]);
        // Voxels 3 apart along x (x = 2 and 6): one dilation reaches x = 3 and 5,
        // leaving a gap at 4; two join them.
        let pair = components_of([9, 3, 3], &[[2, 1, 1], [6, 1, 1]], Connectivity::Corner);
        assert_eq!(pair.dilated([9, 3, 3], 1, Connectivity::Corner).count(), 2);
        assert_eq!(pair.dilated([9, 3, 3], 2, Connectivity::Corner).count(), 1);
        // No iterations: the components themselves.
        assert_eq!(pair.dilated([9, 3, 3], 0, Connectivity::Corner), pair);
    }

    /// `on` dilated `iterations` times, voxel by voxel, by the offsets with at
    /// most two non-zero coordinates.
    fn dense_dilation(shape: [usize; 3], on: &[bool], iterations: u32) -> Vec<bool> {
        let index =
            |p: [i64; 3]| (p[0] + shape[0] as i64 * (p[1] + shape[1] as i64 * p[2])) as usize;
        let mut current = on.to_vec();
        for _ in 0..iterations {
            let mut next = current.clone();
            for (i, _) in current.iter().enumerate().filter(|(_, v)| **v) {
                let p = [
                    i % shape[0],
                    (i / shape[0]) % shape[1],
                    i / (shape[0] * shape[1]),
                ]
                .map(|v| v as i64);
                for o in 0..27i64 {
                    let d = [o % 3 - 1, (o / 3) % 3 - 1, o / 9 - 1];
                    let q = [p[0] + d[0], p[1] + d[1], p[2] + d[2]];
                    if d.iter().filter(|&&v| v != 0).count() <= 2
                        && (0..3).all(|a| (0..shape[a] as i64).contains(&q[a]))
                    {
                        next[index(q)] = true;
                    }
                }
            }
            current = next;
        }
        current
    }

    proptest! {
        #[test]
        fn dilation_equals_a_voxel_by_voxel_dilation(
            on in proptest::collection::vec(proptest::bool::weighted(0.05), 9 * 8 * 6),
            iterations in 0u32..4,
            connectivity in prop_oneof![Just(Connectivity::Face), Just(Connectivity::Corner)],
            planar in any::<bool>(),
        ) {
            let shape = if planar { [9, 8, 1] } else { [9, 8, 6] };
            let on = &on[..shape.iter().product()];
            let labels = Labels::U8(on.iter().map(|&v| u8::from(v)).collect());
            let c = Components::of_label(&labels, 1, shape, connectivity)
                .dilated(shape, iterations, connectivity);
            let dense = dense_dilation(shape, on, iterations);
            prop_assert_eq!(c.voxels().to_vec(), flood_fill(shape, &dense, connectivity));
        }

        #[test]
        fn equal_flood_fill(
            on in proptest::collection::vec(proptest::bool::weighted(0.3), 7 * 6 * 5),
            connectivity in prop_oneof![Just(Connectivity::Face), Just(Connectivity::Edge), Just(Connectivity::Corner)],
            planar in any::<bool>(),
        ) {
            let shape = if planar { [7, 6, 1] } else { [7, 6, 5] };
            let on = &on[..shape.iter().product()];
            let labels = Labels::U16(on.iter().map(|&v| v as u16 * 300).collect());
            let c = Components::of_label(&labels, 300, shape, connectivity);
            prop_assert_eq!(c.voxels().to_vec(), flood_fill(shape, on, connectivity));
        }
    }
}
