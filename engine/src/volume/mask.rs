//! Binary structures stored over their bounding box.

use super::{BoundingBox, GridMap};

/// A binary structure (one DICOM SEG segment, say) stored over its bounding box,
/// one byte per voxel (0 or 1), x fastest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BoxMask {
    bbox: Option<BoundingBox>,
    data: Vec<u8>,
    voxels: u64,
}

impl BoxMask {
    /// The mask of the given points (voxel indices; duplicates allowed).
    pub fn from_points(points: impl Iterator<Item = [usize; 3]> + Clone) -> BoxMask {
        let bbox = points
            .clone()
            .map(BoundingBox::point)
            .reduce(BoundingBox::union);
        let Some(bbox) = bbox else {
            return BoxMask::default();
        };
        let extent = bbox.extent();
        let mut data = vec![0u8; extent.iter().product()];
        for p in points {
            let local = [0, 1, 2].map(|a| p[a] - bbox.min[a]);
            data[local[0] + extent[0] * (local[1] + extent[1] * local[2])] = 1;
        }
        let voxels = data.iter().map(|&v| v as u64).sum();
        BoxMask {
            bbox: Some(bbox),
            data,
            voxels,
        }
    }

    /// An empty mask able to hold voxels within `bbox`.
    pub fn with_box(bbox: BoundingBox) -> BoxMask {
        BoxMask {
            bbox: Some(bbox),
            data: vec![0; bbox.extent().iter().product()],
            voxels: 0,
        }
    }

    /// Adds voxel `p`, which must lie in the mask's box.
    pub fn insert(&mut self, p: [usize; 3]) {
        let Some(b) = self.bbox else { return };
        let e = b.extent();
        let local = [0, 1, 2].map(|a| p[a] - b.min[a]);
        let cell = &mut self.data[local[0] + e[0] * (local[1] + e[1] * local[2])];
        self.voxels += (*cell == 0) as u64;
        *cell = 1;
    }

    /// Where the structure is; None when it is empty.
    pub fn bbox(&self) -> Option<BoundingBox> {
        self.bbox.filter(|_| self.voxels > 0)
    }

    /// Number of voxels in the structure.
    pub fn voxels(&self) -> u64 {
        self.voxels
    }

    /// Whether voxel `p` belongs to the structure.
    pub fn contains(&self, p: [usize; 3]) -> bool {
        let Some(b) = self.bbox else { return false };
        if (0..3).any(|a| p[a] < b.min[a] || p[a] > b.max[a]) {
            return false;
        }
        let e = b.extent();
        let local = [0, 1, 2].map(|a| p[a] - b.min[a]);
        self.data[local[0] + e[0] * (local[1] + e[1] * local[2])] != 0
    }

    /// The voxels of the structure, in storage order.
    pub fn points(&self) -> impl Iterator<Item = [usize; 3]> + Clone + '_ {
        let b = self.bbox.unwrap_or(BoundingBox::point([0; 3]));
        let e = b.extent();
        self.data
            .iter()
            .enumerate()
            .filter(|(_, v)| **v != 0)
            .map(move |(i, _)| {
                [
                    b.min[0] + i % e[0],
                    b.min[1] + (i / e[0]) % e[1],
                    b.min[2] + i / (e[0] * e[1]),
                ]
            })
    }

    /// The same structure on a target grid of `shape`, or None when `map` puts
    /// some of its voxels outside that grid.
    pub fn remapped(&self, map: &GridMap, shape: [usize; 3]) -> Option<BoxMask> {
        if let Some(b) = self.bbox {
            let (min, max) = map.map_box(b);
            if (0..3).any(|a| min[a] < 0 || max[a] >= shape[a] as i64) {
                return None;
            }
        }
        Some(BoxMask::from_points(
            self.points()
                .map(|p| map.target_index(p).map(|v| v as usize)),
        ))
    }
}
