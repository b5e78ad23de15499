#!/usr/bin/env python3
"""Idle VFS readers: S3 requests per minute made by one process that holds N open
connections to a replica and does nothing, for Litestream's VFS (litestream-vfs 0.5.17) and
Sluice's, side by side on the same moto server. Requests are counted from moto's access log.

    .venv-test/bin/python bench/vfs_idle.py [--connections 4] [--seconds 60]

Needs the venv scripts/test creates (moto, boto3, litestream-vfs) and
target/release/libsluice_vfs.so (cargo build --release).
"""
import argparse
import glob
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV = os.path.join(REPO, ".venv-test")
FIXTURE = os.path.join(REPO, "fixtures", "litestream-0.5.17", "pitr", "replica")

CHILD = r"""
import sqlite3, sys, time
so, vfs, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(so)
conns = [sqlite3.connect("file:app.db?vfs=%s" % vfs, uri=True) for _ in range(n)]
for c in conns:
    c.execute("SELECT count(*) FROM sqlite_schema").fetchone()
print("READY", flush=True)
time.sleep(seconds)
print("DONE", flush=True)
"""


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def requests_in(log):
    with open(log, errors="replace") as f:
        return sum(1 for line in f if '" 200 ' in line or '" 206 ' in line or '" 404 ' in line)


def upload(endpoint, bucket, prefix):
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="test", aws_secret_access_key="test")
    s3.create_bucket(Bucket=bucket)
    for level_dir in sorted(glob.glob(os.path.join(FIXTURE, "ltx", "*"))):
        level = int(os.path.basename(level_dir))
        for path in sorted(glob.glob(os.path.join(level_dir, "*.ltx"))):
            key = "%s/%04x/%s" % (prefix, level, os.path.basename(path))
            s3.put_object(Bucket=bucket, Key=key, Body=open(path, "rb").read())


def measure(name, so, vfs, env, moto_log, n, seconds):
    child = subprocess.Popen([sys.executable, "-c", CHILD, so, vfs, str(n), str(seconds)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert child.stdout.readline().strip() == "READY", name + ": child did not get ready"
    time.sleep(2)  # let the open settle (first polls)
    before, t0 = requests_in(moto_log), time.monotonic()
    child.stdout.readline()
    child.wait()
    after, dt = requests_in(moto_log), time.monotonic() - t0
    per_min = (after - before) * 60.0 / dt
    print("%-10s %d idle connections, %.0f s: %d requests = %.1f per minute"
          % (name, n, dt, after - before, per_min), flush=True)
    return per_min


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60)
    a = ap.parse_args()
    port = free_port()
    endpoint = "http://127.0.0.1:%d" % port
    moto_log = "/tmp/vfs_idle_moto_%d.log" % port
    moto = subprocess.Popen([os.path.join(VENV, "bin", "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=open(moto_log, "w"), stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        upload(endpoint, "idle", "db")
        url = "s3://idle/db?endpoint=%s&region=us-east-1&forcePathStyle=true" % endpoint
        base = dict(os.environ, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_REGION="us-east-1")
        base.pop("AWS_CA_BUNDLE", None)  # breaks Litestream's S3 client
        ls_so = glob.glob(os.path.join(VENV, "lib", "python3*", "site-packages", "litestream_vfs", "litestream-vfs.so"))[0]
        sl_so = os.path.join(REPO, "target", "release", "libsluice_vfs.so")
        ls = measure("litestream", ls_so, "litestream", dict(base, LITESTREAM_REPLICA_URL=url), moto_log,
                     a.connections, a.seconds)
        sl = measure("sluice", sl_so, "sluice", dict(base, SLUICE_REPLICA_URL=url), moto_log,
                     a.connections, a.seconds)
        print("ratio sluice/litestream: %.3f" % (sl / ls if ls else float("nan")))
    finally:
        moto.terminate()
        moto.wait()
        os.unlink(moto_log)


if __name__ == "__main__":
    main()
