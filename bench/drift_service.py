#!/usr/bin/env python3
"""False alerts of the real service: for each seed, a fresh database, `segwatch
serve` (two workers, default settings: the budget of 1 false alert a month) and
`segwatch simulate --sites 3 --days 30 --cases-per-day 8` with no drift (or the
one given by --drift-at), then every incident the service opened.

Usage: bench/drift_service.py --segwatch target/release/segwatch --seeds 1-8
       [--drift-at day20:site3:liver:0.10]
Needs PostgreSQL at --admin-url (trust auth). Python standard library only.
Not a test: a run takes about a minute per seed on 2 cores; it prints.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, key):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def psql(url, sql):
    return subprocess.run(["psql", url, "-tAc", sql], check=True, capture_output=True, text=True).stdout.strip()


def wait(what, check, timeout=1800):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # not up yet
            pass
        time.sleep(1)
    sys.exit(f"timed out waiting for {what}")


def run(segwatch, admin_url, seed, drift):
    db = f"segwatch_bench_drift_{os.getpid()}_{seed}"
    db_url = admin_url.rsplit("/", 1)[0] + "/" + db
    subprocess.run(["psql", admin_url, "-qc", f"DROP DATABASE IF EXISTS {db}", "-c", f"CREATE DATABASE {db}"], check=True)
    port = free_port()
    env = dict(os.environ, SEGWATCH_DATABASE_URL=db_url, SEGWATCH_LISTEN=f"127.0.0.1:{port}", RUST_LOG="warn")
    subprocess.run([segwatch, "migrate"], env=env, check=True, capture_output=True)
    admin = subprocess.run([segwatch, "keys", "create", "--role", "admin", "--label", "bench"], env=env, check=True,
                           capture_output=True, text=True).stdout.strip()
    log = tempfile.TemporaryFile()
    serve = subprocess.Popen([segwatch, "serve"], env=env, stdout=log, stderr=log)
    try:
        base = f"http://127.0.0.1:{port}"
        wait("segwatch ready", lambda: urllib.request.urlopen(f"{base}/readyz", timeout=5))
        command = [segwatch, "simulate", "--url", base, "--key", admin, "--sites", "3", "--days", "30",
                   "--cases-per-day", "8", "--seed", str(seed)]
        if drift:
            command += ["--drift-at", drift]
        subprocess.run(command, check=True, capture_output=True)
        wait("every case scored and fed", lambda: psql(
            db_url, "SELECT count(*) = 720 AND bool_and(NOT drift_pending) FROM results") == "t")
        return get(f"{base}/v1/incidents?state=all", admin)
    finally:
        serve.terminate()
        serve.wait()
        subprocess.run(["psql", admin_url, "-qc", f"DROP DATABASE IF EXISTS {db}"], check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--segwatch", required=True)
    parser.add_argument("--seeds", default="1-8", help="first-last")
    parser.add_argument("--drift-at")
    parser.add_argument("--admin-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    first, last = (int(x) for x in args.seeds.split("-"))
    counts = []
    for seed in range(first, last + 1):
        started = time.time()
        incidents = run(os.path.abspath(args.segwatch), args.admin_url, seed, args.drift_at)
        counts.append(len(incidents))
        described = [(i["site"], i["structure"], i["detector"], i["observed_at"][:16],
                      sorted({(s["site"], s["structure"]) for s in i["streams"]})) for i in incidents]
        print(f"seed {seed}: {len(incidents)} incidents {described} ({time.time() - started:.0f} s)", flush=True)
    print(f"{len(counts)} seeds: incidents {counts}, total {sum(counts)}, runs with none {counts.count(0)}")


if __name__ == "__main__":
    main()
