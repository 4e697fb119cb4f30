#!/usr/bin/env python3
"""Cross-check two `segwatch eval --format json`-style result files (for example
segwatch against monai_style_eval.py --json), structure by structure.

Compares counts exactly, `empty` exactly, and dice, iou, precision, recall, hd_mm,
hd95_mm, assd_mm, masd_mm, nsd to a relative tolerance (null must match null).
Prints one line per disagreement and a final line `AGREEMENT ok` or
`AGREEMENT MISMATCH <n>`. Exit status 0 either way unless --strict.

Usage: compare_json.py A.json B.json [--rtol 1e-4] [--strict]
"""

import argparse
import json
import math
import sys

COUNTS = ["pred_voxels", "ref_voxels", "tp", "fp", "fn"]
VALUES = ["dice", "iou", "precision", "recall", "hd_mm", "hd95_mm", "assd_mm", "masd_mm", "nsd"]


def by_label(path):
    with open(path) as f:
        doc = json.load(f)
    return {s["label"]: s for s in doc["structures"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--strict", action="store_true", help="exit 1 on any mismatch")
    args = ap.parse_args()

    a, b = by_label(args.a), by_label(args.b)
    problems = []
    for label in sorted(set(a) | set(b), key=lambda x: (x is None, x)):
        if label not in a or label not in b:
            problems.append(f"label {label}: only in {args.a if label in a else args.b}")
            continue
        sa, sb = a[label], b[label]
        for key in COUNTS + ["empty"]:
            if sa.get(key) != sb.get(key):
                problems.append(f"label {label} {key}: {sa.get(key)} vs {sb.get(key)}")
        for key in VALUES:
            va, vb = sa.get(key), sb.get(key)
            if va is None or vb is None:
                if va is not vb:
                    problems.append(f"label {label} {key}: {va} vs {vb}")
            elif not math.isclose(va, vb, rel_tol=args.rtol, abs_tol=1e-9):
                problems.append(f"label {label} {key}: {va} vs {vb}")
    for p in problems:
        print(p)
    print("AGREEMENT ok" if not problems else f"AGREEMENT MISMATCH {len(problems)}")
    return 1 if problems and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
