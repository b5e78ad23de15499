#!/usr/bin/env python3
"""Side-by-side restore benchmark: Litestream 0.5.17 vs Sluice on the SAME replicas.

    /usr/bin/python3 bench/restore_bench.py            # 100 MB DB, 5 runs per tool and target
    /usr/bin/python3 bench/restore_bench.py --mb 20 --runs 3 --keep

Steps (stdlib only):
 1. generate a ~--mb MB SQLite DB (the shared harness's `events` schema, WAL, 4 KiB pages);
 2. for each target (file://, moto S3) replicate a private copy of it with `litestream
    replicate`, then write --txs one-row transactions in 3 bursts so the replica has L0 files
    after the snapshot, and stop Litestream;
 3. alternate `litestream restore -o` and `sluice restore -o` --runs times per target (plus a
    point-in-time `-txid` restore of a mid-history L0 file), timing wall clock and peak RSS
    (os.wait4's ru_maxrss: exact, no sampling), and verify: every output of a case has the same
    sha256 for both tools, and one passes PRAGMA integrity_check with the source's row count;
 4. print one markdown table and save it to bench/results/restore.md.
"""
import argparse, hashlib, os, re, shutil, signal, socket, sqlite3, statistics, subprocess, sys, time
import urllib.error, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV_BIN = os.path.join(ROOT, ".venv-test", "bin")
LITESTREAM = os.path.join(VENV_BIN, "litestream")
MOTO = os.path.join(VENV_BIN, "moto_server")
SLUICE = os.path.join(ROOT, "target", "release", "sluice")
BUCKET, KEY, SECRET = "bench", "benchkey", "benchsecret"

# The database generator is the comparison harness's own (same schema and payloads).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from anchor_bench import make_db  # noqa: E402


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tool_env(s3):
    # Litestream 0.5.17 fails with "unable to add custom RootCAs" if AWS_CA_BUNDLE is set;
    # both tools get the same environment so neither has an advantage.
    e = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
    if s3:
        e.update(AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET, AWS_REGION="us-east-1")
    return e


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(workdir):
    port = free_port()
    logf = open(os.path.join(workdir, "moto.log"), "wb")
    proc = subprocess.Popen([MOTO, "-H", "127.0.0.1", "-p", str(port)], stdout=logf,
                            stderr=subprocess.STDOUT, start_new_session=True)
    for _ in range(150):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.2)
    else:
        raise SystemExit("moto did not start; see moto.log")
    # moto accepts unsigned requests, so a raw PUT creates the bucket without boto3.
    urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/{BUCKET}", method="PUT")).read()
    return proc, port


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # own session (start_new_session): only its group
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ltx_files(url, s3):
    """(level, min, max) of every LTX file, from `litestream ltx` (also our upload waiter)."""
    r = subprocess.run([LITESTREAM, "ltx", url], capture_output=True, text=True, env=tool_env(s3), timeout=60)
    return [(int(m[1]), int(m[2], 16), int(m[3], 16))
            for m in re.finditer(r"^\s*(\d+)\s+([0-9a-f]{16})\s+([0-9a-f]{16})\s+\d+", r.stdout, re.M)]


def wait_settled(url, s3, timeout=300):
    """Waits until the replica has files and its max TXID stopped moving for 3 s."""
    t0, last, since = time.time(), None, time.time()
    while time.time() - t0 < timeout:
        files = ltx_files(url, s3)
        top = max((f[2] for f in files), default=None)
        if top != last:
            last, since = top, time.time()
        elif top is not None and time.time() - since > 3:
            return files
        time.sleep(0.5)
    raise SystemExit(f"replica {url} did not settle within {timeout}s")


def build_replica(workdir, base_db, name, url, s3, endpoint, txs):
    d = os.path.join(workdir, name)
    os.makedirs(d)
    db = os.path.join(d, "source.db")
    shutil.copyfile(base_db, db)
    cfg = os.path.join(d, "litestream.yml")
    rep = (f'      url: "{url}"\n' if not s3 else
           f"      type: s3\n      bucket: {BUCKET}\n      path: {name}\n      endpoint: {endpoint}\n"
           f"      region: us-east-1\n      force-path-style: true\n")
    with open(cfg, "w") as f:
        f.write(f"dbs:\n  - path: {db}\n    replica:\n{rep}      sync-interval: 1s\n")
    logf = open(os.path.join(d, "replicate.log"), "wb")
    proc = subprocess.Popen([LITESTREAM, "replicate", "-config", cfg], stdout=logf, stderr=subprocess.STDOUT,
                            env=tool_env(s3), start_new_session=True)
    try:
        t0 = time.time()
        wait_settled(url, s3)
        log(f"{name}: initial snapshot shipped in {time.time() - t0:.1f}s")
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("PRAGMA synchronous=NORMAL")
        # Bursts separated by > sync interval, so several L0 files exist for the PITR row.
        for burst in range(3):
            for i in range(txs // 3):
                c.execute("INSERT INTO events(user_id, kind, created_at, amount, payload) VALUES(?,?,?,?,?)",
                          (i, "bench", time.strftime("%Y-%m-%d %H:%M:%S"), 1.0, os.urandom(45).hex()))
            time.sleep(2.5)
        rows = c.execute("SELECT count(*) FROM events").fetchone()[0]
        c.close()
        files = wait_settled(url, s3)
    finally:
        stop(proc)
    return rows, files


def timed(argv, env, out):
    """Runs one restore; returns (wall s, peak RSS MiB). Fails loudly on a non-zero exit."""
    for p in (out, out + "-wal", out + "-shm"):
        if os.path.exists(p):
            os.remove(p)
    with open(out + ".stderr", "w+") as errf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=errf, stderr=errf, env=env)
        _, status, ru = os.wait4(proc.pid, 0)  # ru_maxrss is the child's VmHWM, in KiB on Linux
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen from waiting
        if proc.returncode != 0:
            errf.seek(0)
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{errf.read()}")
    return wall, ru.ru_maxrss / 1024


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def check_db(path, rows):
    c = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        ok = c.execute("PRAGMA integrity_check").fetchone()[0]
        n = c.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        c.close()
    if ok != "ok" or (rows is not None and n != rows):
        raise SystemExit(f"{path}: integrity_check={ok!r}, {n} rows (expected {rows})")


def bench_case(workdir, label, url, s3, runs, txid, rows):
    """Alternates both tools `runs` times on one replica; returns per-tool results."""
    res = {"litestream": [], "sluice": []}
    shas = set()
    for i in range(runs):
        # Swap who goes first each run, so page-cache and moto warm-up favour neither.
        order = ("litestream", "sluice") if i % 2 == 0 else ("sluice", "litestream")
        for tool in order:
            out = os.path.join(workdir, f"out-{tool}.db")
            flag = "-txid" if tool == "litestream" else "--txid"
            argv = [LITESTREAM if tool == "litestream" else SLUICE, "restore", "-o", out]
            argv += [flag, f"{txid:016x}"] if txid else []
            wall, rss = timed(argv + [url], tool_env(s3), out)
            shas.add(sha256(out))
            if i == 0:
                check_db(out, rows)
            res[tool].append((wall, rss, os.path.getsize(out)))
    if len(shas) != 1:
        raise SystemExit(f"{label}: outputs differ between runs/tools: {shas}")
    log(f"{label}: {runs} runs per tool, identical output (sha256 {shas.pop()[:16]}…)")
    return res


def summarize(label, res):
    rows = []
    med = {t: (statistics.median(w for w, _, _ in r), statistics.median(m for _, m, _ in r)) for t, r in res.items()}
    for tool, r in res.items():
        walls = [w for w, _, _ in r]
        mb = r[0][2] / 1e6
        wall, rss = med[tool]
        ratio = "" if tool == "litestream" else \
            f"{wall / med['litestream'][0]:.2f} / {rss / med['litestream'][1]:.2f}"
        rows.append(f"| {label} | {tool} | {wall:.3f} [{min(walls):.3f}..{max(walls):.3f}] | "
                    f"{mb / wall:.0f} | {rss:.1f} | {ratio} |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=100, help="database size in MB (default 100)")
    ap.add_argument("--runs", type=int, default=5, help="restores per tool and case (default 5)")
    ap.add_argument("--txs", type=int, default=300, help="small transactions after the snapshot")
    ap.add_argument("--workdir", default="/tmp/sluice-restore-bench")
    ap.add_argument("--no-build", action="store_true", help="use target/release/sluice as is")
    ap.add_argument("--keep", action="store_true", help="keep the workdir")
    a = ap.parse_args()
    for b in (LITESTREAM, MOTO):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"{b} missing: run scripts/test once to install the Litestream peer venv")
    if not a.no_build:
        log("cargo build --release -p sluice-cli")
        subprocess.run(["cargo", "build", "--release", "-p", "sluice-cli"], cwd=ROOT, check=True)
    if not os.access(SLUICE, os.X_OK):
        raise SystemExit(f"{SLUICE} missing: cargo build --release -p sluice-cli")
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    base = os.path.join(a.workdir, "base.db")
    t0 = time.time()
    make_db(base, a.mb)
    log(f"generated {base}: {os.path.getsize(base) / 1e6:.1f} MB in {time.time() - t0:.0f}s")
    moto, port = start_moto(a.workdir)
    table = []
    try:
        endpoint = f"http://127.0.0.1:{port}"
        targets = [("file", "file://" + os.path.join(a.workdir, "file", "replica"), False),
                   ("s3", f"s3://{BUCKET}/s3?endpoint={endpoint}&region=us-east-1&forcePathStyle=true", True)]
        for name, url, s3 in targets:
            rows, files = build_replica(a.workdir, base, name, url, s3, endpoint, a.txs)
            l0 = sorted(f[2] for f in files if f[0] == 0)
            log(f"{name}: {len(files)} LTX files ({len(l0)} L0), {rows} rows at the end")
            table += summarize(f"{name} latest", bench_case(a.workdir, f"{name} latest", url, s3, a.runs, None, rows))
            if len(l0) >= 2:  # PITR: the state right after a mid-history L0 file
                mid = l0[len(l0) // 2]
                label = f"{name} -txid {mid:x}"
                table += summarize(label, bench_case(a.workdir, label, url, s3, a.runs, mid, None))
    finally:
        stop(moto)
        if not a.keep:
            shutil.rmtree(a.workdir, ignore_errors=True)
    head = [f"Restore of a {a.mb} MB DB ({a.txs} small txs after the snapshot), {a.runs} runs per tool, "
            f"alternating; {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs; S3 = moto on localhost.", "",
            "| target | tool | median wall s [min..max] | MB/s | median peak RSS MiB | sluice/litestream (wall / RSS) |",
            "|---|---|---|---|---|---|"]
    text = "\n".join(head + table) + "\n"
    print(text)
    with open(os.path.join(ROOT, "bench", "results", "restore.md"), "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
