//! Backends: where the IOCTLs go.
//!
//! [`Backend`] is the narrow seam every command talks through — the three
//! calls a user-mode program makes on a Windows device. Two implementations:
//!
//! - [`windows`] (Windows only): `CreateFileW` + `DeviceIoControl` +
//!   `ReadFile`/`WriteFile` on the installed driver's device.
//! - [`sim`]: the whole driver run in-process on `edudma-sim`.

pub mod sim;
pub mod win32_status;
#[cfg(windows)]
pub mod windows;

use serde::Serialize;

use crate::cli::Cli;
use crate::error::{Error, Result};

/// What a backend is, for `info` and `--json` output.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackendDescription {
    /// A real device opened by path.
    Device {
        /// The path opened.
        path: String,
    },
    /// The simulator, with the knobs it was built with.
    Sim {
        /// The settings in force.
        config: sim::SimSettings,
    },
}

impl std::fmt::Display for BackendDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendDescription::Device { path } => write!(f, "device {path}"),
            BackendDescription::Sim { config } => write!(
                f,
                "simulator (seed {}, {} CPUs, {} map registers, scatter/gather {}, alloc {}, \
                 strategy {}{}, {}-bit dma_mask, {}, window {})",
                config.seed,
                config.cpus,
                config.map_registers,
                if config.scatter_gather { "on" } else { "off" },
                config.alloc,
                config.dma_strategy,
                if config.dma_v3 { "" } else { ", no DMA v3" },
                config.dma_mask_bits,
                if config.msi { "MSI" } else { "line interrupt" },
                config.window
            ),
        }
    }
}

/// A virtual-time reading of the simulator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VirtualClock {
    /// Virtual nanoseconds since the simulated machine started.
    pub now_ns: u64,
}

/// A `DeviceIoControl` started without waiting for it ([`Backend::submit`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Queued {
    /// The control code.
    pub code: u32,
    /// The input buffer.
    pub input: Vec<u8>,
    /// The output buffer (`lpOutBuffer`): the data the driver reads for a
    /// `METHOD_IN_DIRECT` code, else where its answer goes.
    pub buffer: Vec<u8>,
}

/// What a finished [`Queued`] request returned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Completed {
    /// The bytes the driver reported (`IoStatus.Information`).
    pub information: usize,
    /// The answer (empty for a `METHOD_IN_DIRECT` code, whose buffer only
    /// went to the driver), `information` bytes of it at most.
    pub output: Vec<u8>,
}

/// A request in flight, named by the backend that started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// The user-mode calls the tool makes on the device.
///
/// `output` of [`device_control`](Backend::device_control) is both ways, as the
/// `lpOutBuffer` of `DeviceIoControl` is: for `METHOD_IN_DIRECT` codes
/// (`IOCTL_EDUDMA_DMA_WRITE`) it carries the data the driver reads, for the
/// others it receives the answer.
pub trait Backend {
    /// What this backend is.
    fn describe(&self) -> BackendDescription;

    /// `DeviceIoControl(code, input, output)`: returns the bytes the driver
    /// reported (`IoStatus.Information`), or the status it failed with.
    fn device_control(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize>;

    /// `ReadFile` at a byte offset: returns the bytes read (short at the end of the window).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize>;

    /// `WriteFile` at a byte offset: returns the bytes written.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<usize>;

    /// Start `request` and return without waiting for it (overlapped
    /// `DeviceIoControl` on Windows, a submitted IRP on the simulator):
    /// several may be in flight, each finished by [`Backend::complete`].
    fn submit(&mut self, request: Queued) -> Result<Ticket>;

    /// Wait for the request `ticket` names, and give back what it returned
    /// (or the status it failed with).
    fn complete(&mut self, ticket: Ticket) -> Result<Completed>;

    /// The simulator's virtual clock; `None` on a real device.
    fn virtual_clock(&self) -> Option<VirtualClock> {
        None
    }

    /// End the session cleanly. On the simulator this removes the device and
    /// runs the leak check, so a driver that leaks fails the command.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Open the backend the command line asks for; `sim_knobs_given` are the
/// simulator's flags it set, refused without `--sim`.
pub fn open(cli: &Cli, sim_knobs_given: &[&str]) -> Result<Box<dyn Backend>> {
    if cli.target.sim {
        // The simulator runs the driver's own sources built for Linux.
        #[cfg(not(windows))]
        return Ok(Box::new(sim::SimBackend::new(&cli.sim)?));
        #[cfg(windows)]
        return Err(Error::Usage(
            "--sim runs on Linux only (it runs the driver's sources on a simulated Windows)".into(),
        ));
    }
    if !sim_knobs_given.is_empty() {
        return Err(Error::Usage(format!(
            "{} only make{} sense with the simulator: add --sim",
            sim_knobs_given.join(", "),
            if sim_knobs_given.len() == 1 { "s" } else { "" }
        )));
    }
    open_device(cli.target.device.as_deref())
}

#[cfg(windows)]
fn open_device(path: Option<&str>) -> Result<Box<dyn Backend>> {
    Ok(Box::new(windows::WindowsBackend::open(path)?))
}

#[cfg(not(windows))]
fn open_device(path: Option<&str>) -> Result<Box<dyn Backend>> {
    let path = path.unwrap_or(edudma_core::ioctl::DEVICE_INTERFACE_NAME);
    Err(Error::Unsupported(format!(
        "cannot open {path}: real devices exist only on Windows with the edudma driver \
         installed; run with --sim to use the simulated driver"
    )))
}
