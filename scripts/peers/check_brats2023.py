#!/usr/bin/env python3
"""Checks `segwatch eval`'s BraTS 2023 lesion-wise metrics against the published definition.

The definition (BraTS 2023 lesion-wise evaluation, rachitsaluja/BraTS-2023-Metrics,
docs/lesions.md) is written out again below with numpy and scipy, from its description:
  1. lesions are 26-connected components; the reference is dilated `dilation` times with
     the 18-neighbourhood (scipy generate_binary_structure(3, 2)), and reference voxels in
     one 26-connected component of the dilated reference are one lesion;
  2. a predicted lesion meeting a lesion's dilated region detects it; the lesion's Dice is
     taken on its own (undilated) voxels against the union of the predicted lesions
     detecting it;
  3. reference lesions of at most `threshold` mm³ (voxels × voxel volume) are left out of
     TP, FN and the lesion-wise Dice; a predicted lesion meeting no dilated region (of any
     size) is a false positive;
  4. lesion-wise Dice = sum of the kept lesions' Dice / (kept lesions + FP), 1 when that is 0/0.
Random cases (fixed seed) of small boxes and balls, at several dilations, thresholds and
spacings, are written as NIfTI and scored with `segwatch eval --lesions 1 --brats-dilation N
--min-lesion-mm3 V --format json`; counts must be equal and Dice agree to 1e-9. Prints the
largest difference.

A development check, not run by CI:
    python3 -m venv /opt/peers && /opt/peers/bin/pip install numpy scipy nibabel
    cargo build --release
    /opt/peers/bin/python scripts/peers/check_brats2023.py [--cases 200]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np
from scipy import ndimage

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUBE = np.ones((3, 3, 3), bool)  # 26-connectivity
EIGHTEEN = ndimage.generate_binary_structure(3, 2)


def brats2023(pred, ref, dilation, threshold_mm3, voxel_mm3):
    """Counts and lesion-wise Dice of one structure under the BraTS 2023 definition."""
    pred_cc, n_pred = ndimage.label(pred, structure=CUBE)
    # scipy treats iterations < 1 as "until nothing changes": no dilation is the reference itself.
    grown = ndimage.binary_dilation(ref, structure=EIGHTEEN, iterations=dilation) if dilation else ref
    grown_cc, n_lesions = ndimage.label(grown, structure=CUBE)
    detecting = set()
    kept = tp = 0
    dice_sum = 0.0
    for k in range(1, n_lesions + 1):
        region = grown_cc == k
        lesion = ref & region
        hits = np.unique(pred_cc[region])
        hits = hits[hits != 0]
        detecting.update(hits.tolist())
        if lesion.sum() * voxel_mm3 <= threshold_mm3:
            continue
        kept += 1
        union = np.isin(pred_cc, hits)
        if len(hits):
            tp += 1
            dice_sum += 2.0 * (union & lesion).sum() / (union.sum() + lesion.sum())
    fp = n_pred - len(detecting)
    denominator = kept + fp
    return {
        "ref_instances": kept,
        "tp": tp,
        "fn": kept - tp,
        "fp": fp,
        "lesion_dice": dice_sum / denominator if denominator else 1.0,
    }


def generated(rng, n):
    """Cases of 1 to 8 lesions (boxes and balls of 1 to 5 voxels across), some close together."""
    for k in range(n):
        shape = (20, 18, 1) if k % 5 == 4 else (24, 20, 16)
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
        ref = np.zeros(shape, bool)
        pred = np.zeros(shape, bool)
        for _ in range(rng.integers(1, 9)):
            centre = rng.uniform(0, np.array(shape))
            radius = rng.uniform(0.4, 2.6)
            if rng.random() < 0.5:
                blob = ((grid - centre) ** 2).sum(-1) <= radius ** 2
            else:
                blob = (np.abs(grid - centre) <= radius).all(-1)
            fate = rng.choice(["keep", "shift", "shrink", "miss", "beside", "invent"])
            if fate != "invent":
                ref |= blob
            if fate in ("keep", "invent"):
                pred |= blob
            elif fate == "shift":
                pred |= np.roll(blob, int(rng.integers(1, 3)), axis=int(rng.integers(0, 3)))
            elif fate == "shrink":
                pred |= ((grid - centre) ** 2).sum(-1) <= (0.6 * radius) ** 2
            elif fate == "beside":
                # Just outside the lesion: caught by the dilation only.
                pred |= ndimage.binary_dilation(blob, structure=EIGHTEEN, iterations=2) & ~ndimage.binary_dilation(blob, structure=EIGHTEEN)
        yield f"case{k:03d}", pred, ref


def segwatch(binary, pred_path, ref_path, dilation, threshold):
    args = [binary, "eval", pred_path, ref_path, "--lesions", "1", "--brats-dilation", str(dilation),
            "--min-lesion-mm3", repr(threshold), "--format", "json"]
    out = subprocess.run(args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"segwatch failed: {' '.join(args)}\n{out.stderr}")
    return json.loads(out.stdout)["lesions"][0]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=120)
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "segwatch"))
    args = parser.parse_args()
    rng = np.random.default_rng(2023)
    spacings = [(1.0, 1.0, 1.0), (0.5, 1.0, 2.0), (1.0, 1.0, 1.0), (0.75, 0.75, 1.5)]
    worst, compared, failures = 0.0, 0, 0
    merged = left_out = beside = 0  # comparisons where dilation merged, a lesion was left out, dilation found one
    with tempfile.TemporaryDirectory() as tmp:
        for name, pred, ref in generated(rng, args.cases):
            spacing = spacings[int(rng.integers(0, len(spacings)))]
            affine = np.diag(list(spacing) + [1.0])
            paths = []
            for side, array in (("pred", pred), ("ref", ref)):
                path = os.path.join(tmp, f"{side}.nii.gz")
                nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), path)
                paths.append(path)
            voxel_mm3 = float(np.prod(spacing))
            for dilation in (0, 1, 3):
                for threshold in (0.0, 2.0, 8.0, 50.0):
                    want = brats2023(pred, ref, dilation, threshold, voxel_mm3)
                    got = segwatch(args.binary, *paths, dilation, threshold)
                    counts_ok = all(got[k] == want[k] for k in ("ref_instances", "tp", "fn", "fp"))
                    difference = abs(got["lesion_dice"] - want["lesion_dice"])
                    worst = max(worst, difference)
                    compared += 1
                    plain = brats2023(pred, ref, 0, threshold, voxel_mm3)
                    merged += plain["ref_instances"] > want["ref_instances"] and threshold == 0.0
                    beside += want["tp"] > plain["tp"] and threshold == 0.0
                    left_out += brats2023(pred, ref, dilation, 0.0, voxel_mm3)["ref_instances"] > want["ref_instances"]
                    if not counts_ok or difference > 1e-9:
                        failures += 1
                        print(f"{name} dilation {dilation} threshold {threshold}: segwatch "
                              f"{ {k: got[k] for k in want} } against {want}")
    print(f"{compared} comparisons on {args.cases} cases, {failures} disagreeing; "
          f"largest lesion-wise Dice difference {worst:.3g}; dilation merged lesions in {merged}, "
          f"detected more in {beside}, the threshold left lesions out in {left_out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
