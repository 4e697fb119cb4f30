//! Two-sided rank tests with scipy's defaults: the Wilcoxon signed-rank test
//! of paired values ([`wilcoxon`], as `scipy.stats.wilcoxon(x, y)`) and the
//! Mann–Whitney U test of independent samples ([`mann_whitney_u`], as
//! `scipy.stats.mannwhitneyu(x, y)`), scipy 1.17.
//!
//! Ranks are average ranks; values tie when they compare equal (`-0.0 == 0.0`).
//! Rank sums are kept as integers (twice the average rank is an integer), so
//! exact p-values are ratios of exact counts.

use std::cmp::Ordering;

use serde::Serialize;

use super::{CompareError, check_finite};

/// How the p-value was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// From the exact null distribution of the statistic.
    Exact,
    /// From the normal approximation with tie correction.
    Asymptotic,
}

/// A test's statistic and two-sided p-value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TestResult {
    /// The statistic as scipy reports it (see each test).
    pub statistic: f64,
    /// Two-sided p-value, in [0, 1].
    pub p_value: f64,
    /// Exact or asymptotic.
    pub method: Method,
}

/// Average ranks of values, doubled so that they are integers.
struct Ranks {
    /// Twice the average rank of each value, in input order (1-based ranks).
    doubled: Vec<u64>,
    /// Sizes of the groups of tied values (1 for a value tied with none).
    ties: Vec<u64>,
}

impl Ranks {
    fn of(values: &[f64]) -> Ranks {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&i, &j| values[i].partial_cmp(&values[j]).unwrap_or(Ordering::Equal));
        let mut doubled = vec![0; values.len()];
        let mut ties = Vec::new();
        let mut start = 0;
        while start < order.len() {
            let first = values[order[start]];
            let end = start + order[start..].partition_point(|&i| values[i] == first);
            let size = (end - start) as u64;
            // Ranks start+1 ..= end average to (2·start + size + 1) / 2.
            for &i in &order[start..end] {
                doubled[i] = 2 * start as u64 + size + 1;
            }
            ties.push(size);
            start = end;
        }
        Ranks { doubled, ties }
    }

    fn has_ties(&self) -> bool {
        self.ties.iter().any(|&t| t > 1)
    }

    /// Σ (t³ − t) over the tie groups.
    fn tie_term(&self) -> f64 {
        self.ties.iter().map(|&t| (t * t * t - t) as f64).sum()
    }
}

/// Upper tail of the standard normal distribution.
fn normal_sf(z: f64) -> f64 {
    libm::erfc(z / std::f64::consts::SQRT_2) / 2.0
}

/// Wilcoxon signed-rank test of the differences `x[i] − y[i]`, two-sided.
///
/// Matches `scipy.stats.wilcoxon(x, y)` (`zero_method='wilcox'`,
/// `correction=False`, `method='auto'`):
/// - zero differences are dropped before ranking (they still count in `n`
///   for the choice of method below); the absolute non-zero differences get
///   average ranks; the statistic is `min(R+, R−)`, the smaller of the rank
///   sums of the positive and negative differences.
/// - `n` = number of pairs. Exact p when n ≤ 50 without ties or zeros, and
///   also when n ≤ 13 with them (scipy runs a permutation test there, which
///   enumerates all 2ⁿ sign flips: the same exact conditional distribution of
///   `R+` over the tied ranks, computed here by counting subsets). Then
///   `p = 2·min(P(R+ ≤ r), P(R+ ≥ r))`, at most 1.
/// - Otherwise the normal approximation without continuity correction:
///   `z = (R+ − m(m+1)/4) / sqrt((m(m+1)(2m+1) − Σ(t³−t)/2) / 24)` over the
///   `m` non-zero differences and their tie groups `t`; `p = 2·Φ(−|z|)`.
///
/// One deliberate difference: when n > 13 and every difference is zero, scipy
/// returns NaN; this returns statistic 0 and p = 1 (no evidence of a shift),
/// as scipy does for n ≤ 13.
pub fn wilcoxon(x: &[f64], y: &[f64]) -> Result<TestResult, CompareError> {
    if x.len() != y.len() {
        return Err(CompareError::LengthMismatch {
            x: x.len(),
            y: y.len(),
        });
    }
    if x.is_empty() {
        return Err(CompareError::Empty);
    }
    check_finite(x)?;
    check_finite(y)?;
    let n = x.len();
    let nonzero: Vec<f64> = x
        .iter()
        .zip(y)
        .map(|(a, b)| a - b)
        .filter(|&d| d != 0.0)
        .collect();
    let abs: Vec<f64> = nonzero.iter().map(|d| d.abs()).collect();
    let ranks = Ranks::of(&abs);
    let plus2: u64 = nonzero
        .iter()
        .zip(&ranks.doubled)
        .filter(|(d, _)| **d > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total2: u64 = ranks.doubled.iter().sum();
    let statistic = plus2.min(total2 - plus2) as f64 / 2.0;
    let exact = n <= 13 || (n <= 50 && !ranks.has_ties() && nonzero.len() == n);
    let (p_value, method) = if exact {
        (sign_flip_p(&ranks.doubled, plus2), Method::Exact)
    } else {
        let m = nonzero.len() as f64;
        let mean = m * (m + 1.0) * 0.25;
        let variance = (m * (m + 1.0) * (2.0 * m + 1.0) - ranks.tie_term() / 2.0) / 24.0;
        let p = if variance > 0.0 {
            let z = (plus2 as f64 / 2.0 - mean) / variance.sqrt();
            2.0 * normal_sf(z.abs())
        } else {
            1.0
        };
        (p, Method::Asymptotic)
    };
    Ok(TestResult {
        statistic,
        p_value,
        method,
    })
}

/// Two-sided p of the observed doubled rank sum `observed` of the positive
/// differences, over all 2^m equally likely sign assignments to the ranks.
/// At most 50 ranks here, so counts stay below 2⁵⁰ and the ratio is exact.
fn sign_flip_p(doubled: &[u64], observed: u64) -> f64 {
    let total: u64 = doubled.iter().sum();
    // ways[s]: number of subsets of the ranks whose doubled sum is s.
    let mut ways = vec![0u64; total as usize + 1];
    ways[0] = 1;
    let mut reach = 0;
    for &r in doubled {
        let r = r as usize;
        reach += r;
        for s in (r..=reach).rev() {
            ways[s] += ways[s - r];
        }
    }
    let at_most: u64 = ways[..=observed as usize].iter().sum();
    let at_least: u64 = ways[observed as usize..].iter().sum();
    let sign_patterns = (1u64 << doubled.len()) as f64;
    ((2 * at_most.min(at_least)) as f64 / sign_patterns).min(1.0)
}

/// Mann–Whitney U test of independent samples `x` and `y`, two-sided.
///
/// Matches `scipy.stats.mannwhitneyu(x, y)` (`use_continuity=True`,
/// `method='auto'`): the statistic is U of `x`, `R_x − n_x(n_x+1)/2` with
/// `R_x` the sum of the average ranks of `x` in the pooled sample; the p-value
/// uses `U = max(U_x, n_x·n_y − U_x)`.
/// - Exact when either sample has at most 8 values and no values tie:
///   `p = 2·P(U' ≥ U)` over the C(n_x+n_y, n_x) equally likely arrangements,
///   at most 1.
/// - Otherwise the normal approximation with continuity and tie correction:
///   `z = (U − n_x n_y/2 − 1/2) / sqrt(n_x n_y/12 · (n+1 − Σ(t³−t)/(n(n−1))))`,
///   `p = 2·Φ(−z)`, at most 1 (p = 1 when every value ties, where the
///   denominator is 0).
pub fn mann_whitney_u(x: &[f64], y: &[f64]) -> Result<TestResult, CompareError> {
    if x.is_empty() || y.is_empty() {
        return Err(CompareError::Empty);
    }
    check_finite(x)?;
    check_finite(y)?;
    let (n1, n2) = (x.len() as u64, y.len() as u64);
    let pooled: Vec<f64> = x.iter().chain(y).copied().collect();
    let ranks = Ranks::of(&pooled);
    let rank_sum2: u64 = ranks.doubled[..x.len()].iter().sum();
    let u1_2 = rank_sum2 - n1 * (n1 + 1);
    let statistic = u1_2 as f64 / 2.0;
    let larger2 = u1_2.max(2 * n1 * n2 - u1_2);
    let (p_value, method) = if n1.min(n2) <= 8 && !ranks.has_ties() {
        // No ties: U is an integer.
        let p = 2.0 * arrangements_up_to(x.len(), y.len(), n1 * n2 - larger2 / 2)?;
        (p.min(1.0), Method::Exact)
    } else {
        let (f1, f2) = (n1 as f64, n2 as f64);
        let n = f1 + f2;
        let spread = f1 * f2 / 12.0 * ((n + 1.0) - ranks.tie_term() / (n * (n - 1.0)));
        let p = if spread > 0.0 {
            let z = (larger2 as f64 / 2.0 - f1 * f2 / 2.0 - 0.5) / spread.sqrt();
            2.0 * normal_sf(z)
        } else {
            1.0
        };
        (p.min(1.0), Method::Asymptotic)
    };
    Ok(TestResult {
        statistic,
        p_value,
        method,
    })
}

/// P(U ≤ k) under the null for samples of sizes `n1` and `n2` (one of them at
/// most 8): the number of arrangements with U ≤ k over C(n1+n2, n1). The
/// counts are the coefficients of the Gaussian binomial coefficient
/// ∏ᵢ₌₁..ₘ (1 − q^(n+i)) / (1 − q^i), m = min, n = max, built one factor pair
/// at a time so that every partial product is itself a count (never negative).
fn arrangements_up_to(n1: usize, n2: usize, k: u64) -> Result<f64, CompareError> {
    let too_large = CompareError::ExactTooLarge { n1, n2 };
    let (m, n) = (n1.min(n2), n1.max(n2));
    let k = k as usize;
    let mut ways = vec![0u128; k + 1];
    ways[0] = 1;
    let mut total: u128 = 1;
    for i in 1..=m {
        // Divide by (1 − q^i): running sums with stride i.
        for u in i..=k {
            ways[u] = ways[u].checked_add(ways[u - i]).ok_or(too_large.clone())?;
        }
        // Multiply by (1 − q^(n+i)), high degrees first to read old values.
        for u in (n + i..=k).rev() {
            ways[u] -= ways[u - n - i];
        }
        // C(n+i, i) = C(n+i−1, i−1)·(n+i)/i, exact at every step.
        total = total
            .checked_mul((n + i) as u128)
            .ok_or(too_large.clone())?
            / i as u128;
    }
    let mut at_most: u128 = 0;
    for &w in &ways {
        at_most = at_most.checked_add(w).ok_or(too_large.clone())?;
    }
    Ok(at_most as f64 / total as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wilcoxon_of(d: &[f64]) -> TestResult {
        wilcoxon(d, &vec![0.0; d.len()]).unwrap()
    }

    #[test]
    fn average_ranks_of_ties() {
        let ranks = Ranks::of(&[3.0, 1.0, 3.0, 2.0, 3.0, -0.0, 0.0]);
        // 0 and −0 tie at ranks 1–2; 1 → 3; 2 → 4; the 3s share ranks 5–7.
        assert_eq!(ranks.doubled, vec![12, 6, 12, 8, 12, 3, 3]);
        assert_eq!(ranks.ties, vec![2, 1, 1, 3]);
        assert_eq!(ranks.tie_term(), 6.0 + 24.0);
    }

    /// d = (1, 2, 3, −4): R+ = 6, R− = 4. Over the 16 sign patterns the
    /// subset sums of {1, 2, 3, 4} are ≥ 6 in 7 (6: {2,4} {1,2,3}; 7: {3,4}
    /// {1,2,4}; 8, 9, 10 once each), so p = 2·7/16.
    #[test]
    fn wilcoxon_exact_by_enumeration() {
        let r = wilcoxon_of(&[1.0, 2.0, 3.0, -4.0]);
        assert_eq!(r.statistic, 4.0);
        assert_eq!(r.p_value, 14.0 / 16.0);
        assert_eq!(r.method, Method::Exact);
        // All five positive: only the all-plus pattern reaches R+ = 15.
        let r = wilcoxon_of(&[0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!((r.statistic, r.p_value), (0.0, 2.0 / 32.0));
    }

    /// d = (0, 1, 1, 2): the zero is dropped, the ties rank 1.5 each and 2
    /// ranks 3; only one of the 8 sign patterns of the non-zero differences
    /// reaches R+ = 6, so p = 2/8 (scipy's 2⁴ sign flips count each twice).
    #[test]
    fn wilcoxon_with_zeros_and_ties_is_exact_up_to_13_pairs() {
        let r = wilcoxon_of(&[0.0, 1.0, 1.0, 2.0]);
        assert_eq!(
            (r.statistic, r.p_value, r.method),
            (0.0, 0.25, Method::Exact)
        );
        let ties_14: Vec<f64> = (0..14).map(|i| (i % 7) as f64 + 1.0).collect();
        assert_eq!(wilcoxon_of(&ties_14).method, Method::Asymptotic);
        let distinct_50: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(wilcoxon_of(&distinct_50).method, Method::Exact);
        let distinct_51: Vec<f64> = (1..=51).map(f64::from).collect();
        assert_eq!(wilcoxon_of(&distinct_51).method, Method::Asymptotic);
    }

    #[test]
    fn wilcoxon_all_zero_differences_give_p_one() {
        for n in [1, 13, 14, 60] {
            let x = vec![0.8; n];
            let r = wilcoxon(&x, &x).unwrap();
            assert_eq!((r.statistic, r.p_value), (0.0, 1.0), "n = {n}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        assert_eq!(wilcoxon(&[], &[]), Err(CompareError::Empty));
        assert_eq!(
            wilcoxon(&[1.0], &[1.0, 2.0]),
            Err(CompareError::LengthMismatch { x: 1, y: 2 })
        );
        assert!(matches!(
            wilcoxon(&[1.0, f64::NAN], &[1.0, 2.0]),
            Err(CompareError::NotFinite { index: 1, .. })
        ));
        assert_eq!(mann_whitney_u(&[1.0], &[]), Err(CompareError::Empty));
        assert!(matches!(
            mann_whitney_u(&[1.0], &[f64::INFINITY]),
            Err(CompareError::NotFinite { index: 0, .. })
        ));
    }

    /// x = (1, 2), y = (3, 4, 5): U_x = 0; of the C(5, 2) = 10 arrangements
    /// only this one has U ≤ 0, so p = 2/10. x = (1, 4), y = (2, 3): U = 2 is
    /// the centre, 2·P(U ≥ 2) = 2·4/6 is capped at 1.
    #[test]
    fn mann_whitney_exact_by_enumeration() {
        let r = mann_whitney_u(&[1.0, 2.0], &[3.0, 4.0, 5.0]).unwrap();
        assert_eq!(
            (r.statistic, r.p_value, r.method),
            (0.0, 0.2, Method::Exact)
        );
        let r = mann_whitney_u(&[1.0, 4.0], &[2.0, 3.0]).unwrap();
        assert_eq!((r.statistic, r.p_value), (2.0, 1.0));
    }

    #[test]
    fn mann_whitney_all_tied_gives_p_one() {
        let r = mann_whitney_u(&[0.5; 9], &[0.5; 12]).unwrap();
        assert_eq!((r.statistic, r.p_value), (54.0, 1.0));
        assert_eq!(r.method, Method::Asymptotic);
    }

    #[test]
    fn mann_whitney_exact_beyond_128_bits_is_an_error() {
        let x: Vec<f64> = (0..8).map(|i| -f64::from(i)).collect();
        let y: Vec<f64> = (1..=300_000).map(f64::from).collect();
        assert_eq!(
            mann_whitney_u(&x, &y),
            Err(CompareError::ExactTooLarge { n1: 8, n2: 300_000 })
        );
    }

    /// p by enumerating every sign pattern of the differences.
    fn brute_wilcoxon_p(d: &[f64]) -> f64 {
        let abs: Vec<f64> = d.iter().map(|v| v.abs()).collect();
        let rank = |v: f64| {
            let below = abs.iter().filter(|&&a| a < v && a != 0.0).count() as f64;
            let equal = abs.iter().filter(|&&a| a == v).count() as f64;
            below + (equal + 1.0) / 2.0
        };
        let plus = |signs: u32| -> f64 {
            (0..d.len())
                .filter(|&i| d[i] != 0.0 && (signs >> i) & 1 == 1)
                .map(|i| rank(abs[i]))
                .sum()
        };
        let observed: u32 = (0..d.len()).filter(|&i| d[i] > 0.0).map(|i| 1 << i).sum();
        let r = plus(observed);
        let all: Vec<f64> = (0..1u32 << d.len()).map(plus).collect();
        let share = |f: &dyn Fn(f64) -> bool| all.iter().filter(|&&v| f(v)).count() as f64;
        let n = all.len() as f64;
        (2.0 * share(&|v| v <= r).min(share(&|v| v >= r)) / n).min(1.0)
    }

    /// p by enumerating every split of the pooled values into x and y.
    fn brute_mann_whitney_p(x: &[f64], y: &[f64]) -> f64 {
        let pooled: Vec<f64> = x.iter().chain(y).copied().collect();
        let u = |mask: u32| -> f64 {
            let (mine, other): (Vec<usize>, Vec<usize>) =
                (0..pooled.len()).partition(|&i| (mask >> i) & 1 == 1);
            let mut u = 0.0;
            for &i in &mine {
                for &j in &other {
                    u += if pooled[i] > pooled[j] { 1.0 } else { 0.0 };
                }
            }
            u
        };
        let splits: Vec<f64> = (0..1u32 << pooled.len())
            .filter(|m| m.count_ones() as usize == x.len())
            .map(u)
            .collect();
        let ux = u((1 << x.len()) - 1);
        let larger = ux.max((x.len() * y.len()) as f64 - ux);
        let at_least = splits.iter().filter(|&&v| v >= larger).count() as f64;
        (2.0 * at_least / splits.len() as f64).min(1.0)
    }

    fn values(max_len: usize) -> impl Strategy<Value = Vec<f64>> {
        // Small integers: ties and zeros are common.
        prop::collection::vec((-4i32..=4).prop_map(f64::from), 1..max_len)
    }

    proptest! {
        #[test]
        fn wilcoxon_exact_matches_enumeration(d in values(11)) {
            let r = wilcoxon_of(&d);
            prop_assert_eq!(r.method, Method::Exact);
            prop_assert!((r.p_value - brute_wilcoxon_p(&d)).abs() <= 1e-15);
        }

        #[test]
        fn mann_whitney_exact_matches_enumeration(
            x in prop::collection::hash_set(1i32..1000, 1..6),
            y in prop::collection::hash_set(1000i32..2000, 1..7),
            flip in any::<u32>(),
        ) {
            // Distinct magnitudes, so no ties whatever the signs; flipping
            // some signs interleaves the samples.
            let sign = |i: usize| if (flip >> (i % 32)) & 1 == 1 { -1.0 } else { 1.0 };
            let x: Vec<f64> = x.into_iter().enumerate().map(|(i, v)| f64::from(v) * sign(i)).collect();
            let y: Vec<f64> = y.into_iter().enumerate().map(|(i, v)| f64::from(v) * sign(i + 7)).collect();
            let r = mann_whitney_u(&x, &y).unwrap();
            prop_assert_eq!(r.method, Method::Exact);
            prop_assert!((r.p_value - brute_mann_whitney_p(&x, &y)).abs() <= 1e-15);
        }

        #[test]
        fn p_in_unit_interval_and_symmetric(x in values(70), shift in values(70)) {
            let n = x.len().min(shift.len());
            let y: Vec<f64> = x[..n].iter().zip(&shift).map(|(a, s)| a + s / 8.0).collect();
            let (ab, ba) = (wilcoxon(&x[..n], &y).unwrap(), wilcoxon(&y, &x[..n]).unwrap());
            prop_assert!((0.0..=1.0).contains(&ab.p_value));
            prop_assert_eq!(ab, ba);
            let (ab, ba) = (mann_whitney_u(&x, &shift).unwrap(), mann_whitney_u(&shift, &x).unwrap());
            prop_assert!((0.0..=1.0).contains(&ab.p_value));
            prop_assert_eq!(ab.p_value, ba.p_value);
            prop_assert_eq!(ab.statistic + ba.statistic, (x.len() * shift.len()) as f64);
        }
    }
}
