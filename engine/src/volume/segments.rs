//! Segmentations as decoded from files: a label map, or coded segments that may
//! overlap (DICOM SEG).

use super::{BoundingBox, BoxMask, Grid, LabelVolume};

/// A decoded segmentation file.
#[derive(Debug, Clone, PartialEq)]
pub enum Segmentation {
    /// One label per voxel (NIfTI).
    LabelMap(LabelVolume),
    /// Coded segments, each its own mask (DICOM SEG).
    Segments {
        /// The grid every segment's mask is indexed on.
        grid: Grid,
        /// The segments, in SegmentSequence order, background segments left out.
        segments: Vec<Segment>,
    },
}

/// How a segmentation is stored, without its voxels: enough to tell whether it
/// can be compared with another.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "grid", rename_all = "snake_case")]
pub enum Layout {
    /// A label map ([`Segmentation::LabelMap`]) on this grid.
    LabelMap(Grid),
    /// Coded segments ([`Segmentation::Segments`]) on this grid.
    Segments(Grid),
}

impl Segmentation {
    /// The layout of this segmentation.
    pub fn layout(&self) -> Layout {
        match self {
            Segmentation::LabelMap(v) => Layout::LabelMap(v.grid.clone()),
            Segmentation::Segments { grid, .. } => Layout::Segments(grid.clone()),
        }
    }

    /// Keys of the structures it holds, sorted and distinct: `label_N` for each
    /// non-zero label of a label map, the code of each segment. They bound how
    /// many structures (hence metric series) a model version gathers.
    pub fn structure_keys(&self) -> Vec<String> {
        match self {
            Segmentation::LabelMap(v) => {
                let mut seen = vec![false; 1 << 16];
                let mut mark = |label: usize| seen[label] = true;
                match &v.labels {
                    super::Labels::U8(l) => l.iter().for_each(|&x| mark(x as usize)),
                    super::Labels::U16(l) => l.iter().for_each(|&x| mark(x as usize)),
                }
                (1..seen.len())
                    .filter(|&label| seen[label])
                    .map(|label| format!("label_{label}"))
                    .collect()
            }
            Segmentation::Segments { segments, .. } => {
                let codes: std::collections::BTreeSet<&str> =
                    segments.iter().map(|s| s.code.as_str()).collect();
                codes.into_iter().map(str::to_owned).collect()
            }
        }
    }

    /// The grid the segmentation is stored on.
    pub fn grid(&self) -> &Grid {
        match self {
            Segmentation::LabelMap(v) => &v.grid,
            Segmentation::Segments { grid, .. } => grid,
        }
    }
}

/// One segment: its identity and its voxels on the SEG's grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// SegmentNumber: the segment's identifier, unique within its SEG.
    pub number: u16,
    /// `SCHEME:VALUE` of the property type, with `^SCHEME:VALUE` of its modifier.
    pub code: String,
    /// SegmentLabel.
    pub name: Option<String>,
    /// AUTOMATIC, SEMIAUTOMATIC or MANUAL.
    pub algorithm_type: Option<String>,
    /// Voxels in the segment (FRACTIONAL: probability ≥ 0.5).
    pub mask: BoxMask,
    /// FRACTIONAL with SegmentationFractionalType PROBABILITY only: the stored
    /// values, kept for probabilistic metrics (None when all zero).
    pub probabilities: Option<FractionMap>,
}

/// Stored FRACTIONAL values over the box of a segment's non-zero voxels;
/// probability = value / max.
#[derive(Debug, Clone, PartialEq)]
pub struct FractionMap {
    /// The box of the segment's non-zero stored values, on the SEG's grid.
    pub bbox: BoundingBox,
    /// One stored value per voxel of `bbox`, x fastest, capped at 255.
    pub values: Vec<u8>,
    /// MaximumFractionalValue (255 when absent): the value meaning probability 1.
    pub max: u16,
}

impl FractionMap {
    /// Stores the value at voxel `p`, which must lie in the map's box.
    pub fn set(&mut self, p: [usize; 3], value: u8) {
        let e = self.bbox.extent();
        let local = [0, 1, 2].map(|a| p[a] - self.bbox.min[a]);
        self.values[local[0] + e[0] * (local[1] + e[1] * local[2])] = value;
    }
}
