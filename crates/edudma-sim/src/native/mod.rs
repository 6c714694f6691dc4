//! The kernel that the driver's own sources (`src/`, built for this host
//! by `crates/edudma-driver-host`) run on.
//!
//! - [`exports`]: the kernel exports `src/` imports (`IoStartPacket`,
//!   `KeAcquireSpinLockRaiseToDpc`, ...) and `READ/WRITE_REGISTER_ULONG`,
//!   each a `#[no_mangle] extern "C"` function whose signature is held to
//!   the generated wdk-sys declaration at compile time;
//! - [`dma`]: the `DMA_OPERATIONS` of the adapters `IoGetDmaAdapter` returns;
//! - [`objects`]: the real instances of the generated types the driver is
//!   handed (`DRIVER_OBJECT`, `DEVICE_OBJECT`, IRPs with their stack
//!   locations, MDLs, the start's `CM_RESOURCE_LIST`) and their mapping to
//!   the model's handles;
//! - [`bus`]: the PCI bus driver below the driver (the PDO);
//! - [`sched`]: one OS thread per running routine, one baton, a seeded
//!   choice at every export call: real, reproducible concurrency.
//!
//! The model (`kernel`, `hal`, `edu`, `verifier`) stays the authority:
//! while kernel code runs, the model's view of an IRP is the truth; while
//! driver code runs, the real `IRP` is. Both are synchronised at every
//! crossing (`objects::pull` on entry to an export, `objects::push` on the
//! way back into driver code).
#![allow(unsafe_code)]

pub mod bus;
pub mod code;
pub mod dma;
pub mod exports;
pub mod objects;
pub mod power;
pub mod sched;

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Arc, Mutex, MutexGuard};

use edudma_core::NtStatus;
use wdk_sys::{
    DEVICE_OBJECT, IO_ALLOCATION_ACTION, IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_PNP,
    IRP_MN_REMOVE_DEVICE, IRP_MN_START_DEVICE, IRP_MN_STOP_DEVICE, IRP_MN_SURPRISE_REMOVAL, KDPC,
    UNICODE_STRING,
};

use crate::hal::{IoAllocationAction, MapRegisterBase};
use crate::io::{CancelRoutine, FileId, IrpId};
use crate::irql::Irql;
use crate::kernel::Sys;
use crate::sched::DpcId;
use crate::wdm::{PnpMinor, PnpOutcome, WdmDriver};

pub use code::in_driver_code;
pub use sched::SchedStats;

// The driver's entry point, from the host build of src/ (linked below).
unsafe extern "system" {
    fn DriverEntry(
        driver: *mut wdk_sys::DRIVER_OBJECT,
        registry_path: *const UNICODE_STRING,
    ) -> wdk_sys::NTSTATUS;
}

/// A driver's `DriverEntry`, as the I/O manager calls it.
pub type DriverEntryFn = unsafe extern "system" fn(
    *mut wdk_sys::DRIVER_OBJECT,
    *const UNICODE_STRING,
) -> wdk_sys::NTSTATUS;

/// The `DriverEntry` of `src/`, the driver that ships.
pub fn edudma_driver_entry() -> DriverEntryFn {
    DriverEntry
}

// Link the driver: nothing names its items, only its symbols.
use edudma as _;

/// How the machine treats the native driver.
#[derive(Clone, Debug)]
pub struct NativeConfig {
    /// Seed of the interleaving.
    pub seed: u64,
    /// Percent of switch points at which a routine gives its CPU up.
    pub preempt_percent: u32,
    /// `DWORD` values under the device's hardware key (`Device Parameters`).
    pub registry: Vec<(String, u32)>,
    /// The driver to load: `src/`'s by default; a test driver written
    /// against the same exports for the verifier's negative tests.
    pub entry: DriverEntryFn,
}

impl Default for NativeConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            preempt_percent: 20,
            registry: Vec::new(),
            entry: DriverEntry,
        }
    }
}

/// The native side of one machine: the kernel handle, the scheduler of its
/// CPUs and the objects handed to the driver.
pub struct Native {
    pub(crate) entry: DriverEntryFn,
    pub(crate) sys: Sys,
    pub(crate) sched: sched::Sched,
    pub(crate) objects: Mutex<objects::Objects>,
    /// See [`NativeDriver::preempt_at_next_spin_lock`].
    pub(crate) preemption: Mutex<Option<Preemption>>,
}

/// What runs while a PASSIVE_LEVEL thread is held just before it takes a
/// spin lock (see [`NativeDriver::preempt_at_next_spin_lock`]).
pub type Preemption = Box<dyn FnOnce(&mut NativeDriver, &Sys) + Send>;

impl Native {
    pub(crate) fn objects(&self) -> MutexGuard<'_, objects::Objects> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    /// The machine and activity this thread carries (worker threads only).
    static CURRENT: RefCell<Option<(Arc<Native>, sched::ActId)>> = const { RefCell::new(None) };
}

pub(crate) fn set_current(v: Option<(Arc<Native>, sched::ActId)>) {
    CURRENT.with(|c| *c.borrow_mut() = v);
}

/// The machine and activity of the calling thread. A kernel export called
/// outside any simulated CPU is a harness bug: abort, loudly.
pub(crate) fn current() -> (Arc<Native>, sched::ActId) {
    match CURRENT.with(|c| c.borrow().clone()) {
        Some(v) => v,
        None => {
            eprintln!("edudma-sim: a kernel export was called outside a simulated CPU");
            std::process::abort();
        }
    }
}

/// The driver of `src/`, as the machine sees it.
#[derive(Clone)]
pub struct NativeDriver(pub(crate) Arc<Native>);

impl std::fmt::Debug for NativeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeDriver")
    }
}

impl NativeDriver {
    /// A driver object for the machine of `sys` (call [`NativeDriver::load`]
    /// through the machine to run DriverEntry and AddDevice).
    pub fn new(sys: &Sys, config: &NativeConfig) -> Self {
        let cpus = sys.with(|k| k.cpus.count());
        let native = Native {
            entry: config.entry,
            sys: sys.clone(),
            sched: sched::Sched::new(cpus, config.seed, config.preempt_percent),
            objects: Mutex::new(objects::Objects::new(&config.registry)),
            preemption: Mutex::new(None),
        };
        NativeDriver(Arc::new(native))
    }

    /// The scheduler's counters.
    pub fn sched_stats(&self) -> SchedStats {
        self.0.sched.stats()
    }

    /// The address of the driver's FDO (0 before AddDevice), for tests that
    /// read a field of it between routines.
    pub fn fdo_address(&self) -> usize {
        self.0.objects().fdo
    }

    /// The name the driver gave its device object, if any.
    pub fn device_name(&self) -> Option<String> {
        self.0.objects().fdo_name.clone()
    }

    /// `IRP_MJ_CREATE` on the handle `file` for the name `name` below the
    /// device (`""`: the device itself), as `CreateFile` of the device
    /// interface path (plus `name`) sends it. PASSIVE_LEVEL; run it through
    /// the machine as a routine.
    pub fn create(&mut self, sys: &Sys, file: FileId, name: &str) -> NtStatus {
        self.0.objects().set_file_name(file, name);
        let irp = objects::build_system_irp(&self.0, sys, IRP_MJ_CREATE as u8, 0, Some(file));
        let _ = self.call_fdo(irp);
        objects::take_system_result(&self.0, irp).unwrap_or(NtStatus::INVALID_DEVICE_STATE)
    }

    /// The symbolic links the driver holds now (`IoCreateSymbolicLink`).
    pub fn symbolic_links(&self) -> Vec<String> {
        self.0.objects().links.iter().cloned().collect()
    }

    /// Whether the driver's device interface is enabled (what applications
    /// find with `CM_Get_Device_Interface_List`).
    pub fn interface_enabled(&self) -> bool {
        self.0.objects().interfaces.values().any(|on| *on)
    }

    /// When the device interface was last disabled, whether the driver still
    /// held BAR0 (it disabled the interface before releasing resources).
    pub fn interface_disabled_holding_bar0(&self) -> Option<bool> {
        self.0.objects().interface_disabled_holding_bar0
    }

    /// A preemption at one exact point, which the seeded scheduler cannot
    /// aim at: the next thread at PASSIVE_LEVEL that calls
    /// `KeAcquireSpinLockRaiseToDpc` is held just before it, and `then` runs
    /// meanwhile (as another CPU would run it: here on the held thread, which
    /// resumes its acquisition afterwards). For tests of what a driver may
    /// read before it takes a lock.
    pub fn preempt_at_next_spin_lock(
        &self,
        then: impl FnOnce(&mut NativeDriver, &Sys) + Send + 'static,
    ) {
        *self.0.preemption.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(then));
    }

    /// The leak check of the native objects after unload: what is still
    /// allocated or registered that the driver should have given back.
    pub fn leaks(&self) -> Vec<String> {
        self.0.objects().leaks()
    }

    fn fdo(&self) -> *mut DEVICE_OBJECT {
        self.0.objects().fdo as *mut DEVICE_OBJECT
    }

    /// Call the driver's dispatch routine for `major` on an IRP it owns.
    fn call_fdo(&self, irp: usize) -> NtStatus {
        let fdo = self.fdo();
        if fdo.is_null() {
            return NtStatus::NO_SUCH_DEVICE;
        }
        // SAFETY: a live IRP block built by `objects`, the FDO the driver created.
        NtStatus(unsafe { exports::call_driver(&self.0, fdo, irp as *mut wdk_sys::IRP) })
    }
}

/// `KIRQL` of a model IRQL (DIRQL of the edu device: 5).
pub(crate) fn kirql(irql: Irql) -> u8 {
    match irql {
        Irql::Passive => 0,
        Irql::Apc => 1,
        Irql::Dispatch => 2,
        Irql::Device => 5,
        Irql::High => 15,
    }
}

/// The model IRQL of a `KIRQL`.
pub(crate) fn irql_of(k: u8) -> Irql {
    match k {
        0 => Irql::Passive,
        1 => Irql::Apc,
        2 => Irql::Dispatch,
        3..=14 => Irql::Device,
        _ => Irql::High,
    }
}

impl WdmDriver for NativeDriver {
    fn dispatch(&mut self, sys: &Sys, irp: IrpId) -> NtStatus {
        let addr = objects::build_user_irp(&self.0, sys, irp);
        let Some(addr) = addr else {
            return NtStatus::INVALID_PARAMETER;
        };
        self.call_fdo(addr)
    }

    fn pnp(&mut self, sys: &Sys, minor: PnpMinor) -> PnpOutcome {
        let code = match minor {
            PnpMinor::StartDevice => IRP_MN_START_DEVICE,
            PnpMinor::StopDevice => IRP_MN_STOP_DEVICE,
            PnpMinor::SurpriseRemoval => IRP_MN_SURPRISE_REMOVAL,
            PnpMinor::RemoveDevice => IRP_MN_REMOVE_DEVICE,
            PnpMinor::QueryStopDevice => wdk_sys::IRP_MN_QUERY_STOP_DEVICE,
            PnpMinor::CancelStopDevice => wdk_sys::IRP_MN_CANCEL_STOP_DEVICE,
            PnpMinor::QueryRemoveDevice => wdk_sys::IRP_MN_QUERY_REMOVE_DEVICE,
            PnpMinor::CancelRemoveDevice => wdk_sys::IRP_MN_CANCEL_REMOVE_DEVICE,
        };
        let irp = objects::build_system_irp(&self.0, sys, IRP_MJ_PNP as u8, code as u8, None);
        // What counts is the status the IRP was completed with.
        let _ = self.call_fdo(irp);
        let completed = objects::take_system_result(&self.0, irp);
        PnpOutcome::Done(completed.unwrap_or(NtStatus::INVALID_DEVICE_STATE))
    }

    fn start_io(&mut self, sys: &Sys, irp: IrpId) {
        let Some(addr) = self.0.objects().user_irp(irp) else {
            return;
        };
        let routine = self.0.objects().driver_start_io();
        let Some(routine) = routine else { return };
        objects::push(&self.0, sys);
        // SAFETY: the driver's StartIo with its FDO and a live queued IRP.
        code::as_driver(|| unsafe { routine(self.fdo(), addr as *mut wdk_sys::IRP) });
        objects::pull(&self.0, sys);
    }

    fn cancel(&mut self, sys: &Sys, routine: CancelRoutine, irp: IrpId, cancel_irql: Irql) {
        let Some(addr) = self.0.objects().user_irp(irp) else {
            return;
        };
        objects::push(&self.0, sys);
        // SAFETY: a live IRP block; CancelIrql is the I/O manager's to set.
        unsafe { (*(addr as *mut wdk_sys::IRP)).CancelIrql = kirql(cancel_irql) };
        // SAFETY: `routine` is the address of the driver's cancel routine,
        // taken out of `Irp->CancelRoutine` (never anything else).
        let f: unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut wdk_sys::IRP) =
            unsafe { objects::fn_at(routine.0 as usize) };
        // SAFETY: called as IoCancelIrp calls it, holding the cancel spin lock.
        code::as_driver(|| unsafe { f(self.fdo(), addr as *mut wdk_sys::IRP) });
        objects::pull(&self.0, sys);
    }

    fn isr(&mut self, sys: &Sys) -> bool {
        // The interrupt dispatcher calls the ISR holding the interrupt
        // object's spin lock, and only while the ISR is connected.
        let me = current().1;
        let word = exports::interrupt_lock_word(&self.0);
        let _ = self.0.spin_acquire(me, word);
        let isr = self.0.objects().interrupt;
        let claimed = match isr {
            Some(isr) => {
                objects::push(&self.0, sys);
                // SAFETY: the routine and context IoConnectInterruptEx
                // registered; the interrupt object is the connection's.
                let claimed = unsafe { isr.call() };
                objects::pull(&self.0, sys);
                claimed
            }
            None => false,
        };
        exports::release_word(&self.0, me, word);
        claimed
    }

    fn dpc_for_isr(&mut self, sys: &Sys, irp: Option<IrpId>) {
        let fdo = self.fdo();
        if fdo.is_null() {
            return;
        }
        let irp_ptr = irp.and_then(|i| self.0.objects().user_irp(i)).unwrap_or(0);
        // SAFETY: the FDO's own DPC object.
        let dpc = unsafe { &raw mut (*fdo).Dpc };
        run_dpc(&self.0, sys, dpc, irp_ptr, 0);
    }

    fn timer_dpc(&mut self, sys: &Sys) {
        let dpc = self.0.objects().dpc_of(DpcId::Timer);
        if let Some(dpc) = dpc {
            run_dpc(&self.0, sys, dpc as *mut KDPC, 0, 0);
        }
    }

    fn execution_routine(&mut self, sys: &Sys, base: MapRegisterBase) -> IoAllocationAction {
        let pending = self.0.objects().take_execution_routine(base);
        let Some(p) = pending else {
            return IoAllocationAction::KeepObject;
        };
        if p.list.is_some() {
            // A list routine: the list is built now, and the channel stays
            // held until PutScatterGatherList.
            dma::deliver_list(&self.0, &p, base);
            return IoAllocationAction::KeepObject;
        }
        objects::push(&self.0, sys);
        // SAFETY: the routine and context AllocateAdapterChannelEx was given.
        let action = unsafe { p.call(base) };
        objects::pull(&self.0, sys);
        action_of(action)
    }

    fn driver_dpc(&mut self, sys: &Sys, dpc: u32, argument1: u64, argument2: u64) {
        let addr = self.0.objects().dpc_of(DpcId::Driver(dpc));
        if let Some(addr) = addr {
            run_dpc(
                &self.0,
                sys,
                addr as *mut KDPC,
                argument1 as usize,
                argument2 as usize,
            );
        }
    }

    fn cleanup(&mut self, sys: &Sys, file: FileId) -> NtStatus {
        let irp = objects::build_system_irp(&self.0, sys, IRP_MJ_CLEANUP as u8, 0, Some(file));
        let _ = self.call_fdo(irp);
        objects::take_system_result(&self.0, irp).unwrap_or(NtStatus::INVALID_DEVICE_STATE)
    }

    fn run_routine<R: Send + 'static>(
        &mut self,
        sys: &Sys,
        cpu: usize,
        irql: Irql,
        routine: impl FnOnce(&mut Self, &Sys) -> R + Send + 'static,
    ) -> Option<R> {
        let mut me = self.clone();
        let sys2 = sys.clone();
        let id = self.0.spawn(
            cpu,
            irql,
            irql == Irql::Dispatch,
            Box::new(move || Box::new(routine(&mut me, &sys2)) as Box<dyn Any + Send>),
        );
        self.0
            .drive(id)
            .and_then(|b| b.downcast::<R>().ok())
            .map(|b| *b)
    }

    fn poll_blocked(&mut self, _sys: &Sys) -> Option<Box<dyn Any + Send>> {
        let id = self.0.sched.lock().blocked_pending.take()?;
        self.0.drive(id)
    }

    fn io_cancel_irp(&mut self, sys: &Sys, irp: IrpId) {
        let addr = self.0.objects().user_irp(irp);
        if let Some(addr) = addr {
            // SAFETY: a live IRP block; IoCancelIrp is the export itself.
            unsafe { exports::cancel_irp(&self.0, sys, addr as *mut wdk_sys::IRP) };
        } else {
            // Not yet seen by the driver (or freed): only the model's flag.
            let old = sys.io_acquire_cancel_spin_lock();
            let _ = sys.io_cancel_irp_take_routine(irp);
            sys.io_release_cancel_spin_lock(old);
        }
    }

    fn irp_freed(&mut self, _sys: &Sys, irp: IrpId) {
        self.0.objects().free_user_irp(irp);
    }

    fn acquire_cancel_lock(&mut self, _sys: &Sys) -> Irql {
        exports::acquire_cancel_lock(&self.0)
    }

    fn release_cancel_lock(&mut self, _sys: &Sys, irql: Irql) {
        exports::release_cancel_lock(&self.0, irql);
    }

    fn lock_device_queue(&mut self, _sys: &Sys) {
        exports::lock_device_queue(&self.0);
    }

    fn unlock_device_queue(&mut self, _sys: &Sys) {
        exports::unlock_device_queue(&self.0);
    }

    fn send_system_power(
        &mut self,
        sys: &Sys,
        minor: crate::power::PowerMinor,
        state: crate::power::SystemPower,
    ) -> usize {
        self.send_system_irp(sys, minor, state)
    }

    fn system_power_result(&mut self, _sys: &Sys, token: usize) -> Option<NtStatus> {
        self.system_irp_result(token)
    }

    fn power_irp(&mut self, _sys: &Sys, irp: usize) {
        let _ = self.call_fdo(irp);
    }

    fn power_pagable(&mut self, _sys: &Sys) -> bool {
        self.fdo_power_pagable()
    }

    fn shutdown(&mut self) {
        self.0.sched.join_idle_workers();
    }
}

impl NativeDriver {
    /// `DriverEntry`, then `AddDevice` with the PCI PDO (PASSIVE_LEVEL; run
    /// it through the machine as a routine).
    pub fn load(&mut self, _sys: &Sys) -> NtStatus {
        let driver = self.0.objects().create_driver_object();
        let path = objects::unicode_static(
            "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\edudma",
        );
        // SAFETY: a fresh driver object with its extension, as the I/O
        // manager builds it, and a registry path that outlives the call.
        let status = code::as_driver(|| unsafe { (self.0.entry)(driver, &path.0) });
        if status < 0 {
            return NtStatus(status);
        }
        // SAFETY: DriverEntry filled the driver extension's AddDevice.
        let add = unsafe { (*(*driver).DriverExtension).AddDevice };
        let Some(add) = add else {
            return NtStatus::INVALID_DEVICE_STATE;
        };
        let pdo = self.0.objects().pdo as *mut DEVICE_OBJECT;
        // SAFETY: the PnP manager's call, with the bus driver's PDO.
        NtStatus(code::as_driver(|| unsafe { add(driver, pdo) }))
    }

    /// `IRP_MN_QUERY_PNP_DEVICE_STATE`, as the PnP manager sends it after
    /// `IoInvalidateDeviceState` (PASSIVE_LEVEL; run it through the machine
    /// as a routine): the status and the `PNP_DEVICE_STATE` bits.
    pub fn query_pnp_device_state(&mut self, sys: &Sys) -> (NtStatus, usize) {
        let irp = objects::build_system_irp(
            &self.0,
            sys,
            IRP_MJ_PNP as u8,
            wdk_sys::IRP_MN_QUERY_PNP_DEVICE_STATE as u8,
            None,
        );
        let _ = self.call_fdo(irp);
        objects::take_system_completion(&self.0, irp).unwrap_or((NtStatus::INVALID_DEVICE_STATE, 0))
    }

    /// `DriverUnload` after the device was removed.
    pub fn unload(&mut self, _sys: &Sys) {
        let (driver, unload) = {
            let o = self.0.objects();
            (o.driver as *mut wdk_sys::DRIVER_OBJECT, o.driver_unload())
        };
        if let Some(unload) = unload {
            // SAFETY: every device of the driver is gone; the I/O manager's call.
            code::as_driver(|| unsafe { unload(driver) });
        }
    }
}

/// Run the DPC object `dpc`'s routine with its context.
fn run_dpc(native: &Arc<Native>, sys: &Sys, dpc: *mut KDPC, a1: usize, a2: usize) {
    // SAFETY: a DPC object the driver initialized with KeInitializeDpc; it
    // lives in the driver's nonpaged memory until the device is deleted,
    // which waits for queued DPCs.
    let (routine, context) = unsafe { ((*dpc).DeferredRoutine, (*dpc).DeferredContext) };
    let Some(routine) = routine else { return };
    objects::push(native, sys);
    // SAFETY: the DPC's own routine, as the kernel calls it.
    code::as_driver(|| unsafe { routine(dpc, context, a1 as *mut _, a2 as *mut _) });
    objects::pull(native, sys);
}

fn action_of(a: IO_ALLOCATION_ACTION) -> IoAllocationAction {
    use wdk_sys::_IO_ALLOCATION_ACTION as A;
    match a {
        A::KeepObject => IoAllocationAction::KeepObject,
        A::DeallocateObject => IoAllocationAction::DeallocateObject,
        _ => IoAllocationAction::DeallocateObjectKeepRegisters,
    }
}
