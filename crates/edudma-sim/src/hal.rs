//! The HAL: the one model of [`edudma_hal::hal`], with its bounce pool
//! carved out of the simulator's physical memory.

pub use edudma_hal::hal::*;

use crate::phys::{FrameUse, PAGE_SIZE, PhysicalMemory};

/// Where the pool starts: 32 MiB, below 256 MiB and above the reserved
/// first 16 MiB.
const POOL_FIRST_PFN: u64 = (32 << 20) / PAGE_SIZE;

/// Common-buffer frames: one page each, after the pool's last guard.
const COMMON_FRAMES: u64 = 4;

/// A HAL whose bounce pool is `max(pool_registers, map_registers)`
/// contiguous low frames, reserved for it, with one guard frame at each end,
/// then four frames for common buffers.
pub fn new_hal(config: HalConfig, mem: &mut PhysicalMemory) -> Hal {
    let registers = u64::from(config.pool_registers.max(config.map_registers).max(1));
    let first = POOL_FIRST_PFN;
    mem.reserve(first - 1, registers + 2 + COMMON_FRAMES, FrameUse::Hal);
    let common_first = first + registers + 1;
    let pool = BouncePool {
        frames: (first..first + registers).collect(),
        guards: vec![first - 1, first + registers],
        common: (common_first..common_first + COMMON_FRAMES).collect(),
    };
    Hal::new(config, pool, mem)
}
