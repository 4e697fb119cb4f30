#!/usr/bin/env python3
"""End to end monitoring test: segwatch and Postgres running, a real Prometheus
scraping segwatch with the repository's rules loaded, `segwatch simulate` with one
drift injected. Asserts that

  * the PIT-EWMA drift alarm rises for the drifted stream (site2, liver) and for
    no other per-site structure stream (pooled streams and site means that contain
    the drifted cases may legitimately alarm too; they are reported, not asserted);
  * the matching Prometheus alert is pending or firing;
  * every PromQL expression of the dashboards parses and returns data.

Usage: monitoring.py --segwatch target/debug/segwatch [--admin-url postgres://...]
Needs `prometheus` on PATH (Debian package). Python standard library only.
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
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIFT = "day4:site2:liver:0.08"
SITES, DAYS, PER_DAY, SEED = 3, 10, 8, 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, key=None, data=None, method=None):
    request = urllib.request.Request(url, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def wait(what, check, timeout=120, every=1.0):
    deadline = time.time() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception:  # not up yet
            pass
        if time.time() > deadline:
            sys.exit(f"FAIL: timed out waiting for {what}")
        time.sleep(every)


def metric_samples(text, name):
    """(labels dict, value) of every sample of `name` in a text exposition."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        labels_part, value = line[len(name) + 1:].rsplit("} ", 1)
        labels = dict(item.split("=", 1) for item in labels_part.split('",') if item)
        labels = {k: v.strip('"') for k, v in labels.items()}
        out.append((labels, float(value)))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--segwatch", required=True)
    parser.add_argument("--admin-url", default=os.environ.get("SEGWATCH_TEST_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args()
    segwatch = os.path.abspath(args.segwatch)
    if not shutil.which("prometheus"):
        sys.exit("FAIL: prometheus is not installed")

    work = tempfile.mkdtemp(prefix="segwatch-e2e-")
    db = f"segwatch_e2e_{os.getpid()}"
    base_url = args.admin_url.rsplit("/", 1)[0]
    db_url = f"{base_url}/{db}"
    subprocess.run(["psql", args.admin_url, "-qc", f"DROP DATABASE IF EXISTS {db}", "-c", f"CREATE DATABASE {db}"], check=True)
    processes = []
    failures = []
    try:
        port = free_port()
        # One job at a time, uploaded one by one: the detectors see the simulated
        # cases in the same order on every run.
        env = dict(os.environ, SEGWATCH_DATABASE_URL=db_url, SEGWATCH_LISTEN=f"127.0.0.1:{port}", SEGWATCH_REFRESH_SECS="2",
                   SEGWATCH_WORKER_CONCURRENCY="1", RUST_LOG="warn")
        subprocess.run([segwatch, "migrate"], env=env, check=True)
        admin = subprocess.run([segwatch, "keys", "create", "--role", "admin", "--label", "e2e"], env=env, check=True,
                               capture_output=True, text=True).stdout.strip()
        reader = subprocess.run([segwatch, "keys", "create", "--role", "read", "--label", "prometheus"], env=env, check=True,
                                capture_output=True, text=True).stdout.strip()
        serve_log = open(os.path.join(work, "segwatch.log"), "w")
        processes.append(subprocess.Popen([segwatch, "serve"], env=env, stdout=serve_log, stderr=serve_log))
        base = f"http://127.0.0.1:{port}"
        wait("segwatch ready", lambda: http(f"{base}/readyz"))

        # Prometheus with the repository's rules, scraping every 2 s.
        token = os.path.join(work, "token")
        with open(token, "w") as f:
            f.write(reader)
        prom_port = free_port()
        rules = [os.path.join(ROOT, "deploy/prometheus/rules", r) for r in ("recording.yml", "alerts.yml")]
        config = {
            "global": {"scrape_interval": "2s", "evaluation_interval": "2s"},
            "rule_files": rules,
            "scrape_configs": [{
                "job_name": "segwatch",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                "authorization": {"type": "Bearer", "credentials_file": token},
            }],
        }
        config_path = os.path.join(work, "prometheus.yml")
        with open(config_path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        prom_log = open(os.path.join(work, "prometheus.log"), "w")
        processes.append(subprocess.Popen(["prometheus", f"--config.file={config_path}", f"--storage.tsdb.path={work}/tsdb",
                                           f"--web.listen-address=127.0.0.1:{prom_port}"], stdout=prom_log, stderr=prom_log))
        prom = f"http://127.0.0.1:{prom_port}"
        wait("Prometheus ready", lambda: http(f"{prom}/-/ready"))

        started = time.time()
        subprocess.run([segwatch, "simulate", "--url", base, "--key", admin, "--sites", str(SITES), "--days", str(DAYS),
                        "--cases-per-day", str(PER_DAY), "--seed", str(SEED), "--drift-at", DRIFT, "--concurrency", "1"], check=True)
        total = SITES * DAYS * PER_DAY

        def all_scored():
            text = http(f"{base}/metrics", reader)
            return sum(v for _, v in metric_samples(text, "segwatch_cases_scored_total")) >= total
        wait(f"{total} cases scored", all_scored, timeout=600)
        print(f"simulated and scored {total} cases in {time.time() - started:.0f} s")
        time.sleep(5)  # a gauge refresh and two scrapes

        # The exposition passes promtool's lint.
        exposition = http(f"{base}/metrics", reader)
        lint = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
        if lint.returncode != 0 or lint.stdout.strip() or lint.stderr.strip():
            failures.append(f"promtool check metrics: {lint.stdout}{lint.stderr}")
        else:
            print("promtool check metrics: clean")

        # The drift alarm, from segwatch's own exposition.
        alarms = metric_samples(exposition, "segwatch_drift_alarm")
        raised = sorted((l["site"], l["structure"], l["detector"]) for l, v in alarms if v == 1)
        print("alarms raised:", raised)
        ewma = {(l["site"], l["structure"]): v for l, v in alarms if l["detector"] == "pit_ewma"}
        if ewma.get(("site2", "liver")) != 1:
            failures.append("the PIT-EWMA alarm did not rise for site2/liver")
        for (site, structure), value in ewma.items():
            drifted_data = site in ("site2", "all") and structure in ("liver", "all")
            if value == 1 and not drifted_data:
                failures.append(f"PIT-EWMA alarm for {site}/{structure}, which has no drifted cases")
        if not any(s != "all" and t != "all" for s, t in ewma):
            failures.append("no per-site structure streams were monitored")

        # The alert in Prometheus.
        def alert_state():
            query = 'ALERTS{alertname="SegwatchDiceDriftSite",site="site2",structure="liver"}'
            result = json.loads(http(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query})))["data"]["result"]
            states = {r["metric"].get("alertstate") for r in result}
            return states & {"pending", "firing"}
        print("alert SegwatchDiceDriftSite site2/liver:", wait("the drift alert in Prometheus", alert_state, timeout=60))

        # Every dashboard expression parses and returns data.
        exprs = subprocess.run([sys.executable, os.path.join(ROOT, "dashboards/validate/promql_exprs.py"),
                                "--var", "site=site2", "--var", "structure=liver", "--var", "model=simnet",
                                "--var", "model_version=1.0"], check=True, capture_output=True, text=True).stdout
        checked = empty = 0
        for line in exprs.splitlines():
            item = json.loads(line)
            try:
                answer = json.loads(http(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": item["expr"]})))
            except urllib.error.HTTPError as e:
                failures.append(f"{item['file']} / {item['panel']}: {e.read().decode()}")
                continue
            checked += 1
            if answer.get("status") != "success":
                failures.append(f"{item['file']} / {item['panel']}: {answer}")
            elif not answer["data"]["result"] and not item.get("sparse"):
                empty += 1
                failures.append(f"{item['file']} / {item['panel']}: no data for {item['expr']}")
        print(f"dashboard expressions: {checked} parsed, {empty} without data")
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        subprocess.run(["psql", args.admin_url, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"])
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        print(f"logs in {work}")
        sys.exit(1)
    shutil.rmtree(work, ignore_errors=True)
    print("monitoring end to end: OK")


if __name__ == "__main__":
    main()
