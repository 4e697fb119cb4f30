#!/usr/bin/env python3
"""End to end monitoring test: segwatch and Postgres running, a real Prometheus
scraping segwatch with the repository's rules loaded, `segwatch simulate` over 30
days at 3 sites with one drift injected (site3, liver, -0.10 Dice from day 20),
liver lesions in every case (their schema entry watches lesion_sensitivity, so
each site and the pool get lesion-sensitivity drift streams) and site3's predictions
sent with their probabilities.
Asserts that

  * `GET /v1/incidents?state=all` holds exactly one incident whose primary stream or
    evidence streams include site3/liver, opened (its case time `observed_at`) within
    3 days after the start of simulated day 20, still open, and no incident with a
    stream unrelated to the drift (related: site site3 or "all", structure liver or
    "all"; the pooled streams and the site mean contain the drifted cases);
  * /metrics exports that incident as segwatch_drift_incident_open and the
    false-alert budget gauges;
  * Prometheus shows SegwatchQualityIncidentSite (SegwatchQualityIncidentPooled if
    the primary stream is pooled) pending or firing for that incident, and no
    quality alert for any other incident;
  * /metrics counts site3's liver lesions, and has the rolling soft Dice and ECE of
    site3's structures and of no other site's;
  * every PromQL expression of the dashboards parses and returns data.

Usage: monitoring.py --segwatch target/debug/segwatch [--admin-url postgres://...]
Needs `prometheus` on PATH (Debian package). Python standard library only.
"""
import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIFT_DAY, DRIFT_SITE, DRIFT_STRUCTURE = 20, "site3", "liver"
DRIFT = f"day{DRIFT_DAY}:{DRIFT_SITE}:{DRIFT_STRUCTURE}:0.10"
# Lesions in every case; probabilities from the drifted site, whose panels the
# dashboard check shows.
LESIONS, LESION_SHARE, PROBABILITIES_SITE = "liver_lesion", 1, DRIFT_SITE
SITES, DAYS, PER_DAY, SEED = 3, 30, 8, 1
# The drift detectors are fed in case-time order once results are this old (s).
LATENESS_SECS = 2
# The incident must open (case time) at most this long after the drift starts.
DETECTION_WINDOW = dt.timedelta(days=3)
QUALITY_ALERTS = ("SegwatchQualityIncidentPooled", "SegwatchQualityIncidentSite")


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


def metric_values(text, name):
    """Values of a metric without labels in a text exposition."""
    return [float(line.split()[1]) for line in text.splitlines()
            if line.startswith(name + " ") or line.startswith(name + "\t")]


def parse_time(value):
    """An RFC 3339 timestamp (Z or offset, any fraction digits) as an aware datetime."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", value.strip())
    if not m:
        raise ValueError(f"not an RFC 3339 timestamp: {value!r}")
    offset = "+00:00" if m.group(3) == "Z" else m.group(3)
    fraction = f".{(m.group(2) or '0')[:6]:0<6}"
    return dt.datetime.fromisoformat(m.group(1) + fraction + offset)


def related(site, structure):
    """A stream that contains the drifted cases (or is the drifted stream)."""
    return site in (DRIFT_SITE, "all") and structure in (DRIFT_STRUCTURE, "all")


def incident_streams(incident):
    """(site, structure) of the primary stream and of every evidence stream."""
    streams = {(incident["site"], incident["structure"])}
    streams |= {(s["site"], s["structure"]) for s in incident.get("streams") or []}
    return streams


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
                   SEGWATCH_WORKER_CONCURRENCY="1", SEGWATCH_DRIFT_LATENESS_SECS=str(LATENESS_SECS), RUST_LOG="warn")
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
        # simulate puts its first case at (its own start) - DAYS days, and day k starts
        # k days later; the few seconds simulate takes to start do not matter here.
        day_start = (dt.datetime.fromtimestamp(started, dt.timezone.utc) - dt.timedelta(days=DAYS)
                     + dt.timedelta(days=DRIFT_DAY))
        subprocess.run([segwatch, "simulate", "--url", base, "--key", admin, "--sites", str(SITES), "--days", str(DAYS),
                        "--cases-per-day", str(PER_DAY), "--seed", str(SEED), "--drift-at", DRIFT, "--concurrency", "1",
                        "--lesions", str(LESION_SHARE), "--probabilities-at", PROBABILITIES_SITE], check=True)
        total = SITES * DAYS * PER_DAY

        def all_scored():
            text = http(f"{base}/metrics", reader)
            return sum(v for _, v in metric_samples(text, "segwatch_cases_scored_total")) >= total
        wait(f"{total} cases scored", all_scored, timeout=1800)
        print(f"simulated and scored {total} cases in {time.time() - started:.0f} s")
        # The drift feeder takes results once they are LATENESS_SECS old; then a gauge
        # refresh and two scrapes.
        time.sleep(LATENESS_SECS + 6)

        # The exposition passes promtool's lint.
        exposition = http(f"{base}/metrics", reader)
        lint = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True, text=True)
        findings = [line for line in (lint.stdout + lint.stderr).splitlines() if line.strip()]
        if findings or lint.returncode != 0:
            failures.append(f"promtool check metrics: {lint.stdout}{lint.stderr}")
        else:
            print("promtool check metrics: clean")

        # Lesions and probabilistic scores, from segwatch's own exposition.
        lesions = [v for l, v in metric_samples(exposition, "segwatch_lesions_reference_total")
                   if l["site"] == PROBABILITIES_SITE and l["structure"] == LESIONS]
        detected = [v for l, v in metric_samples(exposition, "segwatch_lesions_detected_total")
                    if l["site"] == PROBABILITIES_SITE and l["structure"] == LESIONS]
        print(f"{PROBABILITIES_SITE} {LESIONS}: {sum(detected):g} of {sum(lesions):g} reference lesions detected")
        if not 0 < sum(detected) < sum(lesions):
            failures.append(f"/metrics: {sum(detected)} of {sum(lesions)} lesions detected at {PROBABILITIES_SITE}, "
                            f"want some but not all")
        for family in ("segwatch_rolling_soft_dice_7d_ratio", "segwatch_rolling_ece_7d_ratio"):
            sites = {l["site"] for l, _ in metric_samples(exposition, family)}
            structures = {l["structure"] for l, _ in metric_samples(exposition, family) if l["site"] == PROBABILITIES_SITE}
            print(f"{family}: sites {sorted(sites)}, {len(structures)} structures at {PROBABILITIES_SITE}")
            if sites != {PROBABILITIES_SITE, "all"} or DRIFT_STRUCTURE not in structures or LESIONS not in structures:
                failures.append(f"/metrics: {family} for sites {sorted(sites)} and {sorted(structures)}, want "
                                f"{PROBABILITIES_SITE} (and all) with {DRIFT_STRUCTURE} and {LESIONS}")

        # Detector state, from segwatch's own exposition (reported, not asserted: related
        # streams may alarm as evidence of the incident).
        alarms = metric_samples(exposition, "segwatch_drift_alarm")
        raised = sorted((l["site"], l["structure"], l["detector"]) for l, v in alarms if v == 1)
        print("detectors in alarm:", raised)
        if not any(l["site"] != "all" and l["structure"] != "all" for l, _ in alarms):
            failures.append("no per-site structure streams were monitored")
        for name in ("segwatch_drift_false_alert_budget_per_month", "segwatch_drift_streams_active",
                     "segwatch_drift_target_run_length_seconds"):
            values = metric_values(exposition, name)
            if len(values) != 1 or not values[0] > 0:
                failures.append(f"/metrics: {name} is {values or 'missing'}, want one positive value")
            else:
                print(f"{name} = {values[0]:g}")

        # The incidents, from segwatch's API.
        def incidents_now():
            answer = json.loads(http(f"{base}/v1/incidents?state=all", admin))
            if not isinstance(answer, list):
                raise ValueError(f"GET /v1/incidents: not a JSON array: {answer!r}")
            return answer

        try:
            incidents_now()
        except (urllib.error.URLError, ValueError) as e:
            sys.exit(f"FAIL: GET /v1/incidents?state=all: {e}")
        # Give the drift feeder up to a minute more; the checks below report what is there.
        deadline = time.time() + 60
        while (not any((DRIFT_SITE, DRIFT_STRUCTURE) in incident_streams(i) for i in incidents_now())
               and time.time() < deadline):
            time.sleep(1)
        time.sleep(3)  # let any other incident of the last detector updates show up too
        incidents = incidents_now()
        for i in incidents:
            print(f"incident {i['id']}: primary {i['site']}/{i['structure']} {i['detector']}, observed {i['observed_at']}, "
                  f"resolved {i.get('resolved_at')}, streams "
                  f"{sorted((s['site'], s['structure'], s['detector']) for s in i.get('streams') or [])}")
        matching = [i for i in incidents if (DRIFT_SITE, DRIFT_STRUCTURE) in incident_streams(i)]
        if len(matching) != 1:
            failures.append(f"{len(matching)} incidents include {DRIFT_SITE}/{DRIFT_STRUCTURE}, want exactly 1: "
                            f"{[i['id'] for i in matching]}")
        for i in incidents:
            unrelated = sorted(st for st in incident_streams(i) if not related(*st))
            if unrelated:
                failures.append(f"incident {i['id']} covers streams without drifted cases: {unrelated}")
        incident = matching[0] if len(matching) == 1 else None
        if incident is not None:
            observed = parse_time(incident["observed_at"])
            delay = observed - day_start
            print(f"incident {incident['id']} opened {delay.total_seconds() / 86400:.2f} days (case time) "
                  f"after the drift started on day {DRIFT_DAY}")
            if not dt.timedelta(0) <= delay <= DETECTION_WINDOW:
                failures.append(f"incident {incident['id']} observed at {incident['observed_at']}, want within "
                                f"{DETECTION_WINDOW.days} days after the start of day {DRIFT_DAY} ({day_start.isoformat()})")
            if incident.get("resolved_at"):
                failures.append(f"incident {incident['id']} resolved at {incident['resolved_at']} although the drift "
                                f"is still running")
                incident = None

        if incident is not None:
            # The incident on /metrics, labelled with its primary stream and detector.
            want = {k: str(incident[k]) for k in ("id", "site", "model", "model_version", "structure", "detector")}
            want["incident"] = want.pop("id")
            exposition = http(f"{base}/metrics", reader)
            series = [l for l, v in metric_samples(exposition, "segwatch_drift_incident_open") if v == 1]
            if not any(all(l.get(k) == v for k, v in want.items()) for l in series):
                failures.append(f"/metrics: no segwatch_drift_incident_open{want} == 1 (got {series})")

            # The alert in Prometheus.
            alertname = QUALITY_ALERTS[0] if incident["site"] == "all" else QUALITY_ALERTS[1]

            def alert_state():
                query = f'ALERTS{{alertname="{alertname}",incident="{incident["id"]}"}}'
                result = json.loads(http(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query})))["data"]["result"]
                states = {r["metric"].get("alertstate") for r in result}
                return states & {"pending", "firing"}
            print(f"alert {alertname} for incident {incident['id']}:",
                  wait("the incident alert in Prometheus", alert_state, timeout=90))
            query = 'ALERTS{alertname=~"SegwatchQualityIncident.*"}'
            result = json.loads(http(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": query})))["data"]["result"]
            others = sorted({(r["metric"]["alertname"], r["metric"].get("incident"), r["metric"].get("alertstate"))
                             for r in result if r["metric"].get("incident") != str(incident["id"])})
            if others:
                # Other incidents are checked above (related streams only); an alert
                # must still belong to an incident segwatch knows.
                print("quality alerts for other incidents:", others)
                known = {str(i["id"]) for i in incidents}
                for name, other, _ in others:
                    if other not in known:
                        failures.append(f"{name} for incident {other}, which GET /v1/incidents does not list")

        # Every dashboard expression parses and returns data.
        exprs = subprocess.run([sys.executable, os.path.join(ROOT, "dashboards/validate/promql_exprs.py"),
                                "--var", f"site={DRIFT_SITE}", "--var", f"structure={DRIFT_STRUCTURE}", "--var", "model=simnet",
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
