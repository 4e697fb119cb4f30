#!/usr/bin/env python3
"""Runs README.md's shell blocks as a new user would, in order, from the
repository root, and checks what they print.

Every fenced block whose info string is exactly `sh` runs, line by line, in one
bash session (`set -euo pipefail`; curl fails on an HTTP error). Blocks marked
`shell` are illustrations (placeholders, other machines) and do not run.
Three commands are special:

  * `cargo test ...` is skipped: .ci/run runs it itself just before;
  * `cargo run --release -- demo` runs in the background until it prints
    "Serving until Ctrl-C."; its summary must show exactly one drift incident,
    on site3 liver (the injected drift); then it gets Ctrl-C and must stop;
  * `cargo run --release -- serve` runs in the background until /readyz says
    ready, and is stopped at the end.

The README's own data directory (./segwatch-data) and eval output
(./eval-results) must not exist beforehand and are removed afterwards.

Usage: python3 tests/readme/check_readme.py
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRATCH = ["segwatch-data", "eval-results"]
BASE = "http://127.0.0.1:8080"


def shell_blocks(text):
    """The lines of every ```sh block, in order, continuation lines joined."""
    lines = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, flags=re.S | re.M):
        joined = block.replace("\\\n", " ")
        lines.extend(line for line in joined.splitlines() if line.strip())
    return lines


def fail(message):
    print(f"check_readme: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def wait_ready(process, deadline):
    while time.time() < deadline:
        if process.poll() is not None:
            fail(f"serve exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{BASE}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    fail("serve did not become ready")


def run_demo(command):
    """Starts the demo, reads its summary, stops it with Ctrl-C."""
    started = time.time()
    demo = subprocess.Popen(command, shell=True, cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    output = []
    for line in demo.stdout:
        print(line, end="")
        output.append(line)
        if line.startswith("Serving until Ctrl-C."):
            break
    summary = "".join(output)
    if "Serving until Ctrl-C." not in summary:
        fail(f"the demo ended before serving (exit {demo.wait()})")
    # As a terminal's Ctrl-C: SIGINT to the whole group, cargo included, which
    # ends by the signal once segwatch has stopped.
    os.killpg(demo.pid, signal.SIGINT)
    code = demo.wait(timeout=60)
    if code not in (0, -signal.SIGINT, 128 + signal.SIGINT):
        fail(f"the demo exited with {code} on Ctrl-C")
    found = re.search(r"^Drift incidents: (\d+)", summary, flags=re.M)
    if not found or found.group(1) != "1":
        fail("the demo must find exactly one drift incident")
    if not re.search(r"^  #\d+ site3 liver ", summary, flags=re.M):
        fail("the demo's incident is not site3 liver")
    print(f"check_readme: the demo found its one incident and stopped on Ctrl-C "
          f"({time.time() - started:.0f} s including the build)")


def main():
    os.chdir(ROOT)
    for path in SCRATCH:
        if os.path.exists(path):
            fail(f"./{path} exists; move it away first (the README's commands create it)")
    lines = shell_blocks(open("README.md").read())
    if not lines:
        fail("README.md has no sh block")
    background = []
    script = ["set -euo pipefail", "curl() { command curl --fail-with-body -sS \"$@\"; }"]
    log = open(os.path.join(ROOT, "target", "readme-check.log"), "w") if os.path.isdir("target") else None
    try:
        def run_script():
            if len(script) > 2:
                body = "\n".join(script)
                print(f"check_readme: running\n{body}\n", flush=True)
                result = subprocess.run(["bash", "-c", body], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                                        env=dict(os.environ, **environment))
                print(result.stdout)
                outputs.append(result.stdout)
                if result.returncode != 0:
                    fail(f"a README command failed (exit {result.returncode})")
                # Variables the block exported stay for the next one.
                del script[2:]
        environment = {}
        outputs = []
        for line in lines:
            command = line.split("#")[0].strip() if not line.lstrip().startswith("#") else ""
            if not command:
                continue
            if command.startswith("cargo test"):
                print(f"check_readme: skipping `{command}` (.ci/run runs it)")
                continue
            if re.fullmatch(r"cargo run --release -- demo", command):
                run_script()
                run_demo(command)
                continue
            if re.fullmatch(r"cargo run --release -- serve", command):
                run_script()
                serve = subprocess.Popen(command, shell=True, cwd=ROOT, start_new_session=True,
                                         stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
                background.append(serve)
                wait_ready(serve, time.time() + 900)
                continue
            exported = re.fullmatch(r"export (\w+)=\$\((.*)\)", command)
            if exported:
                run_script()
                value = subprocess.run(["bash", "-c", exported.group(2)], cwd=ROOT, text=True,
                                       stdout=subprocess.PIPE, env=dict(os.environ, **environment))
                if value.returncode != 0 or not value.stdout.strip():
                    fail(f"`{command}` failed")
                environment[exported.group(1)] = value.stdout.strip()
                continue
            script.append(command)
        run_script()
        joined = "\n".join(outputs)
        for expected in ['"status":"scored"', "mean Dice"]:
            if expected not in joined:
                fail(f"the README's commands never printed {expected}")
        print("check_readme: every README sh block ran as written")
    finally:
        for process in background:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
        for path in SCRATCH:
            shutil.rmtree(os.path.join(ROOT, path), ignore_errors=True)


if __name__ == "__main__":
    main()
