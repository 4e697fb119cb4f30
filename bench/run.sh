#!/usr/bin/env bash
# segwatch benchmark: one command, run from anywhere.
#
#   bench/run.sh                 # REPEAT=5 rounds of everything
#   REPEAT=3 bench/run.sh        # fewer rounds
#
# Steps: (a) create bench/.venv if needed, (b) generate bench/data if missing,
# (c) cargo build --release --bins --examples, then, alternating the two tools
# round by round so drifts in machine load hit both alike:
#   1. overlap throughput, one thread: examples/overlap_throughput vs
#      bench/numpy_overlap.py (Gvoxel/s, ratio segwatch / numpy);
#   2. whole evaluation of pred vs ref: `segwatch eval --threads 2` pinned to two
#      CPUs vs bench/monai_style_eval.py pinned to the same CPUs (median seconds,
#      ratio python / segwatch), plus a cross-check of the two result sets;
#   3. worst case: segwatch eval of pred_noisy (5 % random labels), median seconds.
# Ends with a markdown summary block (figures and exact commands).
#
# Environment: REPEAT (default 5), CPUS (taskset list, default 0,1), THREADS
# (segwatch --threads, default 2), SEED (data generation, default 1),
# NOISY_PYTHON=1 to also time the Python baseline once on pred_noisy (minutes).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$BENCH")"
cd "$ROOT"

REPEAT="${REPEAT:-5}"
CPUS="${CPUS:-0,1}"
THREADS="${THREADS:-2}"
SEED="${SEED:-1}"
DATA=bench/data
PY=bench/.venv/bin/python
SEGWATCH=target/release/segwatch
OVERLAP=target/release/examples/overlap_throughput
PRED=$DATA/pred.nii.gz
REF=$DATA/ref.nii.gz
NOISY=$DATA/pred_noisy.nii.gz
LOG=$DATA/run-logs
mkdir -p "$LOG"

# ---------------------------------------------------------------- helpers

say() { printf '\n== %s\n' "$*"; }

# Median of the numbers given as arguments (mean of the middle two if even).
median() {
    printf '%s\n' "$@" | sort -g | awk 'NF { v[++n] = $1 }
        END { if (n == 0) { print "nan"; exit }
              if (n % 2) printf "%.6f\n", v[(n + 1) / 2];
              else printf "%.6f\n", (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

# ratio A B -> A / B with 2 decimals ("n/a" when either is missing or B is 0).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || a == "nan" || b == "nan" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }

# Value of the last line "KEY <value>" in a file.
last_value() { awk -v k="$1" '$1 == k { v = $2 } END { print v }' "$2"; }

# Wall seconds of a command (stdout to /dev/null, stderr to $ERR); fails loudly.
ERR=$LOG/stderr.txt
time_cmd() {
    local t0 t1
    t0=$(date +%s.%N)
    if ! "$@" > /dev/null 2> "$ERR"; then
        echo "command failed: $*" >&2
        cat "$ERR" >&2
        exit 1
    fi
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}

# ------------------------------------------------------ (a) venv (b) data (c) build

say "setup"
bench/setup.sh
if [[ ! -f $REF || ! -f $PRED || ! -f $NOISY ]]; then
    say "generating $DATA (seed $SEED)"
    "$PY" bench/make_ct_pair.py --out "$DATA" --seed "$SEED"
fi
if ! taskset -c "$CPUS" true 2> /dev/null; then
    echo "CPUS=$CPUS is not usable by taskset on this machine (nproc $(nproc))" >&2
    exit 1
fi

say "cargo build --release --bins --examples"
# --bins as well: with a target-selection flag cargo builds only the selected
# targets, and `cargo build --release --examples` alone would leave a stale (or
# missing) target/release/segwatch.
cargo build --release --bins --examples

[[ -x $SEGWATCH ]] || { echo "missing $SEGWATCH after the build" >&2; exit 1; }
HAVE_OVERLAP=1
[[ -x $OVERLAP ]] || { HAVE_OVERLAP=0; echo "warning: $OVERLAP not built; skipping the overlap comparison" >&2; }

# The exact commands, also printed in the summary.
CMD_OVERLAP_RS="$OVERLAP $PRED $REF --repeat $REPEAT"
CMD_OVERLAP_PY="$PY bench/numpy_overlap.py $PRED $REF --repeat $REPEAT"
CMD_EVAL_RS="taskset -c $CPUS $SEGWATCH eval $PRED $REF --threads $THREADS --format json > /dev/null"
CMD_EVAL_PY="taskset -c $CPUS $PY bench/monai_style_eval.py $PRED $REF"
CMD_NOISY_RS="taskset -c $CPUS $SEGWATCH eval $NOISY $REF --threads $THREADS --format json > /dev/null"
CMDS_OVERLAP=""
(( HAVE_OVERLAP )) && CMDS_OVERLAP="$CMD_OVERLAP_RS"$'\n'"$CMD_OVERLAP_PY"$'\n'

# ---------------------------------------------------------- 1. overlap throughput

RS_GVOX=() PY_GVOX=()
if (( HAVE_OVERLAP )); then
    say "overlap throughput, one thread: $REPEAT rounds x --repeat $REPEAT"
    for ((r = 1; r <= REPEAT; r++)); do
        # Alternate which tool goes first.
        for tool in $( ((r % 2)) && echo "rs py" || echo "py rs"); do
            out=$LOG/overlap_$tool.$r.txt
            if [[ $tool == rs ]]; then
                $OVERLAP "$PRED" "$REF" --repeat "$REPEAT" > "$out"
                RS_GVOX+=("$(last_value GVOXELS_PER_SECOND "$out")")
            else
                "$PY" bench/numpy_overlap.py "$PRED" "$REF" --repeat "$REPEAT" > "$out"
                PY_GVOX+=("$(last_value GVOXELS_PER_SECOND "$out")")
            fi
        done
        echo "round $r: segwatch ${RS_GVOX[-1]} Gvoxel/s, numpy ${PY_GVOX[-1]} Gvoxel/s"
    done
    # Cross-check the per-label counts: "label N: tp A fp B fn C" (Rust) against
    # the numpy table "label pred ref tp fp fn" (labels present in either file).
    awk '$1 == "label" && $2 ~ /:$/ { sub(":", "", $2); print $2, $4, $6, $8 }' \
        "$LOG/overlap_rs.1.txt" | sort -n > "$LOG/counts_rs.txt"
    awk '$1 ~ /^[0-9]+$/ && NF == 6 && ($2 > 0 || $3 > 0) { print $1, $4, $5, $6 }' \
        "$LOG/overlap_py.1.txt" | sort -n > "$LOG/counts_py.txt"
    if diff -q "$LOG/counts_rs.txt" "$LOG/counts_py.txt" > /dev/null; then
        OVERLAP_CHECK="per-label TP/FP/FN identical"
    else
        OVERLAP_CHECK="per-label TP/FP/FN DIFFER (see $LOG/counts_rs.txt vs counts_py.txt)"
    fi
    echo "$OVERLAP_CHECK"
fi
RS_GVOX_MED=$(median "${RS_GVOX[@]}")
PY_GVOX_MED=$(median "${PY_GVOX[@]}")

# ------------------------------------------------------------- 2. whole evaluation

say "whole evaluation pred vs ref: checking results agree"
# Untimed first runs: warm the page cache and compare the two result sets.
taskset -c "$CPUS" $SEGWATCH eval "$PRED" "$REF" --threads "$THREADS" --format json > "$LOG/segwatch_eval.json"
taskset -c "$CPUS" "$PY" bench/monai_style_eval.py "$PRED" "$REF" --json "$LOG/python_eval.json" > "$LOG/python_eval.txt"
"$PY" bench/compare_json.py "$LOG/segwatch_eval.json" "$LOG/python_eval.json" | tee "$LOG/agreement.txt"
EVAL_CHECK=$(tail -n 1 "$LOG/agreement.txt")

say "whole evaluation pred vs ref: $REPEAT rounds"
RS_EVAL=() PY_EVAL=() PY_PROC=()
for ((r = 1; r <= REPEAT; r++)); do
    for tool in $( ((r % 2)) && echo "rs py" || echo "py rs"); do
        if [[ $tool == rs ]]; then
            RS_EVAL+=("$(time_cmd taskset -c "$CPUS" $SEGWATCH eval "$PRED" "$REF" --threads "$THREADS" --format json)")
        else
            # TOTAL_SECONDS is timed inside the script (loading + metrics); the
            # process wall time (adds interpreter start-up and imports) is kept too.
            out=$LOG/eval_py.$r.txt
            t0=$(date +%s.%N)
            taskset -c "$CPUS" "$PY" bench/monai_style_eval.py "$PRED" "$REF" > "$out"
            t1=$(date +%s.%N)
            PY_EVAL+=("$(last_value TOTAL_SECONDS "$out")")
            PY_PROC+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }')")
        fi
    done
    echo "round $r: segwatch ${RS_EVAL[-1]} s, python ${PY_EVAL[-1]} s (process ${PY_PROC[-1]} s)"
done
RS_EVAL_MED=$(median "${RS_EVAL[@]}")
PY_EVAL_MED=$(median "${PY_EVAL[@]}")
PY_PROC_MED=$(median "${PY_PROC[@]}")

# ------------------------------------------------------------------ 3. worst case

say "worst case pred_noisy vs ref: $REPEAT runs"
RS_NOISY=()
for ((r = 1; r <= REPEAT; r++)); do
    RS_NOISY+=("$(time_cmd taskset -c "$CPUS" $SEGWATCH eval "$NOISY" "$REF" --threads "$THREADS" --format json)")
    echo "run $r: segwatch ${RS_NOISY[-1]} s"
done
RS_NOISY_MED=$(median "${RS_NOISY[@]}")
PY_NOISY=""
if [[ ${NOISY_PYTHON:-0} == 1 ]]; then
    say "worst case, python baseline once (NOISY_PYTHON=1)"
    taskset -c "$CPUS" "$PY" bench/monai_style_eval.py "$NOISY" "$REF" > "$LOG/noisy_py.txt"
    PY_NOISY=$(last_value TOTAL_SECONDS "$LOG/noisy_py.txt")
fi

# ----------------------------------------------------------------------- summary

VERSIONS=$("$PY" -c "import numpy, scipy, nibabel, platform; print(f'python {platform.python_version()}, numpy {numpy.__version__}, scipy {scipy.__version__}, nibabel {nibabel.__version__}')")
CPU_MODEL=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2> /dev/null || true)
if GIT_REV=$(git rev-parse --short HEAD 2> /dev/null); then
    git diff --quiet HEAD 2> /dev/null || GIT_REV="$GIT_REV (uncommitted changes)"
else
    GIT_REV=unknown
fi

cat << EOF

## segwatch benchmark summary

- date: $(date -u +%Y-%m-%dT%H:%M:%SZ); git $GIT_REV; $(rustc --version 2> /dev/null || echo rustc unknown)
- machine: ${CPU_MODEL:-unknown CPU}, $(nproc) CPUs; pinned to CPUs $CPUS for the evaluations
- baseline: $VERSIONS
- data: $DATA (512x512x300 uint8, 0.8x0.8x1.5 mm, seed $SEED unless generated earlier), $REPEAT rounds, tools alternated

| measurement | segwatch | python baseline | ratio (>1: segwatch faster) |
|---|---|---|---|
| overlap counts, 1 thread (median Gvoxel/s) | ${RS_GVOX_MED} | ${PY_GVOX_MED} (numpy bincount) | $(ratio "$RS_GVOX_MED" "$PY_GVOX_MED") (segwatch / numpy) |
| whole eval pred vs ref (median s) | ${RS_EVAL_MED} (--threads $THREADS) | ${PY_EVAL_MED} (process ${PY_PROC_MED}) | $(ratio "$PY_EVAL_MED" "$RS_EVAL_MED") (python / segwatch) |
| worst case pred_noisy vs ref (median s) | ${RS_NOISY_MED} | ${PY_NOISY:-not run (NOISY_PYTHON=1)} | $( [[ -n $PY_NOISY ]] && echo "$(ratio "$PY_NOISY" "$RS_NOISY_MED") (python / segwatch)" || echo "-") |

- overlap per-round Gvoxel/s: segwatch [${RS_GVOX[*]:-}], numpy [${PY_GVOX[*]:-}]; ${OVERLAP_CHECK:-overlap not run}
- whole eval per-round s: segwatch [${RS_EVAL[*]}], python [${PY_EVAL[*]}]
- worst case per-run s: segwatch [${RS_NOISY[*]}]
- results agreement (segwatch JSON vs python baseline, rtol 1e-4): ${EVAL_CHECK}
- python seconds are timed inside the script (file loading + metrics, not interpreter start-up); segwatch seconds are whole-process wall time

Commands (from $ROOT):
\`\`\`
${CMDS_OVERLAP}$CMD_EVAL_RS
$CMD_EVAL_PY
$CMD_NOISY_RS
\`\`\`
Logs: $LOG/
EOF
