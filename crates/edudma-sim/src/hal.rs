//! The HAL: the one model of [`edudma_hal::hal`], with its bounce pool
//! carved out of the simulator's physical memory.

pub use edudma_hal::hal::*;

use crate::phys::{PAGE_SIZE, PhysicalMemory};

/// Where the HAL's frames start: 1 MiB, in the low memory the firmware
/// leaves and Windows' HAL sets aside at boot, so that map registers and
/// common buffers lie below every address width down to 24 bits (16 MiB).
const HAL_FIRST_PFN: u64 = (1 << 20) / PAGE_SIZE;

/// Common-buffer frames: one page each, first, so they stay below 16 MiB
/// however large the pool is.
const COMMON_FRAMES: u64 = 4;

/// A HAL with four common-buffer frames, then a bounce pool of
/// `max(pool_registers, map_registers)` contiguous frames with one guard
/// frame at each end, all from 1 MiB up and reserved for it. Only a pool of
/// more than 3,800 registers reaches past 16 MiB.
pub fn new_hal(config: HalConfig, mem: &mut PhysicalMemory) -> Hal {
    let registers = u64::from(config.pool_registers.max(config.map_registers).max(1));
    let common_first = HAL_FIRST_PFN;
    let first = common_first + COMMON_FRAMES + 1;
    mem.reserve_for_hal(common_first, COMMON_FRAMES + registers + 2);
    let pool = BouncePool {
        frames: (first..first + registers).collect(),
        guards: vec![first - 1, first + registers],
        common: (common_first..common_first + COMMON_FRAMES).collect(),
    };
    Hal::new(config, pool, mem)
}
