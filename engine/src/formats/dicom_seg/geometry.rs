//! The slice grid of a SEG's frames: orientation, in-plane position and slice
//! spacing checked against each other, every frame placed on one slice.

use super::*;
use crate::volume::{cross, dot};

impl Seg<'_> {
    /// Places frames on a regular slice lattice and builds the grid.
    pub(super) fn geometry(&self) -> Result<(Grid, Vec<usize>), FormatError> {
        let first = self
            .frames
            .first()
            .ok_or_else(|| invalid("the SEG has no frames"))?;
        let o = first.orientation;
        for (i, f) in self.frames.iter().enumerate() {
            if (0..6).any(|k| (f.orientation[k] - o[k]).abs() > ORIENTATION_TOLERANCE) {
                return Err(FormatError::Geometry(format!(
                    "frame {} has orientation {:?}, frame 1 {:?}: mixed orientations",
                    i + 1,
                    f.orientation,
                    o
                )));
            }
        }
        let row_cosine = [o[0], o[1], o[2]];
        let column_cosine = [o[3], o[4], o[5]];
        if let Some(why) = orientation_problem(row_cosine, column_cosine) {
            return Err(FormatError::Geometry(format!(
                "ImageOrientationPatient {o:?}: {why}"
            )));
        }
        let normal = cross(row_cosine, column_cosine);
        let along = dot;
        for (i, f) in self.frames.iter().enumerate() {
            let drift = [row_cosine, column_cosine]
                .map(|axis| along(f.position, axis) - along(first.position, axis));
            if drift.iter().any(|d| d.abs() > POSITION_TOLERANCE_MM) {
                return Err(FormatError::Geometry(format!(
                    "frame {} is shifted by {:.4} mm within the image plane",
                    i + 1,
                    drift[0].hypot(drift[1])
                )));
            }
        }
        let depths: Vec<f64> = self
            .frames
            .iter()
            .map(|f| along(f.position, normal))
            .collect();
        let lowest = depths.iter().copied().fold(f64::INFINITY, f64::min);
        let mut distinct: Vec<f64> = depths.clone();
        distinct.sort_by(f64::total_cmp);
        distinct.dedup_by(|a, b| (*a - *b).abs() <= POSITION_TOLERANCE_MM);
        let spacing = match self.spacing_between_slices {
            Some(s) => s,
            None => distinct
                .windows(2)
                .map(|w| w[1] - w[0])
                .fold(f64::INFINITY, f64::min)
                .min(f64::INFINITY),
        };
        let spacing = if spacing.is_finite() {
            spacing
        } else {
            self.slice_thickness.unwrap_or(1.0)
        };
        if !(spacing.is_finite() && spacing >= MIN_SLICE_SPACING_MM) {
            return Err(FormatError::Geometry(format!(
                "slice spacing {spacing} mm is not usable"
            )));
        }
        // Checked in floating point before any index is formed, so far-apart frames
        // cannot overflow the slice count.
        let plane = (self.rows * self.columns) as f64;
        let span = depths
            .iter()
            .fold(0.0f64, |m, d| m.max((d - lowest) / spacing))
            .round()
            + 1.0;
        if !span.is_finite() || plane * span > self.limits.max_voxels as f64 {
            return Err(FormatError::TooLarge(format!(
                "the frames span {span} slices of {} × {}, more than the limit of {} voxels",
                self.rows, self.columns, self.limits.max_voxels
            )));
        }
        let mut slices = Vec::with_capacity(depths.len());
        for (i, d) in depths.iter().enumerate() {
            let steps = (d - lowest) / spacing;
            if (steps - steps.round()).abs() * spacing > POSITION_TOLERANCE_MM.max(1e-3 * spacing) {
                return Err(FormatError::Geometry(format!(
                    "frame {} lies {:.4} mm from the slice lattice of spacing {spacing} mm: inconsistent slice spacing",
                    i + 1,
                    (steps - steps.round()).abs() * spacing
                )));
            }
            slices.push(steps.round() as usize);
        }
        let slice_count = span as usize;
        let origin_lps: [f64; 3] =
            std::array::from_fn(|k| first.position[k] - (depths[0] - lowest) * normal[k]);
        // LPS to RAS: negate the first two world coordinates.
        let ras = |v: [f64; 3]| [-v[0], -v[1], v[2]];
        let (dx, dy) = (self.pixel_spacing[1], self.pixel_spacing[0]);
        let columns = [
            ras(row_cosine).map(|c| c * dx),
            ras(column_cosine).map(|c| c * dy),
            ras(normal).map(|c| c * spacing),
        ];
        let origin = ras(origin_lps);
        let affine =
            std::array::from_fn(|r| [columns[0][r], columns[1][r], columns[2][r], origin[r]]);
        let grid = Grid {
            shape: [self.columns, self.rows, slice_count],
            spacing: [dx, dy, spacing],
            affine,
            dims: 3,
        };
        if let Some(why) = grid.degeneracy() {
            return Err(FormatError::Geometry(format!(
                "PixelSpacing and slice spacing give an unusable grid: {why}"
            )));
        }
        Ok((grid, slices))
    }
}

/// Why a row and a column direction cannot orient an image plane: they must be
/// unit vectors (within 1 %) and orthogonal (within 1 %).
fn orientation_problem(row: [f64; 3], column: [f64; 3]) -> Option<&'static str> {
    let unit = |v: [f64; 3]| (dot(v, v).sqrt() - 1.0).abs() <= 0.01;
    if row.iter().chain(&column).any(|v| !v.is_finite()) {
        Some("not finite")
    } else if !unit(row) || !unit(column) {
        Some("the row and column directions must be unit vectors")
    } else if dot(row, column).abs() > 0.01 {
        Some("the row and column directions must be orthogonal")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_or_skewed_orientations_are_refused() {
        assert_eq!(orientation_problem([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]), None);
        assert!(
            orientation_problem([0.0; 3], [0.0; 3])
                .unwrap()
                .contains("unit")
        );
        assert!(
            orientation_problem([1.0, 0.0, 0.0], [0.6, 0.8, 0.0])
                .unwrap()
                .contains("orthogonal")
        );
        assert!(orientation_problem([f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0]).is_some());
    }
}
