#!/usr/bin/env python3
"""Warm point queries through Sluice's VFS against native SQLite on a local file: the same
database (20 MB, `events(id, user_id, payload)`), replicated by `sluice replicate` to a
`file://` replica; 1000 random `SELECT ... WHERE id = ?`, after a first pass that warmed the
caches (the VFS's page cache is sized to hold the database). Prints both timings and the ratio.

    /usr/bin/python3 bench/vfs_warm.py [--mb 20] [--points 1000]

Needs target/release/{sluice,libsluice_vfs.so} (cargo build --release).
"""
import argparse
import os
import random
import signal
import sqlite3
import subprocess
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SLUICE = os.path.join(REPO, "target", "release", "sluice")
SO = os.path.join(REPO, "target", "release", "libsluice_vfs.so")


def make_db(path, mb):
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE events(id INTEGER PRIMARY KEY, user_id INTEGER, payload TEXT)")
    rows, i = 0, 0
    while os.path.getsize(path) + os.path.getsize(path + "-wal") < mb * 1e6:
        db.executemany("INSERT INTO events VALUES (?, ?, ?)",
                       [(i + k, random.randint(1, 10000), os.urandom(60).hex()) for k in range(10000)])
        db.commit()
        i += 10000
    rows = i
    db.close()
    return rows


def points(conn, ids):
    t = time.perf_counter()
    for i in ids:
        conn.execute("SELECT id, user_id, payload FROM events WHERE id = ?", (i,)).fetchone()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=20)
    ap.add_argument("--points", type=int, default=1000)
    a = ap.parse_args()
    random.seed(1)
    with tempfile.TemporaryDirectory() as d:
        db, replica = os.path.join(d, "app.db"), os.path.join(d, "replica")
        rows = make_db(db, a.mb)
        daemon = subprocess.Popen([SLUICE, "replicate", db, "file://" + replica],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not os.path.isdir(os.path.join(replica, "ltx")):
            time.sleep(0.1)
        time.sleep(2)
        daemon.send_signal(signal.SIGTERM)
        daemon.wait()
        ids = [random.randint(0, rows - 1) for _ in range(a.points)]

        native = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
        points(native, range(0, rows, 7))  # warm the OS page cache and SQLite's
        t_native = min(points(native, ids) for _ in range(3))

        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(SO)
        uri = "file:app.db?vfs=sluice&replica=file://%s&cache_size=%dMB" % (replica, int(a.mb * 2))
        vfs = sqlite3.connect(uri, uri=True)
        t_cold = points(vfs, ids)
        points(vfs, range(0, rows, 7))  # every leaf page is now in the VFS's cache
        t_warm = min(points(vfs, ids) for _ in range(3))
        print("%d random point queries on a %.0f MB database (%d rows):" % (a.points, a.mb, rows))
        print("  native SQLite, local file, warm: %.1f ms (%.1f us/query)" % (t_native * 1e3, t_native * 1e6 / a.points))
        print("  sluice VFS, file:// replica, cold: %.1f ms" % (t_cold * 1e3))
        print("  sluice VFS, file:// replica, warm: %.1f ms (%.1f us/query)" % (t_warm * 1e3, t_warm * 1e6 / a.points))
        print("  warm ratio VFS/native: %.2f" % (t_warm / t_native))


if __name__ == "__main__":
    main()
