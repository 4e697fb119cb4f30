#!/usr/bin/env python3
"""End-to-end check of the Orthanc -> STOW-RS path against stub_stow.py.

Starts stub_stow.py and a throwaway Orthanc (run_orthanc.sh), then checks:

* chunked and non-chunked STOW-RS of the SEG fixtures (headers, framing,
  parts byte-identical to the uploaded files, Basic credentials);
* a large (8 MiB) instance, to see how Orthanc cuts the chunked body;
* Bearer via HttpHeaders;
* what Orthanc does with a 401 and with faulty STOW-RS answers;
* the Lua auto-forward (deploy/orthanc/autoforward.lua): a SEG series is
  sent without a manual /stow call, a CT series is not.

Prints the observed facts, then 'N passed, N failed'. Exit 1 on any failure.
Skips (exit 0) when Orthanc or its DICOMweb plugin is not installed.
Python standard library only (pydicom is used by the stub when present).

    python3 tests/orthanc/e2e.py [--keep]   # --keep: leave the temp dir
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FIX = os.path.join(REPO, "tests", "fixtures", "dicom")
PLUGIN = os.environ.get("ORTHANC_DICOMWEB_PLUGIN",
                        "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
SITE, KEY = "site1", "e2e-ingest-key"

results: list[tuple[str, bool, str]] = []
facts: dict = {}


def check(name: str, cond: bool, detail: str = "") -> bool:
    results.append((name, bool(cond), detail))
    print(("PASS " if cond else "FAIL ") + name + (f"  [{detail}]" if detail and not cond else ""),
          flush=True)
    return bool(cond)


def http(method: str, url: str, body: bytes | None = None, ctype: str | None = None):
    req = urllib.request.Request(url, data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    with urllib.request.urlopen(req, timeout=30) as resp:
        data = resp.read()
    return json.loads(data) if data else None


def stub_requests(stub: str) -> list[dict]:
    return http("GET", stub + "/_stub/requests")


def stub_config(stub: str, **cfg) -> None:
    http("POST", stub + "/_stub/config", json.dumps(cfg).encode(), "application/json")


def wait_requests(stub: str, count: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        reqs = stub_requests(stub)
        if len(reqs) >= count or time.monotonic() > deadline:
            return reqs
        time.sleep(0.1)


def drive(orthanc: str, *args: str) -> dict:
    cmd = [sys.executable, os.path.join(HERE, "drive.py"), "--orthanc", orthanc, *args]
    env = dict(os.environ, SEGWATCH_SITE=SITE, SEGWATCH_KEY=KEY)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=180)
    try:
        return json.loads(out.stdout)
    except ValueError:
        return {"ok": False, "error": out.stdout + out.stderr}


def start_orthanc(workdir: str, name: str, stub_url: str, *flags: str) -> dict:
    env = dict(os.environ, SEGWATCH_DICOMWEB_URL=stub_url + "/dicom-web/",
               SEGWATCH_SITE=SITE, SEGWATCH_KEY=KEY, ORTHANC_STABLE_AGE="2")
    env.pop("ORTHANC_HTTP_PORT", None)
    out = subprocess.run(["bash", os.path.join(HERE, "run_orthanc.sh"), "start", "--dir",
                          os.path.join(workdir, name), *flags],
                         capture_output=True, text=True, env=env, timeout=120)
    if out.returncode != 0:
        raise RuntimeError("run_orthanc.sh failed: " + out.stderr)
    vals = dict(line.split("=", 1) for line in out.stdout.split() if "=" in line)
    return vals


def stop_orthanc(info: dict) -> None:
    subprocess.run(["bash", os.path.join(HERE, "run_orthanc.sh"), "stop", info["ORTHANC_DIR"],
                    "--keep"], check=False, timeout=60)


def big_instance(path: str, size: int) -> bytes:
    """ai_binary.dcm with a new SOPInstanceUID and a large private OB element
    appended after the pixel data (Explicit VR Little Endian)."""
    data = open(os.path.join(FIX, "ai_binary.dcm"), "rb").read()
    old = b"2.25.116591895922863793184612282714983340240"
    new = b"2.25.116591895922863793184612282714983349999"
    assert len(old) == len(new) and old in data
    data = data.replace(old, new)
    old_series = b"2.25.76573935594446508681913328463114072795"
    new_series = b"2.25.76573935594446508681913328463114079999"
    assert old_series in data
    data = data.replace(old_series, new_series)  # a series of its own
    creator = b"SEGWATCH E2E"  # even length
    data += b"\xe1\x7f\x10\x00LO" + len(creator).to_bytes(2, "little") + creator
    payload = bytes(range(256)) * (size // 256)
    data += b"\xe1\x7f\x00\x10OB\x00\x00" + len(payload).to_bytes(4, "little") + payload
    with open(path, "wb") as fh:
        fh.write(data)
    return data


def summary_of(req: dict) -> dict:
    return {
        "path": req["path"],
        "headers": req["headers"],
        "framing": req["framing"],
        "multipart": req.get("multipart"),
        "parts": [{"headers": p["headers"], "size": p["size"],
                   "has_preamble_and_dicm": p["has_preamble_and_dicm"]}
                  for p in req.get("parts", [])],
    }


def main() -> int:
    keep = "--keep" in sys.argv
    if not shutil.which("Orthanc") and not os.path.exists("/usr/sbin/Orthanc") \
            and not os.environ.get("ORTHANC_BIN"):
        print("SKIP: Orthanc is not installed (apt-get install -y orthanc orthanc-dicomweb)")
        print("0 passed, 0 failed, 1 skipped")
        return 0
    if not os.path.exists(PLUGIN):
        print(f"SKIP: DICOMweb plugin not found at {PLUGIN}")
        print("0 passed, 0 failed, 1 skipped")
        return 0

    work = tempfile.mkdtemp(prefix="segwatch-orthanc-e2e.")
    stub_proc = None
    orthancs: list[dict] = []
    try:
        port_file = os.path.join(work, "stub.port")
        stub_proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "stub_stow.py"), "--out",
             os.path.join(work, "stub"), "--port-file", port_file,
             "--expect-basic", f"{SITE}:{KEY}"],
            stdout=open(os.path.join(work, "stub.log"), "w"), stderr=subprocess.STDOUT)
        for _ in range(100):
            if os.path.exists(port_file):
                break
            time.sleep(0.05)
        stub = f"http://127.0.0.1:{open(port_file).read().strip()}"

        # ---- Orthanc without Lua -------------------------------------------
        t0 = time.monotonic()
        o = start_orthanc(work, "orthanc", stub)
        orthancs.append(o)
        facts["orthanc_start_seconds"] = o.get("ORTHANC_START_SECONDS")
        facts["orthanc_start_wall_seconds"] = round(time.monotonic() - t0, 2)
        ourl = o["ORTHANC_URL"]
        files = [os.path.join(FIX, "ai_binary.dcm"), os.path.join(FIX, "corrected_binary.dcm")]
        originals = [open(f, "rb").read() for f in files]
        want_auth = "Basic " + base64.b64encode(f"{SITE}:{KEY}".encode()).decode()

        for mode in ("--chunked", "--no-chunked"):
            before = len(stub_requests(stub))
            res = drive(ourl, "--files", *files, mode)
            check(f"{mode}: job succeeded", res.get("ok"), json.dumps(res)[:800])
            reqs = wait_requests(stub, before + 1, 10)[before:]
            if not check(f"{mode}: exactly one STOW request", len(reqs) == 1, str(len(reqs))):
                continue
            r = reqs[0]
            facts[f"request{mode}"] = summary_of(r)
            ct = r["content_type"] or ""
            check(f"{mode}: POST /dicom-web/studies", r["path"] == "/dicom-web/studies", r["path"])
            check(f"{mode}: Content-Type multipart/related; type=\"application/dicom\"; boundary=",
                  ct.startswith('multipart/related; type="application/dicom"; boundary='), ct)
            check(f"{mode}: Authorization is Basic site:key", r["authorization"] == want_auth,
                  str(r["authorization"]))
            if mode == "--chunked":
                check("--chunked: Transfer-Encoding: chunked, no Content-Length",
                      r["transfer_encoding"] == "chunked" and r["content_length"] is None,
                      f"{r['transfer_encoding']} {r['content_length']}")
            else:
                check("--no-chunked: Content-Length equals body, no Transfer-Encoding",
                      r["transfer_encoding"] is None
                      and int(r["content_length"] or -1) == r["framing"]["body_len"],
                      f"{r['transfer_encoding']} {r['content_length']}")
            check(f"{mode}: multipart well formed", r["multipart"]["ok"] and not r["multipart"]["notes"],
                  json.dumps(r["multipart"]))
            check(f"{mode}: two parts", len(r["parts"]) == 2, str(len(r["parts"])))
            bins = []
            for i in range(len(r["parts"])):
                with open(os.path.join(r["dir"], f"part-{i + 1:02d}.bin"), "rb") as fh:
                    bins.append(fh.read())
            check(f"{mode}: parts are the uploaded files byte for byte",
                  sorted(bins) == sorted(originals))
            check(f"{mode}: each part has a 128-byte preamble and DICM",
                  all(p["has_preamble_and_dicm"] for p in r["parts"]))
            check(f"{mode}: part headers are Content-Type + Content-Length",
                  all([h[0] for h in p["headers"]] == ["Content-Type", "Content-Length"]
                      and p["headers"][0][1] == "application/dicom"
                      and int(p["headers"][1][1]) == p["size"] for p in r["parts"]),
                  json.dumps([p["headers"] for p in r["parts"]]))

        # per-request "ChunkedTransfers" is ignored by the plugin
        before = len(stub_requests(stub))
        sid = drive(ourl, "--files", files[0], "--chunked")["uploaded"][0]["series"]
        http("POST", ourl + "/dicom-web/servers/segwatch/stow",
             json.dumps({"Resources": [sid], "Synchronous": True,
                         "ChunkedTransfers": False}).encode(), "application/json")
        reqs = wait_requests(stub, before + 2, 10)[before:]
        check("per-request ChunkedTransfers=false is ignored (still chunked)",
              len(reqs) == 2 and reqs[-1]["transfer_encoding"] == "chunked",
              str([r["transfer_encoding"] for r in reqs]))
        facts["per_request_ChunkedTransfers_honoured"] = not (
            len(reqs) == 2 and reqs[-1]["transfer_encoding"] == "chunked")

        # a large instance, chunked and not
        big = os.path.join(work, "big.dcm")
        big_bytes = big_instance(big, 8 * 1024 * 1024)
        for mode in ("--chunked", "--no-chunked"):
            before = len(stub_requests(stub))
            res = drive(ourl, "--files", big, mode, "--level", "instance")
            reqs = wait_requests(stub, before + 1, 30)[before:]
            ok = res.get("ok") and len(reqs) == 1
            if check(f"8 MiB instance {mode}: sent", ok, json.dumps(res)[:400]):
                with open(os.path.join(reqs[0]["dir"], "part-01.bin"), "rb") as fh:
                    check(f"8 MiB instance {mode}: byte-identical", fh.read() == big_bytes)
                facts[f"big{mode}_framing"] = reqs[0]["framing"]
                facts[f"big{mode}_seconds"] = res.get("seconds")

        # Bearer through HttpHeaders
        stub_config(stub, expect_basic=None, expect_bearer=KEY)
        before = len(stub_requests(stub))
        res = drive(ourl, "--files", files[0], "--chunked", "--bearer")
        reqs = wait_requests(stub, before + 1, 10)[before:]
        check("bearer: job succeeded", res.get("ok"), json.dumps(res)[:600])
        check("bearer: Authorization: Bearer KEY (and nothing else)",
              len(reqs) == 1 and reqs[0]["authorization"] == "Bearer " + KEY
              and sum(1 for h in reqs[0]["headers"] if h[0].lower() == "authorization") == 1,
              json.dumps(reqs[0]["headers"]) if reqs else "no request")
        facts["server_definition_bearer"] = res.get("server_definition")

        # 401 -> job failure
        stub_config(stub, expect_basic=None, expect_bearer="some-other-key")
        res = drive(ourl, "--files", files[0], "--chunked", "--bearer")
        check("401 from segwatch: job fails", not res.get("ok") and res.get("job", {}).get("State") == "Failure",
              json.dumps(res.get("job")))
        facts["job_on_401"] = res.get("job")
        stub_config(stub, expect_bearer=None, expect_basic=f"{SITE}:{KEY}")

        # faulty answers
        for reply, status in (("drop-last", None), ("empty-object", None), ("no-body", None),
                              ("array", None), ("normal", 202), ("normal", 409),
                              ("normal", 204)):
            stub_config(stub, reply=reply, status=status)
            res = drive(ourl, "--files", *files, "--chunked")
            job = res.get("job") or {}
            facts[f"job_on_reply_{reply}_{status or 'auto'}"] = {
                k: job.get(k) for k in ("State", "ErrorDescription", "ErrorDetails", "Content")}
        stub_config(stub, reply="normal", status=None)
        check("faulty answer drop-last fails the job",
              facts["job_on_reply_drop-last_auto"]["State"] == "Failure")
        stop_orthanc(o)

        # ---- Orthanc with the Lua auto-forward ------------------------------
        o2 = start_orthanc(work, "orthanc-lua", stub, "--lua")
        orthancs.append(o2)
        before = len(stub_requests(stub))
        t0 = time.monotonic()
        http("POST", o2["ORTHANC_URL"] + "/instances", originals[0], "application/dicom")
        reqs = wait_requests(stub, before + 1, 30)[before:]
        facts["lua_seconds_until_stow"] = round(time.monotonic() - t0, 2)
        ok = check("lua: SEG arrives at the stub without a /stow call", len(reqs) == 1,
                   str(len(reqs)))
        if ok:
            with open(os.path.join(reqs[0]["dir"], "part-01.bin"), "rb") as fh:
                check("lua: the forwarded part is the uploaded SEG", fh.read() == originals[0])
            check("lua: Basic auth used", reqs[0]["authorization"] == want_auth)
        before = len(stub_requests(stub))
        http("POST", o2["ORTHANC_URL"] + "/instances",
             open(os.path.join(FIX, "bad_not_seg.dcm"), "rb").read(), "application/dicom")
        time.sleep(6)  # StableAge 2 s + margin
        reqs = stub_requests(stub)[before:]
        check("lua: a CT series is not forwarded", len(reqs) == 0, str(len(reqs)))
        log = open(os.path.join(o2["ORTHANC_DIR"], "orthanc.log")).read()
        check("lua: forwarding is logged", "segwatch: forwarding SEG series" in log)

        # segwatch refuses (401): the failure is logged, resubmit recovers.
        stub_config(stub, expect_basic=f"{SITE}:wrong-key")
        before = len(stub_requests(stub))
        http("POST", o2["ORTHANC_URL"] + "/instances", originals[1], "application/dicom")
        reqs = wait_requests(stub, before + 1, 30)[before:]
        failed_job = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and failed_job is None:
            for line in open(os.path.join(o2["ORTHANC_DIR"], "orthanc.log")):
                if "segwatch: STOW-RS job " in line and " failed: " in line:
                    failed_job = line.split("segwatch: STOW-RS job ", 1)[1].split()[0]
            time.sleep(0.2)
        check("lua: a refused STOW-RS is logged as a failed job", failed_job is not None)
        stub_config(stub, expect_basic=f"{SITE}:{KEY}")
        if failed_job:
            # Fact, not a requirement: what "resubmit" of a failed STOW job sends.
            before = len(stub_requests(stub))
            http("POST", o2["ORTHANC_URL"] + f"/jobs/{failed_job}/resubmit", b"{}",
                 "application/json")
            reqs = wait_requests(stub, before + 1, 15)[before:]
            time.sleep(1)
            job = http("GET", o2["ORTHANC_URL"] + f"/jobs/{failed_job}")
            facts["resubmit_of_failed_stow_job"] = {
                "requests": len(reqs),
                "parts_sent": [len(r.get("parts", [])) for r in reqs],
                "body_len": [r["framing"]["body_len"] for r in reqs],
                "job_state": job.get("State")}
            # The recovery that works: a new /stow call for the series.
            series = http("GET", o2["ORTHANC_URL"] + "/series")
            before = len(stub_requests(stub))
            res = drive(o2["ORTHANC_URL"], "--resources", *series)
            reqs = wait_requests(stub, before + 1, 15)[before:]
            check("lua: a new /stow call delivers the series after a failure",
                  res.get("ok") and len(reqs) == 1 and reqs[0]["response_status"] == 200,
                  json.dumps(res)[:500])
        log = open(os.path.join(o2["ORTHANC_DIR"], "orthanc.log")).read()
        check("lua: success is logged", "segwatch: series " in log and " delivered (job " in log)
        stop_orthanc(o2)
    finally:
        for o in orthancs:
            stop_orthanc(o)
        if stub_proc is not None:
            stub_proc.terminate()
            try:
                stub_proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                stub_proc.kill()
        with open(os.path.join(work, "facts.json"), "w") as fh:
            json.dump(facts, fh, indent=1)
        print("facts:", json.dumps(facts, indent=1))
        if keep:
            print("kept", work)
        else:
            shutil.rmtree(work, ignore_errors=True)

    passed = sum(1 for _, ok, _ in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
