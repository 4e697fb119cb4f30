//! A prediction's probability map at ingest: a float NIfTI with one channel
//! per structure, checked completely against the label map it came with
//! (sizes on the header before anything is allocated, then every value), and
//! kept de-identified for the worker to score.

use crate::formats::probability_nifti::{self, ProbabilitySink};
use crate::formats::{self, FormatError, Limits, deidentify};
use crate::metrics::probabilistic::ProbabilityError;
use crate::schema::Schema;
use crate::volume::{Grid, Segmentation};

/// Why a probability map sent with a prediction is refused.
#[derive(Debug, thiserror::Error)]
pub enum ProbabilitiesError {
    #[error(
        "probabilities accompany a NIfTI label map; a DICOM SEG keeps its own as FRACTIONAL PROBABILITY segments"
    )]
    NotLabelMap,
    #[error("the probabilities part: {0}")]
    Invalid(#[from] ProbabilityError),
}

impl From<FormatError> for ProbabilitiesError {
    fn from(err: FormatError) -> Self {
        ProbabilitiesError::Invalid(ProbabilityError::Format(err))
    }
}

/// What an upload takes of the compute pool's budget: its label voxels, and
/// the inflated bytes of its probabilities (every channel), which ingest holds
/// whole while checking and de-identifying them.
pub fn admitted_voxels(labels: &[u8], probabilities: Option<&[u8]>, limits: &Limits) -> u64 {
    formats::estimated_voxels(labels, limits)
        + probabilities.map_or(0, |p| formats::estimated_probability_bytes(p, limits))
}

/// The labels of the channels, in order: the structures of the model
/// version's schema that have a label, in the schema's order (as `eval
/// --schema` scores them), else the labels the prediction draws, ascending.
pub fn channel_labels(prediction: &Segmentation, schema: Option<&Schema>) -> Vec<u16> {
    match schema {
        Some(schema) => schema.structures.iter().filter_map(|s| s.label).collect(),
        None => prediction
            .structure_keys()
            .iter()
            .filter_map(|key| key.strip_prefix("label_")?.parse().ok())
            .collect(),
    }
}

/// Checks a probability file against the prediction's label map: float32 or
/// float64, the label map's grid, one channel per label of `labels`, every
/// value from 0 to 1. Returns the file de-identified (uncompressed).
pub fn check(
    bytes: &[u8],
    prediction: &Segmentation,
    labels: &[u16],
    limits: &Limits,
) -> Result<Vec<u8>, ProbabilitiesError> {
    let Segmentation::LabelMap(volume) = prediction else {
        return Err(ProbabilitiesError::NotLabelMap);
    };
    // The header's sizes (every channel) are checked against the limits
    // before the file is inflated.
    let clean = deidentify::deidentify_nifti(bytes, limits)?;
    let mut sink = Matching {
        grid: &volume.grid,
        channels: labels.len(),
    };
    probability_nifti::decode(&clean, limits, &mut sink)?;
    Ok(clean)
}

/// Accepts a file on one grid with a given number of channels; the reader
/// checks each value.
struct Matching<'a> {
    grid: &'a Grid,
    channels: usize,
}

impl ProbabilitySink for Matching<'_> {
    type Error = ProbabilityError;

    fn start(&mut self, grid: &Grid, channels: usize) -> Result<(), ProbabilityError> {
        grid.check_same(self.grid)?;
        if channels != self.channels {
            return Err(ProbabilityError::Channels {
                found: channels,
                expected: self.channels,
            });
        }
        Ok(())
    }

    fn block(&mut self, _: usize, _: usize, _: &[f64]) -> Result<(), ProbabilityError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::Compute;
    use crate::formats::nifti;
    use crate::volume::{LabelVolume, Labels};

    /// Budget voxels of one permit of the compute pool.
    const PERMIT: u64 = 1 << 16;

    /// Work on `compute` admitted for `voxels`: says when it starts, then holds
    /// its room until `release` fires.
    fn held(
        compute: &Compute,
        voxels: u64,
        release: std::sync::mpsc::Receiver<()>,
    ) -> (tokio::task::JoinHandle<()>, std::sync::mpsc::Receiver<()>) {
        let compute = compute.clone();
        let (started, starts) = std::sync::mpsc::channel();
        let task = tokio::spawn(async move {
            compute
                .run(voxels, move || {
                    started.send(()).unwrap_or_default();
                    release.recv().unwrap_or_default()
                })
                .await
                .unwrap();
        });
        (task, starts)
    }

    /// Waits, off the runtime's thread, until held work has started.
    async fn started(starts: std::sync::mpsc::Receiver<()>) {
        tokio::task::spawn_blocking(move || starts.recv())
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn probability_channels_wait_for_room_in_the_compute_budget() {
        // A label map of one permit, and its probabilities in three float32
        // channels: 12 permits more.
        let grid = Grid::axis_aligned([64, 64, 16], [1.0; 3], 3);
        let volume = LabelVolume::new(grid.clone(), Labels::U8(vec![1; grid.len()])).unwrap();
        let labels = nifti::encode(&volume, true);
        let channels =
            |n: usize| probability_nifti::encode(&grid, &vec![vec![0.5; grid.len()]; n], true);
        let limits = Limits::default();
        assert_eq!(admitted_voxels(&labels, None, &limits), PERMIT);
        let three = admitted_voxels(&labels, Some(&channels(3)), &limits);
        assert_eq!(three, PERMIT + 3 * 4 * PERMIT);
        // A budget of 16 permits, 8 of them taken by other work.
        let compute = Compute::new(3, 16 * PERMIT).unwrap();
        let (release_other, other_waits) = std::sync::mpsc::channel();
        let (other, other_starts) = held(&compute, 8 * PERMIT, other_waits);
        started(other_starts).await;
        // An upload with one channel (5 permits) fits beside it and runs.
        let one = admitted_voxels(&labels, Some(&channels(1)), &limits);
        assert_eq!(compute.run(one, || ()).await.ok(), Some(()));
        // The three-channel one does not fit (its labels alone would): it waits,
        // as a label map of that size would, until the other work is done.
        let (release_three, three_waits) = std::sync::mpsc::channel();
        let (upload, upload_starts) = held(&compute, three, three_waits);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(upload_starts.try_recv().is_err() && !upload.is_finished());
        release_other.send(()).unwrap();
        other.await.unwrap();
        started(upload_starts).await;
        assert_eq!(compute.voxels_in_flight(), three.div_ceil(PERMIT) * PERMIT);
        release_three.send(()).unwrap();
        upload.await.unwrap();
        assert_eq!(compute.voxels_in_flight(), 0);
    }

    #[test]
    fn refuses_what_does_not_fit_the_labels() {
        let grid = Grid::axis_aligned([4, 3, 2], [1.0, 1.0, 2.0], 3);
        let labels = Segmentation::LabelMap(
            LabelVolume::new(grid.clone(), Labels::U8((0..24).map(|i| i % 3).collect())).unwrap(),
        );
        assert_eq!(channel_labels(&labels, None), [1, 2]);
        let limits = Limits::default();
        let file = |grid: &Grid, channels: usize, value: f32| {
            probability_nifti::encode(grid, &vec![vec![value; grid.len()]; channels], true)
        };
        let clean = check(&file(&grid, 2, 0.5), &labels, &[1, 2], &limits).unwrap();
        // What is kept decodes to the same values.
        let mut again = Matching {
            grid: &grid,
            channels: 2,
        };
        probability_nifti::decode(&clean, &limits, &mut again).unwrap();
        let err = check(&file(&grid, 3, 0.5), &labels, &[1, 2], &limits).unwrap_err();
        assert!(matches!(
            err,
            ProbabilitiesError::Invalid(ProbabilityError::Channels {
                found: 3,
                expected: 2
            })
        ));
        let other = Grid::axis_aligned([4, 3, 2], [1.0, 1.0, 2.5], 3);
        let err = check(&file(&other, 2, 0.5), &labels, &[1, 2], &limits).unwrap_err();
        assert!(matches!(
            err,
            ProbabilitiesError::Invalid(ProbabilityError::Grid(_))
        ));
        let err = check(&file(&grid, 2, 1.5), &labels, &[1, 2], &limits).unwrap_err();
        assert!(matches!(
            err,
            ProbabilitiesError::Invalid(ProbabilityError::Format(FormatError::Value(_)))
        ));
        let small = Limits {
            max_voxels: 40,
            max_bytes: 1 << 20,
        };
        let err = check(&file(&grid, 2, 0.5), &labels, &[1, 2], &small).unwrap_err();
        assert!(matches!(
            err,
            ProbabilitiesError::Invalid(ProbabilityError::Format(FormatError::TooLarge(_)))
        ));
    }
}
