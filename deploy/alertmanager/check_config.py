#!/usr/bin/env python3
"""Static checks of alertmanager.yml that amtool cannot express.

  - governance alerts (governance="true") repeat every 24 h, on every route that
    matches them; other routes repeat more often;
  - alerts are grouped by alertname, site and structure;
  - an inhibition rule holds back the quality alerts of a site while that site's
    SegwatchNoReferenceReceived alert fires (equal: [site]).

Usage: check_config.py ALERTMANAGER_YML   (needs PyYAML)
"""
import sys

import yaml


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
    if set(root.get("group_by", [])) != {"alertname", "site", "structure"}:
        errors += fail(f"root group_by is {root.get('group_by')}, want alertname, site, structure")
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

    if errors:
        return 1
    print(f"OK: {path}: grouping, 24h governance repeat ({governance_routes} routes), no-reference inhibition")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "alertmanager.yml"))
