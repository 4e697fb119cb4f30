"""Re-run the calling script inside bench/.venv, creating it first (bench/setup.sh)
when needed, so `python3 bench/<script>.py` works on a fresh machine.

Import this before numpy/scipy/nibabel:  import _venv; _venv.ensure()
"""

import os
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(BENCH_DIR, ".venv")


def ensure() -> None:
    if os.path.realpath(sys.prefix) == os.path.realpath(VENV):
        return                                                   # already inside
    if os.environ.get("SEGWATCH_BENCH_REEXEC"):                  # never loop
        sys.exit(f"{sys.argv[0]}: cannot run inside {VENV}")
    subprocess.run([os.path.join(BENCH_DIR, "setup.sh")], check=True)
    python = os.path.join(VENV, "bin", "python")
    os.environ["SEGWATCH_BENCH_REEXEC"] = "1"
    os.execv(python, [python, os.path.abspath(sys.argv[0])] + sys.argv[1:])
