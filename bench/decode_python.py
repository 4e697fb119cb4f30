#!/usr/bin/env python3
"""Time the Python decode of one segmentation file, the counterpart of segwatch's
`examples/decode_timing`. Prints every run and a final line `SECONDS <median>`.

Modes (what each run times, file opening included; imports are not):
  nibabel        np.asarray(nib.load(path).dataobj)   full decode, stored dtype
  nibabel-fdata  nib.load(path).get_fdata()           what many scripts call (float64)
  highdicom      hd.seg.segread(path).get_volume()    one 3D binary array per segment,
                                                      stacked on the last axis

Usage: decode_python.py FILE [--repeat N] [--mode nibabel|nibabel-fdata|highdicom]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _venv

_venv.ensure()

import numpy as np  # noqa: E402  (after the venv check, on purpose)


def decoder(mode: str):
    """Return (decode function, library version) for a mode; imports happen here."""
    if mode.startswith("nibabel"):
        import nibabel as nib
        if mode == "nibabel":
            return (lambda p: np.asarray(nib.load(p).dataobj)), f"nibabel {nib.__version__}"
        return (lambda p: nib.load(p).get_fdata()), f"nibabel {nib.__version__}"
    import highdicom as hd
    import pydicom
    # get_volume() (highdicom >= 0.23) returns a Volume whose .array has shape
    # (slices, rows, columns, segments): one 3D mask per segment.
    return ((lambda p: hd.seg.segread(p).get_volume().array),
            f"highdicom {hd.__version__}, pydicom {pydicom.__version__}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("file")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--mode", choices=["nibabel", "nibabel-fdata", "highdicom"], default="nibabel")
    args = ap.parse_args()
    decode, version = decoder(args.mode)
    print(f"{args.mode} ({version}, numpy {np.__version__})")
    seconds = []
    for run in range(args.repeat):
        start = time.perf_counter()
        array = decode(args.file)
        elapsed = time.perf_counter() - start
        if run == 0:
            print(f"array {array.shape} {array.dtype}, {int(np.count_nonzero(array))} nonzero")
        del array                                   # free before the next run
        print(f"run {run}: {elapsed:.4f} s")
        seconds.append(elapsed)
    print(f"SECONDS {statistics.median(seconds):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
