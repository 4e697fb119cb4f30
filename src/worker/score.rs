//! Scoring one job from its stored uploads: decode, pair, measure.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::formats::{self, FormatError, Limits};
use crate::metrics::pairing::{self, PairingError, Request};
use crate::metrics::{self, Settings, StructureMetrics};
use crate::schema::Schema;
use crate::store::JobOutcome;

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

/// Decodes and scores a prediction against a reference.
pub fn score(
    prediction: &[u8],
    reference: &[u8],
    schema: Option<&Schema>,
    settings: Settings,
    limits: &Limits,
    max_stored: u64,
) -> Result<JobOutcome, ScoreError> {
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
    let tolerance = |m: &StructureMetrics| {
        let def = schema.and_then(|s| {
            m.label
                .and_then(|l| s.by_label(l))
                .or_else(|| m.code.as_deref().and_then(|c| s.by_code(c)))
        });
        def.and_then(|d| d.tolerance_mm)
            .unwrap_or(settings.tolerance_mm)
    };
    Ok(JobOutcome {
        surface: settings.surface.as_str().to_owned(),
        grid: serde_json::json!({
            "shape": evaluation.grid.shape_vec(),
            "spacing_mm": evaluation.grid.spacing_vec(),
        }),
        mean_dice: metrics::mean_dice(&evaluation.structures),
        structures: unique_names(&evaluation.structures)
            .into_iter()
            .zip(evaluation.structures)
            .map(|(name, m)| {
                let tolerance = tolerance(&m);
                (name, m, tolerance)
            })
            .collect(),
    })
}

/// Names unique within a case, as results are keyed by name: structures that
/// share a name (two segments labelled alike) get their code or label added,
/// then a counter if that is shared too.
fn unique_names(structures: &[StructureMetrics]) -> Vec<String> {
    use std::collections::HashMap;
    let count = |names: &[String]| {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for name in names {
            *counts.entry(name.as_str()).or_default() += 1;
        }
        counts
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(name, _)| name.to_owned())
            .collect::<std::collections::HashSet<_>>()
    };
    let mut names: Vec<String> = structures
        .iter()
        .map(StructureMetrics::display_name)
        .collect();
    let shared = count(&names);
    for (name, m) in names.iter_mut().zip(structures) {
        if shared.contains(name.as_str()) {
            let detail = m
                .code
                .clone()
                .or_else(|| m.label.map(|l| format!("label_{l}")));
            if let Some(detail) = detail {
                *name = format!("{name} ({detail})");
            }
        }
    }
    let shared = count(&names);
    let mut seen: HashMap<String, usize> = HashMap::new();
    for name in names.iter_mut() {
        if shared.contains(name.as_str()) {
            let n = seen.entry(name.clone()).or_default();
            *n += 1;
            *name = format!("{name} #{n}");
        }
    }
    names
}
