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
pub const LAMBDA: f64 = 0.1;
/// Baseline sizes of the PIT-EWMA table.
pub const EWMA_TABLE_SIZES: [usize; 7] = [100, 200, 300, 500, 1000, 2000, 5000];
/// Limit widths of the PIT-EWMA table, in units of the EWMA's asymptotic sd.
pub const EWMA_TABLE_WIDTHS: [f64; 33] = {
    let mut w = [0.0; 33];
    let mut i = 0;
    while i < 33 {
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
pub const EWMA_Q10_LOG10: [[f64; 33]; 7] = [
    [
        1.508, 1.585, 1.658, 1.736, 1.818, 1.903, 2.000, 2.092, 2.189, 2.299, 2.408, 2.545, 2.677,
        2.837, 3.002, 3.175, 3.349, 3.557, 3.822, 4.037, 4.264, 4.528, 4.838, 5.135, 5.471, 5.841,
        6.224, 6.645, 7.081, 7.535, 8.093, 8.662, 9.218,
    ],
    [
        1.592, 1.667, 1.746, 1.828, 1.913, 2.006, 2.103, 2.207, 2.323, 2.443, 2.568, 2.707, 2.857,
        3.018, 3.187, 3.382, 3.568, 3.793, 4.076, 4.287, 4.546, 4.821, 5.127, 5.474, 5.824, 6.191,
        6.614, 7.063, 7.518, 8.035, 8.590, 9.187, 9.802,
    ],
    [
        1.619, 1.698, 1.780, 1.863, 1.951, 2.045, 2.146, 2.252, 2.366, 2.490, 2.621, 2.763, 2.915,
        3.083, 3.262, 3.459, 3.651, 3.881, 4.130, 4.379, 4.643, 4.927, 5.241, 5.580, 5.943, 6.328,
        6.741, 7.169, 7.665, 8.158, 8.716, 9.334, 9.995,
    ],
    [
        1.642, 1.726, 1.810, 1.897, 1.990, 2.089, 2.192, 2.301, 2.424, 2.552, 2.686, 2.838, 2.996,
        3.166, 3.349, 3.557, 3.763, 3.988, 4.230, 4.499, 4.762, 5.062, 5.380, 5.736, 6.115, 6.510,
        6.945, 7.389, 7.903, 8.428, 8.991, 9.591, 10.239,
    ],
    [
        1.716, 1.803, 1.891, 1.985, 2.083, 2.186, 2.296, 2.411, 2.543, 2.678, 2.827, 2.988, 3.154,
        3.334, 3.530, 3.742, 3.972, 4.219, 4.481, 4.760, 5.049, 5.361, 5.698, 6.071, 6.454, 6.859,
        7.309, 7.792, 8.306, 8.862, 9.444, 10.083, 10.804,
    ],
    [
        1.725, 1.811, 1.903, 1.996, 2.097, 2.202, 2.315, 2.437, 2.568, 2.707, 2.857, 3.019, 3.188,
        3.374, 3.574, 3.789, 4.018, 4.260, 4.528, 4.809, 5.106, 5.424, 5.763, 6.141, 6.517, 6.928,
        7.377, 7.860, 8.398, 8.945, 9.536, 10.185, 10.898,
    ],
    [
        1.766, 1.855, 1.949, 2.046, 2.150, 2.260, 2.375, 2.500, 2.631, 2.772, 2.925, 3.092, 3.267,
        3.456, 3.662, 3.879, 4.110, 4.358, 4.629, 4.914, 5.219, 5.542, 5.894, 6.267, 6.660, 7.080,
        7.531, 8.028, 8.567, 9.126, 9.716, 10.362, 11.083,
    ],
];

#[allow(clippy::approx_constant)] // measured values, one of which happens to be near 2π
pub const EWMA_HARMONIC_LOG10: [[f64; 33]; 7] = [
    [
        1.749, 1.836, 1.922, 2.011, 2.103, 2.201, 2.305, 2.411, 2.524, 2.643, 2.764, 2.906, 3.049,
        3.203, 3.360, 3.532, 3.708, 3.899, 4.141, 4.328, 4.547, 4.783, 5.030, 5.303, 5.579, 5.876,
        6.194, 6.524, 6.900, 7.277, 7.703, 8.171, 8.583,
    ],
    [
        1.789, 1.877, 1.969, 2.064, 2.164, 2.269, 2.381, 2.497, 2.628, 2.759, 2.900, 3.056, 3.219,
        3.394, 3.579, 3.782, 3.987, 4.216, 4.511, 4.730, 5.000, 5.286, 5.596, 5.938, 6.283, 6.657,
        7.058, 7.496, 7.953, 8.442, 8.958, 9.528, 10.122,
    ],
    [
        1.784, 1.873, 1.965, 2.060, 2.160, 2.268, 2.381, 2.501, 2.628, 2.765, 2.912, 3.071, 3.236,
        3.415, 3.608, 3.812, 4.027, 4.260, 4.515, 4.777, 5.056, 5.350, 5.670, 6.018, 6.375, 6.758,
        7.165, 7.609, 8.095, 8.590, 9.131, 9.701, 10.334,
    ],
    [
        1.780, 1.872, 1.965, 2.061, 2.164, 2.272, 2.387, 2.509, 2.640, 2.779, 2.929, 3.091, 3.260,
        3.444, 3.642, 3.853, 4.072, 4.312, 4.567, 4.840, 5.123, 5.429, 5.758, 6.113, 6.479, 6.872,
        7.293, 7.753, 8.250, 8.767, 9.310, 9.912, 10.566,
    ],
    [
        1.816, 1.907, 2.003, 2.102, 2.209, 2.321, 2.440, 2.568, 2.705, 2.850, 3.007, 3.177, 3.355,
        3.546, 3.753, 3.974, 4.207, 4.457, 4.726, 5.012, 5.312, 5.633, 5.980, 6.355, 6.743, 7.158,
        7.607, 8.095, 8.623, 9.173, 9.761, 10.401, 11.112,
    ],
    [
        1.807, 1.899, 1.995, 2.094, 2.200, 2.313, 2.432, 2.560, 2.697, 2.843, 3.001, 3.171, 3.350,
        3.544, 3.752, 3.975, 4.210, 4.462, 4.735, 5.024, 5.328, 5.654, 6.005, 6.386, 6.781, 7.201,
        7.658, 8.158, 8.696, 9.258, 9.854, 10.510, 11.240,
    ],
    [
        1.812, 1.904, 2.001, 2.101, 2.208, 2.321, 2.441, 2.571, 2.709, 2.856, 3.016, 3.188, 3.369,
        3.565, 3.775, 4.001, 4.238, 4.494, 4.769, 5.061, 5.369, 5.698, 6.054, 6.438, 6.837, 7.265,
        7.724, 8.229, 8.773, 9.342, 9.948, 10.610, 11.350,
    ],
];

/// What sets the in-control run length of every detector.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunLengthTarget {
    /// Expected false alerts a month for the whole deployment.
    Budget { false_alerts_per_month: f64 },
    /// Expert override: the same in-control run length, in cases, for every
    /// stream and detector (the fleet's false-alert rate then grows with its
    /// streams and case rates).
    Arl0 { cases: f64 },
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
fn width_for(row: &[f64; 33], log_target: f64) -> Option<f64> {
    // Run lengths grow with the width: the row is increasing.
    let (i, f) = position(row, log_target);
    (log_target <= row[32])
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
            _ => (EWMA_TABLE_WIDTHS[32], true),
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
    /// Failures in the baseline, and its size.
    pub baseline_failures: u64,
    pub baseline_cases: u64,
    /// Upper 90 % confidence bound of the baseline failure rate: the limits
    /// hold for every true rate up to it.
    pub p0: f64,
    /// The failure rate the chart is tuned to detect (2 · p0).
    pub p1: f64,
    pub up: u32,
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

impl CusumDesign {
    /// The chart for a baseline with `failures` of `cases` below `threshold`
    /// and a target run length; None where it could not fire meaningfully
    /// (the baseline fails so often that a doubling is beyond 95 %).
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
        let mut hi = up.max(1);
        while !reaches(hi) && hi < (1 << 22) {
            hi *= 2;
        }
        let mut lo = 0;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if reaches(mid) { hi = mid } else { lo = mid }
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
}
