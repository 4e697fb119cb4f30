#!/usr/bin/env python3
"""Static checks of alertmanager.yml that amtool cannot express.

  - governance alerts (governance="true") repeat every 24 h, on every route that
    matches them; other routes repeat more often;
  - alerts are grouped by alertname, incident, site and structure (one notification
    per drift incident; the other alerts group by alertname, site and structure);
  - an inhibition rule holds back the quality alerts of a site while that site's
    SegwatchNoReferenceReceived alert fires (equal: [site]);
  - no quality alert inhibits another one: a pooled incident (SegwatchQualityIncidentPooled)
    is never held back by a site incident or the other way round, since segwatch
    already folds related streams into one incident.

Usage: check_config.py ALERTMANAGER_YML   (needs PyYAML)
"""
import sys

import yaml


GROUP_BY = {"alertname", "incident", "site", "structure"}


def fail(msg):
    print(f"FAIL: {msg}")
    return 1


def matchers(route):
    out = {}
    for m in route.get("matchers", []):
        name, _, value = m.partition("=")
        out[name.strip().rstrip("!~")] = value.strip().strip('"')
    return out


def main(path):
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    errors = 0
    root = cfg["route"]
    if set(root.get("group_by", [])) != GROUP_BY:
        errors += fail(f"root group_by is {root.get('group_by')}, want {', '.join(sorted(GROUP_BY))}")
    root_repeat = root.get("repeat_interval")
    governance_routes = 0
    for route in root.get("routes", []):
        m = matchers(route)
        repeat = route.get("repeat_interval", root_repeat)
        if m.get("governance") == "true":
            governance_routes += 1
            if repeat != "24h":
                errors += fail(f"governance route {m} repeats every {repeat}, want 24h")
        elif repeat == "24h":
            errors += fail(f"non-governance route {m} repeats only every 24h")
        for key in ("group_by",):
            if key in route and set(route[key]) != set(root["group_by"]):
                errors += fail(f"route {m} overrides group_by")
    if governance_routes == 0:
        errors += fail("no route matches governance=\"true\"")
    if root_repeat == "24h":
        errors += fail("default route repeats only every 24h")

    found = False
    for rule in cfg.get("inhibit_rules", []):
        src = " ".join(rule.get("source_matchers", []))
        tgt = " ".join(rule.get("target_matchers", []))
        if "SegwatchNoReferenceReceived" in src and 'category = "quality"' in tgt:
            found = True
            if rule.get("equal") != ["site"]:
                errors += fail(f"no-reference inhibition must use equal: [site], has {rule.get('equal')}")
    if not found:
        errors += fail("no inhibition of quality alerts by SegwatchNoReferenceReceived")

    for rule in cfg.get("inhibit_rules", []):
        src = " ".join(rule.get("source_matchers", []))
        if 'category = "quality"' in src or "SegwatchQualityIncident" in src:
            errors += fail(f"a quality alert inhibits other alerts: {rule}")

    if errors:
        return 1
    print(f"OK: {path}: grouping by {', '.join(sorted(GROUP_BY))}, 24h governance repeat "
          f"({governance_routes} routes), no-reference inhibition, no quality-on-quality inhibition")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "alertmanager.yml"))
