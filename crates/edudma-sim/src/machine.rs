//! The machine: the kernel plus one driver, run event by event. It sends
//! IRPs as user threads would, delivers interrupts, runs DPCs, timers,
//! execution routines and cancels at the IRQL Windows would, and checks
//! after every routine that no spin lock is left held.

use edudma_core::NtStatus;
use edudma_core::ioctl::{METHOD_BUFFERED, METHOD_IN_DIRECT, METHOD_NEITHER, method_of};

use crate::edu::mirror::EduMirror;
use crate::edu::{EduConfig, EduDevice};
use crate::hal::HalConfig;
use crate::io::{DeviceQueue, Irp, IrpId, IrpTable, Major};
use crate::irql::{Cpus, Irql};
use crate::kernel::{Crash, Kernel, KernelStats, Sys};
use crate::mdl::{BufferLayout, MdlTable};
use crate::phys::PhysicalMemory;
use crate::power::{PowerMinor, SystemPower};
use crate::rng::SimRng;
use crate::sched::{DpcId, Event, MS, Nanos, Scheduler, US};
use crate::verifier::{Verifier, Violation};
use crate::wdm::{PnpMinor, PnpOutcome, WdmDriver};

pub mod iomgr;

/// How the kernel and the device are built.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Physical memory in bytes.
    pub memory_bytes: u64,
    /// Processors.
    pub cpus: usize,
    /// The HAL.
    pub hal: HalConfig,
    /// The device.
    pub edu: EduConfig,
    /// The platform offers MSI.
    pub msi: bool,
    /// PCI Bus Master Enable already set by firmware.
    pub bus_master_at_boot: bool,
    /// Driver Verifier's DMA checks.
    pub dma_verification: bool,
    /// A real edu device the model runs in lockstep with (the
    /// hardware-in-the-loop run of `src/`).
    pub mirror: Option<EduMirror>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            memory_bytes: 4 << 30,
            cpus: 2,
            hal: HalConfig::default(),
            edu: EduConfig::default(),
            msi: false,
            bus_master_at_boot: false,
            dma_verification: true,
            mirror: None,
        }
    }
}

/// A completed IRP, as its sender sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrpResult {
    /// `IoStatus.Status`.
    pub status: NtStatus,
    /// `IoStatus.Information`.
    pub information: usize,
    /// Output bytes: the buffered output, or the data read through the MDL.
    pub output: Vec<u8>,
}

/// What to send.
#[derive(Clone, Debug)]
pub enum IrpSpec {
    /// `DeviceIoControl`: `data` is the direct-I/O buffer contents for an
    /// IN_DIRECT code (else ignored; OUT_DIRECT buffers start with junk).
    Control {
        /// Control code.
        code: u32,
        /// Input buffer.
        input: Vec<u8>,
        /// Output buffer length.
        output_length: u32,
        /// IN_DIRECT data (length `output_length`).
        data: Vec<u8>,
    },
    /// `ReadFile` at an offset.
    Read {
        /// Byte offset.
        offset: i64,
        /// Bytes.
        length: u32,
    },
    /// `WriteFile` at an offset.
    Write {
        /// Byte offset.
        offset: i64,
        /// Data.
        data: Vec<u8>,
    },
}

/// Zeros to write after a request's data, a page at a time.
static ZEROS: [u8; 4096] = [0; 4096];

/// The kernel with one driver.
pub struct Machine<D: WdmDriver> {
    sys: Sys,
    driver: D,
    rng: SimRng,
    /// The junk a read's buffer starts with, a chunk at a time: kept, so
    /// each request does not allocate and zero it again.
    junk: Vec<u8>,
}

impl<D: WdmDriver> Drop for Machine<D> {
    fn drop(&mut self) {
        // The driver's threads end here, on the thread that drops the
        // machine, not whenever the last of them lets go of it.
        self.driver.shutdown();
    }
}

impl<D: WdmDriver> Machine<D> {
    /// Boot a machine for `driver`.
    pub fn new(config: &MachineConfig, driver: D) -> Self {
        Self::new_with(config, |_| driver)
    }

    /// Boot a machine for the driver `make` builds on its kernel.
    pub fn new_with(config: &MachineConfig, make: impl FnOnce(&Sys) -> D) -> Self {
        let mut rng = SimRng::new(config.seed);
        let mut mem = PhysicalMemory::new(config.memory_bytes);
        let mut hal_config = config.hal;
        // Driver Verifier's DMA verification double-buffers every transfer.
        hal_config.double_buffer_all = Some(
            hal_config
                .double_buffer_all
                .unwrap_or(config.dma_verification),
        );
        let hal = crate::hal::new_hal(hal_config, &mut mem);
        let mut device = EduDevice::new(config.edu, rng.next_u64());
        device.set_bus_master(config.bus_master_at_boot);
        if let Some(mirror) = &config.mirror {
            device.attach_mirror(mirror.clone());
        }
        let mut verifier = Verifier::new();
        verifier.dma_checks = config.dma_verification;
        let kernel = Kernel {
            common_written: false,
            mem,
            mdls: MdlTable::new(),
            hal,
            device,
            irps: IrpTable::default(),
            dq: DeviceQueue::default(),
            cpus: Cpus::new(config.cpus),
            sched: Scheduler::new(),
            verifier,
            rng: rng.fork(),
            dpc_queued: Default::default(),
            dpc_irp: None,
            dpc_args: Default::default(),
            timer_in_queue: false,
            timer_period: None,
            interrupt: None,
            interrupt_queued: false,
            foreign_line_asserted: false,
            unclaimed_in_a_row: 0,
            msi_available: config.msi,
            contention_queued: false,
            stats: KernelStats::default(),
            faults: Vec::new(),
            lost_interrupts: Vec::new(),
            device_faults: Default::default(),
            trace: None,
            deliveries: 0,
            suppress_until_write: false,
            power: crate::power::PowerModel::default(),
        };
        let sys = Sys::new(kernel);
        let driver = make(&sys);
        Self {
            sys,
            driver,
            rng,
            junk: Vec::new(),
        }
    }

    /// The kernel handle.
    pub fn sys(&self) -> &Sys {
        &self.sys
    }

    /// The driver.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The driver, for change.
    pub fn driver_mut(&mut self) -> &mut D {
        &mut self.driver
    }

    /// The first crash, if any.
    pub fn crash(&self) -> Option<Crash> {
        self.sys.with(|k| k.crash())
    }

    fn check(&self) -> Result<(), Crash> {
        match self.crash() {
            Some(c) => Err(c),
            None => Ok(()),
        }
    }

    /// Run one event. False when nothing is queued.
    pub fn step(&mut self) -> bool {
        step(&self.sys, &mut self.driver)
    }

    /// Cancel an IRP now, from a user thread on a random CPU.
    pub fn cancel(&mut self, irp: IrpId) -> Result<(), Crash> {
        let cpu = self.sys.with(|k| k.random_cpu());
        self.run(cpu, Irql::Passive, move |d, sys| d.io_cancel_irp(sys, irp));
        self.check()
    }

    /// Cancel an IRP now from code running at DISPATCH_LEVEL on a random
    /// CPU (a DPC, or a driver above us holding a spin lock):
    /// `Irp->CancelIrql` is DISPATCH_LEVEL.
    pub fn cancel_at_dispatch(&mut self, irp: IrpId) -> Result<(), Crash> {
        let cpu = self.sys.with(|k| k.random_cpu());
        self.run(cpu, Irql::Dispatch, move |d, sys| d.io_cancel_irp(sys, irp));
        self.check()
    }

    /// Run a routine of the driver on `cpu` at `irql` to its end (events
    /// run meanwhile if it blocks); `None` if the machine crashed first.
    pub fn run<R: Send + 'static>(
        &mut self,
        cpu: usize,
        irql: Irql,
        routine: impl FnOnce(&mut D, &Sys) -> R + Send + 'static,
    ) -> Option<R> {
        if let Some(r) = self.driver.run_routine(&self.sys, cpu, irql, routine) {
            return Some(r);
        }
        loop {
            if let Some(r) = self.driver.poll_blocked(&self.sys) {
                return r.downcast::<R>().ok().map(|b| *b);
            }
            if self.crash().is_some() || !self.step() {
                return None;
            }
        }
    }

    /// Hand out freed IRP ids again (as pool reuses a freed IRP's address).
    pub fn set_reuse_irp_ids(&mut self, reuse: bool) {
        self.sys.with(|k| k.irps.reuse_ids = reuse);
    }

    /// `CloseHandle` of the last handle of `file`: `IRP_MJ_CLEANUP` from a
    /// user thread at PASSIVE_LEVEL.
    pub fn cleanup(&mut self, file: crate::io::FileId) -> Result<NtStatus, Crash> {
        let cpu = self.sys.with(|k| k.random_cpu());
        self.sys.label_next_routine(|| "cleanup");
        let status = self.run(cpu, Irql::Passive, move |d, sys| d.cleanup(sys, file));
        self.check()?;
        Ok(status.unwrap_or(NtStatus::INVALID_DEVICE_STATE))
    }

    /// Cancel an IRP after `delay` of virtual time.
    pub fn cancel_after(&mut self, irp: IrpId, delay: Nanos) {
        self.sys.with(|k| {
            let cpu = k.random_cpu();
            k.sched.schedule(delay, cpu, Event::Cancel(irp));
        })
    }

    /// Build an IRP and call the dispatch routine from a user thread.
    pub fn send(&mut self, spec: IrpSpec, layout: &BufferLayout) -> Result<IrpId, Crash> {
        self.send_on(crate::io::FileId::default(), spec, layout)
    }

    /// [`Machine::send_on`] of an IRP the user cancelled (`CancelIoEx`)
    /// while the I/O manager was still building it: `Irp->Cancel` is set
    /// and no cancel routine was there to call.
    pub fn send_cancelled(&mut self, spec: IrpSpec, layout: &BufferLayout) -> Result<IrpId, Crash> {
        self.send_with(crate::io::FileId::default(), spec, layout, true)
    }

    /// [`Machine::send`] on the handle (file object) `file`.
    pub fn send_on(
        &mut self,
        file: crate::io::FileId,
        spec: IrpSpec,
        layout: &BufferLayout,
    ) -> Result<IrpId, Crash> {
        self.send_with(file, spec, layout, false)
    }

    fn send_with(
        &mut self,
        file: crate::io::FileId,
        spec: IrpSpec,
        layout: &BufferLayout,
        cancelled: bool,
    ) -> Result<IrpId, Crash> {
        let junk = &mut self.junk;
        let irp = self.sys.with(|k| {
            let now = k.sched.now();
            let mut unlockable = false;
            let mut build = |k: &mut Kernel, length: u32, data: Option<&[u8]>| {
                let Some(mdl) =
                    crate::mdl::build(&mut k.mdls, &mut k.mem, &mut k.rng, length, layout)
                else {
                    // IoAllocateMdl or MmProbeAndLockPages failed: the I/O
                    // manager fails the request itself.
                    unlockable = length > 0;
                    return None;
                };
                let length = length as usize;
                match data {
                    // The data straight from the caller, zeros after it.
                    Some(d) => {
                        let have = d.len().min(length);
                        let _ = k.mdls.write(&mut k.mem, mdl, 0, &d[..have]);
                        let mut done = have;
                        while done < length {
                            let n = ZEROS.len().min(length - done);
                            let _ = k.mdls.write(&mut k.mem, mdl, done as u64, &ZEROS[..n]);
                            done += n;
                        }
                    }
                    // Junk the driver must overwrite, a chunk at a time (a
                    // large buffer is not copied whole).
                    None => {
                        let size = length.min(1 << 16);
                        if junk.len() < size {
                            junk.resize(size, 0);
                        }
                        let mut done = 0usize;
                        while done < length {
                            let n = size.min(length - done);
                            k.rng.fill(&mut junk[..n]);
                            let _ = k.mdls.write(&mut k.mem, mdl, done as u64, &junk[..n]);
                            done += n;
                        }
                    }
                }
                Some(mdl)
            };
            let (major, system_buffer, mdl) = match &spec {
                IrpSpec::Control {
                    code,
                    input,
                    output_length,
                    data,
                } => {
                    let major = Major::DeviceControl {
                        code: *code,
                        input_length: input.len() as u32,
                        output_length: *output_length,
                    };
                    match method_of(*code) {
                        METHOD_BUFFERED => {
                            // The input, then zeros: each byte written once.
                            let size = input.len().max(*output_length as usize);
                            let mut sb = Vec::with_capacity(size);
                            sb.extend_from_slice(input);
                            sb.resize(size, 0);
                            (major, sb, None)
                        }
                        // Neither buffer is touched: the driver gets the
                        // caller's addresses (set below).
                        METHOD_NEITHER => (major, Vec::new(), None),
                        m => {
                            let d = (m == METHOD_IN_DIRECT).then_some(&data[..]);
                            (major, input.clone(), build(k, *output_length, d))
                        }
                    }
                }
                IrpSpec::Read { offset, length } => (
                    Major::Read {
                        byte_offset: *offset,
                        length: *length,
                    },
                    Vec::new(),
                    build(k, *length, None),
                ),
                IrpSpec::Write { offset, data } => (
                    Major::Write {
                        byte_offset: *offset,
                        length: data.len() as u32,
                    },
                    Vec::new(),
                    build(k, data.len() as u32, Some(data)),
                ),
            };
            // Named for the trace only: not formatted when there is none.
            let what = move || match major {
                Major::Read {
                    byte_offset,
                    length,
                } => format!("read {length} B at {byte_offset}"),
                Major::Write {
                    byte_offset,
                    length,
                } => {
                    format!("write {length} B at {byte_offset}")
                }
                Major::DeviceControl { code, .. } => format!("IOCTL {code:#010x}"),
            };
            let mut irp = Irp::new(major, system_buffer, mdl, now);
            irp.file = file;
            if cancelled {
                irp.cancel = true;
                irp.cancelled_at = Some(now);
            }
            if unlockable {
                // Never reaches the driver (DeviceIoControl, ReadFile and
                // WriteFile fail with ERROR_NO_SYSTEM_RESOURCES).
                irp.status = Some(NtStatus::INSUFFICIENT_RESOURCES);
                irp.dispatch_returned = Some(NtStatus::INSUFFICIENT_RESOURCES);
                irp.completed = true;
                irp.completed_at = Some(now);
            }
            if let Major::DeviceControl {
                code,
                input_length,
                output_length,
            } = major
                && method_of(code) == METHOD_NEITHER
            {
                // The caller's addresses, unprobed (see `iomgr`).
                irp.type3_input_buffer = iomgr::user_address(input_length, 0);
                irp.user_buffer = iomgr::user_address(output_length, 1);
            }
            let id = k.irps.insert(irp);
            k.trace(|t, now| t.irp_sent(now, id.0, format!("{} (IRP {})", what(), id.0)));
            if unlockable {
                k.trace(|t, now| {
                    t.irp_completed(now, id.0, NtStatus::INSUFFICIENT_RESOURCES.to_string(), 0)
                });
            }
            (id, unlockable)
        });
        let (irp, unlockable) = irp;
        if unlockable {
            return Ok(irp);
        }
        self.dispatch_built(irp)?;
        Ok(irp)
    }

    /// Call the dispatch routine from a user thread for an IRP the I/O
    /// manager built, and hold its return value to the IRP rules.
    fn dispatch_built(&mut self, irp: IrpId) -> Result<(), Crash> {
        self.sys
            .label_next_routine(|| format!("dispatch (IRP {})", irp.0));
        let cpu = self.rng.below(self.sys.with(|k| k.cpus.count()) as u64) as usize;
        let status = self
            .run(cpu, Irql::Passive, move |d, sys| d.dispatch(sys, irp))
            .unwrap_or(NtStatus::PENDING);
        self.sys.with(|k| {
            let Some(i) = k.irps.get_mut(irp) else { return };
            i.dispatch_returned = Some(status);
            let (marked, completed) = (i.pending_marked, i.completed);
            if status == NtStatus::PENDING && !marked {
                k.verifier
                    .report(Violation::PendingWithoutMark { irp: irp.0 });
            } else if marked && status != NtStatus::PENDING {
                k.verifier
                    .report(Violation::MarkedPendingReturnedOther { irp: irp.0 });
            } else if status != NtStatus::PENDING && !completed {
                k.verifier
                    .report(Violation::ReturnedWithoutCompleting { irp: irp.0 });
            }
        });
        self.check()
    }

    /// True once the IRP is completed.
    pub fn is_complete(&self, irp: IrpId) -> bool {
        self.sys
            .with(|k| k.irps.get(irp).is_some_and(|i| i.completed))
    }

    /// Run events until `done` holds, a crash, or `limit` of virtual time
    /// passes (a hang).
    pub fn run_until(
        &mut self,
        mut done: impl FnMut(&Self) -> bool,
        limit: Nanos,
    ) -> Result<(), Crash> {
        let deadline = self.sys.now().saturating_add(limit);
        loop {
            self.check()?;
            if done(self) {
                return Ok(());
            }
            let next = self.sys.with(|k| k.sched.next_time());
            match next {
                Some(t) if t <= deadline => {
                    self.step();
                }
                _ => {
                    return Err(Crash::Hang(format!(
                        "nothing to do or nothing done in {} ms of virtual time",
                        limit / MS
                    )));
                }
            }
        }
    }

    /// Run until no event is due before `until` (virtual time then = `until`).
    pub fn run_for(&mut self, duration: Nanos) -> Result<(), Crash> {
        let until = self.sys.now().saturating_add(duration);
        while self
            .sys
            .with(|k| k.sched.next_time())
            .is_some_and(|t| t <= until)
        {
            self.step();
            self.check()?;
        }
        self.sys.with(|k| k.sched.advance_to(until));
        Ok(())
    }

    /// Wait for an IRP and collect its result (the IRP and its MDL are freed).
    pub fn wait(&mut self, irp: IrpId, limit: Nanos) -> Result<IrpResult, Crash> {
        self.run_until(|m| m.is_complete(irp), limit)?;
        Ok(self.collect(irp).unwrap_or(IrpResult {
            status: NtStatus::INVALID_PARAMETER,
            information: 0,
            output: Vec::new(),
        }))
    }

    /// Take a completed IRP's result, freeing the IRP and its MDL.
    pub fn collect(&mut self, irp: IrpId) -> Option<IrpResult> {
        let result = self.sys.with(|k| {
            if !k.irps.get(irp)?.completed {
                return None;
            }
            let i = k.irps.remove(irp)?;
            let information = i.information;
            let output = match (i.major, i.mdl) {
                (Major::DeviceControl { code, .. }, _) if method_of(code) == METHOD_BUFFERED => {
                    i.system_buffer[..information.min(i.system_buffer.len())].to_vec()
                }
                (_, Some(mdl)) => {
                    let n = (information as u64).min(k.mdls.chain_length(mdl)) as usize;
                    // Appended from the pages, not zeroed first.
                    let mut out = Vec::with_capacity(n);
                    match k.mdls.segments(mdl, 0, n as u64, false) {
                        Ok(segments) => {
                            for s in segments {
                                k.mem.extend_vec(s.phys, s.len as usize, &mut out);
                            }
                        }
                        Err(_) => out.resize(n, 0),
                    }
                    out
                }
                _ => Vec::new(),
            };
            if let Some(mdl) = i.mdl {
                crate::mdl::free_chain(&mut k.mdls, &mut k.mem, mdl);
            }
            Some(IrpResult {
                status: i.status.unwrap_or(NtStatus::PENDING),
                information,
                output,
            })
        });
        if result.is_some() {
            self.driver.irp_freed(&self.sys, irp);
        }
        result
    }

    /// Send a PnP IRP and wait for the driver to finish it.
    pub fn pnp(&mut self, minor: PnpMinor, limit: Nanos) -> Result<NtStatus, Crash> {
        if minor == PnpMinor::SurpriseRemoval {
            self.sys.with(|k| {
                k.device.remove();
                k.sched
                    .remove_where(|e| matches!(e, Event::DmaTimer | Event::FactorialDone));
            });
        }
        let deadline = self.sys.now().saturating_add(limit);
        loop {
            let cpu = self.sys.with(|k| k.random_cpu());
            self.sys.label_next_routine(|| format!("PnP {minor:?}"));
            let outcome = self
                .run(cpu, Irql::Passive, move |d, sys| d.pnp(sys, minor))
                .unwrap_or(PnpOutcome::Done(NtStatus::INVALID_DEVICE_STATE));
            self.check()?;
            match outcome {
                PnpOutcome::Done(status) => {
                    if minor == PnpMinor::RemoveDevice {
                        self.after_remove();
                        self.check()?;
                    }
                    return Ok(status);
                }
                PnpOutcome::Wait => {
                    let next = self.sys.with(|k| k.sched.next_time());
                    match next {
                        Some(t) if t <= deadline => {
                            self.step();
                        }
                        _ => return Err(Crash::Hang(format!("{minor:?} never finished"))),
                    }
                }
            }
        }
    }

    /// The power manager sends a system power IRP (query or set, to
    /// `state`) and waits for the driver to complete it, the device power
    /// IRPs it requests included.
    pub fn system_power(
        &mut self,
        minor: PowerMinor,
        state: SystemPower,
        limit: Nanos,
    ) -> Result<NtStatus, Crash> {
        let deadline = self.sys.now().saturating_add(limit);
        let cpu = self.sys.with(|k| k.random_cpu());
        let token = self
            .run(cpu, Irql::Passive, move |d, sys| {
                d.send_system_power(sys, minor, state)
            })
            .unwrap_or(0);
        self.check()?;
        loop {
            // A power routine of the driver may wait (a D3 IRP drains the
            // transfer in flight): drive it on before the next event.
            let _ = self.driver.poll_blocked(&self.sys);
            if let Some(status) = self.driver.system_power_result(&self.sys, token) {
                self.check()?;
                return Ok(status);
            }
            let next = self.sys.with(|k| k.sched.next_time());
            match next {
                Some(t) if t <= deadline => {
                    self.step();
                    self.check()?;
                }
                _ => {
                    return Err(Crash::Hang(format!(
                        "{minor:?} power IRP for {state:?} never completed"
                    )));
                }
            }
        }
    }

    /// A system sleep as Windows runs it: query S3, set S3, the machine
    /// sleeps and wakes (the VM reset of the wake, see [`crate::power`]),
    /// set S0. A refused query ends it there, with the refusal.
    pub fn sleep(&mut self, limit: Nanos) -> Result<NtStatus, Crash> {
        let query = self.system_power(PowerMinor::Query, SystemPower::Sleeping3, limit)?;
        if !query.is_success() {
            return Ok(query);
        }
        let set = self.system_power(PowerMinor::Set, SystemPower::Sleeping3, limit)?;
        if !set.is_success() {
            return Ok(set);
        }
        self.sys.sleep_and_wake();
        self.system_power(PowerMinor::Set, SystemPower::Working, limit)
    }

    fn after_remove(&mut self) {
        self.sys.with(|k| {
            for irp in k.irps.incomplete() {
                k.verifier
                    .report(Violation::RequestIncompleteAtRemoval { irp: irp.0 });
            }
            if k.hal.live_adapters() > 0 {
                k.verifier.report(Violation::AdapterLeaked);
            }
        });
    }

    /// The leak check every run ends with: no channel, map register or
    /// adapter outstanding; no cancelled IRP left incomplete; no MDL left
    /// once every IRP was collected.
    pub fn leak_check(&self) -> Result<(), Crash> {
        self.sys.with(|k| {
            for id in k.irps.ids() {
                if let Some(i) = k.irps.get(id)
                    && i.cancel
                    && !i.completed
                {
                    k.verifier
                        .report(Violation::CancelledIrpNeverCompleted { irp: id.0 });
                }
            }
            let all_idle = (0..8).all(|a| k.hal.idle(crate::hal::AdapterId(a)));
            if !all_idle {
                k.verifier.report(Violation::ChannelLeaked);
            }
            if k.irps.ids().is_empty() && !k.mdls.is_empty() {
                let count = k.mdls.len();
                k.verifier.report(Violation::MdlLeaked { count });
            }
        });
        self.check()
    }
}

/// Run one event of the machine on `driver`. False when nothing is queued.
/// A free function so that a native driver's scheduler can run events while
/// one of its routines is preempted.
pub fn step<D: WdmDriver>(sys: &Sys, driver: &mut D) -> bool {
    let Some(ev) = sys.with(|k| k.sched.pop()) else {
        return false;
    };
    sys.with(|k| k.sched.advance_to(ev.at));
    let cpu = ev.cpu;
    match ev.event {
        Event::DmaTimer => sys.with(|k| k.run_dma_timer()),
        Event::FactorialDone => sys.with(|k| {
            k.device.factorial_done();
            k.poll_interrupt();
        }),
        Event::Interrupt => deliver_interrupt(sys, driver, cpu),
        Event::Dpc(id) => {
            let (irp, args) = sys.with(|k| {
                k.dpc_queued.remove(&id);
                k.stats.dpcs += 1;
                match id {
                    DpcId::ForIsr => (k.dpc_irp.take(), (0, 0)),
                    DpcId::Driver(n) => (None, k.dpc_args.remove(&n).unwrap_or((0, 0))),
                    DpcId::Timer => {
                        k.stats.timer_dpcs += 1;
                        (None, (0, 0))
                    }
                }
            });
            sys.label_next_routine(|| match id {
                DpcId::ForIsr => "DpcForIsr".to_string(),
                DpcId::Timer => "watchdog DPC".to_string(),
                DpcId::Driver(n) => format!("DPC #{n}"),
            });
            driver.run_routine(sys, cpu, Irql::Dispatch, move |d, sys| match id {
                DpcId::ForIsr => d.dpc_for_isr(sys, irp),
                DpcId::Timer => d.timer_dpc(sys),
                DpcId::Driver(n) => d.driver_dpc(sys, n, args.0, args.1),
            });
        }
        Event::TimerExpired => sys.with(|k| {
            if k.timer_in_queue {
                if k.dpc_queued.insert(DpcId::Timer) {
                    k.sched.schedule(US, cpu, Event::Dpc(DpcId::Timer));
                }
                match k.timer_period {
                    Some(period) => k.sched.schedule(period, cpu, Event::TimerExpired),
                    // A one-shot timer leaves the queue when it expires.
                    None => k.timer_in_queue = false,
                }
            }
        }),
        Event::ExecutionRoutine(adapter, base) => {
            if sys.with(|k| k.hal.granting(adapter)) == Some(base) {
                sys.with(|k| k.stats.late_grants += 1);
                sys.label_next_routine(|| "execution routine");
                driver.run_routine(sys, cpu, Irql::Dispatch, move |d, sys| {
                    let action = d.execution_routine(sys, base);
                    sys.hal_routine_returned(adapter, base, action);
                });
            }
        }
        Event::ContentionEnds(_) => sys.with(|k| {
            k.hal.contended = false;
            k.contention_queued = false;
            // The other device's map registers are free: every request
            // queued behind them gets its chance (the adapter that asked may
            // have been put and replaced meanwhile, by a stop and a start).
            for adapter in k.hal.waiting_adapters() {
                if let Some(base) = k.hal.retry_waiting(&mut k.mem, adapter) {
                    let delay = k.rng.range(US, 30 * US);
                    k.sched
                        .schedule(delay, cpu, Event::ExecutionRoutine(adapter, base));
                }
            }
        }),
        Event::StartIo(irp) => {
            sys.label_next_routine(|| format!("deferred start (IRP {})", irp.0));
            driver.run_routine(sys, cpu, Irql::Dispatch, move |d, sys| {
                sys.invoke_start_io(d, irp, false)
            });
        }
        Event::Cancel(irp) => {
            sys.label_next_routine(|| format!("IoCancelIrp (IRP {})", irp.0));
            driver.run_routine(sys, cpu, Irql::Passive, move |d, sys| {
                d.io_cancel_irp(sys, irp)
            });
        }
        Event::Wake => {}
        Event::ForeignInterrupt => sys.assert_foreign_interrupt(),
        Event::SpuriousInterrupt => {
            if sys.with(|k| k.interrupt.is_some()) {
                sys.with(|k| k.trace(|t, now| t.interrupt(now, "spurious (nothing raised)")));
                run_isr(sys, driver, cpu);
            }
        }
        Event::PowerIrp(irp) => {
            // Drivers that set DO_POWER_PAGABLE get power IRPs at
            // PASSIVE_LEVEL; the others may get them at DISPATCH_LEVEL.
            let irql = if driver.power_pagable(sys) {
                Irql::Passive
            } else {
                Irql::Dispatch
            };
            sys.label_next_routine(|| "power IRP");
            driver.run_routine(sys, cpu, irql, move |d, sys| d.power_irp(sys, irp));
        }
    }
    true
}

fn deliver_interrupt<D: WdmDriver>(sys: &Sys, driver: &mut D, cpu: usize) {
    let deliver = sys.with(|k| {
        k.interrupt_queued = false;
        match k.interrupt {
            None => false,
            Some(edudma_core::ioctl::InterruptKind::MessageSignaled) => true,
            Some(_) => k.device.intx_asserted() || k.foreign_line_asserted,
        }
    });
    let lost = deliver
        && sys.with(|k| {
            k.deliveries += 1;
            let lost = k.lost_interrupts.contains(&k.deliveries);
            if lost {
                k.suppress_until_write = true;
            }
            lost
        });
    if lost {
        sys.with(|k| k.trace(|t, now| t.interrupt(now, "lost")));
    }
    if lost || !deliver {
        return;
    }
    sys.with(|k| k.trace(|t, now| t.interrupt(now, "delivered")));
    run_isr(sys, driver, cpu);
}

/// The driver's ISR at DIRQL, then the rest of the line's chain.
fn run_isr<D: WdmDriver>(sys: &Sys, driver: &mut D, cpu: usize) {
    sys.label_next_routine(|| "ISR");
    driver.run_routine(sys, cpu, Irql::Device, |d, sys| {
        let claimed = d.isr(sys);
        sys.with(|k| {
            k.stats.interrupts += 1;
            // The other device's ISR, after ours in the chain, takes its own.
            k.foreign_line_asserted = false;
            if claimed {
                k.stats.interrupts_claimed += 1;
                k.unclaimed_in_a_row = 0;
            } else if k.device.intx_asserted() {
                k.unclaimed_in_a_row += 1;
                if k.unclaimed_in_a_row > 1000 {
                    k.faults.push(Crash::Hang(
                        "interrupt storm: INTx asserted, ISR never claims it".into(),
                    ));
                    k.interrupt = None;
                }
            }
            k.poll_interrupt();
        });
    });
}
