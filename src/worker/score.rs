//! Scoring one job from its stored uploads: decode, pair, measure.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::formats::{self, FormatError, Limits};
use crate::metrics::case::{CaseScore, LesionScore};
use crate::metrics::lesions::lesion_metrics;
use crate::metrics::pairing::{self, PairingError, Request};
use crate::metrics::probabilistic::{DEFAULT_BINS, ProbabilityError, score_segments};
use crate::metrics::{Settings, StructureMetrics};
use crate::schema::Schema;
use crate::volume::Segmentation;

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

/// Decodes and scores a prediction against a reference, with the
/// probabilistic scores of a FRACTIONAL PROBABILITY SEG prediction.
pub fn score(
    prediction: &[u8],
    reference: &[u8],
    schema: Option<&Schema>,
    settings: Settings,
    limits: &Limits,
    max_stored: u64,
) -> Result<CaseScore, ScoreError> {
    let decode = |stored: &[u8], role: &'static str| {
        let bytes = inflate(stored, max_stored).map_err(ScoreError::Stored)?;
        formats::decode(&bytes, limits).map_err(|source| ScoreError::Format { role, source })
    };
    let (p, r) = rayon::join(
        || decode(prediction, "prediction"),
        || decode(reference, "reference"),
    );
    let (p, r) = (p?, r?);
    let request = Request {
        schema,
        labels: None,
        settings,
    };
    let evaluation = pairing::evaluate(&p, &r, &request)?;
    // FRACTIONAL PROBABILITY segments of a SEG prediction; None for the rest.
    let probabilistic = score_segments(&p, &r, &evaluation, DEFAULT_BINS)?;
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
    case.lesions = lesions(&p, &r, schema);
    Ok(case)
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
