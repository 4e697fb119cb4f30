#!/usr/bin/env python3
"""A tiny STOW-RS receiver that records exactly what a DICOMweb client sends.

It stands in for segwatch's ``POST /dicom-web/studies`` so that the requests
made by a real Orthanc (or curl) can be inspected byte for byte. Python
standard library only; pydicom is used to read the UIDs when it is
importable, otherwise a minimal reader of the DICOM file meta group is used.

Usage::

    stub_stow.py --out DIR [--host 127.0.0.1] [--port 0] [--port-file F]
                 [--expect-basic USER:PASS] [--expect-bearer TOKEN]
                 [--status CODE]

For every request it creates ``DIR/req-NNNN/`` with:

* ``request.json``  method, path, all request headers, body framing facts
  (chunked or Content-Length, chunk sizes), the multipart analysis and the
  response that was sent;
* ``body.raw``      the de-chunked request body as received;
* ``part-NN.headers.txt`` and ``part-NN.bin`` for every multipart part.

``DIR/requests.jsonl`` gets one line (the same summary) per request, and
``GET /_stub/requests`` returns the list of summaries as JSON, so a test can
poll the stub instead of reading files. ``POST /_stub/shutdown`` stops it.
``POST /_stub/config`` with a JSON object changes ``reply``, ``status``,
``expect_basic``, ``expect_bearer`` or ``response_content_type`` (same
meaning as the options) at run time, so one stub serves several test cases.

Answer: PS3.18 STOW-RS response, ``application/dicom+json``, with a
ReferencedSOPSequence (0008,1199) item per stored part (0008,1150 / 0008,1155
/ 0008,1190) and a FailedSOPSequence (0008,1198) for parts that are not DICOM.
HTTP 200 if every part was accepted, 202 if only some, 409 if none.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:  # optional
    import pydicom  # type: ignore
except Exception:  # pragma: no cover - depends on the environment
    pydicom = None

STOW_PATH = re.compile(r"^(?P<root>.*?/)?studies(?:/(?P<study>[0-9.]+))?/?$")


# --------------------------------------------------------------------------
# Minimal DICOM reading (fallback when pydicom is missing)
# --------------------------------------------------------------------------

def _meta_uids(data: bytes) -> dict:
    """Read (0002,0002), (0002,0003), (0002,0010) from a Part 10 file.

    The file meta group is always Explicit VR Little Endian, so this needs no
    dictionary. Returns {} if the bytes do not start with a preamble + DICM.
    """
    if len(data) < 132 or data[128:132] != b"DICM":
        return {}
    out = {}
    pos = 132
    long_vrs = {b"OB", b"OD", b"OF", b"OL", b"OW", b"SQ", b"UC", b"UR", b"UT", b"UN", b"OV"}
    while pos + 8 <= len(data):
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4:pos + 6]
        if vr in long_vrs:
            length = struct.unpack_from("<I", data, pos + 8)[0]
            value_at = pos + 12
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            value_at = pos + 8
        value = data[value_at:value_at + length]
        key = {0x0002: "SOPClassUID", 0x0003: "SOPInstanceUID", 0x0010: "TransferSyntaxUID"}.get(elem)
        if key:
            out[key] = value.rstrip(b"\x00 ").decode("ascii", "replace")
        pos = value_at + length
    return out


def dicom_info(data: bytes) -> dict:
    info = {
        "size": len(data),
        "has_preamble_and_dicm": len(data) >= 132 and data[128:132] == b"DICM",
        "preamble_all_zero": len(data) >= 128 and data[:128] == b"\x00" * 128,
    }
    info.update(_meta_uids(data))
    if pydicom is not None and info["has_preamble_and_dicm"]:
        try:
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            info["SOPClassUID"] = str(ds.SOPClassUID)
            info["SOPInstanceUID"] = str(ds.SOPInstanceUID)
            info["StudyInstanceUID"] = str(ds.get("StudyInstanceUID", ""))
            info["SeriesInstanceUID"] = str(ds.get("SeriesInstanceUID", ""))
            info["Modality"] = str(ds.get("Modality", ""))
            info["read_with"] = "pydicom"
        except Exception as exc:  # keep the meta-group values
            info["pydicom_error"] = repr(exc)
            info["read_with"] = "meta-group"
    else:
        info["read_with"] = "meta-group"
    return info


# --------------------------------------------------------------------------
# Multipart/related parsing (RFC 2046 section 5.1.1, strict about framing)
# --------------------------------------------------------------------------

def parse_content_type(value: str) -> tuple[str, dict]:
    """Split 'multipart/related; type="application/dicom"; boundary=X'."""
    parts = []
    buf, quoted = "", False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == ";" and not quoted:
            parts.append(buf)
            buf = ""
        else:
            buf += ch
    parts.append(buf)
    media = parts[0].strip().lower()
    params = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            v = v.strip()
            if len(v) >= 2 and v[0] == v[-1] == '"':
                v = v[1:-1]
            params[k.strip().lower()] = v
    return media, params


def split_multipart(body: bytes, boundary: str) -> dict:
    """Return {'parts': [(headers, payload)], 'notes': [...], 'ok': bool}."""
    notes = []
    delim = b"--" + boundary.encode("latin-1")
    # First delimiter: may be at offset 0, or after a preamble ending in CRLF.
    if body.startswith(delim):
        pos = 0
        preamble = b""
    else:
        idx = body.find(b"\r\n" + delim)
        if idx < 0:
            return {"parts": [], "ok": False, "notes": ["no opening boundary found"],
                    "preamble_len": None, "epilogue_len": None}
        preamble = body[:idx]
        pos = idx + 2
        notes.append(f"preamble of {len(preamble)} bytes before the first boundary")
    parts = []
    closed = False
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            closed = True
            pos += 2
            break
        # transport padding then CRLF
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            notes.append("boundary line not terminated by CRLF")
            break
        if body[pos:eol].strip(b" \t"):
            notes.append(f"garbage after boundary: {body[pos:eol]!r}")
        pos = eol + 2
        nxt = body.find(b"\r\n" + delim, pos)
        if nxt < 0:
            notes.append("part not terminated by a boundary (truncated body?)")
            break
        raw_part = body[pos:nxt]
        hdr_end = raw_part.find(b"\r\n\r\n")
        if raw_part.startswith(b"\r\n"):
            headers_blob, payload = b"", raw_part[2:]
        elif hdr_end < 0:
            notes.append("part without header/body separator")
            headers_blob, payload = raw_part, b""
        else:
            headers_blob, payload = raw_part[:hdr_end], raw_part[hdr_end + 4:]
        headers = []
        for line in headers_blob.split(b"\r\n"):
            if not line:
                continue
            name, _, val = line.decode("latin-1").partition(":")
            headers.append([name.strip(), val.strip()])
        parts.append((headers, payload))
        pos = nxt + 2
    epilogue = body[pos:] if closed else b""
    if not closed:
        notes.append("no closing boundary (--boundary--)")
    if epilogue and epilogue != b"\r\n":
        notes.append(f"epilogue of {len(epilogue)} bytes after the closing boundary")
    return {"parts": parts, "ok": closed and bool(parts), "notes": notes,
            "preamble_len": len(preamble), "epilogue": epilogue.decode("latin-1")[:64]}


# --------------------------------------------------------------------------
# HTTP server
# --------------------------------------------------------------------------

class Stub:
    def __init__(self, out_dir: str, expect_basic: str | None, expect_bearer: str | None,
                 status: int | None, reply: str = "normal",
                 response_content_type: str = "application/dicom+json"):
        self.out_dir = out_dir
        self.reply = reply
        self.response_content_type = response_content_type
        self.expect_basic = expect_basic
        self.expect_bearer = expect_bearer
        self.status = status
        self.lock = threading.Lock()
        self.counter = 0
        self.summaries: list[dict] = []
        os.makedirs(out_dir, exist_ok=True)

    def next_dir(self) -> tuple[int, str]:
        with self.lock:
            self.counter += 1
            n = self.counter
        d = os.path.join(self.out_dir, f"req-{n:04d}")
        os.makedirs(d, exist_ok=True)
        return n, d

    def record(self, summary: dict) -> None:
        with self.lock:
            self.summaries.append(summary)
            with open(os.path.join(self.out_dir, "requests.jsonl"), "a") as fh:
                fh.write(json.dumps(summary) + "\n")


def make_handler(stub: Stub):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # so that "Expect: 100-continue" is honoured
        server_version = "stub-stow/1"

        def log_message(self, fmt, *args):  # one line per request on stderr
            sys.stderr.write("stub_stow: " + (fmt % args) + "\n")

        # -- helpers ----------------------------------------------------
        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _read_body(self) -> tuple[bytes, dict]:
            te = (self.headers.get("Transfer-Encoding") or "").lower()
            framing: dict = {}
            if "chunked" in te:
                framing["mode"] = "chunked"
                sizes = []
                chunks = []
                while True:
                    line = self.rfile.readline(65537)
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        # trailers until an empty line
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    sizes.append(size)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(3)  # CRLF after the chunk
                framing["chunk_count"] = len(sizes)
                framing["chunk_sizes_first"] = sizes[:20]
                framing["chunk_size_max"] = max(sizes) if sizes else 0
                body = b"".join(chunks)
            else:
                length = int(self.headers.get("Content-Length") or 0)
                framing["mode"] = "content-length"
                body = self.rfile.read(length) if length else b""
            framing["body_len"] = len(body)
            return body, framing

        def _auth_ok(self) -> tuple[bool, dict]:
            value = self.headers.get("Authorization")
            info: dict = {"present": value is not None}
            if value:
                scheme, _, cred = value.partition(" ")
                info["scheme"] = scheme
                if scheme.lower() == "basic":
                    try:
                        user, _, pw = base64.b64decode(cred).decode("utf-8").partition(":")
                        info["basic_user"] = user
                        info["basic_password_len"] = len(pw)
                        info["basic_password"] = pw  # test stub: secrets are fake
                    except Exception as exc:
                        info["decode_error"] = repr(exc)
                elif scheme.lower() == "bearer":
                    info["bearer_token"] = cred
            if stub.expect_basic is not None:
                want = "Basic " + base64.b64encode(stub.expect_basic.encode()).decode()
                return value == want, info
            if stub.expect_bearer is not None:
                return value == "Bearer " + stub.expect_bearer, info
            return True, info

        # -- verbs --------------------------------------------------------
        def do_GET(self):
            if self.path.rstrip("/") == "/_stub/requests":
                with stub.lock:
                    body = json.dumps(stub.summaries, indent=1).encode()
                self._send(200, body, "application/json")
            elif self.path.rstrip("/") == "/_stub/health":
                self._send(200, b'{"ok":true}', "application/json")
            else:
                self._send(404, b"not found\n", "text/plain")

        def do_POST(self):
            if self.path.rstrip("/") == "/_stub/shutdown":
                self._send(200, b'{"ok":true}', "application/json")
                threading.Thread(target=self.server.shutdown, daemon=True).start()
                return
            if self.path.rstrip("/") == "/_stub/config":
                # {"reply": ..., "status": int|null, "expect_basic": "u:p"|null,
                #  "expect_bearer": "tok"|null}; absent keys are left unchanged.
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    cfg = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    self._send(400, b"bad json\n", "text/plain")
                    return
                with stub.lock:
                    for key in ("reply", "status", "expect_basic", "expect_bearer",
                                "response_content_type"):
                        if key in cfg:
                            setattr(stub, key, cfg[key])
                    now = {k: getattr(stub, k) for k in
                           ("reply", "status", "expect_basic", "expect_bearer",
                            "response_content_type")}
                self._send(200, json.dumps(now).encode(), "application/json")
                return
            n, req_dir = stub.next_dir()
            body, framing = self._read_body()
            with open(os.path.join(req_dir, "body.raw"), "wb") as fh:
                fh.write(body)
            summary = {
                "n": n,
                "method": "POST",
                "path": self.path,
                "http_version": self.request_version,
                "headers": [[k, v] for k, v in self.headers.items()],
                "content_type": self.headers.get("Content-Type"),
                "transfer_encoding": self.headers.get("Transfer-Encoding"),
                "content_length": self.headers.get("Content-Length"),
                "expect": self.headers.get("Expect"),
                "authorization": self.headers.get("Authorization"),
                "framing": framing,
                "dir": req_dir,
            }
            ok_auth, auth_info = self._auth_ok()
            summary["auth"] = auth_info
            m = STOW_PATH.match(self.path.split("?", 1)[0])
            if not m:
                summary["response_status"] = 404
                stub.record(summary)
                self._send(404, b"not a STOW-RS path\n", "text/plain")
                return
            if not ok_auth:
                summary["response_status"] = 401
                stub.record(summary)
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="stub"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            media, params = parse_content_type(self.headers.get("Content-Type") or "")
            summary["content_type_parsed"] = {"media": media, "params": params}
            if media != "multipart/related" or "boundary" not in params:
                summary["response_status"] = 415
                stub.record(summary)
                self._send(415, b"expected multipart/related with a boundary\n", "text/plain")
                return
            mp = split_multipart(body, params["boundary"])
            study_filter = m.group("study")
            base = f"http://{self.headers.get('Host', 'stub')}{(m.group('root') or '/')}"
            referenced, failed, parts_info = [], [], []
            for i, (headers, payload) in enumerate(mp["parts"], start=1):
                with open(os.path.join(req_dir, f"part-{i:02d}.headers.txt"), "w") as fh:
                    fh.write("".join(f"{k}: {v}\r\n" for k, v in headers))
                with open(os.path.join(req_dir, f"part-{i:02d}.bin"), "wb") as fh:
                    fh.write(payload)
                info = dicom_info(payload)
                info["headers"] = headers
                parts_info.append(info)
                uid_ok = info.get("SOPClassUID") and info.get("SOPInstanceUID")
                wrong_study = (study_filter and info.get("StudyInstanceUID")
                               and info["StudyInstanceUID"] != study_filter)
                if uid_ok and not wrong_study:
                    study = info.get("StudyInstanceUID") or study_filter or "0"
                    item = {
                        "00081150": {"vr": "UI", "Value": [info["SOPClassUID"]]},
                        "00081155": {"vr": "UI", "Value": [info["SOPInstanceUID"]]},
                    }
                    if info.get("SeriesInstanceUID"):
                        item["00081190"] = {"vr": "UR", "Value": [
                            f"{base}studies/{study}/series/{info['SeriesInstanceUID']}"
                            f"/instances/{info['SOPInstanceUID']}"]}
                    referenced.append(item)
                else:
                    item = {"00081197": {"vr": "US", "Value": [0xC000 if not wrong_study else 0xA900]}}
                    if info.get("SOPClassUID"):
                        item["00081150"] = {"vr": "UI", "Value": [info["SOPClassUID"]]}
                    if info.get("SOPInstanceUID"):
                        item["00081155"] = {"vr": "UI", "Value": [info["SOPInstanceUID"]]}
                    failed.append(item)
            summary["multipart"] = {k: v for k, v in mp.items() if k != "parts"}
            summary["parts"] = parts_info
            response: dict = {}
            if study_filter:
                response["00081190"] = {"vr": "UR", "Value": [f"{base}studies/{study_filter}"]}
            if referenced:
                response["00081199"] = {"vr": "SQ", "Value": referenced}
            if failed:
                response["00081198"] = {"vr": "SQ", "Value": failed}
            if stub.status is not None:
                code = stub.status
            elif referenced and not failed:
                code = 200
            elif referenced:
                code = 202
            else:
                code = 409
            # Misbehaving answers, to see how the client reacts.
            if stub.reply == "drop-last" and referenced:
                referenced.pop()
                if referenced:
                    response["00081199"]["Value"] = referenced
                else:
                    del response["00081199"]
            if stub.reply == "wrong-uids":
                for k, item in enumerate(referenced):
                    item["00081155"] = {"vr": "UI", "Value": [f"1.2.3.{k + 1}"]}
            payload = json.dumps(response).encode()
            if stub.reply == "empty-object":
                payload = b"{}"
            elif stub.reply == "no-body":
                payload = b""
            elif stub.reply == "array":  # some servers wrap the dataset in a JSON array
                payload = json.dumps([response]).encode()
            summary["response_status"] = code
            summary["response"] = response
            summary["reply_mode"] = stub.reply
            with open(os.path.join(req_dir, "request.json"), "w") as fh:
                json.dump(summary, fh, indent=1)
            stub.record(summary)
            self._send(code, payload, stub.response_content_type)

    return Handler


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="directory for the recorded requests")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the chosen port to this file")
    ap.add_argument("--expect-basic", metavar="USER:PASS",
                    help="answer 401 unless Authorization is exactly this Basic pair")
    ap.add_argument("--expect-bearer", metavar="TOKEN",
                    help="answer 401 unless Authorization is 'Bearer TOKEN'")
    ap.add_argument("--status", type=int, help="force this HTTP status on STOW answers")
    ap.add_argument("--reply", default="normal",
                    choices=["normal", "drop-last", "wrong-uids", "empty-object", "no-body",
                             "array"],
                    help="answer body: normal PS3.18 response, or a faulty one "
                         "(drop-last: one ReferencedSOPSequence item missing; wrong-uids: right count, "
                         "made-up SOPInstanceUIDs; empty-object: {}; "
                         "no-body: empty; array: [response])")
    ap.add_argument("--response-content-type", default="application/dicom+json",
                    help="Content-Type of STOW answers (default: application/dicom+json)")
    args = ap.parse_args(argv)
    stub = Stub(args.out, args.expect_basic, args.expect_bearer, args.status, args.reply,
                args.response_content_type)
    httpd = ThreadingHTTPServer((args.host, args.port), make_handler(stub))
    port = httpd.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(f"{port}\n")
        os.replace(tmp, args.port_file)
    print(f"stub_stow listening on http://{args.host}:{port}/dicom-web/ "
          f"(pydicom={'yes' if pydicom else 'no'}) recording to {args.out}", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
