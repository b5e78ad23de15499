#!/usr/bin/env python3
"""Restarting the daemon over idle databases, side by side: `sluice replicate` and
`litestream replicate` 0.5.17 each replicate one directory of N databases of --db-kb KiB (a
`dir:` entry) to S3 (moto) through the counting proxy of many_dbs.py. After every database
has uploaded and the daemon has been idle for --settle-seconds, it is stopped (SIGTERM) and
started again; nothing writes to the databases meanwhile. Over the --window seconds after the
restart it counts object-store requests, LTX files uploaded (PUTs of `.ltx`, by level) and the
daemon's CPU seconds. Files of levels 1–8 are compactions that fall due whatever happens (the
first run is shorter than their intervals); level 0 and 9 files are what a restart uploads.

An untouched database needs nothing uploaded after a restart; a daemon that cannot tell
uploads every database again.

    PEER_VENV=$PWD/.venv-test python3 bench/restart_idle.py --out bench/results/restart-idle.md
Paths in the output are repository-relative.
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import anchor_bench as ab  # noqa: E402
import many_dbs as md  # noqa: E402


def make_dbs(d, n, kb):
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for i in range(n):
        c = sqlite3.connect(os.path.join(d, f"db{i:05d}.db"))
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        c.executemany("INSERT INTO t(v) VALUES (randomblob(1000))", [()] * kb)
        c.commit()
        c.close()


def run_tool(tool, a, work, proxy):
    name = tool.split(":")[0] if ":" not in tool else "other"
    data = os.path.join(work, f"data-{name}")
    make_dbs(data, a.n, a.db_kb)
    cfg = os.path.join(work, f"{name}.yml")
    md.write_config(cfg, data, proxy.listen, f"{name}-restart")
    logf = open(os.path.join(work, f"{name}.log"), "ab")

    cmd = md.tool_cmd(tool.split(":")[0], cfg)
    if ":" in tool:
        cmd[0] = tool.split(":", 1)[1]  # another build of the same tool, to compare versions

    def start():
        return subprocess.Popen(cmd, env=md.tool_env(tool.split(":")[0]), stdout=logf,
                                stderr=subprocess.STDOUT, start_new_session=True)

    _, p0 = proxy.snapshot()
    proc = start()
    deadline = time.time() + 600
    while time.time() < deadline:
        with proxy.lock:
            seen = {db for (_, db, _, _) in proxy.puts[p0:]}
        if len(seen) >= a.n:
            break
        time.sleep(0.1)
    ab.log(f"{tool}: first start done ({len(seen)} databases); idle {a.settle_seconds} s")
    time.sleep(a.settle_seconds)
    ab.stop_proc(proc)
    c0, p0 = proxy.snapshot()
    t0 = time.time()
    proc = start()
    time.sleep(a.window)
    cpu = ab.proc_cpu_s(proc.pid)
    c1, p1 = proxy.snapshot()
    ab.stop_proc(proc)
    reqs = {k: c1.get(k, 0) - c0.get(k, 0) for k in c1 if c1.get(k, 0) - c0.get(k, 0)}
    with proxy.lock:
        levels = [lv for (_, _, lv, _) in proxy.puts[p0:p1]]
    res = {"tool": tool if ":" not in tool else "sluice:other-build", "n": a.n, "db_kb": a.db_kb, "window_s": a.window, "requests": sum(reqs.values()),
           "by_kind": reqs, "ltx_puts": p1 - p0, "l0_puts": levels.count(0), "l9_puts": levels.count(9),
           "compaction_puts": sum(1 for lv in levels if 0 < lv < 9), "cpu_s": cpu, "elapsed_s": round(time.time() - t0, 1)}
    ab.log(f"{tool}: restart: {res}")
    return res


def table(results):
    by = {r["tool"]: r for r in results}
    lt, sl = by.get("litestream"), by.get("sluice")
    other = next((r for r in results if ":" in r["tool"]), None)
    rows = [("requests in the window", "requests"), ("LTX files uploaded", "ltx_puts"),
            ("… of them level 0 (new captures or images)", "l0_puts"), ("… level 9 (snapshots)", "l9_puts"),
            ("… levels 1–8 (compaction due anyway)", "compaction_puts"), ("CPU seconds", "cpu_s")]
    head = "| after a restart over idle databases | Litestream | Sluice | ratio |"
    if other:
        head += " Sluice (other build) |"
    out = [head, "|---|---|---|---|" + ("---|" if other else "")]
    for label, k in rows:
        lv, sv = (lt or {}).get(k), (sl or {}).get(k)
        ratio = f"{sv / lv:.2f}×" if lv and sv is not None else "–"
        out.append(f"| {label} | {lv} | {sv} | {ratio} |" + (f" {other.get(k)} |" if other else ""))
    kinds = lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r["by_kind"].items())) if r else "–"
    out.append(f"| requests by kind | {kinds(lt)} | {kinds(sl)} | |" + (f" {kinds(other)} |" if other else ""))
    return "\n".join(out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--db-kb", type=int, default=256)
    p.add_argument("--settle-seconds", type=int, default=10)
    p.add_argument("--window", type=int, default=30)
    p.add_argument("--tools", default="litestream,sluice",
                   help="comma-separated; `sluice:PATH` runs another sluice binary (shown in its own column)")
    p.add_argument("--port-base", type=int, default=9600)
    p.add_argument("--workdir", default="/tmp/sluice-restart-idle")
    p.add_argument("--out", help="markdown file for the table (and a .json beside it)")
    a = p.parse_args()
    shutil.rmtree(a.workdir, ignore_errors=True)
    os.makedirs(a.workdir)
    venv = os.environ.get("PEER_VENV", os.path.join(md.REPO, ".venv-test"))
    moto = ab.Moto(os.path.join(venv, "bin", "moto_server"), a.port_base, a.workdir)
    moto.start()
    moto.create_bucket(md.BUCKET)
    proxy = md.Proxy(a.port_base + 1, a.port_base)
    proxy.start()
    try:
        results = [run_tool(t, a, a.workdir, proxy) for t in a.tools.split(",")]
    finally:
        moto.stop()
    text = (f"# Restart over idle databases\n\n`bench/restart_idle.py --n {a.n} --db-kb {a.db_kb} "
            f"--window {a.window}`; S3 = moto through a counting proxy; nothing writes during the restart.\n\n"
            + table(results) + "\n")
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
