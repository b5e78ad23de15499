#!/usr/bin/env bash
# The 1 GiB lock-page test (crates/sluice-cli/tests/lock_page.rs, #[ignore]d in the suite):
# a database past 1 GiB, whose page at byte offset 2^30 SQLite never stores, replicated by
# sluice and restored by sluice and litestream, at 4 KiB and 64 KiB pages. Built in release
# mode (SQLite at -O0 makes the 1.1 GiB fill, hashes and integrity checks very slow). Needs
# about 5 GiB of free disk in $TMPDIR.
#
#   bench/lock_page.sh            (both page sizes, one after the other)
#   bench/lock_page.sh lock_page_64k
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
exec "$ROOT/scripts/test" --release -p sluice-cli --test lock_page "${@:-lock_page}" \
    -- --ignored --nocapture --test-threads=1
