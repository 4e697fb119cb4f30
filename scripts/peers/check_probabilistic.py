#!/usr/bin/env python3
"""Checks segwatch's probabilistic scores against MONAI, torchmetrics and scikit-learn.

Generates cases (fixed seed): a reference label map of three ellipsoids and a float32
NIfTI of probabilities, one channel per label (a blurred, noisy, shifted version of the
structure, with exact 0s and 1s; some structures missed, invented or absent on both
sides). Runs `segwatch eval PRED REF --labels 1,2,3 --probabilities PROBS --format json`
(PRED: the probabilities thresholded at 0.5) and compares, per structure:
  - soft Dice with 1 - MONAI 1.6 DiceLoss(smooth_nr=0, smooth_dr=0) (MONAI's DiceMetric
    thresholds, so it is not a soft Dice);
  - ECE with torchmetrics BinaryCalibrationError(n_bins=15, norm="l1"), p as confidence
    and the reference as accuracy;
  - the reliability data (count share, mean probability, observed frequency per bin,
    p = 1 in a bin of its own) with torchmetrics' own binning (_binning_bucketize);
  - the Brier score with scikit-learn's brier_score_loss.
MONAI's DiceLoss is 0/0 (NaN) when both sides are empty; there segwatch's convention
(soft Dice 1) is reported, not compared. Peers compute in float64; values must agree
to 1e-9. Prints one line per structure and the largest difference per metric.

--write-fixtures S00,S02,S23 stores those cases' NIfTI files and the peers' values in
tests/fixtures/probabilistic/ (expected.json), which tests/integration/probabilistic.rs
checks without Python.

A development check, not run by CI (MONAI and torchmetrics need torch):
    python3 -m venv /opt/peers && /opt/peers/bin/pip install monai nibabel numpy scipy torchmetrics scikit-learn
    /opt/peers/bin/python scripts/peers/check_probabilistic.py --segwatch target/release/segwatch
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np
import torch
from monai.losses import DiceLoss
from scipy import ndimage
from sklearn.metrics import brier_score_loss
from torchmetrics.classification import BinaryCalibrationError
from torchmetrics.functional.classification.calibration_error import _binning_bucketize

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "probabilistic")
BINS = 15
LABELS = [1, 2, 3]
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def generated(rng, n):
    """(name, reference labels, probabilities [x, y, z, channel]) of n cases."""
    shape = (20, 18, 10)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    for k in range(n):
        ref = np.zeros(shape, np.uint8)
        probs = np.zeros(shape + (len(LABELS),), np.float32)
        for c, label in enumerate(LABELS):
            centre = rng.uniform(5, 13, 3) * np.array([1, 1, 0.5])
            radii = rng.uniform(2, 6, 3) * np.array([1, 1, 0.6])
            inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1
            fate = rng.choice(["keep", "keep", "shift", "miss", "invent", "absent"])
            if fate in ("keep", "shift", "miss"):
                ref[inside] = label
            if fate in ("keep", "shift", "invent"):
                soft = ndimage.gaussian_filter(inside.astype(float), rng.uniform(0.5, 1.5))
                if fate != "keep":
                    soft = np.roll(soft, int(rng.integers(1, 3)), axis=int(rng.integers(0, 3)))
                soft = soft * rng.uniform(0.7, 1.0) + rng.normal(0, 0.03, shape)
                soft[soft < 0.02] = 0.0
                soft[soft > 0.97] = 1.0
                probs[..., c] = np.clip(soft, 0, 1)
        yield f"S{k:02d}", ref, probs


def peers(ref, probs):
    """Per label: the peers' soft Dice, Brier, ECE and reliability data."""
    out = []
    for c, label in enumerate(LABELS):
        p = torch.from_numpy(probs[..., c].astype(np.float64))
        g = torch.from_numpy((ref == label).astype(np.float64))
        loss = DiceLoss(include_background=True, smooth_nr=0.0, smooth_dr=0.0, reduction="none")
        soft_dice = 1.0 - float(loss(p[None, None], g[None, None]).flatten()[0])
        ece = BinaryCalibrationError(n_bins=BINS, norm="l1")
        value = float(ece(p.flatten(), g.flatten().long()))
        bounds = torch.linspace(0, 1, BINS + 1, dtype=torch.float64)
        acc, conf, prop = _binning_bucketize(p.flatten(), g.flatten(), bounds)
        out.append({
            "label": label,
            "soft_dice": None if math.isnan(soft_dice) else soft_dice,
            "brier": float(brier_score_loss(g.flatten().numpy(), p.flatten().numpy())),
            "ece": value,
            "bin_share": prop.tolist(),
            "bin_mean_probability": conf.tolist(),
            "bin_observed_frequency": acc.tolist(),
        })
    return out


def segwatch(binary, pred_path, ref_path, probs_path):
    out = subprocess.run(
        [binary, "eval", pred_path, ref_path, "--labels", ",".join(map(str, LABELS)),
         "--probabilities", probs_path, "--format", "json"],
        check=True, capture_output=True, text=True).stdout
    return {s["label"]: s for s in json.loads(out)["probabilistic"]}


def save(tmp, name, ref, probs):
    """Writes the reference, the thresholded prediction and the probabilities."""
    pred = np.zeros(ref.shape, np.uint8)
    for c, label in enumerate(LABELS):
        pred[probs[..., c] >= 0.5] = label
    paths = []
    for side, data in (("pred", pred), ("ref", ref), ("probs", probs)):
        path = os.path.join(tmp, f"{name}_{side}.nii.gz")
        nib.save(nib.Nifti1Image(data, AFFINE), path)
        paths.append(path)
    return paths


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--segwatch", default=os.path.join(ROOT, "target", "release", "segwatch"))
    parser.add_argument("--generated", type=int, default=30)
    parser.add_argument("--write-fixtures", default="", metavar="CASES",
                        help="store these cases (comma-separated names) and the peers' values in tests/fixtures/probabilistic")
    args = parser.parse_args()
    worst = {"soft_dice": 0.0, "brier": 0.0, "ece": 0.0, "reliability": 0.0}
    failures = 0
    fixtures = []
    rng = np.random.default_rng(14)
    with tempfile.TemporaryDirectory() as tmp:
        for name, ref, probs in generated(rng, args.generated):
            fixture = name in args.write_fixtures.split(",")
            paths = save(FIXTURES if fixture else tmp, name, ref, probs)
            ours = segwatch(args.segwatch, *paths)
            theirs = peers(ref, probs)
            if fixture:
                fixtures.append({"id": name, "pred": os.path.basename(paths[0]),
                                 "ref": os.path.basename(paths[1]), "probabilities": os.path.basename(paths[2]),
                                 "labels": LABELS, "ece_bins": BINS, "structures": theirs})
            for peer in theirs:
                mine = ours[peer["label"]]
                diffs = {m: abs(mine[m] - peer[m]) for m in ("brier", "ece")}
                if peer["soft_dice"] is None:
                    note = f"soft Dice {mine['soft_dice']} (MONAI NaN: both empty)"
                else:
                    diffs["soft_dice"] = abs(mine["soft_dice"] - peer["soft_dice"])
                    note = f"soft Dice {mine['soft_dice']:.9f} MONAI {peer['soft_dice']:.9f}"
                total = sum(b["count"] for b in mine["reliability"])
                rel = 0.0
                for k, b in enumerate(mine["reliability"]):
                    rel = max(rel, abs(b["count"] / total - peer["bin_share"][k]))
                    if b["count"]:
                        rel = max(rel, abs(b["mean_probability"] - peer["bin_mean_probability"][k]),
                                  abs(b["observed_frequency"] - peer["bin_observed_frequency"][k]))
                diffs["reliability"] = rel
                for m, d in diffs.items():
                    worst[m] = max(worst[m], d)
                ok = all(d <= 1e-9 for d in diffs.values())
                failures += not ok
                print(f"{name} label {peer['label']}: {note}; ECE {mine['ece']:.9f} torchmetrics {peer['ece']:.9f}; "
                      f"Brier {mine['brier']:.9f} sklearn {peer['brier']:.9f}  {'ok' if ok else 'MISMATCH'}")
    if fixtures:
        with open(os.path.join(FIXTURES, "expected.json"), "w") as out:
            json.dump(fixtures, out, indent=1)
    print("largest differences: " + ", ".join(f"{m} {d:.3g}" for m, d in worst.items()))
    print(f"{failures} mismatches")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
