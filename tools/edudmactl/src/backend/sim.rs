//! The simulated backend: the whole driver, in-process, on `edudma-sim`.

use serde::Serialize;

use super::{Backend, BackendDescription, VirtualClock};
use crate::cli::{AllocMode, SimOptions};
use crate::error::{Error, Result};

/// The simulator settings in force (the command line's knobs with defaults filled in).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimSettings {
    /// Seed of the run.
    pub seed: u64,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Map registers the adapter grants.
    pub map_registers: u32,
    /// Whether the adapter does scatter/gather.
    pub scatter_gather: bool,
    /// `"sync"` (sync then async) or `"async"`.
    pub alloc: &'static str,
    /// Simulated CPUs.
    pub cpus: u32,
    /// DMA address bits.
    pub dma_mask_bits: u32,
    /// Message-signalled interrupt.
    pub msi: bool,
    /// Window in bytes.
    pub window: u32,
    /// The DMA transfer (1-based) that gets a corrupted byte, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject_corruption: Option<u64>,
}

impl SimSettings {
    /// Defaults filled in for the knobs not given.
    pub fn from_options(options: &SimOptions) -> Result<Self> {
        let settings = Self {
            seed: options.seed.unwrap_or(1),
            memory_mib: options.memory_mib.unwrap_or(64),
            map_registers: options.map_registers.unwrap_or(16),
            scatter_gather: options.scatter_gather.is_none_or(|sg| sg.is_on()),
            alloc: match options.alloc.unwrap_or(AllocMode::Sync) {
                AllocMode::Sync => "sync",
                AllocMode::Async => "async",
            },
            cpus: options.cpus.unwrap_or(2),
            dma_mask_bits: options.dma_mask_bits.unwrap_or(28),
            msi: options.msi,
            window: options.window.map_or(4095, |w| w.bytes()),
            inject_corruption: options.inject_corruption,
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Usage(message));
        if self.memory_mib == 0 || self.memory_mib > 4096 {
            return bad(format!(
                "--memory-mib {} is out of range: use 1 to 4096",
                self.memory_mib
            ));
        }
        if self.map_registers == 0 {
            return bad("--map-registers must be at least 1".into());
        }
        if self.cpus == 0 || self.cpus > 64 {
            return bad(format!("--cpus {} is out of range: use 1 to 64", self.cpus));
        }
        if !(12..=64).contains(&self.dma_mask_bits) {
            return bad(format!(
                "--dma-mask-bits {} is out of range: use 12 to 64",
                self.dma_mask_bits
            ));
        }
        if self.inject_corruption == Some(0) {
            return bad("--inject-corruption counts from 1".into());
        }
        Ok(())
    }
}

/// The driver running on the simulator.
pub struct SimBackend {
    settings: SimSettings,
}

impl SimBackend {
    /// Build the simulated machine and start the driver on it.
    pub fn new(options: &SimOptions) -> Result<Self> {
        let settings = SimSettings::from_options(options)?;
        Ok(Self { settings })
    }

    fn unavailable<T>(&self) -> Result<T> {
        Err(Error::Simulator(
            "edudma-sim does not provide a driver host yet".into(),
        ))
    }
}

impl Backend for SimBackend {
    fn describe(&self) -> BackendDescription {
        BackendDescription::Sim {
            config: self.settings.clone(),
        }
    }

    fn device_control(&mut self, _code: u32, _input: &[u8], _output: &mut [u8]) -> Result<usize> {
        self.unavailable()
    }

    fn read_at(&mut self, _offset: u64, _buf: &mut [u8]) -> Result<usize> {
        self.unavailable()
    }

    fn write_at(&mut self, _offset: u64, _data: &[u8]) -> Result<usize> {
        self.unavailable()
    }

    fn virtual_clock(&self) -> Option<VirtualClock> {
        Some(VirtualClock::default())
    }
}
