#!/usr/bin/env bash
# The README's test command: prerequisites (scripts/setup.sh), then every
# test of the workspace — the driver's own src/ on the simulator included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo test --workspace "$@"
