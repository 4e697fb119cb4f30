//! Detector limits from a target in-control run length, and the target from
//! the fleet's false-alert budget.
//!
//! The budget is spread evenly over every (stream, detector) pair that runs:
//! with K pairs and a budget of B false alerts a month, each pair may raise one
//! false alert per 30.44 · K / B days, which is that many days' cases of its
//! stream. A pooled stream sees every site's cases, so its target in cases is
//! larger in proportion: all pairs are calibrated per unit of time.

use serde::{Deserialize, Serialize};

use super::calibration::{cusum_run_length, ewma_sigma, rate_upper_bound};

/// EWMA smoothing of PIT-EWMA.
pub const LAMBDA: f64 = 0.07;
/// Baseline sizes of the PIT-EWMA table.
pub const EWMA_TABLE_SIZES: [usize; 7] = [100, 200, 300, 500, 1000, 2000, 5000];
/// Limit widths of the PIT-EWMA table, in units of the EWMA's asymptotic sd.
pub const EWMA_TABLE_WIDTHS: [f64; 35] = {
    let mut w = [0.0; 35];
    let mut i = 0;
    while i < 35 {
        w[i] = 1.5 + 0.125 * i as f64;
        i += 1;
    }
    w
};
/// Baselines drawn per table row.
pub const EWMA_DRAWS: usize = 400;
/// Share of baselines allowed an in-control run length below the target.
pub const BASELINE_RISK: f64 = 0.10;
/// Days in an average month.
pub const DAYS_PER_MONTH: f64 = 30.44;
/// Targets are rounded to this many steps per decade, so limits change in
/// small fixed steps as case rates move (and can be cached).
const TARGET_STEPS_PER_DECADE: f64 = 20.0;

// log10 of the in-control run length of PIT-EWMA (λ = LAMBDA, start 0.5,
// constant limit 0.5 − width · σ∞) over baselines of EWMA_TABLE_SIZES (rows)
// and EWMA_TABLE_WIDTHS (columns): its 10th percentile, and its harmonic mean
// (1 / mean false-alarm rate). From `cargo run --release --example
// drift_calibration`, which reproduces them to the digit.
/// log10 of the 10th percentile over baselines of PIT-EWMA's in-control run
/// length in cases: rows [`EWMA_TABLE_SIZES`], columns [`EWMA_TABLE_WIDTHS`].
// Measured run lengths; a few happen to be close to e or π.
#[allow(clippy::approx_constant)]
pub const EWMA_Q10_LOG10: [[f64; 35]; 7] = [
    [
        1.594, 1.664, 1.733, 1.810, 1.887, 1.964, 2.044, 2.127, 2.227, 2.322, 2.432, 2.553, 2.671,
        2.791, 2.923, 3.075, 3.230, 3.397, 3.577, 3.788, 4.005, 4.225, 4.454, 4.702, 4.947, 5.238,
        5.522, 5.871, 6.190, 6.536, 6.931, 7.289, 7.708, 8.146, 8.636,
    ],
    [
        1.690, 1.766, 1.841, 1.919, 2.001, 2.084, 2.171, 2.266, 2.368, 2.468, 2.583, 2.710, 2.850,
        2.987, 3.148, 3.314, 3.476, 3.662, 3.861, 4.072, 4.299, 4.536, 4.781, 5.052, 5.323, 5.616,
        5.929, 6.273, 6.629, 6.988, 7.386, 7.801, 8.240, 8.688, 9.217,
    ],
    [
        1.719, 1.795, 1.874, 1.956, 2.044, 2.130, 2.219, 2.316, 2.422, 2.531, 2.648, 2.777, 2.918,
        3.066, 3.217, 3.385, 3.563, 3.756, 3.950, 4.174, 4.402, 4.643, 4.892, 5.173, 5.460, 5.748,
        6.079, 6.435, 6.786, 7.157, 7.553, 7.968, 8.428, 8.895, 9.420,
    ],
    [
        1.750, 1.829, 1.910, 1.993, 2.079, 2.171, 2.267, 2.367, 2.476, 2.592, 2.718, 2.850, 2.994,
        3.149, 3.312, 3.489, 3.671, 3.871, 4.073, 4.305, 4.546, 4.799, 5.059, 5.340, 5.621, 5.930,
        6.265, 6.626, 6.989, 7.360, 7.766, 8.200, 8.669, 9.171, 9.698,
    ],
    [
        1.829, 1.912, 1.997, 2.087, 2.183, 2.282, 2.387, 2.498, 2.617, 2.740, 2.874, 3.013, 3.165,
        3.336, 3.511, 3.698, 3.897, 4.102, 4.326, 4.566, 4.815, 5.086, 5.367, 5.669, 5.975, 6.298,
        6.652, 7.034, 7.418, 7.826, 8.250, 8.694, 9.173, 9.684, 10.239,
    ],
    [
        1.842, 1.926, 2.014, 2.103, 2.197, 2.296, 2.402, 2.516, 2.636, 2.764, 2.902, 3.048, 3.206,
        3.378, 3.556, 3.746, 3.944, 4.156, 4.381, 4.628, 4.882, 5.153, 5.437, 5.734, 6.047, 6.378,
        6.742, 7.120, 7.504, 7.910, 8.336, 8.783, 9.268, 9.768, 10.347,
    ],
    [
        1.889, 1.976, 2.066, 2.160, 2.257, 2.361, 2.471, 2.590, 2.716, 2.850, 2.991, 3.140, 3.301,
        3.475, 3.656, 3.848, 4.053, 4.273, 4.503, 4.752, 5.013, 5.287, 5.571, 5.874, 6.191, 6.532,
        6.901, 7.287, 7.690, 8.104, 8.537, 8.989, 9.477, 9.994, 10.571,
    ],
];

/// log10 of the harmonic mean over baselines (1 / mean false-alarm rate) of
/// PIT-EWMA's in-control run length in cases, laid out as [`EWMA_Q10_LOG10`].
// Measured run lengths; a few happen to be close to e or π.
#[allow(clippy::approx_constant)]
pub const EWMA_HARMONIC_LOG10: [[f64; 35]; 7] = [
    [
        1.865, 1.946, 2.027, 2.113, 2.199, 2.288, 2.382, 2.478, 2.583, 2.687, 2.802, 2.918, 3.045,
        3.173, 3.308, 3.450, 3.599, 3.758, 3.919, 4.096, 4.282, 4.469, 4.674, 4.885, 5.086, 5.317,
        5.554, 5.837, 6.085, 6.357, 6.671, 6.958, 7.276, 7.588, 7.955,
    ],
    [
        1.911, 1.996, 2.083, 2.175, 2.268, 2.366, 2.470, 2.579, 2.697, 2.817, 2.947, 3.083, 3.228,
        3.385, 3.549, 3.721, 3.902, 4.096, 4.301, 4.519, 4.750, 4.990, 5.249, 5.518, 5.785, 6.082,
        6.396, 6.746, 7.085, 7.441, 7.834, 8.220, 8.643, 9.088, 9.574,
    ],
    [
        1.906, 1.992, 2.080, 2.173, 2.268, 2.368, 2.473, 2.586, 2.705, 2.830, 2.962, 3.103, 3.257,
        3.414, 3.581, 3.761, 3.949, 4.150, 4.359, 4.590, 4.825, 5.075, 5.334, 5.607, 5.892, 6.197,
        6.525, 6.874, 7.222, 7.593, 7.977, 8.381, 8.808, 9.265, 9.770,
    ],
    [
        1.906, 1.993, 2.082, 2.176, 2.273, 2.374, 2.481, 2.595, 2.718, 2.846, 2.982, 3.127, 3.281,
        3.447, 3.622, 3.806, 3.999, 4.209, 4.423, 4.658, 4.902, 5.159, 5.426, 5.707, 6.002, 6.317,
        6.653, 7.010, 7.374, 7.752, 8.146, 8.558, 9.003, 9.480, 9.995,
    ],
    [
        1.945, 2.034, 2.127, 2.225, 2.326, 2.432, 2.545, 2.666, 2.794, 2.930, 3.073, 3.227, 3.391,
        3.568, 3.753, 3.948, 4.154, 4.373, 4.604, 4.854, 5.114, 5.387, 5.670, 5.969, 6.284, 6.619,
        6.980, 7.357, 7.747, 8.151, 8.579, 9.025, 9.500, 10.010, 10.566,
    ],
    [
        1.936, 2.025, 2.118, 2.215, 2.316, 2.423, 2.536, 2.657, 2.786, 2.922, 3.067, 3.221, 3.387,
        3.566, 3.752, 3.950, 4.158, 4.379, 4.614, 4.868, 5.131, 5.408, 5.696, 5.998, 6.319, 6.660,
        7.029, 7.413, 7.811, 8.226, 8.659, 9.116, 9.601, 10.122, 10.697,
    ],
    [
        1.942, 2.032, 2.126, 2.224, 2.326, 2.433, 2.548, 2.670, 2.801, 2.939, 3.086, 3.243, 3.411,
        3.592, 3.781, 3.981, 4.192, 4.417, 4.656, 4.913, 5.180, 5.460, 5.752, 6.059, 6.384, 6.730,
        7.104, 7.494, 7.899, 8.318, 8.758, 9.221, 9.713, 10.243, 10.827,
    ],
];

/// What sets the in-control run length of every detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunLengthTarget {
    /// Expected false alerts a month for the whole deployment.
    Budget {
        /// Expected false alerts a month over every (stream, detector) pair.
        false_alerts_per_month: f64,
    },
    /// Expert override: the same in-control run length, in cases, for every
    /// stream and detector (the fleet's false-alert rate then grows with its
    /// streams and case rates).
    Arl0 {
        /// In-control run length in cases.
        cases: f64,
    },
}

impl RunLengthTarget {
    /// In-control run length in days for each (stream, detector) pair when
    /// `pairs` run; None for a per-case override.
    pub fn days(&self, pairs: usize) -> Option<f64> {
        match *self {
            RunLengthTarget::Budget {
                false_alerts_per_month,
            } => Some(DAYS_PER_MONTH * pairs.max(1) as f64 / false_alerts_per_month),
            RunLengthTarget::Arl0 { .. } => None,
        }
    }

    /// Target in-control run length in cases of one pair on a stream with
    /// `cases_per_day`, rounded to a fixed log grid.
    pub fn cases(&self, pairs: usize, cases_per_day: f64) -> f64 {
        let raw = match *self {
            RunLengthTarget::Budget { .. } => {
                self.days(pairs).unwrap_or(1.0) * cases_per_day.max(MIN_CASES_PER_DAY)
            }
            RunLengthTarget::Arl0 { cases } => cases,
        };
        10f64.powf((raw.log10() * TARGET_STEPS_PER_DECADE).round() / TARGET_STEPS_PER_DECADE)
    }
}

/// Floor of the case rate used for a stream's target (a stream that has only
/// just started has no rate yet).
pub const MIN_CASES_PER_DAY: f64 = 1.0;

/// Fractional position of `x` on an increasing axis, clamped to its ends.
fn position(axis: &[f64], x: f64) -> (usize, f64) {
    let last = axis.len() - 1;
    if x <= axis[0] {
        return (0, 0.0);
    }
    if x >= axis[last] {
        return (last - 1, 1.0);
    }
    let i = (0..last).find(|&i| x <= axis[i + 1]).unwrap_or(last - 1);
    (i, (x - axis[i]) / (axis[i + 1] - axis[i]))
}

/// Width at which a table row reaches `log_target`, or None past its end.
fn width_for(row: &[f64], log_target: f64) -> Option<f64> {
    // Run lengths grow with the width: the row is increasing.
    let (i, f) = position(row, log_target);
    (log_target <= row[row.len() - 1])
        .then(|| EWMA_TABLE_WIDTHS[i] + f * (EWMA_TABLE_WIDTHS[i + 1] - EWMA_TABLE_WIDTHS[i]))
}

fn size_position(baseline_cases: usize) -> (usize, f64) {
    let sizes: Vec<f64> = EWMA_TABLE_SIZES.iter().map(|&n| (n as f64).ln()).collect();
    position(&sizes, (baseline_cases.max(1) as f64).ln())
}

/// The PIT-EWMA limit for a baseline size and a target run length.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EwmaLimit {
    /// Limit width in units of the EWMA's asymptotic sd.
    pub width: f64,
    /// Alarm when the EWMA falls below this.
    pub limit: f64,
    /// The target lies beyond the calibrated range: the widest limit is used
    /// and the false-alert rate may exceed the budget.
    pub beyond_table: bool,
}

/// The narrowest limit at which both the 10th percentile over baselines and
/// the harmonic mean of the in-control run length reach `target_cases`.
pub fn ewma_limit(baseline_cases: usize, target_cases: f64) -> EwmaLimit {
    let log_target = target_cases.max(1.0).log10();
    let row_width = |r: usize| {
        let widths = [
            width_for(&EWMA_Q10_LOG10[r], log_target),
            width_for(&EWMA_HARMONIC_LOG10[r], log_target),
        ];
        match widths {
            [Some(a), Some(b)] => (a.max(b), false),
            _ => (EWMA_TABLE_WIDTHS[EWMA_TABLE_WIDTHS.len() - 1], true),
        }
    };
    let (i, f) = size_position(baseline_cases);
    let (a, beyond_a) = row_width(i);
    let (b, beyond_b) = row_width(i + 1);
    let width = a + f * (b - a);
    EwmaLimit {
        width,
        limit: 0.5 - width * ewma_sigma(LAMBDA),
        beyond_table: beyond_a || beyond_b,
    }
}

/// Harmonic mean over baselines of the in-control run length of PIT-EWMA at
/// `width`: the run length that sets its expected false-alert rate.
pub fn ewma_harmonic_run_length(baseline_cases: usize, width: f64) -> f64 {
    let (i, f) = size_position(baseline_cases);
    let (j, g) = position(&EWMA_TABLE_WIDTHS, width);
    let at = |r: usize| {
        EWMA_HARMONIC_LOG10[r][j] + g * (EWMA_HARMONIC_LOG10[r][j + 1] - EWMA_HARMONIC_LOG10[r][j])
    };
    10f64.powf(at(i) + f * (at(i + 1) - at(i)))
}

/// Bernoulli CUSUM of failures on an integer lattice: +`up` on a failure, −1
/// otherwise, alarm above `h`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CusumDesign {
    /// Dice below this is a failure.
    pub threshold: f64,
    /// Failures (Dice below `threshold`) in the baseline.
    pub baseline_failures: u64,
    /// Cases in the baseline.
    pub baseline_cases: u64,
    /// Upper 90 % confidence bound of the baseline failure rate: the limits
    /// hold for every true rate up to it.
    pub p0: f64,
    /// The failure rate the chart is tuned to detect (2 · p0).
    pub p1: f64,
    /// Added on a failure: the log-likelihood ratio of p1 to p0, in units of the
    /// step down (−1) of a non-failure, rounded, at least 1.
    pub up: u32,
    /// Alarm when the statistic exceeds this.
    pub h: u32,
}

/// Points of the failure rate's posterior averaged over.
const POSTERIOR_POINTS: usize = 24;

/// Mid-bin quantiles of the failure rate after `k` failures in `n` cases
/// (posterior Beta(k + 1, n − k + 1) under a uniform prior), `points` of them.
fn posterior_quantiles(k: u64, n: u64, points: usize) -> Vec<f64> {
    // P(rate ≤ p) = P(Binomial(n + 1, p) ≥ k + 1).
    let cdf = |p: f64| 1.0 - super::calibration::binomial_cdf(k, n + 1, p);
    (0..points)
        .map(|j| {
            let q = (j as f64 + 0.5) / points as f64;
            let (mut lo, mut hi) = (0.0, 1.0);
            for _ in 0..50 {
                let mid = (lo + hi) / 2.0;
                if cdf(mid) < q { lo = mid } else { hi = mid }
            }
            (lo + hi) / 2.0
        })
        .collect()
}

/// Largest tuned failure rate: above it the chart cannot tell a rise.
const MAX_P1: f64 = 0.95;

/// Most cases a CUSUM may need, on average, to alarm at its tuned rate (twice
/// the baseline's bound). A baseline with few failures leaves rates close to
/// the tuned one plausible, so a large target then needs an `h` in the
/// thousands: a chart that slow would alarm long after the guard rail and
/// PIT-EWMA, and designing it costs seconds per stream.
pub const MAX_CUSUM_DELAY: f64 = 5_000.0;

impl CusumDesign {
    /// The chart for a baseline with `failures` of `cases` below `threshold`
    /// and a target run length; None where it could not fire meaningfully:
    /// the baseline fails so often that a doubling is beyond 95 %, or the
    /// chart would need more than [`MAX_CUSUM_DELAY`] cases to alarm at it.
    pub fn new(threshold: f64, failures: u64, cases: u64, target_cases: f64) -> Option<Self> {
        let p0 = rate_upper_bound(failures, cases, 1.0 - BASELINE_RISK);
        let p1 = 2.0 * p0;
        if p1 >= MAX_P1 {
            return None;
        }
        // Log-likelihood-ratio steps, scaled so a success is exactly −1.
        let down = ((1.0 - p0) / (1.0 - p1)).ln();
        let up = ((p1 / p0).ln() / down).round().max(1.0) as u32;
        // Smallest h such that the run length at the bound p0 reaches the
        // target, and so does the mean false-alarm rate over the failure rates
        // the baseline leaves plausible (without the second, the few baselines
        // that happen to see fewer failures than the true rate would dominate
        // the expected number of false alerts). Run lengths grow with h.
        let plausible = posterior_quantiles(failures, cases, POSTERIOR_POINTS);
        let reaches = |h: u32| {
            let at_bound = cusum_run_length(up as usize, h as usize, p0) >= target_cases;
            at_bound && {
                let rate = plausible
                    .iter()
                    .map(|&p| 1.0 / cusum_run_length(up as usize, h as usize, p))
                    .sum::<f64>()
                    / plausible.len() as f64;
                rate <= 1.0 / target_cases
            }
        };
        // A chart that would need more than MAX_CUSUM_DELAY cases to alarm at
        // the rate it is tuned for is left out. That run length grows with h
        // (at least h / up cases), so the search ends.
        let delay = |h: u32| cusum_run_length(up as usize, h as usize, p1);
        let mut hi = up.max(1);
        while !reaches(hi) {
            if delay(hi) > MAX_CUSUM_DELAY {
                return None;
            }
            hi *= 2;
        }
        let mut lo = 0;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if reaches(mid) { hi = mid } else { lo = mid }
        }
        if delay(hi) > MAX_CUSUM_DELAY {
            return None;
        }
        Some(CusumDesign {
            threshold,
            baseline_failures: failures,
            baseline_cases: cases,
            p0,
            p1,
            up,
            h: hi,
        })
    }

    /// Mean in-control run length at a true failure rate.
    pub fn run_length(&self, failure_rate: f64) -> f64 {
        cusum_run_length(self.up as usize, self.h as usize, failure_rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::calibration::ewma_conditional_run_lengths;

    #[test]
    fn budget_targets_grow_with_pairs_and_case_rate() {
        let budget = RunLengthTarget::Budget {
            false_alerts_per_month: 1.0,
        };
        // 68 pairs: one false alert per 30.44 · 68 days ≈ 2070 days.
        assert!((budget.days(68).unwrap() - 2069.9).abs() < 0.1);
        let site = budget.cases(68, 8.0);
        let pooled = budget.cases(68, 24.0);
        assert!((site / 16_559.0 - 1.0).abs() < 0.07, "{site}");
        assert!((pooled / site - 3.0).abs() < 0.4, "{pooled}");
        let arl0 = RunLengthTarget::Arl0 { cases: 250_000.0 };
        assert!((arl0.cases(1000, 1000.0) / 250_000.0 - 1.0).abs() < 0.06);
    }

    #[test]
    fn the_table_row_for_200_cases_is_reproduced() {
        // 100 fresh baselines (other seeds than the table's 400) at two widths.
        let widths = [EWMA_TABLE_WIDTHS[12], EWMA_TABLE_WIDTHS[20]];
        let lengths = ewma_conditional_run_lengths(LAMBDA, 200, &widths, 100, 99);
        for (k, column) in [12, 20].into_iter().enumerate() {
            let mut values: Vec<f64> = lengths.iter().map(|l| l[k]).collect();
            values.sort_by(f64::total_cmp);
            let q10 = values[10].log10();
            assert!(
                (q10 - EWMA_Q10_LOG10[1][column]).abs() < 0.15,
                "width {}: {q10} vs table {}",
                EWMA_TABLE_WIDTHS[column],
                EWMA_Q10_LOG10[1][column]
            );
        }
    }

    #[test]
    fn ewma_limits_widen_with_the_target_and_narrow_with_the_baseline() {
        let small = ewma_limit(200, 1e4);
        let large = ewma_limit(200, 1e6);
        let big_baseline = ewma_limit(2000, 1e6);
        assert!(large.width > small.width && big_baseline.width < large.width);
        assert!(!large.beyond_table);
        assert!(ewma_limit(100, 1e12).beyond_table);
        // Both criteria hold at the chosen width.
        assert!(ewma_harmonic_run_length(200, large.width) >= 0.99e6);
    }

    #[test]
    fn cusum_design_reaches_its_target_at_the_rate_bound() {
        let design = CusumDesign::new(0.5, 6, 200, 20_000.0).unwrap();
        assert!((design.p0 - 0.052064).abs() < 1e-5);
        assert!(design.run_length(design.p0) >= 20_000.0);
        let plausible = posterior_quantiles(6, 200, POSTERIOR_POINTS);
        let mean_rate = |d: &CusumDesign| {
            plausible
                .iter()
                .map(|&p| 1.0 / d.run_length(p))
                .sum::<f64>()
                / plausible.len() as f64
        };
        assert!(mean_rate(&design) <= 1.0 / 20_000.0);
        // The smallest such h: one less fails one of the two criteria.
        let lower = CusumDesign {
            h: design.h - 1,
            ..design
        };
        assert!(lower.run_length(design.p0) < 20_000.0 || mean_rate(&lower) > 1.0 / 20_000.0);
        // A true rate below the bound only lengthens the run.
        assert!(design.run_length(0.03) > design.run_length(design.p0));
        assert!(CusumDesign::new(0.5, 120, 200, 1000.0).is_none());
    }

    #[test]
    fn a_cusum_too_slow_at_its_tuned_rate_is_left_out() {
        // A baseline without failures leaves rates near the tuned one
        // plausible: a moderate target still gets a chart within the delay…
        let moderate = CusumDesign::new(0.5, 0, 200, 1e5).unwrap();
        assert!(moderate.run_length(moderate.p1) <= MAX_CUSUM_DELAY);
        // …a large one would need h in the thousands, so none runs, while a
        // baseline with a few failures keeps its chart at the same target.
        assert!(CusumDesign::new(0.5, 0, 200, 1e7).is_none());
        let informed = CusumDesign::new(0.5, 3, 200, 1e7).unwrap();
        assert!(informed.run_length(informed.p1) <= MAX_CUSUM_DELAY);
        assert!(informed.run_length(informed.p0) >= 1e7);
    }
}
