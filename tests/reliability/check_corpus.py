#!/usr/bin/env python3
"""Sends the hostile corpus (corpus.py) to a real segwatch and scans everything
the service keeps or says for patient data.

    python3 tests/reliability/check_corpus.py --segwatch target/debug/segwatch [--verbose]

One segwatch on a fresh Postgres database (harness.Service), configured with
corpus.LIMITS and a dicomweb.case_key_secret. What is asserted:

1. The corpus over REST. Every entry is PUT as a prediction and as a reference
   (each to its own fresh case key; an entry with a partner has the partner
   uploaded first as the other role, which must answer 202):
   - the status is exactly the entry's expected status, and never 5xx;
   - every error is application/problem+json with type, title, status (equal
     to the HTTP status) and detail; every 2xx is the JSON upload answer;
   - a refusal stores nothing: no cases, segmentations or jobs row for its case
     key (a partner's own rows excepted), and the segmentations table holds
     exactly one row per 202;
   - an accepted upload that completed a pair is scored: its job ends "done"
     (a 202 must be a file that can be scored).
2. The corpus over DICOMweb STOW-RS. Every DICOM entry marked `stow` that REST
   refuses is POSTed alone to /dicom-web/studies (with its own SOPInstanceUID
   and StudyInstanceUID): 409 application/dicom+json with one FailedSOPSequence
   item carrying a FailureReason, never 5xx, and nothing stored (cases,
   segmentations and jobs counts unchanged). Hostile STOW-RS requests (other
   media types, no Content-Type, no boundary, no parts, no closing delimiter,
   an empty or oversized body, keys that may not store, an admin key without a
   site) get their 4xx as problem+json and store nothing.
3. The patient-data scan. DICOM SEG pairs carrying distinctive identifying
   values (patient name, ID, birth date, address, institution, physicians,
   operators, accession number, study ID, free-text descriptions and comments,
   private and nested elements) with fresh Study/Series/SOP/FrameOfReference and
   referenced UIDs, and NIfTI-1 and NIfTI-2 pairs with identifying free text
   (descrip, aux_file, intent_name, db_name, an extension, the gzip file name
   and comment), are uploaded over REST and STOW-RS and scored. Then none of
   those values, none of those UIDs, and none of the fixtures' fake identities
   and UIDs may appear in: any column of any table (as text), any bytea value
   (raw, gzip/zlib-inflated, and a deflated DICOM data set inflated), the
   service log, /metrics, or any API answer (every case, the case listing,
   incidents, the drift plan, schemas, baselines, read with the admin, read and
   ingest keys, and every answer received during the run). The one exception is
   PS3.18's echo of a STOW-RS instance's own SOPInstanceUID in
   ReferencedSOPInstanceUID (0008,1155) of that request's answer, which is
   counted and reported. Positive checks: every planted value is in what was
   uploaded (so the scan can find it), the stored SEGs carry the
   de-identification method and the keyed hash of their StudyInstanceUID, and
   the STOW-RS case key is the keyed hash of study and series (README).

Prints a summary table; exits 1 listing every mismatch. Python standard library
only; about 30 s on a 2-core machine.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import hmac
import http.client
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import corpus as C  # noqa: E402
from harness import ADMIN_URL, Response, Service, fixture  # noqa: E402

CASE_KEY_SECRET = "reliability-case-key-secret"
# What de-identification writes into DeidentificationMethod (formats::deidentify::METHOD).
DEIDENTIFICATION_METHOD = b"segwatch: PS3.15 E.1.1 basic profile, UIDs keyed-hashed"
PROBLEM_JSON = "application/problem+json"
DICOM_JSON = "application/dicom+json"
STUDY_UID = (0x0020, 0x000D)


class Failures:
    """Every mismatch, with where it happened."""

    def __init__(self):
        self.items = []

    def add(self, where, what):
        self.items.append(f"{where}: {what}")


def short(body: bytes, n: int = 160) -> str:
    return body[:n].decode("utf-8", "replace").replace("\n", " ")


# ---------------------------------------------------------------------------
# Talking to the service and its database
# ---------------------------------------------------------------------------

# 503 answers retried, by route (the database was unreachable).
RETRIES = Counter()


def wait_for_postgres(timeout=120):
    """Other suites may restart the shared Postgres: wait until it answers."""
    deadline = time.time() + timeout
    while subprocess.run(["psql", ADMIN_URL, "-qAtc", "SELECT 1"], capture_output=True).returncode != 0:
        if time.time() > deadline:
            sys.exit(f"Postgres at {ADMIN_URL} does not answer")
        time.sleep(1)


def sql(svc, query, attempts=40):
    """svc.sql, retried while Postgres is unreachable."""
    for attempt in range(attempts):
        try:
            return svc.sql(query)
        except subprocess.CalledProcessError as e:
            if e.returncode != 2 or attempt == attempts - 1:  # psql exits 2 when it cannot connect
                raise
            time.sleep(0.5)


def psql_out(svc, *args):
    """Raw psql output on the service database (retried like `sql`)."""
    for attempt in range(40):
        done = subprocess.run(["psql", svc.db_url, *args], capture_output=True)
        if done.returncode == 0:
            return done.stdout
        if done.returncode != 2 or attempt == 39:
            raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)
        time.sleep(0.5)


def request_reading_early(svc, method, path, body, key, headers):
    """A request whose body is sent while watching for an early answer (a 413
    comes before the body is read): sending stops once the service answers or
    closes, and the answer is read, as curl does."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{svc.port}", f"Content-Length: {len(body)}",
             "Connection: close"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", svc.port), timeout=120) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        sent = 0
        while sent < len(body) and not select.select([sock], [], [], 0)[0]:
            try:
                sent += sock.send(body[sent:sent + (1 << 16)])
            except OSError:
                break
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())


def send(svc, method, path, body=None, key=None, headers=None):
    """One request. A 503 with Retry-After (documented for a database that is
    down) is retried after the time it asks for, at most 10 times, and counted."""
    for _ in range(10):
        if body is not None and len(body) > 1 << 20:
            r = request_reading_early(svc, method, path, body, key, headers)
        else:
            r = svc.request(method, path, body=body, key=key, headers=headers)
        if r.status != 503 or "retry-after" not in r.headers:
            return r
        RETRIES[path.split("?")[0].rsplit("/", 1)[-1]] += 1
        time.sleep(min(float(r.headers["retry-after"]), 5))
    return r


def upload(svc, case, role, body, headers=None, model="m", version="1"):
    """PUT a prediction (with model and version) or a reference with the ingest key."""
    query = f"?model={model}&model_version={version}" if role == "prediction" else ""
    return send(svc, "PUT", f"/v1/sites/{svc.site}/cases/{case}/{role}{query}", body, svc.ingest,
                headers or {"Content-Type": "application/octet-stream"})


def check_problem(response, where, failures):
    """An error answer must be problem+json whose status is the HTTP status;
    returns the problem type's last segment."""
    media = response.headers.get("content-type", "")
    if media.split(";")[0].strip() != PROBLEM_JSON:
        failures.add(where, f"error {response.status} is {media or 'without a Content-Type'}, not {PROBLEM_JSON}: "
                            f"{short(response.body)}")
        return None
    try:
        problem = json.loads(response.body)
    except ValueError:
        failures.add(where, f"problem+json body is not JSON: {short(response.body)}")
        return None
    missing = [k for k in ("type", "title", "status", "detail") if not problem.get(k)]
    if missing or problem.get("status") != response.status:
        failures.add(where, f"problem lacks {missing} or its status {problem.get('status')} != {response.status}")
    return str(problem.get("type", "")).rsplit("/", 1)[-1]


def counts(svc):
    """(cases, segmentations, jobs) rows."""
    (row,) = sql(svc, "SELECT (SELECT count(*) FROM cases), (SELECT count(*) FROM segmentations), "
                      "(SELECT count(*) FROM jobs)")
    return tuple(int(v) for v in row)


def wait_jobs(svc, timeout=90):
    """Waits until every job is done or failed, or keeps failing (retried after
    an error twice: its backoff would outlast the run), or the timeout. The job
    table as (case key, status, attempts, last error)."""
    deadline = time.time() + timeout
    while True:
        rows = sql(svc, "SELECT c.case_key, j.status, j.attempts, coalesce(j.last_error, '') "
                        "FROM jobs j JOIN cases c ON c.id = j.case_id ORDER BY j.id")
        pending = [r for r in rows if r[1] in ("queued", "running") and not (int(r[2]) >= 2 and r[3])]
        if not pending or time.time() > deadline:
            return rows
        time.sleep(0.3)


def check_jobs(rows, failures, where="scoring"):
    for case, status, attempts, error in rows:
        if status != "done":
            state = "still retried" if status in ("queued", "running") else status
            failures.add(f"{where} {case}", f"job {state} after {attempts} attempt(s): {error[:300]}")


# ---------------------------------------------------------------------------
# 1. The corpus over REST
# ---------------------------------------------------------------------------


def other(role):
    return "reference" if role == "prediction" else "prediction"


def run_rest(svc, entries, failures, answers):
    """Uploads every entry as each of its roles. One record per request:
    (entry, role, case key, status or None, problem type)."""
    records = []
    partner_uploads = 0
    for entry in entries:
        for role in entry.roles:
            case = f"{entry.name}.{role[:4]}"
            where = f"REST {entry.name} as {role}"
            if entry.partner is not None:
                r = upload(svc, case, other(role), entry.partner)
                partner_uploads += 1
                answers.append(r.body)
                if r.status != 202:
                    failures.add(where, f"partner upload as {other(role)} got {r.status}, not 202: {short(r.body)}")
            try:
                r = upload(svc, case, role, entry.data, {"Content-Type": entry.content_type, **entry.headers})
            except OSError as e:  # the connection dropped without an answer
                failures.add(where, f"no answer ({e!r}); expected {entry.expected_status}")
                records.append((entry, role, case, None, None))
                continue
            answers.append(r.body)
            kind = None
            if r.status >= 500:
                failures.add(where, f"server error {r.status}: {short(r.body)}")
            if r.status >= 400:
                kind = check_problem(r, where, failures)
            elif r.status in (200, 202):
                try:
                    answer = json.loads(r.body)
                    assert answer["case_url"].endswith(f"/cases/{case}") and answer["role"] == role
                except (ValueError, KeyError, AssertionError):
                    failures.add(where, f"2xx answer is not the upload answer: {short(r.body)}")
            if r.status != entry.expected_status:
                failures.add(where, f"got {r.status} ({kind or short(r.body, 100)}), expected "
                                    f"{entry.expected_status} ({entry.why})")
            records.append((entry, role, case, r.status, kind))
    return records, partner_uploads


def check_rest_storage(svc, records, failures):
    """Refusals stored nothing for their case key; each 202 stored one row."""
    segmentations = {(k, role) for k, role in sql(
        svc, "SELECT c.case_key, s.role FROM segmentations s JOIN cases c ON c.id = s.case_id")}
    cases = {k for (k,) in sql(svc, "SELECT case_key FROM cases")}
    jobs = {k for (k,) in sql(svc, "SELECT DISTINCT c.case_key FROM jobs j JOIN cases c ON c.id = j.case_id")}
    for entry, role, case, status, _ in records:
        where = f"REST {entry.name} as {role}"
        if status == 202:
            if (case, role) not in segmentations:
                failures.add(where, "202 but no segmentations row")
        elif status != 200:
            stored = [what for what, hit in [
                ("a segmentations row", (case, role) in segmentations),
                ("a cases row", case in cases and entry.partner is None),
                ("a jobs row", case in jobs)] if hit]
            if stored:
                failures.add(where, f"refused with {status} but stored {', '.join(stored)}")
    accepted = sum(1 for *_, status, _ in records if status == 202)
    accepted += sum(1 for entry, *_ in records if entry.partner is not None)
    (rows,), = sql(svc, "SELECT count(*) FROM segmentations")
    if int(rows) != accepted:
        failures.add("REST storage", f"{rows} segmentations rows for {accepted} accepted uploads")


# ---------------------------------------------------------------------------
# 2. The corpus over STOW-RS
# ---------------------------------------------------------------------------

BOUNDARY = "segwatch-reliability-7d1c0c5e9b4f4e3a"


def multipart(parts):
    body = b"".join(b"--" + BOUNDARY.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
                    for p in parts)
    return body + b"--" + BOUNDARY.encode() + b"--\r\n"


def stow(svc, body, key=None, content_type=None):
    content_type = content_type or f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return send(svc, "POST", "/dicom-web/studies", body, key or svc.ingest, {"Content-Type": content_type})


class StowUids:
    """Gives each STOW-RS part its own SOPInstanceUID and StudyInstanceUID (so
    its own case): STOW-RS is idempotent on SOPInstanceUID, so a variant of a
    fixture stored before would make later variants "already stored". The
    fixtures' UIDs are replaced byte for byte by UIDs of the same length, which
    keeps damaged framing as it is; a deflated data set is rewritten."""

    def __init__(self):
        self.count = 0
        self.uids = set()
        for folder in ("dicom", "fuzz"):
            for name in sorted(os.listdir(os.path.join(C.FIXTURES, folder))):
                try:
                    d = C.Dicom(fixture(folder, name))
                except Exception:  # not DICOM, or damaged beyond this reader
                    continue
                for elems, tag in [(d.meta, (0x0002, 0x0003)), (d.ds, C.SOP_INSTANCE), (d.ds, STUDY_UID)]:
                    uid = C.text_of(C.find(elems, tag))
                    if uid and len(uid) > 8:
                        self.uids.add(uid)

    def __call__(self, data):
        self.count += 1

        def new(uid):
            return uid[:-6] + str(100000 + self.count)
        try:
            d = C.Dicom(data)
        except Exception:
            d = None
        if d is not None and d.syntax == C.DEFLATED:
            for x in C.walk(d.ds + d.meta):
                if x.vr == b"UI" and C.text_of(x) in self.uids:
                    x.value = C.encode_value(b"UI", new(C.text_of(x)))
            return d.to_bytes()
        for uid in sorted(self.uids):
            data = data.replace(uid.encode(), new(uid).encode())
        return data


def sop_uid(data):
    """The SOPInstanceUID of a DICOM part, when this reader can read it."""
    try:
        return C.text_of(C.find(C.Dicom(data).ds, C.SOP_INSTANCE))
    except Exception:
        return None


def strip_stow_echo(body, parts, echoes):
    """A STOW-RS answer without PS3.18's echo of the parts' own SOPInstanceUIDs
    in ReferencedSOPInstanceUID (0008,1155); the echoes are counted."""
    own = {sop_uid(p) for p in parts} - {None}
    try:
        answer = json.loads(body)
    except ValueError:
        return body
    for sequence in ("00081199", "00081198"):
        for item in answer.get(sequence, {}).get("Value", []):
            values = item.get("00081155", {}).get("Value", [])
            if values and set(values) <= own:
                echoes.append(values[0])
                item["00081155"] = {"vr": "UI", "Value": ["<its own SOPInstanceUID>"]}
    return json.dumps(answer).encode()


def run_stow(svc, entries, failures, answers, echoes):
    """Corpus refusals over STOW-RS, then hostile STOW-RS requests."""
    sent = 0
    statuses = Counter()
    before = counts(svc)
    unique = StowUids()
    for entry in entries:
        if not entry.stow or entry.expected_status < 400:
            continue
        where = f"STOW {entry.name}"
        data = unique(entry.data)
        r = stow(svc, multipart([data]))
        sent += 1
        statuses[r.status] += 1
        answers.append(strip_stow_echo(r.body, [data], echoes))
        if r.status >= 500:
            failures.add(where, f"server error {r.status}: {short(r.body)}")
        if r.status != 409:
            failures.add(where, f"got {r.status}, expected 409 (over REST it must get {entry.expected_status}: "
                                f"{entry.why}): {short(r.body)}")
        elif r.headers.get("content-type", "").split(";")[0] != DICOM_JSON:
            failures.add(where, f"409 is {r.headers.get('content-type')}, not {DICOM_JSON}")
        else:
            failed = json.loads(r.body).get("00081198", {}).get("Value", [])
            if len(failed) != 1 or not failed[0].get("00081197", {}).get("Value"):
                failures.add(where, f"no FailedSOPSequence item with a FailureReason: {short(r.body)}")
        after = counts(svc)
        if after != before:
            failures.add(where, f"refused but stored: (cases, segmentations, jobs) {before} -> {after}")
        before = after

    ok = fixture("dicom", "ai_binary.dcm")
    related = 'multipart/related; type="application/dicom"'
    hostile = [  # name, body, key, Content-Type ("": the STOW-RS one, None: no header), expected status
        ("media_application_dicom", multipart([ok]), None, "application/dicom", 415),
        ("type_application_json", multipart([ok]), None, f'multipart/related; type="application/json"; '
                                                         f"boundary={BOUNDARY}", 415),
        ("no_content_type", multipart([ok]), None, None, 415),
        ("no_boundary", multipart([ok]), None, related, 400),
        ("no_parts", b"--" + BOUNDARY.encode() + b"--\r\n", None, "", 400),
        ("no_delimiter", b"garbage with no delimiter at all", None, "", 400),
        ("no_closing_delimiter", multipart([ok])[:-30], None, "", 400),
        ("empty_body", b"", None, "", 400),
        ("read_key", multipart([ok]), svc.reader, "", 403),
        ("unknown_key", multipart([ok]), "sw_unknown_key", "", 401),
        ("admin_key_without_site", multipart([ok]), svc.admin, "", 400),
        ("body_over_upload_limit", multipart([ok + bytes(C.LIMITS["max_upload_bytes"])]), None, "", 413),
    ]
    for name, body, key, content_type, expected in hostile:
        where = f"STOW {name}"
        if content_type is None:
            r = send(svc, "POST", "/dicom-web/studies", body, key or svc.ingest)
        else:
            r = stow(svc, body, key=key, content_type=content_type or None)
        sent += 1
        statuses[r.status] += 1
        answers.append(r.body)
        if r.status != expected:
            failures.add(where, f"got {r.status}, expected {expected}: {short(r.body)}")
        if r.status >= 400:
            check_problem(r, where, failures)
        after = counts(svc)
        if after != before:
            failures.add(where, f"stored: (cases, segmentations, jobs) {before} -> {after}")
        before = after
    return sent, statuses


# ---------------------------------------------------------------------------
# 3. The patient-data scan
# ---------------------------------------------------------------------------

# Distinctive identifying values written into the SEGs; none may be kept.
DICOM_MARKERS = {
    (0x0010, 0x0010): (b"PN", "DOE^JANE^SCANMARK"),            # PatientName
    (0x0010, 0x0020): (b"LO", "PID-SCAN-7731"),                # PatientID
    (0x0010, 0x0030): (b"DA", "19230405"),                     # PatientBirthDate
    (0x0010, 0x1000): (b"LO", "OPID-SCANMARK-11"),             # OtherPatientIDs
    (0x0010, 0x1040): (b"LO", "12 SCANMARK STREET"),           # PatientAddress
    (0x0010, 0x2154): (b"SH", "555-SCANMARK"),                 # PatientTelephoneNumbers
    (0x0010, 0x4000): (b"LT", "COMMENT ON JANE SCANMARK"),     # PatientComments
    (0x0008, 0x0050): (b"SH", "ACC-SCAN-55821"),               # AccessionNumber
    (0x0008, 0x0080): (b"LO", "SCANMARK GENERAL HOSPITAL"),    # InstitutionName
    (0x0008, 0x0081): (b"ST", "1 SCANMARK ROAD"),              # InstitutionAddress
    (0x0008, 0x0090): (b"PN", "REFDOC^SCANMARK"),              # ReferringPhysicianName
    (0x0008, 0x1010): (b"SH", "STN-SCANMARK"),                 # StationName
    (0x0008, 0x1030): (b"LO", "STUDY OF JANE SCANMARK"),       # StudyDescription
    (0x0008, 0x103E): (b"LO", "CT for Jane Doe SCANMARK"),     # SeriesDescription
    (0x0008, 0x1040): (b"LO", "DEPT-SCANMARK"),                # InstitutionalDepartmentName
    (0x0008, 0x1050): (b"PN", "PERFDOC^SCANMARK"),             # PerformingPhysicianName
    (0x0008, 0x1070): (b"PN", "OPERATOR^SCANMARK"),            # OperatorsName
    (0x0008, 0x1080): (b"LO", "DIAGNOSIS-SCANMARK"),           # AdmittingDiagnosesDescription
    (0x0018, 0x1000): (b"LO", "SERIAL-SCANMARK"),              # DeviceSerialNumber
    (0x0020, 0x0010): (b"SH", "SID-SCANMARK"),                 # StudyID
    (0x0020, 0x4000): (b"LT", "IMAGE COMMENT SCANMARK"),       # ImageComments
    (0x0032, 0x1032): (b"PN", "REQDOC^SCANMARK"),              # RequestingPhysician
    (0x0040, 0x0254): (b"LO", "PPS-DESC-SCANMARK"),            # PerformedProcedureStepDescription
    (0x0070, 0x0081): (b"LO", "CONTENT-DESC-SCANMARK"),        # ContentDescription
    (0x0070, 0x0084): (b"PN", "CREATOR^SCANMARK"),             # ContentCreatorName
    (0x0009, 0x0010): (b"LO", "SCANMARK PRIVATE CREATOR"),     # a private creator
    (0x0009, 0x1001): (b"LO", "PRIVATE-SCANMARK-VALUE"),       # a private element
}
# Written inside sequences: InstitutionName in the equipment sequence,
# PatientName in ReferencedSeriesSequence, a SegmentDescription (UT).
NESTED_MARKERS = ["NESTED-INSTITUTION-SCANMARK", "NESTED^PATIENT^SCANMARK", "SEGMENT NOTE BY DR SCANMARK"]
# descrip, aux_file, intent_name, db_name, an extension, gzip FNAME and FCOMMENT.
NIFTI_MARKERS = ["DOE^JANE^SCANMARK-DESCRIP", "AUX-SCANMARK", "INT-SCANMARK", "DB-SCANMARK",
                 "(0010,0010) PN DOE^JANE^SCANMARK-EXT", "DOE_JANE_SCANMARK.nii", "GZ-COMMENT-SCANMARK"]
# The fake identities in the fixtures (tests/fixtures/dicom/README.md), which
# accepted corpus entries carry too.
FIXTURE_PHI = ["FAKE^NOTAPATIENT^SEGWATCH", "NOTAPATIENT", "FAKE-PID-7731", "19010203", "FAKEACC0001",
               "FAKE^REFERRER", "Fake General Hospital", "FAKESTATION", "FAKESTUDY1", "segwatch fixture ai-binary"]
# UI attributes naming classes and syntaxes, not instances: kept.
CLASS_UIDS = {(0x0002, 0x0002), (0x0002, 0x0010), (0x0002, 0x0012), (0x0008, 0x0016), (0x0008, 0x1150)}


def fresh_uid(family, old):
    digits = int.from_bytes(hashlib.sha256(f"{family}/{old}".encode()).digest()[:9], "big")
    return f"1.2.826.0.1.3680043.10.7731.{digits}"


def marked_seg(name, family, uid_map):
    """A fixture SEG with every identifying attribute set to a marker value and
    every instance UID replaced by a fresh one (shared within `family`, so a
    prediction and its reference still belong to one study and series)."""
    d = C.seg(name)
    for tag, (vr, value) in DICOM_MARKERS.items():
        C.put(d.ds, tag, vr, value)
    C.put(C.find(d.ds, (0x0018, 0xA001)).items[0], (0x0008, 0x0080), b"LO", NESTED_MARKERS[0])
    C.put(C.find(d.ds, (0x0008, 0x1115)).items[0], (0x0010, 0x0010), b"PN", NESTED_MARKERS[1])
    for item in C.find(d.ds, C.SEGMENT_SEQUENCE).items:
        C.put(item, (0x0062, 0x0020), b"UT", NESTED_MARKERS[2])
    for x in C.walk(d.ds + d.meta):
        if x.vr == b"UI" and x.tag not in CLASS_UIDS:
            uid = C.text_of(x)
            if uid and not uid.startswith(C.STANDARD_ROOT):
                x.value = C.encode_value(b"UI", uid_map.setdefault(uid, fresh_uid(family, uid)))
    return d.to_bytes()


def marked_nifti(version, suffix):
    """A NIfTI label map with identifying free text everywhere it can go."""
    ext = b"\1\0\0\0" + C.extension(2, NIFTI_MARKERS[4].encode())
    data = bytearray(C.nifti(version, ext=ext, descrip=(NIFTI_MARKERS[0] + suffix).encode(),
                             aux_file=NIFTI_MARKERS[1].encode(), intent_name=NIFTI_MARKERS[2].encode()))
    if version == 1:
        data[14:14 + len(NIFTI_MARKERS[3])] = NIFTI_MARKERS[3].encode()  # db_name
    return C.gzip_member(bytes(data), flags=8 | 16, name=NIFTI_MARKERS[5].encode(),
                         comment=NIFTI_MARKERS[6].encode())


def hashed_uid(uid):
    """The stored form of a UID (formats::deidentify::hash_uid)."""
    digest = hmac.new(CASE_KEY_SECRET.encode(), uid.encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def stow_case_key(seg):
    """The case a SEG goes to over STOW-RS: keyed hash of study and referenced series."""
    d = C.Dicom(seg)
    study = C.text_of(C.find(d.ds, STUDY_UID))
    series = C.text_of(C.find(C.find(d.ds, (0x0008, 0x1115)).items[0], (0x0020, 0x000E)))
    mac = hmac.new(CASE_KEY_SECRET.encode(), f"{study}\n{series}".encode(), hashlib.sha256).hexdigest()
    return f"dcm-{mac[:32]}"


def expansions(blob, depth=0):
    """The blob, and whatever gzip, zlib or a deflated DICOM data set inflate to."""
    yield blob
    if depth >= 3:
        return
    inflated = []
    if blob[:2] == b"\x1f\x8b":
        try:
            inflated.append(gzip.decompress(blob))
        except (OSError, EOFError, zlib.error):
            pass
    if blob[:1] == b"\x78":
        try:
            inflated.append(zlib.decompress(blob))
        except zlib.error:
            pass
    if blob[128:132] == b"DICM" and C.DEFLATED.encode() in blob[132:600]:
        try:
            meta_end = 132 + 12 + struct.unpack_from("<I", blob, 140)[0]
            inflated.append(zlib.decompressobj(-15).decompress(blob[meta_end:]))
        except (zlib.error, struct.error):
            pass
    for out in inflated:
        yield from expansions(out, depth + 1)


def scan(haystack: bytes, needles, where, failures, hits):
    for needle in needles:
        if needle.encode() in haystack:
            hits[(needle, where)] += 1
            if hits[(needle, where)] == 1:
                at = haystack.index(needle.encode())
                failures.add(f"patient data in {where}",
                             f"{needle!r} found: ...{short(haystack[max(0, at - 60):at + 80], 200)}...")


def run_phi(svc, failures, answers, echoes):
    """Uploads the marked files, waits for their scoring, and scans everything."""
    uid_maps = {"rest": {}, "stow": {}}
    rest_pred = marked_seg("ai_binary.dcm", "rest", uid_maps["rest"])
    rest_ref = marked_seg("corrected_binary.dcm", "rest", uid_maps["rest"])
    stow_pred = marked_seg("ai_binary.dcm", "stow", uid_maps["stow"])
    stow_ref = marked_seg("corrected_binary.dcm", "stow", uid_maps["stow"])
    uploads = [("phi-seg-rest", "prediction", rest_pred), ("phi-seg-rest", "reference", rest_ref),
               ("phi-nifti1", "prediction", marked_nifti(1, " P")), ("phi-nifti1", "reference", marked_nifti(1, " R")),
               ("phi-nifti2", "prediction", marked_nifti(2, " P")), ("phi-nifti2", "reference", marked_nifti(2, " R"))]
    for case, role, data in uploads:
        r = upload(svc, case, role, data, model="phi", version="1")
        answers.append(r.body)
        if r.status != 202:
            failures.add(f"PHI upload {case} as {role}", f"got {r.status}: {short(r.body)}")
    # Over STOW-RS: the prediction alone, then the reference with the
    # prediction again (idempotent on SOPInstanceUID: all stored, once).
    for parts in ([stow_pred], [stow_ref, stow_pred]):
        r = stow(svc, multipart(parts))
        answers.append(strip_stow_echo(r.body, parts, echoes))
        if r.status != 200:
            failures.add("PHI upload over STOW-RS", f"got {r.status}, expected 200: {short(r.body)}")
    stow_case = stow_case_key(stow_pred)
    rows = wait_jobs(svc)
    phi_jobs = [r for r in rows if r[0].startswith("phi-") or r[0] == stow_case]
    if len(phi_jobs) != 4:
        failures.add("PHI scoring", f"{len(phi_jobs)} jobs for the 4 marked pairs: {phi_jobs}")
    check_jobs(phi_jobs, failures, "PHI scoring")

    uids = sorted({u for m in uid_maps.values() for u in m.values()})
    expected = json.loads(fixture("dicom", "expected.json"))
    fixture_uids = sorted({v for p in expected["provenance"].values() for k, v in p.items()
                           if k.endswith("_uid") and v})
    placed = [v for _, v in DICOM_MARKERS.values()] + NESTED_MARKERS + NIFTI_MARKERS + uids
    needles = placed + ["SCANMARK"] + FIXTURE_PHI + fixture_uids
    hits = Counter()

    # Every column of every table, as text (bytea hex is scanned decoded below);
    # through a query, as COPY cannot read a partitioned table directly.
    tables = [t for (t,) in sql(svc, "SELECT table_name FROM information_schema.tables "
                                     "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'")]
    for table in tables:
        text = psql_out(svc, "-qc", f'COPY (SELECT * FROM "{table}") TO STDOUT')
        scan(re.sub(rb"\\\\x[0-9a-f]+", b"<bytea>", text), needles, f"table {table}", failures, hits)
    # Every bytea value, raw and inflated.
    blobs = 0
    for table, column in sql(svc, "SELECT table_name, column_name FROM information_schema.columns "
                                  "WHERE table_schema = 'public' AND data_type = 'bytea'"):
        out = psql_out(svc, "-At", "-c", f'SELECT encode("{column}", \'hex\') FROM "{table}" '
                                         f'WHERE "{column}" IS NOT NULL')
        for line in out.split():
            blobs += 1
            for form in expansions(bytes.fromhex(line.decode())):
                scan(form, needles, f"{table}.{column}", failures, hits)
    # The stored SEGs are de-identified with keyed-hashed UIDs, under the
    # documented STOW-RS case key.
    for case, seg in [("phi-seg-rest", rest_pred), (stow_case, stow_pred)]:
        content = sql(svc, "SELECT encode(f.content, 'hex') FROM segmentations s JOIN cases c ON c.id = s.case_id "
                           "JOIN segmentation_contents f ON f.segmentation_id = s.id "
                           f"WHERE c.case_key = '{case}' AND s.role = 'prediction'")
        if not content:
            failures.add("stored SEG", f"no prediction stored under case {case}")
            continue
        stored = gzip.decompress(bytes.fromhex(content[0][0]))
        study = C.text_of(C.find(C.Dicom(seg).ds, STUDY_UID))
        if DEIDENTIFICATION_METHOD not in stored or hashed_uid(study).encode() not in stored:
            failures.add(f"stored SEG of {case}", "lacks the de-identification method or its study UID's keyed hash")
    # The log, the metrics and every API answer.
    scan(svc.log_text().encode(), needles, "the service log", failures, hits)
    gets = ["/metrics", f"/v1/sites/{svc.site}/cases?limit=500", f"/v1/sites/{svc.site}/cases?structure=liver",
            "/v1/incidents?state=all", "/v1/drift/plan", "/v1/models/SegNet/versions/2.1.0/structures",
            "/v1/models/SegNet/versions/2.1.0/baseline", "/v1/models/phi/versions/1/baseline"]
    gets += [f"/v1/sites/{site}/cases/{case}" for site, case in sql(svc, "SELECT site, case_key FROM cases")]
    for path in gets:
        for key in (svc.admin, svc.reader, svc.ingest):
            r = send(svc, "GET", path, key=key)
            if r.status >= 500:
                failures.add(f"GET {path}", f"server error {r.status}: {short(r.body)}")
            answers.append(r.body)
    for body in answers:
        scan(body, needles, "an API answer", failures, hits)
    # A control: every planted value is in what was uploaded, where a scan finds it.
    uploaded = [form for _, _, data in uploads for form in expansions(data)] + [stow_pred, stow_ref]
    for needle in placed:
        if not any(needle.encode() in form for form in uploaded):
            failures.add("patient-data scan control", f"{needle!r} is not in any uploaded file")
    return {"needles": len(needles), "tables": len(tables), "bytea values": blobs, "GET paths": len(gets),
            "API answers": len(answers), "hits": sum(hits.values())}


# ---------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segwatch", default=os.path.join(C.ROOT, "target", "debug", "segwatch"))
    parser.add_argument("--verbose", action="store_true", help="print every REST request's status and problem type")
    args = parser.parse_args()
    started = time.time()
    entries = C.corpus()
    work = tempfile.mkdtemp(prefix="segwatch-corpus-")
    config = os.path.join(work, "segwatch.toml")
    with open(config, "w") as f:  # the one limit without an environment variable
        f.write(f"[limits]\nmax_decompressed_bytes = {C.LIMITS['max_decompressed_bytes']}\n")
    env = {"SEGWATCH_CONFIG": config, "SEGWATCH_MAX_UPLOAD_BYTES": str(C.LIMITS["max_upload_bytes"]),
           "SEGWATCH_MAX_VOXELS": str(C.LIMITS["max_voxels"]),
           "SEGWATCH_MAX_STRUCTURES": str(C.LIMITS["max_structures"]),
           "SEGWATCH_CASE_KEY_SECRET": CASE_KEY_SECRET}
    failures = Failures()
    answers, echoes = [], []
    phases = {}
    mark = started
    wait_for_postgres()
    with Service(args.segwatch, env=env, admin_url=ADMIN_URL) as svc:
        phases["start"], mark = time.time() - mark, time.time()
        records, partners = run_rest(svc, entries, failures, answers)
        check_rest_storage(svc, records, failures)
        job_rows = wait_jobs(svc)
        check_jobs(job_rows, failures)
        phases["REST"], mark = time.time() - mark, time.time()
        stow_sent, stow_statuses = run_stow(svc, entries, failures, answers, echoes)
        phases["STOW-RS"], mark = time.time() - mark, time.time()
        phi = run_phi(svc, failures, answers, echoes)
        phases["patient-data scan"] = time.time() - mark
    os.remove(config)
    os.rmdir(work)
    elapsed = time.time() - started

    if args.verbose:
        for entry, role, _, status, kind in records:
            print(f"{entry.name:55} {role:10} expected {entry.expected_status} got {status} {kind or ''}")
    table = defaultdict(Counter)
    kinds = Counter()
    for entry, _, _, status, kind in records:
        table[entry.expected_status][status] += 1
        if kind:
            kinds[f"{status} {kind}"] += 1
    print(f"hostile corpus: {len(entries)} files, {len(records)} REST requests (+{partners} partner uploads), "
          f"{stow_sent} STOW-RS requests")
    print(f"{'expected':>8}  {'requests':>8}  got")
    for expected in sorted(table):
        got = ", ".join(f"{s}: {n}" for s, n in sorted(table[expected].items(), key=lambda kv: kv[0] or 0))
        print(f"{expected:>8}  {sum(table[expected].values()):>8}  {got}")
    print("problem types: " + ", ".join(f"{k} x{n}" for k, n in sorted(kinds.items())))
    print("STOW-RS statuses: " + ", ".join(f"{s} x{n}" for s, n in sorted(stow_statuses.items())))
    done = sum(1 for r in job_rows if r[1] == "done")
    print(f"jobs of accepted corpus pairs: {done} done, {len(job_rows) - done} not done")
    print(f"patient-data scan: {phi['needles']} values and UIDs searched in {phi['tables']} tables, "
          f"{phi['bytea values']} bytea values, the log, {phi['GET paths']} GET paths x 3 keys (/metrics "
          f"included) and {phi['API answers']} API answers: {phi['hits']} found")
    print(f"STOW-RS answers echoing the request's own SOPInstanceUID in (0008,1155), as PS3.18 requires: "
          f"{len(echoes)}")
    if RETRIES:
        print("503 answers retried (database unreachable): " + ", ".join(f"{k} x{n}" for k, n in RETRIES.items()))
    print("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + f"; total {elapsed:.1f} s")
    print(f"failures: {len(failures.items)}")
    if failures.items:
        print("\nMISMATCHES:")
        for item in failures.items:
            print(f"  - {item}")
        sys.exit(1)


if __name__ == "__main__":
    main()
