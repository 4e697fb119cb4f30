#!/usr/bin/env python3
"""Static checks of the deploy/ and dashboards/ files that no other tool covers.

  compose      deploy/docker-compose.yml parses, has the five services, and every
               file or directory it mounts or builds from exists in the repository
  grafana      provisioning YAML parses; datasource uids match the ones the
               dashboards use; the dashboard provider points at the mount path
  dockerfile   multi-stage build, cargo build --release --locked, non-root user,
               EXPOSE 8080, ENTRYPOINT/CMD
  contract     every metric and label used by the rules and dashboards is in the
               segwatch metric contract (or a recording rule defined here)
  coverage     the promtool unit tests have, for every alert, a case where it fires
               and one where it does not, and test every recording rule; every alert
               has an Alertmanager route test, and every segwatch alert name used in
               alertmanager.yml, route-tests.txt or inhibition_test.py exists

Usage: check_static.py [compose|grafana|dockerfile|contract|coverage ...]   (default: all)
Needs PyYAML.  Exit code 0 when every selected check passes.
"""
import glob
import json
import os
import re
import subprocess
import sys

import yaml

DEPLOY = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DEPLOY)
DASHBOARDS = os.path.join(ROOT, "dashboards")

# ---- the metric contract of segwatch's GET /metrics --------------------------------
def load_contract():
    """Metric names from deploy/metric-contract.txt (checked against the registry by
    a unit test), histograms with their _bucket, _sum and _count series; and the
    histograms."""
    names, histograms = set(), set()
    with open(os.path.join(DEPLOY, "metric-contract.txt")) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                histograms.add(name)
                names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names, histograms


CONTRACT_METRICS, CONTRACT_HISTOGRAMS = load_contract()
PROMETHEUS_METRICS = {"up", "ALERTS"}
CONTRACT_LABELS = {"site", "model", "model_version", "structure", "detector", "incident", "role",
                   "reason", "route", "version", "band", "metric"}
# Labels Prometheus itself adds: le (histograms), job/instance (targets),
# alertname/alertstate (ALERTS).  site_version is computed by label_join in a query.
OTHER_LABELS = {"le", "job", "instance", "alertname", "alertstate", "site_version"}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan",
    # functions and aggregations used anywhere
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group",
    "count_values", "rate", "irate", "increase", "delta", "idelta", "deriv", "histogram_quantile",
    "label_join", "label_replace", "time", "timestamp", "vector", "scalar", "sort", "sort_desc",
    "absent", "absent_over_time", "count_over_time", "min_over_time", "max_over_time",
    "avg_over_time", "sum_over_time", "last_over_time", "abs", "clamp_min", "clamp_max", "round",
}


def load_yaml(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


class Result:
    def __init__(self, name):
        self.name, self.errors, self.notes = name, [], []

    def err(self, msg):
        self.errors.append(msg)

    def note(self, msg):
        self.notes.append(msg)


# ---- compose ------------------------------------------------------------------------
def check_compose(r):
    path = os.path.join(DEPLOY, "docker-compose.yml")
    doc = load_yaml(path)
    services = doc.get("services", {})
    for s in ("segwatch-init", "segwatch", "postgres", "prometheus", "alertmanager", "grafana"):
        if s not in services:
            r.err(f"service {s} missing")
    # The keys Prometheus and Alertmanager read are written by segwatch-init, which
    # every service that needs them waits for.
    init = services.get("segwatch-init", {})
    if init.get("entrypoint") != ["/bin/sh", "/bootstrap.sh"]:
        r.err("segwatch-init: entrypoint is not /bin/sh /bootstrap.sh")
    mounts = {str(v).split(":")[1]: str(v).split(":")[0] for v in init.get("volumes", [])}
    for inside, outside in (("/bootstrap.sh", "./bootstrap.sh"), ("/secrets/prometheus", "./prometheus/secrets"),
                            ("/secrets/alertmanager", "./alertmanager/secrets")):
        if mounts.get(inside) != outside:
            r.err(f"segwatch-init: {outside} is not mounted at {inside}")
    for name in ("segwatch", "prometheus", "alertmanager"):
        deps = services.get(name, {}).get("depends_on") or {}
        if not isinstance(deps, dict) or deps.get("segwatch-init", {}).get("condition") != "service_completed_successfully":
            r.err(f"{name}: does not wait for segwatch-init to complete")
    seg = services.get("segwatch", {})
    env = seg.get("environment", {})
    if env.get("SEGWATCH_DATABASE_URL") != "postgres://segwatch:segwatch@postgres:5432/segwatch":
        r.err("segwatch: SEGWATCH_DATABASE_URL is not postgres://segwatch:segwatch@postgres:5432/segwatch")
    if env.get("SEGWATCH_LISTEN") != "0.0.0.0:8080":
        r.err("segwatch: SEGWATCH_LISTEN is not 0.0.0.0:8080")
    build = seg.get("build", {})
    ctx = os.path.normpath(os.path.join(DEPLOY, build.get("context", ".")))
    if ctx != ROOT:
        r.err(f"segwatch: build context {ctx} is not the repository root")
    if not os.path.isfile(os.path.join(ctx, build.get("dockerfile", "Dockerfile"))):
        r.err("segwatch: Dockerfile not found")
    pg = services.get("postgres", {})
    if not str(pg.get("image", "")).startswith("postgres:16"):
        r.err("postgres: image is not postgres:16")
    if "healthcheck" not in pg:
        r.err("postgres: no healthcheck")
    if not any(str(v).endswith(":/var/lib/postgresql/data") for v in pg.get("volumes", [])):
        r.err("postgres: no data volume")
    named = set((doc.get("volumes") or {}).keys())
    for name, svc in services.items():
        if "image" not in svc and "build" not in svc:
            r.err(f"{name}: neither image nor build")
        for dep in (svc.get("depends_on") or {}):
            if dep not in services:
                r.err(f"{name}: depends_on unknown service {dep}")
        for vol in svc.get("volumes", []):
            src = str(vol).split(":")[0]
            if src.startswith((".", "/")):
                full = os.path.normpath(os.path.join(DEPLOY, src))
                if not os.path.exists(full):
                    r.err(f"{name}: mounted path {src} does not exist")
            elif src not in named:
                r.err(f"{name}: named volume {src} not declared")
    r.note(f"{len(services)} services: {', '.join(sorted(services))}")


# ---- grafana provisioning -----------------------------------------------------------
def dashboards():
    out = {}
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path, encoding="utf-8") as fh:
            out[os.path.basename(path)] = json.load(fh)
    return out


def used_datasource_uids(dash):
    uids = set()

    def walk(x):
        if isinstance(x, dict):
            ds = x.get("datasource")
            if isinstance(ds, dict) and "uid" in ds:
                uids.add(ds["uid"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
    walk(dash)
    return uids


def check_grafana(r):
    prov = os.path.join(DEPLOY, "grafana", "provisioning")
    ds_files = sorted(glob.glob(os.path.join(prov, "datasources", "*.yml")))
    db_files = sorted(glob.glob(os.path.join(prov, "dashboards", "*.yml")))
    if not ds_files or not db_files:
        r.err("provisioning files missing")
        return
    provisioned = {}
    for f in ds_files:
        for ds in load_yaml(f).get("datasources", []):
            provisioned[ds.get("uid")] = ds
    want = {"prometheus": ("prometheus", "http://prometheus:9090"),
            "segwatch-postgres": ("grafana-postgresql-datasource", "postgres:5432")}
    for uid, (typ, url) in want.items():
        ds = provisioned.get(uid)
        if not ds:
            r.err(f"datasource uid {uid} not provisioned")
            continue
        if ds.get("type") != typ or ds.get("url") != url:
            r.err(f"datasource {uid}: type/url {ds.get('type')} {ds.get('url')}, want {typ} {url}")
    pg = provisioned.get("segwatch-postgres", {})
    if (pg.get("jsonData") or {}).get("database") != "segwatch":
        r.err("segwatch-postgres: database is not segwatch")
    for f in db_files:
        for p in load_yaml(f).get("providers", []):
            if (p.get("options") or {}).get("path") != "/var/lib/grafana/dashboards":
                r.err(f"{os.path.basename(f)}: provider {p.get('name')} does not read /var/lib/grafana/dashboards")
    compose = load_yaml(os.path.join(DEPLOY, "docker-compose.yml"))
    mounts = [str(v) for v in compose["services"]["grafana"].get("volumes", [])]
    for name, dash in dashboards().items():
        unknown = used_datasource_uids(dash) - set(provisioned) - {"-- Grafana --"}
        if unknown:
            r.err(f"{name}: uses datasource uid(s) not provisioned: {sorted(unknown)}")
        if not any(m.startswith(f"../dashboards/{name}:/var/lib/grafana/dashboards/") for m in mounts):
            r.err(f"{name}: not mounted into the grafana container")
    r.note(f"datasources {sorted(provisioned)}; {len(dashboards())} dashboards mounted")


# ---- Dockerfile ------------------------------------------------------------------------
def check_dockerfile(r):
    text = open(os.path.join(DEPLOY, "Dockerfile"), encoding="utf-8").read()
    froms = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    if len(froms) < 2 or not froms[0][0].startswith("rust:1-bookworm") or froms[-1][0] != "debian:bookworm-slim":
        r.err(f"stages {froms}: want rust:1-bookworm builder and debian:bookworm-slim runtime")
    for needle, what in [
        (r"cargo build --release --locked", "cargo build --release --locked"),
        (r"^USER\s+(?!root)\S+", "non-root USER"),
        (r"^EXPOSE\s+8080\b", "EXPOSE 8080"),
        (r'^ENTRYPOINT\s+\["segwatch"\]', 'ENTRYPOINT ["segwatch"]'),
        (r'^CMD\s+\["serve"\]', 'CMD ["serve"]'),
        (r"ca-certificates", "ca-certificates"),
        (r"^HEALTHCHECK .*?/healthz", "HEALTHCHECK on /healthz"),
    ]:
        if not re.search(needle, text, re.M | re.S):
            r.err(f"Dockerfile: no {what}")
    healthcheck = re.search(r"^HEALTHCHECK(?:.*\\\n)*.*$", text, re.M)
    runtime = text[text.rfind("FROM "):]
    if healthcheck and "curl" in healthcheck.group(0):
        if not re.search(r"apt-get install[^\n]*\bcurl\b", runtime):
            r.err("Dockerfile: HEALTHCHECK uses curl but the runtime stage does not install it")
    r.note(f"stages: {', '.join(f[1] or f[0] for f in froms)}")


# ---- metric contract ---------------------------------------------------------------------
def strip_strings(expr):
    return re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)


def names_in(expr):
    """Metric names and label names used by a PromQL expression (roughly, but
    good enough for the expressions in this repository)."""
    e = strip_strings(expr)
    e = re.sub(r"\[[^\]]*\]", "", e)  # range and subquery selectors
    labels = set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*\"", e))
    for group in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e):
        labels |= {x.strip() for x in group.split(",") if x.strip()}
    # label_join / label_replace arguments are strings (already blanked)
    e_no_groups = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e_no_groups = re.sub(r"\{[^}]*\}", " ", e_no_groups)
    idents = set(re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)", e_no_groups))
    metrics = {i for i in idents if i.lower() not in PROMQL_KEYWORDS and not re.fullmatch(r"\d.*", i)}
    return metrics, labels


def expressions():
    """(where, expr) for every rule expression and dashboard query."""
    out = []
    records = set()
    for f in sorted(glob.glob(os.path.join(DEPLOY, "prometheus", "rules", "*.yml"))):
        for g in load_yaml(f).get("groups", []):
            for rule in g.get("rules", []):
                name = rule.get("record") or rule.get("alert")
                if "record" in rule:
                    records.add(rule["record"])
                out.append((f"{os.path.basename(f)}:{name}", rule["expr"]))
                for k, v in (rule.get("annotations") or {}).items():
                    for q in re.findall(r'printf\s+"((?:[^"\\]|\\.)*)"', v) + re.findall(r'query\s+"((?:[^"\\]|\\.)*)"', v):
                        q = q.encode().decode("unicode_escape")
                        out.append((f"{os.path.basename(f)}:{name}:annotation {k}", re.sub(r"%q", '"x"', q)))
    tool = os.path.join(DASHBOARDS, "validate", "promql_exprs.py")
    proc = subprocess.run([sys.executable, tool, "--include-variables"], capture_output=True, text=True, check=True)
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        out.append((f"{d['file']}:{d.get('panel') or d.get('variable')}:{d.get('ref_id', '')}", d["expr"]))
    return out, records


def check_contract(r):
    exprs, records = expressions()
    allowed_metrics = CONTRACT_METRICS | PROMETHEUS_METRICS | records
    allowed_labels = CONTRACT_LABELS | OTHER_LABELS
    used_metrics, used_labels = set(), set()
    for where, expr in exprs:
        metrics, labels = names_in(expr)
        used_metrics |= metrics
        used_labels |= labels
        for m in sorted(metrics - allowed_metrics):
            r.err(f"{where}: metric {m} is not in the contract")
        for lab in sorted(labels - allowed_labels):
            r.err(f"{where}: label {lab} is not in the contract")
    unused = sorted(CONTRACT_METRICS - used_metrics -
                    {h + s for h in CONTRACT_HISTOGRAMS for s in ("_sum", "_count", "_bucket")})
    r.note(f"{len(exprs)} expressions, {len(used_metrics - records)} contract metrics, "
           f"{len(used_metrics & records)} recording rules, labels {sorted(used_labels)}"
           + (f"; contract metrics not used anywhere: {unused}" if unused else ""))


# ---- unit-test coverage ----------------------------------------------------------------
def check_coverage(r):
    alerts, records = set(), set()
    for f in sorted(glob.glob(os.path.join(DEPLOY, "prometheus", "rules", "*.yml"))):
        for g in load_yaml(f).get("groups", []):
            for rule in g.get("rules", []):
                if "alert" in rule:
                    alerts.add(rule["alert"])
                else:
                    records.add(rule["record"])
    fires, silent, tested_records = set(), set(), set()
    for f in sorted(glob.glob(os.path.join(DEPLOY, "prometheus", "tests", "*.yml"))):
        for t in load_yaml(f).get("tests", []):
            for a in t.get("alert_rule_test", []):
                (fires if a.get("exp_alerts") else silent).add(a["alertname"])
            for e in t.get("promql_expr_test", []):
                tested_records |= {rec for rec in records if re.search(rf"(?<![\w:]){re.escape(rec)}(?![\w:])", e["expr"])}
    for a in sorted(alerts - fires):
        r.err(f"alert {a}: no test where it fires")
    for a in sorted(alerts - silent):
        r.err(f"alert {a}: no test where it does not fire")
    for a in sorted((fires | silent) - alerts):
        r.err(f"test refers to unknown alert {a}")
    for rec in sorted(records - tested_records):
        r.err(f"recording rule {rec}: not tested")

    # Alertmanager files follow the alert names of the rules.
    am = os.path.join(DEPLOY, "alertmanager")
    routed = set()
    with open(os.path.join(am, "route-tests.txt"), encoding="utf-8") as fh:
        for line in fh:
            routed |= set(re.findall(r"\balertname=(\S+)", line.split("#", 1)[0]))
    for a in sorted(alerts - routed):
        r.err(f"alert {a}: no line in alertmanager/route-tests.txt")
    mentioned = {}
    for name in ("alertmanager.yml", "route-tests.txt", "inhibition_test.py"):
        with open(os.path.join(am, name), encoding="utf-8") as fh:
            for a in re.findall(r"\b(Segwatch[A-Za-z]+)\b", fh.read()):
                mentioned.setdefault(a, name)
    for a, name in sorted(mentioned.items()):
        if a not in alerts:
            r.err(f"alertmanager/{name}: refers to unknown alert {a}")
    r.note(f"{len(alerts)} alerts fire and stay silent in tests and have route tests, "
           f"{len(tested_records)}/{len(records)} recording rules tested")


CHECKS = {"compose": check_compose, "grafana": check_grafana, "dockerfile": check_dockerfile,
          "contract": check_contract, "coverage": check_coverage}


def main(argv):
    names = argv or list(CHECKS)
    failed = 0
    for name in names:
        r = Result(name)
        try:
            CHECKS[name](r)
        except Exception as e:  # a parse error is a failed check, not a crash
            r.err(f"{type(e).__name__}: {e}")
        status = "FAIL" if r.errors else "ok"
        print(f"{name}: {status}" + (f" ({'; '.join(r.notes)})" if r.notes and not r.errors else ""))
        for e in r.errors:
            print(f"  {e}")
        failed += bool(r.errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
