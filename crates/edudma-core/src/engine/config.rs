//! What the engine is told at creation and at device start.

use crate::ioctl::{AllocationPolicyCode, InterruptKind};
use crate::regs::DEVICE_BUFFER_SIZE;

/// The default DMA window: 4095 bytes, because QEMU before 8.2.1 aborts the
/// VM on a DMA that reaches the device buffer's last byte.
pub const DEFAULT_WINDOW: u32 = DEVICE_BUFFER_SIZE - 1;

/// How `AllocateAdapterChannelEx` is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllocationPolicy {
    /// `DMA_SYNCHRONOUS_CALLBACK` first; on `STATUS_INSUFFICIENT_RESOURCES`
    /// the asynchronous form, whose grant may arrive later.
    #[default]
    SyncThenAsync,
    /// The asynchronous form only.
    AsyncOnly,
}

impl AllocationPolicy {
    /// The policy a `AsyncChannelAllocation` registry value selects: 1 is
    /// asynchronous only; missing or anything else, the default.
    pub fn from_registry(value: Option<u32>) -> Self {
        match value {
            Some(1) => AllocationPolicy::AsyncOnly,
            _ => AllocationPolicy::SyncThenAsync,
        }
    }

    /// The code reported in [`DeviceInfo`](crate::ioctl::DeviceInfo).
    pub fn code(self) -> AllocationPolicyCode {
        match self {
            AllocationPolicy::SyncThenAsync => AllocationPolicyCode::SyncThenAsync,
            AllocationPolicy::AsyncOnly => AllocationPolicyCode::AsyncOnly,
        }
    }
}

/// Engine settings, fixed for the life of the device object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Bytes of the device buffer requests may use: [`DEFAULT_WINDOW`], or
    /// 4096 on a QEMU with the fixed range check. Clamped to 1..=4096.
    pub window: u32,
    /// How channels are allocated.
    pub allocation: AllocationPolicy,
    /// Watchdog ticks without an interrupt after which the command register
    /// is read to detect a lost interrupt. The first tick can come at any
    /// moment after the command starts, so `n` ticks mean at least `n - 1`
    /// periods: 3 ticks of 100 ms leave the 100 ms edu DMA time a margin
    /// (2 raced real interrupts on QEMU).
    pub lost_interrupt_ticks: u32,
    /// Watchdog ticks after which a device command that is still running
    /// fails its request with `STATUS_IO_TIMEOUT`.
    pub timeout_ticks: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            allocation: AllocationPolicy::SyncThenAsync,
            lost_interrupt_ticks: 3,
            timeout_ticks: 10,
        }
    }
}

impl EngineConfig {
    /// The window actually used: at least 1 byte, at most the device buffer.
    pub fn effective_window(&self) -> u32 {
        self.window.clamp(1, DEVICE_BUFFER_SIZE)
    }
}

/// Facts about the adapter and interrupt the glue obtained at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterFacts {
    /// The DMA operations interface version asked for and obtained (3).
    pub dma_interface_version: u32,
    /// `NumberOfMapRegisters` returned by `IoGetDmaAdapter`.
    pub map_registers: u32,
    /// `DmaAddressWidth` of the device description (28 for edu).
    pub dma_address_width: u32,
    /// Whether the device description asked for scatter/gather.
    pub scatter_gather: bool,
    /// The interrupt connected.
    pub interrupt_kind: InterruptKind,
}

impl AdapterFacts {
    /// The first bus address the device cannot reach. The engine writes
    /// addresses as 32-bit register values, so never more than 2^32.
    pub fn address_limit(&self) -> u64 {
        1u64 << self.dma_address_width.clamp(1, 32)
    }
}

#[cfg(test)]
mod registry_tests {
    use super::AllocationPolicy;

    #[test]
    fn only_one_selects_asynchronous_allocation() {
        assert_eq!(
            AllocationPolicy::from_registry(Some(1)),
            AllocationPolicy::AsyncOnly
        );
        for v in [None, Some(0), Some(2), Some(u32::MAX)] {
            assert_eq!(
                AllocationPolicy::from_registry(v),
                AllocationPolicy::SyncThenAsync
            );
        }
    }
}
