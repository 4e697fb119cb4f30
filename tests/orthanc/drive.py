#!/usr/bin/env python3
"""Drive an Orthanc to send DICOM files to segwatch with STOW-RS.

    drive.py --orthanc http://127.0.0.1:18042 --files a.dcm b.dcm [--no-chunked]

Steps:
1. upload every file to Orthanc (POST /instances) and collect the Orthanc IDs
   of the instances, series and studies;
2. with --chunked / --no-chunked, re-register the DICOMweb server
   (PUT /dicom-web/servers/NAME) with "ChunkedTransfers" set accordingly.
   In the DICOMweb plugin (1.7 tested) this is a property of the server
   entry only; a "ChunkedTransfers" field in the body of a /stow call is
   ignored. Orthanc never returns the stored Password, so re-registering
   with Basic auth needs the key again (--key or $SEGWATCH_KEY);
3. POST /dicom-web/servers/NAME/stow with
   {"Resources": [...], "Synchronous": false} and poll GET /jobs/{id}
   until the job is Success or Failure (or --sync for a synchronous call);
4. print a JSON summary; exit 0 on success, 1 on failure.

Python standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


class OrthancError(RuntimeError):
    pass


class Orthanc:
    def __init__(self, base: str, user: str | None = None, password: str | None = None,
                 timeout: float = 60.0):
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.auth = None
        if user is not None:
            import base64
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.auth = "Basic " + token

    def request(self, method: str, path: str, body: bytes | None = None,
                ctype: str | None = None):
        req = urllib.request.Request(self.base + path, data=body, method=method)
        if ctype:
            req.add_header("Content-Type", ctype)
        if self.auth:
            req.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                data = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode("utf-8", "replace")
            raise OrthancError(f"{method} {path}: HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise OrthancError(f"{method} {path}: {exc.reason}") from None
        if not data:
            return None
        try:
            return json.loads(data)
        except ValueError:
            return data.decode("utf-8", "replace")

    def get(self, path):
        return self.request("GET", path)

    def post_json(self, path, obj):
        return self.request("POST", path, json.dumps(obj).encode(), "application/json")

    def put_json(self, path, obj):
        return self.request("PUT", path, json.dumps(obj).encode(), "application/json")


def upload(orthanc: Orthanc, files: list[str]) -> list[dict]:
    out = []
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        ans = orthanc.request("POST", "/instances", data, "application/dicom")
        if not isinstance(ans, dict) or "ID" not in ans:
            raise OrthancError(f"upload of {f} gave {ans!r}")
        out.append({"file": f, "instance": ans["ID"], "series": ans.get("ParentSeries"),
                    "study": ans.get("ParentStudy"), "status": ans.get("Status")})
    return out


def server_definition(orthanc: Orthanc, name: str) -> dict:
    servers = orthanc.get("/dicom-web/servers?expand")
    if not isinstance(servers, dict) or name not in servers:
        raise OrthancError(f"DICOMweb server {name!r} is not registered in Orthanc "
                           f"(have: {list(servers) if isinstance(servers, dict) else servers})")
    return servers[name]


def configure_server(orthanc: Orthanc, name: str, chunked: bool, url: str | None,
                     site: str | None, key: str | None, bearer: bool) -> dict:
    """Re-register NAME with ChunkedTransfers=chunked; returns the new definition."""
    current = server_definition(orthanc, name)
    new = {"Url": url or current["Url"], "ChunkedTransfers": chunked}
    if current.get("Timeout"):
        new["Timeout"] = current["Timeout"]
    headers = current.get("HttpHeaders") or {}
    if isinstance(headers, list):  # Orthanc prints an empty object as []
        headers = {}
    if bearer:
        if not key:
            raise OrthancError("--bearer needs --key or $SEGWATCH_KEY")
        headers = dict(headers)
        headers["Authorization"] = "Bearer " + key
    elif key:
        new["Username"] = site or current.get("Username") or "site1"
        new["Password"] = key
    elif current.get("Username"):
        raise OrthancError("Orthanc does not reveal the stored password: pass --key "
                           "(or set SEGWATCH_KEY) to re-register the server")
    if headers:
        new["HttpHeaders"] = headers
    orthanc.put_json(f"/dicom-web/servers/{name}", new)
    check = server_definition(orthanc, name)
    if str(check.get("ChunkedTransfers")) not in (("1", "True", "true") if chunked else ("0", "False", "false")):
        raise OrthancError(f"Orthanc kept ChunkedTransfers={check.get('ChunkedTransfers')!r}")
    return check


def wait_job(orthanc: Orthanc, job_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        job = orthanc.get(f"/jobs/{job_id}")
        if job.get("State") in ("Success", "Failure"):
            return job
        if time.monotonic() > deadline:
            raise OrthancError(f"job {job_id} still {job.get('State')} after {timeout}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Upload DICOM files to Orthanc and STOW-RS them "
                                             "to a DICOMweb server registered in Orthanc.")
    ap.add_argument("--orthanc", required=True, help="Orthanc base URL, e.g. http://127.0.0.1:18042")
    ap.add_argument("--orthanc-user", help="Orthanc REST user (if Orthanc needs auth)")
    ap.add_argument("--orthanc-password")
    ap.add_argument("--files", nargs="+", default=[], help="DICOM files to upload and send")
    ap.add_argument("--resources", nargs="+", default=[],
                    help="Orthanc IDs to send in addition (already in Orthanc)")
    ap.add_argument("--level", choices=["instance", "series", "study"], default="series",
                    help="which Orthanc IDs of the uploaded files go in Resources (default: series)")
    ap.add_argument("--server", default="segwatch", help="DicomWeb.Servers entry (default: segwatch)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--chunked", dest="chunked", action="store_true", default=None,
                      help="re-register the server with ChunkedTransfers=true")
    mode.add_argument("--no-chunked", dest="chunked", action="store_false",
                      help="re-register the server with ChunkedTransfers=false "
                           "(Content-Length instead of Transfer-Encoding: chunked)")
    ap.add_argument("--segwatch-url", default=os.environ.get("SEGWATCH_DICOMWEB_URL"),
                    help="DICOMweb root for re-registering (default: keep the current one)")
    ap.add_argument("--site", default=os.environ.get("SEGWATCH_SITE"),
                    help="Basic user name when re-registering (default: current or site1)")
    ap.add_argument("--key", default=os.environ.get("SEGWATCH_KEY"),
                    help="segwatch ingest key (Basic password or Bearer token)")
    ap.add_argument("--bearer", action="store_true",
                    help="re-register with HttpHeaders Authorization: Bearer KEY instead of Basic")
    ap.add_argument("--sync", action="store_true", help="Synchronous STOW call instead of a job")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the job")
    args = ap.parse_args(argv)

    orthanc = Orthanc(args.orthanc, args.orthanc_user, args.orthanc_password)
    summary: dict = {"orthanc": orthanc.base, "server": args.server}
    try:
        uploaded = upload(orthanc, args.files)
        summary["uploaded"] = uploaded
        resources = []
        for u in uploaded:
            rid = u[args.level]
            if rid not in resources:
                resources.append(rid)
        resources += [r for r in args.resources if r not in resources]
        if not resources:
            ap.error("nothing to send: give --files or --resources")
        if args.chunked is not None:
            summary["server_definition"] = configure_server(
                orthanc, args.server, args.chunked, args.segwatch_url, args.site, args.key,
                args.bearer)
        else:
            summary["server_definition"] = server_definition(orthanc, args.server)
        body = {"Resources": resources, "Synchronous": bool(args.sync)}
        summary["stow_request"] = body
        t0 = time.monotonic()
        try:
            answer = orthanc.post_json(f"/dicom-web/servers/{args.server}/stow", body)
        except OrthancError as exc:
            if not args.sync:
                raise
            summary.update(ok=False, error=str(exc), seconds=round(time.monotonic() - t0, 3))
            print(json.dumps(summary, indent=2))
            return 1
        if args.sync:
            summary.update(ok=True, answer=answer, seconds=round(time.monotonic() - t0, 3))
        else:
            job = wait_job(orthanc, answer["ID"], args.timeout)
            summary["seconds"] = round(time.monotonic() - t0, 3)
            summary["job"] = {k: job.get(k) for k in (
                "ID", "State", "ErrorCode", "ErrorDescription", "ErrorDetails", "Content",
                "Type", "Progress")}
            summary["ok"] = job.get("State") == "Success"
    except OrthancError as exc:
        summary.update(ok=False, error=str(exc))
    print(json.dumps(summary, indent=2))
    return 0 if summary.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
