"""Demo application for scripts/demo: creates the database if needed and commits one order
every 200 ms, printing a line per second so the replication can be watched."""
import os
import random
import sqlite3
import sys
import time

path = sys.argv[1]
db = sqlite3.connect(path, timeout=5)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA busy_timeout=5000")
db.execute(
    "CREATE TABLE IF NOT EXISTS orders(id INTEGER PRIMARY KEY, customer TEXT, amount REAL, created_at TEXT)"
)
db.commit()
n = 0
try:
    while True:
        db.execute(
            "INSERT INTO orders(customer, amount, created_at) VALUES (?, ?, datetime('now'))",
            (f"customer-{random.randint(1, 500)}", round(random.uniform(1, 200), 2)),
        )
        db.commit()
        n += 1
        if n % 5 == 0:
            total = db.execute("SELECT count(*) FROM orders").fetchone()[0]
            print(f"writer: {total} orders in {os.path.basename(path)}", flush=True)
        time.sleep(0.2)
except KeyboardInterrupt:
    pass
