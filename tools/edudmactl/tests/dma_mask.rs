//! `--dma-mask-bits`: every advertised width (24 to 64) loops back and
//! passes the self-test, with large memories too; the driver describes the
//! smaller of the mask and 28 bits; widths outside the range are refused.

mod common;

use common::{json, tool};
use predicates::prelude::*;

/// Loopback and self-test pass with a `bits`-bit device in `memory_mib` MiB.
fn passes(bits: u32, memory_mib: u32, strategy: &str) {
    let bits = bits.to_string();
    let memory = memory_mib.to_string();
    let knobs = [
        "--sim",
        "--json",
        "--memory-mib",
        &memory,
        "--dma-mask-bits",
        &bits,
        "--dma-strategy",
        strategy,
    ];
    let loopback = json(
        &[&knobs[..], &["loopback", "--iterations", "2"]].concat(),
        0,
    );
    assert_eq!(
        loopback["ok"], true,
        "{bits} bits, {memory} MiB, {strategy}"
    );
    assert_eq!(loopback["bytes_verified"], 2 * 4095);
    let selftest = json(&[&knobs[..], &["selftest"]].concat(), 0);
    assert_eq!(
        selftest["ok"], true,
        "{bits} bits, {memory} MiB, {strategy}"
    );
    assert_eq!(selftest["mismatched_bytes"], 0);
}

#[test]
fn every_width_from_24_to_64_works() {
    for bits in [24, 25, 28, 32, 33, 64] {
        passes(bits, 4608, "v3-packet");
    }
}

#[test]
fn wide_and_narrow_devices_work_with_large_memory() {
    for bits in [25, 33, 64] {
        passes(bits, 65536, "v3-packet");
    }
}

#[test]
fn narrow_devices_work_with_every_strategy() {
    for strategy in ["v1-packet", "sg-list", "common-buffer"] {
        passes(24, 4608, strategy);
        passes(25, 8192, strategy);
    }
}

#[test]
fn the_driver_describes_the_smaller_of_the_mask_and_28_bits() {
    for (bits, described) in [(24, 24), (27, 27), (28, 28), (33, 28), (64, 28)] {
        let info = json(
            &[
                "--sim",
                "--json",
                "--dma-mask-bits",
                &bits.to_string(),
                "info",
            ],
            0,
        );
        assert_eq!(info["device"]["dma_address_width"], described, "{bits}");
        assert_eq!(info["backend"]["config"]["dma_mask_bits"], bits);
    }
}

#[test]
fn widths_outside_24_to_64_are_refused() {
    for bits in ["23", "65", "0", "0x41"] {
        tool()
            .args(["--sim", "--dma-mask-bits", bits, "info"])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("out of range: use 24 to 64"));
    }
}
