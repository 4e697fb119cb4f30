//! Drift detection, pure: frozen baselines, the detectors (PIT-EWMA for a
//! shift of the Dice distribution, a Bernoulli CUSUM for a rise of the failure
//! rate, the explainable guard rail on the 7-day mean), their limits from the
//! fleet's false-alert budget, incidents, and the alert planner. The store only
//! persists what these functions return; `docs/drift.md` explains the method.

use serde::{Deserialize, Serialize};

pub mod calibration;
pub mod detectors;
pub mod feed;
pub mod incident;
pub mod limits;
pub mod metric;
pub mod plan;
pub mod replay;

pub use detectors::{
    Design, Detector, DetectorState, Observation, StreamProfile, StreamState, Update,
};
pub use limits::RunLengthTarget;
pub use metric::Metric;

/// Smallest baseline sample accepted.
pub const MIN_BASELINE: usize = 100;
/// Baseline size the docs recommend: PIT-EWMA limits within 0.25 sd of those
/// for a known Dice distribution, and a failure-rate bound tight enough for
/// the CUSUM to see a rise from 3 % to 10 %.
pub const RECOMMENDED_BASELINE: usize = 200;

/// What a baseline smaller than [`RECOMMENDED_BASELINE`] costs, and how many
/// cases it needs; None for a large enough one.
pub fn baseline_note(baseline: &Baseline) -> Option<String> {
    (baseline.len() < RECOMMENDED_BASELINE).then(|| {
        format!(
            "{} cases: at least {RECOMMENDED_BASELINE} are recommended; with fewer, limits that hold for 90 % of \
             baselines are wider and a failure-rate rise is seen later (docs/drift.md)",
            baseline.len()
        )
    })
}

/// Why a baseline cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid baseline: {0}")]
pub struct BaselineError(pub String);

/// A frozen sample of per-case Dice values of one structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    sorted: Vec<f64>,
}

impl Baseline {
    /// A baseline from at least [`MIN_BASELINE`] Dice values in 0..=1.
    pub fn new(mut values: Vec<f64>) -> Result<Baseline, BaselineError> {
        if values.len() < MIN_BASELINE {
            return Err(BaselineError(format!(
                "{} values; at least {MIN_BASELINE} are needed",
                values.len()
            )));
        }
        if let Some(v) = values.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(BaselineError(format!(
                "{v} is not a Dice value between 0 and 1"
            )));
        }
        values.sort_by(f64::total_cmp);
        Ok(Baseline { sorted: values })
    }

    /// Number of Dice values (at least [`MIN_BASELINE`]).
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// True when it holds no value; never for a baseline built by [`Baseline::new`].
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The Dice values, ascending.
    pub fn values(&self) -> &[f64] {
        &self.sorted
    }

    /// Arithmetic mean of the Dice values.
    pub fn mean(&self) -> f64 {
        self.sorted.iter().sum::<f64>() / self.sorted.len() as f64
    }

    /// Linear-interpolation quantile.
    pub fn quantile(&self, q: f64) -> f64 {
        let position = q * (self.sorted.len() - 1) as f64;
        let lo = position.floor() as usize;
        let hi = (lo + 1).min(self.sorted.len() - 1);
        self.sorted[lo] + (self.sorted[hi] - self.sorted[lo]) * (position - lo as f64)
    }

    /// Mid-rank percentile of `x` in the sample: (below + equal / 2) / n.
    pub fn percentile_of(&self, x: f64) -> f64 {
        let below = self.sorted.partition_point(|&v| v < x);
        let not_above = self.sorted.partition_point(|&v| v <= x);
        (below as f64 + (not_above - below) as f64 / 2.0) / self.sorted.len() as f64
    }

    /// Values below `threshold` (failures).
    pub fn failures(&self, threshold: f64) -> u64 {
        self.sorted.partition_point(|&v| v < threshold) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_percentiles_and_rates() {
        let b = Baseline::new((0..200).map(|i| i as f64 / 200.0).collect()).unwrap();
        assert_eq!(b.percentile_of(-1.0), 0.0);
        assert_eq!(b.percentile_of(2.0), 1.0);
        // One value equal: mid rank.
        assert!((b.percentile_of(0.5) - 100.5 / 200.0).abs() < 1e-12);
        assert_eq!(b.failures(0.1), 20);
        assert_eq!(b.failures(0.0), 0);
        assert!((b.mean() - 0.4975).abs() < 1e-12);
        assert!(Baseline::new(vec![0.9; 99]).is_err());
        assert!(Baseline::new(vec![1.5; 100]).is_err());
        assert!(baseline_note(&b).is_none());
        let small = Baseline::new(vec![0.9; 120]).unwrap();
        assert!(baseline_note(&small).unwrap().contains("at least 200"));
    }
}
