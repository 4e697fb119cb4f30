#!/usr/bin/env bash
# Sustained throughput of the service: realistic 256x256x128 five-structure NIfTI
# pairs uploaded through the REST API and scored, against `segwatch eval` folder
# mode on the same files, alternating, REPEAT rounds (default 3). Needs Postgres on
# 127.0.0.1:5432 (trust auth). Prints pairs/s, upload p50/p99 and the ratio.
set -euo pipefail
cd "$(dirname "$0")/.."
REPEAT=${REPEAT:-3}
PAIRS=${PAIRS:-40}
CONCURRENCY=${CONCURRENCY:-4}
ADMIN=${SEGWATCH_TEST_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
DATA=bench/data/service

bash bench/setup.sh >/dev/null
if [ ! -d "$DATA/pred" ] || [ "$(ls "$DATA/pred" | wc -l)" -lt "$PAIRS" ]; then
    bench/.venv/bin/python bench/make_service_pairs.py --n "$PAIRS" --out "$DATA"
fi
cargo build --release --bins --examples --quiet

db=segwatch_throughput_$$
psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url=${ADMIN%/*}/$db
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export SEGWATCH_DATABASE_URL=$url SEGWATCH_LISTEN=127.0.0.1:$port RUST_LOG=warn SEGWATCH_WORKER_THREADS=2
target/release/segwatch migrate 2>/dev/null
key=$(target/release/segwatch keys create --role admin --label bench)
target/release/segwatch serve 2>/dev/null &
serve=$!
trap 'kill $serve 2>/dev/null; psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do sleep 0.2; done

http=() eval_rates=() p50=() p99=()
for round in $(seq 1 "$REPEAT"); do
    start=$(date +%s.%N)
    target/release/segwatch eval --pred-dir "$DATA/pred" --ref-dir "$DATA/ref" --threads 2 --format json >/dev/null
    end=$(date +%s.%N)
    eval_rate=$(python3 -c "print(f'{$PAIRS/($end-$start):.3f}')")
    out=$(target/release/examples/load_test --url "http://127.0.0.1:$port" --key "$key" --dir "$DATA" --concurrency "$CONCURRENCY" --prefix "r$round")
    rate=$(echo "$out" | awk '/^PAIRS_PER_SECOND/ {print $2}')
    http+=("$rate"); eval_rates+=("$eval_rate")
    p50+=("$(echo "$out" | awk '/^UPLOAD_P50_SECONDS/ {print $2}')"); p99+=("$(echo "$out" | awk '/^UPLOAD_P99_SECONDS/ {print $2}')")
    echo "round $round: HTTP $rate pairs/s, eval folder mode $eval_rate pairs/s"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
h=$(median "${http[@]}"); e=$(median "${eval_rates[@]}")
echo
echo "## service throughput ($PAIRS pairs of 256x256x128, 5 structures, $REPEAT rounds, 2 compute threads, $CONCURRENCY uploads in flight)"
echo "- HTTP API, uploaded and scored: $h pairs/s (median)"
echo "- upload latency: p50 $(median "${p50[@]}") s, p99 $(median "${p99[@]}") s (medians over rounds)"
echo "- segwatch eval folder mode on the same files: $e pairs/s (median)"
echo "- ratio HTTP / eval: $(python3 -c "print(f'{$h/$e:.2f}')")"
echo "- commands: bench/service_throughput.sh (REPEAT=$REPEAT PAIRS=$PAIRS CONCURRENCY=$CONCURRENCY)"
