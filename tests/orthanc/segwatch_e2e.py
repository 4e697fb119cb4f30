#!/usr/bin/env python3
"""Orthanc as a real PACS in front of segwatch, over DICOMweb STOW-RS.

1. segwatch serves on a fresh database; Orthanc (apt packages orthanc and
   orthanc-dicomweb) registers it as the DICOMweb server "segwatch" with HTTP
   Basic (site key as password).
2. The AI SEG is sent with `POST /dicom-web/servers/segwatch/stow` with chunked
   transfers, the corrected SEG with "ChunkedTransfers": false; both Orthanc jobs
   must succeed and segwatch must score the pair with the expected Dice.
3. A second Orthanc loads deploy/orthanc/autoforward.lua: both SEGs stored in it
   reach segwatch (another site) without any stow call and are scored too.

Usage: segwatch_e2e.py --segwatch target/debug/segwatch. Python standard library.
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FIXTURES = os.path.join(ROOT, "tests", "fixtures", "dicom")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url, key):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def wait_scored(base, key, site, timeout=120):
    """The site's one scored case, once scoring is done."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        cases = get_json(f"{base}/v1/sites/{site}/cases?limit=10", key)
        if cases:
            return cases
        time.sleep(0.5)
    sys.exit(f"FAIL: nothing scored at {site} within {timeout} s")


def start_orthanc(work, segwatch_url, site, key, lua):
    env = dict(os.environ, SEGWATCH_DICOMWEB_URL=segwatch_url, SEGWATCH_SITE=site, SEGWATCH_KEY=key,
               ORTHANC_HTTP_PORT=str(free_port()), ORTHANC_DICOM_PORT=str(free_port()))
    args = ["bash", os.path.join(HERE, "run_orthanc.sh"), "start", "--dir", work] + (["--lua"] if lua else [])
    out = subprocess.run(args, env=env, check=True, capture_output=True, text=True).stdout
    values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return values["ORTHANC_URL"].strip("'\""), env


def drive(orthanc, env, files, chunked):
    args = [sys.executable, os.path.join(HERE, "drive.py"), "--orthanc", orthanc,
            "--files", *[os.path.join(FIXTURES, f) for f in files], "--chunked" if chunked else "--no-chunked"]
    run = subprocess.run(args, env=env, capture_output=True, text=True)
    summary = json.loads(run.stdout) if run.stdout.strip().startswith("{") else {"raw": run.stdout + run.stderr}
    return run.returncode == 0, summary


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--segwatch", required=True)
    parser.add_argument("--admin-url", default=os.environ.get("SEGWATCH_TEST_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    segwatch = os.path.abspath(args.segwatch)
    with open(os.path.join(FIXTURES, "expected.json")) as f:
        expected = json.load(f)["pairs"][0]["mean_dice"]

    work = tempfile.mkdtemp(prefix="segwatch-orthanc-")
    db = f"segwatch_orthanc_{os.getpid()}"
    db_url = args.admin_url.rsplit("/", 1)[0] + "/" + db
    subprocess.run(["psql", args.admin_url, "-qc", f"DROP DATABASE IF EXISTS {db}", "-c", f"CREATE DATABASE {db}"], check=True)
    failures, orthancs, serve = [], [], None
    try:
        port = free_port()
        env = dict(os.environ, SEGWATCH_DATABASE_URL=db_url, SEGWATCH_LISTEN=f"127.0.0.1:{port}", RUST_LOG="warn")
        subprocess.run([segwatch, "migrate"], env=env, check=True, capture_output=True)

        def key(*extra):
            return subprocess.run([segwatch, "keys", "create", *extra], env=env, check=True, capture_output=True, text=True).stdout.strip()
        admin, site1, site2 = key("--role", "admin"), key("--role", "ingest", "--site", "site1"), key("--role", "ingest", "--site", "site2")
        log = open(os.path.join(work, "segwatch.log"), "w")
        serve = subprocess.Popen([segwatch, "serve"], env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/readyz", timeout=2)
                break
            except Exception:
                time.sleep(0.2)

        # Manual stow: the AI SEG chunked, the corrected SEG with Content-Length.
        orthanc, orthanc_env = start_orthanc(os.path.join(work, "orthanc1"), f"{base}/dicom-web/", "site1", site1, lua=False)
        orthancs.append(os.path.join(work, "orthanc1"))
        for files, chunked in ((["ai_binary.dcm"], True), (["corrected_binary.dcm"], False)):
            ok, summary = drive(orthanc, orthanc_env, files, chunked)
            state = summary.get("job", {}).get("State")
            print(f"stow {files[0]} chunked={chunked}: Orthanc job {state}")
            if not ok:
                failures.append(f"Orthanc job for {files[0]} (chunked={chunked}) failed: {json.dumps(summary)[:2000]}")
        cases = wait_scored(base, admin, "site1")
        dice = cases[0]["mean_dice"]
        print(f"site1 scored: mean Dice {dice:.6f} (expected {expected:.6f})")
        if abs(dice - expected) > 1e-9:
            failures.append(f"site1 mean Dice {dice} != {expected}")

        # Auto-forward: the Lua script sends every new SEG series by itself.
        orthanc2, _ = start_orthanc(os.path.join(work, "orthanc2"), f"{base}/dicom-web/", "site2", site2, lua=True)
        orthancs.append(os.path.join(work, "orthanc2"))
        for name in ("ai_binary.dcm", "corrected_binary.dcm"):
            with open(os.path.join(FIXTURES, name), "rb") as f:
                urllib.request.urlopen(urllib.request.Request(f"{orthanc2}/instances", data=f.read(), method="POST"), timeout=30)
        cases = wait_scored(base, admin, "site2", timeout=120)
        dice = cases[0]["mean_dice"]
        print(f"site2 scored after auto-forward: mean Dice {dice:.6f}")
        if abs(dice - expected) > 1e-9:
            failures.append(f"site2 mean Dice {dice} != {expected}")
    finally:
        for directory in orthancs:
            subprocess.run(["bash", os.path.join(HERE, "run_orthanc.sh"), "stop", directory, "--keep"], capture_output=True)
        if serve:
            serve.terminate()
            serve.wait(timeout=10)
        subprocess.run(["psql", args.admin_url, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"])
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures) + f"\nlogs in {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("Orthanc to segwatch end to end: OK")


if __name__ == "__main__":
    main()
