#!/usr/bin/env python3
"""Schema conformance of the live API: schemathesis against a running segwatch.

Starts segwatch on a fresh Postgres database (harness.Service), seeds it (two
scored cases, a structure schema, a baseline, active drift streams and an open
incident), loads the service's own `GET /openapi.json`, and runs schemathesis
over every operation in every phase: the schema's examples, the coverage phase
(boundary and invalid values of each parameter and body, missing auth,
unexpected methods), fuzzing, and the stateful phase (sequences of calls along
links that schemathesis infers from `Location` headers and from the values
operations share, e.g. GET /v1/incidents -> POST /v1/incidents/{id}/ack). Two
passes: one with the admin key, one with the ingest key of `svc.site`.

Half of the generated site, case, model, version, structure and incident id
values are the seeded ones, so reads answer 200 and their bodies are checked,
not only the 404s of random names. Upload bodies are random bytes or real NIfTI
/ DICOM SEG fixtures (intact or damaged); STOW-RS bodies are multipart/related
with one such part (schemathesis cannot encode multipart/related by itself).

Every response is checked:

  not_a_server_error            no 5xx, whatever was sent
  status_code_conformance       the status is one the operation documents
  content_type_conformance      the Content-Type is one documented for that status
  response_headers_conformance  documented response headers are present and valid
  response_schema_conformance   the body matches the documented schema
  negative_data_rejection       input that violates the schema is refused (4xx)
  positive_data_acceptance      input that the schema allows is not refused as
                                invalid (400/422); for uploads 422 is allowed, as no
                                schema can say "a readable NIfTI file"
  missing_required_header       a request without a required header is refused
  unsupported_method            an undocumented method gets 405
  allow_header_conformance      a 405 carries an Allow header naming the methods
  ignored_auth                  an operation that needs a key refuses none or a wrong one
  ensure_resource_availability  what a 201 created can be read back (stateful)
  use_after_free                what was deleted is gone (stateful)
  max_response_time             no answer takes longer than --max-response-time

and the service's log must show no panic. Any failure makes the exit status 1.
Each distinct failure (operation, check, status, problem type) is printed once,
with curl commands that reproduce it (for stateful failures, every step).

The run is bounded: a fixed number of examples per operation, a fixed seed,
deterministic generation (no example database, no cache), and a time budget for
the whole run (--time-budget, 240 s) that stops schemathesis if it is exceeded
(a failure too: the slowest answers are printed).

Usage:
    python3 tests/reliability/check_schema.py --segwatch target/debug/segwatch

schemathesis is installed (tests/reliability/requirements.txt, pinned) into a venv
outside the repository, $XDG_CACHE_HOME/segwatch-reliability-venv (default
~/.cache/...; SEGWATCH_RELIABILITY_VENV overrides), created on first use and
re-created when requirements.txt changes; the script then runs itself again
inside it. Postgres: SEGWATCH_TEST_ADMIN_URL (default
postgres://postgres@127.0.0.1:5432/postgres).
"""
import argparse
import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
REQUIREMENTS = os.path.join(HERE, "requirements.txt")
VENV = os.environ.get("SEGWATCH_RELIABILITY_VENV") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
    "segwatch-reliability-venv")

# The checks every response gets (see the docstring; max_response_time is set by
# --max-response-time). object_level_authorization is left out: it needs identities
# configured to own objects; the ingest pass covers access to other sites' data.
CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
    "ensure_resource_availability",
    "use_after_free",
]
PHASES = "examples,coverage,fuzzing,stateful"
# Checks whose failures are told apart by the problem type of the answer too.
BY_PROBLEM_TYPE = {"not_a_server_error", "status_code_conformance", "positive_data_acceptance",
                   "negative_data_rejection"}


# --------------------------------------------------------------------------- venv

def venv_stamp():
    """What the venv was built from: the requirements and this interpreter."""
    digest = hashlib.sha256()
    with open(REQUIREMENTS, "rb") as f:
        digest.update(f.read())
    digest.update(sys.version.encode())
    digest.update(os.path.realpath(sys.executable).encode())
    return digest.hexdigest()


def in_venv():
    return os.path.realpath(sys.prefix) == os.path.realpath(VENV)


def ensure_venv():
    """Creates or refreshes the venv if needed, then re-runs this script in it."""
    if in_venv():
        return
    python = os.path.join(VENV, "bin", "python")
    stamp_path = os.path.join(VENV, ".segwatch-requirements")
    stamp = venv_stamp()
    current = None
    if os.path.exists(stamp_path):
        with open(stamp_path) as f:
            current = f.read().strip()
    if current != stamp or not os.access(python, os.X_OK):
        print(f"check_schema: installing {REQUIREMENTS} into {VENV}", flush=True)
        if os.path.exists(os.path.join(VENV, "pyvenv.cfg")):
            shutil.rmtree(VENV)
        elif os.path.exists(VENV) and os.listdir(VENV):
            sys.exit(f"check_schema: {VENV} exists and is not a venv; remove it or set SEGWATCH_RELIABILITY_VENV")
        subprocess.run([sys.executable, "-m", "venv", VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
                        "-r", REQUIREMENTS], check=True)
        with open(stamp_path, "w") as f:
            f.write(stamp + "\n")
    os.execv(python, [python, os.path.abspath(__file__), *sys.argv[1:]])


# ---------------------------------------------------------------------- reporting

class Failure:
    """One distinct failure: first example kept, occurrences counted."""

    def __init__(self, key, pass_name, operation, check, status, title, message, steps, response):
        self.key = key
        self.passes = {pass_name}
        self.operation, self.check, self.status = operation, check, status
        self.title, self.message = title, message
        self.steps, self.response = steps, response
        self.count = 1


def header_values(headers):
    """Recorded headers are {name: [values]} or {name: value}."""
    for name, value in (headers or {}).items():
        if isinstance(value, list):
            for v in value:
                yield name, v
        else:
            yield name, value


def body_bytes(body):
    if body is None:
        return None
    if isinstance(body, dict) and "$base64" in body:
        return base64.b64decode(body["$base64"])
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body).encode()


SKIP_CURL_HEADERS = {"user-agent", "accept-encoding", "accept", "connection", "content-length",
                     "x-schemathesis-testcaseid"}


def curl(request, base_url, keys):
    """A shell command repeating a recorded request; keys and URL as variables."""
    uri = request["uri"]
    if uri.startswith(base_url):
        uri = "${SEGWATCH_URL}" + uri[len(base_url):]
    parts = ["curl", "-sS", "-i", "-X", request["method"]]
    for name, value in header_values(request.get("headers")):
        if name.lower() in SKIP_CURL_HEADERS:
            continue
        shown = value
        for key, variable in keys.items():
            if key and key in shown:
                shown = shown.replace(key, "${" + variable + "}")
        parts += ["-H", f"{name}: {shown}"]
    body = body_bytes(request.get("body"))
    prefix = ""
    if body is not None:
        printable = all(32 <= b < 127 or b in (9, 10, 13) for b in body)
        if printable and len(body) <= 2000:
            parts += ["--data-binary", body.decode()]
        else:
            prefix = f"printf %s {base64.b64encode(body).decode()} | base64 -d | "
            parts += ["--data-binary", "@-"]
    quoted = []
    for part in parts + [uri]:
        if "${" in part:
            quoted.append('"' + part.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"')
        else:
            quoted.append(shlex.quote(part))
    return prefix + " ".join(quoted)


def describe_response(response, limit=600):
    if not response:
        return "(no response)"
    headers = {k.lower(): v for k, v in header_values(response.get("headers"))}
    body = body_bytes(response.get("content")) or b""
    text = body[:limit].decode(errors="replace")
    if len(body) > limit:
        text += f"... ({len(body)} bytes)"
    return f"{response.get('status_code')} content-type={headers.get('content-type', '-')!s} body={text}"


def problem_type(response):
    """The last segment of a problem+json answer's type, which tells refusals apart."""
    try:
        body = json.loads(body_bytes((response or {}).get("content")) or b"")
        return str(body.get("type", "")).rsplit("/", 1)[-1] if isinstance(body, dict) else ""
    except ValueError:
        return ""


def collect(ndjson_path, pass_name, base_url, keys, failures, stats):
    """Reads schemathesis' NDJSON events: adds distinct failures to `failures`,
    counts checks and keeps the slowest answers. True if it saw a failure."""
    if not os.path.exists(ndjson_path):
        stats.setdefault("errors", []).append(f"{pass_name}: no NDJSON report written")
        return False
    found = False
    slow = stats.setdefault("slow", [])
    with open(ndjson_path) as f:
        for line in f:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            name, data = next(iter(event.items()))
            if name in ("NonFatalError", "FatalError"):
                label = data.get("label") or name
                message = (data.get("value") or {}).get("message") or json.dumps(data)[:500]
                if name == "NonFatalError" and KNOWN_TOOL_ERROR in message:
                    # CPython 3.11's ast module (gh-106905), hit now and then while
                    # schemathesis builds a test; the service is not involved.
                    stats.setdefault("notes", []).append(f"{pass_name}: {label}: {message}")
                    continue
                stats.setdefault("errors", []).append(f"{pass_name}: {name} {label}: {message}")
                continue
            if name != "ScenarioFinished":
                continue
            recorder = data.get("recorder", {})
            cases = recorder.get("cases", {})
            interactions = recorder.get("interactions", {})
            for interaction in interactions.values():
                response = interaction.get("response") or {}
                if response.get("elapsed", 0) > 2:
                    request = interaction["request"]
                    slow.append((response["elapsed"], pass_name, request["method"],
                                 request["uri"].replace(base_url, ""), response.get("status_code")))
            for case_id, checks in recorder.get("checks", {}).items():
                for check in checks:
                    stats["checks"] = stats.get("checks", 0) + 1
                    info = check.get("failure_info")
                    if not info:
                        continue
                    found = True
                    failure = info["failure"]
                    operation = failure.get("operation") or "?"
                    response = (interactions.get(case_id) or {}).get("response")
                    status = response.get("status_code") if response else None
                    # The problem type tells apart refusals with different causes; it says
                    # nothing more about a Content-Type or a header.
                    kind = problem_type(response) if check["name"] in BY_PROBLEM_TYPE else ""
                    key = (operation, check["name"], status, failure.get("title"), kind)
                    if key in failures:
                        failures[key].count += 1
                        failures[key].passes.add(pass_name)
                        continue
                    # The chain of requests that led here (stateful scenarios), oldest first.
                    chain, current, seen = [], case_id, set()
                    while current and current not in seen:
                        seen.add(current)
                        interaction = interactions.get(current)
                        if interaction:
                            chain.append(interaction["request"])
                        current = (cases.get(current) or {}).get("parent_id")
                    steps = [curl(r, base_url, keys) for r in reversed(chain)]
                    failures[key] = Failure(key, pass_name, operation, check["name"], status, failure.get("title"),
                                            failure.get("message"), steps, describe_response(response))
    return found


# -------------------------------------------------------------------------- main

def run_pass(name, svc, key, schema_path, args, work, keys, failures, stats, timeout):
    report_dir = os.path.join(work, name)
    os.makedirs(report_dir, exist_ok=True)
    ndjson = os.path.join(report_dir, "events.ndjson")
    config = os.path.join(work, "schemathesis.toml")
    command = [
        os.path.join(os.path.dirname(sys.executable), "schemathesis"), "--config-file", config, "--no-color",
        "run", schema_path, "--url", svc.url,
        "--header", f"Authorization: Bearer {key}",
        "--phases", PHASES,
        "--checks", ",".join(CHECKS),
        "--max-response-time", str(args.max_response_time),
        "--seed", str(args.seed),
        "--generation-deterministic",
        "--workers", str(args.workers),
        "--continue-on-failure",
        "--request-timeout", str(args.request_timeout),
        "--output-sanitize", "false",
        "--report", "ndjson", "--report-ndjson-path", ndjson,
        "--suppress-health-check", "all",
    ]
    shown = " ".join(shlex.quote(c) for c in command).replace(key, "$KEY")
    print(f"\n=== pass {name} (at most {timeout:.0f} s): {shown}", flush=True)
    started = time.time()
    log_path = os.path.join(report_dir, "schemathesis.log")
    env = dict(os.environ, NO_COLOR="1",
               PYTHONPATH=os.pathsep.join(filter(None, [work, os.environ.get("PYTHONPATH")])))
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            code = process.wait(max(timeout, 1))
        except subprocess.TimeoutExpired:
            # Interrupted, schemathesis still writes its report of what it did.
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            stats.setdefault("errors", []).append(
                f"{name}: schemathesis did not finish within {timeout:.0f} s (the run's time budget, --time-budget);"
                " the slowest answers are listed below")
            stats["timed_out"] = True
            code = None
    elapsed = time.time() - started
    stats.setdefault("elapsed", {})[name] = elapsed
    print(f"=== pass {name}: schemathesis exit {code} after {elapsed:.0f} s; its output: {log_path}", flush=True)
    if args.verbose:
        with open(log_path, errors="replace") as f:
            sys.stdout.write(f.read())
    found = collect(ndjson, name, svc.url, keys, failures, stats)
    if code not in (0, 1, None):
        # 1 is "failures found"; anything else is schemathesis itself failing.
        with open(log_path, errors="replace") as f:
            tail = f.read()[-3000:]
        stats.setdefault("errors", []).append(f"{name}: schemathesis exited {code}:\n{tail}")
    elif code == 1 and not found:
        with open(log_path, errors="replace") as f:
            text = f.read()
        runtime_errors = re.findall(r"Runtime Error: (\d+)", text)
        if KNOWN_TOOL_ERROR in text and runtime_errors == ["1"]:
            # The interpreter bug noted in collect(), the run's only error: the
            # operation it hit lost that phase, every other check ran.
            stats.setdefault("notes", []).append(
                f"{name}: schemathesis exited 1 only for the interpreter error noted above")
        else:
            stats.setdefault("errors", []).append(
                f"{name}: schemathesis failed with no failure in its events:\n{text[-3000:]}")


def postmaster_started(admin_url):
    """When Postgres last started: a change during the run means something else restarted it."""
    out = subprocess.run(["psql", admin_url, "-Atc", "SELECT pg_postmaster_start_time()"], capture_output=True,
                         text=True)
    return out.stdout.strip() or None


# positive_data_acceptance's default expected statuses, and 422 for uploads.
UPLOAD_POSITIVE_STATUSES = ("2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx")

# positive_data_acceptance's default expected statuses, and 400 for operations
# whose input has rules across fields (see the config below).
CROSS_FIELD_POSITIVE_STATUSES = ("2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx")

# An error of the Python interpreter, not of the service (see collect).
KNOWN_TOOL_ERROR = "AST constructor recursion depth mismatch"

# Seeded data: names the dictionaries below feed to the generators.
SEED_MODEL, SEED_VERSION = "m", "1"
SEED_CASES = ("c1", "c2")
SEED_STRUCTURES = ("label_1", "label_2", "label_3", "label_4")

# A hooks module for schemathesis (written next to the config at run time):
#
# * Upload bodies: besides random bytes, real segmentations from tests/fixtures
#   (NIfTI and DICOM SEG), so that uploads are also accepted (202/200) and the
#   stateful phase can follow an upload's Location to its case. The schema cannot
#   describe a NIfTI file, so schemathesis alone would never send one.
# * STOW-RS: schemathesis cannot encode multipart/related, so a serializer makes
#   the generated body (the schema says an array of byte values; some of them pick
#   a DICOM SEG fixture instead) one application/dicom part. It is registered on
#   the requests transport itself, as the public decorator cannot set the
#   Content-Type, whose boundary parameter the body needs.
HOOKS = r'''
import json
import os

import schemathesis
from hypothesis import strategies as st
from schemathesis.transport.requests import REQUESTS_TRANSPORT

FIXTURES = @FIXTURES@
BOUNDARY = "segwatch-schemathesis-part"


def fixture(*parts):
    with open(os.path.join(FIXTURES, *parts), "rb") as f:
        return f.read()


NIFTI = [fixture("reference", "cases", name) for name in ("P01_pred.nii.gz", "P01_ref.nii.gz", "P02_pred.nii.gz")]
NIFTI.append(fixture("nifti", "labels.nii.gz"))
SEG = [fixture("dicom", name) for name in ("ai_labelmap.dcm", "ai_binary.dcm", "corrected_binary.dcm")]
# Damaged files: cut short, and with a byte flipped in the header.
DAMAGED = [NIFTI[0][: len(NIFTI[0]) // 2], SEG[0][:400], SEG[0][:200] + bytes([SEG[0][200] ^ 0xFF]) + SEG[0][201:]]

# Random bytes are at least one byte: an empty body is refused (400 empty-body),
# which the coverage phase tests when the schema says so.
schemathesis.openapi.media_type(
    "application/octet-stream", st.one_of(st.sampled_from(NIFTI + SEG + DAMAGED), st.binary(min_size=1, max_size=512)))


@REQUESTS_TRANSPORT.serializer("multipart/related")
def multipart_related(ctx, value):
    if hasattr(value, "data"):  # schemathesis' Binary
        value = value.data
    if isinstance(value, (bytes, bytearray)):
        part = bytes(value)
    elif isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        # Byte values. A list the schema allows (int32 items, at least 0) that starts with
        # a multiple of 3 picks a fixture instead; one that violates it (negative mode)
        # never does, as a real file would be rightly accepted.
        choices = SEG + DAMAGED
        if value and value[0] % 3 == 0 and all(0 <= v < 2 ** 31 for v in value):
            part = choices[value[0] // 3 % len(choices)]
        else:
            part = bytes(v % 256 for v in value)
    else:
        part = json.dumps(value).encode()
    body = (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + part
            + f"\r\n--{BOUNDARY}--\r\n".encode())
    return {"data": body,
            "headers": {"Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'}}
'''


def seed(svc):
    """Data for the generators to find: two scored cases, a structure schema, a
    baseline and active drift streams of model m version 1 at svc.site, and an
    open incident. Without them every read of a site, case, model or incident
    would be a 404 and no success body would be checked against its schema.
    Returns what the dictionaries need (the incident's id)."""
    from harness import fixture

    def ok(response, what):
        if response.status // 100 != 2:
            sys.exit(f"check_schema: seeding failed: {what}: {response}")

    json_headers = {"Content-Type": "application/json"}
    structures = {"structures": [{"label": n + 1, "name": name} for n, name in enumerate(SEED_STRUCTURES)]}
    ok(svc.put(f"/v1/models/{SEED_MODEL}/versions/{SEED_VERSION}/structures", json.dumps(structures),
               key=svc.admin, headers=json_headers), "PUT structures")
    pred = fixture("reference", "cases", "P09_pred.nii.gz")
    ref = fixture("reference", "cases", "P09_ref.nii.gz")
    ok(svc.upload(SEED_CASES[0], "prediction", pred, model=SEED_MODEL, version=SEED_VERSION), "upload prediction")
    ok(svc.upload(SEED_CASES[0], "reference", ref), "upload reference")
    svc.wait_scored(1)
    cases = [{name: round(0.80 + 0.15 * ((i * 37 + n * 11) % 100) / 100, 4) for n, name in enumerate(SEED_STRUCTURES)}
             for i in range(120)]
    ok(svc.put(f"/v1/models/{SEED_MODEL}/versions/{SEED_VERSION}/baseline",
               json.dumps({"source": "check_schema seed", "cases": cases}), key=svc.admin, headers=json_headers),
       "PUT baseline")
    # A case scored after the baseline, so the drift streams are active.
    ok(svc.upload(SEED_CASES[1], "prediction", pred, model=SEED_MODEL, version=SEED_VERSION), "upload prediction 2")
    ok(svc.upload(SEED_CASES[1], "reference", ref), "upload reference 2")
    svc.wait_scored(2)
    svc.wait(lambda: svc.get("/v1/drift/plan?streams=10", key=svc.admin).status == 200, "active drift streams",
             timeout=60)
    # An open incident on the seeded stream, written straight into the database:
    # making the detectors alarm would take thousands of cases.
    rows = svc.sql(f"""
        WITH i AS (
            INSERT INTO incidents (site, model, model_version, structure, detector, observed_at, last_alarm_at,
                                   statistic, limit_value)
            VALUES ('{svc.site}', '{SEED_MODEL}', '{SEED_VERSION}', '{SEED_STRUCTURES[0]}', 'cusum', now(), now(),
                    7.5, 5.0)
            RETURNING id)
        INSERT INTO incident_streams (incident_id, site, structure, detector, first_alarm_at, last_alarm_at)
        SELECT id, '{svc.site}', '{SEED_STRUCTURES[0]}', 'cusum', now(), now() FROM i RETURNING incident_id""")
    incident = int(rows[0][0])
    ok(svc.get(f"/v1/incidents/{incident}/strata", key=svc.admin), "GET strata of the seeded incident")
    return {"incident": incident}


def write_config(work, args, site, seeded):
    """schemathesis.toml: settings with no command-line flag, the hooks module,
    and dictionaries that make half of the generated site, case, model, version
    and structure values name the seeded ones."""
    with open(os.path.join(work, "segwatch_schema_hooks.py"), "w") as f:
        f.write(HOOKS.replace("@FIXTURES@", repr(os.path.join(ROOT, "tests", "fixtures"))))

    def values(*items):
        return "[" + ", ".join(json.dumps(v) for v in items) + "]"

    bindings = {
        "path.site": "sites", "query.site": "sites",
        "path.case": "cases",
        "path.model": "models", "query.model": "models",
        "path.version": "versions", "query.model_version": "versions",
        "query.structure": "structures",
        "path.id": "incidents",
    }
    with open(os.path.join(work, "schemathesis.toml"), "w") as f:
        f.write(f"""
hooks = "segwatch_schema_hooks"

# No state carried over between runs: every run starts the same.
[cache]
enabled = false

[generation]
max-examples = {args.max_examples}

[phases.stateful]
max-steps = {args.stateful_steps}

# The alert plan simulates `streams` streams per change: seconds of CPU per call.
[[operations]]
include-path = "/v1/drift/plan"
generation = {{ max-examples = {args.plan_examples} }}

# Upload bodies: the schema cannot say "a NIfTI or DICOM SEG file", so the bytes
# it allows are almost never one, and 422 (unreadable segmentation) is the right
# answer to them even in positive mode. Only that status is added; every other
# check, and positive_data_acceptance for every other status, stays as it is.
[[operations]]
include-path-regex = '^/v1/sites/\{{site\}}/cases/\{{case\}}/(prediction|reference)$'
checks.positive_data_acceptance.expected-statuses = {values(*UPLOAD_POSITIVE_STATUSES)}

# Rules across fields that JSON Schema cannot state, answered 400 with a specific
# problem type even for schema-valid input; only 400 is added, for these only:
# STOW-RS: ?site= is required with an admin key, not with a site's key (missing-site).
# Baselines: at least 100 values in 0..1 for every structure (invalid-baseline).
# Structure schemas: each structure has a label or a code, codes are SCHEME:VALUE,
# labels and names are unique (invalid-schema).
# The Alertmanager webhook: the fields of Alertmanager's alert objects (status,
# labels, ...) are Alertmanager's format, documented there (invalid-notification).
[[operations]]
include-path-regex = '^/dicom-web/studies(/\{{study\}})?$|^/v1/models/\{{model\}}/versions/\{{version\}}/(baseline|structures)$|^/v1/alertmanager/webhook$'
checks.positive_data_acceptance.expected-statuses = {values(*CROSS_FIELD_POSITIVE_STATUSES)}

[output.truncation]
max-payload-size = 2000

[dictionaries.sites]
values = {values(site)}
[dictionaries.cases]
values = {values(*SEED_CASES)}
[dictionaries.models]
values = {values(SEED_MODEL)}
[dictionaries.versions]
values = {values(SEED_VERSION)}
[dictionaries.structures]
values = {values(*SEED_STRUCTURES, "all")}
[dictionaries.incidents]
values = [{seeded["incident"]}]

[parameters]
""")
        for parameter, dictionary in bindings.items():
            f.write(f'"{parameter}" = {{ dictionary = "{dictionary}", probability = 0.5 }}\n')


def main():
    ensure_venv()
    import schemathesis  # noqa: F401  (fails early if the venv is broken)
    from importlib.metadata import version

    sys.path.insert(0, HERE)
    from harness import ADMIN_URL, Service

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--segwatch", default=os.path.join(ROOT, "target", "debug", "segwatch"))
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--max-examples", type=int, default=100, help="per operation, fuzzing phase")
    parser.add_argument("--plan-examples", type=int, default=10, help="for GET /v1/drift/plan, whose answers take seconds")
    parser.add_argument("--stateful-steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20240531)
    parser.add_argument("--workers", default="2")
    parser.add_argument("--time-budget", type=int, default=240, help="seconds for the whole run")
    parser.add_argument("--request-timeout", type=int, default=60, help="seconds for one request")
    parser.add_argument("--max-response-time", type=int, default=30, help="a slower answer is a failure (s)")
    parser.add_argument("--skip-ingest-pass", action="store_true")
    parser.add_argument("--keep", help="keep schemathesis' output, reports and the service log in this directory")
    parser.add_argument("--verbose", action="store_true", help="print schemathesis' own output")
    args = parser.parse_args()

    started = time.time()
    if not os.path.exists(args.segwatch):
        sys.exit(f"check_schema: no segwatch binary at {args.segwatch}")
    work = os.path.abspath(args.keep) if args.keep else tempfile.mkdtemp(prefix="segwatch-schema-")
    os.makedirs(work, exist_ok=True)
    # A private copy: a rebuild of the binary during the run cannot change it.
    binary = os.path.join(work, "segwatch")
    shutil.copy2(args.segwatch, binary)
    print(f"check_schema: schemathesis {version('schemathesis')} (hypothesis {version('hypothesis')}), "
          f"seed {args.seed}, {args.max_examples} examples per operation, budget {args.time_budget} s", flush=True)

    failures, stats, panics = {}, {}, []
    postgres_before = postmaster_started(args.admin_url)
    passes = ["admin"] + ([] if args.skip_ingest_pass else ["ingest"])
    # Drift streams fed 1 s after scoring, so the seeded cases make them active.
    with Service(binary, env={"SEGWATCH_DRIFT_LATENESS_SECS": "1"}, admin_url=args.admin_url) as svc:
        response = svc.get("/openapi.json")
        if response.status != 200:
            sys.exit(f"check_schema: GET /openapi.json answered {response.status}")
        schema_path = os.path.join(work, "openapi.json")
        with open(schema_path, "wb") as f:
            f.write(response.body)
        keys = {svc.admin: "ADMIN_KEY", svc.reader: "READ_KEY", svc.ingest: "INGEST_KEY"}
        seeded = seed(svc)
        write_config(work, args, svc.site, seeded)
        # The admin pass covers every operation in depth; the ingest pass gets the rest.
        shares = {"admin": 0.7 if len(passes) > 1 else 1.0, "ingest": 1.0}
        for name in passes:
            remaining = args.time_budget - (time.time() - started) - 15
            run_pass(name, svc, getattr(svc, name), schema_path, args, work, keys, failures, stats,
                     timeout=remaining * shares[name])
        if svc.process.poll() is not None:
            stats.setdefault("errors", []).append(f"segwatch exited during the run (status {svc.process.returncode})")
        log = svc.log_text()
        for line in log.splitlines():
            if "panicked" in line:
                panics.append(line[:1000])
        with open(os.path.join(work, "segwatch.log"), "w") as f:
            f.write(log)
    os.remove(binary)
    postgres_restarted = postmaster_started(args.admin_url) != postgres_before

    print("\nTo reproduce: start segwatch as tests/reliability/harness.py does (fresh database; the seeded data "
          "comes from seed() in this script), set SEGWATCH_URL, and ADMIN_KEY / INGEST_KEY / READ_KEY "
          "(segwatch keys create --role ...), then run the curl commands.")
    ordered = sorted(failures.values(), key=lambda f: (f.operation, f.check, str(f.status), f.key[4]))
    for n, failure in enumerate(ordered, 1):
        kind = f"  problem={failure.key[4]}" if failure.key[4] else ""
        print(f"\nFAILURE {n}: {failure.operation}  check={failure.check}  status={failure.status}{kind}  "
              f"({failure.count}x, pass {','.join(sorted(failure.passes))})")
        print(f"  {failure.title}")
        if failure.message:
            for line in failure.message.strip().splitlines()[:20]:
                print(f"    {line}")
        print(f"  response: {failure.response}")
        for step in failure.steps:
            print(f"  $ {step}")
    for line in panics:
        print(f"\nFAILURE: panic in the service log: {line}")
    for note in stats.get("notes", []):
        print(f"note (not a failure): {note}")
    for error in stats.get("errors", []):
        print(f"\nERROR: {error}")
    slow = sorted(stats.get("slow", []), reverse=True)
    if slow:
        print("\nSlowest answers:")
        for elapsed, name, method, uri, status in slow[:10]:
            print(f"  {elapsed:6.1f} s  {name}  {method} {uri[:150]} -> {status}")
    if postgres_restarted:
        print("\nNOTE: Postgres restarted during this run (something else on this machine did it): "
              "503 answers and database errors above may come from that, not from segwatch.")

    # One result per pass and operation: passed if no failure was seen on it.
    operations = set()
    with open(os.path.join(work, "openapi.json")) as f:
        for path, methods in json.load(f).get("paths", {}).items():
            operations.update(f"{m.upper()} {path}" for m in methods if m in ("get", "put", "post", "delete", "patch"))
    errored = {e.split(":", 1)[0] for e in stats.get("errors", [])}
    failed_units = {(p, f.operation) for f in failures.values() for p in f.passes}
    passed = sum(1 for p in passes for op in operations if (p, op) not in failed_units and p not in errored)
    failed = len(failed_units) + len(panics) + len(stats.get("errors", []))
    total = time.time() - started
    print(f"\ncheck_schema: {len(failures)} distinct failures, {stats.get('checks', 0)} checks of "
          f"{len(operations)} operations in {total:.0f} s (" +
          ", ".join(f"{k} pass {v:.0f} s" for k, v in stats.get("elapsed", {}).items()) + f"); files in {work}")
    print(f"schema: {passed} passed, {failed} failed")
    if not args.keep and not failed:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
