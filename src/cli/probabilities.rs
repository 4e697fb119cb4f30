//! `eval`'s probabilistic scoring: the prediction's FRACTIONAL PROBABILITY
//! segments (DICOM SEG), or a float NIfTI of probabilities given with
//! `--probabilities` (`metrics::probabilistic`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use crate::formats::{Limits, probability_nifti};
use crate::metrics::pairing::Evaluation;
use crate::metrics::probabilistic::{
    DEFAULT_BINS, LabelMapScorer, MAX_BINS, Probabilistic, score_segments,
};
use crate::volume::Segmentation;

/// Options of probabilistic scoring.
#[derive(Debug, Clone, Args)]
pub struct ProbabilityArgs {
    /// Float NIfTI (float32 or float64) of the prediction's probabilities: one
    /// channel along the fourth dimension per structure scored, in the order
    /// scored, on the reference's grid; needs a NIfTI reference.
    #[arg(long)]
    pub probabilities: Option<PathBuf>,
    /// Folder mode: probability files named like the cases (CASE.nii.gz or CASE.nii).
    #[arg(long)]
    pub prob_dir: Option<PathBuf>,
    /// Equal-width bins of the expected calibration error.
    #[arg(long, default_value_t = DEFAULT_BINS, value_parser = bins)]
    pub ece_bins: usize,
}

fn bins(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_BINS).contains(&n) => Ok(n),
        _ => Err(format!("{s} is not a bin count (1 to {MAX_BINS})")),
    }
}

impl ProbabilityArgs {
    /// Fails when the option of the other mode was given.
    pub fn check_mode(&self, folders: bool) -> anyhow::Result<()> {
        match (folders, &self.probabilities, &self.prob_dir) {
            (true, Some(_), _) => {
                bail!("--probabilities is for one pair; give --prob-dir with folders")
            }
            (false, _, Some(_)) => {
                bail!("--prob-dir is for folders; give --probabilities with one pair")
            }
            _ => Ok(()),
        }
    }

    /// The probability file of a folder-mode case, if the folder has one.
    pub fn case_file(&self, case: &str) -> Option<PathBuf> {
        let dir = self.prob_dir.as_ref()?;
        [".nii.gz", ".nii"]
            .iter()
            .map(|ext| dir.join(format!("{case}{ext}")))
            .find(|path| path.is_file())
    }
}

/// Probabilistic scores of one structure of a case.
#[derive(Debug, Serialize)]
pub struct StructureProbabilistic {
    pub label: Option<u16>,
    pub code: Option<String>,
    pub name: Option<String>,
    #[serde(flatten)]
    pub metrics: Probabilistic,
}

/// Scores the probabilities of a pair: from `file` when given, else from the
/// prediction's FRACTIONAL PROBABILITY segments; structures without
/// probabilities are left out.
pub fn score(
    pred: &Segmentation,
    reference: &Segmentation,
    evaluation: &Evaluation,
    file: Option<&Path>,
    bins: usize,
) -> anyhow::Result<Vec<StructureProbabilistic>> {
    let scores: Vec<Option<Probabilistic>> = match file {
        Some(file) => {
            let Segmentation::LabelMap(reference) = reference else {
                bail!("--probabilities needs a NIfTI reference");
            };
            let labels = evaluation
                .structures
                .iter()
                .map(|s| s.label)
                .collect::<Option<Vec<u16>>>()
                .context("--probabilities needs every structure scored to have a label")?;
            let mut scorer = LabelMapScorer::new(reference, &labels, bins)?;
            probability_nifti::read_path(file, &Limits::default(), &mut scorer)
                .with_context(|| file.display().to_string())?;
            scorer.finish()?.into_iter().map(Some).collect()
        }
        None => score_segments(pred, reference, evaluation, bins)?,
    };
    Ok(evaluation
        .structures
        .iter()
        .zip(scores)
        .filter_map(|(s, metrics)| {
            Some(StructureProbabilistic {
                label: s.label,
                code: s.code.clone(),
                name: s.name.clone(),
                metrics: metrics?,
            })
        })
        .collect())
}
