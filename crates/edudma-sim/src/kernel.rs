//! The simulated kernel: all machine state behind one handle, [`Sys`], whose
//! methods are the DDIs a WDM driver calls. Each DDI checks its IRQL and
//! locking rules and reports a [`Violation`] when a rule is broken.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use edudma_core::NtStatus;
use edudma_core::ioctl::InterruptKind;

use crate::edu::{DeviceFault, DeviceTimer, DmaBus, EduDevice};
use crate::hal::{AdapterId, Hal, HalCtx, IoAllocationAction, MapRegisterBase};
use crate::io::{CancelRoutine, DeviceQueue, FileId, IrpId, IrpTable};
use crate::irql::{Cpus, Irql, SpinLock};
use crate::mdl::MdlTable;
use crate::phys::PhysicalMemory;
use crate::rng::SimRng;
use crate::sched::{DpcId, Event, MS, Nanos, Scheduler, US};
use crate::verifier::{Verifier, Violation};
use crate::wdm::WdmDriver;

/// The routine name of a `WrongIrql` for an IRQL lowered below the one
/// the running DPC or ISR was called at (`KeLowerIrql`, or
/// `KeReleaseSpinLock` with a lower `NewIrql`).
pub const LOWERED_BELOW_ENTRY: &str = "IRQL lowered below the routine's entry IRQL (DPC or ISR)";

/// Counters of the kernel model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Interrupts delivered to the ISR.
    pub interrupts: u64,
    /// Interrupts the ISR claimed.
    pub interrupts_claimed: u64,
    /// `IoRequestDpc` calls that found the DPC already queued (collapsed).
    pub dpcs_collapsed: u64,
    /// DPC routines run (DpcForIsr and timer).
    pub dpcs: u64,
    /// StartIo calls.
    pub start_io_calls: u64,
    /// StartIo calls deferred (DeferredStartIo or another CPU).
    pub start_io_deferred: u64,
    /// IRPs completed.
    pub irps_completed: u64,
    /// Cancel routines called.
    pub cancel_routines: u64,
    /// Execution routines run after the allocating call returned.
    pub late_grants: u64,
    /// `KeCancelTimer` calls that found the timer's DPC already queued
    /// (the DPC still runs, after the cancel).
    pub timer_dpcs_outliving_cancel: u64,
    /// Timer DPCs run.
    pub timer_dpcs: u64,
    /// `IoInvalidateDeviceState` calls.
    pub device_state_invalidated: u64,
}

/// Why the machine stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Crash {
    /// A verifier bug check.
    BugCheck(Violation),
    /// The device did something that takes a real VM down or corrupts it.
    Device(DeviceFault),
    /// Nothing happened for too long while requests waited.
    Hang(String),
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Crash::BugCheck(v) => write!(f, "bug check: {v}"),
            Crash::Device(d) => write!(f, "device fault: {d:?}"),
            Crash::Hang(why) => write!(f, "hang: {why}"),
        }
    }
}

/// All the machine's state.
#[derive(Debug)]
pub struct Kernel {
    /// Physical memory.
    pub mem: PhysicalMemory,
    /// The device wrote into a common buffer since the native layer last
    /// copied them to the driver's view.
    pub common_written: bool,
    /// MDLs.
    pub mdls: MdlTable,
    /// The HAL.
    pub hal: Hal,
    /// The edu device.
    pub device: EduDevice,
    /// IRPs.
    pub irps: IrpTable,
    /// The device object's StartIo queue.
    pub dq: DeviceQueue,
    /// Processors.
    pub cpus: Cpus,
    /// Event queue and virtual time.
    pub sched: Scheduler,
    /// Driver Verifier.
    pub verifier: Verifier,
    /// Randomness of the schedule.
    pub rng: SimRng,
    /// DPCs queued.
    pub dpc_queued: BTreeSet<DpcId>,
    /// The `Irp` argument of the queued DpcForIsr.
    pub dpc_irp: Option<IrpId>,
    /// `SystemArgument1`/`SystemArgument2` of each queued driver DPC.
    pub dpc_args: std::collections::BTreeMap<u32, (u64, u64)>,
    /// The driver's timer is in the system timer queue (set, and not yet
    /// expired if it is a one-shot timer).
    pub timer_in_queue: bool,
    /// Period of the driver's timer (`None`: one-shot).
    pub timer_period: Option<Nanos>,
    /// The interrupt connected, if any.
    pub interrupt: Option<InterruptKind>,
    /// An interrupt delivery is queued.
    pub interrupt_queued: bool,
    /// Another device sharing the INTx line asserts it (its own ISR, later
    /// in the chain, clears it).
    pub foreign_line_asserted: bool,
    /// Consecutive deliveries the ISR did not claim while INTx stayed asserted.
    pub unclaimed_in_a_row: u32,
    /// Prefer MSI when connecting the interrupt.
    pub msi_available: bool,
    /// A contention-ends event is queued.
    pub contention_queued: bool,
    /// Counters.
    pub stats: KernelStats,
    /// Faults seen (device and hang), besides the verifier's.
    pub faults: Vec<Crash>,
    /// Interrupt deliveries to drop (1-based ordinals): lost interrupts.
    pub lost_interrupts: Vec<u64>,
    /// Faults of the device and the platform to inject.
    pub device_faults: DeviceFaults,
    /// The run's timeline, when one is recorded.
    pub trace: Option<Box<crate::trace::Trace>>,
    /// Deliveries attempted so far.
    pub deliveries: u64,
    /// After a lost interrupt the controller stays quiet until the next register write.
    pub suppress_until_write: bool,
    /// Device and system power.
    pub power: crate::power::PowerModel,
}

impl Kernel {
    /// Add to the timeline, if one is recorded.
    pub(crate) fn trace(&mut self, f: impl FnOnce(&mut crate::trace::Trace, Nanos)) {
        let now = self.sched.now();
        if let Some(t) = self.trace.as_deref_mut() {
            f(t, now);
        }
    }

    /// The first crash, if any.
    pub fn crash(&self) -> Option<Crash> {
        if let Some(v) = self.verifier.bugcheck() {
            return Some(Crash::BugCheck(v.clone()));
        }
        self.faults.first().cloned()
    }

    /// A context for HAL calls at the current IRQL.
    pub fn hal_call<T>(&mut self, f: impl FnOnce(&mut Hal, &mut HalCtx<'_>) -> T) -> T {
        let device_busy = self.device.active_bus_range();
        let irql = self.cpus.irql();
        let mut ctx = HalCtx {
            mem: &mut self.mem,
            mdls: &self.mdls,
            verifier: &mut self.verifier,
            irql,
            rng: &mut self.rng,
            device_busy,
        };
        f(&mut self.hal, &mut ctx)
    }

    /// A random processor.
    pub fn random_cpu(&mut self) -> usize {
        self.rng.below(self.cpus.count() as u64) as usize
    }

    /// Arm a device timer.
    pub fn arm_device_timer(&mut self, timer: DeviceTimer) {
        let cpu = self.cpus.current();
        match timer {
            // The device asks for its nominal 100 ms; QEMU's timer has a
            // millisecond deadline (`edu::dma_timer_delay`), and under host
            // load the timer now and then runs a few milliseconds late.
            DeviceTimer::Dma(_) => {
                self.device_faults.dma_commands += 1;
                let hangs = self.device_faults.hang_dma == Some(self.device_faults.dma_commands);
                if self.trace.is_some() {
                    let mut what = match self.device.active_bus_range() {
                        Some((_, count, true)) => format!("DMA {count} B to RAM"),
                        Some((_, count, false)) => format!("DMA {count} B to the device"),
                        None => "DMA without bus mastering".to_string(),
                    };
                    if hangs {
                        what += " (never completes)";
                    }
                    self.trace(|t, now| t.dma_begins(now, what));
                }
                if hangs {
                    // The device never finishes this command (a wedged
                    // device): no timer, its status stays busy.
                    return;
                }
                let late = if self.rng.chance(10) {
                    self.rng.below(3 * MS)
                } else {
                    0
                };
                let delay = crate::edu::dma_timer_delay(self.sched.now())
                    + late
                    + self.device.config().dma_stall_ns;
                self.sched.schedule(delay, cpu, Event::DmaTimer)
            }
            DeviceTimer::Factorial(ns) => {
                let jitter = self.rng.below(20 * US);
                self.sched.schedule(ns + jitter, cpu, Event::FactorialDone)
            }
        }
    }

    /// Look at the device's interrupt outputs and queue a delivery.
    pub fn poll_interrupt(&mut self) {
        if self.interrupt.is_none() || self.interrupt_queued || self.suppress_until_write {
            return;
        }
        let fire = match self.interrupt {
            Some(InterruptKind::MessageSignaled) => self.device.take_msi(),
            _ => self.device.intx_asserted() || self.foreign_line_asserted,
        };
        if fire {
            self.interrupt_queued = true;
            let cpu = self.random_cpu();
            let delay = self.rng.below(3 * US);
            self.sched.schedule(delay, cpu, Event::Interrupt);
        }
    }

    /// Run the device's DMA timer over the bus.
    pub fn run_dma_timer(&mut self) {
        self.trace(|t, now| t.dma_ends(now));
        let mut bus = Bus {
            mem: &mut self.mem,
            hal: &self.hal,
            common_written: &mut self.common_written,
        };
        if let Err(fault) = self.device.dma_timer(&mut bus) {
            self.faults.push(Crash::Device(fault));
        }
        self.poll_interrupt();
    }

    /// Run device-only events due by now (during a stall).
    pub fn run_device_events_until(&mut self, until: Nanos) {
        while let Some(ev) = self.sched.pop_device_due(until) {
            self.sched.advance_to(ev.at);
            match ev.event {
                Event::DmaTimer => self.run_dma_timer(),
                Event::FactorialDone => {
                    self.device.factorial_done();
                    self.poll_interrupt();
                }
                _ => {}
            }
        }
        self.sched.advance_to(until);
    }

    /// Contention started by an allocation: schedule its end.
    pub fn schedule_contention_end(&mut self, adapter: AdapterId) {
        if self.hal.contended && !self.contention_queued {
            self.contention_queued = true;
            let d = self.rng.range(200 * US, 30 * MS);
            let cpu = self.random_cpu();
            self.sched.schedule(d, cpu, Event::ContentionEnds(adapter));
        }
    }
}

/// The device's view of the PCI bus: only mapped ranges may be touched.
struct Bus<'a> {
    mem: &'a mut PhysicalMemory,
    hal: &'a Hal,
    /// Set when the device writes into a common buffer (the driver's view
    /// of it is brought up to date before its next register access).
    common_written: &'a mut bool,
}

impl DmaBus for Bus<'_> {
    fn dma_read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), DeviceFault> {
        if !self
            .hal
            .bus_access_allowed(address, buf.len() as u64, false)
        {
            return Err(DeviceFault::StrayDma {
                address,
                length: buf.len() as u64,
                write: false,
            });
        }
        self.mem.read(address, buf);
        Ok(())
    }

    fn dma_write(&mut self, address: u64, data: &[u8]) -> Result<(), DeviceFault> {
        if !self
            .hal
            .bus_access_allowed(address, data.len() as u64, true)
        {
            return Err(DeviceFault::StrayDma {
                address,
                length: data.len() as u64,
                write: true,
            });
        }
        if self.hal.touches_common_buffer(address, data.len() as u64) {
            *self.common_written = true;
        }
        self.mem.write(address, data);
        Ok(())
    }
}

/// A handle on the simulated kernel: the DDIs.
#[derive(Clone, Debug)]
pub struct Sys(pub(crate) Arc<Mutex<Kernel>>);

impl Sys {
    /// Wrap a kernel.
    pub fn new(kernel: Kernel) -> Self {
        Sys(Arc::new(Mutex::new(kernel)))
    }

    /// The kernel state, locked. Only one simulated CPU runs at a time (see
    /// `native::sched`), so the lock is never contended; it makes the state
    /// shareable with the threads that carry the simulated CPUs.
    fn lock(&self) -> MutexGuard<'_, Kernel> {
        // A poisoned lock means a panic in the model: keep the state, the
        // panic itself fails the test.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `f` on the kernel state.
    pub fn with<T>(&self, f: impl FnOnce(&mut Kernel) -> T) -> T {
        f(&mut self.lock())
    }

    fn report(&self, v: Violation) {
        self.with(|k| k.verifier.report(v));
    }

    /// Virtual time now.
    pub fn now(&self) -> Nanos {
        self.with(|k| k.sched.now())
    }

    /// `KeGetCurrentIrql`.
    pub fn irql(&self) -> Irql {
        self.with(|k| k.cpus.irql())
    }

    /// `KeGetCurrentProcessorNumber`.
    pub fn current_cpu(&self) -> usize {
        self.with(|k| k.cpus.current())
    }

    /// `KeRaiseIrql`: returns the old IRQL. Lowering through it is a violation.
    pub fn ke_raise_irql(&self, to: Irql) -> Irql {
        self.with(|k| {
            let old = k.cpus.irql();
            if to < old {
                k.verifier.report(Violation::WrongIrql {
                    routine: "KeRaiseIrql",
                    irql: old,
                });
                return old;
            }
            k.cpus.set_irql(to)
        })
    }

    /// `KeLowerIrql`. Lowering below the IRQL the running routine was
    /// entered at (a DPC below DISPATCH_LEVEL) is flagged.
    pub fn ke_lower_irql(&self, to: Irql) {
        self.with(|k| {
            let cur = k.cpus.irql();
            if to > cur {
                k.verifier.report(Violation::WrongIrql {
                    routine: "KeLowerIrql",
                    irql: cur,
                });
                return;
            }
            if to < k.cpus.cpu().floor {
                k.verifier.report(Violation::WrongIrql {
                    routine: LOWERED_BELOW_ENTRY,
                    irql: to,
                });
                return;
            }
            k.cpus.set_irql(to);
        })
    }

    /// `KeAcquireSpinLock`: raises to DISPATCH_LEVEL, returns the old IRQL.
    pub fn ke_acquire_spin_lock(&self, lock: SpinLock) -> Irql {
        self.with(|k| {
            let old = k.cpus.irql();
            if old > Irql::Dispatch {
                k.verifier.report(Violation::WrongIrql {
                    routine: "KeAcquireSpinLock",
                    irql: old,
                });
            }
            if k.cpus.lock_held_anywhere(lock) {
                k.verifier
                    .report(Violation::SpinLockDeadlock { lock: lock.name() });
                return old;
            }
            k.cpus.cpu_mut().locks.push((lock, old));
            k.cpus.set_irql(old.max(Irql::Dispatch));
            old
        })
    }

    /// `KeReleaseSpinLock`.
    pub fn ke_release_spin_lock(&self, lock: SpinLock, old: Irql) {
        self.with(|k| {
            let cur = k.cpus.irql();
            if cur != Irql::Dispatch || old > cur {
                // KeReleaseSpinLock runs at DISPATCH_LEVEL and lowers.
                k.verifier.report(Violation::WrongIrql {
                    routine: "KeReleaseSpinLock",
                    irql: cur,
                });
                return;
            }
            if old < k.cpus.cpu().floor {
                k.verifier.report(Violation::WrongIrql {
                    routine: LOWERED_BELOW_ENTRY,
                    irql: old,
                });
                return;
            }
            let locks = &mut k.cpus.cpu_mut().locks;
            match locks.iter().rposition(|(l, _)| *l == lock) {
                Some(i) => {
                    locks.remove(i);
                    k.cpus.set_irql(old);
                }
                None => {
                    let v = if lock == SpinLock::Cancel {
                        Violation::CancelSpinLockMisuse
                    } else {
                        Violation::SpinLockDeadlock { lock: lock.name() }
                    };
                    k.verifier.report(v);
                }
            }
        })
    }

    /// `IoAcquireCancelSpinLock`.
    pub fn io_acquire_cancel_spin_lock(&self) -> Irql {
        self.ke_acquire_spin_lock(SpinLock::Cancel)
    }

    /// `IoReleaseCancelSpinLock`.
    pub fn io_release_cancel_spin_lock(&self, old: Irql) {
        self.ke_release_spin_lock(SpinLock::Cancel, old)
    }

    /// Check that the IRP is live; report a use after completion.
    fn live_irp(k: &mut Kernel, irp: IrpId) -> bool {
        match k.irps.get(irp) {
            Some(i) if !i.completed => true,
            _ => {
                k.verifier
                    .report(Violation::IrpUsedAfterCompletion { irp: irp.0 });
                false
            }
        }
    }

    /// A copy of the IRP (parameters and buffers) for the dispatch routine.
    pub fn irp(&self, irp: IrpId) -> Option<crate::io::Irp> {
        self.with(|k| {
            if !Self::live_irp(k, irp) {
                return None;
            }
            k.irps.get(irp).cloned()
        })
    }

    /// Write the output of a buffered request into `SystemBuffer`.
    pub fn irp_write_system_buffer(&self, irp: IrpId, data: &[u8]) {
        self.with(|k| {
            if !Self::live_irp(k, irp) {
                return;
            }
            if let Some(i) = k.irps.get_mut(irp) {
                let n = data.len().min(i.system_buffer.len());
                i.system_buffer[..n].copy_from_slice(&data[..n]);
            }
        })
    }

    /// `IoMarkIrpPending`.
    pub fn io_mark_irp_pending(&self, irp: IrpId) {
        self.with(|k| {
            if Self::live_irp(k, irp)
                && let Some(i) = k.irps.get_mut(irp)
            {
                i.pending_marked = true;
            }
        })
    }

    /// `IoSetCancelRoutine(Irp, routine or NULL)` (an interlocked exchange):
    /// returns the routine set before, `None` when it was NULL (`IoCancelIrp`
    /// may have taken it).
    pub fn io_set_cancel_routine(
        &self,
        irp: IrpId,
        routine: Option<CancelRoutine>,
    ) -> Option<CancelRoutine> {
        self.with(|k| {
            if !Self::live_irp(k, irp) {
                return None;
            }
            k.irps
                .get_mut(irp)
                .and_then(|i| std::mem::replace(&mut i.cancel_routine, routine))
        })
    }

    /// `Tail.Overlay.DriverContext[index]` of an IRP the driver owns.
    pub fn irp_driver_context(&self, irp: IrpId, index: usize) -> u64 {
        self.with(|k| {
            if !Self::live_irp(k, irp) {
                return 0;
            }
            k.irps.get(irp).map_or(0, |i| i.driver_context[index])
        })
    }

    /// Write `Tail.Overlay.DriverContext[index]`.
    pub fn set_irp_driver_context(&self, irp: IrpId, index: usize, value: u64) {
        self.with(|k| {
            if Self::live_irp(k, irp)
                && let Some(i) = k.irps.get_mut(irp)
            {
                i.driver_context[index] = value;
            }
        })
    }

    /// `IoGetCurrentIrpStackLocation(Irp)->FileObject`.
    pub fn irp_file(&self, irp: IrpId) -> FileId {
        self.with(|k| {
            if !Self::live_irp(k, irp) {
                return FileId::default();
            }
            k.irps.get(irp).map_or(FileId::default(), |i| i.file)
        })
    }

    /// The part of `IoCancelIrp` done under the cancel spin lock (which the
    /// caller holds): set `Irp->Cancel` and take the cancel routine out.
    pub fn io_cancel_irp_take_routine(&self, irp: IrpId) -> Option<CancelRoutine> {
        self.with(|k| {
            if !k
                .cpus
                .cpu()
                .locks
                .iter()
                .any(|(l, _)| *l == SpinLock::Cancel)
            {
                k.verifier.report(Violation::CancelSpinLockMisuse);
            }
            let now = k.sched.now();
            let i = k.irps.get_mut(irp).filter(|i| !i.completed)?;
            i.cancel = true;
            i.cancelled_at.get_or_insert(now);
            let routine = i.cancel_routine.take();
            if routine.is_some() {
                k.stats.cancel_routines += 1;
            }
            routine
        })
    }

    /// True while any DPC is queued (`KeFlushQueuedDpcs` waits for them).
    pub fn dpcs_queued(&self) -> bool {
        self.with(|k| !k.dpc_queued.is_empty())
    }

    /// Record a fault of the driver's design the verifier has no rule for.
    pub fn report_fault(&self, why: &str) {
        self.with(|k| k.faults.push(Crash::Hang(why.to_string())));
    }

    /// `Irp->Cancel`.
    pub fn irp_cancel_flag(&self, irp: IrpId) -> bool {
        self.with(|k| k.irps.get(irp).is_some_and(|i| i.cancel))
    }

    /// `IoCompleteRequest` (status and information set just before).
    pub fn io_complete_request(&self, irp: IrpId, status: NtStatus, information: usize) {
        self.with(|k| {
            let Some(i) = k.irps.get(irp) else {
                k.verifier
                    .report(Violation::IrpUsedAfterCompletion { irp: irp.0 });
                return;
            };
            if i.completed {
                k.verifier
                    .report(Violation::DoubleCompletion { irp: irp.0 });
                return;
            }
            if let Some(lock) = k.cpus.held_lock() {
                k.verifier
                    .report(Violation::CompletedUnderSpinLock { lock: lock.name() });
            }
            if status == NtStatus::PENDING {
                k.verifier
                    .report(Violation::CompletedWithPending { irp: irp.0 });
            }
            if k.cpus.irql() > Irql::Dispatch {
                k.verifier.report(Violation::WrongIrql {
                    routine: "IoCompleteRequest",
                    irql: k.cpus.irql(),
                });
            }
            if i.cancel_routine.is_some() {
                k.verifier
                    .report(Violation::CompletedWithCancelRoutine { irp: irp.0 });
            }
            if let Some(mdl) = i.mdl
                && k.hal.has_mapping_on(&k.mdls, mdl)
            {
                k.verifier.report(Violation::AdapterBuffersNotFlushed);
            }
            if k.dq.queue.contains(&irp) {
                k.verifier
                    .report(Violation::IrpUsedAfterCompletion { irp: irp.0 });
            }
            let now = k.sched.now();
            k.trace(|t, now| t.irp_completed(now, irp.0, status.to_string(), information));
            if let Some(i) = k.irps.get_mut(irp) {
                i.completed = true;
                i.status = Some(status);
                i.information = information;
                i.completed_at = Some(now);
            }
            k.stats.irps_completed += 1;
        })
    }

    /// `IoSetStartIoAttributes`.
    pub fn io_set_start_io_attributes(&self, deferred_start_io: bool, non_cancelable: bool) {
        self.with(|k| {
            k.dq.deferred_start_io = deferred_start_io;
            k.dq.non_cancelable = non_cancelable;
        })
    }

    /// `DeviceObject->CurrentIrp`.
    pub fn current_irp(&self) -> Option<IrpId> {
        self.with(|k| k.dq.current)
    }

    /// `IoStartPacket(DeviceObject, Irp, NULL, CancelRoutine or NULL)`.
    pub fn io_start_packet<D: WdmDriver>(
        &self,
        drv: &mut D,
        irp: IrpId,
        cancel: Option<CancelRoutine>,
    ) {
        let old = {
            let mut k = self.lock();
            if !Self::live_irp(&mut k, irp) {
                return;
            }
            let old = k.cpus.irql();
            if old > Irql::Dispatch {
                k.verifier.report(Violation::WrongIrql {
                    routine: "IoStartPacket",
                    irql: old,
                });
                return;
            }
            k.cpus.set_irql(Irql::Dispatch);
            old
        };
        // As the I/O manager does it: the cancel routine is set under the
        // cancel spin lock, and only when one is given (NULL leaves the
        // routine the driver may have set alone).
        let cancel_irql = cancel.map(|routine| {
            let irql = drv.acquire_cancel_lock(self);
            self.with(|k| {
                if let Some(i) = k.irps.get_mut(irp) {
                    i.cancel_routine = Some(routine);
                }
            });
            irql
        });
        drv.lock_device_queue(self);
        let start = self.with(|k| {
            if k.dq.busy {
                k.dq.queue.push_back(irp);
                false
            } else {
                k.dq.busy = true;
                k.dq.current = Some(irp);
                true
            }
        });
        drv.unlock_device_queue(self);
        if start {
            if let Some(irql) = cancel_irql {
                self.with(|k| {
                    if k.dq.non_cancelable
                        && let Some(i) = k.irps.get_mut(irp)
                    {
                        i.cancel_routine = None;
                    }
                });
                drv.release_cancel_lock(self, irql);
            }
            self.invoke_start_io(drv, irp, false);
        } else if let Some((routine, irql)) = cancel.zip(cancel_irql) {
            // Cancelled before it was queued: nobody else will ever call the
            // routine, so the I/O manager calls it now, lock held.
            let cancelled = self.with(|k| match k.irps.get_mut(irp) {
                Some(i) if i.cancel => {
                    i.cancel_routine = None;
                    k.stats.cancel_routines += 1;
                    true
                }
                _ => false,
            });
            if cancelled {
                drv.cancel(self, routine, irp, irql);
            } else {
                drv.release_cancel_lock(self, irql);
            }
        }
        self.with(|k| k.cpus.set_irql(old));
    }

    /// Call StartIo, honouring `DeferredStartIo` and flagging recursion.
    pub fn invoke_start_io<D: WdmDriver>(&self, drv: &mut D, irp: IrpId, from_next_packet: bool) {
        let run_now = self.with(|k| {
            if k.dq.start_io_depth > 0 {
                if k.dq.deferred_start_io {
                    k.dq.deferred = Some(irp);
                    k.stats.start_io_deferred += 1;
                    return false;
                }
                k.verifier.report(Violation::StartIoRecursion);
                return true;
            }
            if from_next_packet && k.dq.deferred_start_io && k.cpus.count() > 1 && k.rng.chance(30)
            {
                // Strict reading: the next StartIo may run on another CPU
                // while the caller (a DPC) is still finishing.
                let cpu = (k.cpus.current() + 1 + k.rng.below(k.cpus.count() as u64 - 1) as usize)
                    % k.cpus.count();
                k.sched.schedule(0, cpu, Event::StartIo(irp));
                k.stats.start_io_deferred += 1;
                return false;
            }
            true
        });
        if !run_now {
            return;
        }
        let mut next = Some(irp);
        while let Some(irp) = next {
            let old = self.with(|k| {
                k.dq.start_io_depth += 1;
                k.stats.start_io_calls += 1;
                let cpu = k.cpus.current();
                k.trace(|t, now| {
                    t.routine_begins(now, cpu, &format!("StartIo (IRP {})", irp.0), "Dispatch")
                });
                k.cpus.set_irql(Irql::Dispatch)
            });
            drv.start_io(self, irp);
            next = self.with(|k| {
                let cpu = k.cpus.current();
                k.trace(|t, now| t.routine_ends(now, cpu, "returned"));
                k.dq.start_io_depth -= 1;
                k.cpus.set_irql(old);
                if k.dq.start_io_depth == 0 {
                    k.dq.deferred.take()
                } else {
                    None
                }
            });
        }
    }

    /// `IoStartNextPacket(DeviceObject, Cancelable)`.
    pub fn io_start_next_packet<D: WdmDriver>(&self, drv: &mut D, cancelable: bool) {
        self.with(|k| {
            if let Some(lock) = k.cpus.held_lock() {
                k.verifier
                    .report(Violation::StartNextPacketUnderSpinLock { lock: lock.name() });
            }
            if k.cpus.irql() != Irql::Dispatch {
                k.verifier.report(Violation::WrongIrql {
                    routine: "IoStartNextPacket",
                    irql: k.cpus.irql(),
                });
            }
        });
        // Cancelable: the dequeue is done under the cancel spin lock, so a
        // cancel routine sees the IRP either queued or current.
        let cancel_irql = cancelable.then(|| drv.acquire_cancel_lock(self));
        drv.lock_device_queue(self);
        let next = self.with(|k| {
            k.dq.current = None;
            match k.dq.queue.pop_front() {
                Some(next) => {
                    k.dq.current = Some(next);
                    if cancelable
                        && k.dq.non_cancelable
                        && let Some(i) = k.irps.get_mut(next)
                    {
                        i.cancel_routine = None;
                    }
                    Some(next)
                }
                None => {
                    k.dq.busy = false;
                    None
                }
            }
        });
        drv.unlock_device_queue(self);
        if let Some(irql) = cancel_irql {
            drv.release_cancel_lock(self, irql);
        }
        if let Some(irp) = next {
            self.invoke_start_io(drv, irp, true);
        }
    }

    /// `KeRemoveEntryDeviceQueue` for an IRP (from a cancel routine):
    /// true when it was queued and is removed now.
    pub fn ke_remove_entry_device_queue(&self, irp: IrpId) -> bool {
        self.with(|k| match k.dq.queue.iter().position(|i| *i == irp) {
            Some(pos) => {
                k.dq.queue.remove(pos);
                true
            }
            None => false,
        })
    }

    /// `KeRemoveDeviceQueue`: take the next queued IRP (draining at removal).
    pub fn ke_remove_device_queue(&self) -> Option<IrpId> {
        self.with(|k| k.dq.queue.pop_front())
    }

    /// `IoRequestDpc` (from the ISR): false when the DPC was already queued
    /// (the requests collapse).
    pub fn io_request_dpc(&self, irp: Option<IrpId>) -> bool {
        self.with(|k| {
            if k.cpus.irql() < Irql::Dispatch {
                k.verifier.report(Violation::WrongIrql {
                    routine: "IoRequestDpc",
                    irql: k.cpus.irql(),
                });
            }
            if k.dpc_queued.contains(&DpcId::ForIsr) {
                k.stats.dpcs_collapsed += 1;
                return false;
            }
            k.dpc_queued.insert(DpcId::ForIsr);
            k.dpc_irp = irp;
            // Usually the same CPU, sometimes another one.
            let cpu = if k.rng.chance(75) {
                k.cpus.current()
            } else {
                k.random_cpu()
            };
            let delay = k.rng.range(US, 40 * US);
            k.sched.schedule(delay, cpu, Event::Dpc(DpcId::ForIsr));
            true
        })
    }

    /// `KeInsertQueueDpc` of the driver's DPC object `dpc`: false (and the
    /// arguments of the queued one kept) when it is already queued. It
    /// runs later on this processor, at DISPATCH_LEVEL.
    pub fn ke_insert_queue_dpc(&self, dpc: u32, argument1: u64, argument2: u64) -> bool {
        self.with(|k| {
            if k.cpus.irql() > Irql::Device {
                k.verifier.report(Violation::WrongIrql {
                    routine: "KeInsertQueueDpc",
                    irql: k.cpus.irql(),
                });
            }
            if !k.dpc_queued.insert(DpcId::Driver(dpc)) {
                k.stats.dpcs_collapsed += 1;
                return false;
            }
            k.dpc_args.insert(dpc, (argument1, argument2));
            let cpu = k.cpus.current();
            let delay = k.rng.range(US, 40 * US);
            k.sched.schedule(delay, cpu, Event::Dpc(DpcId::Driver(dpc)));
            true
        })
    }

    /// `KeSetTimerEx` with a period and the timer DPC.
    pub fn ke_set_timer(&self, due: Nanos, period: Option<Nanos>) -> bool {
        self.with(|k| {
            k.sched.remove_where(|e| *e == Event::TimerExpired);
            let was = std::mem::replace(&mut k.timer_in_queue, true);
            k.timer_period = period.map(|p| p.max(US));
            let cpu = k.random_cpu();
            k.sched.schedule(due.max(US), cpu, Event::TimerExpired);
            was
        })
    }

    /// `KeCancelTimer`: takes the timer out of the timer queue; TRUE when it
    /// was there. A DPC the timer already queued is not removed: it still
    /// runs (Learn: "KeCancelTimer returns FALSE if the timer DPC has been
    /// queued" for a one-shot timer; a periodic one is always in the queue).
    pub fn ke_cancel_timer(&self) -> bool {
        self.with(|k| {
            k.sched.remove_where(|e| *e == Event::TimerExpired);
            if k.dpc_queued.contains(&DpcId::Timer) {
                k.stats.timer_dpcs_outliving_cancel += 1;
            }
            std::mem::replace(&mut k.timer_in_queue, false)
        })
    }

    /// `READ_REGISTER_ULONG` on BAR0 (all-ones while the function does not
    /// decode).
    pub fn read_register(&self, offset: u32) -> u32 {
        if !self.check_decode(offset) {
            return u32::MAX;
        }
        self.with(|k| {
            let value = k.device.read(u64::from(offset), 4) as u32;
            if offset == edudma_core::regs::REG_ID && k.device_faults.wrong_id_reads > 0 {
                // Another function, or a device answering garbage.
                k.device_faults.wrong_id_reads -= 1;
                return value ^ 0x0000_FFFF;
            }
            value
        })
    }

    /// Someone else (another driver, a tool writing config space) clears
    /// Bus Master Enable: the device's DMA reaches no memory and its MSI is
    /// lost until the driver sets the bit again.
    pub fn clear_bus_master_behind_the_driver(&self) {
        self.with(|k| {
            k.device.set_bus_master(false);
            k.device_faults.bus_master_cleared += 1;
        })
    }

    /// The interrupt controller delivers our vector although nothing
    /// raised it (a spurious interrupt): the ISR runs and must find nothing
    /// of its own. Reaches line-based and message-signaled connections.
    pub fn schedule_spurious_interrupt(&self, delay: Nanos) {
        self.with(|k| {
            let cpu = k.random_cpu();
            k.sched.schedule(delay, cpu, Event::SpuriousInterrupt);
        })
    }

    /// `WRITE_REGISTER_ULONG` on BAR0.
    pub fn write_register(&self, offset: u32, value: u32) {
        if !self.check_decode(offset) {
            return;
        }
        self.with(|k| {
            k.suppress_until_write = false;
            if let Some(t) = k.device.write(u64::from(offset), 4, u64::from(value)) {
                k.arm_device_timer(t);
            }
            k.poll_interrupt();
        })
    }

    /// `KeStallExecutionProcessor`: time passes for the device.
    pub fn stall_us(&self, micros: u32) {
        self.with(|k| {
            let until = k.sched.now() + u64::from(micros) * US;
            k.run_device_events_until(until);
        })
    }

    /// PCI command register through `BUS_INTERFACE_STANDARD` (GetBusData).
    pub fn pci_command(&self) -> u16 {
        self.with(|k| {
            let memory = if k.power.decodes { 0x0002 } else { 0 };
            let master = if k.device.bus_master() { 0x0004 } else { 0 };
            memory | master
        })
    }

    /// PCI command register through `BUS_INTERFACE_STANDARD` (SetBusData).
    pub fn set_pci_command(&self, value: u16) {
        self.with(|k| {
            k.power.decodes = value & 0x2 != 0;
            k.device.set_bus_master(value & 0x4 != 0);
        })
    }

    /// Another device on the same (shared, level-triggered) INTx line
    /// asserts it: every ISR connected to the line is called, ours first;
    /// the other device's ISR claims it. Nothing reaches a message-signaled
    /// connection.
    pub fn assert_foreign_interrupt(&self) {
        self.with(|k| {
            if matches!(k.interrupt, Some(InterruptKind::LineBased)) {
                k.trace(|t, now| t.interrupt(now, "another device asserts the shared line"));
                k.foreign_line_asserted = true;
                k.poll_interrupt();
            }
        })
    }

    /// Name the next routine the machine starts on a CPU (the timeline's
    /// label for it).
    /// `name` is only called while a timeline is recorded.
    pub fn label_next_routine<S: Into<String>>(&self, name: impl FnOnce() -> S) {
        self.with(|k| {
            if let Some(t) = k.trace.as_deref_mut() {
                t.next_routine = Some(name().into());
            }
        })
    }

    /// [`Sys::assert_foreign_interrupt`] after `delay` of virtual time.
    pub fn schedule_foreign_interrupt(&self, delay: Nanos) {
        self.with(|k| {
            let cpu = k.random_cpu();
            k.sched.schedule(delay, cpu, Event::ForeignInterrupt);
        })
    }

    /// `IoConnectInterruptEx`: message-signaled when the platform offers
    /// it, line-based otherwise. The ISR may run as soon as this returns.
    pub fn io_connect_interrupt_ex(&self) -> InterruptKind {
        self.with(|k| {
            let kind = if k.msi_available {
                InterruptKind::MessageSignaled
            } else {
                InterruptKind::LineBased
            };
            k.device
                .set_msi_enabled(kind == InterruptKind::MessageSignaled);
            k.interrupt = Some(kind);
            k.poll_interrupt();
            kind
        })
    }

    /// `IoDisconnectInterruptEx`.
    pub fn io_disconnect_interrupt_ex(&self) {
        self.with(|k| {
            k.interrupt = None;
            k.sched.remove_where(|e| *e == Event::Interrupt);
            k.interrupt_queued = false;
        })
    }

    /// `IoGetDmaAdapter`.
    pub fn io_get_dma_adapter(
        &self,
        desc: &crate::hal::DeviceDescription,
    ) -> Option<(crate::wdm::SimDma, u32)> {
        let (id, granted, sg_bytes) = self.with(|k| {
            let r = k.hal_call(|hal, ctx| hal.io_get_dma_adapter(ctx, desc));
            r.map(|(id, n)| (id, n, k.hal.sg_buffer_bytes()))
        })?;
        Some((crate::wdm::SimDma::new(self.clone(), id, sg_bytes), granted))
    }

    /// Record that an execution routine returned (HAL bookkeeping).
    pub fn hal_routine_returned(
        &self,
        adapter: AdapterId,
        base: MapRegisterBase,
        action: IoAllocationAction,
    ) {
        self.with(|k| {
            k.hal
                .routine_returned(&mut k.verifier, adapter, base, action)
        })
    }

    /// `ExAllocatePool` failure injection is not modelled; this reports a
    /// rule broken by a test driver on purpose.
    pub fn report_violation(&self, v: Violation) {
        self.report(v);
    }
}

/// Faults of the device and the platform, injected on purpose: the driver
/// must end every request with a status that says what happened, leave
/// nothing mapped and corrupt nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceFaults {
    /// The `n`th DMA command (1-based) never completes.
    pub hang_dma: Option<u64>,
    /// DMA commands the device accepted so far.
    pub dma_commands: u64,
    /// The next this many reads of the ID register return a wrong value.
    pub wrong_id_reads: u32,
    /// Times Bus Master Enable was cleared behind the driver.
    pub bus_master_cleared: u64,
}
