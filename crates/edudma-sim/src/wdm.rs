//! What a WDM driver gives the simulated Windows ([`WdmDriver`], its
//! routines) and what Windows gives it besides the DDIs of [`Sys`]: the
//! adapter's DMA operations ([`SimDma`], implementing
//! [`edudma_core::dma::DmaOps`]) and BAR0 ([`SimRegs`], implementing
//! [`edudma_core::regs::RegisterFile`]).

use std::any::Any;
use std::rc::Rc;

use edudma_core::NtStatus;
use edudma_core::dma::{
    AllocateOutcome, AllocationMode, DmaOps, DmaTransferInfo, ListBuffer, MdlSpot, PAGE_SIZE,
    SgElement, SgList,
};
use edudma_core::grant::{Delivery, GrantSlot, Settled};
use edudma_core::regs::RegisterFile;

use crate::hal::{AdapterId, AllocateResult, IoAllocationAction, MapRegisterBase};
use crate::io::{CancelRoutine, FileId, IrpId};
use crate::irql::{Irql, SpinLock};
use crate::kernel::Sys;
use crate::mdl::MdlId;
use crate::power::{PowerMinor, SystemPower};
use crate::sched::{Event, US};
use crate::verifier::Violation;

/// `IRP_MN_*` of `IRP_MJ_PNP` that the driver sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PnpMinor {
    /// `IRP_MN_START_DEVICE`.
    StartDevice,
    /// `IRP_MN_STOP_DEVICE` (resource rebalance).
    StopDevice,
    /// `IRP_MN_SURPRISE_REMOVAL`: the device is already gone.
    SurpriseRemoval,
    /// `IRP_MN_REMOVE_DEVICE`.
    RemoveDevice,
    /// `IRP_MN_QUERY_STOP_DEVICE`: may the device stop (a rebalance)?
    QueryStopDevice,
    /// `IRP_MN_CANCEL_STOP_DEVICE`: the stop queried will not happen.
    CancelStopDevice,
    /// `IRP_MN_QUERY_REMOVE_DEVICE`: may the device be removed?
    QueryRemoveDevice,
    /// `IRP_MN_CANCEL_REMOVE_DEVICE`: the removal queried will not happen.
    CancelRemoveDevice,
}

/// What a PnP routine did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PnpOutcome {
    /// Done with this status.
    Done(NtStatus),
    /// Blocked in `KeWaitForSingleObject`: the system runs, then calls the
    /// routine again with the same minor code.
    Wait,
}

/// The routines of a WDM driver for one device object. The simulated I/O
/// manager calls them at the IRQL Windows would.
pub trait WdmDriver {
    /// `IRP_MJ_READ` / `IRP_MJ_WRITE` / `IRP_MJ_DEVICE_CONTROL` at PASSIVE_LEVEL.
    fn dispatch(&mut self, sys: &Sys, irp: IrpId) -> NtStatus;
    /// `IRP_MJ_PNP` at PASSIVE_LEVEL.
    fn pnp(&mut self, sys: &Sys, minor: PnpMinor) -> PnpOutcome;
    /// `DriverStartIo` at DISPATCH_LEVEL.
    fn start_io(&mut self, sys: &Sys, irp: IrpId);
    /// The cancel routine `routine` (the one `IoCancelIrp` took out of the
    /// IRP), called holding the cancel spin lock (it must release it to
    /// `cancel_irql`, `Irp->CancelIrql`).
    fn cancel(&mut self, sys: &Sys, routine: CancelRoutine, irp: IrpId, cancel_irql: Irql);
    /// The ISR at DIRQL: true when the interrupt was the device's.
    fn isr(&mut self, sys: &Sys) -> bool;
    /// `DpcForIsr` at DISPATCH_LEVEL.
    fn dpc_for_isr(&mut self, sys: &Sys, irp: Option<IrpId>);
    /// The periodic timer's DPC at DISPATCH_LEVEL.
    fn timer_dpc(&mut self, sys: &Sys);
    /// An execution routine that runs after `AllocateAdapterChannelEx` returned.
    fn execution_routine(&mut self, sys: &Sys, base: MapRegisterBase) -> IoAllocationAction;
    /// The routine of the driver's own DPC object `dpc` (queued with
    /// [`Sys::ke_insert_queue_dpc`]) at DISPATCH_LEVEL, with the
    /// `SystemArgument1`/`SystemArgument2` it was queued with.
    fn driver_dpc(&mut self, sys: &Sys, dpc: u32, argument1: u64, argument2: u64) {
        let _ = (sys, dpc, argument1, argument2);
    }
    /// `IRP_MJ_CLEANUP` at PASSIVE_LEVEL: the last handle of `file` closed.
    /// The cleanup IRP itself is the I/O manager's business here; the
    /// routine returns the status it completes it with.
    fn cleanup(&mut self, sys: &Sys, file: FileId) -> NtStatus {
        let _ = (sys, file);
        NtStatus::SUCCESS
    }

    /// Run one routine of the driver — an event of the machine or a call of
    /// a user thread — entered on `cpu` at `irql`. A model driver runs it
    /// whole on the caller's thread (the default); a native driver runs it
    /// on a thread of its simulated CPU, where it may be preempted. `None`:
    /// the routine is blocked in a wait and still running; the machine runs
    /// events and asks [`WdmDriver::poll_blocked`] for its result.
    fn run_routine<R: Send + 'static>(
        &mut self,
        sys: &Sys,
        cpu: usize,
        irql: Irql,
        routine: impl FnOnce(&mut Self, &Sys) -> R + Send + 'static,
    ) -> Option<R>
    where
        Self: Sized,
    {
        enter(sys, cpu, irql);
        let r = routine(self, sys);
        leave(sys);
        Some(r)
    }

    /// The result of a routine [`WdmDriver::run_routine`] left blocked, once
    /// it returned (after driving it on); `None` while it still waits.
    fn poll_blocked(&mut self, sys: &Sys) -> Option<Box<dyn Any + Send>> {
        let _ = sys;
        None
    }

    /// `IoCancelIrp(irp)`, called by the machine for a user thread or a
    /// DPC: under the cancel spin lock set `Irp->Cancel`, take the cancel
    /// routine and call it (it releases the lock to `Irp->CancelIrql`).
    fn io_cancel_irp(&mut self, sys: &Sys, irp: IrpId)
    where
        Self: Sized,
    {
        let old = sys.io_acquire_cancel_spin_lock();
        let routine = sys.io_cancel_irp_take_routine(irp);
        if let Some(routine) = routine {
            self.cancel(sys, routine, irp, old);
            let still = sys.with(|k| {
                k.cpus
                    .cpu()
                    .locks
                    .iter()
                    .any(|(l, _)| *l == SpinLock::Cancel)
            });
            if still {
                sys.report_violation(Violation::CancelSpinLockMisuse);
                sys.io_release_cancel_spin_lock(old);
            }
        } else {
            sys.io_release_cancel_spin_lock(old);
        }
    }

    /// The machine freed a completed IRP (its sender collected the result).
    fn irp_freed(&mut self, sys: &Sys, irp: IrpId) {
        let _ = (sys, irp);
    }

    /// `IoAcquireCancelSpinLock` as the I/O manager takes it inside
    /// `IoStartPacket`/`IoStartNextPacket` (a native driver's lock word
    /// excludes other CPUs for real).
    fn acquire_cancel_lock(&mut self, sys: &Sys) -> Irql {
        sys.io_acquire_cancel_spin_lock()
    }

    /// `IoReleaseCancelSpinLock` as the I/O manager releases it.
    fn release_cancel_lock(&mut self, sys: &Sys, irql: Irql) {
        sys.io_release_cancel_spin_lock(irql);
    }

    /// The I/O manager takes the device queue's own lock around an insert
    /// or removal (a native driver may walk the queue under it).
    fn lock_device_queue(&mut self, sys: &Sys) {
        let _ = sys;
    }

    /// Release what [`WdmDriver::lock_device_queue`] took.
    fn unlock_device_queue(&mut self, sys: &Sys) {
        let _ = sys;
    }

    /// The power manager sends a system power IRP (`minor`, to `state`) to
    /// the top of the stack; the token to ask [`WdmDriver::system_power_result`]
    /// with. A driver without power handling agrees at once (the default).
    fn send_system_power(&mut self, sys: &Sys, minor: PowerMinor, state: SystemPower) -> usize {
        let _ = (sys, minor, state);
        0
    }

    /// The status the system power IRP `token` was completed with, once it
    /// was (the IRP is then freed).
    fn system_power_result(&mut self, sys: &Sys, token: usize) -> Option<NtStatus> {
        let _ = (sys, token);
        Some(NtStatus::SUCCESS)
    }

    /// Send the power IRP a driver requested with `PoRequestPowerIrp` (the
    /// power manager's thread, at the IRQL [`WdmDriver::power_pagable`] picks).
    fn power_irp(&mut self, sys: &Sys, irp: usize) {
        let _ = (sys, irp);
    }

    /// The machine is being dropped: end any thread the driver runs on.
    fn shutdown(&mut self) {}

    /// The device object has `DO_POWER_PAGABLE`: power IRPs at PASSIVE_LEVEL.
    fn power_pagable(&mut self, sys: &Sys) -> bool {
        let _ = sys;
        true
    }
}

/// Enter a routine of a model driver on `cpu` at `irql`.
pub fn enter(sys: &Sys, cpu: usize, irql: Irql) {
    sys.with(|k| {
        k.cpus.switch_to(cpu);
        k.cpus.set_irql(irql);
        k.cpus.cpu_mut().floor = irql;
    })
}

/// Leave a routine of a model driver: nothing may stay held.
pub fn leave(sys: &Sys) {
    sys.with(|k| {
        let locks = std::mem::take(&mut k.cpus.cpu_mut().locks);
        if let Some((lock, _)) = locks.first() {
            let v = if *lock == SpinLock::Cancel {
                Violation::CancelSpinLockMisuse
            } else {
                Violation::SpinLockHeldAtReturn { lock: lock.name() }
            };
            k.verifier.report(v);
        }
        k.cpus.set_irql(Irql::Passive);
        k.cpus.cpu_mut().floor = Irql::Passive;
    })
}

/// BAR0 of the edu device, as `READ/WRITE_REGISTER_ULONG` see it.
#[derive(Clone, Debug)]
pub struct SimRegs(pub Sys);

impl RegisterFile for SimRegs {
    fn read32(&mut self, offset: u32) -> u32 {
        self.0.read_register(offset)
    }

    fn write32(&mut self, offset: u32, value: u32) {
        self.0.write_register(offset, value)
    }

    fn stall_us(&mut self, micros: u32) {
        self.0.stall_us(micros)
    }
}

/// The version-3 DMA operations of one simulated adapter, with the driver's
/// transfer context, scatter/gather buffer and execution routine (which
/// returns `KeepObject` and hands its grant over through a [`GrantSlot`]).
#[derive(Debug)]
pub struct SimDma {
    sys: Sys,
    adapter: AdapterId,
    slot: Rc<GrantSlot>,
    sg_buffer_bytes: u32,
    /// The elements of each list given and not put yet.
    lists: std::collections::HashMap<MapRegisterBase, Vec<SgElement>>,
}

impl SimDma {
    pub(crate) fn new(sys: Sys, adapter: AdapterId, sg_buffer_bytes: u32) -> Self {
        Self {
            sys,
            adapter,
            slot: Rc::new(GrantSlot::new()),
            sg_buffer_bytes,
            lists: std::collections::HashMap::new(),
        }
    }

    /// The adapter handle.
    pub fn adapter(&self) -> AdapterId {
        self.adapter
    }

    /// The grant hand-off shared with the driver's execution routine.
    pub fn slot(&self) -> Rc<GrantSlot> {
        Rc::clone(&self.slot)
    }

    /// Use a scatter/gather buffer of this many bytes (tests of 0xE6/0x24).
    pub fn set_sg_buffer_bytes(&mut self, bytes: u32) {
        self.sg_buffer_bytes = bytes;
    }

    fn hal<T>(&self, f: impl FnOnce(&mut crate::hal::Hal, &mut crate::hal::HalCtx<'_>) -> T) -> T {
        self.sys.with(|k| k.hal_call(f))
    }

    /// The MDL of the chain `mdl` holding `offset`, and the offset in it.
    fn locate_in_chain(&self, mdl: MdlId, offset: u64) -> Result<(MdlId, u64), NtStatus> {
        self.sys
            .with(|k| k.mdls.locate(mdl, offset))
            .ok_or(NtStatus::INVALID_PARAMETER)
    }
}

/// The execution routine of the driver: hand the grant to the allocating
/// call if it is still running, else to the engine (`Some(base)`).
pub fn execution_routine(slot: &GrantSlot, base: MapRegisterBase) -> Option<MapRegisterBase> {
    match slot.deliver(base.0 as usize) {
        Delivery::Absorbed => None,
        Delivery::ToEngine(b) => Some(MapRegisterBase(b as u64)),
    }
}

impl DmaOps for SimDma {
    type Mdl = MdlId;
    type MapRegisterBase = MapRegisterBase;

    fn get_dma_alignment(&mut self) -> u32 {
        let id = self.adapter;
        self.hal(|h, c| h.get_dma_alignment(c, id))
    }

    fn get_dma_transfer_info(
        &mut self,
        mdl: MdlId,
        offset: u64,
        length: u32,
        write_only: bool,
    ) -> Result<DmaTransferInfo, NtStatus> {
        let id = self.adapter;
        self.hal(|h, c| h.get_dma_transfer_info(c, id, mdl, offset, length, write_only))
    }

    fn initialize_dma_transfer_context(&mut self) -> Result<(), NtStatus> {
        let id = self.adapter;
        self.hal(|h, c| h.initialize_dma_transfer_context(c, id))
    }

    fn allocate_adapter_channel_ex(
        &mut self,
        map_register_count: u32,
        mode: AllocationMode,
    ) -> Result<AllocateOutcome<MapRegisterBase>, NtStatus> {
        let id = self.adapter;
        self.slot.arm();
        let result = self.sys.with(|k| {
            let r = k.hal_call(|h, c| {
                h.allocate_adapter_channel_ex(
                    c,
                    id,
                    map_register_count,
                    mode == AllocationMode::Synchronous,
                )
            });
            k.schedule_contention_end(id);
            r
        });
        match result {
            Err(status) => {
                self.slot.disarm();
                return Err(status);
            }
            Ok(AllocateResult::RunNow(base)) => {
                // The HAL calls the execution routine inside the call.
                let deliver = execution_routine(&self.slot, base);
                debug_assert!(deliver.is_none());
                self.sys
                    .hal_routine_returned(id, base, IoAllocationAction::KeepObject);
            }
            Ok(AllocateResult::Committed(base)) => self.sys.with(|k| {
                let cpu = k.random_cpu();
                let delay = k.rng.range(US, 60 * US);
                k.sched
                    .schedule(delay, cpu, Event::ExecutionRoutine(id, base));
            }),
            Ok(AllocateResult::Waiting) => {}
        }
        Ok(match self.slot.settle() {
            Settled::GrantedNow(b) => AllocateOutcome::Granted(MapRegisterBase(b as u64)),
            Settled::Queued => AllocateOutcome::Queued,
        })
    }

    fn cancel_adapter_channel(&mut self) -> bool {
        let id = self.adapter;
        self.hal(|h, c| h.cancel_adapter_channel(c, id))
    }

    fn map_transfer_ex(
        &mut self,
        mdl: MdlId,
        map_register_base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        let id = self.adapter;
        let sg_bytes = self.sg_buffer_bytes;
        self.hal(|h, c| {
            h.map_transfer_ex(
                c,
                id,
                mdl,
                map_register_base,
                offset,
                length,
                write_to_device,
                sg_bytes,
                sg,
            )
        })
    }

    fn flush_adapter_buffers_ex(
        &mut self,
        mdl: MdlId,
        map_register_base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        let id = self.adapter;
        self.hal(|h, c| {
            h.flush_adapter_buffers_ex(
                c,
                id,
                mdl,
                map_register_base,
                offset,
                length,
                write_to_device,
            )
        })
    }

    fn free_adapter_channel(&mut self) {
        let id = self.adapter;
        self.hal(|h, c| h.free_adapter_channel(c, id))
    }

    fn free_map_registers(&mut self, map_register_base: MapRegisterBase, map_register_count: u32) {
        let id = self.adapter;
        self.hal(|h, c| h.free_map_registers(c, id, map_register_base, map_register_count))
    }

    fn put_dma_adapter(&mut self) {
        let id = self.adapter;
        self.hal(|h, c| h.put_dma_adapter(c, id))
    }

    fn disable_bus_master(&mut self) {
        let command = self.sys.pci_command();
        self.sys.set_pci_command(command & !0x4);
    }

    fn bus_master_enabled(&mut self) -> bool {
        self.sys.pci_command() & 0x4 != 0
    }

    fn enable_bus_master(&mut self) -> bool {
        let command = self.sys.pci_command();
        self.sys.set_pci_command(command | 0x4);
        self.bus_master_enabled()
    }

    fn flush_io_buffers(&mut self, _mdl: MdlId, _read_operation: bool) {
        self.hal(|h, c| h.ke_flush_io_buffers(c));
    }

    fn locate(&mut self, mdl: MdlId, offset: u64) -> Option<MdlSpot> {
        let (held_by, in_mdl) = self.locate_in_chain(mdl, offset).ok()?;
        self.sys.with(|k| {
            let m = k.mdls.get(held_by)?;
            Some(MdlSpot {
                page_offset: ((u64::from(m.byte_offset) + in_mdl) % u64::from(PAGE_SIZE)) as u32,
                bytes_to_mdl_end: (u64::from(m.byte_count) - in_mdl) as u32,
            })
        })
    }

    /// The `AdapterControl` returns `DeallocateObjectKeepRegisters`. A grant
    /// that comes late is delivered by the machine's driver (whose routine
    /// says what it returns): tests of this adapter alone grant inline.
    fn allocate_adapter_channel(
        &mut self,
        map_register_count: u32,
    ) -> Result<AllocateOutcome<MapRegisterBase>, NtStatus> {
        let id = self.adapter;
        self.slot.arm();
        let result = self.sys.with(|k| {
            let r = k.hal_call(|h, c| h.allocate_adapter_channel(c, id, map_register_count));
            k.schedule_contention_end(id);
            r
        });
        match result {
            Err(status) => {
                self.slot.disarm();
                return Err(status);
            }
            Ok(AllocateResult::RunNow(base)) => {
                let deliver = execution_routine(&self.slot, base);
                debug_assert!(deliver.is_none());
                self.sys.hal_routine_returned(
                    id,
                    base,
                    IoAllocationAction::DeallocateObjectKeepRegisters,
                );
            }
            Ok(AllocateResult::Committed(base)) => self.sys.with(|k| {
                let cpu = k.random_cpu();
                let delay = k.rng.range(US, 60 * US);
                k.sched
                    .schedule(delay, cpu, Event::ExecutionRoutine(id, base));
            }),
            Ok(AllocateResult::Waiting) => {}
        }
        Ok(match self.slot.settle() {
            Settled::GrantedNow(b) => AllocateOutcome::Granted(MapRegisterBase(b as u64)),
            Settled::Queued => AllocateOutcome::Queued,
        })
    }

    /// The common-buffer strategy runs on the machine's kernel (and the
    /// HIL's harness), not on this model-level adapter: nothing to copy.
    fn copy_to_common_buffer(
        &mut self,
        _mdl: MdlId,
        _offset: u64,
        _length: u32,
    ) -> Result<(), NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    fn copy_from_common_buffer(
        &mut self,
        _mdl: MdlId,
        _offset: u64,
        _length: u32,
    ) -> Result<(), NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    fn free_common_buffer(&mut self) {}

    fn adapter_quiet(&mut self) {}

    fn calculate_scatter_gather_list(
        &mut self,
        mdl: MdlId,
        offset: u64,
        length: u32,
    ) -> Result<u32, NtStatus> {
        let id = self.adapter;
        let (held_by, in_mdl) = self.locate_in_chain(mdl, offset)?;
        self.hal(|h, c| h.calculate_scatter_gather_list(c, id, held_by, in_mdl, length))
            .map(|(bytes, _)| bytes)
    }

    fn scatter_gather_buffer_bytes(&self) -> u32 {
        self.sg_buffer_bytes
    }

    /// A grant committed for later is delivered at once: this adapter alone
    /// has no driver to run a late list routine.
    fn get_scatter_gather_list(
        &mut self,
        buffer: ListBuffer,
        mdl: MdlId,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<AllocateOutcome<MapRegisterBase>, NtStatus> {
        let id = self.adapter;
        let (held_by, in_mdl) = self.locate_in_chain(mdl, offset)?;
        let bytes = (buffer == ListBuffer::Driver).then_some(self.sg_buffer_bytes);
        let result = self.hal(|h, c| {
            h.get_scatter_gather_list(c, id, held_by, in_mdl, length, write_to_device, bytes)
        })?;
        match result {
            AllocateResult::RunNow(base) | AllocateResult::Committed(base) => {
                let elements = self.hal(|h, c| h.build_list(c, id, base))?;
                self.lists.insert(base, elements);
                self.sys
                    .hal_routine_returned(id, base, IoAllocationAction::KeepObject);
                Ok(AllocateOutcome::Granted(base))
            }
            AllocateResult::Waiting => Ok(AllocateOutcome::Queued),
        }
    }

    fn scatter_gather_elements(&mut self, list: MapRegisterBase, sg: &mut SgList) -> bool {
        self.lists
            .get(&list)
            .is_some_and(|elements| elements.iter().all(|e| sg.push(*e)))
    }

    fn put_scatter_gather_list(&mut self, list: MapRegisterBase, write_to_device: bool) {
        let id = self.adapter;
        self.hal(|h, c| h.put_scatter_gather_list(c, id, list, write_to_device));
        self.lists.remove(&list);
    }

    fn map_transfer(
        &mut self,
        mdl: MdlId,
        map_register_base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<SgElement, NtStatus> {
        let id = self.adapter;
        let (held_by, in_mdl) = self.locate_in_chain(mdl, offset)?;
        self.hal(|h, c| {
            h.map_transfer(
                c,
                id,
                held_by,
                map_register_base,
                in_mdl,
                length,
                write_to_device,
            )
        })
    }

    fn flush_adapter_buffers(
        &mut self,
        mdl: MdlId,
        map_register_base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        let id = self.adapter;
        let (held_by, in_mdl) = self.locate_in_chain(mdl, offset)?;
        self.hal(|h, c| {
            h.flush_adapter_buffers(
                c,
                id,
                held_by,
                map_register_base,
                in_mdl,
                length,
                write_to_device,
            )
        })
    }
}
