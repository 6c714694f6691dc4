//! The optional parameters under the device's hardware key ("Device
//! Parameters"), written by the INF: `DmaWindow` (4095, the default, or
//! 4096), `AsyncChannelAllocation` (1: never ask for a synchronous grant)
//! `DmaStrategy` (0: `v3-packet`, the default; 1: `v1-packet`; 2:
//! `sg-list`; 3: `common-buffer`) and `DmaAddressWidth` (24 to 28: the
//! device's `dma_mask` width when QEMU's edu was given a narrower one than
//! its default 28 bits; anything else, 28).

use core::ptr;

use edudma_core::engine::{
    AllocationPolicy, DEFAULT_WINDOW, DmaStrategy, dma_address_width_from_registry,
};
use wdk_sys::ntddk::{IoOpenDeviceRegistryKey, ZwClose, ZwQueryValueKey};
use wdk_sys::{_KEY_VALUE_INFORMATION_CLASS, DEVICE_OBJECT, HANDLE};

use crate::ffi;
use crate::strings::{unicode, utf16};

/// The value names.
const DMA_WINDOW: [u16; 9] = utf16("DmaWindow");
const ASYNC_CHANNEL_ALLOCATION: [u16; 22] = utf16("AsyncChannelAllocation");
const DMA_STRATEGY: [u16; 11] = utf16("DmaStrategy");
const DMA_ADDRESS_WIDTH: [u16; 15] = utf16("DmaAddressWidth");

/// Read `DmaWindow`; anything missing or other than 4095/4096 gives the
/// default. PASSIVE_LEVEL.
pub fn dma_window(pdo: *mut DEVICE_OBJECT) -> u32 {
    read_dword(pdo, &DMA_WINDOW)
        .filter(|w| *w == DEFAULT_WINDOW || *w == DEFAULT_WINDOW + 1)
        .unwrap_or(DEFAULT_WINDOW)
}

/// Read `AsyncChannelAllocation` (the core decides what it means). PASSIVE_LEVEL.
pub fn allocation_policy(pdo: *mut DEVICE_OBJECT) -> AllocationPolicy {
    AllocationPolicy::from_registry(read_dword(pdo, &ASYNC_CHANNEL_ALLOCATION))
}

/// Read `DmaStrategy` (the core decides what it means). PASSIVE_LEVEL.
pub fn dma_strategy(pdo: *mut DEVICE_OBJECT) -> DmaStrategy {
    DmaStrategy::from_registry(read_dword(pdo, &DMA_STRATEGY))
}

/// Read `DmaAddressWidth` (the core decides what it means). PASSIVE_LEVEL.
pub fn dma_address_width(pdo: *mut DEVICE_OBJECT) -> u32 {
    dma_address_width_from_registry(read_dword(pdo, &DMA_ADDRESS_WIDTH))
}

fn read_dword(pdo: *mut DEVICE_OBJECT, value: &'static [u16]) -> Option<u32> {
    let mut key: HANDLE = ptr::null_mut();
    // SAFETY: PASSIVE_LEVEL in AddDevice with the PDO we were given.
    let status = unsafe {
        IoOpenDeviceRegistryKey(pdo, ffi::PLUGPLAY_REGKEY_DEVICE, ffi::KEY_READ, &mut key)
    };
    if status < 0 {
        return None;
    }
    let mut name = unicode(value);
    // KEY_VALUE_PARTIAL_INFORMATION: TitleIndex, Type, DataLength, Data[].
    let mut buffer = [0u32; 8];
    let mut result_length = 0u32;
    // SAFETY: an open key, a valid name (never written through), and a
    // 4-byte-aligned buffer of the length given.
    let status = unsafe {
        ZwQueryValueKey(
            key,
            &mut name,
            _KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation,
            buffer.as_mut_ptr().cast(),
            size_of_val(&buffer) as u32,
            &mut result_length,
        )
    };
    // SAFETY: the handle IoOpenDeviceRegistryKey returned.
    unsafe {
        let _ = ZwClose(key);
    }
    (status >= 0 && buffer[1] == ffi::REG_DWORD && buffer[2] == 4).then_some(buffer[3])
}
