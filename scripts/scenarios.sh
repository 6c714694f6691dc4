#!/usr/bin/env bash
# The scenario generator at scale: 100,000 seeds (EDUDMA_SIM_SEEDS to change)
# through the driver that ships, in release, on all cores. Prints the rate
# and what the scenarios covered; a failing seed prints its replay command.
#
#   scripts/scenarios.sh                      100,000 seeds from 0
#   EDUDMA_SIM_SEEDS=1000000 scripts/scenarios.sh
#   EDUDMA_SIM_SEED=5835 scripts/scenarios.sh  one seed, to reproduce
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export EDUDMA_SIM_SEEDS="${EDUDMA_SIM_SEEDS:-100000}"
exec cargo test --release -p edudma-sim --test random -- --nocapture randomized_scenarios
