#!/usr/bin/env bash
# Times migration 0020 (results and the rows that hang off them partitioned by
# month) on a database at the schema before it, filled with synthetic scored
# history: populate.sql, written for the current schema, adapted to the one
# before 0020 (structure rows without scored_at), plus one detector-history
# row per result as the drift feed leaves them (32 streams: a site's and the
# pooled 15 structures and mean Dice). The filled database is kept as a
# template; each run copies it, applies 0020 with psql in one transaction (as
# `segwatch migrate` does) and checks that every table kept its row count.
#
#   bench/scale/migration.sh STRUCTURE_RESULTS [RUNS]
#   SEGWATCH_SCALE_POPULATE_ONLY=1 bench/scale/migration.sh ...   # fill only
#   SEGWATCH_SCALE_REUSE=1 bench/scale/migration.sh ...           # time a filled one
#
# Needs psql and a PostgreSQL server (SEGWATCH_ADMIN_URL, default
# postgres://postgres@127.0.0.1:5432/postgres). The template
# segwatch_pre0020_<N> is left in place (dropped on the next run of that size).
set -euo pipefail
cd "$(dirname "$0")/../.."
structure_results=${1:?usage: bench/scale/migration.sh STRUCTURE_RESULTS [RUNS]}
runs=${2:-3}
structures=15 sites=200 models=3
cases=$((structure_results / structures))
span=$(((structure_results + 899999) / 900000 + 1))
admin=${SEGWATCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
template=segwatch_pre0020_$structure_results
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The populate script for the schema before 0020: structure rows carry no
# scored_at and join their result by result_id alone.
sed -e 's/tolerance_mm, site, scored_at)/tolerance_mm, site)/' \
    -e "s/ s\.site, s\.observed_at + interval '1 hour 1 minute'$/ s.site/" \
    -e 's/ AND s\.scored_at = r\.scored_at//' \
    bench/scale/populate.sql >"$scratch/populate.sql"
if grep -q 'scored_at)$\|s\.scored_at' "$scratch/populate.sql"; then
    echo "populate.sql changed: adapt the edits in $0" >&2
    exit 1
fi

url=${admin%/*}/$template
export PGOPTIONS='-c client_min_messages=warning'

populate() {
    psql "$admin" -q -c "DROP DATABASE IF EXISTS $template WITH (FORCE)" -c "CREATE DATABASE $template"
    for migration in migrations/postgres/00{01..19}_*.sql; do
        psql "$url" -q -v ON_ERROR_STOP=1 -1 -f "$migration" >/dev/null
    done
    echo "populating $cases cases ($structure_results structure results) over $span days" >&2
    local start
    start=$(date +%s)
    psql "$url" -q -v cases="$cases" -v span_days="$span" -v sites=$sites -v models=$models \
        -v structures=$structures -f "$scratch/populate.sql"
    psql "$url" -q -v ON_ERROR_STOP=1 <<'SQL'
INSERT INTO detector_history (result_id, fed_at, pairs, parameters, t, flags, vals)
SELECT id, scored_at + interval '1 minute', 100, array_fill(id::int % 1000, ARRAY[32]),
       array_fill(100, ARRAY[32]), array_fill(0::smallint, ARRAY[32]), array_fill(0.5::real, ARRAY[96])
FROM results;
VACUUM ANALYZE;
SQL
    echo "populated in $(($(date +%s) - start)) s" >&2
}
# As with run.sh: SEGWATCH_SCALE_POPULATE_ONLY=1 fills the template and stops
# (while the machine is busy), SEGWATCH_SCALE_REUSE=1 times the migration on
# the template filled before.
if [ "${SEGWATCH_SCALE_REUSE:-0}" != 1 ]; then
    populate
    [ "${SEGWATCH_SCALE_POPULATE_ONLY:-0}" = 1 ] && exit 0
fi

tables="results structure_results lesion_results detector_history"
counts() {
    for table in $tables; do
        printf '%s %s\n' "$table" "$(psql "$1" -Atc "SELECT count(*) FROM $table")"
    done
}
before=$(counts "$url")
size=$(psql "$url" -Atc "SELECT pg_size_pretty(pg_database_size(current_database()))")
echo "before 0020 ($size):" $before >&2

migration=$(echo migrations/postgres/0020_*.sql)
for run in $(seq "$runs"); do
    copy=${template}_run
    psql "$admin" -q -c "DROP DATABASE IF EXISTS $copy" -c "CREATE DATABASE $copy TEMPLATE $template"
    copy_url=${admin%/*}/$copy
    start=$(date +%s.%N)
    psql "$copy_url" -q -v ON_ERROR_STOP=1 -1 -f "$migration" >/dev/null
    end=$(date +%s.%N)
    after=$(counts "$copy_url")
    if [ "$after" != "$before" ]; then
        echo "row counts differ after 0020:" $after >&2
        exit 1
    fi
    partitions=$(psql "$copy_url" -Atc "SELECT count(*) FROM pg_inherits WHERE inhparent = 'results'::regclass")
    psql "$admin" -q -c "DROP DATABASE $copy"
    awk -v s="$start" -v e="$end" -v n="$structure_results" -v run="$run" -v p="$partitions" \
        'BEGIN { printf "run %d: 0020 in %.1f s, %.1f s per million structure results (%d results partitions); row counts equal\n", run, e - s, (e - s) / n * 1e6, p }'
done
