//! Scoring one job from its stored uploads: decode, pair, measure.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use std::collections::BTreeSet;

use rayon::prelude::*;

use crate::compare::readers::{DEFAULT_AMBIGUOUS_BELOW, label_agreement};
use crate::formats::{self, FormatError, Limits, probability_nifti};
use crate::metrics::case::{CaseScore, LesionScore};
use crate::metrics::lesions::lesion_metrics;
use crate::metrics::pairing::{self, Evaluation, PairingError, Request};
use crate::metrics::probabilistic::{
    DEFAULT_BINS, LabelMapScorer, Probabilistic, ProbabilityError, score_segments,
};
use crate::metrics::{Settings, StructureMetrics, structure_name};
use crate::schema::Schema;
use crate::store::{StoredProbabilities, StructureAgreement};
use crate::volume::{Labels, Segmentation};

/// Why a job cannot be scored. Every variant is permanent: retrying the same
/// bytes gives the same answer.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("{role}: {source}")]
    Format {
        role: &'static str,
        #[source]
        source: FormatError,
    },
    #[error(transparent)]
    Pairing(#[from] PairingError),
    #[error("prediction probabilities: {0}")]
    Probability(#[from] ProbabilityError),
    #[error("{0}")]
    Stored(String),
}

/// Inflates a stored (gzip) upload, capped at `limit` bytes.
pub fn inflate(stored: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    MultiGzDecoder::new(stored)
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("stored upload is unreadable: {e}"))?;
    if out.len() as u64 > limit {
        return Err("stored upload exceeds the upload limit".into());
    }
    Ok(out)
}

/// The stored uploads a job needs, gzip-compressed.
pub struct JobUploads {
    pub prediction: Vec<u8>,
    pub reference: Vec<u8>,
    /// The job's reference is the primary reader's, so the job makes a
    /// result; otherwise it only updates the readers' agreement.
    pub makes_result: bool,
    /// Every reader's latest reference, the primary reader first, when the
    /// case has two readers or more (else empty).
    pub readers: Vec<(String, ReaderUpload)>,
    /// The prediction's probabilities, if it was sent with a float NIfTI of them.
    pub probabilities: Option<StoredProbabilities>,
}

/// A reader's latest reference, as a job gets it.
pub enum ReaderUpload {
    /// The job's own reference: decoded once, for both uses.
    JobReference,
    /// Another upload, gzip-compressed.
    Stored(Vec<u8>),
}

/// What a job computed: its result, and the readers' agreement.
pub type JobScore = (Option<CaseScore>, Vec<StructureAgreement>);

/// Decodes the uploads (each once, in parallel), scores the prediction
/// against the reference when the job makes a result (with the probabilistic
/// scores of a FRACTIONAL PROBABILITY SEG prediction, or of the probability map
/// sent with a NIfTI prediction), and computes the readers' agreement.
pub fn score(
    uploads: &JobUploads,
    schema: Option<&Schema>,
    settings: Settings,
    limits: &Limits,
    max_stored: u64,
) -> Result<JobScore, ScoreError> {
    let decode = |stored: &[u8], role: &'static str| {
        let bytes = inflate(stored, max_stored).map_err(ScoreError::Stored)?;
        formats::decode(&bytes, limits).map_err(|source| ScoreError::Format { role, source })
    };
    let reference_needed = uploads.makes_result
        || uploads
            .readers
            .iter()
            .any(|(_, u)| matches!(u, ReaderUpload::JobReference));
    let ((p, r), others) = rayon::join(
        || {
            rayon::join(
                || decode(&uploads.prediction, "prediction"),
                || reference_needed.then(|| decode(&uploads.reference, "reference")),
            )
        },
        || {
            uploads
                .readers
                .par_iter()
                .map(|(_, upload)| match upload {
                    ReaderUpload::Stored(stored) => decode(stored, "reference").map(Some),
                    ReaderUpload::JobReference => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()
        },
    );
    let p = p?;
    let r = r.transpose()?;
    let others = others?;
    let case = match &r {
        Some(r) if uploads.makes_result => {
            let probabilities = uploads.probabilities.as_ref().map(|p| (p, limits));
            Some(measure(&p, r, schema, settings, probabilities)?)
        }
        _ => None,
    };
    // The job's own reference stands in for its reader's entry.
    let readers: Vec<&Segmentation> = others
        .iter()
        .filter_map(|other| other.as_ref().or(r.as_ref()))
        .collect();
    let names: Vec<String> = uploads.readers.iter().map(|(n, _)| n.clone()).collect();
    Ok((case, agreement(&p, &names, &readers, schema)))
}

/// Scores a decoded prediction against a decoded reference.
fn measure(
    p: &Segmentation,
    r: &Segmentation,
    schema: Option<&Schema>,
    settings: Settings,
    probabilities: Option<(&StoredProbabilities, &Limits)>,
) -> Result<CaseScore, ScoreError> {
    let request = Request {
        schema,
        labels: None,
        settings,
    };
    let evaluation = pairing::evaluate(p, r, &request)?;
    // The probability map sent with the prediction, else FRACTIONAL
    // PROBABILITY segments of a SEG prediction; None for the rest.
    let probabilistic = match probabilities {
        Some((stored, limits)) => score_map(p, r, &evaluation, stored, limits)?,
        None => score_segments(p, r, &evaluation, DEFAULT_BINS)?,
    };
    let tolerance = |m: &StructureMetrics| {
        let def = schema.and_then(|s| {
            m.label
                .and_then(|l| s.by_label(l))
                .or_else(|| m.code.as_deref().and_then(|c| s.by_code(c)))
        });
        def.and_then(|d| d.tolerance_mm)
            .unwrap_or(settings.tolerance_mm)
    };
    let mut case = CaseScore::new(evaluation, settings.surface, tolerance);
    for (scored, probabilistic) in case.structures.iter_mut().zip(probabilistic) {
        scored.probabilistic = probabilistic;
    }
    case.lesions = lesions(p, r, schema);
    Ok(case)
}

/// Scores a stored probability map (a float NIfTI on the prediction's grid,
/// one channel per label of `stored.labels`) against a label-map reference,
/// moved onto the prediction's grid as pairing moves it: each structure of
/// the evaluation gets its label's channel, if there is one. Against a DICOM
/// SEG reference, none.
fn score_map(
    pred: &Segmentation,
    reference: &Segmentation,
    evaluation: &Evaluation,
    stored: &StoredProbabilities,
    limits: &Limits,
) -> Result<Vec<Option<Probabilistic>>, ScoreError> {
    let (Segmentation::LabelMap(pred), Segmentation::LabelMap(reference)) = (pred, reference)
    else {
        return Ok(vec![None; evaluation.structures.len()]);
    };
    let moved;
    let reference = if reference.grid.check_same(&pred.grid).is_ok() {
        reference
    } else {
        moved = reference
            .reoriented_onto(&pred.grid)
            .map_err(ProbabilityError::from)?;
        &moved
    };
    let mut scorer = LabelMapScorer::new(reference, &stored.labels, DEFAULT_BINS)?;
    probability_nifti::decode(&stored.content, limits, &mut scorer)?;
    let mut scores: Vec<Option<Probabilistic>> = scorer.finish()?.into_iter().map(Some).collect();
    Ok(evaluation
        .structures
        .iter()
        .map(|s| {
            let channel = stored.labels.iter().position(|&l| Some(l) == s.label)?;
            scores[channel].take()
        })
        .collect())
}

/// The readers' agreement with each other and with the prediction on every
/// label any of them draws, named as results name it (the schema's name, else
/// `label_N`). Only where the prediction and every reader's reference are
/// label maps on one grid, as for lesion-wise metrics: otherwise, and with
/// fewer than two readers, none.
fn agreement(
    pred: &Segmentation,
    names: &[String],
    readers: &[&Segmentation],
    schema: Option<&Schema>,
) -> Vec<StructureAgreement> {
    let Segmentation::LabelMap(pred) = pred else {
        return Vec::new();
    };
    let maps: Vec<&Labels> = readers
        .iter()
        .filter_map(|r| match r {
            Segmentation::LabelMap(r) if r.grid == pred.grid => Some(&r.labels),
            _ => None,
        })
        .collect();
    if maps.len() < 2 || maps.len() != readers.len() {
        return Vec::new();
    }
    let mut present = BTreeSet::new();
    for labels in maps.iter().copied().chain([&pred.labels]) {
        present.extend(labels_of(labels));
    }
    present
        .into_par_iter()
        .filter_map(|label| {
            let def = schema.and_then(|s| s.by_label(label));
            let below = def.map_or(DEFAULT_AMBIGUOUS_BELOW, |d| d.ambiguous_below());
            let agreement = label_agreement(&pred.labels, &maps, label, below).ok()?;
            Some(StructureAgreement {
                structure: def.map_or_else(
                    || structure_name(None, None, Some(label)),
                    |d| d.name.clone(),
                ),
                readers: names.to_vec(),
                agreement,
            })
        })
        .collect()
}

/// The labels other than background a label map uses.
fn labels_of(labels: &Labels) -> Vec<u16> {
    let mut seen = vec![false; usize::from(u16::MAX) + 1];
    for i in 0..labels.len() {
        seen[usize::from(labels.get(i))] = true;
    }
    (1..=u16::MAX).filter(|&l| seen[usize::from(l)]).collect()
}

/// Lesion-wise metrics of the schema's multi-instance structures (with their
/// `lesion_matching` settings, else the defaults), where both sides are label maps on one grid; a pair that only
/// pairing's resampling could put on one grid, or a DICOM SEG, gets none.
fn lesions(
    pred: &Segmentation,
    reference: &Segmentation,
    schema: Option<&Schema>,
) -> Vec<LesionScore> {
    let (Segmentation::LabelMap(pred), Segmentation::LabelMap(reference)) = (pred, reference)
    else {
        return Vec::new();
    };
    schema
        .into_iter()
        .flat_map(|s| &s.structures)
        .filter(|s| s.instances)
        .filter_map(|s| {
            let settings = s.lesion_matching.unwrap_or_default();
            let metrics = lesion_metrics(pred, reference, s.label?, &settings).ok()?;
            Some(LesionScore {
                structure: s.name.clone(),
                band_edges_ml: s.volume_bands().to_vec(),
                metrics,
            })
        })
        .collect()
}
