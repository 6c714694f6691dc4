//! The whole driver in-process: [`SimMachine`] boots the simulated machine,
//! starts the edudma driver on it and offers blocking calls like the ones a
//! user-mode tool makes (`DeviceIoControl`, `ReadFile`, `WriteFile`).

use std::fmt;
use std::time::Duration;

use edudma_core::NtStatus;
pub use edudma_core::engine::DmaStrategy;
use edudma_core::ioctl::{self, DeviceInfo, DmaHeader, SelfTestReport, Stats};
use zerocopy::{FromBytes, IntoBytes};

pub use crate::edu::CorruptByte;
use crate::edu::EduConfig;
use crate::edu::mirror::EduMirror;
use crate::hal::{HalConfig, HalStats};
use crate::io::{FileId, IrpId};
use crate::irql::Irql;
pub use crate::kernel::DeviceFaults;
use crate::kernel::{Crash, KernelStats};
use crate::machine::{IrpResult, IrpSpec, Machine, MachineConfig};
use crate::mdl::BufferLayout;
use crate::native::{NativeConfig, NativeDriver, SchedStats};
pub use crate::phys::Placement;
use crate::sched::{MS, Nanos};
use crate::verifier::Violation;
use crate::wdm::PnpMinor;

/// How channels are allocated (the engine's policy).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Allocation {
    /// The driver's default policy (`AsyncChannelAllocation` unset): the
    /// asynchronous form whenever map registers are needed,
    /// `DMA_SYNCHRONOUS_CALLBACK` first otherwise.
    #[default]
    Sync,
    /// Asynchronous only.
    Async,
}

/// Everything a simulated run is made of. `Default` is a strict, typical
/// machine: 4 GiB, 2 CPUs, 16 map registers, scatter/gather, INTx, a QEMU
/// with the pre-8.2.1 range check and the 4095-byte window.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed: one seed, one run (schedule included).
    pub seed: u64,
    /// Physical memory in MiB (at least 512).
    pub memory_mib: u64,
    /// Map registers `IoGetDmaAdapter` grants at most (1 forces a split per page).
    pub map_registers: u32,
    /// `DEVICE_DESCRIPTION.ScatterGather`.
    pub scatter_gather: bool,
    /// Channel allocation policy.
    pub allocation: Allocation,
    /// The driver's `DmaStrategy` registry value. The simulator's default
    /// machine runs [`DmaStrategy::V3Packet`], the ten steps the suites
    /// stress; the INF installs the driver's default,
    /// [`DmaStrategy::CommonBuffer`] (`edudmactl --sim` uses that).
    pub dma_strategy: DmaStrategy,
    /// The platform has DMA version 3 (false: `IoGetDmaAdapter` returns
    /// NULL for version 3, and the driver falls back to version 1).
    pub dma_v3: bool,
    /// Processors.
    pub cpus: usize,
    /// The device's `dma_mask` width (28 on QEMU's default edu). A width
    /// below 28 is also written to the driver's `DmaAddressWidth` registry
    /// value, as the administrator of such a VM does; wider, the driver
    /// keeps describing 28 bits, which serves every wider device.
    pub dma_mask_bits: u32,
    /// Message-signaled interrupts instead of INTx.
    pub msi: bool,
    /// The driver's DMA window (4095, or 4096 with a fixed QEMU).
    pub window: u32,
    /// QEMU ≥ 8.2.1: a DMA ending at 0x41000 is allowed.
    pub qemu_fixed_range_check: bool,
    /// Flip a byte of one DMA transfer (the data check must catch it).
    pub corrupt_byte_injection: Option<CorruptByte>,
    /// Where user buffers' pages come from.
    pub placement: Placement,
    /// Bounce every page (`None`: as Driver Verifier's DMA verification,
    /// which is on, does; `Some(false)`: only pages the device cannot reach).
    pub double_buffer_all: Option<bool>,
    /// Percent of allocations that find the map registers busy.
    pub contention_percent: u32,
    /// Percent of free asynchronous grants run inside the allocate call.
    pub inline_grant_percent: u32,
    /// Drop these interrupt deliveries (1-based): lost interrupts.
    pub lose_interrupts: Vec<u64>,
    /// Firmware left Bus Master Enable on.
    pub bus_master_at_boot: bool,
    /// Percent of the driver's calls into the kernel at which its CPU is
    /// preempted (another CPU, an interrupt or a timer runs first).
    pub preempt_percent: u32,
    /// Virtual time a blocking call may take before it is a hang.
    pub timeout: Duration,
    /// Percent of `MapTransferEx` calls that map less than they could.
    pub short_map_percent: u32,
    /// Percent of `MapTransferEx` calls that fail (fault injection).
    pub map_failure_percent: u32,
    /// Device faults to inject from boot on (a DMA that never completes,
    /// a wrong ID register at start).
    pub faults: DeviceFaults,
    /// Record a timeline from boot on ([`SimMachine::trace_json`]).
    pub trace: bool,
    /// Run the edu model in lockstep with a real device
    /// ([`crate::edu::mirror`]): the hardware-in-the-loop run of `src/`.
    pub edu_mirror: Option<EduMirror>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            memory_mib: 4096,
            map_registers: 16,
            scatter_gather: true,
            allocation: Allocation::Sync,
            dma_strategy: DmaStrategy::V3Packet,
            dma_v3: true,
            cpus: 2,
            dma_mask_bits: 28,
            msi: false,
            window: edudma_core::engine::DEFAULT_WINDOW,
            qemu_fixed_range_check: false,
            corrupt_byte_injection: None,
            placement: Placement::Any,
            double_buffer_all: None,
            contention_percent: 10,
            inline_grant_percent: 50,
            lose_interrupts: Vec::new(),
            bus_master_at_boot: false,
            preempt_percent: 20,
            timeout: Duration::from_secs(30),
            short_map_percent: 0,
            map_failure_percent: 0,
            faults: DeviceFaults::default(),
            trace: false,
            edu_mirror: None,
        }
    }
}

impl SimConfig {
    fn machine(&self) -> MachineConfig {
        MachineConfig {
            seed: self.seed,
            memory_bytes: self.memory_mib.max(512) << 20,
            cpus: self.cpus.clamp(1, 64),
            hal: HalConfig {
                map_registers: self.map_registers.max(1),
                pool_registers: self.map_registers.max(1).max(64),
                double_buffer_all: self.double_buffer_all,
                inline_grant_percent: self.inline_grant_percent.min(100),
                contention_percent: self.contention_percent.min(100),
                scatter_gather: self.scatter_gather,
                sg_buffer_bytes: None,
                grant_latency_ns: None,
                dma_alignment: 1,
                dma_v3: self.dma_v3,
                short_map_percent: self.short_map_percent.min(100),
                map_failure_percent: self.map_failure_percent.min(100),
            },
            edu: EduConfig {
                dma_mask: if self.dma_mask_bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << self.dma_mask_bits.max(1)) - 1
                },
                fixed_range_check: self.qemu_fixed_range_check,
                corrupt: self.corrupt_byte_injection,
                dma_stall_ns: 0,
            },
            msi: self.msi,
            bus_master_at_boot: self.bus_master_at_boot,
            dma_verification: true,
            mirror: self.edu_mirror.clone(),
        }
    }

    /// The driver's `Device Parameters` (the INF's `AddReg`) and the
    /// interleaving.
    fn native(&self) -> NativeConfig {
        let mut registry = vec![("DmaWindow".to_string(), self.window)];
        if self.allocation == Allocation::Async {
            registry.push(("AsyncChannelAllocation".to_string(), 1));
        }
        // Always written, as the INF's AddReg does.
        registry.push(("DmaStrategy".to_string(), self.dma_strategy.code() as u32));
        if self.dma_mask_bits < edudma_core::regs::DMA_ADDRESS_BITS {
            registry.push(("DmaAddressWidth".to_string(), self.dma_mask_bits));
        }
        NativeConfig {
            seed: self.seed,
            preempt_percent: self.preempt_percent,
            registry,
            ..NativeConfig::default()
        }
    }
}

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The driver completed the request with this error status.
    Status(NtStatus),
    /// The machine crashed (verifier bug check, device fault, hang): the
    /// run is over.
    Crash(Crash),
}

impl SimError {
    /// The status, when the driver answered.
    pub fn status(&self) -> Option<NtStatus> {
        match self {
            SimError::Status(s) => Some(*s),
            SimError::Crash(_) => None,
        }
    }
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Status(s) => write!(f, "{s}: {}", ioctl::explain_status(*s)),
            SimError::Crash(c) => write!(f, "the simulated machine crashed: {c}"),
        }
    }
}

impl std::error::Error for SimError {}

impl From<Crash> for SimError {
    fn from(c: Crash) -> Self {
        SimError::Crash(c)
    }
}

/// Counters of every layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// The driver's own statistics (as `IOCTL_EDUDMA_GET_STATS` returns them).
    pub driver: Stats,
    /// The HAL's.
    pub hal: HalStats,
    /// The kernel's.
    pub kernel: KernelStats,
    /// DMA transfers the device performed.
    pub device_transfers: u64,
    /// Virtual time since boot.
    pub virtual_time: Duration,
    /// The interleaving of the driver's routines.
    pub sched: SchedStats,
    /// Pages double-buffered through map registers.
    pub bounced_pages: u64,
    /// Pages mapped for the device directly.
    pub direct_pages: u64,
}

/// What the verifier saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifierReport {
    /// The bug check, if any.
    pub bugcheck: Option<Violation>,
    /// Every violation, in order.
    pub violations: Vec<Violation>,
}

/// The edudma driver running on the simulated Windows.
pub struct SimMachine {
    machine: Machine<NativeDriver>,
    config: SimConfig,
    layout: BufferLayout,
    removed: bool,
    /// The driver's statistics as last read (kept across removal).
    driver_stats_cached: Stats,
}

impl SimMachine {
    /// Boot and start the device (`IRP_MN_START_DEVICE`).
    pub fn new(config: SimConfig) -> Result<Self, SimError> {
        let native = config.native();
        let mut machine =
            Machine::new_with(&config.machine(), |sys| NativeDriver::new(sys, &native));
        machine.sys().with(|k| {
            k.lost_interrupts = config.lose_interrupts.clone();
            k.device_faults = config.faults.clone();
            if config.trace {
                k.trace = Some(Box::default());
            }
        });
        // DriverEntry and AddDevice, at PASSIVE_LEVEL.
        machine
            .sys()
            .label_next_routine(|| "DriverEntry, AddDevice");
        let loaded = machine.run(0, Irql::Passive, |d, sys| d.load(sys));
        if let Some(c) = machine.crash() {
            return Err(SimError::Crash(c));
        }
        match loaded {
            Some(s) if s.is_success() => {}
            Some(s) => return Err(SimError::Status(s)),
            None => {
                return Err(SimError::Crash(Crash::Hang(
                    "DriverEntry never returned".into(),
                )));
            }
        }
        let mut sim = Self {
            layout: BufferLayout {
                placement: config.placement,
                ..BufferLayout::default()
            },
            machine,
            config,
            removed: false,
            driver_stats_cached: Stats::default(),
        };
        let status = sim.pnp(PnpMinor::StartDevice)?;
        if !status.is_success() {
            // As the PnP manager does after a failed start: the removal,
            // then the unload and the leak check (nothing left mapped).
            sim.remove()?;
            return Err(SimError::Status(status));
        }
        Ok(sim)
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The machine underneath (kernel handle, driver, scheduler).
    pub fn machine(&mut self) -> &mut Machine<NativeDriver> {
        &mut self.machine
    }

    /// How the next buffers are laid out (placement, byte offset, MDL chain).
    pub fn set_buffer_layout(&mut self, layout: BufferLayout) {
        self.layout = layout;
    }

    fn limit(&self) -> Nanos {
        u64::try_from(self.config.timeout.as_nanos()).unwrap_or(u64::MAX)
    }

    fn pnp(&mut self, minor: PnpMinor) -> Result<NtStatus, SimError> {
        let limit = self.limit();
        Ok(self.machine.pnp(minor, limit)?)
    }

    /// Send an IRP without waiting (several may be in flight).
    pub fn submit(&mut self, spec: IrpSpec) -> Result<IrpId, SimError> {
        let layout = self.layout.clone();
        Ok(self.machine.send(spec, &layout)?)
    }

    /// [`SimMachine::submit`] on the handle (file object) `file`.
    pub fn submit_on(&mut self, file: FileId, spec: IrpSpec) -> Result<IrpId, SimError> {
        let layout = self.layout.clone();
        Ok(self.machine.send_on(file, spec, &layout)?)
    }

    /// `CloseHandle` of the last handle of `file` (`IRP_MJ_CLEANUP`).
    pub fn cleanup(&mut self, file: FileId) -> Result<NtStatus, SimError> {
        Ok(self.machine.cleanup(file)?)
    }

    /// Bus Master Enable cleared behind the driver's back, now.
    pub fn clear_bus_master_behind_the_driver(&mut self) {
        self.machine.sys().clear_bus_master_behind_the_driver();
    }

    /// A spurious interrupt (our vector, nothing raised) after `delay`.
    pub fn spurious_interrupt_after(&mut self, delay: Duration) {
        let d = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.machine.sys().schedule_spurious_interrupt(d);
    }

    /// Another device on the shared INTx line interrupts after `delay`
    /// (nothing reaches a message-signaled connection).
    pub fn foreign_interrupt_after(&mut self, delay: Duration) {
        let d = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.machine.sys().schedule_foreign_interrupt(d);
    }

    /// The next `reads` reads of the ID register return a wrong value.
    pub fn corrupt_id_register_reads(&mut self, reads: u32) {
        self.machine
            .sys()
            .with(|k| k.device_faults.wrong_id_reads = reads);
    }

    /// The timeline so far in Chrome's trace-event JSON (Perfetto,
    /// `chrome://tracing`); `None` unless [`SimConfig::trace`] was set.
    pub fn trace_json(&self) -> Option<String> {
        let cpus = self.config.cpus.clamp(1, 64);
        self.machine
            .sys()
            .with(|k| k.trace.as_deref().map(|t| t.to_json(cpus)))
    }

    /// Wait for a submitted IRP.
    pub fn wait(&mut self, irp: IrpId) -> Result<IrpResult, SimError> {
        let limit = self.limit();
        Ok(self.machine.wait(irp, limit)?)
    }

    /// Cancel a submitted IRP after `delay` of virtual time (`IoCancelIrp`).
    pub fn cancel_after(&mut self, irp: IrpId, delay: Duration) {
        let d = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
        self.machine.cancel_after(irp, d);
    }

    fn call(&mut self, spec: IrpSpec) -> Result<IrpResult, SimError> {
        let irp = self.submit(spec)?;
        let r = self.wait(irp)?;
        if r.status.is_error() {
            return Err(SimError::Status(r.status));
        }
        Ok(r)
    }

    /// `DeviceIoControl` for a buffered or OUT_DIRECT code: the output bytes
    /// (`Information` of them).
    pub fn device_control(
        &mut self,
        code: u32,
        input: &[u8],
        output_len: u32,
    ) -> Result<Vec<u8>, SimError> {
        self.call(IrpSpec::Control {
            code,
            input: input.to_vec(),
            output_length: output_len,
            data: Vec::new(),
        })
        .map(|r| r.output)
    }

    /// `DeviceIoControl` for an IN_DIRECT code: `data` is the buffer the
    /// driver reads (the "output" buffer of the call). Returns `Information`.
    pub fn device_control_in(
        &mut self,
        code: u32,
        input: &[u8],
        data: &[u8],
    ) -> Result<usize, SimError> {
        self.call(IrpSpec::Control {
            code,
            input: input.to_vec(),
            output_length: data.len() as u32,
            data: data.to_vec(),
        })
        .map(|r| r.information)
    }

    /// `IOCTL_EDUDMA_DMA_WRITE` of `data` at `device_offset`.
    pub fn dma_write(&mut self, device_offset: u32, data: &[u8]) -> Result<usize, SimError> {
        let header = DmaHeader {
            device_offset,
            flags: 0,
        };
        self.device_control_in(ioctl::IOCTL_EDUDMA_DMA_WRITE, header.as_bytes(), data)
    }

    /// `IOCTL_EDUDMA_DMA_READ` of `length` bytes at `device_offset`.
    pub fn dma_read(&mut self, device_offset: u32, length: u32) -> Result<Vec<u8>, SimError> {
        let header = DmaHeader {
            device_offset,
            flags: 0,
        };
        self.device_control(ioctl::IOCTL_EDUDMA_DMA_READ, header.as_bytes(), length)
    }

    /// `ReadFile` at `offset`.
    pub fn read(&mut self, offset: u64, len: u32) -> Result<Vec<u8>, SimError> {
        self.call(IrpSpec::Read {
            offset: offset as i64,
            length: len,
        })
        .map(|r| r.output)
    }

    /// `WriteFile` at `offset`: bytes written.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<usize, SimError> {
        self.call(IrpSpec::Write {
            offset: offset as i64,
            data: data.to_vec(),
        })
        .map(|r| r.information)
    }

    /// `IOCTL_EDUDMA_GET_INFO`.
    pub fn device_info(&mut self) -> Result<DeviceInfo, SimError> {
        let out = self.device_control(
            ioctl::IOCTL_EDUDMA_GET_INFO,
            &[],
            size_of::<DeviceInfo>() as u32,
        )?;
        DeviceInfo::read_from_bytes(&out)
            .map_err(|_| SimError::Status(NtStatus::INFO_LENGTH_MISMATCH))
    }

    /// `IOCTL_EDUDMA_SELFTEST`.
    pub fn selftest(&mut self) -> Result<SelfTestReport, SimError> {
        let out = self.device_control(
            ioctl::IOCTL_EDUDMA_SELFTEST,
            &[],
            size_of::<SelfTestReport>() as u32,
        )?;
        SelfTestReport::read_from_bytes(&out)
            .map_err(|_| SimError::Status(NtStatus::INFO_LENGTH_MISMATCH))
    }

    /// Counters of every layer; the driver's own through
    /// `IOCTL_EDUDMA_GET_STATS` (zero once the device is gone).
    pub fn stats(&mut self) -> SimStats {
        let driver = self
            .device_control(
                ioctl::IOCTL_EDUDMA_GET_STATS,
                &[],
                size_of::<Stats>() as u32,
            )
            .ok()
            .and_then(|out| Stats::read_from_bytes(&out).ok())
            .unwrap_or(self.driver_stats_cached);
        self.driver_stats_cached = driver;
        let sched = self.machine.driver().sched_stats();
        self.machine.sys().with(|k| {
            let hal = k.hal.stats();
            SimStats {
                driver,
                hal,
                kernel: k.stats,
                device_transfers: k.device.transfers(),
                virtual_time: Duration::from_nanos(k.sched.now()),
                sched,
                bounced_pages: hal.bounced_pages,
                direct_pages: hal.direct_pages,
            }
        })
    }

    /// Virtual time since boot.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.machine.sys().now())
    }

    /// What the verifier saw so far.
    pub fn verifier_report(&self) -> VerifierReport {
        self.machine.sys().with(|k| VerifierReport {
            bugcheck: k.verifier.bugcheck().cloned(),
            violations: k.verifier.violations().to_vec(),
        })
    }

    /// The first crash, if any.
    pub fn crash(&self) -> Option<Crash> {
        self.machine.crash()
    }

    /// The device's 4 KiB buffer, as the device holds it now.
    pub fn device_buffer(&self) -> [u8; 4096] {
        self.machine.sys().with(|k| *k.device.buffer())
    }

    /// Run the machine for some virtual time (timers, late interrupts).
    pub fn run_for(&mut self, d: Duration) -> Result<(), SimError> {
        Ok(self
            .machine
            .run_for(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))?)
    }

    /// `IRP_MN_STOP_DEVICE` (waits for the transfer in flight).
    pub fn stop_device(&mut self) -> Result<NtStatus, SimError> {
        self.pnp(PnpMinor::StopDevice)
    }

    /// `IRP_MN_START_DEVICE` again after a stop.
    pub fn start_device(&mut self) -> Result<NtStatus, SimError> {
        self.pnp(PnpMinor::StartDevice)
    }

    /// Any PnP IRP the PnP manager sends (the queries and their cancels
    /// included), waited for.
    pub fn pnp_irp(&mut self, minor: PnpMinor) -> Result<NtStatus, SimError> {
        self.pnp(minor)
    }

    /// A system sleep and wake (query S3, set S3, the wake's reset, set
    /// S0), with whatever is in flight or queued; see
    /// [`crate::machine::Machine::sleep`].
    pub fn sleep(&mut self) -> Result<NtStatus, SimError> {
        let limit = self.limit();
        Ok(self.machine.sleep(limit)?)
    }

    /// The device disappears (`IRP_MN_SURPRISE_REMOVAL`).
    pub fn surprise_remove(&mut self) -> Result<NtStatus, SimError> {
        self.pnp(PnpMinor::SurpriseRemoval)
    }

    /// `IRP_MN_REMOVE_DEVICE`: every request must be complete afterwards.
    pub fn remove(&mut self) -> Result<NtStatus, SimError> {
        if !self.removed {
            let _ = self.stats();
        }
        self.removed = true;
        let status = self.pnp(PnpMinor::RemoveDevice)?;
        // DriverUnload, then what the driver should have given back.
        self.machine.sys().label_next_routine(|| "DriverUnload");
        self.machine.run(0, Irql::Passive, |d, sys| d.unload(sys));
        if let Some(c) = self.machine.crash() {
            return Err(SimError::Crash(c));
        }
        let leaks = self.machine.driver().leaks();
        if let Some(first) = leaks.first() {
            return Err(SimError::Crash(Crash::Hang(format!(
                "after unload: {first} ({} leak(s))",
                leaks.len()
            ))));
        }
        Ok(status)
    }

    /// End the run: settle outstanding work, remove the device and run the
    /// leak check (no channel, map register, adapter, IRP or MDL left).
    pub fn finish(mut self) -> Result<SimStats, SimError> {
        self.machine.run_until(
            |m| m.sys().with(|k| k.irps.incomplete().is_empty()),
            60_000 * MS,
        )?;
        self.machine.leak_check()?;
        if !self.removed {
            self.remove()?;
        }
        for irp in self.machine.sys().with(|k| k.irps.ids()) {
            self.machine.collect(irp);
        }
        self.machine.leak_check()?;
        Ok(self.stats())
    }
}
