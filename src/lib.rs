//! edudma: the Windows WDM driver for QEMU's edu device (glue only; the
//! decisions live in `edudma-core`). Compiled for Windows; on any other host
//! every module is cfg'd out and the package is an empty cdylib, except in
//! the simulator's host build (`crates/edudma-driver-host`, which sets
//! `cfg(edudma_host)`): there the same modules compile against the
//! generated wdk-sys stand-in. The two builds differ only in `ffi`'s
//! register accessors (inline MMIO on Windows, calls into the simulator on
//! the host), and the host build has no kernel panic handler or pool
//! allocator.
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

#[cfg(any(windows, edudma_host))]
mod device;
#[cfg(any(windows, edudma_host))]
mod dispatch;
#[cfg(any(windows, edudma_host))]
mod dma_ops;
#[cfg(any(windows, edudma_host))]
mod driver;
#[cfg(any(windows, edudma_host))]
pub mod ffi;
#[cfg(any(windows, edudma_host))]
mod isr;
#[cfg(any(windows, edudma_host))]
mod pnp;
#[cfg(any(windows, edudma_host))]
mod power;
#[cfg(any(windows, edudma_host))]
mod registers;
#[cfg(any(windows, edudma_host))]
mod registry;
#[cfg(any(windows, edudma_host))]
mod startio;
#[cfg(any(windows, edudma_host))]
mod strings;
