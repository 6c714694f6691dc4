//! Any bytes, as a scenario of user calls (every IOCTL code and method,
//! NULL, short, huge and unaligned buffers, offsets at and past every
//! boundary), cancels, handle closes and PnP/power events, run on the
//! simulator through `src/`'s dispatch routines; `edudma_sim::fuzz` checks
//! every invariant (the same code the stable proptest runs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = edudma_sim::fuzz::run_bytes(data) {
        panic!("{e}");
    }
});
