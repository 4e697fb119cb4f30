//! Drift detection, pure math: frozen baselines, PIT-EWMA for a shift of the
//! Dice distribution, Bernoulli CUSUM for a rise of the failure rate, and the
//! explainable guard rail. See DESIGN.md "Drift detection".

use serde::{Deserialize, Serialize};

/// Smallest baseline sample accepted.
pub const MIN_BASELINE: usize = 100;
/// No alarm before this many cases in a stream.
pub const WARM_UP: u32 = 20;
/// EWMA smoothing.
pub const LAMBDA: f64 = 0.1;
/// CUSUM decision interval.
pub const CUSUM_H: f64 = 4.0;
/// CUSUM designs for this multiple of the baseline failure rate.
pub const CUSUM_RATE_RATIO: f64 = 3.0;
/// Guard rail: alarm when the 7-day mean is this far below the baseline mean…
pub const GUARD_MARGIN: f64 = 0.05;
/// … over at least this many cases.
pub const GUARD_MIN_CASES: i64 = 20;

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

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn values(&self) -> &[f64] {
        &self.sorted
    }

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

    /// Failure rate of the sample below `threshold`, floored at 1 / (n + 1).
    pub fn failure_rate(&self, threshold: f64) -> f64 {
        let failures = self.sorted.partition_point(|&v| v < threshold) as f64;
        (failures / self.sorted.len() as f64).max(1.0 / (self.sorted.len() as f64 + 1.0))
    }
}

/// Target in-control run lengths of the width table.
const ARL0S: [f64; 4] = [500.0, 1000.0, 2000.0, 5000.0];
/// Baseline sizes of the width table.
const SIZES: [f64; 4] = [100.0, 200.0, 500.0, 2000.0];
/// EWMA widths L giving a mean in-control run length of ARL0 (columns) for a
/// baseline of n values (rows), by simulation (`examples/drift_calibration.rs`).
/// For large n they approach DESIGN's table (2.48 / 2.76 / 2.97 / 3.20); a
/// smaller baseline lengthens the mean run length, because some baselines sit
/// low, so L shrinks rather than grows (DESIGN's "+0.2" would double ARL0).
const WIDTHS: [[f64; 4]; 4] = [
    [2.250, 2.495, 2.666, 2.909],
    [2.362, 2.597, 2.827, 3.062],
    [2.402, 2.631, 2.880, 3.134],
    [2.451, 2.704, 2.937, 3.186],
];

/// Linear interpolation in log space over a 4-point axis, clamped to its ends.
fn log_position(axis: &[f64; 4], x: f64) -> (usize, f64) {
    let x = x.clamp(axis[0], axis[3]).ln();
    let i = (0..3).find(|&i| x <= axis[i + 1].ln()).unwrap_or(2);
    (i, (x - axis[i].ln()) / (axis[i + 1].ln() - axis[i].ln()))
}

/// EWMA width L for a target in-control run length with a baseline of `n` values.
pub fn ewma_width(arl0: f64, n: usize) -> f64 {
    let (i, fi) = log_position(&SIZES, n as f64);
    let (j, fj) = log_position(&ARL0S, arl0);
    let row = |r: usize| WIDTHS[r][j] + (WIDTHS[r][j + 1] - WIDTHS[r][j]) * fj;
    row(i) + (row(i + 1) - row(i)) * fi
}

/// The state of one detector of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Cases seen since the last reset.
    pub t: u32,
    /// EWMA z (starts at 0.5) or CUSUM S (starts at 0).
    pub statistic: f64,
}

/// One detector update, as stored for audit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Update {
    pub t: u32,
    /// What the detector was fed: u (PIT-EWMA) or y (CUSUM).
    pub input: f64,
    pub statistic: f64,
    pub limit: f64,
    pub alarm: bool,
}

/// PIT-EWMA: the EWMA of the case's percentile in the baseline; alarm when it
/// falls below the time-varying lower limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PitEwma {
    pub lambda: f64,
    pub width: f64,
}

impl PitEwma {
    /// The detector for a target in-control run length and a baseline.
    pub fn for_arl0(arl0: f64, baseline: &Baseline) -> PitEwma {
        PitEwma {
            lambda: LAMBDA,
            width: ewma_width(arl0, baseline.len()),
        }
    }

    pub const START: State = State {
        t: 0,
        statistic: 0.5,
    };

    /// Lower limit after `t` updates.
    pub fn limit(&self, t: u32) -> f64 {
        let l = self.lambda;
        let variance = l / (2.0 - l) * (1.0 - (1.0 - l).powi(2 * t as i32));
        0.5 - self.width / 12f64.sqrt() * variance.sqrt()
    }

    /// Feeds one case's Dice.
    pub fn update(&self, state: &mut State, baseline: &Baseline, dice: f64) -> Update {
        let u = baseline.percentile_of(dice);
        state.t += 1;
        state.statistic = self.lambda * u + (1.0 - self.lambda) * state.statistic;
        let limit = self.limit(state.t);
        Update {
            t: state.t,
            input: u,
            statistic: state.statistic,
            limit,
            alarm: state.t >= WARM_UP && state.statistic < limit,
        }
    }
}

/// Bernoulli CUSUM of failures (Dice below the structure's threshold), designed
/// for a rise from the baseline rate p0 to 3·p0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cusum {
    pub threshold: f64,
    pub p0: f64,
    pub p1: f64,
    pub h: f64,
}

impl Cusum {
    pub fn new(baseline: &Baseline, threshold: f64) -> Cusum {
        let p0 = baseline.failure_rate(threshold);
        Cusum {
            threshold,
            p0,
            p1: (CUSUM_RATE_RATIO * p0).min(0.999),
            h: CUSUM_H,
        }
    }

    pub const START: State = State {
        t: 0,
        statistic: 0.0,
    };

    /// Feeds one case's Dice.
    pub fn update(&self, state: &mut State, dice: f64) -> Update {
        let y = if dice < self.threshold { 1.0 } else { 0.0 };
        let step =
            y * (self.p1 / self.p0).ln() + (1.0 - y) * ((1.0 - self.p1) / (1.0 - self.p0)).ln();
        state.t += 1;
        state.statistic = (state.statistic + step).max(0.0);
        Update {
            t: state.t,
            input: y,
            statistic: state.statistic,
            limit: self.h,
            alarm: state.t >= WARM_UP && state.statistic > self.h,
        }
    }
}

/// The guard rail: the 7-day mean against the baseline mean minus a margin.
pub fn guard_rail(mean_7d: f64, cases_7d: i64, baseline_mean: f64) -> Update {
    let limit = baseline_mean - GUARD_MARGIN;
    Update {
        t: cases_7d.max(0) as u32,
        input: mean_7d,
        statistic: mean_7d,
        limit,
        alarm: cases_7d >= GUARD_MIN_CASES && mean_7d < limit,
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
        assert!((b.failure_rate(0.1) - 20.0 / 200.0).abs() < 1e-12);
        assert!((b.failure_rate(0.0) - 1.0 / 201.0).abs() < 1e-12);
        assert!((b.mean() - 0.4975).abs() < 1e-12);
        assert!(Baseline::new(vec![0.9; 99]).is_err());
        assert!(Baseline::new(vec![1.5; 100]).is_err());
    }

    #[test]
    fn ewma_width_interpolates_the_table() {
        assert!((ewma_width(500.0, 200) - 2.362).abs() < 1e-12);
        assert!((ewma_width(5000.0, 2000) - 3.186).abs() < 1e-12);
        assert!((ewma_width(9000.0, 50_000) - 3.186).abs() < 1e-12);
        let mid = ewma_width(700.0, 300);
        assert!(mid > 2.362 && mid < 2.631);
    }

    #[test]
    fn no_alarm_during_warm_up() {
        let b = Baseline::new((0..200).map(|i| 0.8 + i as f64 / 1000.0).collect()).unwrap();
        let detector = PitEwma::for_arl0(500.0, &b);
        let mut state = PitEwma::START;
        for t in 1..WARM_UP {
            assert!(!detector.update(&mut state, &b, 0.0).alarm, "t {t}");
        }
        assert!(detector.update(&mut state, &b, 0.0).alarm);
        let cusum = Cusum::new(&b, 0.5);
        let mut state = Cusum::START;
        for _ in 1..WARM_UP {
            assert!(!cusum.update(&mut state, 0.1).alarm);
        }
        assert!(cusum.update(&mut state, 0.1).alarm);
    }

    #[test]
    fn guard_rail_needs_cases() {
        assert!(!guard_rail(0.5, 19, 0.9).alarm);
        assert!(guard_rail(0.5, 20, 0.9).alarm);
        assert!(!guard_rail(0.86, 50, 0.9).alarm);
    }
}
