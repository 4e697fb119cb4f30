//! Probabilities from a float NIfTI file (one channel per structure) against a
//! label-map reference, accumulated block by block as the file is read.

use super::{Probabilistic, ProbabilityError, SoftTally};
use crate::formats::probability_nifti::ProbabilitySink;
use crate::volume::{Grid, LabelVolume, Labels};

/// Scores probability channels against a label map: channel i is the
/// probability of `labels[i]`, the reference being the voxels of that label.
pub struct LabelMapScorer<'a> {
    reference: &'a LabelVolume,
    labels: &'a [u16],
    ref_voxels: Vec<u64>,
    tallies: Vec<SoftTally>,
    started: bool,
}

impl<'a> LabelMapScorer<'a> {
    /// A scorer of `labels` against `reference` with `bins` calibration bins.
    pub fn new(
        reference: &'a LabelVolume,
        labels: &'a [u16],
        bins: usize,
    ) -> Result<LabelMapScorer<'a>, ProbabilityError> {
        let tallies = labels
            .iter()
            .map(|_| SoftTally::new(bins))
            .collect::<Result<Vec<_>, _>>()?;
        let mut histogram = vec![0u64; 1 << 16];
        match &reference.labels {
            Labels::U8(v) => v.iter().for_each(|&l| histogram[l as usize] += 1),
            Labels::U16(v) => v.iter().for_each(|&l| histogram[l as usize] += 1),
        }
        Ok(LabelMapScorer {
            reference,
            labels,
            ref_voxels: labels.iter().map(|&l| histogram[l as usize]).collect(),
            tallies,
            started: false,
        })
    }

    /// The scores of each label, in the order given, once the file is read.
    pub fn finish(self) -> Result<Vec<Probabilistic>, ProbabilityError> {
        if !self.started {
            return Err(ProbabilityError::Reference(
                "no probabilities were read".into(),
            ));
        }
        let voxels = self.reference.grid.len() as u64;
        self.tallies
            .iter()
            .zip(&self.ref_voxels)
            .map(|(tally, &ref_voxels)| tally.finish(voxels, ref_voxels))
            .collect()
    }
}

impl ProbabilitySink for LabelMapScorer<'_> {
    type Error = ProbabilityError;

    fn start(&mut self, grid: &Grid, channels: usize) -> Result<(), ProbabilityError> {
        grid.check_same(&self.reference.grid)?;
        if channels != self.labels.len() {
            return Err(ProbabilityError::Channels {
                found: channels,
                expected: self.labels.len(),
            });
        }
        self.started = true;
        Ok(())
    }

    fn block(
        &mut self,
        channel: usize,
        first: usize,
        values: &[f64],
    ) -> Result<(), ProbabilityError> {
        let (Some(&label), Some(tally)) = (self.labels.get(channel), self.tallies.get_mut(channel))
        else {
            return Err(ProbabilityError::Channels {
                found: channel + 1,
                expected: self.labels.len(),
            });
        };
        let reference = &self.reference.labels;
        for (i, &p) in values.iter().enumerate() {
            // Voxels never fed count as probability 0.
            if p > 0.0 {
                tally.add(p, reference.get(first + i) == label)?;
            }
        }
        Ok(())
    }
}
