//! # edudma-hal
//!
//! The HAL's DMA routines, as a bus-master driver sees them, and Driver
//! Verifier's rules — written once, over a physical-memory trait, for both
//! places that need them:
//!
//! - the simulator (`edudma-sim`), whose memory is sparse and simulated and
//!   whose kernel serves these routines to `src/` through `DMA_OPERATIONS`;
//! - the hardware-in-the-loop harness (`edudma-hil`), whose memory is the
//!   Linux guest's pinned pages and whose device is QEMU's real `edu`.
//!
//! One model means one answer to every question a driver can ask, and one
//! set of rule codes (the 0xE6 table on Learn, or a named rule of our own
//! where the table has none).
//!
//! - [`memory`]: the [`PhysMemory`] trait, addressed by physical address.
//! - [`mdl`]: MDLs and their chains, resolved to physical pieces.
//! - [`hal`]: adapters, channels, map registers, bounce pages, flushes.
//! - [`verifier`]: every rule, a named [`verifier::Violation`].
//! - [`irql`], [`rng`]: the caller's IRQL, seeded randomness.

#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod hal;
pub mod irql;
pub mod mdl;
pub mod memory;
pub mod rng;
pub mod verifier;

pub use irql::Irql;
pub use memory::{PAGE_SIZE, PhysMemory};
pub use verifier::{Rule, Verifier, Violation};
