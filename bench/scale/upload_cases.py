"""Uploads synthetic cases of one model version with a given number of
structures, for the scale benchmark's throughput step (bench/scale/run.sh):
the version's structure schema and baseline, then a prediction and a
reference per case, spread over the sites and the last day.

Every case is a label map on simulate's grid (72 x 64 x 40 voxels of 1.5 x
1.5 x 3 mm) with the structures as boxes in a row; the prediction moves a few
of each box's slices, so that each structure has its own Dice. Deterministic
(seeded). Only the standard library: the NIfTI-1 files are written by hand.

  python3 bench/scale/upload_cases.py --url URL --key ADMIN_KEY \
      --model scalenet --version v1 --cases 1000 --sites 20 --structures 15
"""
import argparse
import concurrent.futures
import datetime
import gzip
import json
import random
import struct
import urllib.request

SHAPE = (72, 64, 40)
SPACING = (1.5, 1.5, 3.0)


def nifti(labels):
    """A gzipped NIfTI-1 file of a uint8 label map (x fastest), axis-aligned."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *SHAPE, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 2, 8)  # datatype uint8, 8 bits
    struct.pack_into("<8f", header, 76, 1.0, *SPACING, 1.0, 1.0, 1.0, 1.0)
    struct.pack_into("<fff", header, 108, 352.0, 1.0, 0.0)  # vox_offset, slope, inter
    header[123] = 2  # xyzt_units: mm
    struct.pack_into("<hh", header, 252, 0, 1)  # qform_code 0, sform_code 1
    for row, spacing in enumerate(SPACING):
        srow = [0.0, 0.0, 0.0, 0.0]
        srow[row] = spacing
        struct.pack_into("<4f", header, 280 + 16 * row, *srow)
    header[344:348] = b"n+1\0"
    return gzip.compress(bytes(header) + bytes(4) + bytes(labels), 1)


def label_map(structures, cut):
    """Structure k fills a box; `cut[k]` of its slices (z) are left out."""
    nx, ny, nz = SHAPE
    width = nx // structures
    volume = bytearray(nx * ny * nz)
    for k in range(structures):
        row = bytes([k + 1]) * (width - 1)
        for z in range(4, nz - 4 - cut[k]):
            for y in range(8, ny - 8):
                start = k * width + nx * (y + ny * z)
                volume[start : start + width - 1] = row
    return volume


def cases(structures, count, rng):
    """`count` distinct (prediction, reference) pairs as NIfTI files."""
    reference = nifti(label_map(structures, [0] * structures))
    return [
        (nifti(label_map(structures, [rng.randrange(0, 6) for _ in range(structures)])), reference)
        for _ in range(count)
    ]


def send(url, key, body, content_type="application/octet-stream"):
    request = urllib.request.Request(url, data=body, method="PUT")
    request.add_header("Authorization", f"Bearer {key}")
    request.add_header("Content-Type", content_type)
    with urllib.request.urlopen(request, timeout=120) as response:
        if response.status >= 300:
            raise RuntimeError(f"{url}: {response.status}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--model", default="scalenet")
    parser.add_argument("--version", default="v1")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--sites", type=int, default=20)
    parser.add_argument("--structures", type=int, default=15)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    if not 1 <= args.structures <= SHAPE[0] // 2:
        parser.error(f"--structures must be in 1..{SHAPE[0] // 2}")
    rng = random.Random(args.seed)
    base = args.url.rstrip("/")
    version = f"{base}/v1/models/{args.model}/versions/{args.version}"
    names = [f"structure{k:02d}" for k in range(1, args.structures + 1)]
    schema = {
        "structures": [{"label": k + 1, "name": n, "tolerance_mm": 2.0} for k, n in enumerate(names)],
        "unknown_labels": "reject",
    }
    send(f"{version}/structures", args.key, json.dumps(schema).encode(), "application/json")
    baseline = {
        "source": "scale benchmark",
        "cases": [{n: rng.uniform(0.85, 0.97) for n in names} for _ in range(200)],
    }
    send(f"{version}/baseline", args.key, json.dumps(baseline).encode(), "application/json")

    pairs = cases(args.structures, 16, rng)
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)

    def upload(n):
        site = f"site{n % args.sites + 1:03d}"
        observed = now - datetime.timedelta(seconds=86400 * (args.cases - n) // args.cases)
        at = observed.isoformat().replace("+00:00", "Z")
        url = f"{base}/v1/sites/{site}/cases/{args.model}-{args.version}-{n:06d}"
        prediction, reference = pairs[n % len(pairs)]
        send(f"{url}/prediction?model={args.model}&model_version={args.version}&observed_at={at}", args.key, prediction)
        send(f"{url}/reference", args.key, reference)

    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        list(pool.map(upload, range(args.cases)))


if __name__ == "__main__":
    main()
