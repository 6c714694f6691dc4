//! The commands, one module each. Each prints its own result (text or JSON)
//! and returns an [`Outcome`]; errors that stop it early are [`Error`]s.
//!
//! [`Error`]: crate::error::Error

pub mod bench;
pub mod info;
pub mod loopback;
pub mod read;
pub mod script;
pub mod selftest;
pub mod stats;
pub mod write;

use crate::cli::Command;
use crate::device::Device;
use crate::error::{EXIT_DEVICE, EXIT_MISMATCH, EXIT_OK, Result};
use crate::output::Output;

/// How a command that ran to its end went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Everything as expected.
    Success,
    /// The device failed a check (exit 1); the message says which.
    DeviceFailure(String),
    /// Bytes read back differ from the bytes written (exit 3).
    Mismatch(String),
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Success => EXIT_OK,
            Outcome::DeviceFailure(_) => EXIT_DEVICE,
            Outcome::Mismatch(_) => EXIT_MISMATCH,
        }
    }
}

/// Run one command.
pub fn run(command: &Command, device: &mut Device, output: &Output) -> Result<Outcome> {
    match command {
        Command::Info => info::run(device, output),
        Command::Selftest(args) => selftest::run(device, args, output),
        Command::Write(args) => write::run(device, args, output),
        Command::Read(args) => read::run(device, args, output),
        Command::Loopback(args) => loopback::run(device, args, output),
        Command::Stats(args) => stats::run(device, args, output),
        Command::Bench(args) => bench::run(device, args, output),
        Command::Script(args) => script::run(device, args, output),
        // main prints help before any device is opened.
        Command::Help(_) => Err(crate::error::Error::Usage(
            "help is not a command that runs on a device: run `edudmactl help`".into(),
        )),
    }
}
