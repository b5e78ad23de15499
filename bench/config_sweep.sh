#!/usr/bin/env bash
# The long configuration sweep: the suite's configuration-space test
# (crates/sluice-cli/tests/replicate_configs.rs) with many cases, one after the other. Case k
# uses seed START+k; page size and auto_vacuum follow the seed modulo 24, so every 24
# consecutive cases cover all 8 page sizes x 3 auto_vacuum modes, and the other dimensions are
# drawn from the seed. Each case runs both directions (sluice replicate -> sluice + litestream
# restore; litestream replicate -> sluice restore). A failing case does not stop the sweep;
# the failing seeds are listed at the end (replay one: SEED=<seed> SLUICE_CONFIG_CASES=1).
#
#   bench/config_sweep.sh [CASES] [START_SEED]     (default: 240 cases from seed 1)
#
# About 10-40 s per case on a 2-core machine (more with bigger pages).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SLUICE_CONFIG_CASES="${1:-240}"
export SEED="${2:-1}"
exec "$ROOT/scripts/test" -p sluice-cli --test replicate_configs replication_across_sqlite_configurations \
    -- --exact --nocapture
