#!/usr/bin/env python3
"""Many databases per daemon, side by side: `sluice replicate` and `litestream replicate` 0.5.17
each replicate one directory of N small databases (a `dir:` entry) to S3 (moto) through a
counting proxy, one tool at a time, on the same machine in the same run.

For each N (default 100 and 1000) and each tool it measures:
  (c) start-up: from process start until every database has uploaded its first LTX file;
  (a) idle: after start-up settles, N databases untouched for --idle-seconds: daemon CPU
      seconds, RSS, and object-store requests;
  (b) write load: 1 % of the databases written at 10 tx/s each for --write-seconds: CPU, RSS,
      and replication lag p50/p99. A commit at time t counts as replicated when the first
      level-0 LTX file of its database whose header timestamp (the capture time) is >= t has
      been sent to storage; its lag is that send time minus t.

Run with a Python that has boto3-free stdlib only, e.g.:
    PEER_VENV=$PWD/.venv-test python3 bench/many_dbs.py --out bench/results/many-dbs.md
Paths in the output are repository-relative.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import anchor_bench as ab  # noqa: E402  (Moto, process sampling)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "many"
DB_RE = re.compile(r"(db\d{5}\.db)")


# ---------------------------------------------------------------------------
# A counting S3 proxy that also notes when each LTX file of level 0 is sent
# ---------------------------------------------------------------------------
class Proxy:
    def __init__(self, listen, upstream):
        self.listen, self.upstream = listen, upstream
        self.lock = threading.Lock()
        self.counts = {}
        self.puts = []  # (send time, db, level, header timestamp ms)
        self.srv = None

    def snapshot(self):
        with self.lock:
            return dict(self.counts), len(self.puts)

    def _count(self, method, target):
        kind = method
        if method == "GET" and ("list-type" in target or "prefix=" in target):
            kind = "LIST"
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1

    def _note_put(self, target, body_head):
        m = DB_RE.search(target)
        # Level folders are `0`…`9` on most backends and `0000`… on S3 (Litestream's layout).
        lv = re.search(r"/([0-9a-f]{1,4})/[0-9a-f]{16}-[0-9a-f]{16}\.ltx", target)
        i = body_head.find(b"LTX1")
        if not m or not lv or i < 0 or len(body_head) < i + 40:
            return
        ts = struct.unpack(">q", body_head[i + 32:i + 40])[0]
        with self.lock:
            self.puts.append((time.time(), m.group(1), int(lv.group(1), 16), ts))

    def start(self):
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", self.listen))
        self.srv.listen(512)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(c,), daemon=True).start()

    def _handle(self, cl):
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream))
        except OSError:
            cl.close()
            return
        proxy = self

        class Hooks(ab.RelayHooks):
            target, capture = "", None

            def request(self, method, target, hdrs):
                proxy._count(method, target)
                self.target = target
                ltx_put = method == "PUT" and target.split("?")[0].endswith(".ltx")
                self.capture = b"" if ltx_put else None

            def body(self, data):
                if self.capture is not None and len(self.capture) < 512:
                    self.capture += data[:512]

            def done(self):
                if self.capture is not None:
                    proxy._note_put(self.target, self.capture)
                    self.capture = None

        ab.relay_http(cl, up, Hooks())


# ---------------------------------------------------------------------------
# Databases, the tools, the writer
# ---------------------------------------------------------------------------
def make_dbs(d, n):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for i in range(n):
        c = sqlite3.connect(os.path.join(d, f"db{i:05d}.db"))
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, at REAL, v TEXT)")
        c.executemany("INSERT INTO t(at, v) VALUES (?, ?)", [(time.time(), "x" * 200)] * 20)
        c.commit()
        c.close()


def write_config(path, data_dir, proxy_port, tool):
    with open(path, "w") as f:
        f.write(f"""dbs:
  - dir: {data_dir}
    pattern: "*.db"
    replica:
      type: s3
      bucket: {BUCKET}
      path: {tool}
      endpoint: http://127.0.0.1:{proxy_port}
      region: us-east-1
      force-path-style: true
""")


def tool_cmd(tool, config):
    if tool == "litestream":
        return [os.path.join(os.environ.get("PEER_VENV", os.path.join(REPO, ".venv-test")), "bin", "litestream"),
                "replicate", "-config", config]
    return [os.path.join(REPO, "target", "release", "sluice"), "replicate", "--config", config]


def tool_env(tool):
    env = dict(os.environ)
    env.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
    if tool == "litestream":
        env.pop("AWS_CA_BUNDLE", None)  # breaks Litestream 0.5.17's S3 client here
    return env


def writer_main(args):
    """Child process: commits to each database round robin at `rate` tx/s per database; writes
    one JSON list of (db name, commit time) to `--out` at the end (a file: a pipe would fill)."""
    dbs = args.dbs.split(",")
    conns = {}
    for name in dbs:
        c = sqlite3.connect(os.path.join(args.dir, name), isolation_level=None)
        c.execute("PRAGMA busy_timeout=5000")
        conns[name] = c
    commits = []
    gap = 1.0 / (args.rate * len(dbs))
    nxt = time.time()
    end = nxt + args.seconds
    i = 0
    while time.time() < end:
        name = dbs[i % len(dbs)]
        conns[name].execute("INSERT INTO t(at, v) VALUES (?, ?)", (time.time(), "y" * 200))
        commits.append((name, time.time()))
        i += 1
        nxt += gap
        time.sleep(max(0.0, nxt - time.time()))
    with open(args.out, "w") as f:
        json.dump(commits, f)


def lags(commits, puts):
    by_db = {}
    for (t_sent, db, level, ts) in puts:
        if level == 0:
            by_db.setdefault(db, []).append((ts, t_sent))
    for v in by_db.values():
        v.sort()
    out, missing = [], 0
    for db, t in commits:
        cands = [sent for (ts, sent) in by_db.get(db, []) if ts >= t * 1000 - 1 and sent >= t]
        if cands:
            out.append(min(cands) - t)
        else:
            missing += 1
    return out, missing


def run_one(tool, n, a, work, moto_port, proxy):
    data = os.path.join(work, f"data-{tool}-{n}")
    ab.log(f"{tool} N={n}: creating databases")
    make_dbs(data, n)
    cfg = os.path.join(work, f"{tool}-{n}.yml")
    write_config(cfg, data, proxy.listen, f"{tool}-{n}")
    logf = open(os.path.join(work, f"{tool}-{n}.log"), "wb")
    puts_before = len(proxy.puts)
    counts_before = proxy.snapshot()[0]
    t0 = time.time()
    proc = subprocess.Popen(tool_cmd(tool, cfg), env=tool_env(tool), stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True)
    res = {"tool": tool, "n": n}
    # (c) start-up: every database has sent an LTX file.
    deadline = t0 + a.startup_timeout
    while time.time() < deadline and proc.poll() is None:
        with proxy.lock:
            seen = {db for (_, db, _, _) in proxy.puts[puts_before:]}
        if len(seen) >= n:
            break
        time.sleep(0.1)
    res["startup_s"] = time.time() - t0 if len(seen) >= n else float("nan")
    res["startup_dbs"] = len(seen)
    counts = proxy.snapshot()[0]
    by_kind = {k: v - counts_before.get(k, 0) for k, v in sorted(counts.items()) if v - counts_before.get(k, 0)}
    res["startup_requests"] = sum(by_kind.values())
    ab.log(f"{tool} N={n}: start-up {res['startup_s']:.1f} s ({len(seen)} databases), requests {by_kind}")
    time.sleep(a.settle_seconds)
    # (a) idle.
    c0, r0 = ab.proc_cpu_s(proc.pid), proxy.snapshot()[0]
    rss_max = 0
    end = time.time() + a.idle_seconds
    while time.time() < end:
        rss_max = max(rss_max, ab.proc_status_kb(proc.pid, "VmRSS"))
        time.sleep(1)
    c1, r1 = ab.proc_cpu_s(proc.pid), proxy.snapshot()[0]
    res["idle_cpu_s"] = c1 - c0
    res["idle_rss_mb"] = rss_max / 1024
    res["idle_requests"] = sum(r1.values()) - sum(r0.values())
    ab.log(f"{tool} N={n}: idle {a.idle_seconds}s cpu={res['idle_cpu_s']:.2f}s rss={res['idle_rss_mb']:.0f}MB "
           f"requests={res['idle_requests']}")
    # (b) write load: 1 % of the databases at 10 tx/s each.
    k = max(1, n // 100)
    names = [f"db{i:05d}.db" for i in range(0, n, max(1, n // k))][:k]
    c0, r0, p0 = ab.proc_cpu_s(proc.pid), proxy.snapshot()[0], len(proxy.puts)
    commits_file = os.path.join(work, f"commits-{tool}-{n}.json")
    w = subprocess.Popen([sys.executable, os.path.abspath(__file__), "_writer", "--dir", data, "--dbs", ",".join(names),
                          "--rate", str(a.rate), "--seconds", str(a.write_seconds), "--out", commits_file])
    rss_max = 0
    while w.poll() is None:
        rss_max = max(rss_max, ab.proc_status_kb(proc.pid, "VmRSS"))
        time.sleep(0.5)
    with open(commits_file) as f:
        commits = json.load(f)
    # Let the last commits reach storage (a few sync intervals), then stop measuring.
    time.sleep(5)
    c1, r1 = ab.proc_cpu_s(proc.pid), proxy.snapshot()[0]
    with proxy.lock:
        puts = proxy.puts[p0:]
    lag, missing = lags(commits, puts)
    res.update(write_cpu_s=c1 - c0, write_rss_mb=rss_max / 1024, write_requests=sum(r1.values()) - sum(r0.values()),
               commits=len(commits), unreplicated=missing,
               lag_p50_s=ab.pct(lag, 50) if lag else float("nan"), lag_p99_s=ab.pct(lag, 99) if lag else float("nan"))
    ab.log(f"{tool} N={n}: write cpu={res['write_cpu_s']:.2f}s rss={res['write_rss_mb']:.0f}MB "
           f"lag p50={res['lag_p50_s']:.3f}s p99={res['lag_p99_s']:.3f}s commits={len(commits)} missing={missing}")
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
    logf.close()
    shutil.rmtree(data, ignore_errors=True)
    return res


def table(results, a):
    def get(tool, n, key):
        for r in results:
            if r["tool"] == tool and r["n"] == n:
                return r.get(key, float("nan"))
        return float("nan")

    rows = [
        ("(c) start-up to first sync of all", "startup_s", "s"),
        ("(c) requests until then", "startup_requests", ""),
        (f"(a) idle {a.idle_seconds}s: CPU", "idle_cpu_s", "s"),
        ("(a) idle: RSS", "idle_rss_mb", "MB"),
        ("(a) idle: requests", "idle_requests", ""),
        (f"(b) 1% at {a.rate} tx/s, {a.write_seconds}s: CPU", "write_cpu_s", "s"),
        ("(b) RSS", "write_rss_mb", "MB"),
        ("(b) requests", "write_requests", ""),
        ("(b) lag p50", "lag_p50_s", "s"),
        ("(b) lag p99", "lag_p99_s", "s"),
        ("(b) commits not replicated by the end", "unreplicated", ""),
    ]
    out = ["| measure | N | Litestream | Sluice | ratio |", "|---|---|---|---|---|"]
    for label, key, unit in rows:
        for n in a.sizes:
            lv, sv = get("litestream", n, key), get("sluice", n, key)
            ratio = f"{sv / lv:.2f}×" if isinstance(lv, (int, float)) and lv and lv == lv and sv == sv else "–"
            fmt = (lambda v: f"{v:.2f} {unit}".strip()) if isinstance(lv, float) or isinstance(sv, float) else str
            out.append(f"| {label} | {n} | {fmt(lv)} | {fmt(sv)} | {ratio} |")
    return "\n".join(out)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "_writer":
        p = argparse.ArgumentParser()
        p.add_argument("_w")
        p.add_argument("--dir")
        p.add_argument("--dbs")
        p.add_argument("--rate", type=float)
        p.add_argument("--seconds", type=float)
        p.add_argument("--out")
        writer_main(p.parse_args())
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000")
    p.add_argument("--tools", default="litestream,sluice")
    p.add_argument("--idle-seconds", type=int, default=300)
    p.add_argument("--write-seconds", type=int, default=60)
    p.add_argument("--settle-seconds", type=int, default=40)
    p.add_argument("--startup-timeout", type=int, default=600)
    p.add_argument("--rate", type=float, default=10)
    p.add_argument("--port-base", type=int, default=9400)
    p.add_argument("--workdir", default="/tmp/sluice-many-dbs")
    p.add_argument("--out", help="markdown file for the table (and a .json beside it)")
    a = p.parse_args()
    a.sizes = [int(s) for s in a.sizes.split(",")]
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    venv = os.environ.get("PEER_VENV", os.path.join(REPO, ".venv-test"))
    moto = ab.Moto(os.path.join(venv, "bin", "moto_server"), a.port_base, a.workdir)
    moto.start()
    moto.create_bucket(BUCKET)
    proxy = Proxy(a.port_base + 1, a.port_base)
    proxy.start()
    results = []
    try:
        for n in a.sizes:
            for tool in a.tools.split(","):
                results.append(run_one(tool, n, a, a.workdir, a.port_base, proxy))
    finally:
        moto.stop()
    text = table(results, a)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(f"# Many databases per daemon ({time.strftime('%Y-%m-%d')})\n\n"
                    f"`bench/many_dbs.py --sizes {','.join(map(str, a.sizes))} --idle-seconds {a.idle_seconds} "
                    f"--write-seconds {a.write_seconds}`; S3 = moto through a counting proxy; 2 cores.\n\n{text}\n")
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
