//! Percentile bootstrap of a mean and of a difference of means, seeded and
//! fully specified so that another implementation reproduces it to the last
//! bit (`scripts/peers/check_compare.py` has one in numpy).
//!
//! The algorithm, for `resamples` = B, confidence `level` and `seed`:
//! 1. Random numbers: SplitMix64 from state `seed`, each output
//!    `state += 0x9E3779B97F4A7C15; z = state;
//!    z = (z ^ z>>30)·0xBF58476D1CE4E5B9; z = (z ^ z>>27)·0x94D049BB133111EB;
//!    z ^ z>>31` (wrapping u64). An index below `n` is `(z·n) >> 64`
//!    (128-bit product).
//! 2. For each resample r = 0..B in turn, draw the indices of a sample with
//!    replacement: one sample of the values ([`mean_lower_bound`]), one of the
//!    pairs ([`paired_mean_difference`]), or `n_a` indices of A then `n_b` of B
//!    ([`unpaired_mean_difference`]); the resample's statistic is the mean of
//!    the drawn values, each sum taken in draw order, divided by the count.
//! 3. Sort the B statistics; the quantile at probability p is
//!    `s[i] + (h − i)·(s[i+1] − s[i])` with `h = (B−1)·p`, `i = ⌊h⌋`
//!    (numpy's default `linear`). A two-sided interval takes
//!    p = (1 − level)/2 and (1 + level)/2; a one-sided lower bound p = 1 − level.
//!
//! SplitMix64 rather than `rand`'s `StdRng`: `StdRng` does not promise the same
//! stream across `rand` versions, which would break values pinned in tests.

use serde::{Deserialize, Serialize};

use super::{CompareError, check_finite};

/// How to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bootstrap {
    /// Number of resamples B (at least 1).
    pub resamples: usize,
    /// Confidence level, strictly between 0 and 1.
    pub level: f64,
    /// Seed of the SplitMix64 stream.
    pub seed: u64,
}

impl Default for Bootstrap {
    /// 10 000 resamples, 95 %, seed 15.
    fn default() -> Self {
        Bootstrap {
            resamples: 10_000,
            level: 0.95,
            seed: 15,
        }
    }
}

impl Bootstrap {
    fn check(&self) -> Result<(), CompareError> {
        if self.resamples == 0 {
            return Err(CompareError::InvalidSettings(
                "resamples must be at least 1",
            ));
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(CompareError::InvalidSettings(
                "confidence level must be strictly between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// A two-sided confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// Lower bound.
    pub lower: f64,
    /// Upper bound.
    pub upper: f64,
}

impl Interval {
    fn of(sorted: &[f64], level: f64) -> Interval {
        Interval {
            lower: quantile(sorted, (1.0 - level) / 2.0),
            upper: quantile(sorted, (1.0 + level) / 2.0),
        }
    }
}

/// SplitMix64 (Steele, Lea & Flood, 2014).
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An index below `n` (> 0).
    fn below(&mut self, n: usize) -> usize {
        ((self.next() as u128 * n as u128) >> 64) as usize
    }

    /// Mean of `values` at `values.len()` indices drawn with replacement.
    fn resampled_mean(&mut self, values: &[f64]) -> f64 {
        let sum: f64 = (0..values.len())
            .map(|_| values[self.below(values.len())])
            .sum();
        sum / values.len() as f64
    }
}

/// Quantile of sorted, non-empty values by linear interpolation (type 7).
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let h = (sorted.len() - 1) as f64 * p;
    let i = h.floor() as usize;
    match sorted.get(i + 1) {
        Some(&next) => sorted[i] + (h - i as f64) * (next - sorted[i]),
        None => sorted[i],
    }
}

/// Sorted statistics of `settings.resamples` resamples.
fn distribution(
    settings: &Bootstrap,
    mut statistic: impl FnMut(&mut SplitMix64) -> f64,
) -> Vec<f64> {
    let mut rng = SplitMix64(settings.seed);
    let mut values: Vec<f64> = (0..settings.resamples)
        .map(|_| statistic(&mut rng))
        .collect();
    values.sort_by(f64::total_cmp);
    values
}

fn checked(values: &[f64]) -> Result<(), CompareError> {
    if values.is_empty() {
        return Err(CompareError::Empty);
    }
    check_finite(values)
}

/// Percentile interval of the mean of `b[i] − a[i]`, resampling pairs.
pub fn paired_mean_difference(
    a: &[f64],
    b: &[f64],
    settings: &Bootstrap,
) -> Result<Interval, CompareError> {
    if a.len() != b.len() {
        return Err(CompareError::LengthMismatch {
            x: a.len(),
            y: b.len(),
        });
    }
    checked(a)?;
    checked(b)?;
    settings.check()?;
    let differences: Vec<f64> = a.iter().zip(b).map(|(a, b)| b - a).collect();
    let sorted = distribution(settings, |rng| rng.resampled_mean(&differences));
    Ok(Interval::of(&sorted, settings.level))
}

/// Percentile interval of `mean(b) − mean(a)`, resampling each group
/// independently (A first, then B, in each resample).
pub fn unpaired_mean_difference(
    a: &[f64],
    b: &[f64],
    settings: &Bootstrap,
) -> Result<Interval, CompareError> {
    checked(a)?;
    checked(b)?;
    settings.check()?;
    let sorted = distribution(settings, |rng| {
        let mean_a = rng.resampled_mean(a);
        rng.resampled_mean(b) - mean_a
    });
    Ok(Interval::of(&sorted, settings.level))
}

/// One-sided lower confidence bound of the mean of `values` at
/// `settings.level`: the (1 − level) quantile of the bootstrap means.
pub fn mean_lower_bound(values: &[f64], settings: &Bootstrap) -> Result<f64, CompareError> {
    checked(values)?;
    settings.check()?;
    let sorted = distribution(settings, |rng| rng.resampled_mean(values));
    Ok(quantile(&sorted, 1.0 - settings.level))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(resamples: usize, level: f64, seed: u64) -> Bootstrap {
        Bootstrap {
            resamples,
            level,
            seed,
        }
    }

    /// The first outputs from seed 0 in the reference implementation
    /// (Vigna's `splitmix64.c`).
    #[test]
    fn splitmix64_reference_outputs() {
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next(), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(rng.next(), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn indices_stay_below_n_and_cover_it() {
        let mut rng = SplitMix64(3);
        let mut seen = [0; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| (850..1150).contains(&c)), "{seen:?}");
    }

    /// Sorted (1, 2, 3, 4): h = 3·0.25 = 0.75 → 1 + 0.75·(2 − 1).
    #[test]
    fn quantile_interpolates_linearly() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&s, 0.25), 1.75);
        assert_eq!(quantile(&s, 0.0), 1.0);
        assert_eq!(quantile(&s, 1.0), 4.0);
        assert_eq!(quantile(&[5.0], 0.3), 5.0);
    }

    #[test]
    fn constant_differences_give_a_point_interval() {
        let a = [0.9, 0.8, 0.7, 0.6];
        let b: Vec<f64> = a.iter().map(|v| v - 0.25).collect();
        let i = paired_mean_difference(&a, &b, &Bootstrap::default()).unwrap();
        assert!((i.lower + 0.25).abs() < 1e-15 && (i.upper + 0.25).abs() < 1e-15);
        assert_eq!(mean_lower_bound(&[0.7; 5], &Bootstrap::default()), Ok(0.7));
    }

    #[test]
    fn swapping_paired_versions_mirrors_the_interval() {
        let a = [0.91, 0.85, 0.62, 0.77, 0.88, 0.95, 0.70];
        let b = [0.89, 0.86, 0.55, 0.79, 0.80, 0.93, 0.71];
        let s = settings(2000, 0.9, 8);
        let ab = paired_mean_difference(&a, &b, &s).unwrap();
        let ba = paired_mean_difference(&b, &a, &s).unwrap();
        assert!((ab.lower + ba.upper).abs() < 1e-12 && (ab.upper + ba.lower).abs() < 1e-12);
        assert!(ab.lower < ab.upper);
    }

    #[test]
    fn the_seed_decides_the_draws() {
        let a = [0.91, 0.85, 0.62, 0.77, 0.88];
        let b = [0.89, 0.86, 0.55, 0.79, 0.80, 0.75];
        let run = |seed| unpaired_mean_difference(&a, &b, &settings(500, 0.95, seed)).unwrap();
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    /// A wider level gives a wider interval, and the one-sided 95 % bound
    /// lies inside the two-sided 95 % interval of the same resamples.
    #[test]
    fn levels_nest() {
        let x = [0.91, 0.85, 0.62, 0.77, 0.88, 0.95, 0.70, 0.81];
        let zeros = [0.0; 8];
        let i90 = paired_mean_difference(&zeros, &x, &settings(4000, 0.9, 1)).unwrap();
        let i99 = paired_mean_difference(&zeros, &x, &settings(4000, 0.99, 1)).unwrap();
        assert!(i99.lower < i90.lower && i90.upper < i99.upper);
        let i95 = paired_mean_difference(&zeros, &x, &settings(4000, 0.95, 1)).unwrap();
        let bound = mean_lower_bound(&x, &settings(4000, 0.95, 1)).unwrap();
        assert!(i95.lower < bound && bound < i95.upper);
    }

    #[test]
    fn bad_input_is_an_error() {
        let ok = Bootstrap::default();
        assert_eq!(mean_lower_bound(&[], &ok), Err(CompareError::Empty));
        assert_eq!(
            paired_mean_difference(&[0.5], &[0.5, 0.6], &ok),
            Err(CompareError::LengthMismatch { x: 1, y: 2 })
        );
        assert!(matches!(
            unpaired_mean_difference(&[0.5], &[f64::NAN], &ok),
            Err(CompareError::NotFinite { index: 0, .. })
        ));
        for bad in [
            settings(0, 0.95, 1),
            settings(10, 1.0, 1),
            settings(10, f64::NAN, 1),
        ] {
            assert!(matches!(
                mean_lower_bound(&[0.5], &bad),
                Err(CompareError::InvalidSettings(_))
            ));
        }
    }
}
