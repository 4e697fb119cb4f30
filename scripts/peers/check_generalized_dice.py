#!/usr/bin/env python3
"""Checks segwatch's generalized Dice score against MONAI's GeneralizedDiceScore.

For every reference case (tests/fixtures/reference) and for generated multi-label
cases (fixed seed; structures missed, invented, absent on both sides, and of very
different sizes), runs `segwatch eval --format json` and MONAI's
`GeneralizedDiceScore` (its defaults: square weights, classes summed; one
channel per structure, no background channel) on the same label maps, and requires agreement to 1e-6
(MONAI computes in float32). Prints one line per case.

A development check, not run by CI (MONAI needs torch, about 5 GB):
    python3 -m venv /opt/peers && /opt/peers/bin/pip install monai nibabel
    /opt/peers/bin/python scripts/peers/check_generalized_dice.py --segwatch target/release/segwatch
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import nibabel as nib
import numpy as np
import torch
from monai.metrics import GeneralizedDiceScore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = os.path.join(ROOT, "tests", "fixtures", "reference")


def monai_gds(pred, ref, labels):
    """MONAI's score with its defaults on one-hot channels of `labels` (batch of one)."""
    one_hot = lambda a: torch.from_numpy(np.stack([a == l for l in labels])[None].astype(np.float32))
    metric = GeneralizedDiceScore(include_background=True)
    metric(one_hot(pred), one_hot(ref))
    return float(metric.aggregate())


def segwatch_gds(binary, pred_path, ref_path, labels):
    out = subprocess.run(
        [binary, "eval", pred_path, ref_path, "--format", "json", "--labels", ",".join(map(str, labels))],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["generalized_dice"]


def generated(rng, n):
    """Label maps of up to five ellipsoids of random size, each randomly kept,
    dropped or shifted in the prediction, plus an occasional invented blob."""
    shape = (48, 48, 32)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    for k in range(n):
        ref = np.zeros(shape, np.uint8)
        pred = np.zeros(shape, np.uint8)
        for label in range(1, 6):
            centre = rng.uniform(8, 40, 3) * np.array([1, 1, 24 / 32])
            radii = rng.uniform(1.5, 10, 3)
            inside = (((grid - centre) / radii) ** 2).sum(-1) <= 1
            fate = rng.choice(["keep", "shift", "miss", "absent", "invent"])
            if fate in ("keep", "shift", "miss"):
                ref[inside] = label
            if fate == "keep":
                pred[inside] = label
            elif fate in ("shift", "invent"):
                pred[np.roll(inside, int(rng.integers(1, 4)), axis=int(rng.integers(0, 3)))] = label
        yield f"G{k:02d}", pred, ref, [1, 2, 3, 4, 5]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--segwatch", default=os.path.join(ROOT, "target", "release", "segwatch"))
    parser.add_argument("--generated", type=int, default=30)
    parser.add_argument("--write-expected", action="store_true",
                        help="store MONAI's value of each reference case in expected.json (generalized_dice)")
    args = parser.parse_args()
    failures = 0

    def check(name, ours, theirs):
        nonlocal failures
        ok = abs(ours - theirs) <= 1e-6 * max(1.0, abs(theirs))
        failures += not ok
        print(f"{name}: segwatch {ours:.9f}  MONAI {theirs:.9f}  {'ok' if ok else 'MISMATCH'}")

    expected_path = os.path.join(CASES, "expected.json")
    expected = json.load(open(expected_path))
    for case in expected:
        pred_path = os.path.join(CASES, "cases", case["pred"])
        ref_path = os.path.join(CASES, "cases", case["ref"])
        pred = np.asarray(nib.load(pred_path).dataobj)
        ref = np.asarray(nib.load(ref_path).dataobj)
        labels = case["labels"]
        theirs = monai_gds(pred, ref, labels)
        case["generalized_dice"] = theirs
        check(case["id"], segwatch_gds(args.segwatch, pred_path, ref_path, labels), theirs)
    if args.write_expected:
        with open(expected_path, "w") as out:
            json.dump(expected, out, indent=1)

    rng = np.random.default_rng(14)
    with tempfile.TemporaryDirectory() as tmp:
        for name, pred, ref, labels in generated(rng, args.generated):
            paths = []
            for side, data in (("pred", pred), ("ref", ref)):
                path = os.path.join(tmp, f"{name}_{side}.nii.gz")
                nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), path)
                paths.append(path)
            check(name, segwatch_gds(args.segwatch, *paths, labels), monai_gds(pred, ref, labels))
    print(f"{failures} mismatches")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
