//! Voxel counts and bounding boxes of every label in one pass over both volumes.

use std::ops::{BitOr, BitXor};

use rayon::prelude::*;

use crate::volume::{BoundingBox, Labels};

/// Counts and extents of one label in a prediction/reference pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LabelOverlap {
    /// Voxels labelled in the prediction.
    pub pred_voxels: u64,
    /// Voxels labelled in the reference.
    pub ref_voxels: u64,
    /// Voxels labelled in both.
    pub tp: u64,
    /// Where the label sits in the prediction.
    pub pred_box: Option<BoundingBox>,
    /// Where the label sits in the reference.
    pub ref_box: Option<BoundingBox>,
}

/// Per-label overlap of two label maps on the same grid.
#[derive(Debug, Clone)]
pub struct Overlap {
    by_label: Vec<LabelOverlap>,
}

impl Overlap {
    /// Counts for one label (all zero when absent from both, and for background).
    pub fn get(&self, label: u16) -> LabelOverlap {
        self.by_label
            .get(label as usize)
            .copied()
            .unwrap_or_default()
    }

    /// Non-zero labels present in either volume, ascending.
    pub fn present_labels(&self) -> Vec<u16> {
        (1..self.by_label.len())
            .filter(|&l| {
                let o = &self.by_label[l];
                o.pred_voxels > 0 || o.ref_voxels > 0
            })
            .map(|l| l as u16)
            .collect()
    }
}

/// A voxel label type the counting loop is specialised for.
pub trait LabelValue:
    Copy + Eq + Default + Send + Sync + BitOr<Output = Self> + BitXor<Output = Self>
{
    /// Number of distinct values.
    const COUNT: usize;
    /// The value as an index into per-label tables, below `COUNT`.
    fn index(self) -> usize;
}

impl LabelValue for u8 {
    const COUNT: usize = 1 << 8;
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

impl LabelValue for u16 {
    const COUNT: usize = 1 << 16;
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

/// Voxels compared per step of the run-skipping fast path.
const RUN: usize = 16;
/// Voxels tested at once for background on both sides.
const BLOCK: usize = 64;

/// Box extents packed as min/max per axis while counting.
#[derive(Clone, Copy)]
struct Extent {
    min: [u32; 3],
    max: [u32; 3],
}

impl Extent {
    const EMPTY: Extent = Extent {
        min: [u32::MAX; 3],
        max: [0; 3],
    };

    #[inline(always)]
    fn add(&mut self, x0: u32, x1: u32, y: u32, z: u32) {
        self.min[0] = self.min[0].min(x0);
        self.max[0] = self.max[0].max(x1);
        self.min[1] = self.min[1].min(y);
        self.max[1] = self.max[1].max(y);
        self.min[2] = self.min[2].min(z);
        self.max[2] = self.max[2].max(z);
    }

    fn merge(&mut self, other: &Extent) {
        for a in 0..3 {
            self.min[a] = self.min[a].min(other.min[a]);
            self.max[a] = self.max[a].max(other.max[a]);
        }
    }

    fn to_box(self) -> Option<BoundingBox> {
        (self.min[0] <= self.max[0]).then(|| BoundingBox {
            min: self.min.map(|v| v as usize),
            max: self.max.map(|v| v as usize),
        })
    }
}

/// Running totals: agreeing voxels and each side's disagreeing voxels, per label.
struct Tally {
    both: Vec<u64>,
    pred_only: Vec<u64>,
    ref_only: Vec<u64>,
    pred_extent: Vec<Extent>,
    ref_extent: Vec<Extent>,
}

impl Tally {
    fn new(count: usize) -> Self {
        Tally {
            both: vec![0; count],
            pred_only: vec![0; count],
            ref_only: vec![0; count],
            pred_extent: vec![Extent::EMPTY; count],
            ref_extent: vec![Extent::EMPTY; count],
        }
    }

    /// Records `n` voxels from x0 on along row (y, z), labelled `p` and `r`.
    #[inline(always)]
    fn add(&mut self, p: usize, r: usize, n: u32, x0: u32, [y, z]: [u32; 2]) {
        if p == r {
            self.both[p] += n as u64;
        } else {
            self.pred_only[p] += n as u64;
            self.ref_only[r] += n as u64;
        }
        let x1 = x0 + n - 1;
        if p != 0 {
            self.pred_extent[p].add(x0, x1, y, z);
        }
        if r != 0 {
            self.ref_extent[r].add(x0, x1, y, z);
        }
    }

    fn merge(mut self, other: Tally) -> Tally {
        for l in 0..self.both.len() {
            self.both[l] += other.both[l];
            self.pred_only[l] += other.pred_only[l];
            self.ref_only[l] += other.ref_only[l];
            self.pred_extent[l].merge(&other.pred_extent[l]);
            self.ref_extent[l].merge(&other.ref_extent[l]);
        }
        self
    }

    /// Background (label 0) is never a structure and is not counted.
    fn finish(self) -> Overlap {
        let mut by_label: Vec<LabelOverlap> = (0..self.both.len())
            .map(|l| LabelOverlap {
                pred_voxels: self.both[l] + self.pred_only[l],
                ref_voxels: self.both[l] + self.ref_only[l],
                tp: self.both[l],
                pred_box: self.pred_extent[l].to_box(),
                ref_box: self.ref_extent[l].to_box(),
            })
            .collect();
        by_label[0] = LabelOverlap::default();
        Overlap { by_label }
    }

    /// Counts one row. Blocks of BLOCK background voxels on both sides cost one
    /// vectorised test; runs of RUN voxels with one label on each side are
    /// recorded at once; only mixed runs go voxel by voxel.
    #[inline(always)]
    fn add_row<P: LabelValue, R: LabelValue>(
        &mut self,
        pred: &[P],
        reference: &[R],
        y: u32,
        z: u32,
    ) {
        let zero = |p: &[P], r: &[R]| {
            p.iter().fold(P::default(), |acc, &v| acc | v) == P::default()
                && r.iter().fold(R::default(), |acc, &v| acc | v) == R::default()
        };
        let mut x = 0usize;
        while x + RUN <= pred.len() {
            if x + BLOCK <= pred.len() && zero(&pred[x..x + BLOCK], &reference[x..x + BLOCK]) {
                x += BLOCK;
                continue;
            }
            let end = (x + BLOCK).min(pred.len() - (pred.len() - x) % RUN);
            for (p, r) in pred[x..end]
                .chunks_exact(RUN)
                .zip(reference[x..end].chunks_exact(RUN))
            {
                let (p0, r0) = (p[0], r[0]);
                let p_mixed = p.iter().fold(P::default(), |acc, &v| acc | (v ^ p0));
                let r_mixed = r.iter().fold(R::default(), |acc, &v| acc | (v ^ r0));
                if p_mixed == P::default() && r_mixed == R::default() {
                    if p0 != P::default() || r0 != R::default() {
                        self.add(p0.index(), r0.index(), RUN as u32, x as u32, [y, z]);
                    }
                } else {
                    self.add_voxels(p, r, x, y, z);
                }
                x += RUN;
            }
        }
        self.add_voxels(&pred[x..], &reference[x..], x, y, z);
    }

    fn add_voxels<P: LabelValue, R: LabelValue>(
        &mut self,
        pred: &[P],
        reference: &[R],
        x0: usize,
        y: u32,
        z: u32,
    ) {
        for (i, (&p, &r)) in pred.iter().zip(reference).enumerate() {
            if p != P::default() || r != R::default() {
                self.add(p.index(), r.index(), 1, (x0 + i) as u32, [y, z]);
            }
        }
    }
}

/// Counts rows `first_row..` of the slices given (whole rows of length `nx`).
fn tally_rows<P: LabelValue, R: LabelValue>(
    tally: &mut Tally,
    pred: &[P],
    reference: &[R],
    nx: usize,
    ny: usize,
    first_row: usize,
) {
    for (i, (p, r)) in pred
        .chunks_exact(nx)
        .zip(reference.chunks_exact(nx))
        .enumerate()
    {
        let row = first_row + i;
        tally.add_row(p, r, (row % ny) as u32, (row / ny) as u32);
    }
}

/// Rows handed to one parallel task: enough work to amortise a per-task tally.
const ROWS_PER_TASK_MIN_VOXELS: usize = 1 << 21;

fn overlap_typed<P: LabelValue, R: LabelValue>(
    pred: &[P],
    reference: &[R],
    shape: [usize; 3],
    parallel: bool,
) -> Overlap {
    let [nx, ny, _] = shape;
    let new_tally = || Tally::new(P::COUNT.max(R::COUNT));
    if nx == 0 || pred.is_empty() {
        return new_tally().finish();
    }
    if !parallel {
        let mut tally = new_tally();
        tally_rows(&mut tally, pred, reference, nx, ny, 0);
        return tally.finish();
    }
    let rows_per_task = ROWS_PER_TASK_MIN_VOXELS.div_ceil(nx);
    let chunk = rows_per_task * nx;
    pred.par_chunks(chunk)
        .zip(reference.par_chunks(chunk))
        .enumerate()
        .fold(new_tally, |mut tally, (task, (p, r))| {
            tally_rows(&mut tally, p, r, nx, ny, task * rows_per_task);
            tally
        })
        .reduce_with(Tally::merge)
        .unwrap_or_else(new_tally)
        .finish()
}

/// Counts and boxes for every label, on the current rayon pool.
/// Both label arrays must have `shape[0] * shape[1] * shape[2]` voxels.
pub fn overlap(pred: &Labels, reference: &Labels, shape: [usize; 3]) -> Overlap {
    dispatch(pred, reference, shape, true)
}

/// Same as [`overlap`], on the calling thread only.
pub fn overlap_serial(pred: &Labels, reference: &Labels, shape: [usize; 3]) -> Overlap {
    dispatch(pred, reference, shape, false)
}

fn dispatch(pred: &Labels, reference: &Labels, shape: [usize; 3], parallel: bool) -> Overlap {
    match (pred, reference) {
        (Labels::U8(p), Labels::U8(r)) => overlap_typed(p, r, shape, parallel),
        (Labels::U8(p), Labels::U16(r)) => overlap_typed(p, r, shape, parallel),
        (Labels::U16(p), Labels::U8(r)) => overlap_typed(p, r, shape, parallel),
        (Labels::U16(p), Labels::U16(r)) => overlap_typed(p, r, shape, parallel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Straightforward per-label count, the reference the fast pass must equal.
    fn naive(pred: &Labels, reference: &Labels, shape: [usize; 3], label: u16) -> LabelOverlap {
        let mut o = LabelOverlap::default();
        for i in 0..pred.len() {
            let p = pred.get(i) == label;
            let r = reference.get(i) == label;
            let point = [
                i % shape[0],
                (i / shape[0]) % shape[1],
                i / (shape[0] * shape[1]),
            ];
            if p {
                o.pred_voxels += 1;
                o.pred_box = BoundingBox::union_opt(o.pred_box, Some(BoundingBox::point(point)));
            }
            if r {
                o.ref_voxels += 1;
                o.ref_box = BoundingBox::union_opt(o.ref_box, Some(BoundingBox::point(point)));
            }
            if p && r {
                o.tp += 1;
            }
        }
        o
    }

    fn volume(max_label: u16, wide: bool) -> impl Strategy<Value = ([usize; 3], Labels, Labels)> {
        (1usize..150, 1usize..5, 1usize..4).prop_flat_map(move |(nx, ny, nz)| {
            let n = nx * ny * nz;
            // Long runs, mostly background, make every fast path fire as well as
            // the slow one.
            let label = prop_oneof![3 => Just(0u16), 1 => 1..=max_label];
            let labels =
                prop::collection::vec((label, 1usize..90), 1..n + 1).prop_map(move |runs| {
                    runs.iter()
                        .flat_map(|&(l, len)| std::iter::repeat_n(l, len))
                        .chain(std::iter::repeat(0))
                        .take(n)
                        .collect::<Vec<u16>>()
                });
            (Just([nx, ny, nz]), labels.clone(), labels).prop_map(move |(shape, p, r)| {
                let pack = |v: Vec<u16>, wide: bool| {
                    if wide {
                        Labels::U16(v.into_iter().map(|l| l * 1000).collect())
                    } else {
                        Labels::U8(v.into_iter().map(|l| l as u8).collect())
                    }
                };
                (shape, pack(p, false), pack(r, wide))
            })
        })
    }

    proptest! {
        #[test]
        fn counts_and_boxes_equal_naive((shape, pred, reference) in volume(4, false)) {
            for result in [overlap(&pred, &reference, shape), overlap_serial(&pred, &reference, shape)] {
                prop_assert_eq!(result.get(0), LabelOverlap::default());
                for label in 1..=4 {
                    prop_assert_eq!(result.get(label), naive(&pred, &reference, shape, label));
                }
            }
        }

        #[test]
        fn mixed_widths_equal_naive((shape, pred, reference) in volume(3, true)) {
            let result = overlap(&pred, &reference, shape);
            for label in [1u16, 2, 3, 1000, 2000, 3000] {
                prop_assert_eq!(result.get(label), naive(&pred, &reference, shape, label));
            }
        }
    }

    #[test]
    fn large_volume_splits_across_tasks() {
        let shape = [300, 200, 90];
        let n = shape.iter().product::<usize>();
        let pred: Vec<u8> = (0..n).map(|i| ((i / 7) % 5) as u8).collect();
        let reference: Vec<u8> = (0..n).map(|i| ((i / 11) % 5) as u8).collect();
        let (p, r) = (Labels::U8(pred), Labels::U8(reference));
        let parallel = overlap(&p, &r, shape);
        for label in 0..5 {
            assert_eq!(
                parallel.get(label),
                overlap_serial(&p, &r, shape).get(label)
            );
        }
        assert_eq!(parallel.present_labels(), vec![1, 2, 3, 4]);
        assert_eq!(parallel.get(1), naive(&p, &r, shape, 1));
    }
}
