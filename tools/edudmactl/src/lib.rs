//! `edudmactl`: the user-mode tool of the edudma driver, as a library so the
//! pieces can be tested on their own; the binary is `src/main.rs`.
//!
//! It drives the driver through its IOCTL contract (`edudma_core::ioctl`) on
//! two backends ([`backend`]): the installed device on Windows, or the whole
//! driver run in-process on the simulator (`--sim`), on any host.

pub mod alloc_count;
pub mod backend;
pub mod cli;
pub mod commands;
pub mod device;
pub mod error;
pub mod numbers;
pub mod output;
pub mod patterns;
pub mod progress;
pub mod verify;
