//! An [`ndarray`] interface for programs that hold label images as arrays:
//! score a prediction array against a reference array, and turn label volumes
//! into arrays and back.
//!
//! Arrays are indexed `[x, y, z]`, like [`Grid::shape`] and nibabel's
//! `get_fdata()`: `array.dim() == (nx, ny, nz)`, with `nz == 1` for a 2D image.
//! Any memory layout is accepted (transposed and sliced views included); the
//! engine stores x fastest, so a column-major (Fortran-order) array is copied
//! in one run.
//!
//! ```
//! use ndarray::{Array3, s};
//! use segwatch_engine::arrays::evaluate;
//! use segwatch_engine::metrics::Settings;
//! use segwatch_engine::volume::Grid;
//!
//! // A 4×4×4 cube of label 1 on each side, the reference's one voxel further along x.
//! let mut pred = Array3::<u8>::zeros((10, 10, 10));
//! let mut reference = Array3::<u8>::zeros((10, 10, 10));
//! pred.slice_mut(s![2..6, 2..6, 2..6]).fill(1);
//! reference.slice_mut(s![3..7, 2..6, 2..6]).fill(1);
//! // Voxels of 1 × 1 × 2 mm.
//! let grid = Grid::axis_aligned([10, 10, 10], [1.0, 1.0, 2.0], 3);
//!
//! let structures = evaluate(pred.view(), reference.view(), &grid, &Settings::default())?;
//! assert_eq!(structures.len(), 1);
//! let cube = &structures[0];
//! assert_eq!(cube.label, Some(1));
//! // |A| = |B| = 4·4·4 = 64 voxels and |A ∩ B| = 3·4·4 = 48:
//! // Dice = 2·|A ∩ B| / (|A| + |B|) = 96 / 128 = 0.75.
//! assert_eq!((cube.pred_voxels, cube.ref_voxels, cube.tp), (64, 64, 48));
//! assert_eq!(cube.dice, 0.75);
//! // 64 voxels of 2 mm³ are 128 mm³ = 0.128 mL; the faces lie 1 mm apart along x.
//! assert!((cube.pred_volume_ml - 0.128).abs() < 1e-12);
//! assert_eq!(cube.hd_mm, 1.0);
//! # Ok::<(), segwatch_engine::arrays::ArrayError>(())
//! ```

use ndarray::{Array3, ArrayView3, ShapeBuilder};

use crate::metrics::pairing::{self, PairingError, Request};
use crate::metrics::{Settings, StructureMetrics};
use crate::volume::{Grid, LabelVolume, Labels, LengthMismatch, Segmentation};

/// A voxel label type the engine stores: `u8` or `u16` (sealed).
pub trait Label: Copy + sealed::Sealed {
    /// The engine's labels from values in its voxel order (x fastest).
    fn into_labels(values: Vec<Self>) -> Labels;
}

impl Label for u8 {
    fn into_labels(values: Vec<u8>) -> Labels {
        Labels::U8(values)
    }
}

impl Label for u16 {
    fn into_labels(values: Vec<u16>) -> Labels {
        Labels::U16(values)
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
}

/// An array whose shape is not its grid's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("array of shape {array:?} for a grid of shape {grid:?} (both [x, y, z])")]
pub struct ShapeMismatch {
    /// The array's `dim()`, as `[x, y, z]`.
    pub array: [usize; 3],
    /// The grid's [`Grid::shape`].
    pub grid: [usize; 3],
}

/// Why two arrays could not be scored.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArrayError {
    /// The prediction array does not have the grid's shape.
    #[error("prediction: {0}")]
    Prediction(ShapeMismatch),
    /// The reference array does not have the grid's shape.
    #[error("reference: {0}")]
    Reference(ShapeMismatch),
    /// The engine refused the pair: a singular grid, or a label the request's
    /// schema rejects.
    #[error(transparent)]
    Pairing(#[from] PairingError),
}

impl LabelVolume {
    /// The label volume of an array indexed `[x, y, z]` on `grid`, whose shape
    /// it must have. The labels are copied into the engine's x-fastest order.
    pub fn from_array<L: Label>(
        labels: ArrayView3<'_, L>,
        grid: Grid,
    ) -> Result<LabelVolume, ShapeMismatch> {
        let array = <[usize; 3]>::from(labels.dim());
        if array != grid.shape {
            return Err(ShapeMismatch {
                array,
                grid: grid.shape,
            });
        }
        // Reversing the axes makes x the fastest-varying index of the iteration.
        let values = labels.t().iter().copied().collect();
        Ok(LabelVolume {
            grid,
            labels: L::into_labels(values),
        })
    }

    /// The labels as a column-major array indexed `[x, y, z]` (shape
    /// [`Grid::shape`]), widened to `u16`. Fails only when `labels` does not
    /// hold one label per voxel of `grid`.
    pub fn to_array(&self) -> Result<Array3<u16>, LengthMismatch> {
        let values: Vec<u16> = match &self.labels {
            Labels::U8(v) => v.iter().map(|&l| u16::from(l)).collect(),
            Labels::U16(v) => v.clone(),
        };
        let mismatch = LengthMismatch {
            voxels: values.len(),
            expected: self.grid.len(),
        };
        Array3::from_shape_vec(self.grid.shape.f(), values).map_err(|_| mismatch)
    }
}

/// Scores every non-zero label present in either array, ascending, with
/// `settings` (surface mode and NSD tolerance). Both arrays are indexed
/// `[x, y, z]` on `grid` and must have its shape.
pub fn evaluate<L: Label>(
    pred: ArrayView3<'_, L>,
    reference: ArrayView3<'_, L>,
    grid: &Grid,
    settings: &Settings,
) -> Result<Vec<StructureMetrics>, ArrayError> {
    let request = Request {
        settings: *settings,
        ..Request::default()
    };
    evaluate_request(pred, reference, grid, &request)
}

/// As [`evaluate`], for a full [`Request`]: the labels to score (absent ones
/// included), or a schema naming them and setting their tolerances.
pub fn evaluate_request<L: Label>(
    pred: ArrayView3<'_, L>,
    reference: ArrayView3<'_, L>,
    grid: &Grid,
    request: &Request<'_>,
) -> Result<Vec<StructureMetrics>, ArrayError> {
    let pred = LabelVolume::from_array(pred, grid.clone()).map_err(ArrayError::Prediction)?;
    let reference =
        LabelVolume::from_array(reference, grid.clone()).map_err(ArrayError::Reference)?;
    let evaluation = pairing::evaluate(
        &Segmentation::LabelMap(pred),
        &Segmentation::LabelMap(reference),
        request,
    )?;
    Ok(evaluation.structures)
}

#[cfg(test)]
mod tests {
    use ndarray::{Array3, ShapeBuilder, s};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::metrics::{Empty, SurfaceMode};

    const SHAPE: [usize; 3] = [9, 7, 5];

    fn grid() -> Grid {
        Grid::axis_aligned(SHAPE, [0.8, 1.1, 2.5], 3)
    }

    /// Blocky random labels 0–3 (runs of two voxels along x), so structures
    /// have both interiors and surfaces.
    fn random(seed: u64) -> Array3<u8> {
        let mut rng = StdRng::seed_from_u64(seed);
        let [nx, ny, nz] = SHAPE;
        let mut a = Array3::zeros((nx, ny, nz));
        for z in 0..nz {
            for y in 0..ny {
                for x in (0..nx).step_by(2) {
                    let label = rng.random_range(0..4u8);
                    a.slice_mut(s![x..(x + 2).min(nx), y, z]).fill(label);
                }
            }
        }
        a
    }

    /// The engine's own path: labels laid out x fastest by hand.
    fn engine_volume<L: Copy>(a: &Array3<L>, wrap: fn(Vec<L>) -> Labels) -> LabelVolume {
        let [nx, ny, nz] = SHAPE;
        let mut values = Vec::new();
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    values.push(a[[x, y, z]]);
                }
            }
        }
        LabelVolume::new(grid(), wrap(values)).unwrap()
    }

    fn engine_path(
        pred: LabelVolume,
        reference: LabelVolume,
        settings: Settings,
    ) -> Vec<StructureMetrics> {
        let request = Request {
            settings,
            ..Request::default()
        };
        pairing::evaluate(
            &Segmentation::LabelMap(pred),
            &Segmentation::LabelMap(reference),
            &request,
        )
        .unwrap()
        .structures
    }

    #[test]
    fn arrays_score_as_label_volumes_do() {
        let (pred, reference) = (random(1), random(2));
        for surface in [SurfaceMode::Voxel, SurfaceMode::Surfel] {
            let settings = Settings {
                surface,
                tolerance_mm: 1.5,
            };
            let expected = engine_path(
                engine_volume(&pred, Labels::U8),
                engine_volume(&reference, Labels::U8),
                settings,
            );
            assert_eq!(
                expected.iter().map(|s| s.label).collect::<Vec<_>>(),
                [Some(1), Some(2), Some(3)]
            );
            let got = evaluate(pred.view(), reference.view(), &grid(), &settings).unwrap();
            assert_eq!(got, expected);

            // The same labels as u16.
            let (pred16, reference16) = (pred.mapv(u16::from), reference.mapv(u16::from));
            let expected16 = engine_path(
                engine_volume(&pred16, Labels::U16),
                engine_volume(&reference16, Labels::U16),
                settings,
            );
            let got16 = evaluate(pred16.view(), reference16.view(), &grid(), &settings).unwrap();
            assert_eq!(got16, expected16);
            assert_eq!(got16, got);
        }
    }

    #[test]
    fn any_memory_layout_gives_the_same_answer() {
        let (pred, reference) = (random(3), random(4));
        let settings = Settings::default();
        let expected = evaluate(pred.view(), reference.view(), &grid(), &settings).unwrap();
        assert!(pred.is_standard_layout());

        // Column-major (Fortran order), as nibabel hands NIfTI data over.
        let fortran = |a: &Array3<u8>| {
            let mut f = Array3::zeros(a.dim().f());
            f.assign(a);
            f
        };
        let (pf, rf) = (fortran(&pred), fortran(&reference));
        assert!(!pf.is_standard_layout() && pf.t().is_standard_layout());
        assert_eq!(
            evaluate(pf.view(), rf.view(), &grid(), &settings).unwrap(),
            expected
        );

        // A transposed view of a [z, y, x] array.
        let (pz, rz) = (
            pred.t().as_standard_layout().into_owned(),
            reference.t().as_standard_layout().into_owned(),
        );
        assert_eq!(pz.dim(), (SHAPE[2], SHAPE[1], SHAPE[0]));
        assert_eq!(
            evaluate(pz.t(), rz.t(), &grid(), &settings).unwrap(),
            expected
        );

        // A strided slice of a larger array.
        let embed = |a: &Array3<u8>| {
            let mut big = Array3::from_elem((2 * SHAPE[0], SHAPE[1] + 3, SHAPE[2]), 7u8);
            big.slice_mut(s![1..;2, 2..2 + SHAPE[1], ..]).assign(a);
            big
        };
        let (pb, rb) = (embed(&pred), embed(&reference));
        let (pv, rv) = (
            pb.slice(s![1..;2, 2..2 + SHAPE[1], ..]),
            rb.slice(s![1..;2, 2..2 + SHAPE[1], ..]),
        );
        assert!(!pv.is_standard_layout());
        assert_eq!(evaluate(pv, rv, &grid(), &settings).unwrap(), expected);
    }

    #[test]
    fn shapes_must_match_the_grid() {
        let good = Array3::<u8>::zeros((9, 7, 5));
        let wrong = Array3::<u8>::zeros((5, 7, 9));
        let settings = Settings::default();
        let mismatch = ShapeMismatch {
            array: [5, 7, 9],
            grid: [9, 7, 5],
        };
        assert_eq!(
            evaluate(wrong.view(), good.view(), &grid(), &settings),
            Err(ArrayError::Prediction(mismatch))
        );
        let err = evaluate(good.view(), wrong.view(), &grid(), &settings).unwrap_err();
        assert_eq!(err, ArrayError::Reference(mismatch));
        assert_eq!(
            err.to_string(),
            "reference: array of shape [5, 7, 9] for a grid of shape [9, 7, 5] (both [x, y, z])"
        );
        assert_eq!(LabelVolume::from_array(wrong.view(), grid()), Err(mismatch));
    }

    #[test]
    fn volumes_and_arrays_round_trip_in_x_y_z_order() {
        let a = random(5);
        let volume = LabelVolume::from_array(a.view(), grid()).unwrap();
        assert_eq!(volume, engine_volume(&a, Labels::U8));
        let [nx, ny, _] = SHAPE;
        let (x, y, z) = (6, 2, 3);
        assert_eq!(
            volume.labels.get(x + nx * (y + ny * z)),
            u16::from(a[[x, y, z]])
        );
        let back = volume.to_array().unwrap();
        assert_eq!(back, a.mapv(u16::from));
        assert!(back.t().is_standard_layout());

        let broken = LabelVolume {
            labels: Labels::U8(vec![0; 3]),
            ..volume
        };
        assert_eq!(
            broken.to_array(),
            Err(LengthMismatch {
                voxels: 3,
                expected: 315
            })
        );
    }

    #[test]
    fn requested_labels_are_scored_even_when_absent() {
        let a = random(6);
        let labels = [2, 9];
        let request = Request {
            labels: Some(&labels),
            ..Request::default()
        };
        let got = evaluate_request(a.view(), a.view(), &grid(), &request).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].label, got[0].dice), (Some(2), 1.0));
        assert_eq!((got[1].label, got[1].empty), (Some(9), Empty::Both));
    }
}
