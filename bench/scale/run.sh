#!/usr/bin/env bash
# Scale benchmark: fills a PostgreSQL database with synthetic scored history
# (bench/scale/populate.sql: 200 sites x 3 models x 15 structures, spread over
# the span), runs segwatch serve on it and reports what grows with history:
# the gauge refresh cycle, the retention purge of one day, the case listing,
# the Grafana worst-cases panel, database bytes per case, /metrics, and then
# one model version's scoring throughput on that history.
#
#   bench/scale/run.sh STRUCTURE_RESULTS [SPAN_DAYS]
#   SEGWATCH_SCALE_POPULATE_ONLY=1 bench/scale/run.sh ...   # fill only
#   SEGWATCH_SCALE_REUSE=1 bench/scale/run.sh ...           # measure a filled one
#
# The span defaults to the target network's rate, 60,000 cases (900,000
# structure results) a day. Needs psql and a release build; the database
# segwatch_scale_<N> is left in place for inspection (dropped on the next run).
set -euo pipefail
cd "$(dirname "$0")/../.."
structure_results=${1:?usage: bench/scale/run.sh STRUCTURE_RESULTS [SPAN_DAYS]}
structures=15 sites=200 models=3
cases=$((structure_results / structures))
span=${2:-$(((structure_results + 899999) / 900000 + 1))}
admin=${SEGWATCH_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
db=${SEGWATCH_SCALE_DB:-segwatch_scale_$structure_results}
url=${admin%/*}/$db
bin=target/release/segwatch
port=${PORT:-18093}
[ -x "$bin" ] || cargo build --release --locked
export SEGWATCH_DATABASE_URL=$url

populate() {
    psql "$admin" -q -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    "$bin" migrate >/dev/null
    echo "populating $cases cases ($structure_results structure results) over $span days" >&2
    local start
    start=$(date +%s)
    psql "$url" -q -v cases="$cases" -v span_days="$span" -v sites=$sites -v models=$models \
        -v structures=$structures -f bench/scale/populate.sql
    echo "populated in $(($(date +%s) - start)) s" >&2
}
# SEGWATCH_SCALE_POPULATE_ONLY=1 fills the database and stops, so that a large
# history can be written while the machine is busy; SEGWATCH_SCALE_REUSE=1
# then measures that database (its newest day is then older than "now", which
# only lengthens the first purge's backlog by the time in between).
if [ "${SEGWATCH_SCALE_REUSE:-0}" != 1 ]; then
    populate
    [ "${SEGWATCH_SCALE_POPULATE_ONLY:-0}" = 1 ] && exit 0
fi
key=$("$bin" keys create --role read --label scale-bench)
admin_key=$("$bin" keys create --role admin --label scale-bench)

# Retention one day shorter than the span: the first purge has one day to do.
log=$(mktemp)
SEGWATCH_LISTEN=127.0.0.1:$port SEGWATCH_RETENTION_DAYS=$((span - 1)) SEGWATCH_REFRESH_SECS=5 \
    SEGWATCH_WORKER_THREADS=1 "$bin" serve >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
base=http://127.0.0.1:$port
for _ in $(seq 120); do curl -fs "$base/readyz" >/dev/null && break; sleep 0.5; done
scrape() { curl -fs -H "Authorization: Bearer $key" "$base/metrics"; }
# Scoring throughput of one model version on this history: 1,000 cases of a
# new version (its own name each run, so that runs on a reused database
# don't mix) with the network's 15 structures, from 20 sites (schema,
# baseline, scoring, drift feed and rollups as in production); timed until
# every case is scored and fed to the detectors.
throughput() {
    fleet_cases=1000
    version=run$(date +%s)
    fed() { psql "$url" -Atc "SELECT count(*) FROM results WHERE model_version = '$version' AND NOT drift_pending"; }
    scored() { psql "$url" -Atc "SELECT count(*) FROM results WHERE model_version = '$version'"; }
    start=$(date +%s.%N)
    python3 bench/scale/upload_cases.py --url "$base" --key "$admin_key" --model scalenet --version "$version" \
        --cases $fleet_cases --sites 20 --structures $structures
    until [ "$(scored)" -ge $fleet_cases ]; do sleep 0.2; done
    all_scored=$(date +%s.%N)
    # The drift feed is given 15 minutes (SEGWATCH_SCALE_FEED_SECS) after the
    # last case is scored; a feed that has not caught up by then is reported
    # with how far it got.
    local deadline=$(($(date +%s) + ${SEGWATCH_SCALE_FEED_SECS:-900}))
    until [ "$(fed)" -ge $fleet_cases ] || [ "$(date +%s)" -ge $deadline ]; do sleep 0.2; done
    all_fed=$(date +%s.%N)
    throughput=$(awk -v s="$start" -v a="$all_scored" -v f="$all_fed" -v n=$fleet_cases -v k=$structures -v fed="$(fed)" \
        'BEGIN { printf "%d cases of %d structures scored in %.1f s (%.0f cases a day); ", n, k, a - s, n / (a - s) * 86400
                 if (fed >= n) printf "all fed %.1f s after the last was scored: %.0f cases a day scored and fed", f - a, n / (f - s) * 86400
                 else printf "only %d fed %.0f s after the last was scored", fed, f - a }')
}
# Wait for the first purge (logged when done).
for _ in $(seq 600); do
    grep -q "stored files of segmentations past retention" "$log" && break
    sleep 1
done
# SEGWATCH_SCALE_THROUGHPUT_ONLY=1 measures only that (on a reused database).
if [ "${SEGWATCH_SCALE_THROUGHPUT_ONLY:-0}" = 1 ]; then
    throughput
    echo "one model's throughput:   $throughput"
    exit 0
fi

# Then for 20 refresh cycles; scraping is not free at this size, so only once.
sleep 100
text=$(scrape)
purge=$(awk '$1 == "segwatch_purge_duration_seconds" { print $2 }' <<<"$text")
refresh=$(awk '
    $1 ~ /^segwatch_refresh_duration_seconds_bucket/ { match($1, /le="[^"]+"/); le[n] = substr($1, RSTART + 4, RLENGTH - 5); c[n++] = $2 }
    $1 == "segwatch_refresh_duration_seconds_sum" { sum = $2 }
    $1 == "segwatch_refresh_duration_seconds_count" { count = $2 }
    END { for (i = 0; i < n; i++) if (c[i] >= count / 2) { p50 = le[i]; break }
          printf "mean %.3f s, p50 <= %s s over %d cycles", sum / count, p50, count }' <<<"$text")
series=$(grep -vc '^#' <<<"$text")
bytes=$(wc -c <<<"$text")
purged=$(psql "$url" -Atc "SELECT count(*) FROM segmentations s
    WHERE NOT EXISTS (SELECT 1 FROM segmentation_contents f WHERE f.segmentation_id = s.id)")

# Median of 21 requests.
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f", v[int((NR + 1) / 2)] * 1000 }'; }
listing() {
    for _ in $(seq 21); do
        curl -fs -o /dev/null -w '%{time_total}\n' -H "Authorization: Bearer $key" "$base$1"
    done | median
}
by_mean=$(listing "/v1/sites/site007/cases?limit=50")
by_structure=$(listing "/v1/sites/site007/cases?limit=50&structure=structure03")

# The site drill-down dashboard's "Worst cases" panel, its SQL taken from the
# dashboard with Grafana's variables filled in, for one site and for all, over
# the dashboard's default 30 days.
panel_sql() {
    python3 - "$1" "$structures" <<'PY'
import json, sys
site, structures = sys.argv[1], int(sys.argv[2])
dashboard = json.load(open("dashboards/site-drilldown.json"))
sql = next(t["rawSql"] for p in dashboard["panels"] for t in p.get("targets", []) if "rawSql" in t)
names = ",".join(f"'structure{k:02d}'" for k in range(1, structures + 1))
for variable, value in [("${site:sqlstring}", f"'{site}'"), ("${model:sqlstring}", "'model0'"),
                        ("${model_version:sqlstring}", "'v1'"), ("${structure:sqlstring}", names),
                        ("$__timeFilter(scored_at)", "scored_at BETWEEN now() - interval '30 days' AND now()")]:
    sql = sql.replace(variable, value)
print(sql)
PY
}
panel() {
    local sql
    sql=$(panel_sql "$1")
    for _ in $(seq 7); do
        psql "$url" -Atc "EXPLAIN (ANALYZE, FORMAT JSON) $sql" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Execution Time"] / 1000)'
    done | median
}
panel_site=$(panel site007)
panel_all=$(panel all)

per_case=$(psql "$url" -Atc "
    SELECT round(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relname <> 'segmentations') / $cases),
           round(sum(pg_total_relation_size(c.oid)) / $cases)
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'm')")
largest=$(psql "$url" -Atc "
    SELECT string_agg(relname || ' ' || round(size / $cases) || ' B', ', ' ORDER BY size DESC)
    FROM (SELECT coalesce(i.inhparent::regclass::text, c.relname) AS relname, sum(pg_total_relation_size(c.oid)) AS size
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_inherits i ON i.inhrelid = c.oid
          WHERE n.nspname = 'public' AND c.relkind = 'r' GROUP BY 1 ORDER BY 2 DESC LIMIT 5) t")

cat <<REPORT
structure results:        $structure_results ($cases cases over $span days)
refresh cycle:            $refresh
purge of one day:         $(printf '%.3f' "$purge") s ($purged segmentations)
listing by mean Dice:     $by_mean ms (median of 21, HTTP)
listing by structure:     $by_structure ms
worst-cases panel, site:  $panel_site ms (median of 7, execution)
worst-cases panel, all:   $panel_all ms
bytes per case:           ${per_case%|*} B without segmentations, ${per_case#*|} B with (largest: $largest)
/metrics:                 $series series, $bytes bytes
REPORT
throughput
echo "one model's throughput:   $throughput"
