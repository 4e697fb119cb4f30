#!/usr/bin/env python3
"""Generate a synthetic, CT-like reference/prediction pair of abdominal label maps.

Output (gzip NIfTI-1, uint8, shape 512 x 512 x 300 as nibabel array axes x, y, z,
spacing 0.8 x 0.8 x 1.5 mm):

  ref.nii.gz         ten organ-shaped structures, labels 1..10, non-overlapping
  pred.nii.gz        a plausible model output: every organ shifted by 0-2 voxels
                     per axis and grown or shrunk by one voxel, ONE organ missed
                     entirely, and 3-5 small false-positive blobs elsewhere
  pred_noisy.nii.gz  pred.nii.gz with 5 % of all voxels (uniform random positions
                     over the whole volume) set to random labels 0..10: the worst
                     case for surface metrics (every label spans the whole image)

Shapes are "blobby": each organ is a union of one or more ellipsoidal lobes whose
radius is modulated by a smooth, low-frequency random function of direction, and
every organ is rescaled so its volume hits an anatomically plausible target. The
aorta is a slightly curved, tapering tube. Everything is deterministic by --seed
and works on cropped boxes (never a full-volume array per organ).

Usage: make_ct_pair.py [--out bench/data] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

# Third-party imports need bench/.venv: re-execute inside it (creating it if needed).
import _venv

_venv.ensure()

import nibabel as nib  # noqa: E402  (after the venv check, on purpose)
import numpy as np
from scipy import ndimage

SHAPE = (512, 512, 300)                 # voxels along i (x), j (y), k (z)
SPACING = np.array([0.8, 0.8, 1.5])     # mm
VOXEL_ML = float(np.prod(SPACING)) / 1000.0
# Image centre in "index millimetres" (index * spacing); organ positions below are
# offsets from it. With the affine diag(-0.8, -0.8, 1.5) (DICOM LPS -> NIfTI RAS):
# +a = towards the patient's right, +b = posterior, +c = superior.
CENTRE_MM = (np.array(SHAPE) - 1) * SPACING / 2.0

NAMES = {
    1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "pancreas",
    6: "aorta", 7: "gallbladder", 8: "urinary_bladder", 9: "adrenal_right",
    10: "adrenal_left",
}


# --------------------------------------------------------------------------- shapes

@dataclass
class Lobe:
    """An ellipsoid (centre offset and radii in mm, rotation in degrees) whose radius
    is modulated by a smooth random function of direction (see `radial_noise`)."""
    centre: tuple[float, float, float]
    radii: tuple[float, float, float]
    angles: tuple[float, float, float] = (0.0, 0.0, 0.0)   # about z, y, x
    roughness: float = 0.15
    noise: list = field(default_factory=list)              # filled by `organ_lobes`


def rotation(angles_deg) -> np.ndarray:
    """Rotation matrix from yaw (about z), pitch (about y) and roll (about x)."""
    az, ay, ax = np.radians(angles_deg)
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    return rz @ ry @ rx


def make_noise(rng: np.random.Generator, roughness: float, terms: int = 6) -> list:
    """A smooth function on the unit sphere: a sum of a few plane waves cos(k.d + phi)
    with |k| between 1.5 and 3.5 (so only a handful of bumps around the shape).
    The amplitudes sum to `roughness`, which bounds the radius factor to
    [1 - roughness, 1 + roughness] and keeps every lobe star-shaped (connected)."""
    amps = rng.uniform(0.5, 1.0, terms)
    amps *= roughness / amps.sum()
    waves = []
    for a in amps:
        k = rng.normal(size=3)
        k *= rng.uniform(1.5, 3.5) / np.linalg.norm(k)
        waves.append((a, k, rng.uniform(0, 2 * np.pi)))
    return waves


def radial_noise(waves: list, d: np.ndarray) -> np.ndarray:
    """Radius factor 1 + sum a*cos(k.d + phi) for unit directions d of shape (3, ...)."""
    f = np.ones(d.shape[1:], dtype=np.float32)
    for a, k, phi in waves:
        f += np.float32(a) * np.cos(k[0] * d[0] + k[1] * d[1] + k[2] * d[2] + phi)
    return f


def box_around(lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[slice, ...]:
    """Voxel slices covering [lo_mm, hi_mm] (absolute index millimetres), clipped."""
    lo = np.floor(lo_mm / SPACING).astype(int) - 1
    hi = np.ceil(hi_mm / SPACING).astype(int) + 2
    lo = np.clip(lo, 0, SHAPE)
    hi = np.clip(hi, 0, SHAPE)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def box_coords(box: tuple[slice, ...]):
    """Open-grid voxel-centre coordinates (index millimetres) of a box, float32."""
    return [(np.arange(s.start, s.stop, dtype=np.float32) * np.float32(sp))
            for s, sp in zip(box, SPACING)]


def lobe_extent(lb: Lobe, scale: float) -> np.ndarray:
    """Half-extent (mm) of a lobe's bounding box: exact for the rotated ellipsoid,
    times the noise bound on the radius factor."""
    r = rotation(lb.angles) * (scale * np.asarray(lb.radii))[None, :]
    return np.sqrt((r * r).sum(axis=1)) * (1 + lb.roughness)


def paint_lobes(lobes: list[Lobe], centre_mm: np.ndarray, scale: float):
    """Rasterise the union of lobes (all lengths multiplied by `scale` about the organ
    centre). Each lobe is evaluated only on its own bounding box. Returns (box,
    boolean mask of the box)."""
    centres = [centre_mm + scale * np.asarray(lb.centre) for lb in lobes]
    boxes = [box_around(c - lobe_extent(lb, scale), c + lobe_extent(lb, scale))
             for lb, c in zip(lobes, centres)]
    box = tuple(slice(min(b[i].start for b in boxes), max(b[i].stop for b in boxes))
                for i in range(3))
    mask = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
    for lb, c, lbox in zip(lobes, centres, boxes):
        xs, ys, zs = box_coords(lbox)
        c = c.astype(np.float32)
        rinv = rotation(lb.angles).T.astype(np.float32)        # world -> lobe frame
        radii = (scale * np.asarray(lb.radii)).astype(np.float32)
        dx, dy, dz = (xs - c[0])[:, None, None], (ys - c[1])[None, :, None], (zs - c[2])[None, None, :]
        # Coordinates in the lobe frame, normalised by the radii.
        u = np.stack([(rinv[i, 0] * dx + rinv[i, 1] * dy + rinv[i, 2] * dz) / radii[i]
                      for i in range(3)])
        r = np.sqrt((u * u).sum(axis=0))
        u /= np.maximum(r, np.float32(1e-6))                    # unit directions
        sub = tuple(slice(l.start - b.start, l.stop - b.start) for l, b in zip(lbox, box))
        mask[sub] |= r <= radial_noise(lb.noise, u)
    return box, mask


def paint_tube(centre_mm: np.ndarray, rng: np.random.Generator, z_range_mm, radius_mm,
               scale: float):
    """The aorta: a tube along z whose centre line wanders smoothly in x/y and whose
    radius tapers from radius_mm[1] (top) to radius_mm[0] (bottom) with a small
    ripple. `scale` multiplies the radius (used for volume calibration)."""
    z0, z1 = z_range_mm
    rmax = scale * max(radius_mm) * 1.1 + 8.0                   # + centre-line wander
    box = box_around(np.array([centre_mm[0] - rmax, centre_mm[1] - rmax, z0]),
                     np.array([centre_mm[0] + rmax, centre_mm[1] + rmax, z1]))
    xs, ys, zs = box_coords(box)
    t = (zs - z0) / (z1 - z0)                                    # 0 at the bottom
    # Smooth wander (+-6 mm) and ripple (+-5 %) of the centre line, fixed by the rng.
    p = rng.uniform(0, 2 * np.pi, 4)
    cx = centre_mm[0] + 4.0 * np.sin(2.1 * t + p[0]) + 2.0 * np.sin(5.3 * t + p[1])
    cy = centre_mm[1] + 4.0 * np.sin(1.7 * t + p[2]) - 3.0 * t
    rad = scale * (radius_mm[0] + (radius_mm[1] - radius_mm[0]) * t) * (1 + 0.05 * np.sin(7 * t + p[3]))
    inside_z = (zs >= z0) & (zs <= z1)
    mask = ((xs[:, None, None] - cx[None, None, :]) ** 2
            + (ys[None, :, None] - cy[None, None, :]) ** 2
            <= (rad * rad)[None, None, :]) & inside_z[None, None, :]
    return box, mask


# ------------------------------------------------------------------------- anatomy

def organ_specs():
    """Organ layout: label -> (centre offset from the image centre in mm (a, b, c),
    target volume in mL, lobes). Positions follow a typical abdominal CT loosely."""
    return {
        # Liver: big right lobe plus a smaller left lobe reaching across the midline.
        1: ((60, -15, 110), 1900, [
            Lobe((0, 0, 0), (85, 70, 65), (15, 0, 0), 0.18),
            Lobe((-75, -25, 15), (55, 38, 35), (-10, 0, 10), 0.20),
            Lobe((10, 20, -35), (45, 35, 35), (0, 0, 0), 0.20)]),
        2: ((-110, 45, 125), 200, [Lobe((0, 0, 0), (25, 52, 42), (-35, 0, 15), 0.20)]),
        3: ((65, 55, 30), 160, [Lobe((0, 0, 0), (27, 30, 55), (20, 10, 0), 0.12)]),
        4: ((-65, 55, 45), 165, [Lobe((0, 0, 0), (27, 30, 55), (-20, -10, 0), 0.12)]),
        # Pancreas: head, body and tail along a curve from right to left.
        5: ((-20, 0, 50), 80, [
            Lobe((40, -10, -8), (20, 17, 24), (0, 0, 0), 0.20),
            Lobe((5, -5, 0), (28, 12, 13), (20, 0, 0), 0.20),
            Lobe((-35, 8, 6), (26, 11, 12), (-30, 0, 0), 0.20),
            Lobe((-62, 20, 12), (14, 10, 11), (-50, 0, 0), 0.20)]),
        6: None,                                                 # aorta: a tube, below
        7: ((40, -55, 55), 40, [Lobe((0, 0, 0), (17, 18, 33), (20, 25, 0), 0.18)]),
        8: ((0, -40, -165), 300, [Lobe((0, 0, 0), (45, 40, 38), (0, 0, 0), 0.18)]),
        9: ((28, 60, 92), 5, [Lobe((0, 0, 0), (6, 13, 17), (30, 0, 0), 0.20)]),
        10: ((-40, 50, 100), 6, [Lobe((0, 0, 0), (6, 14, 18), (-30, 0, 0), 0.20)]),
    }


AORTA = dict(centre=(-15, 30), z_range=(-110, 215), radius=(10.0, 12.5), target_ml=135)

# Painting order: the first organ painted keeps contested voxels, so the small and
# tubular structures go first and the liver last (it wraps around the gallbladder).
PAINT_ORDER = [6, 9, 10, 7, 5, 3, 4, 2, 8, 1]


def organ_mask(label: int, rng: np.random.Generator):
    """Rasterise one organ, calibrated to its target volume. Returns (box, mask)."""
    if label == 6:
        c = np.array([CENTRE_MM[0] + AORTA["centre"][0], CENTRE_MM[1] + AORTA["centre"][1], 0.0])
        z = (CENTRE_MM[2] + AORTA["z_range"][0], CENTRE_MM[2] + AORTA["z_range"][1])
        state = rng.bit_generator.state                         # same tube both passes
        box, mask = paint_tube(c, rng, z, AORTA["radius"], 1.0)
        vol = mask.sum() * VOXEL_ML
        rng.bit_generator.state = state
        return paint_tube(c, rng, z, AORTA["radius"], np.sqrt(AORTA["target_ml"] / vol))
    offset, target_ml, lobes = organ_specs()[label]
    centre = CENTRE_MM + np.asarray(offset, dtype=float)
    for lb in lobes:
        # Jitter orientation a little and draw the radius noise.
        lb.angles = tuple(np.asarray(lb.angles) + rng.uniform(-12, 12, 3))
        lb.noise = make_noise(rng, lb.roughness)
    # Volume scales with the cube of a uniform length scale: one correction pass.
    _, mask = paint_lobes(lobes, centre, 1.0)
    scale = (target_ml / (mask.sum() * VOXEL_ML)) ** (1 / 3)
    return paint_lobes(lobes, centre, scale)


def paint(volume: np.ndarray, box, mask: np.ndarray, label: int) -> None:
    """Write `label` where `mask` is set and the volume is still background."""
    view = volume[box]
    view[mask & (view == 0)] = label


# ---------------------------------------------------------------------- prediction

def shift_mask(mask: np.ndarray, d) -> np.ndarray:
    """Shift a boolean box by integer voxels d (no wrap-around; the box is padded)."""
    out = np.zeros_like(mask)
    src = tuple(slice(max(0, -s), n - max(0, s)) for s, n in zip(d, mask.shape))
    dst = tuple(slice(max(0, s), n - max(0, -s)) for s, n in zip(d, mask.shape))
    out[dst] = mask[src]
    return out


def make_prediction(ref: np.ndarray, rng: np.random.Generator):
    """Perturb every organ of the reference, miss one, add false-positive blobs."""
    pred = np.zeros_like(ref)
    boxes = ndimage.find_objects(ref)                          # one pass for all labels
    # Miss one of the structures models typically miss (small or thin ones).
    missed = int(rng.choice([5, 7, 9, 10]))
    log = {}
    pad = 4                                                     # shift 2 + grow 1 + 1
    for label in PAINT_ORDER:
        shift = rng.integers(0, 3, 3) * rng.choice([-1, 1], 3)  # 0..2 voxels per axis
        grow = bool(rng.integers(0, 2))
        if label == missed:
            log[label] = "MISSED (absent from prediction)"
            continue
        box = tuple(slice(max(0, s.start - pad), min(n, s.stop + pad))
                    for s, n in zip(boxes[label - 1], ref.shape))
        m = shift_mask(ref[box] == label, shift)
        # Default cross (6-connected) structuring element: one voxel in/out.
        m = ndimage.binary_dilation(m) if grow else ndimage.binary_erosion(m)
        paint(pred, box, m, label)
        log[label] = f"shift {tuple(int(s) for s in shift)} voxels, {'grown' if grow else 'shrunk'} by 1"

    # 3-5 small false-positive blobs of labels other than the missed one, placed in
    # the body where neither ref nor pred has anything (with a 3-voxel margin).
    fps = []
    body_r = np.array([160.0, 110.0])                           # body ellipse, mm
    n_fp = int(rng.integers(3, 6))
    while len(fps) < n_fp:
        label = int(rng.choice([l for l in range(1, 11) if l != missed]))
        r = float(rng.uniform(5.0, 10.0))                       # ~0.5-4 mL
        ab = rng.uniform(-1, 1, 2) * body_r
        if ((ab / body_r) ** 2).sum() > 0.8:
            continue
        c = CENTRE_MM + np.array([ab[0], ab[1], rng.uniform(-190, 190)])
        lobe = Lobe((0, 0, 0), (r, r * rng.uniform(0.6, 1.0), r * rng.uniform(0.6, 1.0)),
                    tuple(rng.uniform(-90, 90, 3)), 0.25)
        lobe.noise = make_noise(rng, lobe.roughness)
        box, m = paint_lobes([lobe], c, 1.0)
        outer = tuple(slice(max(0, s.start - 3), s.stop + 3) for s in box)
        if ref[outer].any() or pred[outer].any() or not m.any():
            continue
        paint(pred, box, m, label)
        fps.append((label, tuple(int(s.start + (s.stop - s.start) // 2) for s in box),
                    m.sum() * VOXEL_ML))
    return pred, missed, log, fps


def add_noise(pred: np.ndarray, rng: np.random.Generator, fraction: float = 0.05) -> np.ndarray:
    """Set `fraction` of all voxels (distinct uniform random positions) to random
    labels 0..10."""
    noisy = pred.copy()
    flat = noisy.reshape(-1)                                    # a view (C-contiguous)
    n = int(round(fraction * flat.size))
    idx = rng.choice(flat.size, size=n, replace=False)
    flat[idx] = rng.integers(0, 11, n, dtype=np.uint8)
    return noisy


# --------------------------------------------------------------------------- output

def affine() -> np.ndarray:
    """A typical DICOM-derived CT affine: LPS axes flipped into RAS, origin such that
    the image centre sits near the scanner isocentre."""
    a = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    a[:3, 3] = [CENTRE_MM[0], CENTRE_MM[1], -CENTRE_MM[2] - 200.0]
    return a


def save(volume: np.ndarray, path: str) -> None:
    img = nib.Nifti1Image(volume, affine())
    hdr = img.header
    hdr.set_data_dtype(np.uint8)
    hdr.set_xyzt_units("mm", "sec")
    img.set_qform(affine(), code=1)                             # scanner anatomical
    img.set_sform(affine(), code=1)
    hdr["descrip"] = b"segwatch bench synthetic CT labels"
    nib.save(img, path)


def volumes_ml(volume: np.ndarray) -> np.ndarray:
    return np.bincount(volume.reshape(-1), minlength=256)[:11] * VOXEL_ML


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)

    ref = np.zeros(SHAPE, dtype=np.uint8)
    for label in PAINT_ORDER:
        box, mask = organ_mask(label, rng)
        paint(ref, box, mask, label)
    pred, missed, log, fps = make_prediction(ref, rng)
    noisy = add_noise(pred, rng)
    t_gen = time.perf_counter() - t0

    for name, vol in (("ref", ref), ("pred", pred), ("pred_noisy", noisy)):
        save(vol, os.path.join(args.out, f"{name}.nii.gz"))
    t_all = time.perf_counter() - t0

    vr, vp, vn = volumes_ml(ref), volumes_ml(pred), volumes_ml(noisy)
    print(f"shape {SHAPE}, spacing {tuple(float(x) for x in SPACING)} mm, voxel {VOXEL_ML * 1000:.3f} mm^3, seed {args.seed}")
    print(f"{'label':>5} {'name':<16} {'ref_mL':>9} {'pred_mL':>9} {'noisy_mL':>9}  prediction")
    for label in range(1, 11):
        print(f"{label:>5} {NAMES[label]:<16} {vr[label]:9.1f} {vp[label]:9.1f} {vn[label]:9.1f}  {log[label]}")
    print(f"missed organ: {missed} ({NAMES[missed]})")
    print(f"false-positive blobs ({len(fps)}):")
    for label, centre, ml in fps:
        print(f"  label {label:>2} ({NAMES[label]}) at voxel {centre}, {ml:.2f} mL")
    changed = int((noisy != pred).sum())
    print(f"pred_noisy: {changed} voxels differ from pred ({100 * changed / pred.size:.2f} %; "
          f"5 % set to random labels 0..10, ~1/11 of those unchanged)")
    print(f"generated in {t_gen:.1f} s, written in {t_all - t_gen:.1f} s to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
