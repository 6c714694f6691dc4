#!/usr/bin/env bash
# The README's run command: the driver (src/) end to end on the simulator,
# driven by edudmactl. Arguments go to edudmactl after --sim, e.g.
#   scripts/sim.sh selftest
#   scripts/sim.sh --cpus 4 --msi bench --len 4095
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --release -q -p edudmactl -- --sim "$@"
