#!/usr/bin/env bash
# Runs deploy/bootstrap.sh (the compose stack's segwatch-init) as the stack does,
# against a fresh embedded store, twice: the first run must write a scrape key
# and a webhook key that segwatch accepts and print one admin key; the second
# must change nothing and print no key.
# Usage: deploy/test_bootstrap.sh path/to/segwatch
set -euo pipefail
segwatch=$(realpath "$1")
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'kill "${serve:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/secrets/prometheus" "$work/secrets/alertmanager"
ln -s "$segwatch" "$work/bin/segwatch"
export PATH="$work/bin:$PATH" SECRETS="$work/secrets" SEGWATCH_DATA_DIR="$work/data" RUST_LOG=warn
fail() { echo "test_bootstrap: FAIL: $*" >&2; exit 1; }

first=$(sh bootstrap.sh 2>&1)
[ "$(grep -c 'the first admin key' <<<"$first")" = 1 ] || fail "first run printed no admin key: $first"
scrape=$(cat "$work/secrets/prometheus/segwatch-metrics.token")
webhook=$(cat "$work/secrets/alertmanager/segwatch-webhook.token")
[ "$(stat -c %a "$work/secrets/prometheus/segwatch-metrics.token")" = 644 ] || fail "the scrape key is not readable by Prometheus"

second=$(sh bootstrap.sh 2>&1)
grep -q 'sw_' <<<"$second" && fail "the second run printed a key: $second"
[ "$(cat "$work/secrets/prometheus/segwatch-metrics.token")" = "$scrape" ] || fail "the second run replaced the scrape key"
[ "$(segwatch keys list | tail -n +2 | wc -l)" = 3 ] || fail "expected 3 keys: $(segwatch keys list)"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
SEGWATCH_LISTEN=127.0.0.1:$port segwatch serve & serve=$!
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done
curl -sf -H "Authorization: Bearer $scrape" "http://127.0.0.1:$port/metrics" | grep -q '^segwatch_build_info' \
    || fail "Prometheus's key cannot scrape /metrics"
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $webhook" -H 'Content-Type: application/json' \
    -d '{"receiver":"segwatch-governance","status":"firing","alerts":[]}' "http://127.0.0.1:$port/v1/alertmanager/webhook")
[ "$status" = 204 ] || fail "Alertmanager's key got $status from the webhook"
echo "test_bootstrap: keys written once, accepted by segwatch, admin key printed once"
