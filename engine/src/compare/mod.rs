//! The statistics behind comparing two model versions (issue 15): rank tests
//! of a difference in Dice ([`rank_tests`]) and bootstrap confidence
//! intervals of a mean ([`bootstrap`]).
//!
//! Pure: numbers in, values out.

pub mod bootstrap;
pub mod rank_tests;

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
    /// Settings out of range (confidence level, resamples).
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

