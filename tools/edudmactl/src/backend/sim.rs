//! The simulated backend: the whole driver, in-process, on `edudma-sim`.
// On Windows only the settings' shape is kept (for `--json` output types).
#![cfg_attr(windows, allow(unused_imports, dead_code))]

use edudma_core::NtStatus;
use edudma_core::ioctl::{METHOD_IN_DIRECT, method_of};
#[cfg(not(windows))]
use edudma_sim::{Allocation, CorruptByte, DmaStrategy, SimConfig, SimError, SimMachine};
use serde::Serialize;

use super::{Backend, BackendDescription, VirtualClock};
use crate::cli::{AllocMode, SimOptions, StrategyName, WindowSize};
use crate::device::operation_name;
use crate::error::{Error, Result};

/// The simulator settings in force: the command line's knobs over
/// `SimConfig::default()`, as JSON and text show them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SimSettings {
    /// Seed of the run.
    pub seed: u64,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Map registers the adapter grants.
    pub map_registers: u32,
    /// Whether the adapter does scatter/gather.
    pub scatter_gather: bool,
    /// `"sync"` (sync then async) or `"async"`.
    pub alloc: &'static str,
    /// The driver's `DmaStrategy` setting (the strategy in force is `info`'s).
    pub dma_strategy: &'static str,
    /// The HAL has DMA version 3.
    pub dma_v3: bool,
    /// Simulated CPUs.
    pub cpus: usize,
    /// DMA address bits (the device's `dma_mask` and the driver's `DmaAddressWidth`).
    pub dma_mask_bits: u32,
    /// Message-signalled interrupt.
    pub msi: bool,
    /// Window in bytes.
    pub window: u32,
    /// QEMU 8.2.1 or newer (implied by a 4096-byte window).
    pub qemu_fixed_range_check: bool,
    /// The DMA transfer (1-based) that gets a corrupted byte, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inject_corruption: Option<u64>,
}

#[cfg(not(windows))]
impl SimSettings {
    /// Describe a configuration.
    pub fn of(config: &SimConfig) -> Self {
        Self {
            seed: config.seed,
            memory_mib: config.memory_mib,
            map_registers: config.map_registers,
            scatter_gather: config.scatter_gather,
            alloc: match config.allocation {
                Allocation::Sync => "sync",
                Allocation::Async => "async",
            },
            dma_strategy: config.dma_strategy.code().name(),
            dma_v3: config.dma_v3,
            cpus: config.cpus,
            dma_mask_bits: config.dma_mask_bits,
            msi: config.msi,
            window: config.window,
            qemu_fixed_range_check: config.qemu_fixed_range_check,
            inject_corruption: config.corrupt_byte_injection.map(|c| c.transfer),
        }
    }
}

/// The byte of the corrupted transfer that gets flipped (modulo its length).
const CORRUPTED_BYTE: u32 = 3;

#[cfg(not(windows))]
/// The simulator configuration the command line asks for, or a usage error.
pub fn config_from_options(options: &SimOptions) -> Result<SimConfig> {
    let mut config = SimConfig::default();
    let bad = |message: String| Err(Error::Usage(message));
    if let Some(seed) = options.seed {
        config.seed = seed;
    }
    if let Some(mib) = options.memory_mib {
        if !(512..=65536).contains(&mib) {
            return bad(format!(
                "--memory-mib {mib} is out of range: use 512 to 65536"
            ));
        }
        config.memory_mib = u64::from(mib);
    }
    if let Some(registers) = options.map_registers {
        if !(1..=4096).contains(&registers) {
            return bad(format!(
                "--map-registers {registers} is out of range: use 1 to 4096"
            ));
        }
        config.map_registers = registers;
    }
    if let Some(sg) = options.scatter_gather {
        config.scatter_gather = sg.is_on();
    }
    if let Some(alloc) = options.alloc {
        config.allocation = match alloc {
            AllocMode::Sync => Allocation::Sync,
            AllocMode::Async => Allocation::Async,
        };
    }
    if let Some(strategy) = options.dma_strategy {
        config.dma_strategy = match strategy {
            StrategyName::V3Packet => DmaStrategy::V3Packet,
            StrategyName::V1Packet => DmaStrategy::V1Packet,
            StrategyName::SgList => DmaStrategy::SgList,
            StrategyName::CommonBuffer => DmaStrategy::CommonBuffer,
        };
    }
    config.dma_v3 = !options.no_dma_v3;
    if let Some(cpus) = options.cpus {
        if !(1..=64).contains(&cpus) {
            return bad(format!("--cpus {cpus} is out of range: use 1 to 64"));
        }
        config.cpus = cpus as usize;
    }
    if let Some(bits) = options.dma_mask_bits {
        if !(16..=64).contains(&bits) {
            return bad(format!(
                "--dma-mask-bits {bits} is out of range: use 16 to 64"
            ));
        }
        config.dma_mask_bits = bits;
    }
    config.msi = options.msi;
    if let Some(window) = options.window {
        config.window = window.bytes();
        // A 4096-byte window is only safe on a QEMU whose range check is fixed.
        config.qemu_fixed_range_check = window == WindowSize::W4096;
    }
    if let Some(transfer) = options.inject_corruption {
        if transfer == 0 {
            return bad("--inject-corruption counts transfers from 1".into());
        }
        config.corrupt_byte_injection = Some(CorruptByte {
            transfer,
            byte: CORRUPTED_BYTE,
        });
    }
    Ok(config)
}

#[cfg(not(windows))]
/// The tool's error for a simulator error on `operation`.
fn sim_error(operation: &'static str, error: SimError) -> Error {
    match error {
        SimError::Status(status) => Error::Driver { operation, status },
        SimError::Crash(crash) => Error::Simulator(format!("during {operation}: {crash}")),
    }
}

#[cfg(not(windows))]
/// The driver running on the simulator.
pub struct SimBackend {
    /// `None` once [`Backend::finish`] has consumed it.
    machine: Option<SimMachine>,
    settings: SimSettings,
}

#[cfg(not(windows))]
impl SimBackend {
    /// Build the simulated machine and start the driver on it.
    pub fn new(options: &SimOptions) -> Result<Self> {
        let config = config_from_options(options)?;
        let settings = SimSettings::of(&config);
        let machine = SimMachine::new(config).map_err(|error| match error {
            SimError::Status(status) => Error::Driver {
                operation: "IRP_MN_START_DEVICE",
                status,
            },
            SimError::Crash(crash) => {
                Error::Simulator(format!("while starting the device: {crash}"))
            }
        })?;
        Ok(Self {
            machine: Some(machine),
            settings,
        })
    }

    fn machine(&mut self) -> Result<&mut SimMachine> {
        self.machine
            .as_mut()
            .ok_or_else(|| Error::Simulator("the simulated machine was already shut down".into()))
    }
}

#[cfg(not(windows))]
impl Backend for SimBackend {
    fn describe(&self) -> BackendDescription {
        BackendDescription::Sim {
            config: self.settings.clone(),
        }
    }

    fn device_control(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize> {
        let operation = operation_name(code);
        let machine = self.machine()?;
        if method_of(code) == METHOD_IN_DIRECT {
            // The driver reads the "output" buffer: it is the data.
            return machine
                .device_control_in(code, input, output)
                .map_err(|error| sim_error(operation, error));
        }
        let output_len = u32::try_from(output.len()).map_err(|_| {
            Error::Usage(format!(
                "{} bytes is too long for one request: use at most 4096",
                output.len()
            ))
        })?;
        let answer = machine
            .device_control(code, input, output_len)
            .map_err(|error| sim_error(operation, error))?;
        if answer.len() > output.len() {
            return Err(Error::Protocol(format!(
                "{operation} returned {} bytes into a {}-byte buffer",
                answer.len(),
                output.len()
            )));
        }
        output[..answer.len()].copy_from_slice(&answer);
        Ok(answer.len())
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let len = u32::try_from(buf.len()).map_err(|_| {
            Error::Usage(format!(
                "{} bytes is too long for one read: use at most 4096",
                buf.len()
            ))
        })?;
        let data = match self.machine()?.read(offset, len) {
            Ok(data) => data,
            // ReadFile at the end of the window: end of file, zero bytes.
            Err(SimError::Status(NtStatus::END_OF_FILE)) => Vec::new(),
            Err(error) => return Err(sim_error("ReadFile", error)),
        };
        if data.len() > buf.len() {
            return Err(Error::Protocol(format!(
                "ReadFile returned {} bytes into a {}-byte buffer",
                data.len(),
                buf.len()
            )));
        }
        buf[..data.len()].copy_from_slice(&data);
        Ok(data.len())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<usize> {
        self.machine()?
            .write(offset, data)
            .map_err(|error| sim_error("WriteFile", error))
    }

    fn virtual_clock(&self) -> Option<VirtualClock> {
        let elapsed = self.machine.as_ref()?.elapsed();
        Some(VirtualClock {
            now_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    fn finish(&mut self) -> Result<()> {
        let Some(machine) = self.machine.take() else {
            return Ok(());
        };
        // Settle, remove the device and check nothing leaked: a driver that
        // left a channel, map register or IRP behind fails here.
        machine
            .finish()
            .map(|_| ())
            .map_err(|error| sim_error("the final removal and leak check", error))
    }
}
