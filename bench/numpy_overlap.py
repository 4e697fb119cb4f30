#!/usr/bin/env python3
"""Throughput of the numpy joint-histogram overlap count (the one-thread baseline
for segwatch's overlap kernel).

Loads both label maps once (not timed), runs the kernel once untimed (warm-up),
then times N times only

    np.bincount((pred.astype(np.int64) * K + ref).ravel(order="K"), minlength=K * K)

with K = max label + 1 (default) or 256 (--k256). ravel(order="K") flattens in
memory order without a copy: nibabel returns Fortran-ordered arrays and a plain
.reshape(-1) would add a large transpose copy to every run. numpy runs this on one
thread.

Prints the seconds of every run, the median, the per-label TP/FP/FN for labels 1..10
derived from the histogram (to cross-check against segwatch), and, as the final
line, `GVOXELS_PER_SECOND <float>` = voxels / median seconds / 1e9.

Usage: numpy_overlap.py PRED REF [--repeat N] [--k256]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

# Third-party imports need bench/.venv: re-execute inside it (creating it if needed).
import _venv

_venv.ensure()

import nibabel as nib  # noqa: E402  (after the venv check, on purpose)
import numpy as np


def load(path: str) -> np.ndarray:
    arr = np.asarray(nib.load(path).dataobj)
    return arr if arr.dtype == np.uint8 else arr.astype(np.uint8)


def joint_histogram(pred: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """Counts of (pred label, ref label) pairs as a K x K matrix (rows: pred)."""
    return np.bincount((pred.astype(np.int64) * k + ref).ravel(order="K"),
                       minlength=k * k).reshape(k, k)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pred")
    ap.add_argument("ref")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--k256", action="store_true", help="use K = 256 instead of max label + 1")
    args = ap.parse_args()

    pred, ref = load(args.pred), load(args.ref)
    if pred.shape != ref.shape:
        raise SystemExit(f"shape mismatch: {pred.shape} vs {ref.shape}")
    if pred.flags.f_contiguous != ref.flags.f_contiguous:        # keep voxels paired
        pred, ref = np.asfortranarray(pred), np.asfortranarray(ref)
    k = 256 if args.k256 else int(max(pred.max(), ref.max())) + 1
    voxels = pred.size
    print(f"{voxels} voxels {pred.shape}, K = {k}, {args.repeat} runs")

    # One untimed warm-up: the first run page-faults ~1.3 GB of fresh temporaries
    # (int64 copies), which says more about the allocator than about the kernel.
    t0 = time.perf_counter()
    joint_histogram(pred, ref, k)
    print(f"WARMUP SECONDS {time.perf_counter() - t0:.6f}")

    times = []
    for run in range(args.repeat):
        t0 = time.perf_counter()
        hist = joint_histogram(pred, ref, k)
        times.append(time.perf_counter() - t0)
        print(f"RUN {run + 1} SECONDS {times[-1]:.6f}", flush=True)
    median = statistics.median(times)
    print(f"MEDIAN_SECONDS {median:.6f}")

    # Per-label counts from the histogram: TP on the diagonal, FP = rest of the
    # pred row, FN = rest of the ref column.
    print(f"{'label':>5} {'pred_voxels':>12} {'ref_voxels':>12} {'tp':>12} {'fp':>12} {'fn':>12}")
    for label in range(1, 11):
        if label >= k:
            n_p = n_r = tp = 0
        else:
            n_p, n_r, tp = int(hist[label].sum()), int(hist[:, label].sum()), int(hist[label, label])
        print(f"{label:>5} {n_p:>12} {n_r:>12} {tp:>12} {n_p - tp:>12} {n_r - tp:>12}")
    print(f"GVOXELS_PER_SECOND {voxels / median / 1e9:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
