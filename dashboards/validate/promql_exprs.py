#!/usr/bin/env python3
"""Print every PromQL expression of the segwatch dashboards as JSON lines.

For each Prometheus query of each panel (targets[].expr of panels whose datasource,
or the target's own, is Prometheus) one JSON object is printed:

  {"file": "fleet-overview.json", "dashboard": "...", "dashboard_uid": "...",
   "panel": "...", "panel_id": 3, "ref_id": "A", "instant": true, "range": false,
   "expr": "<ready to send to Prometheus>", "raw_expr": "<as in the dashboard>"}

so that an end-to-end test can send each `expr` to a real Prometheus
(/api/v1/query or /api/v1/query_range) and assert that it parses and returns data.
"sparse": true marks queries over series that exist only after something happened
(ALERTS, segwatch_jobs_failed_total, segwatch_drift_incident_open and
segwatch_drift_metric_incident_open) and have no `or vector(...)` fallback: those may
return no data on a quiet system. The lesion counters, the rolling soft Dice and ECE
and the other metrics' detector families are not sparse: the end-to-end fleet
(`simulate --lesions 1 --probabilities-at site3`) always has them (its liver_lesion
watches lesion_sensitivity).

Template variables ($var, ${var}, ${var:format}, [[var]]) are replaced by
  - the value given with --var NAME=VALUE (repeatable; VALUE may be a comma-separated
    list for multi-value variables), or
  - the regex `.*` otherwise (any value).
Inside a label matcher a regex value turns `=` into `=~` (and `!=` into `!~`), so
`site="$site"` becomes `site=~".*"`; concrete values used in a regex matcher are
regex-escaped like Grafana does (several values become (a|b)).
Grafana's built-in variables are replaced by durations: $__rate_interval (default
1m), $__interval / $__auto (default 1m; a panel's or query's minimum interval wins
when larger, as in Grafana), $__range (default 5m), and $__range_s / $__range_ms /
$__interval_ms accordingly.

Usage:
  promql_exprs.py [--var site=hosp-a --var structure=liver] [--range 1h]
                  [--rate-interval 1m] [--interval 1m] [--include-variables]
                  [--strict] [DASHBOARD.json ...]        (default: ../*.json)

--include-variables also prints the label_values(...) queries of the dashboards'
query variables, as `group by (label) (selector)` expressions (kind "variable").
--strict exits 1 if an expression still contains a variable reference after
substitution.  Python standard library only.
"""
import argparse
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# ${var}, ${var:fmt}, [[var]], [[var:fmt]], $var
VAR_RE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\[\[(\w+)(?::[^\]]*)?\]\]|\$(\w+)")
# a label matcher with a double-quoted value
MATCHER_RE = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)$")
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
RE2_SPECIAL = set("\\.+*?()|[]{}^$")
# Series that exist only once something happened (an alert fired, a job failed, a
# drift incident is open): a query over them may legitimately return no data on a
# healthy, quiet system, unless it falls back to a constant (`or vector(0)`).
SPARSE_METRICS = (
    "ALERTS",
    "segwatch_jobs_failed_total",
    "segwatch_drift_incident_open",
    "segwatch_drift_metric_incident_open",
)
FALLBACK_RE = re.compile(r"\bor\s+vector\s*\(")


def seconds(d):
    m = DURATION_RE.match(str(d).strip())
    if not m:
        raise ValueError(f"not a duration: {d!r}")
    return float(m.group(1)) * UNIT_S[m.group(2)]


def duration(s):
    """Seconds -> the largest exact Prometheus duration unit."""
    s = int(round(s))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def regex_escape(value):
    """Escape a literal for RE2, then for a PromQL double-quoted string."""
    esc = "".join("\\" + c if c in RE2_SPECIAL else c for c in value)
    return esc.replace("\\", "\\\\").replace('"', '\\"')


def unquote(body):
    """Undo PromQL string escapes (\\x -> x) of a matcher value fragment."""
    return re.sub(r"\\(.)", r"\1", body)


class Substituter:
    def __init__(self, values, builtins):
        self.values = values          # name -> list of values (from --var)
        self.builtins = builtins      # name -> string
        self.unresolved = []

    def _ref_name(self, m):
        return m.group(1) or m.group(2) or m.group(3)

    def in_matcher(self, op, body):
        """Substitute inside a matcher value; return (op, body)."""
        regex_needed = False

        def repl(m):
            nonlocal regex_needed
            name = self._ref_name(m)
            if name in self.builtins:
                return self.builtins[name]
            vals = self.values.get(name)
            if vals is None:
                regex_needed = True
                return ".*"
            if op in ("=~", "!~"):
                esc = [regex_escape(v) for v in vals]
                return esc[0] if len(esc) == 1 else "(" + "|".join(esc) + ")"
            if len(vals) == 1:
                return vals[0]
            regex_needed = True
            return "(" + "|".join(regex_escape(v) for v in vals) + ")"

        new_body = VAR_RE.sub(repl, body)
        if regex_needed and op in ("=", "!="):
            # a regex value in an equality matcher: switch to a regex matcher and
            # escape the literal parts of the value so they still match literally
            new_body = self._regexify(body)
            op = "=~" if op == "=" else "!~"
        return op, new_body

    def _regexify(self, body):
        out, pos = [], 0
        for m in VAR_RE.finditer(body):
            out.append(regex_escape(unquote(body[pos:m.start()])))
            name = self._ref_name(m)
            if name in self.builtins:
                out.append(self.builtins[name])
            else:
                vals = self.values.get(name)
                out.append(".*" if vals is None else
                           "(" + "|".join(regex_escape(v) for v in vals) + ")")
            pos = m.end()
        out.append(regex_escape(unquote(body[pos:])))
        return "".join(out)

    def elsewhere(self, text):
        def repl(m):
            name = self._ref_name(m)
            if name in self.builtins:
                return self.builtins[name]
            vals = self.values.get(name)
            if vals is None:
                self.unresolved.append(name)
                return m.group(0)
            return vals[0] if len(vals) == 1 else "(" + "|".join(vals) + ")"
        return VAR_RE.sub(repl, text)

    def expr(self, text):
        def matcher(m):
            label, op, body = m.group(1), m.group(2), m.group(3)
            if not VAR_RE.search(body):
                return m.group(0)
            op, body = self.in_matcher(op, body)
            return f'{label}{op}"{body}"'
        return self.elsewhere(MATCHER_RE.sub(matcher, text))


def is_prometheus(ds, dashboard_prom_vars):
    if ds is None:
        return None
    if isinstance(ds, str):  # legacy: datasource name
        return ds.lower().startswith("prometheus") or None
    if ds.get("type") == "prometheus" or ds.get("uid") == "prometheus":
        return True
    uid = str(ds.get("uid", ""))
    m = VAR_RE.fullmatch(uid)
    if m and (m.group(1) or m.group(2) or m.group(3)) in dashboard_prom_vars:
        return True
    return False


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        for q in p.get("panels", []) or []:
            yield q


def builtins_for(args, *min_intervals):
    interval = seconds(args.interval)
    for mi in min_intervals:
        if mi and not VAR_RE.search(str(mi)):
            try:
                interval = max(interval, seconds(mi))
            except ValueError:
                pass
    rate_interval = max(seconds(args.rate_interval), interval)
    rng = seconds(args.range)
    return {
        "__interval": duration(interval), "__auto": duration(interval),
        "__interval_ms": str(int(interval * 1000)),
        "__rate_interval": duration(rate_interval),
        "__range": duration(rng), "__range_s": str(int(rng)), "__range_ms": str(int(rng * 1000)),
    }


LABEL_VALUES_RE = re.compile(r"^\s*label_values\(\s*(.*?)\s*,\s*(\w+)\s*\)\s*$", re.S)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    ap.add_argument("--range", default="5m")
    ap.add_argument("--rate-interval", default="1m")
    ap.add_argument("--interval", default="1m")
    ap.add_argument("--include-variables", action="store_true")
    ap.add_argument("--strict", action="store_true")
    args = ap.parse_args(argv)

    values = {}
    for item in args.var:
        name, sep, value = item.partition("=")
        if not sep or not name:
            ap.error(f"--var wants NAME=VALUE, got {item!r}")
        values[name.lstrip("$")] = [v for v in value.split(",")] if value else [""]

    files = args.files or sorted(glob.glob(os.path.join(HERE, "..", "*.json")))
    if not files:
        ap.error("no dashboard files")
    unresolved_total = 0
    for path in files:
        with open(path, encoding="utf-8") as fh:
            dash = json.load(fh)
        prom_ds_vars = {v.get("name") for v in dash.get("templating", {}).get("list", [])
                        if v.get("type") == "datasource" and v.get("query") == "prometheus"}
        base = {"file": os.path.basename(path), "dashboard": dash.get("title"),
                "dashboard_uid": dash.get("uid")}

        if args.include_variables:
            for v in dash.get("templating", {}).get("list", []):
                if v.get("type") != "query" or not is_prometheus(v.get("datasource"), prom_ds_vars):
                    continue
                q = v.get("query")
                q = q.get("query") if isinstance(q, dict) else q
                m = LABEL_VALUES_RE.match(q or "")
                if not m:
                    continue
                sub = Substituter(values, builtins_for(args))
                expr = sub.expr(f"group by ({m.group(2)}) ({m.group(1)})")
                unresolved_total += len(sub.unresolved)
                print(json.dumps({**base, "kind": "variable", "variable": v.get("name"),
                                  "instant": True, "range": False, "expr": expr, "raw_expr": q,
                                  "unresolved": sorted(set(sub.unresolved))}))

        for p in panels_of(dash):
            if p.get("type") == "row":
                continue
            panel_ds = is_prometheus(p.get("datasource"), prom_ds_vars)
            for t in p.get("targets", []) or []:
                if "expr" not in t or t.get("hide"):
                    continue
                t_ds = is_prometheus(t.get("datasource"), prom_ds_vars)
                prom = t_ds if t_ds is not None else panel_ds
                if prom is False:
                    continue
                sub = Substituter(values, builtins_for(args, p.get("interval"), t.get("interval")))
                expr = sub.expr(t["expr"])
                title = Substituter(values, sub.builtins).elsewhere(p.get("title", ""))
                unresolved_total += len(sub.unresolved)
                print(json.dumps({
                    **base, "kind": "panel", "panel": title, "panel_id": p.get("id"),
                    "panel_type": p.get("type"), "ref_id": t.get("refId"),
                    "instant": bool(t.get("instant")), "range": bool(t.get("range", not t.get("instant"))),
                    "format": t.get("format", "time_series"),
                    "expr": expr, "raw_expr": t["expr"], "unresolved": sorted(set(sub.unresolved)),
                    "sparse": any(re.search(rf"\b{m}\b", expr) for m in SPARSE_METRICS)
                              and not FALLBACK_RE.search(expr),
                }))
    if args.strict and unresolved_total:
        print(f"promql_exprs: {unresolved_total} variable reference(s) left unresolved", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
