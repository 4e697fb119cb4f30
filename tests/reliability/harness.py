"""A segwatch service on its own Postgres database, for the reliability suite.

    with Service(segwatch, env={"SEGWATCH_MAX_STRUCTURES": "8"}) as svc:
        svc.put(f"/v1/sites/{svc.site}/cases/c1/prediction?model=m&model_version=1", body, key=svc.ingest)
        svc.kill9(); svc.start()
        svc.log_text()  # everything the service wrote

Python standard library only.
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

ADMIN_URL = os.environ.get("SEGWATCH_TEST_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    """Status, headers (lower-case names) and body of one HTTP exchange."""

    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.body[:200]!r}>"


class Service:
    """segwatch serving on a fresh database with an admin, a read and an ingest key."""

    _count = 0

    def __init__(self, segwatch, env=None, site="site1", admin_url=ADMIN_URL):
        Service._count += 1
        self.segwatch = os.path.abspath(segwatch)
        self.site = site
        self.admin_url = admin_url
        self.db = f"segwatch_rel_{os.getpid()}_{Service._count}"
        self.db_url = f"{admin_url.rsplit('/', 1)[0]}/{self.db}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work = tempfile.mkdtemp(prefix="segwatch-rel-")
        self.log_path = os.path.join(self.work, "segwatch.log")
        self.env = dict(os.environ, SEGWATCH_DATABASE_URL=self.db_url, SEGWATCH_LISTEN=f"127.0.0.1:{self.port}",
                        SEGWATCH_LOG_FORMAT="json", RUST_LOG="info", SEGWATCH_POLL_INTERVAL_MS="200")
        self.env.update(env or {})
        self.process = None

    def __enter__(self):
        subprocess.run(["psql", self.admin_url, "-qc", f"DROP DATABASE IF EXISTS {self.db}", "-c",
                        f"CREATE DATABASE {self.db}"], check=True, capture_output=True)
        self.cli("migrate")
        self.admin = self.cli("keys", "create", "--role", "admin", "--label", "reliability").strip()
        self.reader = self.cli("keys", "create", "--role", "read", "--label", "reliability").strip()
        self.ingest = self.new_ingest_key(self.site)
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        subprocess.run(["psql", self.admin_url, "-qc", f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)"],
                       capture_output=True)
        shutil.rmtree(self.work, ignore_errors=True)

    def cli(self, *args):
        """Runs a segwatch subcommand against this service's database; its stdout."""
        return subprocess.run([self.segwatch, *args], env=self.env, check=True, capture_output=True,
                              text=True).stdout

    def new_ingest_key(self, site):
        return self.cli("keys", "create", "--role", "ingest", "--site", site, "--label", "reliability").strip()

    def start(self, ready=True):
        log = open(self.log_path, "a")
        self.process = subprocess.Popen([self.segwatch, "serve"], env=self.env, stdout=log, stderr=log)
        if ready:
            self.wait(lambda: self.get("/readyz").status == 200, "segwatch ready")

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill9(self):
        self.process.kill()
        self.process.wait()

    def _status_kib(self, field):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {field}")

    def peak_rss_bytes(self):
        """The process's peak resident set (VmHWM) so far."""
        return self._status_kib("VmHWM")

    def rss_bytes(self):
        return self._status_kib("VmRSS")

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def request(self, method, path, body=None, key=None, headers=None, timeout=120):
        """One request on its own connection; never raises on an HTTP status."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            all_headers = dict(headers or {})
            if key:
                all_headers.setdefault("Authorization", f"Bearer {key}")
            conn.request(method, path, body=body, headers=all_headers)
            r = conn.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
        finally:
            conn.close()

    def get(self, path, key=None, **kw):
        return self.request("GET", path, key=key, **kw)

    def put(self, path, body, key=None, **kw):
        return self.request("PUT", path, body=body, key=key, **kw)

    def post(self, path, body=None, key=None, **kw):
        return self.request("POST", path, body=body, key=key, **kw)

    def upload(self, case, role, body, key=None, model="m", version="1", site=None, **kw):
        """PUT a prediction (with ?model=&model_version=) or a reference."""
        site = site or self.site
        query = "?" + urllib.parse.urlencode({"model": model, "model_version": version}) if role == "prediction" else ""
        return self.put(f"/v1/sites/{site}/cases/{case}/{role}{query}", body, key=key or self.ingest, **kw)

    def sql(self, query):
        """Rows of a query on this service's database, as lists of strings."""
        out = subprocess.run(["psql", self.db_url, "-AtF", "\t", "-c", query], check=True, capture_output=True,
                             text=True).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def wait(self, check, what, timeout=120, every=0.2):
        deadline = time.time() + timeout
        while True:
            try:
                if check():
                    return
            except OSError:
                pass
            if time.time() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(every)

    def wait_scored(self, count, timeout=300):
        """Waits until `count` jobs are done; fails if any job failed."""
        def done():
            rows = self.sql("SELECT status, count(*) FROM jobs GROUP BY status")
            states = {s: int(n) for s, n in rows}
            if states.get("failed"):
                raise AssertionError(f"failed jobs: {states}")
            return states.get("done", 0) >= count
        self.wait(done, f"{count} jobs scored", timeout=timeout)


def fixture(*parts):
    with open(os.path.join(FIXTURES, *parts), "rb") as f:
        return f.read()
