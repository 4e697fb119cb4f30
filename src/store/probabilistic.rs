//! Probabilistic scores as `structure_results` keeps them (both stores): soft
//! Dice, Brier and ECE in nullable columns, and the reliability diagram as
//! compact JSON text, `[[count, mean probability, observed frequency], ...]`
//! (the equal-width bins, then p = 1; nulls for empty bins), whose edges are
//! those of [`ReliabilityBin::edges`]. NULL soft Dice: no probabilities.

use super::jobs::finite;
use super::{Result, StoreError};
use crate::metrics::probabilistic::{Probabilistic, ReliabilityBin};

/// One stored reliability bin: count, mean probability, observed frequency.
type StoredBin = (u64, Option<f64>, Option<f64>);

/// The columns of a structure's scores: soft Dice, Brier, ECE, reliability
/// (NULL everywhere without probabilities; Brier and ECE NULL if not finite).
pub(super) type Columns = (Option<f64>, Option<f64>, Option<f64>, Option<String>);

/// The columns `p` is stored in.
pub(super) fn columns(p: Option<&Probabilistic>) -> Result<Columns> {
    let Some(p) = p else {
        return Ok((None, None, None, None));
    };
    let bins: Vec<StoredBin> = p
        .reliability
        .iter()
        .map(|b| (b.count, b.mean_probability, b.observed_frequency))
        .collect();
    let reliability = serde_json::to_string(&bins)
        .map_err(|e| StoreError::Corrupt(format!("reliability data: {e}")))?;
    Ok((
        Some(p.soft_dice),
        finite(p.brier),
        finite(p.ece),
        Some(reliability),
    ))
}

/// The scores stored in `columns` (NULL Brier or ECE back to NaN).
pub(super) fn read(columns: Columns) -> Result<Option<Probabilistic>> {
    let (Some(soft_dice), brier, ece, reliability) = columns else {
        return Ok(None);
    };
    let corrupt = |why: &str| StoreError::Corrupt(format!("reliability data: {why}"));
    let bins: Vec<StoredBin> = serde_json::from_str(reliability.as_deref().unwrap_or_default())
        .map_err(|e| corrupt(&e.to_string()))?;
    let Some(ece_bins) = bins.len().checked_sub(1).filter(|&n| n > 0) else {
        return Err(corrupt("fewer than two bins"));
    };
    let reliability = bins
        .into_iter()
        .enumerate()
        .map(|(k, (count, mean_probability, observed_frequency))| {
            let (lower, upper) = ReliabilityBin::edges(k, ece_bins);
            ReliabilityBin {
                lower,
                upper,
                count,
                mean_probability,
                observed_frequency,
            }
        })
        .collect();
    Ok(Some(Probabilistic {
        soft_dice,
        brier: brier.unwrap_or(f64::NAN),
        ece: ece.unwrap_or(f64::NAN),
        ece_bins,
        reliability,
    }))
}

/// A prediction's probability map as stored beside its file (uploaded with
/// it as a float NIfTI): NULL columns for every other upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredProbabilities {
    /// The float NIfTI, de-identified and gzip-compressed.
    pub content: Vec<u8>,
    /// The label of each channel, in the file's order.
    pub labels: Vec<u16>,
}

impl StoredProbabilities {
    /// The channels' labels as stored: a JSON array.
    pub(super) fn labels_text(&self) -> String {
        serde_json::Value::from(self.labels.clone()).to_string()
    }

    /// The probabilities kept in the columns `content` and `labels`, if any.
    pub(super) fn from_columns(
        content: Option<Vec<u8>>,
        labels: Option<String>,
    ) -> Result<Option<StoredProbabilities>> {
        let (Some(content), Some(labels)) = (content, labels) else {
            return Ok(None);
        };
        let labels = serde_json::from_str(&labels)
            .map_err(|e| StoreError::Corrupt(format!("probability channel labels: {e}")))?;
        Ok(Some(StoredProbabilities { content, labels }))
    }
}
