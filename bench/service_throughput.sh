#!/usr/bin/env bash
# Sustained throughput of the service on each store: realistic 256x256x128
# five-structure NIfTI pairs uploaded through the REST API and scored by a serve
# on the embedded store and one on PostgreSQL, against `segwatch eval` folder mode
# on the same files, alternating, REPEAT rounds (default 3). Needs PostgreSQL on
# 127.0.0.1:5432 (trust auth). Prints pairs/s, upload p50/p99 and the ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-3}
PAIRS=${PAIRS:-40}
CONCURRENCY=${CONCURRENCY:-4}
STORES=${STORES:-embedded postgres}
ADMIN=${SEGWATCH_TEST_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DATA=bench/data/service

bash bench/setup.sh >/dev/null
if [ ! -d "$DATA/pred" ] || [ "$(ls "$DATA/pred" | wc -l)" -lt "$PAIRS" ]; then
    bench/.venv/bin/python bench/make_service_pairs.py --n "$PAIRS" --out "$DATA"
fi
cargo build --release --bins --examples --quiet

db=segwatch_throughput_$$
psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
dir=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export RUST_LOG=warn SEGWATCH_WORKER_THREADS=2
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -rf "$dir"' EXIT
declare -A port key
for store in $STORES; do
    port[$store]=$(free_port)
    if [ "$store" = postgres ]; then
        settings=(SEGWATCH_DATABASE_URL="${ADMIN%/*}/$db")
    else
        settings=(SEGWATCH_DATA_DIR="$dir")
    fi
    key[$store]=$(env "${settings[@]}" target/release/segwatch keys create --role admin --label bench)
    env "${settings[@]}" SEGWATCH_LISTEN=127.0.0.1:${port[$store]} target/release/segwatch serve 2>/dev/null &
    pids+=($!)
    until curl -sf "http://127.0.0.1:${port[$store]}/readyz" >/dev/null; do sleep 0.2; done
done

declare -A rates p50 p99
eval_rates=()
for round in $(seq 1 "$REPEAT"); do
    start=$(date +%s.%N)
    target/release/segwatch eval --pred-dir "$DATA/pred" --ref-dir "$DATA/ref" --threads 2 --format json >/dev/null
    end=$(date +%s.%N)
    eval_rate=$(python3 -c "print(f'{$PAIRS/($end-$start):.3f}')")
    eval_rates+=("$eval_rate")
    line="round $round: eval folder mode $eval_rate pairs/s"
    for store in $STORES; do
        out=$(target/release/examples/load_test --url "http://127.0.0.1:${port[$store]}" --key "${key[$store]}" \
            --dir "$DATA" --concurrency "$CONCURRENCY" --prefix "r$round")
        rate=$(echo "$out" | awk '/^PAIRS_PER_SECOND/ {print $2}')
        rates[$store]+="$rate "
        p50[$store]+="$(echo "$out" | awk '/^UPLOAD_P50_SECONDS/ {print $2}') "
        p99[$store]+="$(echo "$out" | awk '/^UPLOAD_P99_SECONDS/ {print $2}') "
        line+=", HTTP on $store $rate pairs/s"
    done
    echo "$line"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
e=$(median "${eval_rates[@]}")
echo
echo "## service throughput ($PAIRS pairs of 256x256x128, 5 structures, $REPEAT rounds, 2 compute threads, $CONCURRENCY uploads in flight)"
echo "- segwatch eval folder mode on the same files: $e pairs/s (median)"
for store in $STORES; do
    # shellcheck disable=SC2086
    h=$(median ${rates[$store]})
    echo "- HTTP API on the $store store, uploaded and scored: $h pairs/s (median; rounds: ${rates[$store]% }), ratio to eval $(python3 -c "print(f'{$h/$e:.2f}')")"
    # shellcheck disable=SC2086
    echo "  upload latency: p50 $(median ${p50[$store]}) s, p99 $(median ${p99[$store]}) s (medians over rounds)"
done
echo "- commands: bench/service_throughput.sh (REPEAT=$REPEAT PAIRS=$PAIRS CONCURRENCY=$CONCURRENCY)"
