//! # edudma-sim
//!
//! The Windows we do not have, strict enough to prove a WDM DMA driver on
//! Linux: sparse physical memory and MDLs, the HAL's DMA version 3 with map
//! registers and bounce pages, Driver Verifier's DMA, IRQL and IRP rules,
//! the I/O manager (IRPs, StartIo queue, cancel, ISR/DPC, timers, PnP) over
//! a deterministic seeded scheduler in virtual time, and QEMU's `edu` device
//! — and the kernel exports through which the real driver (`src/`) runs on it.
//!
//! - [`phys`], [`mdl`]: memory and MDLs.
//! - [`hal`], [`verifier`]: `IoGetDmaAdapter`, the DMA operations and every
//!   rule, a named [`verifier::Violation`] — the one model of `edudma-hal`,
//!   which the hardware-in-the-loop harness runs over the guest's pages too.
//! - [`edu`]: the device model; [`power`]: what sleep and D-states do to it;
//!   [`edu::mirror`]: the model in lockstep with a real device, and
//!   [`lockstep`]: `src/` end to end against one (the HIL's `[SRC]` run).
//! - [`irql`], [`sched`], [`io`], [`kernel`]: processors, time, IRPs and the DDIs.
//! - [`wdm`]: the driver's side of the contract ([`wdm::WdmDriver`]) and the
//!   DMA operations / register file handed to `edudma-core`.
//! - [`machine`]: the kernel plus one driver, run event by event (any
//!   [`wdm::WdmDriver`], including deliberately broken ones in tests).
//! - [`native`]: the kernel the driver that ships runs on — `src/` itself,
//!   built for this host by `crates/edudma-driver-host` — serving its
//!   kernel exports and DMA operations over real instances of the generated
//!   wdk-sys types, on truly concurrent, seeded simulated CPUs. There is no
//!   copy of the glue: the two builds of `src/` differ only in `src/ffi.rs`'s
//!   register accessors (`READ/WRITE_REGISTER_ULONG` inline on Windows,
//!   calls into [`native::exports`] here).
//! - [`sim`]: [`SimMachine`], the whole driver in-process behind blocking
//!   calls (`device_control`, `read`, `write`, ...), for tools and tests.
//!
//! ```
//! use edudma_sim::{SimConfig, SimMachine};
//! let mut sim = SimMachine::new(SimConfig { seed: 1, ..SimConfig::default() }).unwrap();
//! sim.dma_write(0, b"hello").unwrap();
//! assert_eq!(sim.dma_read(0, 5).unwrap(), b"hello");
//! assert!(sim.finish().is_ok()); // removal + leak check
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod edu;
pub mod fuzz;
pub mod hal;
pub mod io;
pub mod irql;
pub mod isolate;
pub mod kernel;
pub mod lockstep;
pub mod machine;
pub mod mdl;
pub mod native;
pub mod phys;
pub mod power;
pub use edudma_hal::rng;
pub mod scenario;
pub mod sched;
pub mod sim;
pub mod trace;
pub use edudma_hal::verifier;
pub mod wdm;

pub use kernel::Crash;
pub use machine::{IrpResult, IrpSpec};
pub use sim::{
    Allocation, CorruptByte, DeviceFaults, DmaStrategy, Placement, SimConfig, SimError, SimMachine,
    SimStats, VerifierReport,
};
pub use verifier::Violation;
