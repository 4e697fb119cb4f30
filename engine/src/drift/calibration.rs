//! Exact in-control run lengths of the detectors, used to set their limits:
//! a Markov chain for PIT-EWMA fed a discrete input (Brook & Evans), a banded
//! solve for the lattice CUSUM, the binomial upper confidence bound of a
//! failure rate, and the saddlepoint tail of a window mean for the guard rail.
//!
//! Written here because each is a few lines of textbook numerics on small
//! systems that no maintained crate offers in this form (a dense linear-algebra
//! crate would add a BLAS build for one 150 × 150 solve).

/// Solves `a · x = b` for a dense `n × n` row-major `a` by Gaussian elimination
/// with partial pivoting.
fn solve_dense(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Vec<f64> {
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i * n + col].abs().total_cmp(&a[j * n + col].abs()))
            .unwrap_or(col);
        if pivot != col {
            for k in 0..n {
                a.swap(col * n + k, pivot * n + k);
            }
            b.swap(col, pivot);
        }
        let diagonal = a[col * n + col];
        for row in col + 1..n {
            let factor = a[row * n + col] / diagonal;
            if factor != 0.0 {
                for k in col..n {
                    a[row * n + k] -= factor * a[col * n + k];
                }
                b[row] -= factor * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row * n + k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row * n + row];
    }
    x
}

/// Markov-chain cells of the EWMA's in-control region.
pub const EWMA_CELLS: usize = 150;

/// Mean run length of an EWMA `z ← (1 − λ) z + λ u` started at 0.5 that alarms
/// when `z < limit`, for inputs `u` drawn from the discrete distribution
/// `atoms` (value, probability). The in-control region (limit, 1] is cut into
/// `cells` cells.
pub fn ewma_run_length(lambda: f64, limit: f64, atoms: &[(f64, f64)], cells: usize) -> f64 {
    let width = (1.0 - limit) / cells as f64;
    let cell_of = |z: f64| -> Option<usize> {
        (z >= limit).then(|| (((z - limit) / width) as usize).min(cells - 1))
    };
    // (I − Q) L = 1, with Q the transitions between in-control cells.
    let mut a = vec![0.0; cells * cells];
    for i in 0..cells {
        a[i * cells + i] = 1.0;
        let centre = limit + (i as f64 + 0.5) * width;
        for &(u, p) in atoms {
            if let Some(j) = cell_of((1.0 - lambda) * centre + lambda * u) {
                a[i * cells + j] -= p;
            }
        }
    }
    let lengths = solve_dense(a, vec![1.0; cells], cells);
    1.0 + atoms
        .iter()
        .filter_map(|&(u, p)| cell_of(0.5 * (1.0 - lambda) + lambda * u).map(|j| p * lengths[j]))
        .sum::<f64>()
}

/// Mean run length, from 0, of a lattice CUSUM `S ← max(0, S + up)` on a failure
/// (probability `p`) and `S ← max(0, S − 1)` otherwise, alarming when `S > h`.
///
/// The system has one sub-diagonal and `up` super-diagonals, so elimination
/// costs O(h · up).
pub fn cusum_run_length(up: usize, h: usize, p: f64) -> f64 {
    let n = h + 1;
    let q = 1.0 - p;
    // Row i: L_i − q L_{max(i−1,0)} − p L_{i+up} (if i + up ≤ h) = 1.
    // band[i · w + k] holds the coefficient of L_{i+k}, k in 0..=up (one flat
    // buffer: h reaches thousands when the baseline has few failures).
    let w = up + 1;
    let mut band = vec![0.0; n * w];
    let mut rhs = vec![1.0; n];
    for i in 0..n {
        band[i * w] = if i == 0 { 1.0 - q } else { 1.0 };
        if i + up <= h {
            band[i * w + up] -= p;
        }
    }
    // Forward elimination of the sub-diagonal −q.
    for i in 1..n {
        let factor = -q / band[(i - 1) * w];
        // Row i −= factor · row (i − 1): row i−1 covers columns i−1 ..= i−1+up;
        // column i−1+k is offset k−1 in row i.
        for k in 1..=up.min(n - i) {
            band[i * w + k - 1] -= factor * band[(i - 1) * w + k];
        }
        rhs[i] -= factor * rhs[i - 1];
    }
    let mut lengths = vec![0.0; n];
    for i in (0..n).rev() {
        let tail: f64 = (1..=up.min(n - 1 - i))
            .map(|k| band[i * w + k] * lengths[i + k])
            .sum();
        lengths[i] = (rhs[i] - tail) / band[i * w];
    }
    lengths[0]
}

/// ln of the binomial coefficient C(n, k).
fn ln_choose(n: u64, k: u64) -> f64 {
    (1..=k).map(|i| ((n - k + i) as f64 / i as f64).ln()).sum()
}

/// P(X ≤ k) for X ~ Binomial(n, p).
pub fn binomial_cdf(k: u64, n: u64, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    (0..=k.min(n))
        .map(|i| (ln_choose(n, i) + i as f64 * p.ln() + (n - i) as f64 * (1.0 - p).ln()).exp())
        .sum::<f64>()
        .min(1.0)
}

/// One-sided Clopper–Pearson upper bound of a rate after `k` events in `n`
/// trials: the p with P(X ≤ k | p) = 1 − `confidence`.
pub fn rate_upper_bound(k: u64, n: u64, confidence: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..60 {
        let mid = (lo + hi) / 2.0;
        if binomial_cdf(k, n, mid) > 1.0 - confidence {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Standard normal CDF, accurate in relative terms far into the tails.
fn normal_cdf(x: f64) -> f64 {
    libm::erfc(-x / std::f64::consts::SQRT_2) / 2.0
}

/// P(mean of `n` independent draws from the discrete law `atoms` (value,
/// probability; probabilities summing to 1) ≤ `x`), by the Lugannani–Rice
/// saddlepoint approximation (accurate far into the tail, where the normal
/// approximation is not: a few failures pull a window mean down much more
/// often than a normal law says).
pub fn mean_lower_tail(atoms: &[(f64, f64)], n: usize, x: f64) -> f64 {
    let mean: f64 = atoms.iter().map(|(v, p)| v * p).sum();
    let min = atoms
        .iter()
        .filter(|a| a.1 > 0.0)
        .map(|a| a.0)
        .fold(f64::INFINITY, f64::min);
    if x < min {
        return 0.0;
    }
    if x >= mean {
        return 1.0;
    }
    // K(θ) = ln E e^{θ v} and its first two derivatives.
    let shifted = |theta: f64| -> (f64, f64, f64) {
        // Weights relative to the largest exponent keep e^{θ v} in range.
        let top = atoms
            .iter()
            .map(|a| theta * a.0)
            .fold(f64::NEG_INFINITY, f64::max);
        let (mut s0, mut s1, mut s2) = (0.0, 0.0, 0.0);
        for &(v, p) in atoms {
            let w = p * (theta * v - top).exp();
            s0 += w;
            s1 += w * v;
            s2 += w * v * v;
        }
        let k = top + s0.ln();
        let k1 = s1 / s0;
        (k, k1, s2 / s0 - k1 * k1)
    };
    // Solve K'(θ) = x for θ < 0 by Newton steps kept
    // inside a shrinking bracket (K' is increasing).
    let (mut lo, mut hi): (f64, f64) = (-1.0, 0.0);
    while shifted(lo).1 > x && lo > -1e7 {
        hi = lo;
        lo *= 2.0;
    }
    let mut theta: f64 = (lo + hi) / 2.0;
    for _ in 0..100 {
        let (_, k1, k2) = shifted(theta);
        if k1 > x {
            hi = theta;
        } else {
            lo = theta;
        }
        let newton = theta - (k1 - x) / k2;
        let next = if newton > lo && newton < hi && k2 > 0.0 {
            newton
        } else {
            (lo + hi) / 2.0
        };
        if (next - theta).abs() <= 1e-12 * (1.0 + theta.abs()) {
            theta = next;
            break;
        }
        theta = next;
    }
    let (k, _, k2) = shifted(theta);
    let n = n as f64;
    let w = -(2.0 * n * (theta * x - k)).max(0.0).sqrt();
    let u = theta * (n * k2).sqrt();
    if w.abs() < 1e-8 || u.abs() < 1e-12 {
        return 0.5;
    }
    let density = (-w * w / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
    (normal_cdf(w) + density * (1.0 / w - 1.0 / u)).clamp(0.0, 1.0)
}

/// The window mean below which [`mean_lower_tail`] falls under `alpha`.
pub fn mean_lower_quantile(atoms: &[(f64, f64)], n: usize, alpha: f64) -> f64 {
    let min = atoms.iter().map(|a| a.0).fold(f64::INFINITY, f64::min);
    let mean: f64 = atoms.iter().map(|(v, p)| v * p).sum();
    let (mut lo, mut hi) = (min, mean);
    for _ in 0..40 {
        let mid = (lo + hi) / 2.0;
        if mean_lower_tail(atoms, n, mid) > alpha {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    lo
}

/// In-control run lengths of PIT-EWMA conditional on the baseline, for `draws`
/// baselines of `n` values and each limit width in `widths` (limit = 0.5 − width ·
/// σ∞ with σ∞ the asymptotic standard deviation of the EWMA of a uniform input).
///
/// Given its baseline, a new case's rank among the n baseline values falls in
/// gap i with probability D_i, the i-th spacing of the true distribution at the
/// baseline values; whatever that distribution, (D_0 … D_n) is uniform on the
/// simplex (Dirichlet(1, …, 1)). So the conditional run length depends only on
/// D, whose law is known exactly: the percentiles over draws of D are the
/// run-length percentiles over baselines, for every continuous Dice law.
/// Returns `result[draw][width]`.
pub fn ewma_conditional_run_lengths(
    lambda: f64,
    n: usize,
    widths: &[f64],
    draws: usize,
    seed: u64,
) -> Vec<Vec<f64>> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Exp1};
    let sigma = ewma_sigma(lambda);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..draws)
        .map(|_| {
            let gaps: Vec<f64> = (0..=n).map(|_| Exp1.sample(&mut rng)).collect();
            let total: f64 = gaps.iter().sum();
            // Mid-rank percentile of a value in gap i (i baseline values below it).
            let atoms: Vec<(f64, f64)> = gaps
                .iter()
                .enumerate()
                .map(|(i, g)| (i as f64 / n as f64, g / total))
                .collect();
            widths
                .iter()
                .map(|w| ewma_run_length(lambda, 0.5 - w * sigma, &atoms, EWMA_CELLS))
                .collect()
        })
        .collect()
}

/// Asymptotic standard deviation of the EWMA of a uniform(0, 1) input.
pub fn ewma_sigma(lambda: f64) -> f64 {
    (lambda / (2.0 - lambda) / 12.0).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn uniform_atoms(n: usize) -> Vec<(f64, f64)> {
        (0..=n)
            .map(|i| (i as f64 / n as f64, 1.0 / (n + 1) as f64))
            .collect()
    }

    #[test]
    fn ewma_chain_agrees_with_simulation() {
        let (lambda, limit) = (0.1, 0.31);
        let atoms = uniform_atoms(200);
        let chain = ewma_run_length(lambda, limit, &atoms, EWMA_CELLS);
        let mut rng = StdRng::seed_from_u64(11);
        let runs = 4000;
        let mut total = 0u64;
        for _ in 0..runs {
            let mut z = 0.5;
            let mut t = 0u64;
            loop {
                t += 1;
                let u = rng.random_range(0..=200) as f64 / 200.0;
                z = (1.0 - lambda) * z + lambda * u;
                if z < limit {
                    break;
                }
            }
            total += t;
        }
        let simulated = total as f64 / runs as f64;
        // Run lengths are roughly geometric: the standard error is ≈ mean/√runs (1.6 %).
        assert!(
            (chain / simulated - 1.0).abs() < 0.06,
            "chain {chain:.0}, simulated {simulated:.0}"
        );
    }

    #[test]
    fn cusum_lattice_agrees_with_simulation_and_a_dense_solve() {
        let (up, h, p) = (12usize, 40usize, 0.03);
        let banded = cusum_run_length(up, h, p);
        // The same system, dense.
        let n = h + 1;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            a[i * n + i] += 1.0;
            a[i * n + i.saturating_sub(1)] -= 1.0 - p;
            if i + up <= h {
                a[i * n + i + up] -= p;
            }
        }
        let dense = solve_dense(a, vec![1.0; n], n)[0];
        assert!((banded / dense - 1.0).abs() < 1e-9, "{banded} vs {dense}");
        let mut rng = StdRng::seed_from_u64(5);
        let runs = 4000;
        let mut total = 0u64;
        for _ in 0..runs {
            let (mut s, mut t) = (0usize, 0u64);
            loop {
                t += 1;
                s = if rng.random::<f64>() < p {
                    s + up
                } else {
                    s.saturating_sub(1)
                };
                if s > h {
                    break;
                }
            }
            total += t;
        }
        let simulated = total as f64 / runs as f64;
        assert!(
            (banded / simulated - 1.0).abs() < 0.06,
            "banded {banded:.0}, simulated {simulated:.0}"
        );
    }

    #[test]
    fn clopper_pearson_bounds() {
        // Zero events: (1 − p)^n = 0.1 → p = 1 − 0.1^(1/n).
        let n = 200;
        let expected = 1.0 - 0.1f64.powf(1.0 / n as f64);
        assert!((rate_upper_bound(0, n, 0.9) - expected).abs() < 1e-9);
        // Six events in 200 at 90 %: 0.052064, by bisection on the exact binomial
        // tail summed with integer binomial coefficients (Python's math.comb).
        let upper = rate_upper_bound(6, 200, 0.9);
        assert!((binomial_cdf(6, 200, upper) - 0.1).abs() < 1e-9);
        assert!((upper - 0.052064).abs() < 1e-5, "{upper}");
    }

    #[test]
    fn saddlepoint_tail_matches_an_exact_convolution() {
        // Values 0 (probability 0.1) and 1 (0.9): the mean of n draws is Binomial / n.
        let values = [(1.0, 0.9), (0.0, 0.1)];
        let n = 40;
        for k in [24u64, 28, 31, 33] {
            let x = k as f64 / n as f64;
            // P(successes ≤ k) with success probability 0.9; the saddlepoint
            // approximates the continuity-corrected lattice tail, so compare
            // against the mid-point of P(≤ k) and P(≤ k − 1).
            let exact = (binomial_cdf(k, n as u64, 0.9) + binomial_cdf(k - 1, n as u64, 0.9)) / 2.0;
            let approx = mean_lower_tail(&values, n, x);
            assert!(
                (approx / exact).ln().abs() < 0.35,
                "k {k}: saddlepoint {approx:e}, exact {exact:e}"
            );
        }
        let q = mean_lower_quantile(&values, n, 1e-4);
        assert!((mean_lower_tail(&values, n, q) - 1e-4).abs() < 1e-6);
    }
}
