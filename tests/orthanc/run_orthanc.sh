#!/usr/bin/env bash
# Start or stop a throwaway Orthanc (with the DICOMweb plugin) for tests.
#
#   run_orthanc.sh start [--dir DIR] [--lua] [--no-chunked] [--bearer] [--verbose]
#   run_orthanc.sh stop  DIR [--keep]
#   run_orthanc.sh status DIR
#
# "start" writes DIR/orthanc.json, starts Orthanc in the background on
# loopback with free ports, waits until GET /system answers, then prints
# shell assignments on stdout (use: eval "$(run_orthanc.sh start ...)"):
#
#   ORTHANC_URL=http://127.0.0.1:PORT   ORTHANC_PID=...   ORTHANC_DIR=...
#   ORTHANC_DICOM_PORT=...              ORTHANC_START_SECONDS=...
#
# The same values are in DIR/orthanc.url, DIR/orthanc.pid and DIR/env.sh.
# Orthanc 1.10 has no bind-address option: its HTTP and DICOM ports listen on
# all interfaces, but "RemoteAccessAllowed": false makes the REST API refuse
# any client that is not on loopback.
# The log is DIR/orthanc.log, storage and index are under DIR/db.
# "stop" sends SIGTERM to the PID in DIR/orthanc.pid (SIGKILL after 20 s)
# and removes DIR unless --keep is given. Stopping by hand: kill "$ORTHANC_PID".
#
# Environment:
#   SEGWATCH_DICOMWEB_URL  required: DICOMweb root of segwatch (or of the stub),
#                          e.g. http://127.0.0.1:8080/dicom-web/ ; a trailing
#                          slash is added if missing.
#   SEGWATCH_SITE          Basic user name (default: site1).
#   SEGWATCH_KEY           segwatch ingest key: Basic password, or the Bearer
#                          token with --bearer (default: test-key).
#   ORTHANC_HTTP_PORT      default: 18042 if free, else a free port.
#   ORTHANC_DICOM_PORT     default: 14242 if free, else a free port.
#   ORTHANC_STABLE_AGE     seconds before a series is "stable" (default 2).
#   ORTHANC_BIN            default: Orthanc from PATH or /usr/sbin/Orthanc.
#   ORTHANC_DICOMWEB_PLUGIN  default: /usr/share/orthanc/plugins/libOrthancDicomWeb.so
#   ORTHANC_START_TIMEOUT  seconds to wait for GET /system (default 60).
#
# Options of "start":
#   --dir DIR      use DIR (created) instead of a new mktemp directory
#   --lua          load deploy/orthanc/autoforward.lua (auto-forward SEG series)
#   --no-chunked   "ChunkedTransfers": false for the "segwatch" server
#   --bearer       authenticate with HttpHeaders Authorization: Bearer $SEGWATCH_KEY
#                  instead of Username/Password (HTTP Basic)
#   --verbose      start Orthanc with --verbose (more detail in orthanc.log)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "run_orthanc.sh: $*" >&2; exit 1; }

port_is_free() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
EOF
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

pick_port() { # preferred
    if port_is_free "$1"; then echo "$1"; else free_port; fi
}

find_orthanc() {
    if [[ -n "${ORTHANC_BIN:-}" ]]; then echo "$ORTHANC_BIN"; return; fi
    if command -v Orthanc >/dev/null 2>&1; then command -v Orthanc; return; fi
    if [[ -x /usr/sbin/Orthanc ]]; then echo /usr/sbin/Orthanc; return; fi
    die "Orthanc not found: apt-get install -y orthanc orthanc-dicomweb (see deploy/orthanc/README.md)"
}

cmd_start() {
    local dir="" lua=0 chunked=true bearer=0 verbose=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --dir) dir=$2; shift 2 ;;
            --lua) lua=1; shift ;;
            --no-chunked) chunked=false; shift ;;
            --chunked) chunked=true; shift ;;
            --bearer) bearer=1; shift ;;
            --verbose) verbose=1; shift ;;
            *) die "unknown option for start: $1" ;;
        esac
    done
    [[ -n "${SEGWATCH_DICOMWEB_URL:-}" ]] || die "set SEGWATCH_DICOMWEB_URL"
    local bin plugin
    bin=$(find_orthanc)
    plugin=${ORTHANC_DICOMWEB_PLUGIN:-/usr/share/orthanc/plugins/libOrthancDicomWeb.so}
    [[ -f "$plugin" ]] || die "DICOMweb plugin not found at $plugin (apt-get install -y orthanc-dicomweb)"
    if [[ -z "$dir" ]]; then dir=$(mktemp -d /tmp/orthanc-test.XXXXXX); fi
    mkdir -p "$dir/db"
    dir=$(cd "$dir" && pwd)

    local http_port dicom_port
    http_port=${ORTHANC_HTTP_PORT:-$(pick_port 18042)}
    dicom_port=${ORTHANC_DICOM_PORT:-$(pick_port 14242)}
    [[ "$dicom_port" != "$http_port" ]] || dicom_port=$(free_port)

    # JSON is written by Python so that URLs and keys are escaped properly.
    DIR="$dir" HTTP_PORT="$http_port" DICOM_PORT="$dicom_port" PLUGIN="$plugin" \
    LUA=$([[ $lua = 1 ]] && echo "$repo/deploy/orthanc/autoforward.lua" || true) \
    CHUNKED="$chunked" BEARER="$bearer" \
    python3 - <<'EOF'
import json, os
url = os.environ["SEGWATCH_DICOMWEB_URL"]
if not url.endswith("/"):
    url += "/"
key = os.environ.get("SEGWATCH_KEY", "test-key")
server = {"Url": url, "ChunkedTransfers": os.environ["CHUNKED"] == "true"}
if os.environ["BEARER"] == "1":
    server["HttpHeaders"] = {"Authorization": "Bearer " + key}
else:
    server["Username"] = os.environ.get("SEGWATCH_SITE", "site1")
    server["Password"] = key
d = os.environ["DIR"]
cfg = {
    "Name": "segwatch-test-orthanc",
    "StorageDirectory": os.path.join(d, "db"),
    "IndexDirectory": os.path.join(d, "db"),
    "StorageCompression": False,
    "HttpServerEnabled": True,
    "HttpPort": int(os.environ["HTTP_PORT"]),
    "RemoteAccessAllowed": False,       # loopback only
    "AuthenticationEnabled": False,     # no password on loopback
    "DicomServerEnabled": True,
    "DicomAet": "SEGWATCHTEST",
    "DicomPort": int(os.environ["DICOM_PORT"]),
    "StableAge": int(os.environ.get("ORTHANC_STABLE_AGE", "2")),
    "SaveJobs": False,
    "JobsHistorySize": 100,
    "HttpTimeout": 30,
    "Plugins": [os.environ["PLUGIN"]],
    "DicomWeb": {
        "Enable": True,
        "Root": "/dicom-web/",
        "EnableWado": False,
        "Servers": {"segwatch": server},
    },
    "LuaScripts": [os.environ["LUA"]] if os.environ.get("LUA") else [],
}
if os.path.exists("/etc/ssl/certs/ca-certificates.crt"):  # for an https:// segwatch URL
    cfg["HttpsCACertificates"] = "/etc/ssl/certs/ca-certificates.crt"
with open(os.path.join(d, "orthanc.json"), "w") as fh:
    json.dump(cfg, fh, indent=2)
EOF

    local args=("$dir/orthanc.json")
    [[ $verbose = 1 ]] && args=(--verbose "${args[@]}")
    local t0 t1
    t0=$(date +%s.%N)
    # No pipe stays attached to the caller: everything goes to the log file.
    nohup "$bin" "${args[@]}" >"$dir/orthanc.log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$dir/orthanc.pid"
    local url="http://127.0.0.1:$http_port"
    local timeout=${ORTHANC_START_TIMEOUT:-60} ok=0
    local deadline=$(( $(date +%s) + timeout ))
    while (( $(date +%s) < deadline )); do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$dir/orthanc.log" >&2 || true
            die "Orthanc exited during start-up (log: $dir/orthanc.log)"
        fi
        if curl -fsS -m 2 "$url/system" >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
    done
    if [[ $ok != 1 ]]; then
        kill "$pid" 2>/dev/null || true
        die "Orthanc did not answer $url/system within ${timeout}s (log: $dir/orthanc.log)"
    fi
    t1=$(date +%s.%N)
    local secs
    secs=$(python3 -c "print(f'{$t1-$t0:.2f}')")
    echo "$url" >"$dir/orthanc.url"
    cat >"$dir/env.sh" <<EOF
ORTHANC_URL=$url
ORTHANC_PID=$pid
ORTHANC_DIR=$dir
ORTHANC_DICOM_PORT=$dicom_port
ORTHANC_START_SECONDS=$secs
EOF
    cat "$dir/env.sh"
    echo "run_orthanc.sh: Orthanc $url (pid $pid) ready after ${secs}s; stop: $0 stop $dir" >&2
}

cmd_stop() {
    local dir="" keep=0
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --keep) keep=1; shift ;;
            --dir) dir=$2; shift 2 ;;
            *) dir=$1; shift ;;
        esac
    done
    [[ -n "$dir" && -f "$dir/orthanc.pid" ]] || die "usage: run_orthanc.sh stop DIR [--keep] (no DIR/orthanc.pid)"
    local pid
    pid=$(cat "$dir/orthanc.pid")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$dir/orthanc.pid"
    if [[ $keep = 0 ]]; then rm -rf "$dir"; fi
}

cmd_status() {
    local dir=${1:?usage: run_orthanc.sh status DIR}
    local pid
    pid=$(cat "$dir/orthanc.pid" 2>/dev/null) || { echo stopped; return 1; }
    if kill -0 "$pid" 2>/dev/null; then echo "running pid $pid $(cat "$dir/orthanc.url")"; else echo stopped; return 1; fi
}

case "${1:-}" in
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    status) shift; cmd_status "$@" ;;
    *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
