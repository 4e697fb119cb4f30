"""Writes N realistic 256x256x128 five-structure NIfTI pairs (bench/data/service/
pred and ref, uint8, gzip) for bench/service_throughput.sh: organ-shaped blobs with
low-frequency radius noise, the prediction shifted and grown or shrunk per organ.

    python bench/make_service_pairs.py [--n 40] [--out bench/data/service] [--seed 3]
"""
import _venv  # noqa: F401  (re-runs inside bench/.venv)

import argparse
import os

import nibabel as nib
import numpy as np
from scipy import ndimage

SHAPE = (256, 256, 128)
SPACING = (1.5, 1.5, 2.5)
# label: (centre in voxels, radii in voxels)
ORGANS = {
    1: ((95, 120, 64), (50, 40, 26)),   # liver
    2: ((175, 95, 66), (18, 24, 16)),   # spleen
    3: ((90, 175, 56), (13, 16, 18)),   # right kidney
    4: ((170, 175, 56), (13, 16, 18)),  # left kidney
    5: ((135, 150, 70), (30, 8, 8)),    # pancreas
}


def organ(rng, centre, radii):
    """A blob: an ellipsoid whose radius wobbles smoothly, in its bounding box."""
    pad = [int(r * 1.3) + 2 for r in radii]
    lo = [max(0, c - p) for c, p in zip(centre, pad)]
    hi = [min(s, c + p) for c, p, s in zip(centre, pad, SHAPE)]
    grid = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    d = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    noise = ndimage.gaussian_filter(rng.normal(size=d.shape), 6)
    noise /= np.abs(noise).max() + 1e-9
    return tuple(slice(a, b) for a, b in zip(lo, hi)), d <= 1.0 + 0.25 * noise


def pair(rng):
    ref = np.zeros(SHAPE, np.uint8)
    pred = np.zeros(SHAPE, np.uint8)
    for label, (centre, radii) in ORGANS.items():
        jitter = [c + rng.integers(-6, 7) for c in centre]
        box, mask = organ(rng, jitter, radii)
        ref[box][mask & (ref[box] == 0)] = label
        moved = ndimage.shift(mask.astype(np.uint8), rng.integers(-2, 3, 3), order=0).astype(bool)
        grow = rng.integers(-1, 2)
        if grow > 0:
            moved = ndimage.binary_dilation(moved, iterations=grow)
        elif grow < 0:
            moved = ndimage.binary_erosion(moved, iterations=-grow)
        pred[box][moved & (pred[box] == 0)] = label
    return pred, ref


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "service"))
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    affine = np.diag([*SPACING, 1.0])
    for side in ("pred", "ref"):
        os.makedirs(os.path.join(args.out, side), exist_ok=True)
    for i in range(args.n):
        pred, ref = pair(rng)
        for side, data in (("pred", pred), ("ref", ref)):
            nib.save(nib.Nifti1Image(data, affine), os.path.join(args.out, side, f"case{i:03d}.nii.gz"))
    print(f"wrote {args.n} pairs of {SHAPE} to {args.out}")


if __name__ == "__main__":
    main()
