//! # edudma-core
//!
//! The brain of the edudma driver, free of Windows: it decides, the glue acts.
//!
//! - [`dma`]: the [`DmaOps`](dma::DmaOps) seam — the version-3 DMA routines of one adapter.
//! - [`grant`]: the lock-free hand-off of an execution routine's grant (re-entrancy).
//! - [`protocol`]: typed tokens over it that allow the ten steps only in order.
//! - [`regs`]: the edu device's register map and the [`RegisterFile`](regs::RegisterFile) seam.
//! - [`ioctl`]: the IOCTL contract shared with `edudmactl`, with validation of every input.
//! - [`status`]: NTSTATUS values.
//!
//! The crate is `no_std`, has no `unsafe`, and does not allocate.

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod dma;
pub mod engine;
pub mod grant;
pub mod ioctl;
pub mod protocol;
pub mod regs;
pub mod status;

pub use status::NtStatus;
