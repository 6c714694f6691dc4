#!/usr/bin/env bash
# The dispatch fuzzer (fuzz/, cargo-fuzz + libFuzzer) for a bounded time:
# installs a nightly toolchain and cargo-fuzz when missing, starts from the
# committed seeds (fuzz/corpus/dispatch) in a scratch corpus so that the
# repository keeps only those, and fails on the first broken invariant
# (the crashing input is left in fuzz/artifacts/dispatch/).
#
#   scripts/fuzz.sh                                   # 60 s
#   FUZZ_SECONDS=600 scripts/fuzz.sh
#   FUZZ_ARGS='-jobs=2 -workers=2' scripts/fuzz.sh    # extra libFuzzer flags
# Replay a find (or replay it on stable, see tests/fuzz_dispatch.rs):
#   cd fuzz && cargo +nightly fuzz run dispatch artifacts/dispatch/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo +nightly install cargo-fuzz --locked
fi
bash scripts/setup.sh   # libclang and the mingw-w64 headers the simulator's build of src/ needs

work="$(mktemp -d)"
mkdir "$work/corpus"
trap 'rm -rf "$work"' EXIT
cd fuzz
cargo +nightly fuzz build dispatch
set +e
# shellcheck disable=SC2086  # FUZZ_ARGS: extra libFuzzer flags, split on purpose
cargo +nightly fuzz run dispatch "$work/corpus" corpus/dispatch -- \
    -max_total_time="$seconds" -max_len=2048 -timeout=60 -print_final_stats=1 \
    ${FUZZ_ARGS:-} >"$work/log" 2>&1
status=$?
set -e
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$work/log" || true
if [ "$status" -ne 0 ]; then
    tail -n 60 "$work/log"
    echo "fuzz: the dispatch target failed (exit $status); input in fuzz/artifacts/dispatch/" >&2
    exit "$status"
fi
grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$work/log" || true
echo "fuzz: dispatch ran ${seconds}s without a broken invariant"
