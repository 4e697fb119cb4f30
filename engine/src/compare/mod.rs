//! The statistics behind comparing two model versions and gating a version
//! before deployment (issue 15): rank tests of a difference in Dice
//! ([`rank_tests`]), bootstrap confidence intervals of a mean
//! ([`bootstrap`]), the comparison of one structure between versions A and B
//! ([`versions`]), the deployment gate ([`gate`]) and the agreement of
//! several readers ([`readers`]).
//!
//! Pure: numbers in, reports out. The conventions, and how they were checked
//! against scipy, are in `docs/compare.md`.

pub mod bootstrap;
pub mod gate;
pub mod rank_tests;
pub mod readers;
pub mod versions;

/// Why a statistic could not be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    /// A sample has no values.
    #[error("a sample has no values")]
    Empty,
    /// Paired samples must have one value per pair on each side.
    #[error("paired samples have different lengths ({x} and {y})")]
    LengthMismatch {
        /// Length of the first sample.
        x: usize,
        /// Length of the second sample.
        y: usize,
    },
    /// NaN or an infinity among the values.
    #[error("value {value} at position {index} is not a finite number")]
    NotFinite {
        /// Position in its sample.
        index: usize,
        /// The value.
        value: f64,
    },
    /// One version lists a case twice, so pairing by case is ambiguous.
    #[error("case {0:?} appears more than once in one version")]
    DuplicateCase(String),
    /// Settings out of range (confidence level, resamples, threshold).
    #[error("invalid settings: {0}")]
    InvalidSettings(&'static str),
    /// The exact Mann–Whitney null distribution has more arrangements than
    /// 128-bit counts hold (one sample of at most 8 values, the other of
    /// hundreds of thousands).
    #[error("exact Mann–Whitney distribution too large for sample sizes {n1} and {n2}")]
    ExactTooLarge {
        /// Size of the first sample.
        n1: usize,
        /// Size of the second sample.
        n2: usize,
    },
}

/// Refuses NaN and infinities, naming the first.
fn check_finite(values: &[f64]) -> Result<(), CompareError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(CompareError::NotFinite {
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

/// Fraction of `dice` strictly below `threshold` (the schema's failure rule,
/// as `drift::Baseline::failures` counts it); `dice` is not empty.
fn failure_rate(dice: &[f64], threshold: f64) -> f64 {
    dice.iter().filter(|&&d| d < threshold).count() as f64 / dice.len() as f64
}

/// Arithmetic mean, summed in order (the bootstrap reference sums the same way).
fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}
