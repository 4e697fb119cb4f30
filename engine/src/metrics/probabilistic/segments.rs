//! Probabilities of a DICOM SEG's FRACTIONAL PROBABILITY segments against the
//! reference a pair was scored with.

use super::{Probabilistic, ProbabilityError, SoftTally};
use crate::metrics::pairing::Evaluation;
use crate::volume::{BoxMask, FractionMap, Grid, GridMap, Segmentation};

/// Where the reference keeps one structure, on the evaluation's grid.
enum Reference<'a> {
    Label(&'a crate::volume::Labels, u16),
    Mask(BoxMask),
    Absent,
}

impl Reference<'_> {
    fn contains(&self, grid: &Grid, p: [usize; 3]) -> bool {
        match self {
            Reference::Label(labels, label) => {
                labels.get(p[0] + grid.shape[0] * (p[1] + grid.shape[1] * p[2])) == *label
            }
            Reference::Mask(mask) => mask.contains(p),
            Reference::Absent => false,
        }
    }
}

/// Scores, for each structure of `evaluation`, the probability map of the
/// prediction segment with its code, when the prediction is a SEG whose
/// segment keeps one (FRACTIONAL PROBABILITY); None for the other structures.
pub fn score_segments(
    pred: &Segmentation,
    reference: &Segmentation,
    evaluation: &Evaluation,
    bins: usize,
) -> Result<Vec<Option<Probabilistic>>, ProbabilityError> {
    let (pred_grid, segments) = match pred {
        Segmentation::Segments { grid, segments }
            if segments.iter().any(|seg| seg.probabilities.is_some()) =>
        {
            (grid, segments)
        }
        _ => return Ok(vec![None; evaluation.structures.len()]),
    };
    let grid = &evaluation.grid;
    let map = pred_grid.map_onto(grid)?;
    evaluation
        .structures
        .iter()
        .map(|s| {
            let Some(fractions) = segments
                .iter()
                .find(|seg| Some(&seg.code) == s.code.as_ref())
                .and_then(|seg| seg.probabilities.as_ref())
            else {
                return Ok(None);
            };
            let truth = match reference {
                Segmentation::LabelMap(v) => match s.label {
                    Some(label) => Reference::Label(&v.labels, label),
                    None => Reference::Absent,
                },
                Segmentation::Segments {
                    grid: ref_grid,
                    segments,
                } => match segments
                    .iter()
                    .find(|seg| Some(&seg.code) == s.code.as_ref())
                {
                    Some(seg) => Reference::Mask(
                        seg.mask
                            .remapped(&ref_grid.map_onto(grid)?, grid.shape)
                            .ok_or_else(|| outside("reference segment"))?,
                    ),
                    None => Reference::Absent,
                },
            };
            let mut tally = SoftTally::new(bins)?;
            feed(&mut tally, fractions, &map, grid, &truth)?;
            tally.finish(grid.len() as u64, s.ref_voxels).map(Some)
        })
        .collect()
}

/// Feeds the non-zero stored values of a segment, moved onto `grid` by `map`.
fn feed(
    tally: &mut SoftTally,
    fractions: &FractionMap,
    map: &GridMap,
    grid: &Grid,
    truth: &Reference,
) -> Result<(), ProbabilityError> {
    let (min, extent) = (fractions.bbox.min, fractions.bbox.extent());
    for (i, &v) in fractions.values.iter().enumerate() {
        if v == 0 {
            continue;
        }
        let local = [
            i % extent[0],
            (i / extent[0]) % extent[1],
            i / (extent[0] * extent[1]),
        ];
        let target = map.target_index([0, 1, 2].map(|a| min[a] + local[a]));
        let inside = (0..3).all(|a| target[a] >= 0 && (target[a] as usize) < grid.shape[a]);
        if !inside {
            return Err(outside("prediction segment"));
        }
        let p = target.map(|t| t as usize);
        tally.add(
            f64::from(v) / f64::from(fractions.max),
            truth.contains(grid, p),
        )?;
    }
    Ok(())
}

fn outside(what: &str) -> ProbabilityError {
    ProbabilityError::Reference(format!(
        "a {what} lies outside the grid the pair was scored on"
    ))
}
