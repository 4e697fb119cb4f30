#!/usr/bin/env python3
"""MONAI-style Python evaluation of a label-map pair: the baseline segwatch is
compared against.

For every label present in either file (background 0 excluded) it computes the
metric contract (README "How the engine works") with the `voxel` surface definition:

  counts    all labels at once from one joint histogram
            np.bincount(pred * K + ref, minlength=K * K)
  surface   mask ^ binary_erosion(mask) (6-connected cross, border_value=0, so the
            outside of the image counts as background), on the union bounding box
            of the two masks padded by one voxel
  distances distance_transform_edt(~surface_other, sampling=spacing) on that box,
            read at the surface voxels of the first mask: directed distances
            pred->ref and ref->pred in mm
  dice, iou, precision, recall, hd (max), hd95 (max of the two directed np.percentile
  95, linear interpolation), assd (pooled mean), masd (mean of the two directed
  means), nsd (fraction of both surfaces within the tolerance, <=).

Empty conventions: both empty -> dice/iou/precision/recall/nsd 1, distances 0; one
empty -> dice/iou/nsd 0, distances infinite; precision (recall) undefined when
nothing is predicted (nothing in the reference).

Timing covers loading both files and all metrics (not interpreter start-up or
imports). The last line of output is always `TOTAL_SECONDS <float>` (the median over
runs with --repeat N).

Usage: monai_style_eval.py PRED REF [--tolerance-mm 1.0] [--repeat N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time

# Third-party imports need bench/.venv: re-execute inside it (creating it if needed).
import _venv

_venv.ensure()

import nibabel as nib  # noqa: E402  (after the venv check, on purpose)
import numpy as np
from scipy import ndimage

INF = float("inf")
NAN = float("nan")


def load(path: str):
    """Label array (uint8) and voxel spacing (mm) of a NIfTI file."""
    img = nib.load(path)
    arr = np.asarray(img.dataobj)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.uint8)
    spacing = tuple(float(z) for z in img.header.get_zooms()[:3])
    return arr, spacing


def flat(arr: np.ndarray) -> np.ndarray:
    """1-D view in memory order. nibabel returns Fortran-ordered arrays (NIfTI's
    on-disk order), so a plain .reshape(-1) would make a C-order copy (seconds for a
    CT-sized int64 array); order="K" never copies a contiguous array."""
    return arr.ravel(order="K")


def bounding_boxes(arr: np.ndarray):
    """ndimage.find_objects, walking the array in memory order (about 10x faster
    on Fortran-ordered arrays); slices are returned in array axis order."""
    if arr.flags.f_contiguous and not arr.flags.c_contiguous:
        return [None if b is None else b[::-1] for b in ndimage.find_objects(arr.T)]
    return ndimage.find_objects(arr)


def surface_distances(pred_box: np.ndarray, ref_box: np.ndarray, spacing):
    """Directed surface distances (mm) pred->ref and ref->pred of two non-empty
    boolean masks cropped to the same box."""
    surf_pred = pred_box ^ ndimage.binary_erosion(pred_box, border_value=0)
    surf_ref = ref_box ^ ndimage.binary_erosion(ref_box, border_value=0)
    # Distance from every voxel to the nearest surface voxel of the other mask.
    dt_ref = ndimage.distance_transform_edt(~surf_ref, sampling=spacing)
    dt_pred = ndimage.distance_transform_edt(~surf_pred, sampling=spacing)
    return dt_ref[surf_pred], dt_pred[surf_ref]


def structure_metrics(label, counts, pred, ref, box_p, box_r, spacing, tol):
    """All metrics of one label. `counts` = (pred_voxels, ref_voxels, tp)."""
    n_pred, n_ref, tp = counts
    fp, fn = n_pred - tp, n_ref - tp
    voxel_ml = float(np.prod(spacing)) / 1000.0
    m = {"label": label, "pred_voxels": n_pred, "ref_voxels": n_ref, "tp": tp, "fp": fp, "fn": fn,
         "pred_volume_ml": n_pred * voxel_ml, "ref_volume_ml": n_ref * voxel_ml}
    m["precision"] = tp / n_pred if n_pred else NAN              # undefined -> null
    m["recall"] = tp / n_ref if n_ref else NAN
    if n_pred == 0 and n_ref == 0:
        m.update(empty="both", dice=1.0, iou=1.0, precision=1.0, recall=1.0, nsd=1.0,
                 hd_mm=0.0, hd95_mm=0.0, assd_mm=0.0, masd_mm=0.0)
        return m
    if n_pred == 0 or n_ref == 0:
        m.update(empty="pred" if n_pred == 0 else "ref", dice=0.0, iou=0.0, nsd=0.0,
                 hd_mm=INF, hd95_mm=INF, assd_mm=INF, masd_mm=INF)
        return m
    m["empty"] = "none"
    m["dice"] = 2 * tp / (2 * tp + fp + fn)
    m["iou"] = tp / (tp + fp + fn)

    # Union bounding box of both masks, padded by one voxel (clipped to the image:
    # outside the image is background anyway for the erosion).
    box = []
    for sp, sr, n in zip(box_p, box_r, pred.shape):
        box.append(slice(max(0, min(sp.start, sr.start) - 1), min(n, max(sp.stop, sr.stop) + 1)))
    box = tuple(box)
    d_pr, d_rp = surface_distances(pred[box] == label, ref[box] == label, spacing)
    m["hd_mm"] = float(max(d_pr.max(), d_rp.max()))
    m["hd95_mm"] = float(max(np.percentile(d_pr, 95), np.percentile(d_rp, 95)))
    m["assd_mm"] = float((d_pr.sum() + d_rp.sum()) / (d_pr.size + d_rp.size))
    m["masd_mm"] = float((d_pr.mean() + d_rp.mean()) / 2)
    m["nsd"] = float(((d_pr <= tol).sum() + (d_rp <= tol).sum()) / (d_pr.size + d_rp.size))
    return m


def evaluate(pred_path: str, ref_path: str, tol: float):
    """Load and score one pair. Returns (results, spacing, shape)."""
    pred, sp_pred = load(pred_path)
    ref, sp_ref = load(ref_path)
    if pred.shape != ref.shape or not np.allclose(sp_pred, sp_ref, atol=1e-3):
        raise SystemExit(f"grid mismatch: {pred.shape} {sp_pred} vs {ref.shape} {sp_ref}")

    # Counts for all labels from one joint histogram (int64 so pred * K cannot wrap).
    k = int(max(pred.max(), ref.max())) + 1
    # Both arrays share one memory order (same loader), so flattening the sum in
    # memory order pairs the voxels correctly.
    hist = np.bincount(flat(pred.astype(np.int64) * k + ref), minlength=k * k).reshape(k, k)
    pred_counts, ref_counts = hist.sum(axis=1), hist.sum(axis=0)  # rows: pred label

    # Bounding boxes of every label in one pass per image.
    boxes_p, boxes_r = bounding_boxes(pred), bounding_boxes(ref)
    results = []
    for label in range(1, k):
        n_p, n_r = int(pred_counts[label]), int(ref_counts[label])
        if n_p == 0 and n_r == 0:
            continue                                             # absent from both
        bp = boxes_p[label - 1] if label <= len(boxes_p) else None
        br = boxes_r[label - 1] if label <= len(boxes_r) else None
        results.append(structure_metrics(label, (n_p, n_r, int(hist[label, label])),
                                         pred, ref, bp, br, sp_pred, tol))
    return results, sp_pred, pred.shape


def fmt(x, width, prec):
    if isinstance(x, float) and math.isnan(x):
        return f"{'-':>{width}}"
    if isinstance(x, float) and math.isinf(x):
        return f"{'inf':>{width}}"
    return f"{x:{width}.{prec}f}"


def print_table(results):
    print(f"{'label':>5} {'empty':>5} {'pred_mL':>9} {'ref_mL':>9} {'dice':>7} {'iou':>7} "
          f"{'prec':>7} {'recall':>7} {'hd_mm':>8} {'hd95_mm':>8} {'assd_mm':>8} {'masd_mm':>8} {'nsd':>7}")
    for m in results:
        print(f"{m['label']:>5} {m['empty']:>5} {fmt(m['pred_volume_ml'], 9, 1)} {fmt(m['ref_volume_ml'], 9, 1)} "
              f"{fmt(m['dice'], 7, 4)} {fmt(m['iou'], 7, 4)} {fmt(m['precision'], 7, 4)} "
              f"{fmt(m['recall'], 7, 4)} {fmt(m['hd_mm'], 8, 3)} {fmt(m['hd95_mm'], 8, 3)} "
              f"{fmt(m['assd_mm'], 8, 3)} {fmt(m['masd_mm'], 8, 3)} {fmt(m['nsd'], 7, 4)}")
    print(f"mean dice {statistics.fmean(m['dice'] for m in results):.4f} over {len(results)} structures")


def to_json(results, pred_path, ref_path, tol, spacing, shape):
    """The `segwatch eval --format json` shape (docs/metrics.md); inf/NaN -> null."""
    def clean(v):
        return None if isinstance(v, float) and not math.isfinite(v) else v
    structures = [{k: clean(v) for k, v in m.items()} for m in results]
    for s in structures:
        s.update(code=None, name=None)
    return {"prediction": pred_path, "reference": ref_path, "surface": "voxel",
            "tolerance_mm": tol, "grid": {"shape": list(shape), "spacing_mm": list(spacing)},
            "structures": structures,
            "mean_dice": statistics.fmean(m["dice"] for m in results) if results else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pred")
    ap.add_argument("ref")
    ap.add_argument("--tolerance-mm", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=1, help="run N times, report the median")
    ap.add_argument("--json", metavar="OUT", help="also write results as segwatch-style JSON")
    args = ap.parse_args()

    times = []
    for run in range(args.repeat):
        t0 = time.perf_counter()
        results, spacing, shape = evaluate(args.pred, args.ref, args.tolerance_mm)
        times.append(time.perf_counter() - t0)
        if run == 0:
            print(f"grid {shape} voxels of {tuple(round(x, 4) for x in spacing)} mm; surface voxel, NSD tolerance {args.tolerance_mm} mm")
            print_table(results)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(to_json(results, args.pred, args.ref, args.tolerance_mm, spacing, shape), f, indent=1)
        if args.repeat > 1:
            print(f"RUN {run + 1} SECONDS {times[-1]:.4f}", flush=True)
    if args.repeat > 1:
        print(f"median of {args.repeat} runs: {statistics.median(times):.4f} s")
    print(f"TOTAL_SECONDS {statistics.median(times):.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
