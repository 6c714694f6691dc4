//! The simulated backend: the whole driver, in-process, on `edudma-sim`.
// On Windows only the settings' shape is kept (for `--json` output types).
#![cfg_attr(windows, allow(unused_imports, dead_code))]

use edudma_core::NtStatus;
use edudma_core::ioctl::{METHOD_IN_DIRECT, method_of};
#[cfg(not(windows))]
use edudma_sim::io::IrpId;
#[cfg(not(windows))]
use edudma_sim::machine::IrpSpec;
#[cfg(not(windows))]
use edudma_sim::{
    Allocation, CorruptByte, DmaStrategy, Placement, SimConfig, SimError, SimMachine,
};
use serde::Serialize;
#[cfg(not(windows))]
use std::collections::BTreeMap;

use super::{Backend, BackendDescription, Completed, Queued, Ticket, VirtualClock};
use crate::cli::{AllocMode, PlacementName, SimOptions, StrategyName, WindowSize};
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
    /// The device's `dma_mask` width (the driver's `DmaAddressWidth` is the smaller of it and 28).
    pub dma_mask_bits: u32,
    /// Message-signalled interrupt.
    pub msi: bool,
    /// Window in bytes.
    pub window: u32,
    /// QEMU 8.2.1 or newer (implied by a 4096-byte window).
    pub qemu_fixed_range_check: bool,
    /// Percent of channel allocations that find the map registers busy.
    pub contention_percent: u32,
    /// Where user buffers' pages come from.
    pub placement: &'static str,
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
            contention_percent: config.contention_percent,
            placement: match config.placement {
                Placement::Any => "any",
                Placement::Low => "low",
                Placement::High => "high",
                Placement::Mixed => "mixed",
            },
            inject_corruption: config.corrupt_byte_injection.map(|c| c.transfer),
        }
    }
}

/// The byte of the corrupted transfer that gets flipped (modulo its length).
const CORRUPTED_BYTE: u32 = 3;

#[cfg(not(windows))]
/// The simulator configuration the command line asks for. The parser has
/// already held every number to its range.
pub fn config_from_options(options: &SimOptions) -> Result<SimConfig> {
    let mut config = SimConfig {
        seed: options.seed,
        memory_mib: u64::from(options.memory_mib),
        map_registers: options.map_registers,
        scatter_gather: options.scatter_gather.is_on(),
        allocation: match options.alloc {
            AllocMode::Sync => Allocation::Sync,
            AllocMode::Async => Allocation::Async,
        },
        dma_strategy: match options.dma_strategy {
            StrategyName::V3Packet => DmaStrategy::V3Packet,
            StrategyName::V1Packet => DmaStrategy::V1Packet,
            StrategyName::SgList => DmaStrategy::SgList,
            StrategyName::CommonBuffer => DmaStrategy::CommonBuffer,
        },
        dma_v3: !options.no_dma_v3,
        cpus: options.cpus as usize,
        dma_mask_bits: options.dma_mask_bits,
        msi: options.msi,
        window: options.window.bytes(),
        // A 4096-byte window is only safe on a QEMU whose range check is fixed.
        qemu_fixed_range_check: options.window == WindowSize::W4096,
        trace: options.trace.is_some(),
        contention_percent: options.contention_percent,
        placement: match options.placement {
            PlacementName::Any => Placement::Any,
            PlacementName::Low => Placement::Low,
            PlacementName::High => Placement::High,
            PlacementName::Mixed => Placement::Mixed,
        },
        ..SimConfig::default()
    };
    if let Some(transfer) = options.inject_corruption {
        if transfer == 0 {
            return Err(Error::Usage(
                "--inject-corruption counts transfers from 1".into(),
            ));
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
    /// Where the timeline goes (`--trace`).
    trace: Option<std::path::PathBuf>,
    /// Requests in flight: the IRP and the control code of each.
    in_flight: BTreeMap<Ticket, (IrpId, u32)>,
    next_ticket: u64,
}

#[cfg(not(windows))]
impl SimBackend {
    /// Write the timeline so far to the `--trace` file.
    fn write_trace(&self) -> Result<()> {
        let (Some(path), Some(machine)) = (&self.trace, &self.machine) else {
            return Ok(());
        };
        let json = machine.trace_json().unwrap_or_default();
        std::fs::write(path, json).map_err(|source| Error::Output {
            path: Some(path.clone()),
            source,
        })
    }
}

#[cfg(not(windows))]
impl Drop for SimBackend {
    fn drop(&mut self) {
        // A command that failed before `finish`: its timeline still helps.
        let _ = self.write_trace();
    }
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
            trace: options.trace.clone(),
            in_flight: BTreeMap::new(),
            next_ticket: 1,
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

    fn submit(&mut self, request: Queued) -> Result<Ticket> {
        let operation = operation_name(request.code);
        let output_length = u32::try_from(request.buffer.len()).map_err(|_| {
            Error::Usage(format!(
                "{} bytes is too long for one request: use at most 4096",
                request.buffer.len()
            ))
        })?;
        let data = if method_of(request.code) == METHOD_IN_DIRECT {
            request.buffer
        } else {
            Vec::new()
        };
        let irp = self
            .machine()?
            .submit(IrpSpec::Control {
                code: request.code,
                input: request.input,
                output_length,
                data,
            })
            .map_err(|error| sim_error(operation, error))?;
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.in_flight.insert(ticket, (irp, request.code));
        Ok(ticket)
    }

    fn complete(&mut self, ticket: Ticket) -> Result<Completed> {
        let Some((irp, code)) = self.in_flight.remove(&ticket) else {
            return Err(Error::Simulator(format!(
                "no request in flight has ticket {}",
                ticket.0
            )));
        };
        let operation = operation_name(code);
        let result = self
            .machine()?
            .wait(irp)
            .map_err(|error| sim_error(operation, error))?;
        if result.status.is_error() {
            return Err(Error::Driver {
                operation,
                status: result.status,
            });
        }
        let output = if method_of(code) == METHOD_IN_DIRECT {
            Vec::new()
        } else {
            result.output
        };
        Ok(Completed {
            information: result.information,
            output,
        })
    }

    fn virtual_clock(&self) -> Option<VirtualClock> {
        let elapsed = self.machine.as_ref()?.elapsed();
        Some(VirtualClock {
            now_ns: u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        })
    }

    fn finish(&mut self) -> Result<()> {
        self.write_trace()?;
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

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;
    use crate::cli::Invocation;

    #[test]
    fn the_help_defaults_are_the_simulator_defaults_with_the_infs_strategy() {
        let invocation = Invocation::parse_from(["edudmactl", "--sim", "info"]).unwrap();
        let config = config_from_options(&invocation.cli.sim).unwrap();
        // The simulator's default machine runs the ten steps; the tool runs
        // the driver as the INF installs it.
        let installed = SimConfig {
            dma_strategy: DmaStrategy::from_registry(None),
            ..SimConfig::default()
        };
        assert_eq!(config.dma_strategy, DmaStrategy::CommonBuffer);
        assert_eq!(SimSettings::of(&config), SimSettings::of(&installed));
    }

    #[test]
    fn every_knob_reaches_the_configuration() {
        let invocation = Invocation::parse_from([
            "edudmactl",
            "--sim",
            "--seed",
            "0x10",
            "--memory-mib",
            "0x1200",
            "--map-registers",
            "0x3",
            "--cpus",
            "0x4",
            "--dma-mask-bits",
            "0x21",
            "--window",
            "4096",
            "--scatter-gather",
            "off",
            "--contention-percent",
            "0",
            "info",
        ])
        .unwrap();
        let config = config_from_options(&invocation.cli.sim).unwrap();
        assert_eq!(
            (
                config.seed,
                config.memory_mib,
                config.map_registers,
                config.cpus
            ),
            (16, 4608, 3, 4)
        );
        assert_eq!(config.dma_mask_bits, 33);
        assert!(config.qemu_fixed_range_check && !config.scatter_gather);
        assert_eq!(config.contention_percent, 0);
    }
}
