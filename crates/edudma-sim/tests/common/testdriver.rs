//! A kit for small WDM test drivers written against the kernel exports,
//! exactly as a C driver is written: `DriverEntry` fills the driver object,
//! `AddDevice` creates and attaches the FDO (`IoCreateDevice`,
//! `IoAttachDeviceToDeviceStack`), the PnP dispatch routine forwards the
//! start synchronously and maps BAR0, connects the interrupt and (when
//! asked) gets a version-3 DMA adapter, and on removal gives everything
//! back, passes the IRP down, detaches and deletes the device.
//!
//! A test driver is a [`TestDriver`]: its dispatch routine, StartIo and
//! DpcForIsr, each an `unsafe extern "C"` routine with the DDI's signature.
//! The kit's [`driver_entry`] (generic over it) is the `DriverEntry` the
//! machine loads through `NativeConfig::entry`. Behaviour is selected per
//! test through `DWORD` values under the device's hardware key
//! (`NativeConfig::registry`), read in AddDevice with
//! `IoOpenDeviceRegistryKey` / `ZwQueryValueKey` / `ZwClose`.
//!
//! What the driver observes for the test (its ISR's log, the IRPs it pended,
//! where its extension is) goes to a [`Probe`]. The test hands its probe
//! over through a mailbox keyed by the `TestId` registry value, which is
//! unique per machine: tests run in parallel threads of one process.
//!
//! Driver routines never panic: a panic cannot unwind out of an
//! `extern "C"` routine and would abort every test of the binary. What a
//! routine finds wrong it writes to the probe's log for the test to assert.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use edudma_core::NtStatus;
use edudma_core::regs::{self, BAR0_SIZE, RegisterFile};
use edudma_sim::hal::DeviceDescription;
use edudma_sim::irql::Irql;
use edudma_sim::machine::{Machine, MachineConfig};
use edudma_sim::native::{NativeConfig, NativeDriver};
use edudma_sim::sched::MS;
use edudma_sim::wdm::PnpMinor;
use wdk_sys::ntddk::{
    IoAcquireRemoveLockEx, IoAttachDeviceToDeviceStack, IoConnectInterruptEx, IoCreateDevice,
    IoDeleteDevice, IoDetachDevice, IoDisconnectInterruptEx, IoForwardIrpSynchronously,
    IoGetDmaAdapter, IoInitializeRemoveLockEx, IoOpenDeviceRegistryKey,
    IoReleaseRemoveLockAndWaitEx, IoSetStartIoAttributes, IofCallDriver, IofCompleteRequest,
    KeFlushQueuedDpcs, KeGetCurrentIrql, KeInitializeDpc, KeInsertQueueDpc, MmMapIoSpaceEx,
    MmUnmapIoSpace, ZwClose, ZwQueryValueKey,
};
use wdk_sys::{
    _DMA_SPEED, _DMA_WIDTH, _INTERFACE_TYPE, _KEY_VALUE_INFORMATION_CLASS,
    CM_FULL_RESOURCE_DESCRIPTOR, CM_PARTIAL_RESOURCE_DESCRIPTOR, CM_RESOURCE_LIST,
    DEVICE_DESCRIPTION, DEVICE_OBJECT, DMA_ADAPTER, DO_DEVICE_INITIALIZING, DO_DIRECT_IO,
    DRIVER_OBJECT, HANDLE, IO_CONNECT_INTERRUPT_PARAMETERS, IO_DISCONNECT_INTERRUPT_PARAMETERS,
    IO_NO_INCREMENT, IO_REMOVE_LOCK, IO_STACK_LOCATION, IRP, IRP_MJ_CLOSE, IRP_MJ_CREATE,
    IRP_MJ_DEVICE_CONTROL, IRP_MJ_PNP, IRP_MJ_READ, IRP_MJ_WRITE, IRP_MN_REMOVE_DEVICE,
    IRP_MN_START_DEVICE, IRP_MN_STOP_DEVICE, IRP_MN_SURPRISE_REMOVAL, KDPC, KSPIN_LOCK, NTSTATUS,
    PDRIVER_CANCEL, PHYSICAL_ADDRESS, PKINTERRUPT, PVOID, SIZE_T, SL_PENDING_RETURNED, ULONG,
    ULONG_PTR, UNICODE_STRING,
};

// ---- the DDI shapes and header values ----------------------------------------

/// A `DRIVER_DISPATCH` routine.
pub type DispatchRoutine = unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut IRP) -> NTSTATUS;
/// A `DRIVER_STARTIO` routine.
pub type StartIoRoutine = unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut IRP);
/// A `DRIVER_CANCEL` routine.
pub type CancelRoutine = unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut IRP);
/// A `KDEFERRED_ROUTINE`: `(Dpc, DeferredContext, SystemArgument1, SystemArgument2)`.
pub type DeferredRoutine = unsafe extern "C" fn(*mut KDPC, PVOID, PVOID, PVOID);

/// `FILE_DEVICE_UNKNOWN` (devioctl.h).
const FILE_DEVICE_UNKNOWN: ULONG = 0x22;
/// `PLUGPLAY_REGKEY_DEVICE` (wdm.h).
const PLUGPLAY_REGKEY_DEVICE: ULONG = 1;
/// `KEY_READ` (wdm.h).
const KEY_READ: ULONG = 0x0002_0019;
/// `REG_DWORD` (winnt.h).
const REG_DWORD: u32 = 4;
/// `CmResourceTypeMemory` (wdm.h).
const CM_RESOURCE_TYPE_MEMORY: u8 = 3;
/// `CmResourceTypeDeviceSpecific` (wdm.h).
const CM_RESOURCE_TYPE_DEVICE_SPECIFIC: u8 = 5;
/// `PAGE_READWRITE | PAGE_NOCACHE` (wdm.h): how registers are mapped.
const PAGE_READWRITE_NOCACHE: ULONG = 0x04 | 0x200;
/// `CONNECT_MESSAGE_BASED` (wdm.h).
const CONNECT_MESSAGE_BASED: ULONG = 3;
/// DIRQL of the edu device on the simulated machine.
pub const DIRQL: u8 = 5;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: u8 = 2;
/// `STATUS_SUCCESS`.
pub const STATUS_SUCCESS: NTSTATUS = 0;
/// `STATUS_PENDING`.
pub const STATUS_PENDING: NTSTATUS = NtStatus::PENDING.0;

// ---- registry values the kit reads in AddDevice --------------------------------

/// The key of the test's [`Probe`] in the mailbox (set by [`boot`]).
pub const TEST_ID: &str = "TestId";
/// The test driver's behaviour; what it means is the driver's own business.
pub const MODE: &str = "Mode";
/// 1: `IoSetStartIoAttributes(fdo, DeferredStartIo = TRUE, …)`; 0: FALSE.
pub const DEFERRED_START_IO: &str = "DeferredStartIo";
/// 1: `IoSetStartIoAttributes(fdo, …, NonCancelable = TRUE)`; 0: FALSE.
pub const NON_CANCELABLE: &str = "NonCancelable";
/// 1: get a version-3 DMA adapter for the edu device at start.
pub const DMA_ADAPTER_AT_START: &str = "DmaAdapter";
/// 1: removal forgets to put the adapter (a leak on purpose).
pub const KEEP_ADAPTER_AT_REMOVE: &str = "KeepAdapterAtRemove";
/// 1: removal waits on its remove lock before passing the removal down.
pub const WAIT_BEFORE_REMOVE_PASSES: &str = "WaitBeforeRemovePasses";

// ---- what the test sees ------------------------------------------------------------

/// One IRP a dispatch routine pended and kept, with its MDL chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pended {
    /// The IRP (`*mut IRP`).
    pub irp: usize,
    /// `Irp->MdlAddress` (`*mut MDL`), null for a buffered request.
    pub mdl: usize,
}

/// What one machine's test driver shows its test.
#[derive(Debug, Default)]
pub struct Probe {
    /// The device extension ([`Ext`]), once AddDevice ran.
    ext: AtomicUsize,
    log: Mutex<Vec<String>>,
    pended: Mutex<Vec<Pended>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Probe {
    /// The device extension's address (0 before AddDevice).
    pub fn ext(&self) -> usize {
        self.ext.load(Ordering::Acquire)
    }

    /// What the driver logged, in order.
    pub fn log(&self) -> Vec<String> {
        locked(&self.log).clone()
    }

    /// Append to the log (driver side).
    pub fn push(&self, line: String) {
        locked(&self.log).push(line);
    }

    /// The IRPs the driver pended and kept, in order.
    pub fn pended(&self) -> Vec<Pended> {
        locked(&self.pended).clone()
    }

    /// Keep a pended IRP (driver side).
    ///
    /// # Safety
    /// `irp` must be a live IRP the caller owns.
    pub unsafe fn keep(&self, irp: *mut IRP) {
        // SAFETY: the caller's live IRP; MdlAddress is a plain field.
        let mdl = unsafe { (*irp).MdlAddress } as usize;
        locked(&self.pended).push(Pended {
            irp: irp as usize,
            mdl,
        });
    }
}

/// Probes waiting for their machine's AddDevice, by `TestId`.
static MAILBOX: Mutex<BTreeMap<u32, Arc<Probe>>> = Mutex::new(BTreeMap::new());
/// The next `TestId`.
static NEXT_TEST_ID: AtomicU32 = AtomicU32::new(1);

// ---- the device extension ----------------------------------------------------------

/// The FDO's extension: what every test driver keeps per device.
#[derive(Debug)]
pub struct Ext {
    /// Our FDO.
    pub fdo: *mut DEVICE_OBJECT,
    /// The PCI PDO we were given.
    pub pdo: *mut DEVICE_OBJECT,
    /// The device we attached to.
    pub lower: *mut DEVICE_OBJECT,
    /// The registry's `Mode`.
    pub mode: u32,
    /// The registry's `DmaAdapter`.
    pub want_adapter: bool,
    /// The registry's `KeepAdapterAtRemove`.
    pub keep_adapter: bool,
    /// The registry's `WaitBeforeRemovePasses`.
    pub wait_before_remove_passes: bool,
    /// A driver spin lock (`KSPIN_LOCK`, nonpaged).
    pub lock: UnsafeCell<KSPIN_LOCK>,
    /// BAR0, mapped at start.
    pub bar0: AtomicPtr<u8>,
    /// `ConnectionContext.Generic` of the interrupt connection.
    pub connection: UnsafeCell<PVOID>,
    /// The connection's version (0: not connected).
    pub connect_version: AtomicU32,
    /// The adapter got at start (null: none).
    pub adapter: AtomicPtr<DMA_ADAPTER>,
    /// Map registers `IoGetDmaAdapter` granted.
    pub map_registers: AtomicU32,
    /// The DMA transfer context (`DMA_TRANSFER_CONTEXT_SIZE_V1` bytes).
    pub dma_context: UnsafeCell<[u64; 16]>,
    /// Interrupt status bits the ISR acknowledged, for the DPC.
    pub irq_bits: AtomicU32,
    /// StartIo calls so far.
    pub start_io_calls: AtomicU32,
    /// The test's probe.
    pub probe: Arc<Probe>,
}

/// The extension of our FDO.
///
/// # Safety
/// `device` must be an FDO the kit's AddDevice created, not yet deleted.
pub unsafe fn ext<'a>(device: *mut DEVICE_OBJECT) -> &'a Ext {
    // SAFETY: AddDevice wrote an `Ext` at DeviceExtension.
    unsafe { &*(*device).DeviceExtension.cast::<Ext>() }
}

/// The extension at an address a [`Probe`] gave.
///
/// # Safety
/// `addr` must be [`Probe::ext`] of a device that is not deleted.
pub unsafe fn ext_at<'a>(addr: usize) -> &'a Ext {
    // SAFETY: as above.
    unsafe { &*(addr as *const Ext) }
}

impl Ext {
    /// The spin lock's address, for `KeAcquireSpinLockRaiseToDpc`.
    pub fn lock(&self) -> *mut KSPIN_LOCK {
        self.lock.get()
    }

    /// The register at `offset` of BAR0 (null before start).
    pub fn register(&self, offset: u32) -> *mut u32 {
        let base = self.bar0.load(Ordering::Acquire);
        if base.is_null() {
            return ptr::null_mut();
        }
        base.wrapping_add(offset as usize).cast()
    }
}

// ---- the test driver ----------------------------------------------------------------

/// The routines that make a test driver what it is; the kit supplies
/// DriverEntry, AddDevice, the PnP dispatch routine, the ISR and
/// DriverUnload around them.
pub trait TestDriver: 'static {
    /// IRP_MJ_CREATE, _CLOSE, _READ, _WRITE and _DEVICE_CONTROL.
    const DISPATCH: DispatchRoutine;
    /// `DriverStartIo`, if the driver has one.
    const START_IO: Option<StartIoRoutine> = None;
    /// DpcForIsr (`IoInitializeDpcRequest`); its context is the FDO.
    const DPC_FOR_ISR: DeferredRoutine = log_dpc;
}

/// `DriverEntry` of the test driver `D` (load it with `NativeConfig::entry`).
///
/// # Safety
/// Called once by the I/O manager with a fresh driver object.
pub unsafe extern "system" fn driver_entry<D: TestDriver>(
    driver: *mut DRIVER_OBJECT,
    _registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: the I/O manager's driver object, with its extension.
    unsafe {
        let d = &mut *driver;
        for major in [
            IRP_MJ_CREATE,
            IRP_MJ_CLOSE,
            IRP_MJ_READ,
            IRP_MJ_WRITE,
            IRP_MJ_DEVICE_CONTROL,
        ] {
            d.MajorFunction[major as usize] = Some(D::DISPATCH);
        }
        d.MajorFunction[IRP_MJ_PNP as usize] = Some(dispatch_pnp);
        d.DriverStartIo = D::START_IO;
        d.DriverUnload = Some(driver_unload);
        (*d.DriverExtension).AddDevice = Some(add_device::<D>);
    }
    STATUS_SUCCESS
}

/// Nothing global to free.
unsafe extern "C" fn driver_unload(_driver: *mut DRIVER_OBJECT) {}

/// AddDevice: read the registry, create the FDO with its extension,
/// initialize its DPC, attach it to the PDO.
unsafe extern "C" fn add_device<D: TestDriver>(
    driver: *mut DRIVER_OBJECT,
    pdo: *mut DEVICE_OBJECT,
) -> NTSTATUS {
    let id = read_dword(pdo, TEST_ID).unwrap_or(0);
    let mode = read_dword(pdo, MODE).unwrap_or(0);
    let deferred = read_dword(pdo, DEFERRED_START_IO);
    let non_cancelable = read_dword(pdo, NON_CANCELABLE);
    let want_adapter = read_dword(pdo, DMA_ADAPTER_AT_START) == Some(1);
    let keep_adapter = read_dword(pdo, KEEP_ADAPTER_AT_REMOVE) == Some(1);
    let wait_before_remove_passes = read_dword(pdo, WAIT_BEFORE_REMOVE_PASSES) == Some(1);
    let probe = locked(&MAILBOX).remove(&id).unwrap_or_default();
    let mut fdo: *mut DEVICE_OBJECT = ptr::null_mut();
    // SAFETY: PASSIVE_LEVEL; our driver object; an unnamed device.
    let status = unsafe {
        IoCreateDevice(
            driver,
            size_of::<Ext>() as ULONG,
            ptr::null_mut(),
            FILE_DEVICE_UNKNOWN,
            0,
            0,
            &mut fdo,
        )
    };
    if status < 0 {
        return status;
    }
    // SAFETY: IoCreateDevice allocated size_of::<Ext>() zeroed, 16-aligned
    // nonpaged bytes at DeviceExtension for us.
    let ext = unsafe {
        let slot = (*fdo).DeviceExtension.cast::<Ext>();
        slot.write(Ext {
            fdo,
            pdo,
            lower: ptr::null_mut(),
            mode,
            want_adapter,
            keep_adapter,
            wait_before_remove_passes,
            lock: UnsafeCell::new(0),
            bar0: AtomicPtr::new(ptr::null_mut()),
            connection: UnsafeCell::new(ptr::null_mut()),
            connect_version: AtomicU32::new(0),
            adapter: AtomicPtr::new(ptr::null_mut()),
            map_registers: AtomicU32::new(0),
            dma_context: UnsafeCell::new([0; 16]),
            irq_bits: AtomicU32::new(0),
            start_io_calls: AtomicU32::new(0),
            probe,
        });
        &mut *slot
    };
    // SAFETY: PASSIVE_LEVEL; the DPC lives in the device object
    // (IoInitializeDpcRequest: KeInitializeDpc(&Dev->Dpc, routine, Dev)).
    unsafe { KeInitializeDpc(&raw mut (*fdo).Dpc, Some(D::DPC_FOR_ISR), fdo.cast()) };
    if deferred.is_some() || non_cancelable.is_some() {
        let (deferred, non_cancelable) = (deferred.unwrap_or(0), non_cancelable.unwrap_or(0));
        // SAFETY: PASSIVE_LEVEL; our new FDO.
        unsafe {
            IoSetStartIoAttributes(fdo, u8::from(deferred != 0), u8::from(non_cancelable != 0));
        }
    }
    // SAFETY: PASSIVE_LEVEL; our FDO onto the PDO we were given.
    let lower = unsafe { IoAttachDeviceToDeviceStack(fdo, pdo) };
    if lower.is_null() {
        // SAFETY: nothing refers to the new device yet.
        unsafe { IoDeleteDevice(fdo) };
        return NtStatus::NO_SUCH_DEVICE.0;
    }
    ext.lower = lower;
    ext.probe
        .ext
        .store(ptr::from_ref(ext) as usize, Ordering::Release);
    // SAFETY: set up complete; the I/O manager may send IRPs now.
    unsafe { (*fdo).Flags = ((*fdo).Flags | DO_DIRECT_IO) & !DO_DEVICE_INITIALIZING };
    STATUS_SUCCESS
}

/// Read a `DWORD` under the device's hardware key. PASSIVE_LEVEL.
pub fn read_dword(pdo: *mut DEVICE_OBJECT, value: &str) -> Option<u32> {
    let mut key: HANDLE = ptr::null_mut();
    // SAFETY: PASSIVE_LEVEL with the PDO the PnP manager gave us.
    let status =
        unsafe { IoOpenDeviceRegistryKey(pdo, PLUGPLAY_REGKEY_DEVICE, KEY_READ, &mut key) };
    if status < 0 {
        return None;
    }
    let mut chars: Vec<u16> = value.encode_utf16().collect();
    let mut name = UNICODE_STRING {
        Length: (chars.len() * 2) as u16,
        MaximumLength: (chars.len() * 2) as u16,
        Buffer: chars.as_mut_ptr(),
    };
    // KEY_VALUE_PARTIAL_INFORMATION: TitleIndex, Type, DataLength, Data[].
    let mut buffer = [0u32; 8];
    let mut result_length = 0u32;
    // SAFETY: an open key, a valid name that outlives the call, and a
    // 4-byte-aligned buffer of the length given.
    let status = unsafe {
        ZwQueryValueKey(
            key,
            &mut name,
            _KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation,
            buffer.as_mut_ptr().cast(),
            size_of_val(&buffer) as u32,
            &mut result_length,
        )
    };
    // SAFETY: the handle IoOpenDeviceRegistryKey returned, closed once.
    unsafe {
        let _ = ZwClose(key);
    }
    (status >= 0 && buffer[1] == REG_DWORD && buffer[2] == 4).then_some(buffer[3])
}

// ---- the header inlines ---------------------------------------------------------------

/// `IoGetCurrentIrpStackLocation` (wdm.h inline).
///
/// # Safety
/// `irp` must be a live IRP owned by the caller.
pub unsafe fn current_stack(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the stack arm of the overlay is the active one in a dispatch routine.
    unsafe {
        (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation
    }
}

/// `IoMarkIrpPending` (wdm.h inline).
///
/// # Safety
/// `irp` must be a live IRP owned by the caller.
pub unsafe fn mark_irp_pending(irp: *mut IRP) {
    // SAFETY: Control is a plain UCHAR of the caller's location.
    unsafe { (*current_stack(irp)).Control |= SL_PENDING_RETURNED as u8 };
}

/// `IoSetCancelRoutine` (wdm.h inline: an interlocked exchange); returns
/// the routine set before.
///
/// # Safety
/// `irp` must be a live IRP.
pub unsafe fn set_cancel_routine(irp: *mut IRP, routine: Option<CancelRoutine>) -> PDRIVER_CANCEL {
    let new = routine.map_or(ptr::null_mut(), |f| f as *mut std::ffi::c_void);
    // SAFETY: `CancelRoutine` is a pointer-sized `Option<fn>` (null = None),
    // exchanged as the header's InterlockedExchangePointer does.
    unsafe {
        let slot = (&raw mut (*irp).CancelRoutine).cast::<*mut std::ffi::c_void>();
        let old = std::sync::atomic::AtomicPtr::from_ptr(slot).swap(new, Ordering::SeqCst);
        std::mem::transmute::<*mut std::ffi::c_void, PDRIVER_CANCEL>(old)
    }
}

/// `IoCompleteRequest(Irp, IO_NO_INCREMENT)` after setting `IoStatus`.
///
/// # Safety
/// `irp` must be a live IRP the caller may complete.
pub unsafe fn complete(irp: *mut IRP, status: NTSTATUS, information: usize) {
    // SAFETY: the caller's IRP.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = status;
        (*irp).IoStatus.Information = information as ULONG_PTR;
        IofCompleteRequest(irp, IO_NO_INCREMENT as i8);
    }
}

/// `IoSkipCurrentIrpStackLocation` + `IoCallDriver`.
///
/// # Safety
/// The caller owns `irp` and passes it down to `lower`.
unsafe fn pass_down(lower: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the header's own arithmetic, then the export.
    unsafe {
        (*irp).CurrentLocation += 1;
        let overlay = &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1;
        (*overlay).CurrentStackLocation = (*overlay).CurrentStackLocation.add(1);
        IofCallDriver(lower, irp)
    }
}

/// `IoRequestDpc(fdo, NULL, NULL)` (wdm.h inline): true when queued now,
/// false when it already was.
///
/// # Safety
/// `fdo` must be a live FDO whose DPC was initialized.
pub unsafe fn request_dpc(fdo: *mut DEVICE_OBJECT) -> bool {
    // SAFETY: the FDO's DPC object, initialized in AddDevice.
    unsafe { KeInsertQueueDpc(&raw mut (*fdo).Dpc, ptr::null_mut(), ptr::null_mut()) != 0 }
}

// ---- registers --------------------------------------------------------------------------

unsafe extern "C" {
    /// `READ_REGISTER_ULONG` (a wdm.h inline on Windows, a kernel export here,
    /// as `src/ffi.rs` calls it on this host).
    #[link_name = "READ_REGISTER_ULONG"]
    fn read_register_ulong(register: *mut u32) -> u32;
    /// `WRITE_REGISTER_ULONG`.
    #[link_name = "WRITE_REGISTER_ULONG"]
    fn write_register_ulong(register: *mut u32, value: u32);
}

/// The edu registers through our BAR0 mapping.
pub struct Bar0<'a>(pub &'a Ext);

impl RegisterFile for Bar0<'_> {
    fn read32(&mut self, offset: u32) -> u32 {
        // SAFETY: a register inside the BAR0 mapping made at start (the
        // export faults, without touching memory, on anything else).
        unsafe { read_register_ulong(self.0.register(offset)) }
    }

    fn write32(&mut self, offset: u32, value: u32) {
        // SAFETY: as above.
        unsafe { write_register_ulong(self.0.register(offset), value) }
    }

    fn stall_us(&mut self, _micros: u32) {}
}

// ---- PnP --------------------------------------------------------------------------------

/// `IRP_MJ_PNP`.
unsafe extern "C" fn dispatch_pnp(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: our FDO.
    let ext = unsafe { ext(device) };
    // SAFETY: a live PnP IRP.
    let minor = u32::from(unsafe { (*current_stack(irp)).MinorFunction });
    // SAFETY: (all arms) we own the IRP at PASSIVE_LEVEL.
    unsafe {
        match minor {
            IRP_MN_START_DEVICE => {
                let status = start_device(ext, irp);
                complete(irp, status, 0);
                status
            }
            IRP_MN_REMOVE_DEVICE => remove_device(device, irp),
            IRP_MN_STOP_DEVICE | IRP_MN_SURPRISE_REMOVAL => {
                (*irp).IoStatus.__bindgen_anon_1.Status = STATUS_SUCCESS;
                pass_down(ext.lower, irp)
            }
            _ => pass_down(ext.lower, irp),
        }
    }
}

/// `IRP_MN_START_DEVICE`, after the bus driver started.
///
/// # Safety
/// PASSIVE_LEVEL; we own the start IRP.
unsafe fn start_device(ext: &Ext, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: PASSIVE_LEVEL; the bus driver starts first.
    if unsafe { IoForwardIrpSynchronously(ext.lower, irp) } == 0 {
        return wdk_sys::STATUS_UNSUCCESSFUL;
    }
    // SAFETY: the IRP came back to us.
    let status = unsafe { (*irp).IoStatus.__bindgen_anon_1.Status };
    if status < 0 {
        return status;
    }
    // SAFETY: the start IRP's own location and its translated resources.
    let resource = unsafe {
        first_memory_resource(
            (*current_stack(irp))
                .Parameters
                .StartDevice
                .AllocatedResourcesTranslated,
        )
    };
    let Some(start) = resource else {
        return wdk_sys::STATUS_DEVICE_CONFIGURATION_ERROR;
    };
    // SAFETY: PASSIVE_LEVEL; our device's translated memory resource.
    let va = unsafe {
        MmMapIoSpaceEx(
            PHYSICAL_ADDRESS { QuadPart: start },
            BAR0_SIZE as SIZE_T,
            PAGE_READWRITE_NOCACHE,
        )
    };
    if va.is_null() {
        return NtStatus::INSUFFICIENT_RESOURCES.0;
    }
    ext.bar0.store(va.cast(), Ordering::Release);
    connect_interrupt(ext);
    if ext.want_adapter {
        let mut description = device_description(&super::edu_description());
        let mut map_registers = 0u32;
        // SAFETY: PASSIVE_LEVEL with our PDO and a filled description.
        let adapter = unsafe { IoGetDmaAdapter(ext.pdo, &mut description, &mut map_registers) };
        if adapter.is_null() {
            return NtStatus::INSUFFICIENT_RESOURCES.0;
        }
        ext.map_registers.store(map_registers, Ordering::Release);
        ext.adapter.store(adapter, Ordering::Release);
    }
    STATUS_SUCCESS
}

/// `IRP_MN_REMOVE_DEVICE`: give everything back, pass down, detach, delete.
///
/// # Safety
/// PASSIVE_LEVEL; we own the IRP; `fdo` is our FDO.
unsafe fn remove_device(fdo: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: our FDO, live until IoDeleteDevice below.
    let ext = unsafe { ext(fdo) };
    disconnect_interrupt(ext);
    // SAFETY: PASSIVE_LEVEL; no DPC of ours may run once the device is gone.
    unsafe { KeFlushQueuedDpcs() };
    let va = ext.bar0.swap(ptr::null_mut(), Ordering::AcqRel);
    if !va.is_null() {
        // SAFETY: the mapping made at start, of that length.
        unsafe { MmUnmapIoSpace(va.cast(), BAR0_SIZE as SIZE_T) };
    }
    let adapter = ext.adapter.swap(ptr::null_mut(), Ordering::AcqRel);
    if !adapter.is_null() && !ext.keep_adapter {
        // SAFETY: the adapter IoGetDmaAdapter returned, put once.
        unsafe {
            if let Some(put) = (*(*adapter).DmaOperations).PutDmaAdapter {
                put(adapter);
            }
        }
    }
    let lower = ext.lower;
    if ext.wait_before_remove_passes {
        // The misbehaviour: IoReleaseRemoveLockAndWait before the removal
        // went down (Learn: after). A lock of the moment, tagged by the IRP.
        // SAFETY: all-zero before IoInitializeRemoveLockEx; PASSIVE_LEVEL.
        let mut lock: IO_REMOVE_LOCK = unsafe { std::mem::zeroed() };
        let size = size_of::<IO_REMOVE_LOCK>() as u32;
        // SAFETY: a local lock, acquired and released with the same tag.
        unsafe {
            IoInitializeRemoveLockEx(&mut lock, 0, 0, 0, size);
            let _ = IoAcquireRemoveLockEx(&mut lock, irp.cast(), c"t".as_ptr(), 0, size);
            IoReleaseRemoveLockAndWaitEx(&mut lock, irp.cast(), size);
        }
    }
    // SAFETY: PASSIVE_LEVEL; the removal goes down the stack, then our
    // device leaves it. The extension is dropped before its memory goes.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = STATUS_SUCCESS;
        let status = pass_down(lower, irp);
        IoDetachDevice(lower);
        ptr::drop_in_place((*fdo).DeviceExtension.cast::<Ext>());
        IoDeleteDevice(fdo);
        status
    }
}

/// The start of the first translated memory resource.
///
/// # Safety
/// `list` must be null or the PnP manager's resource list.
unsafe fn first_memory_resource(list: *mut CM_RESOURCE_LIST) -> Option<i64> {
    if list.is_null() {
        return None;
    }
    // SAFETY: one full descriptor (a PCI function) with `Count` partial
    // descriptors one after the other, a device-specific one followed by its
    // data (so the next may be unaligned); pack(4): raw pointers, unaligned
    // by-value reads.
    unsafe {
        if (&raw const (*list).Count).read_unaligned() == 0 {
            return None;
        }
        let full = (&raw mut (*list).List).cast::<CM_FULL_RESOURCE_DESCRIPTOR>();
        let partial = &raw mut (*full).PartialResourceList;
        let mut d =
            (&raw mut (*partial).PartialDescriptors).cast::<CM_PARTIAL_RESOURCE_DESCRIPTOR>();
        for _ in 0..(&raw const (*partial).Count).read_unaligned() as usize {
            let kind = (&raw const (*d).Type).read_unaligned();
            if kind == CM_RESOURCE_TYPE_MEMORY {
                return Some((&raw const (*d).u.Memory.Start.QuadPart).read_unaligned());
            }
            let data = if kind == CM_RESOURCE_TYPE_DEVICE_SPECIFIC {
                (&raw const (*d).u.DeviceSpecificData.DataSize).read_unaligned() as usize
            } else {
                0
            };
            d = d.add(1).cast::<u8>().add(data).cast();
        }
        None
    }
}

// ---- interrupts ------------------------------------------------------------------------

/// Connect the interrupt: message-signalled, line-based as the fallback.
fn connect_interrupt(ext: &Ext) {
    // SAFETY: all-zero is valid for this C struct (the DDI asks for it).
    let mut p: IO_CONNECT_INTERRUPT_PARAMETERS = unsafe { std::mem::zeroed() };
    p.Version = CONNECT_MESSAGE_BASED;
    // SAFETY: writing the MessageBased arm selects it.
    unsafe {
        let m = &mut p.__bindgen_anon_1.MessageBased;
        m.PhysicalDeviceObject = ext.pdo;
        m.ConnectionContext.Generic = ext.connection.get();
        m.MessageServiceRoutine = Some(message_isr);
        m.ServiceContext = ptr::from_ref(ext).cast_mut().cast();
        m.FallBackServiceRoutine = Some(line_isr);
    }
    // SAFETY: PASSIVE_LEVEL at start; our PDO, routines and nonpaged extension.
    if unsafe { IoConnectInterruptEx(&mut p) } >= 0 {
        ext.connect_version.store(p.Version, Ordering::Release);
    }
}

fn disconnect_interrupt(ext: &Ext) {
    let version = ext.connect_version.swap(0, Ordering::AcqRel);
    if version == 0 {
        return;
    }
    // SAFETY: all-zero is valid for this C struct.
    let mut p: IO_DISCONNECT_INTERRUPT_PARAMETERS = unsafe { std::mem::zeroed() };
    p.Version = version;
    // SAFETY: written by IoConnectInterruptEx; no ISR reads it.
    p.ConnectionContext.Generic = unsafe { *ext.connection.get() };
    // SAFETY: PASSIVE_LEVEL; the connection IoConnectInterruptEx made.
    unsafe { IoDisconnectInterruptEx(&mut p) };
}

/// The ISR's work at DIRQL: read and acknowledge the status, keep the bits
/// for the DPC, request it, and log `isr <bits> queued=<bool>`.
fn service(ext: &Ext) -> u8 {
    // SAFETY: callable at any IRQL.
    let irql = unsafe { KeGetCurrentIrql() };
    let Some(bits) = regs::isr_acknowledge(&mut Bar0(ext)) else {
        return 0;
    };
    ext.irq_bits.fetch_or(bits.bits(), Ordering::AcqRel);
    // SAFETY: our FDO's DPC, initialized in AddDevice; callable at DIRQL.
    let queued = unsafe { request_dpc(ext.fdo) };
    if irql != DIRQL {
        ext.probe.push(format!("isr at IRQL {irql}"));
    }
    ext.probe
        .push(format!("isr {:#x} queued={queued}", bits.bits()));
    1
}

/// Line-based ISR (`KSERVICE_ROUTINE`), the fallback.
unsafe extern "C" fn line_isr(_interrupt: PKINTERRUPT, context: PVOID) -> u8 {
    // SAFETY: the service context is our extension.
    service(unsafe { &*context.cast::<Ext>() })
}

/// Message-signalled ISR (`KMESSAGE_SERVICE_ROUTINE`).
unsafe extern "C" fn message_isr(_interrupt: PKINTERRUPT, context: PVOID, _message: ULONG) -> u8 {
    // SAFETY: as in `line_isr`.
    service(unsafe { &*context.cast::<Ext>() })
}

/// A DpcForIsr that logs `dpc <bits>` with the bits the ISR acknowledged.
pub unsafe extern "C" fn log_dpc(_dpc: *mut KDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    // SAFETY: the DPC's context is our FDO (IoInitializeDpcRequest).
    let ext = unsafe { ext(context.cast()) };
    // SAFETY: callable at any IRQL.
    let irql = unsafe { KeGetCurrentIrql() };
    if irql != DISPATCH_LEVEL {
        ext.probe.push(format!("dpc at IRQL {irql}"));
    }
    let bits = ext.irq_bits.swap(0, Ordering::AcqRel);
    ext.probe.push(format!("dpc {bits:#x}"));
}

// ---- DMA ---------------------------------------------------------------------------------

/// A `DEVICE_DESCRIPTION` of a model description (PCI, 32-bit width).
pub fn device_description(d: &DeviceDescription) -> DEVICE_DESCRIPTION {
    // SAFETY: all-zero is what the DDI asks to start from.
    let mut out: DEVICE_DESCRIPTION = unsafe { std::mem::zeroed() };
    out.Version = d.version;
    out.Master = u8::from(d.master);
    out.ScatterGather = u8::from(d.scatter_gather);
    out.Dma32BitAddresses = u8::from(d.dma32_bit_addresses);
    out.Dma64BitAddresses = u8::from(d.dma64_bit_addresses);
    out.InterfaceType = _INTERFACE_TYPE::PCIBus;
    out.DmaWidth = _DMA_WIDTH::Width32Bits;
    out.DmaSpeed = _DMA_SPEED::Compatible;
    out.MaximumLength = d.maximum_length;
    out.DmaAddressWidth = d.dma_address_width;
    out
}

// ---- the harness side -------------------------------------------------------------------

/// Boot a machine for the test driver `D`: DriverEntry and AddDevice, then
/// IRP_MN_START_DEVICE. `registry` are the `Device Parameters` values;
/// the scheduler never preempts (`preempt_percent` 0) unless asked.
pub fn boot<D: TestDriver>(
    config: &MachineConfig,
    registry: &[(&str, u32)],
) -> (Machine<NativeDriver>, Arc<Probe>) {
    boot_with::<D>(config, registry, 0)
}

/// [`boot`] with a preemption percentage.
pub fn boot_with<D: TestDriver>(
    config: &MachineConfig,
    registry: &[(&str, u32)],
    preempt_percent: u32,
) -> (Machine<NativeDriver>, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let id = NEXT_TEST_ID.fetch_add(1, Ordering::Relaxed);
    locked(&MAILBOX).insert(id, Arc::clone(&probe));
    let mut values: Vec<(String, u32)> = registry
        .iter()
        .map(|(k, v)| ((*k).to_string(), *v))
        .collect();
    values.push((TEST_ID.to_string(), id));
    let native = NativeConfig {
        seed: config.seed,
        preempt_percent,
        registry: values,
        entry: driver_entry::<D>,
    };
    let mut m = Machine::new_with(config, |sys| NativeDriver::new(sys, &native));
    let loaded = m.run(0, Irql::Passive, |d, sys| d.load(sys));
    assert_eq!(loaded, Some(NtStatus::SUCCESS), "{:?}", m.crash());
    assert_ne!(probe.ext(), 0, "AddDevice took the probe");
    assert_eq!(m.pnp(PnpMinor::StartDevice, MS), Ok(NtStatus::SUCCESS));
    (m, probe)
}

/// Run `f` as driver code on CPU 0 at `irql` (a routine of the driver on
/// a simulated CPU, where the kernel exports can be called); `None` when
/// the machine bug-checked first. `f` must not panic.
pub fn at<R: Send + 'static>(
    m: &mut Machine<NativeDriver>,
    irql: Irql,
    f: impl FnOnce() -> R + Send + 'static,
) -> Option<R> {
    m.run(0, irql, move |_, _| f())
}

/// `WRITE_REGISTER_ULONG` of BAR0's `offset` by the driver at PASSIVE_LEVEL.
pub fn write_register(m: &mut Machine<NativeDriver>, probe: &Probe, offset: u32, value: u32) {
    let ext = probe.ext();
    at(m, Irql::Passive, move || {
        // SAFETY: the extension of a started, live device.
        Bar0(unsafe { ext_at(ext) }).write32(offset, value);
    });
}
