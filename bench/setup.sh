#!/usr/bin/env bash
# Create (or repair) the benchmark virtualenv bench/.venv with numpy, scipy and
# nibabel. Idempotent and quiet when the venv already works; every other bench
# script calls it, so a fresh CI machine needs nothing but python3 (with venv).
set -euo pipefail

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="$BENCH_DIR/.venv"

if "$VENV/bin/python" -c "import numpy, scipy, nibabel" 2>/dev/null; then
    exit 0
fi
echo "bench/setup.sh: creating $VENV (numpy, scipy, nibabel)" >&2
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check numpy scipy nibabel
"$VENV/bin/python" -c "import numpy, scipy, nibabel; print('bench/setup.sh: numpy', numpy.__version__, 'scipy', scipy.__version__, 'nibabel', nibabel.__version__)" >&2
