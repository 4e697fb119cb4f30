#!/usr/bin/env python3
"""End-to-end inhibition test against a real Alertmanager (stdlib only).

Starts the Alertmanager binary with deploy/alertmanager/alertmanager.yml on a free
loopback port (clustering off, throw-away storage), posts a set of alerts through
the v2 API and checks which ones the inhibition rules suppress:

  - a site's quality incidents (SegwatchQualityIncidentSite) are suppressed while
    that site's SegwatchNoReferenceReceived fires;
  - another site's incidents and the pooled (site="all") ones are not;
  - a pooled incident is not suppressed by a site incident on the same structure
    and model version, nor the other way round;
  - SegwatchTargetDown is suppressed while SegwatchDown fires.

Notifications are not sent during the test: the process is stopped well before the
30 s group_wait.  Usage: inhibition_test.py [--bin prometheus-alertmanager] [--config PATH]
"""
import argparse
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def incident(incident_id, site, structure, detector="pit_ewma"):
    pooled = site == "all"
    return {"alertname": "SegwatchQualityIncidentPooled" if pooled else "SegwatchQualityIncidentSite",
            "incident": str(incident_id), "site": site, "structure": structure,
            "severity": "page" if pooled else "warning", "governance": "true", "category": "quality",
            "model": "abdomen-ct", "model_version": "1.4.0", "detector": detector}


ALERTS = {
    "no-ref hosp-a": {"alertname": "SegwatchNoReferenceReceived", "site": "hosp-a", "cause": "stale",
                      "severity": "warning", "governance": "true", "category": "data_flow"},
    "incident 7 hosp-a liver": incident(7, "hosp-a", "liver"),
    "incident 8 hosp-a all": incident(8, "hosp-a", "all", "cusum"),
    "incident 9 hosp-b liver": incident(9, "hosp-b", "liver"),
    "incident 10 pooled liver": incident(10, "all", "liver"),
    "incident 11 pooled spleen": incident(11, "all", "spleen", "guard_rail"),
    "incident 12 hosp-c spleen": incident(12, "hosp-c", "spleen", "cusum"),
    "down": {"alertname": "SegwatchDown", "job": "segwatch", "severity": "page", "category": "operations"},
    "target down a": {"alertname": "SegwatchTargetDown", "job": "segwatch", "instance": "a:8080",
                      "severity": "warning", "category": "operations"},
    "backlog": {"alertname": "SegwatchQueueBacklog", "severity": "warning", "category": "operations"},
}
EXPECT_SUPPRESSED = {"incident 7 hosp-a liver", "incident 8 hosp-a all", "target down a"}


def request(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        raw = resp.read()
        return json.loads(raw) if raw else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=shutil.which("prometheus-alertmanager") or shutil.which("alertmanager"))
    ap.add_argument("--config", default=os.path.join(HERE, "alertmanager.yml"))
    args = ap.parse_args()
    if not args.bin:
        print("FAIL: no alertmanager binary (prometheus-alertmanager or alertmanager) found")
        return 1

    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v2"
    workdir = tempfile.mkdtemp(prefix="segwatch-am-test-")
    log = open(os.path.join(workdir, "alertmanager.log"), "w")
    proc = subprocess.Popen(
        [args.bin, f"--config.file={args.config}", f"--storage.path={workdir}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
         "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 20
        while True:
            try:
                request(base, "GET", "/status")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    log.flush()
                    print("FAIL: alertmanager did not start:\n" + open(log.name).read())
                    return 1
                time.sleep(0.2)

        now = dt.datetime.now(dt.timezone.utc)
        ends = (now + dt.timedelta(minutes=10)).isoformat()
        starts = now.isoformat()
        request(base, "POST", "/alerts", [
            {"labels": labels, "annotations": {"summary": key}, "startsAt": starts, "endsAt": ends}
            for key, labels in ALERTS.items()])

        failures = []
        deadline = time.time() + 15
        while True:
            got = {a["annotations"]["summary"]: a for a in request(base, "GET", "/alerts")}
            failures = []
            for key in ALERTS:
                alert = got.get(key)
                if alert is None:
                    failures.append(f"{key}: not found")
                    continue
                state = alert["status"]["state"]
                want = "suppressed" if key in EXPECT_SUPPRESSED else "active"
                if state != want:
                    failures.append(f"{key}: state {state}, want {want}")
            if not failures or time.time() > deadline:
                break
            time.sleep(0.5)

        for key in ALERTS:
            alert = got.get(key)
            state = alert["status"]["state"] if alert else "missing"
            print(f"  {key:26s} {state}")
        if failures:
            print("FAIL: inhibition:\n  " + "\n  ".join(failures))
            return 1
        print(f"OK: inhibition rules ({len(EXPECT_SUPPRESSED)} suppressed, "
              f"{len(ALERTS) - len(EXPECT_SUPPRESSED)} active as expected)")
        return 0
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
