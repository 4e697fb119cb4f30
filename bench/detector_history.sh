#!/usr/bin/env bash
# Bytes of detector history per case on PostgreSQL, as the drift task writes
# it: CASES synthetic scored cases (15 structures, 10 sites, over SPAN_DAYS,
# from bench/scale/populate.sql) left for the drift task of BINARY to feed,
# then the size of every detector history table present.
#   bash bench/detector_history.sh target/release/segwatch 2000 [SPAN_DAYS]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: bench/detector_history.sh BINARY CASES [SPAN_DAYS]} cases=${2:?cases} span=${3:-10}
admin=${SEGWATCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=segwatch_detector_history
url=${admin%/*}/$db
export SEGWATCH_DATABASE_URL=$url
psql "$admin" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
"$bin" migrate >/dev/null
# The scale benchmark's cases, ending 3 hours ago, waiting for the drift task,
# without its detector states.
sql=$(mktemp)
trap 'rm -f "$sql"' EXIT
sed -e "s/now() - (:span_days/now() - interval '3 hours' - (:span_days/" \
    -e "s/observed_at + interval '1 hour 1 minute', false, true/observed_at + interval '1 hour 1 minute', true, true/" \
    -e '/^INSERT INTO detector_state/,/;$/d' bench/scale/populate.sql >"$sql"
psql "$url" -q -v cases="$cases" -v span_days="$span" -v sites=10 -v models=1 -v structures=15 -f "$sql"
SEGWATCH_LISTEN=127.0.0.1:${PORT:-18097} "$bin" serve >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$sql"' EXIT
start=$(date +%s)
until [ "$(psql "$url" -Atc "SELECT count(*) FROM results WHERE drift_pending")" = 0 ]; do sleep 1; done
echo "fed $cases cases in $(($(date +%s) - start)) s"
psql "$url" -q -c "VACUUM ANALYZE"
psql "$url" -At -F ' ' -c "
    SELECT t, pg_total_relation_size(t), pg_total_relation_size(t) / $cases
    FROM unnest(ARRAY['detector_updates', 'detector_parameters', 'detector_history']) t
    WHERE to_regclass(t) IS NOT NULL" |
    awk '{ print $1 ": " $2 " bytes, " $3 " a case"; total += $2 }
         END { print "detector history: " int(total / '"$cases"') " bytes a case" }'
