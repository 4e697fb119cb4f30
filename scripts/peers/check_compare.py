#!/usr/bin/env python3
"""Checks segwatch's version-comparison statistics (engine module `compare`)
against scipy and a numpy reference bootstrap.

Generated Dice-like cases (fixed seed) cover every branch: Wilcoxon exact
(n <= 50, no ties or zeros), exact over sign flips with ties or zeros (n <= 13,
scipy's permutation test), asymptotic (ties and n > 13, or n > 50), all-zero
differences; Mann-Whitney exact (a sample of at most 8, no ties) and asymptotic
(ties, or both samples above 8), all values tied. For each:
- `scipy.stats.wilcoxon(x, y)` and `scipy.stats.mannwhitneyu(x, y)` with their
  defaults: statistics must agree exactly, p-values to 1e-12 relative;
- the reference bootstrap below (SplitMix64, the algorithm documented in
  engine/src/compare/bootstrap.rs): bounds must agree to 1e-12;
- `scipy.stats.bootstrap(method='percentile')` (its own random stream): bounds
  must agree within 5 % of the interval's width (Monte-Carlo error of the
  2.5 % quantile of 10,000 resamples is about 1 % of the width per run).

segwatch's values come from `cargo run --example compare_fixture`. With
--write-expected the cases and scipy/reference values are stored in
engine/tests/fixtures/compare/expected.json, which the engine's tests read.

A development check, not run by CI:
    python3 -m venv /opt/stats && /opt/stats/bin/pip install numpy scipy
    /opt/stats/bin/python scripts/peers/check_compare.py [--write-expected]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import scipy
from scipy import stats

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURE = os.path.join(ROOT, "engine", "tests", "fixtures", "compare", "expected.json")


def splitmix64(seed, count):
    """The first `count` outputs of SplitMix64 from state `seed` (vectorised:
    the state after k steps is seed + k * gamma)."""
    k = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + k * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def below(z, n):
    """(z * n) >> 64 without 128-bit integers (n < 2**32)."""
    n = np.uint64(n)
    hi, lo = z >> np.uint64(32), z & np.uint64(0xFFFFFFFF)
    return ((hi * n + ((lo * n) >> np.uint64(32))) >> np.uint64(32)).astype(np.int64)


def resampled_means(values, draws):
    """Mean of each row of drawn values, summed in draw order."""
    picked = values[below(draws, len(values))]
    return picked.cumsum(axis=1)[:, -1] / len(values)


def quantile(s, p):
    h = (len(s) - 1) * p
    i = int(np.floor(h))
    return s[i] + (h - i) * (s[i + 1] - s[i]) if i + 1 < len(s) else s[i]


def reference_distribution(case):
    a, b, B = np.array(case["a"]), np.array(case["b"]), case["resamples"]
    if case["kind"] == "paired":
        d = b - a
        stat = resampled_means(d, splitmix64(case["seed"], B * len(d)).reshape(B, len(d)))
    elif case["kind"] == "unpaired":
        draws = splitmix64(case["seed"], B * (len(a) + len(b))).reshape(B, len(a) + len(b))
        stat = resampled_means(b, draws[:, len(a):]) - resampled_means(a, draws[:, :len(a)])
    else:  # lower bound of the mean of b
        stat = resampled_means(b, splitmix64(case["seed"], B * len(b)).reshape(B, len(b)))
    return np.sort(stat)


def scipy_bootstrap(case):
    a, b = np.array(case["a"]), np.array(case["b"])
    common = dict(n_resamples=case["resamples"], confidence_level=case["level"],
                  method="percentile", rng=np.random.default_rng(case["seed"]))
    if case["kind"] == "paired":
        res = stats.bootstrap((a, b), lambda a, b, axis: np.mean(b - a, axis=axis),
                              paired=True, **common)
    elif case["kind"] == "unpaired":
        res = stats.bootstrap((a, b), lambda a, b, axis: np.mean(b, axis=axis) - np.mean(a, axis=axis),
                              **common)
    else:
        res = stats.bootstrap((b,), np.mean, alternative="greater", **common)
    return res.confidence_interval


def dice(rng, n, decimals=None):
    values = np.clip(rng.beta(8, 2, n), 0, 1)
    return values if decimals is None else np.round(values, decimals)


def shifted(rng, a, shift, sd, decimals=None):
    values = np.clip(a + rng.normal(shift, sd, len(a)), 0, 1)
    return values if decimals is None else np.round(values, decimals)


def generate():
    rng = np.random.default_rng(15)
    wilcoxon = []

    def paired(name, n, shift, sd, decimals=None, zeros=0):
        a = dice(rng, n, decimals)
        b = shifted(rng, a, shift, sd, decimals)
        b[:zeros] = a[:zeros]
        wilcoxon.append({"name": name, "x": b.tolist(), "y": a.tolist()})

    paired("exact_n1", 1, 0.0, 0.05)
    paired("exact_n8", 8, -0.02, 0.05)
    paired("exact_n20", 20, -0.03, 0.05)
    paired("exact_n30_strong_shift", 30, -0.2, 0.02)
    paired("exact_n50", 50, 0.01, 0.05)
    paired("flips_ties_zeros_n10", 10, 0.0, 0.03, decimals=2)
    paired("flips_ties_n13", 13, -0.02, 0.03, decimals=2)
    paired("flips_zeros_n12", 12, -0.02, 0.05, zeros=3)
    paired("asymptotic_ties_n14", 14, -0.02, 0.03, decimals=2)
    paired("asymptotic_ties_zeros_n40", 40, -0.01, 0.02, decimals=2)
    paired("asymptotic_n51", 51, -0.01, 0.05)
    paired("asymptotic_n200", 200, -0.005, 0.03, decimals=3)
    a = dice(rng, 6)
    wilcoxon.append({"name": "all_zero_n6", "x": a.tolist(), "y": a.tolist()})

    mann_whitney = []

    def unpaired(name, n1, n2, shift, decimals=None, same=False, scale=1.0):
        y = dice(rng, n2, decimals)
        x = np.full(n1, y[0]) if same else np.clip(scale * dice(rng, n1, decimals) + shift, 0, 1)
        if same:
            y[:] = y[0]
        mann_whitney.append({"name": name, "x": x.tolist(), "y": y.tolist()})

    unpaired("exact_1_1", 1, 1, 0.0)
    unpaired("exact_5_7", 5, 7, -0.05)
    unpaired("exact_8_30", 8, 30, -0.05)
    unpaired("exact_40_3", 40, 3, 0.02)
    unpaired("exact_8_8_separated", 8, 8, 0.0, scale=0.1)
    unpaired("asymptotic_ties_6_6", 6, 6, -0.05, decimals=1)
    unpaired("asymptotic_9_9", 9, 9, -0.05)
    unpaired("asymptotic_ties_40_55", 40, 55, -0.03, decimals=2)
    unpaired("all_tied_4_5", 4, 5, 0.0, same=True)

    bootstrap = []

    def boot(name, kind, n_a, n_b, shift, resamples=10000, level=0.95, seed=15):
        a = dice(rng, n_a)
        b = shifted(rng, a, shift, 0.05) if kind == "paired" else dice(rng, n_b) + shift
        bootstrap.append({"name": name, "kind": kind, "a": a.tolist(), "b": np.clip(b, 0, 1).tolist(),
                          "resamples": resamples, "level": level, "seed": seed})

    boot("paired_n30", "paired", 30, 30, -0.02)
    boot("paired_n12_level90", "paired", 12, 12, 0.01, resamples=4000, level=0.9, seed=7)
    boot("unpaired_25_35", "unpaired", 25, 35, -0.03, seed=2026)
    boot("unpaired_5_60", "unpaired", 5, 60, 0.0, resamples=2000, seed=1)
    boot("lower_bound_n40", "lower_bound", 0, 40, 0.0)
    boot("lower_bound_n9_level99", "lower_bound", 0, 9, 0.0, level=0.99, seed=99)
    for case in bootstrap:
        if case["kind"] == "lower_bound":
            case["a"] = []
    return wilcoxon, mann_whitney, bootstrap


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--write-expected", action="store_true",
                        help=f"store the cases and scipy's/the reference's values in {FIXTURE}")
    args = parser.parse_args()
    wilcoxon, mann_whitney, bootstrap = generate()
    for case in wilcoxon:
        res = stats.wilcoxon(case["x"], case["y"])
        case["statistic"], case["p_value"] = float(res.statistic), float(res.pvalue)
    for case in mann_whitney:
        res = stats.mannwhitneyu(case["x"], case["y"])
        case["statistic"], case["p_value"] = float(res.statistic), float(res.pvalue)
    scipy_ci = {}
    for case in bootstrap:
        s = reference_distribution(case)
        level = case["level"]
        if case["kind"] == "lower_bound":
            case["lower"] = float(quantile(s, 1.0 - level))
            assert abs(case["lower"] - np.percentile(s, 100 * (1.0 - level))) <= 1e-15
        else:
            case["lower"] = float(quantile(s, (1.0 - level) / 2.0))
            case["upper"] = float(quantile(s, (1.0 + level) / 2.0))
        scipy_ci[case["name"]] = scipy_bootstrap(case)
    expected = {"generator": "scripts/peers/check_compare.py",
                "scipy": scipy.__version__, "numpy": np.__version__,
                "wilcoxon": wilcoxon, "mann_whitney": mann_whitney, "bootstrap": bootstrap}

    with tempfile.TemporaryDirectory() as tmp:
        path = FIXTURE if args.write_expected else os.path.join(tmp, "expected.json")
        with open(path, "w") as out:
            json.dump(expected, out, indent=1)
            out.write("\n")
        ours = json.loads(subprocess.run(
            ["cargo", "run", "--release", "-q", "-p", "segwatch-engine", "--example", "compare_fixture", "--", path],
            cwd=ROOT, check=True, capture_output=True, text=True).stdout)

    failures = 0
    worst = {}

    def check(kind, name, what, mine, theirs, tol, relative):
        nonlocal failures
        diff = abs(mine - theirs) / (abs(theirs) if relative and theirs else 1.0)
        worst[kind] = max(worst.get(kind, 0.0), diff)
        ok = diff <= tol
        failures += not ok
        print(f"{kind} {name} {what}: segwatch {mine:.17g}  peer {theirs:.17g}  {'ok' if ok else 'MISMATCH'}")

    for test in ("wilcoxon", "mann_whitney"):
        for case, mine in zip(expected[test], ours[test]):
            check(test + " statistic", case["name"], "statistic", mine["statistic"], case["statistic"], 0.0, False)
            check(test + " p", case["name"], f"p ({mine['method']})", mine["p_value"], case["p_value"], 1e-12, True)
    for case, mine in zip(bootstrap, ours["bootstrap"]):
        low, high = scipy_ci[case["name"]]
        # A one-sided bound's "width": twice its distance from the mean.
        width = case["upper"] - case["lower"] if "upper" in case else 2 * (np.mean(case["b"]) - case["lower"])
        for bound, scipy_value in (("lower", low), ("upper", high)):
            if bound not in case:
                continue
            check("bootstrap reference", case["name"], bound, mine[bound], case[bound], 1e-12, False)
            check("bootstrap scipy", case["name"], bound, mine[bound], scipy_value, 0.05 * width, False)
    for kind, diff in worst.items():
        print(f"max difference, {kind}: {diff:.3g}")
    print(f"{failures} mismatches")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
