//! The edu register file over the mapped BAR0: the core's
//! [`RegisterFile`] seam with 32-bit register accesses
//! (`READ_REGISTER_ULONG`/`WRITE_REGISTER_ULONG`, see `ffi`).

use edudma_core::regs::{BAR0_SIZE, RegisterFile};
use wdk_sys::ntddk::KeStallExecutionProcessor;

use crate::ffi;

/// BAR0 as mapped by `MmMapIoSpaceEx` (uncached), or nothing when the device
/// is not mapped: then reads return all-ones and writes are dropped, exactly
/// what a surprise-removed PCI device does.
#[derive(Clone, Copy, Debug)]
pub struct Bar0 {
    base: *mut u8,
}

impl Bar0 {
    /// Wrap a mapping (null = unmapped).
    pub fn new(base: *mut u8) -> Self {
        Self { base }
    }

    /// The register at `offset`, if mapped and inside the BAR.
    fn register(&self, offset: u32) -> Option<*mut u32> {
        if self.base.is_null() || u64::from(offset) + 4 > BAR0_SIZE || offset % 4 != 0 {
            return None;
        }
        // SAFETY: `offset` is inside the 1 MiB mapping checked above.
        Some(unsafe { self.base.add(offset as usize) }.cast::<u32>())
    }
}

impl RegisterFile for Bar0 {
    /// `READ_REGISTER_ULONG`.
    fn read32(&mut self, offset: u32) -> u32 {
        let Some(register) = self.register(offset) else {
            return u32::MAX;
        };
        // SAFETY: an aligned register inside the live uncached BAR mapping;
        // the mapping outlives every `Bar0` (it is unmapped only after the
        // interrupt is disconnected and the engine is stopped).
        unsafe { ffi::read_register_ulong(register) }
    }

    /// `WRITE_REGISTER_ULONG`.
    fn write32(&mut self, offset: u32, value: u32) {
        let Some(register) = self.register(offset) else {
            return;
        };
        // SAFETY: as in `read32`.
        unsafe { ffi::write_register_ulong(register, value) }
    }

    fn stall_us(&mut self, micros: u32) {
        // SAFETY: KeStallExecutionProcessor busy-waits; callable at any IRQL.
        unsafe { KeStallExecutionProcessor(micros) }
    }
}
