#!/usr/bin/env bash
# The long outage run: the suite's outage test (crates/sluice-cli/tests/replicate_outage.rs)
# with storage unreachable for SECONDS (default 600) in the middle of 100 tx/s of writes,
# lease TTL 5 s. Prints the catch-up time, peak local pending bytes and peak WAL size.
#
#   bench/outage.sh [SECONDS]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SLUICE_OUTAGE_SECS="${1:-600}"
exec "$ROOT/scripts/test" -p sluice-cli --test replicate_outage an_outage_longer_than_the_lease -- --nocapture
