#!/usr/bin/env bash
# Memory-safety check of the real glue: a few end-to-end scenarios of src/
# (built for this host) on the simulator, run under Miri, which must report
# no undefined behaviour and no leaked thread or memory.
#
#   scripts/miri.sh            the scenarios below (a few minutes)
#   scripts/miri.sh TEST ...   other tests of edudma-sim's smoke/glue suites
#
# Miri needs a nightly toolchain with its component; this script installs
# them through rustup (once). The flags: permissive provenance, because
# driver code keeps kernel-object addresses as integers (as C drivers do) and
# rebuilds pointers from them; isolation off, because the scheduler reads
# the clock only for its own bookkeeping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
export MIRIFLAGS="-Zmiri-permissive-provenance -Zmiri-disable-isolation"
if [ "$#" -gt 0 ]; then
    exec cargo +nightly miri test -p edudma-sim --test smoke --test glue -- "$@"
fi
# DriverEntry, start, a write, a read back, the self-test, removal, unload;
# then a write and a read back through each other DMA strategy.
cargo +nightly miri test -p edudma-sim --test smoke -- write_then_read_back
# The cancel paths: IoStartPacket of a cancelled IRP, IRP_MJ_CLEANUP.
cargo +nightly miri test -p edudma-sim --test glue -- \
    an_irp_cancelled_before_io_start_packet_is_cancelled_at_once \
    cleanup_cancels_the_request_of_its_file_object_only
# Power: the S-IRP's completion routine, PoRequestPowerIrp's D-IRPs and
# their callbacks, the D3 drain and the D0 restore.
cargo +nightly miri test -p edudma-sim --test power -- \
    sx_brings_d3_reported_first_and_s0_brings_d0_and_bus_mastering_back
