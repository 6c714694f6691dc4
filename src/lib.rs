//! edudma: the Windows WDM driver for QEMU's edu device (glue only; the
//! decisions live in `edudma-core`). Compiled for Windows only: on any other
//! host every module is cfg'd out and the package is an empty cdylib.
//!
//! Modules, one job each:
//! - [`ffi`]: the only home of bindgen union paths and header-inline helpers;
//! - `driver`: DriverEntry, AddDevice, unload;
//! - `pnp` / `power`: PnP start/stop/removal, power and WMI passed down;
//! - `dispatch`: Create/Close/Cleanup, Read/Write/DeviceControl → core validation;
//! - `startio`: StartIo, cancel routines, completion delivery;
//! - `isr`: ISR, DpcForIsr, watchdog, interrupt connection;
//! - `dma_ops`: `DmaOps` over `DMA_OPERATIONS`, the execution routine;
//! - `registers`: the register file over BAR0; `device`: the extension and
//!   the engine lock; `registry`, `strings`: small helpers.
#![cfg_attr(windows, no_std)]

#[cfg(windows)]
extern crate wdk_panic;

/// Kernel pool allocator for anything that allocates (nothing on the I/O path).
#[cfg(windows)]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[cfg(windows)]
mod device;
#[cfg(windows)]
mod dispatch;
#[cfg(windows)]
mod dma_ops;
#[cfg(windows)]
mod driver;
#[cfg(windows)]
pub mod ffi;
#[cfg(windows)]
mod isr;
#[cfg(windows)]
mod pnp;
#[cfg(windows)]
mod power;
#[cfg(windows)]
mod registers;
#[cfg(windows)]
mod registry;
#[cfg(windows)]
mod startio;
#[cfg(windows)]
mod strings;
