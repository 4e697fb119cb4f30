#!/usr/bin/env python3
"""Reliability checks of a running segwatch: races, crashes, a database restart,
slow clients, bombs and the body-memory ceiling, an unauthenticated flood and
hostile metric cardinality. Each check starts its own service on a fresh Postgres
database (tests/reliability/harness.py), drives it, asserts what it must do and
prints its figures; the run ends with one JSON summary of every figure and exits 1
when any check failed.

    python3 tests/reliability/check_resilience.py --segwatch target/debug/segwatch [--only races,kill9]

Checks (names for --only):

  races        200 cases uploaded at once: prediction and reference from different
               threads, every file sent twice (the same bytes), and a racing second
               revision of the prediction (every 4th case) or of the reference (every
               4th case, offset 2). Every answer is 202 or 200 and consistent (the
               same bytes: one 202, the other 200 duplicate with the same revision;
               revisions 1..n per role); the database holds exactly what got 202;
               one job per (prediction, reference) pair, including the case's latest
               pair; results = jobs done; no failed job.
  kill9        8 threads upload 320 pairs; the service is killed with SIGKILL after
               120, 300 and 480 of the 640 uploads were acknowledged (202) and
               started again each time (0.5 s later). Client contract
               (documented here, as a PACS bridge must do it): an upload that ends in
               a connection error (reset, refused, closed without an answer) is sent
               again with the same bytes until it gets 202, or 200 when it had been
               stored before the kill but its answer was lost; 503 is retried after
               Retry-After. Afterwards every acknowledged upload is stored exactly
               once and every case is scored exactly once (the lease is 3 s so a job
               held by the killed process runs again quickly).
  dbrestart    8 threads upload while PostgreSQL is stopped (pg_ctlcluster stop -m fast)
               for 12 s (longer than the 10 s the key cache stays fresh) and started
               again, then restarted (pg_ctlcluster restart) under the same load,
               then its connections are cut 20 times in 2 s (pg_terminate_backend,
               SQLSTATE 57P01, as a restart or failover does). Throughout: uploads get 202/200 or 503 problem+json with
               Retry-After (never another 5xx, a dropped connection or an answer
               later than limits.request_timeout_secs, set to 10 s here through a
               configuration file). While Postgres is stopped: /healthz and /metrics
               (read key) answer 200, segwatch_database_up reads 0 (refresh_secs 1),
               /readyz answers 503; afterwards ready again and database_up 1. Clients
               retry 503 (and, to keep the accounting clean, a 500 too: it is still
               reported as a failure); every acknowledged upload is stored once and
               every case scored once (workers.lease_secs 20 here; jobs finished more
               than 10 s after being queued are reported). Postgres is started again
               even on failure.
  slowloris    header_read_timeout 3 s: 100 connections send a request line and then
               one header line every 0.5 s, never finishing; 10 connections make one
               complete request and then stay idle (keep-alive). All must be closed
               by the server within 3 s + 2 s slack; median and max seconds until the
               close are reported; authenticated requests made meanwhile answer 200
               in under 1 s.
  bombs        (a) 10 concurrent Content-Encoding: gzip bodies of 10.6 MB inflating to
               10 GiB each; ceiling (max_body_memory_bytes) 512 MiB, the smallest
               the service accepts beside the default per-upload limit of 512 MiB:
               each gets 413, or 503 with Retry-After; peak RSS below baseline +
               2 x ceiling (no voxels are decoded for a refused body). (b) on a
               fresh service, 10 concurrent uncompressed 512x512x300 uint8 .nii
               uploads (78.6 MB each; 5 cases, prediction and reference) with the
               ceiling at 256 MiB (max_upload_bytes 100 MiB, memory_budget_voxels
               2 x 512x512x300): some must get 503 + Retry-After before their body is
               read (the client pushed less than a quarter of it), every 503 retried
               after Retry-After is accepted, no other 5xx, every case is scored
               once. Peak RSS (VmHWM) must stay below baseline + 2 x ceiling + 3 bytes
               x memory_budget_voxels (see memory_bound). RSS after and /healthz
               latency meanwhile are reported.
  flood        latency of a legitimate read (GET /v1/sites/{site}/cases, 300 sequential
               requests, read key) alone and while 4 threads send requests with wrong
               keys as fast as they can: p50/p99 both times and the flood rate; every
               flood request gets 401 and legitimate p99 stays under 2 s. Database
               cost: pg_stat_database xact_commit + xact_rollback of the service's
               database over 3 s (+1.5 s for the statistics to be flushed) of flood
               alone, minus the same window idle, must stay under max(50, 1 % of the
               flood requests), measured apart for well-formed unknown keys
               (sw_<id>_<secret> as Bearer or Basic password) and for the other
               wrong keys (a known id with a wrong secret, garbage Bearer, Basic
               without a key).
  cardinality  one ingest key uploads (and completes, so they are scored) predictions
               of 150 versions of one model and of 40 models, and a 4,096-label
               segmentation. Expected with the defaults: 4 versions
               (limits.max_model_versions) and 16 models in all (limits.max_models)
               accepted, the rest 422 too-many-model-versions / too-many-models, the
               4,096 labels 422 too-many-structures; /metrics series (admin key)
               counted before and after; no more than 4 versions of a model, 16
               models and, for one version, 256 structures in /metrics even when
               cases of that version carry different labels (1..256, 257..512,
               513..768); a second round of new versions and models (all refused)
               adds no series. An ingest key's /metrics shows its own site only (no
               other site, no site="all"), checked with a second site's key and data.
               Reported, not asserted: the series one 256-label case adds and the
               resulting worst case for one site, and whether another site can
               still add a model once one key has filled the bound.

Python 3.11 standard library only. The binary is copied to a temporary directory
first, so a rebuild during the run does not change the binary under test.
"""
import argparse
import base64
import concurrent.futures
import gzip
import hashlib
import http.client
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import statistics
import string
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import ADMIN_URL, Service, fixture  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
CONNECTION_ERRORS = (OSError, http.client.HTTPException)


# ---------------------------------------------------------------- reporting

class CheckFailed(AssertionError):
    pass


class Check:
    """Figures and failures of one check. `expect` records a failure and goes on,
    so one missing feature does not hide the other figures; `require` stops."""

    def __init__(self, name):
        self.name = name
        self.figures = {}
        self.failures = []
        self.notes = []

    def fig(self, key, value):
        if isinstance(value, float):
            value = round(value, 4)
        self.figures[key] = value
        print(f"  [{self.name}] {key} = {value}", flush=True)

    def expect(self, condition, message):
        if not condition:
            self.failures.append(message)
            print(f"  [{self.name}] FAIL: {message}", flush=True)
        return condition

    def require(self, condition, message):
        if not condition:
            raise CheckFailed(message)

    def note(self, message):
        self.notes.append(message)
        print(f"  [{self.name}] note: {message}", flush=True)


def pct(values, p):
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-p * len(ordered) // 100))))
    return ordered[rank - 1]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 2)


# ---------------------------------------------------------------- volumes

def nifti(shape, data, datatype=2, bitpix=8, spacing=(1.0, 1.0, 1.0)):
    """An uncompressed single-file NIfTI-1 (.nii) with an sform of `spacing`."""
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into("<hh", h, 70, datatype, bitpix)
    struct.pack_into("<8f", h, 76, 1.0, *spacing, 0, 0, 0, 0)
    struct.pack_into("<f", h, 108, 352.0)  # vox_offset
    h[123] = 2  # xyzt_units: mm
    struct.pack_into("<hh", h, 252, 0, 1)  # qform_code 0, sform_code 1 (scanner)
    struct.pack_into("<4f", h, 280, spacing[0], 0, 0, 0)
    struct.pack_into("<4f", h, 296, 0, spacing[1], 0, 0)
    struct.pack_into("<4f", h, 312, 0, 0, spacing[2], 0)
    h[344:348] = b"n+1\0"
    return bytes(h) + b"\0\0\0\0" + data


def box_volume(shape, lo, hi, label=1):
    """uint8 voxels (x fastest), zero but for a box [lo, hi) of `label`."""
    nx, ny, nz = shape
    buf = bytearray(nx * ny * nz)
    row = bytes([label]) * (hi[0] - lo[0])
    for z in range(lo[2], hi[2]):
        for y in range(lo[1], hi[1]):
            o = (z * ny + y) * nx
            buf[o + lo[0]:o + hi[0]] = row
    return bytes(buf)


def many_labels_nifti(count, first=1):
    """A uint16 volume holding labels first..first+count-1, one voxel each (gzip)."""
    side = 1
    while side ** 3 < count:
        side += 1
    values = list(range(first, first + count)) + [0] * (side ** 3 - count)
    return gzip.compress(nifti((side, side, side), struct.pack(f"<{len(values)}H", *values), datatype=512,
                               bitpix=16), mtime=0)


def small_pair():
    """The fixture label map; prediction and reference differ in bytes only."""
    raw = gzip.decompress(fixture("nifti", "labels.nii.gz"))
    return raw, (lambda mtime: gzip.compress(raw, mtime=mtime))


def gzip_bomb(inflated_bytes, block=MiB):
    """A gzip member of `inflated_bytes` zeros, ~1/1000 of that on the wire, with
    a correct CRC and size. Each block is followed by a full flush, which resets
    the compressor, so every block after the first compresses to the same bytes."""
    zeros = bytes(block)
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    rep = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert rep == c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    end = c.flush()[:-8]  # final empty block, without the trailer of 3 blocks
    blocks = inflated_bytes // block
    crc = 0
    for _ in range(blocks):
        crc = zlib.crc32(zeros, crc)
    body = first + rep * (blocks - 1) + end + struct.pack("<II", crc, (blocks * block) & 0xFFFFFFFF)
    return body, blocks * block


# ---------------------------------------------------------------- HTTP helpers

def try_request(svc, method, path, body=None, key=None, headers=None, timeout=60):
    """(Response, None) or (None, exception): connection errors are results here."""
    try:
        return svc.request(method, path, body=body, key=key, headers=headers, timeout=timeout), None
    except CONNECTION_ERRORS as e:
        return None, e


def is_problem(r):
    return r.headers.get("content-type", "").startswith("application/problem+json")


def problem_type(r):
    try:
        return r.json().get("type", "").rsplit("/", 1)[-1]
    except (ValueError, AttributeError):
        return None


def retry_after(r):
    try:
        return float(r.headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


class RawResult:
    def __init__(self):
        self.status = None
        self.headers = {}
        self.body = b""
        self.sent = 0
        self.elapsed = None
        self.error = None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<raw {self.status} sent={self.sent} error={self.error!r} {self.body[:200]!r}>"


def _response_complete(buf):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    head = buf[:end].decode("latin-1").lower()
    rest = buf[end + 4:]
    m = re.search(r"^content-length:\s*(\d+)", head, re.M)
    if m:
        return len(rest) >= int(m.group(1))
    if "transfer-encoding: chunked" in head:
        return rest.endswith(b"0\r\n\r\n")
    return False


def _parse_response(buf, result):
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return
    lines = buf[:end].decode("latin-1").split("\r\n")
    try:
        result.status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            result.headers[k.strip().lower()] = v.strip()
    rest = buf[end + 4:]
    if result.headers.get("transfer-encoding", "").lower() == "chunked":
        out = b""
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0] or b"0", 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        rest = out
    result.body = rest


def raw_exchange(port, method, path, headers, body, timeout=120, chunk=1 << 16):
    """One request on a raw socket that stops sending its body as soon as the
    server answers (an early 413/503 must be seen, not lost in a broken pipe)."""
    result = RawResult()
    t0 = time.time()
    deadline = t0 + timeout
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        result.error = e
        result.elapsed = time.time() - t0
        return result
    buf = b""
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        s.sendall(head.encode())
        view = memoryview(body)
        s.setblocking(False)
        while result.sent < len(body):
            readable, writable, _ = select.select([s], [s], [], max(0.0, deadline - time.time()))
            if readable:
                break
            if not writable:
                result.error = TimeoutError("timed out sending the body")
                break
            try:
                result.sent += s.send(view[result.sent:result.sent + chunk])
            except BlockingIOError:
                pass
    except OSError as e:
        result.error = e
    try:
        s.setblocking(True)
        while not _response_complete(buf):
            s.settimeout(max(0.1, deadline - time.time()))
            data = s.recv(1 << 16)
            if not data:
                break
            buf += data
    except OSError as e:
        if not buf:
            result.error = result.error or e
    finally:
        s.close()
    result.elapsed = time.time() - t0
    _parse_response(buf, result)
    if result.status is not None:
        result.error = None
    return result


def metric_lines(text):
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def metric_value(text, name):
    for line in metric_lines(text):
        if line.split("{")[0].split(" ")[0] == name:
            return float(line.rsplit(" ", 1)[1])
    return None


# ---------------------------------------------------------------- database helpers

def sql_int(svc, query):
    rows = svc.sql(query)
    return int(rows[0][0]) if rows and rows[0][0] != "" else 0


def job_states(svc):
    return {s: int(n) for s, n in svc.sql("SELECT status, count(*) FROM jobs GROUP BY status")}


def wait_jobs_settled(svc, timeout=180):
    """Waits until no job is queued or running; returns the states."""
    deadline = time.time() + timeout
    while True:
        states = job_states(svc)
        if not states.get("queued") and not states.get("running"):
            return states
        if time.time() > deadline:
            return states
        time.sleep(0.2)


def exactly_once(ck, svc, expected_cases=None):
    """The scoring invariants: one job per (prediction, reference) pair, every job
    done, one result per job, results = jobs done; returns (jobs, results)."""
    states = wait_jobs_settled(svc)
    jobs = sum(states.values())
    results = sql_int(svc, "SELECT count(*) FROM results")
    if states.get("failed"):
        errors = svc.sql("SELECT last_error FROM jobs WHERE status = 'failed' LIMIT 3")
        ck.expect(False, f"failed jobs: {states}; {errors}")
    ck.expect(not states.get("queued") and not states.get("running"), f"jobs never finished: {states}")
    dup_pairs = sql_int(svc, "SELECT count(*) FROM (SELECT 1 FROM jobs GROUP BY prediction_id, reference_id "
                             "HAVING count(*) > 1) d")
    ck.expect(dup_pairs == 0, f"{dup_pairs} (prediction, reference) pairs have more than one job")
    dup_results = sql_int(svc, "SELECT count(*) FROM (SELECT 1 FROM results GROUP BY job_id HAVING count(*) > 1) d")
    ck.expect(dup_results == 0, f"{dup_results} jobs have more than one result")
    ck.expect(results == states.get("done", 0), f"results {results} != jobs done {states.get('done', 0)}")
    if expected_cases is not None:
        per_case = svc.sql("SELECT c.case_key, count(j.id) FROM cases c LEFT JOIN jobs j ON j.case_id = c.id "
                           "GROUP BY c.case_key")
        wrong = [(c, n) for c, n in per_case if int(n) != 1]
        ck.expect(not wrong, f"cases without exactly one job: {wrong[:10]} ({len(wrong)} in all)")
        ck.expect(len(per_case) == expected_cases, f"{len(per_case)} cases stored, expected {expected_cases}")
    return jobs, results


def stored_once(ck, svc, sent):
    """`sent` maps (case, role) to the bytes acknowledged; each must be stored
    exactly once, with the SHA-256 of those bytes."""
    rows = svc.sql("SELECT c.case_key, s.role, encode(s.sha256, 'hex') FROM segmentations s "
                   "JOIN cases c ON c.id = s.case_id")
    stored = {}
    for case, role, sha in rows:
        stored.setdefault((case, role), []).append(sha)
    missing = [k for k in sent if k not in stored]
    dupes = [k for k, v in stored.items() if len(v) > 1]
    wrong = [k for k, body in sent.items() if k in stored and stored[k][0] != hashlib.sha256(body).hexdigest()]
    extra = [k for k in stored if k not in sent]
    ck.expect(not missing, f"acknowledged uploads not stored: {missing[:10]} ({len(missing)})")
    ck.expect(not dupes, f"uploads stored more than once: {dupes[:10]} ({len(dupes)})")
    ck.expect(not wrong, f"stored bytes differ from those acknowledged: {wrong[:10]}")
    return len(rows), extra


# ---------------------------------------------------------------- PostgreSQL control

def pg_cluster():
    version = sorted(os.listdir("/etc/postgresql"))[0]
    return version, "main"


def pg_ctl(action):
    version, name = pg_cluster()
    cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", version, name, action]
    if action == "stop":
        cmd += ["-m", "fast"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def pg_up():
    return subprocess.run(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"], timeout=10).returncode == 0


def ensure_postgres_up():
    """Starts the cluster if it is not answering; waits until it does."""
    if pg_up():
        return
    print("  (starting PostgreSQL again)", flush=True)
    pg_ctl("start")
    deadline = time.time() + 60
    while not pg_up():
        if time.time() > deadline:
            raise RuntimeError("PostgreSQL does not answer after start")
        time.sleep(0.2)


# ---------------------------------------------------------------- 1. races

def check_races(ck, segwatch):
    raw, variant = small_pair()
    bodies = {"P1": variant(1), "R1": variant(2), "P2": variant(3), "R2": variant(4)}
    role_of = {"P1": "prediction", "P2": "prediction", "R1": "reference", "R2": "reference"}
    cases = 200
    tasks = []
    rng = random.Random(1)
    for i in range(cases):
        case = f"race-{i:03d}"
        group = [(case, "P1"), (case, "R1"), (case, "P1"), (case, "R1")]
        if i % 4 == 0:
            group.append((case, "P2"))
        if i % 4 == 2:
            group.append((case, "R2"))
        rng.shuffle(group)
        tasks += group
    with Service(segwatch) as svc:
        answers = []
        lock = threading.Lock()
        retried_503 = [0]

        def send(task):
            case, which = task
            while True:
                r, err = try_request(svc, "PUT", upload_path(svc, case, role_of[which]), bodies[which], svc.ingest)
                if r is not None and r.status == 503 and retry_after(r) is not None:
                    with lock:
                        retried_503[0] += 1
                    time.sleep(min(retry_after(r), 2))
                    continue
                with lock:
                    answers.append((case, which, r, err))
                return

        t0 = time.time()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(send, tasks))
        upload_secs = time.time() - t0
        ck.fig("requests", len(tasks))
        ck.fig("upload_seconds", upload_secs)
        ck.fig("retried_503", retried_503[0])
        statuses = {}
        for _, _, r, err in answers:
            k = r.status if r is not None else type(err).__name__
            statuses[k] = statuses.get(k, 0) + 1
        ck.fig("statuses", {str(k): v for k, v in sorted(statuses.items(), key=str)})
        ck.expect(set(statuses) <= {200, 202}, f"answers other than 200/202: {statuses}; e.g. "
                  f"{[(c, w, r or e) for c, w, r, e in answers if r is None or r.status not in (200, 202)][:3]}")

        # Consistency of the answers.
        by_send = {}
        for case, which, r, err in answers:
            if r is not None and r.status in (200, 202):
                by_send.setdefault((case, which), []).append(r)
        inconsistent = []
        sent_202 = {}
        queued_true = 0
        for (case, which), rs in by_send.items():
            accepted = [r for r in rs if r.status == 202]
            dups = [r for r in rs if r.status == 200]
            if len(accepted) != 1:
                inconsistent.append((case, which, "202 count", len(accepted)))
                continue
            a = accepted[0].json()
            queued_true += bool(a["queued"])
            if a["duplicate"] or a["role"] != role_of[which]:
                inconsistent.append((case, which, "202 body", a))
            for d in dups:
                dj = d.json()
                if not dj["duplicate"] or dj["revision"] != a["revision"] or dj["queued"]:
                    inconsistent.append((case, which, "200 body", dj, "vs", a))
            sent_202[(case, role_of[which], a["revision"])] = bodies[which]
        revisions = {}
        for case, role, rev in sent_202:
            revisions.setdefault((case, role), []).append(rev)
        bad_revs = {k: sorted(v) for k, v in revisions.items() if sorted(v) != list(range(1, len(v) + 1))}
        ck.expect(not inconsistent, f"inconsistent answers: {inconsistent[:5]} ({len(inconsistent)})")
        ck.expect(not bad_revs, f"revisions not 1..n: {list(bad_revs.items())[:5]}")
        ck.fig("accepted_202", len(sent_202))
        ck.fig("queued_true", queued_true)

        # The database holds exactly what got 202.
        rows = svc.sql("SELECT c.case_key, s.role, s.revision, encode(s.sha256, 'hex') FROM segmentations s "
                       "JOIN cases c ON c.id = s.case_id")
        stored = {(c, role, int(rev)): sha for c, role, rev, sha in rows}
        ck.fig("segmentations", len(stored))
        ck.expect(len(rows) == len(sent_202), f"{len(rows)} segmentations stored, {len(sent_202)} uploads got 202")
        mismatch = [k for k, body in sent_202.items()
                    if stored.get(k) != hashlib.sha256(body).hexdigest()]
        ck.expect(not mismatch, f"revisions whose stored bytes differ from the 202'd upload: {mismatch[:5]}")

        t1 = time.time()
        jobs, results = exactly_once(ck, svc)
        ck.fig("scoring_seconds", time.time() - t1)
        ck.fig("jobs", jobs)
        ck.fig("results", results)
        ck.expect(jobs == queued_true, f"{jobs} jobs but {queued_true} answers said queued: true")
        # Every case's latest prediction and reference are paired in a job.
        unpaired = svc.sql("""
            SELECT c.case_key FROM cases c
            WHERE NOT EXISTS (SELECT 1 FROM jobs j
                JOIN segmentations p ON p.id = j.prediction_id JOIN segmentations r ON r.id = j.reference_id
                WHERE j.case_id = c.id
                  AND p.revision = (SELECT max(revision) FROM segmentations WHERE case_id = c.id AND role = 'prediction')
                  AND r.revision = (SELECT max(revision) FROM segmentations WHERE case_id = c.id AND role = 'reference'))
        """)
        ck.expect(not unpaired, f"cases whose latest pair has no job: {unpaired[:5]} ({len(unpaired)})")
        not_scored = []
        for i in range(cases):
            r = svc.get(f"/v1/sites/{svc.site}/cases/race-{i:03d}", key=svc.reader)
            if r.status != 200 or r.json().get("status") != "scored":
                not_scored.append((i, r.status, r.body[:100]))
        ck.expect(not not_scored, f"cases not 'scored' in the API: {not_scored[:5]} ({len(not_scored)})")


def upload_path(svc, case, role, model="m", version="1", site=None):
    site = site or svc.site
    if role == "prediction":
        return f"/v1/sites/{site}/cases/{case}/prediction?model={model}&model_version={version}"
    return f"/v1/sites/{site}/cases/{case}/reference"


# ---------------------------------------------------------------- 2. kill -9 under load

class Uploader:
    """Threads uploading pairs with the client contract: connection errors and
    503s are retried (503 after Retry-After, capped at `cap`) until 200/202."""

    def __init__(self, svc, threads, prefix, cases_per_thread=None, cap=1.0, timeout=30, give_up=240, pause=0.0):
        self.svc, self.prefix, self.cap, self.timeout, self.pause = svc, prefix, cap, timeout, pause
        self.cases_per_thread = cases_per_thread
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.log = []  # (t_start, t_end, case, role, status or None, error repr, response or None)
        self.acked = {}  # (case, role) -> bytes
        self.acked_202 = 0
        self.give_up = time.time() + give_up
        _, variant = small_pair()
        self.pred, self.ref = variant(1), variant(2)
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True) for t in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def join(self):
        for t in self.threads:
            t.join()

    def run(self, t):
        j = 0
        while not self.stop.is_set() and (self.cases_per_thread is None or j < self.cases_per_thread):
            case = f"{self.prefix}-{t}-{j:04d}"
            for role, body in (("prediction", self.pred), ("reference", self.ref)):
                if not self.send(case, role, body):
                    return
            j += 1
            time.sleep(self.pause)

    def send(self, case, role, body):
        while True:
            t0 = time.time()
            r, err = try_request(self.svc, "PUT", upload_path(self.svc, case, role), body, self.svc.ingest,
                                 timeout=self.timeout)
            with self.lock:
                self.log.append((t0, time.time(), case, role, r.status if r else None,
                                 repr(err) if err else None, r))
                if r is not None and r.status in (200, 202):
                    self.acked[(case, role)] = body
                    self.acked_202 += r.status == 202
                    return True
            if time.time() > self.give_up:
                return False
            if r is None:
                time.sleep(0.1)
            elif r.status == 503:
                time.sleep(min(retry_after(r) or self.cap, self.cap))
            elif r.status >= 500:
                time.sleep(0.5)  # retried like a dropped connection; recorded and asserted on
            else:
                return False  # a final refusal: recorded in the log

    def statuses(self):
        counts = {}
        for entry in self.log:
            k = str(entry[4]) if entry[4] is not None else "conn-error"
            counts[k] = counts.get(k, 0) + 1
        return counts


def check_kill9(ck, segwatch):
    with Service(segwatch, env={"SEGWATCH_LEASE_SECS": "3"}) as svc:
        up = Uploader(svc, threads=8, prefix="k9", cases_per_thread=40).start()
        acked_before = {}
        kills = []
        for at in (120, 300, 480):  # of the 640 uploads
            deadline = time.time() + 60
            while up.acked_202 < at and time.time() < deadline:
                time.sleep(0.005)
            with up.lock:
                acked_before.update(up.acked)
                in_flight = 8 - sum(1 for t in up.threads if not t.is_alive())
            svc.kill9()
            t_kill = time.time()
            time.sleep(0.5)
            svc.start()
            kills.append({"acked_before": len(acked_before), "threads_uploading": in_flight,
                          "restart_to_ready_s": round(time.time() - t_kill, 2)})
        ck.fig("kills", kills)
        up.join()
        ck.fig("statuses", up.statuses())
        errors = [e for e in up.log if e[4] is None]
        ck.fig("connection_errors_retried", len(errors))
        # Uploads whose first answer after a connection error was 200: stored before the kill, answer lost.
        lost_acks = 0
        seen_error = set()
        for _, _, case, role, status, err, _ in up.log:
            if status is None:
                seen_error.add((case, role))
            elif status == 200 and (case, role) in seen_error:
                lost_acks += 1
        ck.fig("stored_but_answer_lost_then_200", lost_acks)
        bad = [e for e in up.log if e[4] is not None and e[4] not in (200, 202, 503)]
        ck.expect(not bad, f"answers other than 200/202/503: {[(e[2], e[3], e[4], e[6]) for e in bad[:5]]}")
        bad503 = [e for e in up.log if e[4] == 503 and (retry_after(e[6]) is None or not is_problem(e[6]))]
        ck.expect(not bad503, f"503 without Retry-After/problem+json: {[e[6] for e in bad503[:3]]}")
        total = 8 * 40
        ck.expect(len(up.acked) == 2 * total, f"only {len(up.acked)} of {2 * total} uploads acknowledged")
        missing_before = [k for k in acked_before if k not in up.acked]
        ck.expect(not missing_before, f"acknowledged before the kill, lost: {missing_before[:5]}")
        rows, extra = stored_once(ck, svc, up.acked)
        ck.fig("segmentations", rows)
        ck.expect(not extra, f"stored but never acknowledged: {extra[:5]}")
        t0 = time.time()
        jobs, results = exactly_once(ck, svc, expected_cases=total)
        ck.fig("scoring_after_restart_seconds", time.time() - t0)
        ck.fig("jobs", jobs)
        ck.fig("results", results)
        ck.fig("jobs_run_more_than_once", sql_int(svc, "SELECT count(*) FROM jobs WHERE attempts > 1"))
        panics = svc.log_text().count("panicked")
        ck.expect(panics == 0, f"{panics} panics in the log")


# ---------------------------------------------------------------- 3. database restart

def check_dbrestart(ck, segwatch):
    work = tempfile.mkdtemp(prefix="segwatch-rel-cfg-")
    config = os.path.join(work, "segwatch.toml")
    request_timeout = 10
    with open(config, "w") as f:
        f.write(f"[limits]\nrequest_timeout_secs = {request_timeout}\n")
    # A 20 s lease (default 60 s) bounds how long a job stranded by the outage waits.
    env = {"SEGWATCH_CONFIG": config, "SEGWATCH_REFRESH_SECS": "1", "SEGWATCH_LEASE_SECS": "20"}
    try:
        with Service(segwatch, env=env) as svc:
            up = Uploader(svc, threads=8, prefix="db", cap=0.5, timeout=request_timeout + 10, pause=0.02).start()
            time.sleep(2)
            probes = []  # (t, what, status or error, latency, value)
            probing = threading.Event()

            def probe(what, path, key):
                while not probing.is_set():
                    t = time.time()
                    r, err = try_request(svc, "GET", path, key=key, timeout=request_timeout + 5)
                    value = metric_value(r.body.decode(), "segwatch_database_up") \
                        if r is not None and what == "metrics" and r.status == 200 else None
                    probes.append((t, what, r.status if r else repr(err), time.time() - t, value))
                    time.sleep(0.25)

            probers = [threading.Thread(target=probe, args=a, daemon=True) for a in
                       (("healthz", "/healthz", None), ("metrics", "/metrics", svc.reader), ("readyz", "/readyz", None))]
            for p in probers:
                p.start()
            time.sleep(2)
            t_down = time.time()
            stopped = pg_ctl("stop")
            t_stopped = time.time()
            ck.require(stopped.returncode == 0 and not pg_up(), f"cannot stop PostgreSQL: {stopped.stderr}")
            ck.fig("pg_stop_seconds", t_stopped - t_down)
            time.sleep(12)  # longer than the 10 s the key cache is fresh
            t_start = time.time()
            started = pg_ctl("start")
            ck.require(started.returncode == 0, f"cannot start PostgreSQL: {started.stderr}")
            ensure_postgres_up()
            t_pg_up = time.time()
            ck.fig("pg_start_seconds", t_pg_up - t_start)
            ck.fig("outage_seconds", t_pg_up - t_down)

            def last(what):
                return next((p for p in reversed(probes) if p[1] == what), (0, what, None, 0, None))

            recovered = None
            while time.time() < t_pg_up + 60:
                if last("readyz")[2] == 200 and last("metrics")[4] == 1.0 and last("readyz")[0] > t_pg_up:
                    recovered = time.time()
                    break
                time.sleep(0.1)
            ck.expect(recovered is not None, "not ready with segwatch_database_up 1 within 60 s of Postgres start")
            if recovered:
                ck.fig("ready_and_up_after_pg_start_seconds", recovered - t_pg_up)
            # A second, short outage: `restart` under the same load (connections
            # cut mid-transaction, then "the database system is starting up").
            time.sleep(1)
            t_restart = time.time()
            restarted = pg_ctl("restart")
            ck.require(restarted.returncode == 0, f"cannot restart PostgreSQL: {restarted.stderr}")
            ensure_postgres_up()
            ck.fig("pg_restart_seconds", time.time() - t_restart)
            # Connections cut mid-transaction, many times: what a restart or a
            # failover does to the connections in use (SQLSTATE 57P01).
            time.sleep(1)
            t_terminate = time.time()
            terminated = 0
            for _ in range(20):
                terminated += sql_int(svc, "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM "
                                           "pg_stat_activity WHERE datname = current_database() "
                                           "AND pid <> pg_backend_pid()) t")
                time.sleep(0.1)
            ck.fig("backends_terminated", terminated)
            ck.fig("statuses_terminations", count_statuses([e for e in up.log if e[1] >= t_terminate]))
            time.sleep(3)
            probing.set()
            up.stop.set()
            up.join()
            for p in probers:
                p.join()
            probes.sort()

            # Probes asked and answered while Postgres was stopped.
            during = [p for p in probes if t_stopped <= p[0] and p[0] + p[3] < t_start]
            for what in ("healthz", "metrics", "readyz"):
                got = [p[2] for p in during if p[1] == what]
                ck.fig(f"{what}_during_outage", {str(s): got.count(s) for s in set(got)})
                lat = [p[3] for p in during if p[1] == what]
                ck.fig(f"{what}_latency_ms_during_outage", {"p50": ms(pct(lat, 50)), "max": ms(max(lat, default=None)),
                                                            "over_1s": sum(t > 1 for t in lat)})
            ck.expect(all(p[2] == 200 for p in during if p[1] == "healthz"), "/healthz not always 200 during outage")
            ck.expect(all(p[2] == 200 for p in during if p[1] == "metrics"), "/metrics not always 200 during outage")
            ck.expect(all(p[2] == 503 for p in during if p[1] == "readyz" and p[0] > t_stopped + 1),
                      "/readyz not 503 during the outage: " + str([(round(p[0] - t_stopped, 2), p[2], round(p[3], 2))
                                                                  for p in probes if p[1] == "readyz"]))
            ups = [p[4] for p in probes if p[1] == "metrics" and p[4] is not None]
            zero_at = next((p[0] for p in during if p[1] == "metrics" and p[4] == 0.0), None)
            ck.fig("database_up_sequence", compress_runs(ups))
            ck.expect(zero_at is not None, "segwatch_database_up never read 0 while Postgres was down")
            if zero_at:
                ck.fig("database_up_0_after_seconds", zero_at - t_down)
            ck.expect(ups and ups[-1] == 1.0, "segwatch_database_up not back to 1")

            # Requests answered while Postgres was stopped.
            in_outage = [e for e in up.log if t_stopped <= e[1] <= t_start]
            ck.fig("uploads_answered_during_outage", len(in_outage))
            ck.fig("statuses_during_outage", count_statuses(in_outage))
            ck.fig("statuses_all", up.statuses())
            ck.fig("upload_max_latency_ms_during_outage", ms(max((e[1] - e[0] for e in in_outage), default=None)))
            n503 = [e for e in in_outage if e[4] == 503]
            ck.expect(n503, "no upload got 503 while Postgres was down")
            bad = [e for e in up.log if e[4] not in (200, 202, 503)]
            ck.expect(not bad, "uploads answered otherwise than 200/202/503 (or dropped): "
                      f"{[(e[3], e[4], e[5], e[6], round(e[0] - t_down, 2)) for e in bad[:5]]} ({len(bad)} in all; "
                      f"(role, status, error, answer, seconds after the stop began)); service errors: {log_errors(svc)}")
            bad503 = [e for e in up.log if e[4] == 503 and (retry_after(e[6]) is None or not is_problem(e[6]))]
            ck.expect(not bad503, f"503 without Retry-After or problem+json: {[e[6] for e in bad503[:3]]}")
            slow = [e for e in up.log if e[1] - e[0] > request_timeout + 1]
            ck.expect(not slow, f"{len(slow)} uploads took longer than the request timeout ({request_timeout} s)")
            ck.fig("retry_after_values", sorted({e[6].headers.get("retry-after") for e in n503}))
            ck.fig("statuses_restart", count_statuses([e for e in up.log if e[1] >= t_restart]))
            errors, n_errors = log_errors(svc)
            ck.fig("service_error_log_lines", n_errors)
            ck.fig("service_error_log_first", errors[:3])

            ck.expect(len(up.acked) % 2 == 0 and len(up.acked) > 0, f"{len(up.acked)} uploads acknowledged")
            rows, extra = stored_once(ck, svc, up.acked)
            ck.expect(not extra, f"stored but never acknowledged: {extra[:5]}")
            cases = len({c for c, _ in up.acked})
            ck.fig("cases", cases)
            time.sleep(1)
            pending = svc.sql("SELECT status, attempts, round(extract(epoch FROM lease_until - now())), "
                              "left(coalesce(last_error, ''), 160) FROM jobs WHERE status <> 'done' ORDER BY id LIMIT 5")
            ck.fig("jobs_not_done_1s_after_load", pending)
            t0 = time.time()
            jobs, results = exactly_once(ck, svc, expected_cases=cases)
            ck.fig("scoring_wait_seconds", time.time() - t0)
            slow = svc.sql("SELECT attempts, round(extract(epoch FROM finished_at - created_at)), "
                           "left(coalesce(last_error, ''), 160) FROM jobs "
                           "WHERE finished_at - created_at > interval '10 seconds' ORDER BY id LIMIT 5")
            ck.fig("jobs_done_later_than_10s", slow)
            ck.fig("jobs_run_more_than_once", sql_int(svc, "SELECT count(*) FROM jobs WHERE attempts > 1"))
            ck.fig("job_max_queue_to_done_seconds", float(svc.sql(
                "SELECT coalesce(max(extract(epoch FROM finished_at - created_at)), 0) FROM jobs")[0][0]))
            ck.fig("jobs", jobs)
            ck.fig("results", results)
    finally:
        ensure_postgres_up()
        shutil.rmtree(work, ignore_errors=True)


def log_errors(svc, limit=5):
    """The service's ERROR log lines (JSON logs), shortened."""
    out = []
    for line in svc.log_text().splitlines():
        if ('"level":"ERROR"' in line or " ERROR " in line) and "tower_http::trace" not in line:
            try:
                entry = json.loads(line)
                fields = entry.get("fields", {})
                route = (entry.get("span") or {}).get("route", "-")
                text = f'{entry.get("timestamp", "")[11:23]} {route}: ' + "; ".join(
                    f"{k}={v}" for k, v in fields.items())
            except ValueError:
                text = line
            out.append(text[:300])
    return out[:limit], len(out)


def count_statuses(entries):
    counts = {}
    for e in entries:
        k = str(e[4]) if e[4] is not None else (e[5] or "error").split("(")[0]
        counts[k] = counts.get(k, 0) + 1
    return counts


def compress_runs(values):
    out = []
    for v in values:
        if not out or out[-1][0] != v:
            out.append([v, 1])
        else:
            out[-1][1] += 1
    return [f"{v:g}x{n}" for v, n in out]


# ---------------------------------------------------------------- 4. slow clients

def check_slowloris(ck, segwatch):
    timeout = 3
    slack = 2.0
    with Service(segwatch, env={"SEGWATCH_HEADER_READ_TIMEOUT_SECS": str(timeout)}) as svc:
        idle = {}
        for _ in range(10):
            s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            buf = b""
            while not _response_complete(buf):
                data = s.recv(4096)
                if not data:
                    break
                buf += data
            ck.require(buf.startswith(b"HTTP/1.1 200"), f"keep-alive /healthz: {buf[:100]!r}")
            idle[s] = time.time()
        slow = {}
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", svc.port), timeout=10)
            s.sendall(f"GET /v1/sites/{svc.site}/cases HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
            slow[s] = time.time()
        legit = []

        def legitimate():
            time.sleep(0.5)
            for _ in range(20):
                t = time.time()
                r, err = try_request(svc, "GET", f"/v1/sites/{svc.site}/cases", key=svc.reader, timeout=10)
                legit.append((r.status if r else repr(err), time.time() - t))
                time.sleep(0.15)

        lt = threading.Thread(target=legitimate)
        lt.start()
        closed = {}
        open_socks = set(idle) | set(slow)
        give_up = time.time() + timeout + 12
        next_trickle = time.time() + 0.5
        while open_socks and time.time() < give_up:
            readable, _, _ = select.select(list(open_socks), [], [], 0.05)
            now = time.time()
            for s in readable:
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    closed[s] = now
                    open_socks.discard(s)
            if now >= next_trickle:
                next_trickle = now + 0.5
                for s in [s for s in open_socks if s in slow]:
                    try:
                        s.send(b"X-Slow: 1\r\n")
                    except OSError:
                        closed[s] = now
                        open_socks.discard(s)
        lt.join()
        for s in list(idle) + list(slow):
            s.close()
        for what, socks in (("slowloris", slow), ("idle_keepalive", idle)):
            times = [closed[s] - t0 for s, t0 in socks.items() if s in closed]
            still_open = len(socks) - len(times)
            ck.fig(f"{what}_connections", len(socks))
            ck.fig(f"{what}_closed", len(times))
            ck.fig(f"{what}_close_median_seconds", statistics.median(times) if times else None)
            ck.fig(f"{what}_close_max_seconds", max(times) if times else None)
            ck.expect(still_open == 0, f"{still_open} of {len(socks)} {what} connections still open after "
                                       f"{timeout + 12} s (header_read_timeout {timeout} s)")
            ck.expect(all(t <= timeout + slack for t in times),
                      f"{what}: closed after up to {max(times, default=0):.2f} s > {timeout} + {slack} s")
        lat = [t for s, t in legit if s == 200]
        ck.fig("legit_during_slowloris", {"count": len(legit), "ok": len(lat), "p50_ms": ms(pct(lat, 50)),
                                          "max_ms": ms(max(lat, default=None))})
        ck.expect(len(lat) == len(legit), f"legitimate requests failed during slowloris: {legit[:3]}")
        ck.expect(all(t < 1.0 for t in lat), f"legitimate request slower than 1 s: max {max(lat, default=0):.2f} s")


# ---------------------------------------------------------------- 5. bombs and the memory ceiling

def memory_bound(baseline, ceiling, budget_voxels):
    """Peak RSS segwatch may reach: what it holds at rest (baseline), plus request
    bodies at most `ceiling` (the ceiling counts bytes after decompression), each
    of which may be copied once more while it is collected into one buffer (x2),
    plus decoding and scoring, admitted by workers.memory_budget_voxels, at about
    3 bytes per admitted voxel for uint8 volumes (the decoded labels, the
    de-identified copy that is stored, inflate and comparison buffers)."""
    return baseline + 2 * ceiling + 3 * budget_voxels


class Prober:
    """GET `path` every `every` s in a thread; latencies and statuses."""

    def __init__(self, svc, path="/healthz", key=None, every=0.1):
        self.svc, self.path, self.key, self.every = svc, path, key, every
        self.samples = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.done.is_set():
            t = time.time()
            r, err = try_request(self.svc, "GET", self.path, key=self.key, timeout=60)
            self.samples.append((r.status if r else repr(err), time.time() - t))
            time.sleep(self.every)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    def summary(self):
        lat = [t for _, t in self.samples]
        return {"count": len(lat), "non_200": sum(1 for s, _ in self.samples if s != 200),
                "p50_ms": ms(pct(lat, 50)), "max_ms": ms(max(lat, default=None))}


def check_bombs(ck, segwatch):
    # (a) gzip bombs.
    ceiling_a = 512 * MiB  # the smallest ceiling the service accepts with max_upload_bytes 512 MiB
    t = time.time()
    bomb, inflated = gzip_bomb(10 * GiB)
    ck.fig("bomb_wire_bytes", len(bomb))
    ck.fig("bomb_inflated_bytes", inflated)
    ck.fig("bomb_build_seconds", time.time() - t)
    env_a = {"SEGWATCH_MAX_BODY_MEMORY_BYTES": str(ceiling_a)}
    with Service(segwatch, env=env_a) as svc:
        svc.get("/healthz")
        baseline = svc.rss_bytes()
        ck.fig("a_baseline_rss_mb", baseline / MiB)
        barrier = threading.Barrier(10)
        headers = {"Authorization": f"Bearer {svc.ingest}", "Content-Encoding": "gzip",
                   "Content-Type": "application/octet-stream", "Content-Length": str(len(bomb))}

        def send_bomb(i):
            barrier.wait()
            return raw_exchange(svc.port, "PUT", upload_path(svc, f"bomb-{i}", "prediction"), headers, bomb,
                                timeout=180)

        t = time.time()
        with Prober(svc) as health, concurrent.futures.ThreadPoolExecutor(10) as pool:
            results = list(pool.map(send_bomb, range(10)))
        ck.fig("a_seconds", time.time() - t)
        ck.fig("a_healthz_meanwhile", health.summary())
        ck.fig("a_statuses", {str(s): [r.status for r in results].count(s) for s in {r.status for r in results}})
        ck.fig("a_answer_seconds_max", max(r.elapsed for r in results))
        ck.fig("a_wire_bytes_sent_max", max(r.sent for r in results))
        for r in results:
            ok = r.status == 413 or (r.status == 503 and retry_after(r) is not None)
            ck.expect(ok, f"bomb answered {r!r}, expected 413, or 503 with Retry-After")
            if r.status is not None:
                ck.expect(is_problem(r), f"bomb answer not problem+json: {r!r}")
        ck.fig("a_problem_details", sorted({(r.status, r.json().get("detail", "")[:120]) for r in results
                                            if r.status and is_problem(r)}))
        peak = svc.peak_rss_bytes()
        bound = baseline + 2 * ceiling_a
        ck.fig("a_peak_rss_mb", peak / MiB)
        ck.fig("a_ceiling_mb", ceiling_a / MiB)
        ck.fig("a_peak_bound_mb", bound / MiB)
        ck.expect(peak <= bound, f"gzip bombs: peak RSS {peak / MiB:.0f} MiB > bound {bound / MiB:.0f} MiB "
                                 f"(baseline + 2 x ceiling; no voxels are decoded for a refused body)")
        time.sleep(2)
        ck.fig("a_rss_after_mb", svc.rss_bytes() / MiB)
        r = svc.get("/healthz")
        ck.expect(r.status == 200, f"/healthz after the bombs: {r}")
    del bomb

    # (b) large uncompressed uploads against a 256 MiB ceiling.
    ceiling = 256 * MiB
    budget_voxels = 2 * 512 * 512 * 300
    env_b = {"SEGWATCH_MAX_BODY_MEMORY_BYTES": str(ceiling), "SEGWATCH_MAX_UPLOAD_BYTES": str(100 * MiB),
             "SEGWATCH_MEMORY_BUDGET_VOXELS": str(budget_voxels)}
    shape = (512, 512, 300)
    t = time.time()
    pred = nifti(shape, box_volume(shape, (200, 200, 100), (260, 260, 160)))
    ref = nifti(shape, box_volume(shape, (202, 200, 100), (262, 260, 160)))
    ck.fig("b_volume_build_seconds", time.time() - t)
    ck.fig("b_upload_bytes", len(pred))
    with Service(segwatch, env=env_b) as svc:
        svc.get("/healthz")
        baseline = svc.rss_bytes()
        ck.fig("b_baseline_rss_mb", baseline / MiB)
        barrier = threading.Barrier(10)
        attempts = []
        lock = threading.Lock()

        def send_big(i):
            case, role = f"big-{i // 2}", ("prediction", "reference")[i % 2]
            body = pred if role == "prediction" else ref
            headers = {"Authorization": f"Bearer {svc.ingest}", "Content-Type": "application/octet-stream",
                       "Content-Length": str(len(body))}
            barrier.wait()
            deadline = time.time() + 200
            n = 0
            while True:
                n += 1
                r = raw_exchange(svc.port, "PUT", upload_path(svc, case, role), headers, body, timeout=150)
                with lock:
                    attempts.append((i, n, r))
                if r.status == 503 and retry_after(r) is not None and time.time() < deadline:
                    time.sleep(min(retry_after(r), 10) + random.uniform(0, 0.5))
                    continue
                return r

        t = time.time()
        with Prober(svc) as health, concurrent.futures.ThreadPoolExecutor(10) as pool:
            finals = list(pool.map(send_big, range(10)))
        ck.fig("b_seconds_until_all_accepted", time.time() - t)
        ck.fig("b_healthz_meanwhile", health.summary())
        if health.summary()["max_ms"] and health.summary()["max_ms"] > 1000:
            ck.note(f"/healthz took up to {health.summary()['max_ms']:.0f} ms during the large uploads: "
                    "work on the async runtime threads (e.g. hashing the body) holds them")
        first = [r for i, n, r in attempts if n == 1]
        ck.fig("b_first_round_statuses", {str(s): [r.status for r in first].count(s)
                                          for s in {r.status for r in first}})
        refused = [r for _, _, r in attempts if r.status == 503]
        ck.fig("b_503_total", len(refused))
        ck.fig("b_attempts_total", len(attempts))
        if refused:
            ck.fig("b_503_answer_seconds_max", max(r.elapsed for r in refused))
            ck.fig("b_503_body_bytes_sent_max", max(r.sent for r in refused))
            ck.fig("b_503_types", sorted({problem_type(r) or "-" for r in refused}))
        ck.expect(refused, f"no upload got 503: 10 x {len(pred) / MiB:.0f} MiB at once passed a ceiling of "
                           f"{ceiling / MiB:.0f} MiB")
        for i, n, r in attempts:
            ok = r.status in (200, 202) or (r.status == 503 and retry_after(r) is not None and is_problem(r))
            ck.expect(ok, f"big upload {i} attempt {n}: {r!r}; expected 202 or 503 problem+json with Retry-After")
        ck.expect(all(r.status in (200, 202) for r in finals),
                  f"uploads not accepted after retrying: {[r for r in finals if r.status not in (200, 202)]}")
        # "Before its body is read": the client could only push what the socket
        # buffers hold (a few MB on loopback) before the answer came.
        read_first = [r for r in refused if r.sent > len(pred) // 4]
        ck.expect(not read_first, f"503 for the ceiling came after the body was read: "
                                  f"{[(round(r.elapsed, 2), r.sent) for r in read_first[:3]]}")
        if refused and max(r.elapsed for r in refused) > 1:
            ck.note(f"503 for the ceiling took up to {max(r.elapsed for r in refused):.1f} s to answer "
                    "(no body read; the runtime was busy)")
        t = time.time()
        jobs, results = exactly_once(ck, svc, expected_cases=5)
        ck.fig("b_scoring_seconds", time.time() - t)
        ck.fig("b_results", results)
        peak = svc.peak_rss_bytes()
        bound = memory_bound(baseline, ceiling, budget_voxels)
        ck.fig("b_ceiling_mb", ceiling / MiB)
        ck.fig("b_memory_budget_voxels", budget_voxels)
        ck.fig("b_peak_rss_mb", peak / MiB)
        ck.fig("b_peak_bound_mb", bound / MiB)
        ck.expect(peak <= bound, f"large uploads: peak RSS {peak / MiB:.0f} MiB > bound {bound / MiB:.0f} MiB "
                                 "(baseline + 2 x ceiling + 3 B x memory_budget_voxels)")
        time.sleep(2)
        ck.fig("b_rss_after_mb", svc.rss_bytes() / MiB)


# ---------------------------------------------------------------- 6. unauthenticated flood

def check_flood(ck, segwatch):
    with Service(segwatch) as svc:
        _, variant = small_pair()
        for i in range(5):
            svc.upload(f"fl-{i}", "prediction", variant(1))
            svc.upload(f"fl-{i}", "reference", variant(2))
        svc.wait_scored(5)
        known_id = svc.reader.split("_")[1]
        path = f"/v1/sites/{svc.site}/cases"
        db = svc.db

        def xacts():
            return sql_int(svc, f"SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = '{db}'")

        def legit_run(n=300):
            lat, bad = [], []
            for _ in range(n):
                t = time.time()
                r, err = try_request(svc, "GET", path, key=svc.reader, timeout=30)
                if r is not None and r.status == 200:
                    lat.append(time.time() - t)
                else:
                    bad.append(r or err)
            return lat, bad

        alnum = string.ascii_lowercase + string.digits

        def rand(n, alphabet=alnum):
            return "".join(random.choice(alphabet) for _ in range(n))

        def wrong_auth(kinds=(0, 1, 2, 3, 4)):
            kind = random.choice(kinds)
            if kind == 0:
                return f"Bearer sw_{rand(12, '0123456789abcdef')}_{rand(64, '0123456789abcdef')}"
            if kind == 1:
                return f"Bearer sw_{known_id}_{rand(64, '0123456789abcdef')}"
            if kind == 2:
                return f"Bearer {rand(40, string.ascii_letters + string.digits + '-._~+/')}"
            if kind == 3:
                user = rand(8)
                return "Basic " + base64.b64encode(f"{user}:sw_{rand(12)}_{rand(64)}".encode()).decode()
            return "Basic " + base64.b64encode(f"{rand(6)}:{rand(20)}".encode()).decode()

        def flooder(stop, counts, lock, kinds):
            conn = None
            local = {}
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
                    conn.request("GET", path, headers={"Authorization": wrong_auth(kinds)})
                    r = conn.getresponse()
                    r.read()
                    local[r.status] = local.get(r.status, 0) + 1
                    if r.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except CONNECTION_ERRORS as e:
                    local[type(e).__name__] = local.get(type(e).__name__, 0) + 1
                    if conn:
                        conn.close()
                    conn = None
            with lock:
                for k, v in local.items():
                    counts[k] = counts.get(k, 0) + v

        def flood(seconds=None, until=None, kinds=(0, 1, 2, 3, 4)):
            stop, counts, lock = threading.Event(), {}, threading.Lock()
            threads = [threading.Thread(target=flooder, args=(stop, counts, lock, kinds)) for _ in range(4)]
            t0 = time.time()
            for t in threads:
                t.start()
            if until is not None:
                result = until()
            else:
                time.sleep(seconds)
                result = None
            stop.set()
            for t in threads:
                t.join()
            return counts, time.time() - t0, result

        # Legitimate latency alone, then under the flood.
        alone, bad_alone = legit_run()
        ck.fig("alone_p50_ms", ms(pct(alone, 50)))
        ck.fig("alone_p99_ms", ms(pct(alone, 99)))
        # The flood: wrong secrets of a known id, garbage Bearer tokens, Basic
        # without a key, as fast as 4 threads go. (Well-formed unknown ids wait
        # up to 1 s for the once-a-second key reload, so they cannot flood; they
        # are measured below.)
        counts, secs, (under, bad_under) = flood(until=legit_run, kinds=(1, 2, 4))
        total = sum(counts.values())
        ck.fig("under_flood_p50_ms", ms(pct(under, 50)))
        ck.fig("under_flood_p99_ms", ms(pct(under, 99)))
        ck.fig("flood_requests", total)
        ck.fig("flood_rate_per_second", total / secs)
        ck.fig("flood_statuses", {str(k): v for k, v in counts.items()})
        ck.expect(not bad_alone and not bad_under, f"legitimate requests failed: {(bad_alone + bad_under)[:3]}")
        ck.expect(set(counts) == {401}, f"flood answers other than 401: {counts}")
        ck.expect(pct(under, 99) is not None and pct(under, 99) < 2.0,
                  f"legitimate p99 under the flood {ms(pct(under, 99))} ms (bound 2000 ms)")

        # Database transactions: idle vs flood alone, same duration; well-formed
        # unknown key ids (sw_<id>_<secret>, Bearer or Basic) apart from the rest
        # (known id with a wrong secret, garbage Bearer, Basic without a key).
        window, settle = 3.0, 1.5
        time.sleep(settle)
        x0 = xacts()
        time.sleep(window + settle)
        idle = xacts() - x0
        ck.fig("xacts_idle_window", idle)
        for label, kinds in (("unknown_ids", (0, 3)), ("other_wrong_keys", (1, 2, 4))):
            x0 = xacts()
            counts2, _, _ = flood(seconds=window, kinds=kinds)
            time.sleep(settle)
            during = xacts() - x0
            n2 = sum(counts2.values())
            excess = during - idle
            ck.fig(f"{label}_xacts_window", during)
            ck.fig(f"{label}_requests_window", n2)
            ck.fig(f"{label}_statuses", {str(k): v for k, v in counts2.items()})
            ck.fig(f"{label}_excess_xacts_per_1000_requests", round(1000 * excess / max(n2, 1), 2))
            limit = max(50, n2 // 100)
            ck.expect(set(counts2) == {401}, f"{label}: answers other than 401: {counts2}")
            ck.expect(excess <= limit, f"{label}: {n2} requests with wrong keys cost the database {excess} "
                                       f"transactions over idle (limit {limit}): they reach the database")


# ---------------------------------------------------------------- 7. hostile cardinality

def check_cardinality(ck, segwatch):
    max_versions, max_models = 4, 16
    with Service(segwatch, env={"SEGWATCH_REFRESH_SECS": "1"}) as svc:
        _, variant = small_pair()
        pred, ref = variant(1), variant(2)

        def series():
            r = svc.get("/metrics", key=svc.admin)
            ck.require(r.status == 200, f"/metrics: {r}")
            return metric_lines(r.body.decode())

        def pair(case, model, version, site=None, key=None):
            key = key or svc.ingest
            r = svc.put(upload_path(svc, case, "prediction", model, version, site), pred, key=key)
            if r.status == 202:
                r2 = svc.put(upload_path(svc, case, "reference", site=site), ref, key=key)
                ck.expect(r2.status == 202, f"reference of {case}: {r2}")
            return r

        def scored_and_refreshed():
            n = sql_int(svc, "SELECT count(*) FROM jobs")
            svc.wait_scored(n)
            time.sleep(2.5)  # two refreshes

        before = series()
        ck.fig("series_before", len(before))

        # Site isolation of an ingest key's /metrics.
        site2_key = svc.new_ingest_key("site2")
        ck.expect(pair("iso-1", "m", "1").status == 202, "site1 pair")
        ck.expect(pair("iso-2", "s2model", "1", site="site2", key=site2_key).status == 202, "site2 pair")
        scored_and_refreshed()
        admin_text = svc.get("/metrics", key=svc.admin).body.decode()
        ck.expect('site="site2"' in admin_text and 'site="site1"' in admin_text,
                  "admin /metrics lacks one of the sites' series (isolation test not meaningful)")
        for own, other, key in (("site1", "site2", svc.ingest), ("site2", "site1", site2_key)):
            r = svc.get("/metrics", key=key)
            ck.expect(r.status == 200, f"{own} ingest /metrics: {r}")
            text = r.body.decode()
            leaks = [line for line in metric_lines(text)
                     if f'site="{other}"' in line or 'site="all"' in line
                     or (own == "site1" and 'model="s2model"' in line)
                     or (own == "site2" and 'model="m"' in line)]
            ck.fig(f"{own}_ingest_series", len(metric_lines(text)))
            ck.expect(not leaks, f"{own}'s ingest key sees other sites' series: {leaks[:3]} ({len(leaks)})")
            ck.expect(f'site="{own}"' in text, f"{own}'s ingest key does not see its own series")

        # 150 versions of one model.
        v_status = {}
        v_types = {}
        for i in range(150):
            r = pair(f"ver-{i:03d}", "hostile", f"v{i}")
            v_status[r.status] = v_status.get(r.status, 0) + 1
            if r.status != 202:
                v_types[problem_type(r)] = v_types.get(problem_type(r), 0) + 1
        ck.fig("versions_statuses", {str(k): v for k, v in v_status.items()})
        ck.fig("versions_refusal_types", v_types)
        accepted_versions = v_status.get(202, 0)
        ck.expect(accepted_versions == max_versions,
                  f"{accepted_versions} of 150 versions of one model accepted, expected {max_versions} "
                  "(limits.max_model_versions)")
        ck.expect(v_types == ({"too-many-model-versions": 150 - accepted_versions} if accepted_versions < 150
                              else {}), f"version refusals: {v_types}, expected 422 too-many-model-versions")
        # 40 models (m, s2model and hostile are active already).
        m_status, m_types = {}, {}
        for i in range(40):
            r = pair(f"mod-{i:03d}", f"hm{i}", "1")
            m_status[r.status] = m_status.get(r.status, 0) + 1
            if r.status != 202:
                m_types[problem_type(r)] = m_types.get(problem_type(r), 0) + 1
                ck.expect(r.status == 422 and is_problem(r), f"model refusal not 422 problem+json: {r}")
        ck.fig("models_statuses", {str(k): v for k, v in m_status.items()})
        ck.fig("models_refusal_types", m_types)
        active_before = 3
        ck.expect(m_status.get(202, 0) == max_models - active_before,
                  f"{m_status.get(202, 0)} new models accepted with {active_before} active, expected "
                  f"{max_models - active_before} (limits.max_models {max_models})")
        ck.expect(set(m_types) <= {"too-many-models"}, f"model refusals: {m_types}")
        # An active version is still accepted at the bound.
        r = svc.put(upload_path(svc, "ver-again", "prediction", "hostile", "v0"), pred, key=svc.ingest)
        ck.expect(r.status == 202, f"a prediction for an active version at the bound: {r}")
        # Another site meets the deployment-wide bound too (reported, not asserted).
        r = svc.put(upload_path(svc, "s2-new", "prediction", "s2new", "1", site="site2"), pred, key=site2_key)
        ck.fig("other_site_new_model_after_fill", f"{r.status} {problem_type(r) or ''}".strip())
        if r.status == 422:
            ck.note("the model bounds are deployment-wide: one site's ingest key filling them refuses every other "
                    "site's new models for 30 days")
        # 4,096 labels.
        many = many_labels_nifti(4096)
        r = svc.put(upload_path(svc, "labels-4096", "prediction", "m", "1"), many, key=svc.ingest)
        ck.fig("labels_4096_prediction", f"{r.status} {problem_type(r)}")
        ck.expect(r.status == 422 and problem_type(r) == "too-many-structures" and is_problem(r),
                  f"4,096-label prediction: {r}, expected 422 too-many-structures")
        r = svc.put(upload_path(svc, "labels-4096", "reference"), many, key=svc.ingest)
        ck.fig("labels_4096_reference", f"{r.status} {problem_type(r)}")
        ck.expect(r.status == 422 and problem_type(r) == "too-many-structures",
                  f"4,096-label reference: {r}, expected 422 too-many-structures")

        scored_and_refreshed()
        after = series()
        ck.fig("series_after", len(after))
        ck.fig("series_added", len(after) - len(before))
        text = "\n".join(after)
        versions = set(re.findall(r'model="hostile",model_version="([^"]+)"', text))
        models = set(re.findall(r'model="([^"]+)"', text))
        ck.fig("hostile_versions_in_metrics", len(versions))
        ck.fig("models_in_metrics", len(models))
        ck.expect(len(versions) <= max_versions, f"{len(versions)} versions of one model in /metrics")
        ck.expect(len(models) <= max_models, f"{len(models)} models in /metrics")
        structures = set(re.findall(r'structure="([^"]+)"', text))
        ck.fig("structures_in_metrics", len(structures))
        ck.expect(len(structures) <= 256, f"{len(structures)} structures in /metrics")

        # What one accepted case with max_structures labels adds (for an active
        # version): the worst case one site can reach is about that many series per
        # structure x max_structures x max_models x max_model_versions.
        labels256 = many_labels_nifti(256)
        r = svc.put(upload_path(svc, "labels-256", "prediction", "hostile", "v0"), labels256, key=svc.ingest)
        ck.expect(r.status == 202, f"a 256-label prediction (the limit) for an active version: {r}")
        if r.status == 202:
            r = svc.put(upload_path(svc, "labels-256", "reference"), labels256, key=svc.ingest)
            ck.expect(r.status == 202, f"a 256-label reference: {r}")
            scored_and_refreshed()
            with_256 = series()
            per_structure = (len(with_256) - len(after)) / 256
            ck.fig("series_added_by_256_label_case", len(with_256) - len(after))
            ck.fig("worst_case_series_one_site", round(per_structure * 256 * max_models * max_versions))
            after = with_256
            # limits.max_structures bounds one upload; other cases of the same
            # version may carry other labels (257..512, 513..768).
            for i, first in enumerate((257, 513)):
                other = many_labels_nifti(256, first)
                r1 = svc.put(upload_path(svc, f"labels-256-{i}", "prediction", "hostile", "v0"), other, key=svc.ingest)
                r2 = svc.put(upload_path(svc, f"labels-256-{i}", "reference"), other, key=svc.ingest)
                ck.fig(f"labels_{first}_{first + 255}_same_version", f"{r1.status} {r2.status}")
            scored_and_refreshed()
            rotated = series()
            # Structure "all" is the per-case mean stream, not a structure of the upload.
            structures_v0 = set(re.findall(r'model="hostile",model_version="v0",[^}]*structure="([^"]+)"',
                                           "\n".join(rotated))) - {"all"}
            ck.fig("series_after_rotating_labels", len(rotated))
            ck.fig("structures_of_one_version_in_metrics", len(structures_v0))
            ck.expect(len(structures_v0) <= 256,
                      f"one model version has {len(structures_v0)} structures in /metrics, more than "
                      "limits.max_structures (256): cases with other labels add series without bound")
            ck.expect(r2.status == 422, f"a pair bringing new labels to a full version: {r2}")
            after = rotated
        # Round 2: more new versions and models, all refused, add no series.
        refused2 = 0
        for i in range(20):
            refused2 += pair(f"ver2-{i:03d}", "hostile", f"w{i}").status == 422
        for i in range(10):
            refused2 += pair(f"mod2-{i:03d}", f"hx{i}", "1").status == 422
        ck.fig("round2_refused_of_30", refused2)
        ck.expect(refused2 == 30, f"round 2: {30 - refused2} of 30 new versions/models accepted past the bounds")
        scored_and_refreshed()
        after2 = series()
        ck.fig("series_after_round2", len(after2))
        ck.expect(len(after2) <= len(after) + 2, f"refused uploads added {len(after2) - len(after)} series")


# ---------------------------------------------------------------- main

CHECKS = {
    "races": check_races,
    "kill9": check_kill9,
    "dbrestart": check_dbrestart,
    "slowloris": check_slowloris,
    "bombs": check_bombs,
    "flood": check_flood,
    "cardinality": check_cardinality,
}


def stable_binary(path, wait):
    """Waits (up to `wait` s) for the binary to exist and stop changing (the same
    size and mtime 2 s apart); copies it, so a rebuild during the run is not seen."""
    deadline = time.time() + wait
    last = None
    while True:
        try:
            st = os.stat(path)
            sig = (st.st_size, st.st_mtime)
            if sig == last and os.access(path, os.X_OK):
                break
            last = sig
        except FileNotFoundError:
            last = None
            print(f"waiting for {path} ...", flush=True)
            if time.time() > deadline:
                raise SystemExit(f"{path} missing after {wait} s")
        if time.time() > deadline + 60:
            raise SystemExit(f"{path} still changing")
        time.sleep(2)
    work = tempfile.mkdtemp(prefix="segwatch-rel-bin-")
    copy = os.path.join(work, "segwatch")
    shutil.copy2(path, copy)
    return copy, work


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segwatch", default="target/debug/segwatch")
    parser.add_argument("--only", help="comma-separated checks: " + ", ".join(CHECKS))
    parser.add_argument("--wait-binary", type=int, default=900, help="seconds to wait for the binary")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CHECKS)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {', '.join(CHECKS)}")

    def terminate(signum, frame):
        raise SystemExit(f"signal {signum}")
    signal.signal(signal.SIGTERM, terminate)

    segwatch, bin_dir = stable_binary(os.path.abspath(args.segwatch), args.wait_binary)
    print(f"segwatch under test: {args.segwatch} (copied), Postgres admin {ADMIN_URL}", flush=True)
    summary = {"binary": os.path.abspath(args.segwatch), "binary_mtime": time.ctime(os.stat(segwatch).st_mtime),
               "checks": {}}
    started = time.time()
    try:
        for name in names:
            print(f"== {name}", flush=True)
            ck = Check(name)
            t0 = time.time()
            error = None
            try:
                CHECKS[name](ck, segwatch)
            except CheckFailed as e:
                error = str(e)
            except Exception as e:  # a check that crashed has failed, the others still run
                error = f"{type(e).__name__}: {e}"
                traceback.print_exc()
            finally:
                ensure_postgres_up()
            if error:
                ck.failures.append(error)
                print(f"  [{name}] FAIL: {error}", flush=True)
            ok = not ck.failures
            summary["checks"][name] = {"ok": ok, "seconds": round(time.time() - t0, 1), "figures": ck.figures,
                                       "failures": ck.failures, "notes": ck.notes}
            print(f"== {name}: {'ok' if ok else 'FAILED'} in {time.time() - t0:.1f} s", flush=True)
    finally:
        ensure_postgres_up()
        shutil.rmtree(bin_dir, ignore_errors=True)
    summary["seconds"] = round(time.time() - started, 1)
    summary["ok"] = all(c["ok"] for c in summary["checks"].values())
    print(json.dumps(summary, indent=2, default=str))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
