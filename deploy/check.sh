#!/usr/bin/env bash
# Validates every deployment artefact of segwatch that can be checked without Docker:
#
#   Prometheus    promtool check config / check rules / test rules
#   Alertmanager  amtool check-config, amtool config routes test (route-tests.txt),
#                 repeat/grouping/inhibition config checks, and a live inhibition test
#                 against a real Alertmanager on a free loopback port
#   Compose etc.  docker-compose.yml, Grafana provisioning and Dockerfile sanity,
#                 metric/label contract of every rule and dashboard query
#   Dashboards    type check against @grafana/schema (tsc --noEmit --strict) and a
#                 promtool parse of every dashboard PromQL expression
#
# Installs what is missing (Debian packages prometheus and prometheus-alertmanager
# without starting their services, python3-yaml, and `npm ci` in dashboards/validate).
# Idempotent; a second run installs nothing.  Exit status 0 only if every check passes.
#
#   bash deploy/check.sh            # from anywhere
#   CHECK_NO_INSTALL=1 bash deploy/check.sh   # never install, fail if a tool is missing
set -uo pipefail

DEPLOY="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$DEPLOY")"
VALIDATE="$ROOT/dashboards/validate"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/segwatch-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

log() { printf '%s\n' "$*"; }
die() { printf 'check.sh: %s\n' "$*" >&2; exit 2; }

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# ---------------------------------------------------------------------------
# Installation (only what is missing)
# ---------------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    [ "${CHECK_NO_INSTALL:-0}" = 1 ] && die "missing $*, and CHECK_NO_INSTALL=1"
    command -v apt-get >/dev/null 2>&1 || die "missing $* and no apt-get to install it"
    if [ "$APT_UPDATED" = 0 ]; then
        $SUDO apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "installing: $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        >"$WORK/apt.log" 2>&1 || { cat "$WORK/apt.log" >&2; die "apt-get install $* failed"; }
}

# Debian's prometheus packages start their daemons on install (ports 9090/9093),
# which would collide with any Prometheus a later test starts.  Deny service starts
# during the install with a temporary policy-rc.d, and stop anything that still got
# started (systemd machines).
install_prometheus_tools() {
    local pkgs=("$@") policy=/usr/sbin/policy-rc.d added_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# segwatch check.sh: no service starts during package installs\nexit 101\n' \
            | $SUDO tee "$policy" >/dev/null && $SUDO chmod 0755 "$policy" && added_policy=1
    fi
    apt_install "${pkgs[@]}"
    [ "$added_policy" = 1 ] && $SUDO rm -f "$policy"
    local svc
    for svc in prometheus prometheus-alertmanager; do
        if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
            if systemctl is-active --quiet "$svc" 2>/dev/null; then
                log "stopping the $svc service the package started"
                $SUDO systemctl stop "$svc" || true
            fi
            $SUDO systemctl disable "$svc" >/dev/null 2>&1 || true
        elif command -v service >/dev/null 2>&1 && service "$svc" status >/dev/null 2>&1; then
            log "stopping the $svc service the package started"
            $SUDO service "$svc" stop >/dev/null 2>&1 || true
        fi
    done
}

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if ! command -v amtool >/dev/null 2>&1 || \
   ! { command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1; }; then
    need+=(prometheus-alertmanager)
fi
[ "${#need[@]}" -gt 0 ] && install_prometheus_tools "${need[@]}"
AM_BIN="$(command -v prometheus-alertmanager || command -v alertmanager || true)"

# A Python 3 with PyYAML (the Debian package installs it for /usr/bin/python3).
PY=""
for candidate in python3 /usr/bin/python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import yaml' >/dev/null 2>&1; then
        PY="$(command -v "$candidate")"; break
    fi
done
if [ -z "$PY" ]; then
    apt_install python3 python3-yaml
    PY=/usr/bin/python3
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
# npm ci only when node_modules does not match package-lock.json.
lock_sum="$(sha256sum "$VALIDATE/package-lock.json" | cut -d' ' -f1)"
stamp="$VALIDATE/node_modules/.segwatch-lock.sha256"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$lock_sum" ]; then
    [ "${CHECK_NO_INSTALL:-0}" = 1 ] && die "dashboards/validate/node_modules is missing or stale, and CHECK_NO_INSTALL=1"
    log "npm ci in dashboards/validate"
    (cd "$VALIDATE" && npm ci --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1) \
        || { cat "$WORK/npm.log" >&2; die "npm ci failed"; }
    printf '%s\n' "$lock_sum" >"$stamp"
fi

# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------
PASSED=0
FAILED=0
FAILED_NAMES=()
# run NAME CMD...: runs CMD, prints its last lines on success and all of it on failure.
run() {
    local name="$1"; shift
    local out="$WORK/step.out"
    if "$@" >"$out" 2>&1; then
        PASSED=$((PASSED + 1))
        printf 'PASS  %s\n' "$name"
        grep -E 'Unit Testing|SUCCESS|^OK|: ok|passed|^  [a-z-]+\.json' "$out" | sed 's/^ */      /' | tail -n 8
    else
        FAILED=$((FAILED + 1))
        FAILED_NAMES+=("$name")
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' "$out"
    fi
}

cd "$DEPLOY" || die "cannot cd to $DEPLOY"

# promtool insists the scrape key file exists; the stack's segwatch-init writes
# the real one, and keeps any key already there, so the placeholder goes again.
placeholder=
if [ ! -f prometheus/secrets/segwatch-metrics.token ]; then
    printf 'placeholder\n' > prometheus/secrets/segwatch-metrics.token
    placeholder=prometheus/secrets/segwatch-metrics.token
fi

run "promtool check config prometheus/prometheus.yml" \
    promtool check config prometheus/prometheus.yml
if [ -n "$placeholder" ]; then rm -f "$placeholder"; fi
run "promtool check rules prometheus/rules/*.yml" \
    promtool check rules prometheus/rules/recording.yml prometheus/rules/alerts.yml
run "promtool test rules prometheus/tests/*.yml" \
    promtool test rules prometheus/tests/*.yml
run "amtool check-config alertmanager/alertmanager.yml" \
    amtool check-config alertmanager/alertmanager.yml

route_tests() {
    local line expected n=0 bad=0
    while IFS= read -r line; do
        line="${line%%#*}"
        [ -z "${line// }" ] && continue
        # shellcheck disable=SC2086
        set -- $line
        expected="$1"; shift
        n=$((n + 1))
        if ! amtool config routes test --config.file=alertmanager/alertmanager.yml \
                --verify.receivers="$expected" "$@" >"$WORK/route.out" 2>&1; then
            bad=$((bad + 1))
            echo "route test failed: want $expected for $*"
            grep -v 'overrides the --alertmanager.url' "$WORK/route.out"
        fi
    done <alertmanager/route-tests.txt
    [ "$n" -gt 0 ] || { echo "no route tests found"; return 1; }
    echo "OK: $((n - bad))/$n routes resolve to the expected receiver"
    [ "$bad" -eq 0 ]
}
run "amtool config routes test (alertmanager/route-tests.txt)" route_tests
run "alertmanager repeat/grouping/inhibition config (alertmanager/check_config.py)" \
    "$PY" alertmanager/check_config.py alertmanager/alertmanager.yml
if [ -n "$AM_BIN" ]; then
    run "alertmanager live inhibition test ($(basename "$AM_BIN"), loopback)" \
        "$PY" alertmanager/inhibition_test.py --bin "$AM_BIN" --config alertmanager/alertmanager.yml
else
    run "alertmanager live inhibition test" false
fi

compose_yaml() {
    "$PY" - docker-compose.yml <<'EOF'
import sys, yaml
with open(sys.argv[1], encoding="utf-8") as fh:
    doc = yaml.safe_load(fh)
assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), "no services mapping"
print(f"OK: {sys.argv[1]} parses: services {', '.join(sorted(doc['services']))}")
EOF
}
run "YAML parse of docker-compose.yml" compose_yaml
run "compose / grafana provisioning / Dockerfile / metric contract (check_static.py)" \
    "$PY" check_static.py

run "dashboard type check against @grafana/schema (tsc --noEmit --strict)" \
    node "$VALIDATE/validate.mjs"

# Every Prometheus query of the dashboards must parse: wrap them in a rule file
# (JSON is YAML) and let promtool parse it, once with the variables left open
# (.*) and once with concrete values.
dashboard_promql() {
    local rules="$WORK/dashboard-exprs.rules.yml" vars
    for vars in "" "--var site=hosp-a --var model=abdomen-ct --var model_version=1.4.0 --var structure=liver,spleen"; do
        # shellcheck disable=SC2086
        "$PY" "$VALIDATE/promql_exprs.py" --include-variables --strict $vars >"$WORK/exprs.jsonl" || return 1
        "$PY" - "$WORK/exprs.jsonl" "$rules" <<'EOF' || return 1
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
assert rows, "no expressions extracted"
rules = [{"record": f"dashboard_expr_{i}", "expr": r["expr"],
          "labels": {"panel": f"{r['file']}:{r.get('panel') or r.get('variable')}:{r.get('ref_id', '')}"}}
         for i, r in enumerate(rows)]
json.dump({"groups": [{"name": "dashboard-exprs", "rules": rules}]}, open(sys.argv[2], "w"))
print(f"{len(rows)} expressions")
EOF
        promtool check rules "$rules" || return 1
    done
    echo "OK: every dashboard PromQL expression parses (variables open and substituted)"
}
run "dashboard PromQL parses (promql_exprs.py + promtool)" dashboard_promql

# ---------------------------------------------------------------------------
total=$((PASSED + FAILED))
log ""
if [ "$FAILED" -gt 0 ]; then
    log "failed: ${FAILED_NAMES[*]}"
fi
log "check.sh: $PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ] && [ "$total" -gt 0 ]
