#!/usr/bin/env python3
"""Checks segwatch's lesion-wise metrics against panoptica and the BraTS 2023 definition.

Generates 2D and 3D cases (fixed seed: small spheres kept, shifted, shrunk, missed,
split in two, merged with a neighbour, or invented in the prediction), scores them with
the engine's `lesions` example for every connectivity (6, 18, 26 in 3D; 4 and 8 in 2D)
and compares:
  - with panoptica (IoU >= 0.5, NaiveThresholdMatching, one to one), fed the same
    connected components (scipy.ndimage.label with the same connectivity): instance
    counts, TP, FP, FN, precision, recall, F1, RQ, SQ, PQ;
  - with panoptica's own component labelling (its default: 26 in 3D via cc3d, 4 in 2D
    via scipy), where segwatch is run with the same connectivity;
  - with the BraTS 2023 lesion-wise Dice computed below in numpy (no dilation of the
    reference lesions), against segwatch's `--brats` matching.
Cases empty on one or both sides are reported, not compared, where panoptica returns
NaN or divides by zero (docs/lesions.md states segwatch's conventions there).
Values must agree to 1e-9. Prints one line per case and a summary.

A development check, not run by CI:
    /opt/peers/bin/pip install panoptica nibabel scipy
    cargo build --release -p segwatch-engine --example lesions
    /opt/peers/bin/python scripts/peers/check_lesions.py
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
from scipy import ndimage

from panoptica import (ConnectedComponentsInstanceApproximator, InputType, NaiveThresholdMatching,
                       Panoptica_Evaluator)
from panoptica.utils.citation_reminder import disable_citation_reminder

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# segwatch connectivity -> scipy structure rank: faces 1, edges 2, corners 3 (in 2D, 8-connectivity is rank 2).
RANKS_3D = {"6": 1, "18": 2, "26": 3}
RANKS_2D = {"4": 1, "8": 2}


def generated(rng, n):
    """Cases of 2 to 9 small spheres; each reference sphere meets a random fate in the prediction."""
    for k in range(n):
        planar = k % 4 == 3
        shape = (64, 64) if planar else (40, 40, 24)
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
        ref = np.zeros(shape, np.uint8)
        pred = np.zeros(shape, np.uint8)
        for _ in range(rng.integers(2, 10)):
            centre = rng.uniform(3, np.array(shape) - 3)
            radius = rng.uniform(1.0, 4.5)
            ball = ((grid - centre) ** 2).sum(-1) <= radius ** 2
            fate = rng.choice(["keep", "shift", "shrink", "miss", "split", "invent"])
            if fate != "invent":
                ref |= ball
            if fate in ("keep", "invent"):
                pred |= ball
            elif fate == "shift":
                pred |= np.roll(ball, int(rng.integers(1, 4)), axis=int(rng.integers(0, len(shape))))
            elif fate == "shrink":
                pred |= ((grid - centre) ** 2).sum(-1) <= (0.7 * radius) ** 2
            elif fate == "split":
                cut = np.abs(grid[..., 0] - centre[0]) < 0.5
                pred |= ball & ~cut
        yield f"{'2D' if planar else '3D'}{k:02d}", pred, ref
    yield "empty-both", np.zeros((16, 16, 8), np.uint8), np.zeros((16, 16, 8), np.uint8)
    one = np.zeros((16, 16, 8), np.uint8)
    one[2:5, 2:5, 2:5] = 1
    yield "empty-ref", one, np.zeros_like(one)
    yield "empty-pred", np.zeros_like(one), one


def panoptica(pred, ref, semantic):
    """panoptica's result at IoU >= 0.5; `semantic`: its own labelling, else instances given."""
    evaluator = Panoptica_Evaluator(
        expected_input=InputType.SEMANTIC if semantic else InputType.UNMATCHED_INSTANCE,
        instance_approximator=ConnectedComponentsInstanceApproximator() if semantic else None,
        instance_matcher=NaiveThresholdMatching(matching_threshold=0.5),
        verbose=False)
    result = list(evaluator.evaluate(pred, ref, verbose=False).values())[0]

    def value(name):
        try:
            return float(getattr(result, name))
        except Exception:  # panoptica raises on some empty cases (0 / 0)
            return math.nan
    values = {k: value(k) for k in ["tp", "fp", "fn", "prec", "rec", "rq", "sq", "pq"]}
    precision, recall = values["prec"], values["rec"]
    values["f1"] = math.nan if math.isnan(precision + recall) else \
        2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    values["n_ref"] = float(result.n_ref_instances)
    values["n_pred"] = float(result.n_pred_instances)
    return values


def brats_lesion_dice(pred, ref, rank):
    """BraTS 2023 lesion-wise Dice without dilation: each reference lesion against the
    union of the predicted components overlapping it (0 when none does), over
    reference lesions plus predicted components overlapping none. 1 when both are empty."""
    structure = ndimage.generate_binary_structure(ref.ndim, rank)
    ref_cc, n_ref = ndimage.label(ref, structure)
    pred_cc, n_pred = ndimage.label(pred, structure)
    dices, touched = [], set()
    for r in range(1, n_ref + 1):
        lesion = ref_cc == r
        hits = set(np.unique(pred_cc[lesion])) - {0}
        touched |= hits
        union = np.isin(pred_cc, list(hits)) if hits else np.zeros_like(lesion)
        dices.append(2 * (lesion & union).sum() / (lesion.sum() + union.sum()))
    fp = n_pred - len(touched)
    if n_ref + fp == 0:
        return {"lesion_dice": 1.0, "tp": 0, "fp": 0, "fn": 0}
    tp = sum(d > 0 for d in dices)
    return {"lesion_dice": sum(dices) / (n_ref + fp), "tp": tp, "fp": fp, "fn": n_ref - tp}


def segwatch(binary, pred_path, ref_path, connectivity, brats=False):
    command = [binary, pred_path, ref_path, "--connectivity", connectivity] + (["--brats"] if brats else [])
    return json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "examples", "lesions"))
    parser.add_argument("--generated", type=int, default=40)
    args = parser.parse_args()
    disable_citation_reminder()
    rng = np.random.default_rng(14)
    ours_to_panoptica = {"n_ref": "ref_instances", "n_pred": "pred_instances", "tp": "tp", "fp": "fp",
                         "fn": "fn", "prec": "precision", "rec": "sensitivity", "f1": "f1",
                         "rq": "rq", "sq": "sq", "pq": "pq"}
    failures, compared, differing, by_connectivity = 0, 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, pred, ref in generated(rng, args.generated):
            paths = []
            for side, array in (("pred", pred), ("ref", ref)):
                paths.append(os.path.join(tmp, f"{name}_{side}.nii.gz"))
                nib.save(nib.Nifti1Image(array, np.diag([0.8, 0.8, 1.5, 1.0])), paths[-1])
            ranks = RANKS_2D if pred.ndim == 2 else RANKS_3D
            notes, instances = [], set()
            for connectivity, rank in ranks.items():
                structure = ndimage.generate_binary_structure(pred.ndim, rank)
                theirs = panoptica(ndimage.label(pred, structure)[0], ndimage.label(ref, structure)[0], False)
                ours = segwatch(args.binary, *paths, connectivity)
                instances.add((ours["ref_instances"], ours["pred_instances"]))
                checks = [(f"{k}@{connectivity}", ours[v], theirs[k]) for k, v in ours_to_panoptica.items()]
                brats = brats_lesion_dice(pred, ref, rank)
                ours_brats = segwatch(args.binary, *paths, connectivity, brats=True)
                checks += [(f"brats_{k}@{connectivity}", ours_brats["lesion_dice" if k == "lesion_dice" else k], v)
                           for k, v in brats.items()]
                # panoptica's own labelling: 26 in 3D, 4 in 2D.
                if connectivity == ("4" if pred.ndim == 2 else "26"):
                    own = panoptica(pred, ref, True)
                    checks += [(f"own_{k}@{connectivity}", ours[v], own[k]) for k, v in ours_to_panoptica.items()]
                for label, a, b in checks:
                    a = math.nan if a is None else a
                    if math.isnan(b):
                        differing += not math.isnan(a)
                        if not math.isnan(a):
                            notes.append(f"{label}: segwatch {a:.4g}, panoptica NaN")
                        continue
                    compared += 1
                    if math.isnan(a) or abs(a - b) > 1e-9:
                        failures += 1
                        notes.append(f"MISMATCH {label}: segwatch {a}, peer {b}")
            counts = f"ref {ours['ref_instances']:2d} pred {ours['pred_instances']:2d} " \
                     f"tp {ours['tp']:2d} fp {ours['fp']:2d} fn {ours['fn']:2d} pq {ours['pq'] if ours['pq'] is not None else 'null'}"
            by_connectivity += len(instances) > 1
            print(f"{name:10s} {counts}  {'; '.join(notes) if notes else 'agree'}")
    print(f"{by_connectivity} cases whose instance counts depend on the connectivity")
    print(f"{compared} values compared, {failures} mismatches; {differing} values where panoptica gives NaN "
          "and segwatch its documented convention")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
