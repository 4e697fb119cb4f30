#!/usr/bin/env bash
# Decode speed, segwatch vs Python, on the 512 x 512 x 300 benchmark data:
#   NIfTI  bench/data/ref.nii.gz  : decode_timing vs nibabel (dataobj) and nibabel get_fdata()
#   SEG    bench/data/ref_seg.dcm : decode_timing vs highdicom segread + get_volume()
#
#   bench/decode.sh              # REPEAT=5 rounds
#   REPEAT=3 INNER=1 bench/decode.sh
#
# Steps: create bench/.venv if needed (plus highdicom and pydicom), generate the
# data if missing, cargo build --release --examples, then REPEAT rounds. Each round
# starts every tool once as a fresh process, in a rotating order so drifts in
# machine load hit all alike. Each process decodes its file INNER times (from
# memory for segwatch, from the page-cached file for Python) and reports its
# median; a figure is the median of those over the rounds. Every process is
# pinned to CPU (taskset) when possible: all decoders here are single-threaded.
# Ends with a markdown summary (medians, ratios python / segwatch, exact commands).
#
# Environment: REPEAT (5), INNER (3), CPU (0).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$(dirname "$BENCH")"

REPEAT="${REPEAT:-5}"
INNER="${INNER:-3}"
CPU="${CPU:-0}"
PY=bench/.venv/bin/python
TIMING=target/release/examples/decode_timing
NII=bench/data/ref.nii.gz
SEG=bench/data/ref_seg.dcm
LOG=bench/data/decode-logs

say() { printf '\n== %s\n' "$*"; }

# Median of the arguments (mean of the middle two if even).
median() {
    printf '%s\n' "$@" | sort -g | awk 'NF { v[++n] = $1 }
        END { if (n % 2) printf "%.4f\n", v[(n + 1) / 2];
              else printf "%.4f\n", (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

# ----------------------------------------------------------------- setup

bench/setup.sh
if ! "$PY" -c "import highdicom, pydicom" 2> /dev/null; then
    echo "bench/decode.sh: installing highdicom and pydicom into bench/.venv" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check highdicom pydicom
fi
[[ -f $NII ]] || "$PY" bench/make_ct_pair.py
[[ -f $SEG ]] || "$PY" bench/make_big_seg.py

say "cargo build --release --examples"
cargo build --release --examples
mkdir -p "$LOG"

PIN=""
taskset -c "$CPU" true 2> /dev/null && PIN="taskset -c $CPU "

# The jobs: name -> exact command (relative paths, no spaces, so plain word
# splitting runs it). Every command ends with a `SECONDS <median>` line.
declare -A CMD=(
    [segwatch_nii]="${PIN}$TIMING $NII --repeat $INNER"
    [nibabel]="${PIN}$PY bench/decode_python.py $NII --repeat $INNER --mode nibabel"
    [nibabel_fdata]="${PIN}$PY bench/decode_python.py $NII --repeat $INNER --mode nibabel-fdata"
    [segwatch_seg]="${PIN}$TIMING $SEG --repeat $INNER"
    [highdicom]="${PIN}$PY bench/decode_python.py $SEG --repeat $INNER --mode highdicom"
)
declare -A RUNS=()   # name -> per-round medians (s), space-separated
declare -A FIRST=()  # name -> per-round first decode in the process (s)

# rounds JOB...: REPEAT rounds of the jobs, rotating the starting job each round.
rounds() {
    local jobs=("$@") n=$# r i job out line s argv
    for ((r = 0; r < REPEAT; r++)); do
        line="round $((r + 1)):"
        for ((i = 0; i < n; i++)); do
            job=${jobs[(r + i) % n]}
            out=$LOG/$job.$((r + 1)).txt
            read -ra argv <<< "${CMD[$job]}"
            "${argv[@]}" > "$out"
            s=$(awk '$1 == "SECONDS" { v = $2 } END { print v }' "$out")
            RUNS[$job]+="$s "
            FIRST[$job]+="$(awk '$1 == "run" && $2 == "0:" { print $3 }' "$out") "
            line+=" $job $s s,"
        done
        echo "${line%,}"
    done
}

say "NIfTI $NII: $REPEAT rounds x $INNER decodes"
rounds segwatch_nii nibabel nibabel_fdata
say "DICOM SEG $SEG: $REPEAT rounds x $INNER decodes"
rounds segwatch_seg highdicom

# ---------------------------------------------------------------- summary

declare -A MED=() MED1=()
for job in "${!RUNS[@]}"; do
    # shellcheck disable=SC2086  # split the space-separated values on purpose
    MED[$job]=$(median ${RUNS[$job]}) MED1[$job]=$(median ${FIRST[$job]})
done
ratio() { awk -v p="${MED[$1]}" -v s="${MED[$2]}" 'BEGIN { printf "%.1f", p / s }'; }
size() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }
VERSIONS=$("$PY" -c "import platform, numpy, nibabel, highdicom, pydicom; print(f'python {platform.python_version()}, numpy {numpy.__version__}, nibabel {nibabel.__version__}, highdicom {highdicom.__version__}, pydicom {pydicom.__version__}')")
SEG_SHAPE=$(head -n 1 "$LOG/segwatch_seg.1.txt")
REV=$(git rev-parse --short HEAD 2> /dev/null || echo "?")
git diff --quiet HEAD 2> /dev/null || REV+=" (uncommitted changes)"

cat << EOF

## Decode speed: segwatch vs Python

Median of $REPEAT rounds (fresh process each, $INNER decodes per process, its median).
Single thread${PIN:+ (pinned to CPU $CPU)}; $(nproc) cores, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo).

| file | segwatch | Python | Python time | Python / segwatch |
|---|---:|---|---:|---:|
| ref.nii.gz, 512×512×300 uint8, $(size "$NII") | ${MED[segwatch_nii]} s | nibabel \`np.asarray(img.dataobj)\` | ${MED[nibabel]} s | $(ratio nibabel segwatch_nii)× |
| same | ${MED[segwatch_nii]} s | nibabel \`get_fdata()\` (float64) | ${MED[nibabel_fdata]} s | $(ratio nibabel_fdata segwatch_nii)× |
| ref_seg.dcm, BINARY SEG, $(size "$SEG") | ${MED[segwatch_seg]} s | highdicom \`segread\` + \`get_volume()\` | ${MED[highdicom]} s | $(ratio highdicom segwatch_seg)× |

First decode in a fresh process (one-time costs included), median over rounds: segwatch NIfTI ${MED1[segwatch_nii]} s, nibabel ${MED1[nibabel]} s, get_fdata ${MED1[nibabel_fdata]} s; segwatch SEG ${MED1[segwatch_seg]} s, highdicom ${MED1[highdicom]} s.
SEG as decoded by segwatch: $SEG_SHAPE.
Per round (s): segwatch NIfTI ${RUNS[segwatch_nii]}| nibabel ${RUNS[nibabel]}| get_fdata ${RUNS[nibabel_fdata]}| segwatch SEG ${RUNS[segwatch_seg]}| highdicom ${RUNS[highdicom]}
Versions: $VERSIONS, $(rustc --version 2> /dev/null || echo "rustc ?"), segwatch $REV.
segwatch decodes from memory (file read before timing); Python times include opening the page-cached file. Imports and process start-up are excluded on both sides.

\`\`\`sh
${CMD[segwatch_nii]}
${CMD[nibabel]}
${CMD[nibabel_fdata]}
${CMD[segwatch_seg]}
${CMD[highdicom]}
\`\`\`
EOF
