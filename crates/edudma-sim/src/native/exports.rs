//! The kernel exports the driver imports, served by the model.
//!
//! Every export: brings the model up to date with the real objects
//! (`objects::pull`), is a switch point of the scheduler, does its work in
//! the model, and hands the model's decisions back (`objects::push`). A
//! bug check parks the calling CPU for good (nothing unwinds through
//! `extern "C"`). Each signature is held to the generated declaration by
//! [`same_signature!`]: the linker matches names only.
#![allow(non_snake_case)]
// The exports are called by the driver through the generated declarations;
// their safety contracts are the DDIs' own.
#![allow(clippy::missing_safety_doc)]
#![allow(missing_docs)] // each export is the DDI of the same name on Microsoft Learn

use std::sync::Arc;

use edudma_core::NtStatus;
use wdk_sys::{
    BOOLEAN, CCHAR, DEVICE_OBJECT, DRIVER_OBJECT, HANDLE, IO_CONNECT_INTERRUPT_PARAMETERS,
    IO_DISCONNECT_INTERRUPT_PARAMETERS, IO_REMOVE_LOCK, IO_STATUS_BLOCK, IRP, KDEVICE_QUEUE,
    KDEVICE_QUEUE_ENTRY, KDPC, KEVENT, KIRQL, KPROCESSOR_MODE, KSPIN_LOCK, KTIMER, LARGE_INTEGER,
    LONG, LONG_PTR, NTSTATUS, PCSTR, PDRIVER_CANCEL, PHYSICAL_ADDRESS, PKDEFERRED_ROUTINE,
    PKINTERRUPT, PKSYNCHRONIZE_ROUTINE, PULONG, PUNICODE_STRING, PVOID, SIZE_T, ULONG,
};

use super::code::{Mark, as_driver};
use super::dma::MmMapLockedPagesSpecifyCache;
use super::objects::{self, IrpKind, Isr};
use super::sched::{ActId, Wait};
use super::{Native, NativeDriver, current, irql_of, kirql};
use crate::io::CancelRoutine;
use crate::irql::{Irql, SpinLock};
use crate::kernel::Crash;
use crate::sched::{MS, US};
use crate::verifier::Violation;

/// Hold an export's signature to the generated declaration of the same
/// name: two fn items in one array must coerce to one fn pointer type.
macro_rules! same_signature {
    ($($name:ident),* $(,)?) => {
        $(const _: () = {
            let _ = [wdk_sys::ntddk::$name, $name];
        };)*
    };
}

same_signature!(
    IoAcquireCancelSpinLock,
    IoAcquireRemoveLockEx,
    IoAttachDeviceToDeviceStack,
    IoBuildSynchronousFsdRequest,
    IoConnectInterruptEx,
    IoCreateDevice,
    IoCreateSymbolicLink,
    IoDeleteDevice,
    IoDeleteSymbolicLink,
    IoDetachDevice,
    IoDisconnectInterruptEx,
    IoForwardIrpSynchronously,
    IoGetAttachedDeviceReference,
    IoInitializeRemoveLockEx,
    IoInvalidateDeviceState,
    IoOpenDeviceRegistryKey,
    IoRegisterDeviceInterface,
    IoReleaseCancelSpinLock,
    IoReleaseRemoveLockAndWaitEx,
    IoReleaseRemoveLockEx,
    IoSetDeviceInterfaceState,
    IoSetStartIoAttributes,
    IoStartNextPacket,
    IoStartPacket,
    IofCallDriver,
    IofCompleteRequest,
    KeAcquireSpinLockAtDpcLevel,
    KeAcquireSpinLockRaiseToDpc,
    KeCancelTimer,
    KeDelayExecutionThread,
    KeFlushQueuedDpcs,
    KeGetCurrentIrql,
    KeInitializeDpc,
    KeClearEvent,
    KeInitializeEvent,
    MmMapLockedPagesSpecifyCache,
    KeInitializeTimerEx,
    KeInsertQueueDpc,
    KeReleaseSpinLock,
    KeReleaseSpinLockFromDpcLevel,
    KeRemoveEntryDeviceQueue,
    KeSetEvent,
    KeSetTimerEx,
    KeStallExecutionProcessor,
    KeSynchronizeExecution,
    KeWaitForSingleObject,
    MmMapIoSpaceEx,
    MmUnmapIoSpace,
    ObfDereferenceObject,
    RtlFreeUnicodeString,
    ZwClose,
    ZwQueryValueKey,
);

/// One call into the kernel from driver code.
pub(crate) struct Call {
    pub(crate) n: Arc<Native>,
    pub(crate) me: ActId,
    /// Out of driver code until the call returns (dropped after `push`).
    pub(crate) _kernel: Mark,
}

impl Call {
    pub(crate) fn enter() -> Self {
        let kernel = Mark::kernel();
        let (n, me) = current();
        objects::pull(&n, &n.sys);
        n.yield_point(me);
        Call {
            n,
            me,
            _kernel: kernel,
        }
    }

    fn fault(&self, why: String) {
        self.n.sys.with(|k| k.faults.push(Crash::Hang(why)));
    }

    pub(crate) fn report(&self, v: Violation) {
        self.n.sys.report_violation(v);
    }

    fn driver(&self) -> NativeDriver {
        NativeDriver(Arc::clone(&self.n))
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        objects::push(&self.n, &self.n.sys);
        self.n.park_if_crashed(self.me);
    }
}

fn st(s: NtStatus) -> NTSTATUS {
    s.0
}

const STATUS_OBJECT_NAME_NOT_FOUND: NTSTATUS = 0xC000_0034_u32 as i32;
const STATUS_OBJECT_NAME_COLLISION: NTSTATUS = 0xC000_0035_u32 as i32;

// ---- devices and names ----------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoCreateDevice(
    DriverObject: *mut DRIVER_OBJECT,
    DeviceExtensionSize: ULONG,
    DeviceName: PUNICODE_STRING,
    DeviceType: ULONG,
    DeviceCharacteristics: ULONG,
    _Exclusive: BOOLEAN,
    DeviceObject: *mut *mut DEVICE_OBJECT,
) -> NTSTATUS {
    let c = Call::enter();
    let mut o = c.n.objects();
    if o.fdo != 0 && !o.fdo_deleted {
        // One edu function per machine: a second device of the same name.
        return if DeviceName.is_null() {
            st(NtStatus::INSUFFICIENT_RESOURCES)
        } else {
            STATUS_OBJECT_NAME_COLLISION
        };
    }
    let head = size_of::<DEVICE_OBJECT>().div_ceil(16) * 16;
    let bytes = head + DeviceExtensionSize as usize;
    let words = bytes.div_ceil(8).max(1);
    let b: Box<[u64]> = vec![0u64; words].into_boxed_slice();
    let addr = Box::into_raw(b) as *mut u64 as usize;
    let d = addr as *mut DEVICE_OBJECT;
    // SAFETY: zeroed memory for the object and its extension.
    unsafe {
        (*d).Type = 3;
        (*d).Size = (head + DeviceExtensionSize as usize) as u16;
        (*d).DriverObject = DriverObject;
        (*d).DeviceExtension = (addr + head) as PVOID;
        (*d).DeviceType = DeviceType;
        (*d).Characteristics = DeviceCharacteristics;
        (*d).StackSize = 1;
        (*d).Flags = wdk_sys::DO_DEVICE_INITIALIZING;
        (*DriverObject).DeviceObject = d;
        *DeviceObject = d;
    }
    o.fdo = addr;
    o.fdo_alloc = Some((addr, words * 8));
    o.fdo_deleted = false;
    o.fdo_name = (!DeviceName.is_null())
        // SAFETY: the caller's string.
        .then(|| unsafe { objects::read_unicode(DeviceName) });
    st(NtStatus::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDeleteDevice(DeviceObject: *mut DEVICE_OBJECT) {
    let c = Call::enter();
    let mut o = c.n.objects();
    if DeviceObject as usize != o.fdo || o.fdo_deleted {
        drop(o);
        c.fault("IoDeleteDevice of a device object that is not live".into());
        return;
    }
    if o.attached {
        drop(o);
        c.fault("IoDeleteDevice before IoDetachDevice".into());
        return;
    }
    // The memory stays until the machine goes: a driver touching it after
    // this is a bug the model cannot see, but must not crash the host.
    o.fdo_deleted = true;
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoAttachDeviceToDeviceStack(
    SourceDevice: *mut DEVICE_OBJECT,
    TargetDevice: *mut DEVICE_OBJECT,
) -> *mut DEVICE_OBJECT {
    let c = Call::enter();
    let mut o = c.n.objects();
    if TargetDevice as usize != o.pdo {
        return std::ptr::null_mut();
    }
    // SAFETY: the driver's new FDO and our PDO.
    unsafe {
        (*SourceDevice).StackSize = (*TargetDevice).StackSize + 1;
        (*TargetDevice).AttachedDevice = SourceDevice;
    }
    o.attached = true;
    TargetDevice
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDetachDevice(TargetDevice: *mut DEVICE_OBJECT) {
    let c = Call::enter();
    let mut o = c.n.objects();
    if TargetDevice as usize == o.pdo {
        // SAFETY: our PDO.
        unsafe { (*TargetDevice).AttachedDevice = std::ptr::null_mut() };
        o.attached = false;
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoRegisterDeviceInterface(
    _PhysicalDeviceObject: *mut DEVICE_OBJECT,
    InterfaceClassGuid: *const wdk_sys::GUID,
    _ReferenceString: PUNICODE_STRING,
    SymbolicLinkName: PUNICODE_STRING,
) -> NTSTATUS {
    let c = Call::enter();
    // SAFETY: the caller's GUID.
    let g = unsafe { *InterfaceClassGuid };
    let name = format!(
        "\\??\\PCI#VEN_1234&DEV_11E8&SUBSYS_11001AF4&REV_10#3&13c0b0c5&0&20#{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}}}",
        g.Data1,
        g.Data2,
        g.Data3,
        g.Data4[0],
        g.Data4[1],
        g.Data4[2..]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut buf: Vec<u16> = name.encode_utf16().collect();
    let len = (buf.len() * 2) as u16;
    let ptr = buf.as_mut_ptr();
    let mut o = c.n.objects();
    o.strings.insert(ptr as usize, buf);
    o.interfaces.insert(name, false);
    // SAFETY: the caller's output string.
    unsafe {
        (*SymbolicLinkName).Length = len;
        (*SymbolicLinkName).MaximumLength = len;
        (*SymbolicLinkName).Buffer = ptr;
    }
    st(NtStatus::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoSetDeviceInterfaceState(
    SymbolicLinkName: PUNICODE_STRING,
    Enable: BOOLEAN,
) -> NTSTATUS {
    let c = Call::enter();
    // SAFETY: the caller's string.
    let name = unsafe { objects::read_unicode(SymbolicLinkName) };
    let mut o = c.n.objects();
    let holding = !o.mappings.is_empty();
    match o.interfaces.get_mut(&name) {
        Some(state) => {
            *state = Enable != 0;
            if Enable == 0 {
                o.interface_disabled_holding_bar0 = Some(holding);
            }
            st(NtStatus::SUCCESS)
        }
        None => STATUS_OBJECT_NAME_NOT_FOUND,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoCreateSymbolicLink(
    SymbolicLinkName: PUNICODE_STRING,
    _DeviceName: PUNICODE_STRING,
) -> NTSTATUS {
    let c = Call::enter();
    // SAFETY: the caller's string.
    let name = unsafe { objects::read_unicode(SymbolicLinkName) };
    if c.n.objects().links.insert(name) {
        st(NtStatus::SUCCESS)
    } else {
        STATUS_OBJECT_NAME_COLLISION
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDeleteSymbolicLink(SymbolicLinkName: PUNICODE_STRING) -> NTSTATUS {
    let c = Call::enter();
    // SAFETY: the caller's string.
    let name = unsafe { objects::read_unicode(SymbolicLinkName) };
    if c.n.objects().links.remove(&name) {
        st(NtStatus::SUCCESS)
    } else {
        STATUS_OBJECT_NAME_NOT_FOUND
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn RtlFreeUnicodeString(UnicodeString: PUNICODE_STRING) {
    let c = Call::enter();
    // SAFETY: the caller's string.
    let buffer = unsafe { (*UnicodeString).Buffer } as usize;
    if c.n.objects().strings.remove(&buffer).is_none() {
        c.fault("RtlFreeUnicodeString of a string the kernel did not allocate".into());
        return;
    }
    // SAFETY: as above; the string is empty now.
    unsafe {
        (*UnicodeString).Buffer = std::ptr::null_mut();
        (*UnicodeString).Length = 0;
        (*UnicodeString).MaximumLength = 0;
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoGetAttachedDeviceReference(
    DeviceObject: *mut DEVICE_OBJECT,
) -> *mut DEVICE_OBJECT {
    let c = Call::enter();
    c.n.objects().device_references += 1;
    let mut top = DeviceObject;
    // SAFETY: a live device; the attachment chain ends at the top.
    unsafe {
        while !(*top).AttachedDevice.is_null() {
            top = (*top).AttachedDevice;
        }
    }
    top
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ObfDereferenceObject(_Object: PVOID) -> LONG_PTR {
    let c = Call::enter();
    let mut o = c.n.objects();
    o.device_references -= 1;
    if o.device_references < 0 {
        drop(o);
        c.fault("ObDereferenceObject without a reference".into());
    }
    0
}

// ---- registry ------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoOpenDeviceRegistryKey(
    _DeviceObject: *mut DEVICE_OBJECT,
    DevInstKeyType: ULONG,
    _DesiredAccess: wdk_sys::ACCESS_MASK,
    DevInstRegKey: wdk_sys::PHANDLE,
) -> NTSTATUS {
    let c = Call::enter();
    if DevInstKeyType != wdk_sys::PLUGPLAY_REGKEY_DEVICE {
        return st(NtStatus::INVALID_PARAMETER);
    }
    let mut o = c.n.objects();
    o.open_keys += 1;
    // SAFETY: the caller's output handle.
    unsafe { *DevInstRegKey = (0x1000 + o.open_keys as usize) as HANDLE };
    st(NtStatus::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwQueryValueKey(
    _KeyHandle: HANDLE,
    ValueName: PUNICODE_STRING,
    KeyValueInformationClass: wdk_sys::KEY_VALUE_INFORMATION_CLASS,
    KeyValueInformation: PVOID,
    Length: ULONG,
    ResultLength: PULONG,
) -> NTSTATUS {
    let c = Call::enter();
    if KeyValueInformationClass != wdk_sys::_KEY_VALUE_INFORMATION_CLASS::KeyValuePartialInformation
    {
        return st(NtStatus::INVALID_PARAMETER);
    }
    // SAFETY: the caller's string.
    let name = unsafe { objects::read_unicode(ValueName) };
    let Some(value) = c.n.objects().registry.get(&name).copied() else {
        return STATUS_OBJECT_NAME_NOT_FOUND;
    };
    // KEY_VALUE_PARTIAL_INFORMATION: TitleIndex, Type, DataLength, Data[4].
    let need: u32 = 16;
    // SAFETY: the caller's output length.
    unsafe { *ResultLength = need };
    if Length < need {
        return st(NtStatus::BUFFER_TOO_SMALL);
    }
    let words = [0u32, wdk_sys::REG_DWORD, 4, value];
    // SAFETY: `Length` (>= 16) bytes at the caller's buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(
            words.as_ptr().cast::<u8>(),
            KeyValueInformation.cast::<u8>(),
            16,
        )
    };
    st(NtStatus::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn ZwClose(_Handle: HANDLE) -> NTSTATUS {
    let c = Call::enter();
    let mut o = c.n.objects();
    if o.open_keys == 0 {
        return st(NtStatus::INVALID_PARAMETER);
    }
    o.open_keys -= 1;
    st(NtStatus::SUCCESS)
}

// ---- IRQL and spin locks ------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeGetCurrentIrql() -> KIRQL {
    let c = Call::enter();
    kirql(c.n.sys.irql())
}

/// Acquire the spin lock at `word` as `lock`: raise, spin for real, record.
fn acquire(c: &Call, word: usize, lock: SpinLock) -> Irql {
    acquire_as(&c.n, c.me, word, lock)
}

/// [`acquire`] for the activity `me` of `n`.
fn acquire_as(n: &Native, me: super::sched::ActId, word: usize, lock: SpinLock) -> Irql {
    let sys = &n.sys;
    let old = sys.irql();
    if old < Irql::Dispatch {
        sys.with(|k| k.cpus.set_irql(Irql::Dispatch));
    }
    // Spinning at DISPATCH_LEVEL: no DPC preempts a CPU that waits for a lock.
    let _ = n.spin_acquire(me, word);
    sys.with(|k| k.cpus.set_irql(old));
    // The model checks IRQL and lock order (a second acquire is a deadlock).
    sys.ke_acquire_spin_lock(lock)
}

fn release(c: &Call, word: usize, lock: SpinLock, new_irql: Irql) {
    release_as(&c.n, c.me, word, lock, new_irql);
}

/// [`release`] for the activity `me` of `n`.
fn release_as(n: &Native, me: super::sched::ActId, word: usize, lock: SpinLock, new_irql: Irql) {
    n.sys.ke_release_spin_lock(lock, new_irql);
    release_word(n, me, word);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeAcquireSpinLockRaiseToDpc(SpinLock: *mut KSPIN_LOCK) -> KIRQL {
    preempted_here();
    let c = Call::enter();
    let word = SpinLock as usize;
    kirql(acquire(
        &c,
        word,
        crate::irql::SpinLock::Native(word as u64),
    ))
}

/// A test's preemption armed with `NativeDriver::preempt_at_next_spin_lock`
/// runs now if the caller is a thread at PASSIVE_LEVEL.
fn preempted_here() {
    let (n, _) = current();
    if n.sys.irql() != Irql::Passive {
        return;
    }
    let then = n
        .preemption
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(then) = then {
        let mut driver = NativeDriver(Arc::clone(&n));
        then(&mut driver, &n.sys);
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReleaseSpinLock(SpinLock: *mut KSPIN_LOCK, NewIrql: KIRQL) {
    let c = Call::enter();
    let word = SpinLock as usize;
    release(
        &c,
        word,
        crate::irql::SpinLock::Native(word as u64),
        irql_of(NewIrql),
    );
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeAcquireSpinLockAtDpcLevel(SpinLock: *mut KSPIN_LOCK) {
    let c = Call::enter();
    let irql = c.n.sys.irql();
    if irql < Irql::Dispatch {
        c.report(Violation::WrongIrql {
            routine: "KeAcquireSpinLockAtDpcLevel",
            irql,
        });
        return;
    }
    let word = SpinLock as usize;
    let _ = acquire(&c, word, crate::irql::SpinLock::Native(word as u64));
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeReleaseSpinLockFromDpcLevel(SpinLock: *mut KSPIN_LOCK) {
    let c = Call::enter();
    let word = SpinLock as usize;
    release(
        &c,
        word,
        crate::irql::SpinLock::Native(word as u64),
        Irql::Dispatch,
    );
}

/// The I/O manager's own hold on the device queue's lock
/// (`DEVICE_OBJECT.DeviceQueue.Lock`) while it inserts or removes a packet:
/// a driver walking the queue under that lock sees it change only between.
pub(crate) fn lock_device_queue(n: &Native) {
    let word = device_queue_lock_word(n);
    if word != 0 {
        let _ = n.spin_acquire(current().1, word);
    }
}

/// Release what [`lock_device_queue`] took.
pub(crate) fn unlock_device_queue(n: &Native) {
    let word = device_queue_lock_word(n);
    if word != 0 {
        release_word(n, current().1, word);
    }
}

fn device_queue_lock_word(n: &Native) -> usize {
    let fdo = n.objects().fdo as *mut DEVICE_OBJECT;
    if fdo.is_null() {
        return 0;
    }
    // SAFETY: our FDO; only the address of its queue's lock is formed.
    unsafe { &raw mut (*fdo).DeviceQueue.Lock as usize }
}

/// The address of the cancel spin lock's word (the guard is not kept).
fn cancel_lock_word(n: &Native) -> usize {
    let o = n.objects();
    std::ptr::from_ref::<usize>(&o.cancel_lock) as usize
}

/// The cancel spin lock taken by the I/O manager itself (inside an export
/// such as `IoStartPacket`): the lock word excludes other CPUs for real.
pub(crate) fn acquire_cancel_lock(n: &Arc<Native>) -> Irql {
    acquire_as(n, current().1, cancel_lock_word(n), SpinLock::Cancel)
}

/// Release what [`acquire_cancel_lock`] took.
pub(crate) fn release_cancel_lock(n: &Arc<Native>, irql: Irql) {
    release_as(n, current().1, cancel_lock_word(n), SpinLock::Cancel, irql);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoAcquireCancelSpinLock(Irql: *mut KIRQL) {
    let c = Call::enter();
    let word = cancel_lock_word(&c.n);
    let old = acquire(&c, word, SpinLock::Cancel);
    // SAFETY: the caller's output.
    unsafe { *Irql = kirql(old) };
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoReleaseCancelSpinLock(Irql: KIRQL) {
    let c = Call::enter();
    let word = cancel_lock_word(&c.n);
    release(&c, word, SpinLock::Cancel, irql_of(Irql));
}

// ---- DPCs and timers -------------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeDpc(
    Dpc: *mut KDPC,
    DeferredRoutine: PKDEFERRED_ROUTINE,
    DeferredContext: PVOID,
) {
    let c = Call::enter();
    // SAFETY: the caller's DPC object.
    unsafe {
        (*Dpc).Type = 19; // DpcObject
        (*Dpc).Importance = 1; // MediumImportance
        (*Dpc).DeferredRoutine = DeferredRoutine;
        (*Dpc).DeferredContext = DeferredContext;
    }
    c.n.objects().register_dpc(Dpc as usize);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInsertQueueDpc(
    Dpc: *mut KDPC,
    SystemArgument1: PVOID,
    SystemArgument2: PVOID,
) -> BOOLEAN {
    let c = Call::enter();
    let id = c.n.objects().dpcs.get(&(Dpc as usize)).copied();
    let queued = match id {
        Some(crate::sched::DpcId::ForIsr) => {
            let irp = objects::user_id(&c.n, SystemArgument1.cast());
            c.n.sys.io_request_dpc(irp)
        }
        Some(crate::sched::DpcId::Driver(n)) => {
            c.n.sys
                .ke_insert_queue_dpc(n, SystemArgument1 as u64, SystemArgument2 as u64)
        }
        _ => {
            c.fault("KeInsertQueueDpc of an uninitialized DPC".into());
            false
        }
    };
    if queued {
        // SAFETY: the caller's DPC object.
        unsafe {
            (*Dpc).SystemArgument1 = SystemArgument1;
            (*Dpc).SystemArgument2 = SystemArgument2;
        }
    }
    u8::from(queued)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeTimerEx(Timer: *mut KTIMER, _Type: wdk_sys::TIMER_TYPE) {
    let _c = Call::enter();
    // SAFETY: the caller's timer: all-zero is "not set".
    unsafe { Timer.write_bytes(0, 1) };
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSetTimerEx(
    _Timer: *mut KTIMER,
    DueTime: LARGE_INTEGER,
    Period: LONG,
    Dpc: *mut KDPC,
) -> BOOLEAN {
    let c = Call::enter();
    if !Dpc.is_null() {
        c.n.objects().set_timer_dpc(Dpc as usize);
    }
    // SAFETY: QuadPart is the 64-bit view of LARGE_INTEGER.
    let due = unsafe { DueTime.QuadPart };
    // Negative: relative, in 100 ns units. Positive (absolute system time)
    // is taken as relative too: the machine's clock starts at zero.
    let due = due.unsigned_abs() * 100;
    let period = (Period > 0).then(|| u64::from(Period.unsigned_abs()) * MS);
    u8::from(c.n.sys.ke_set_timer(due, period))
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeCancelTimer(_Timer: *mut KTIMER) -> BOOLEAN {
    let c = Call::enter();
    u8::from(c.n.sys.ke_cancel_timer())
}

// ---- waits -----------------------------------------------------------------------------

/// IRQL checking of a DDI callable at IRQL <= DISPATCH_LEVEL.
pub(crate) fn must_be_at_most_dispatch(c: &Call, routine: &'static str) {
    let irql = c.n.sys.irql();
    if irql > Irql::Dispatch {
        c.report(Violation::WrongIrql { routine, irql });
    }
}

fn must_be_passive(c: &Call, routine: &'static str) {
    let irql = c.n.sys.irql();
    if irql > Irql::Apc {
        c.report(Violation::WrongIrql { routine, irql });
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeInitializeEvent(
    Event: *mut KEVENT,
    Type: wdk_sys::EVENT_TYPE,
    State: BOOLEAN,
) {
    let _c = Call::enter();
    // SAFETY: the caller's event.
    unsafe {
        Event.write_bytes(0, 1);
        (*Event).Header.__bindgen_anon_1.__bindgen_anon_1.Type = Type as u8;
        (*Event).Header.SignalState = i32::from(State);
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSetEvent(
    Event: *mut KEVENT,
    _Increment: wdk_sys::KPRIORITY,
    _Wait: BOOLEAN,
) -> LONG {
    let c = Call::enter();
    must_be_at_most_dispatch(&c, "KeSetEvent");
    // SAFETY: the caller's initialized event; a waiter sees the state
    // (Wait::NonZero) the next time the scheduler looks.
    unsafe { std::mem::replace(&mut (*Event).Header.SignalState, 1) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeClearEvent(Event: *mut KEVENT) {
    let _c = Call::enter();
    // SAFETY: the caller's initialized event.
    unsafe { (*Event).Header.SignalState = 0 };
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeWaitForSingleObject(
    Object: PVOID,
    _WaitReason: wdk_sys::KWAIT_REASON,
    _WaitMode: KPROCESSOR_MODE,
    _Alertable: BOOLEAN,
    _Timeout: *mut LARGE_INTEGER,
) -> NTSTATUS {
    let c = Call::enter();
    must_be_passive(&c, "KeWaitForSingleObject");
    let event = Object.cast::<KEVENT>();
    // SAFETY: a dispatcher object (an event) of the caller.
    let state = unsafe { &raw mut (*event).Header.SignalState };
    // SAFETY: as above.
    if unsafe { *state } == 0 {
        c.n.block(c.me, Wait::NonZero(state as usize));
    }
    st(NtStatus::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeDelayExecutionThread(
    _WaitMode: KPROCESSOR_MODE,
    _Alertable: BOOLEAN,
    Interval: *mut LARGE_INTEGER,
) -> NTSTATUS {
    let c = Call::enter();
    must_be_passive(&c, "KeDelayExecutionThread");
    // SAFETY: the caller's interval (negative: relative, 100 ns units).
    let q = unsafe { (*Interval).QuadPart };
    let now = c.n.sys.now();
    let until = if q < 0 {
        now.saturating_add(q.unsigned_abs() * 100)
    } else {
        (q as u64 * 100).max(now)
    };
    c.n.block(c.me, Wait::Until(until.max(now + US)));
    st(NtStatus::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeFlushQueuedDpcs() {
    let c = Call::enter();
    must_be_passive(&c, "KeFlushQueuedDpcs");
    c.n.block(c.me, Wait::DpcsFlushed);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeStallExecutionProcessor(MicroSeconds: ULONG) {
    let c = Call::enter();
    c.n.sys.stall_us(MicroSeconds);
}

// ---- remove lock -----------------------------------------------------------------------

fn remove_lock_size_ok(c: &Call, size: ULONG) -> bool {
    if size as usize != size_of::<IO_REMOVE_LOCK>() {
        c.fault(format!("a remove lock of {size} bytes"));
        return false;
    }
    true
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoInitializeRemoveLockEx(
    Lock: *mut IO_REMOVE_LOCK,
    _AllocateTag: ULONG,
    _MaxLockedMinutes: ULONG,
    _HighWatermark: ULONG,
    RemlockSize: ULONG,
) {
    let c = Call::enter();
    if !remove_lock_size_ok(&c, RemlockSize) {
        return;
    }
    // SAFETY: the caller's lock.
    unsafe {
        Lock.write_bytes(0, 1);
        (*Lock).Common.IoCount = 1;
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoAcquireRemoveLockEx(
    RemoveLock: *mut IO_REMOVE_LOCK,
    _Tag: PVOID,
    _File: PCSTR,
    _Line: ULONG,
    RemlockSize: ULONG,
) -> NTSTATUS {
    let c = Call::enter();
    if !remove_lock_size_ok(&c, RemlockSize) {
        return st(NtStatus::INVALID_PARAMETER);
    }
    // SAFETY: an initialized lock.
    unsafe {
        if (*RemoveLock).Common.Removed != 0 {
            return st(NtStatus::DELETE_PENDING);
        }
        (*RemoveLock).Common.IoCount += 1;
    }
    st(NtStatus::SUCCESS)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoReleaseRemoveLockEx(
    RemoveLock: *mut IO_REMOVE_LOCK,
    _Tag: PVOID,
    RemlockSize: ULONG,
) {
    let c = Call::enter();
    if !remove_lock_size_ok(&c, RemlockSize) {
        return;
    }
    // SAFETY: an initialized lock.
    let count = unsafe {
        (*RemoveLock).Common.IoCount -= 1;
        (*RemoveLock).Common.IoCount
    };
    if count == 0 {
        // SAFETY: as above.
        unsafe { (*RemoveLock).Common.RemoveEvent.Header.SignalState = 1 };
    }
    if count < 0 {
        c.fault("IoReleaseRemoveLock without an acquire".into());
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoReleaseRemoveLockAndWaitEx(
    RemoveLock: *mut IO_REMOVE_LOCK,
    Tag: PVOID,
    RemlockSize: ULONG,
) {
    let c = Call::enter();
    must_be_passive(&c, "IoReleaseRemoveLockAndWait");
    if !remove_lock_size_ok(&c, RemlockSize) {
        return;
    }
    // Learn: "each driver should call IoReleaseRemoveLockAndWait after it
    // passes the remove IRP to the next-lower driver" (the bus driver then
    // cancels what it still holds of ours, e.g. a wait-wake IRP).
    let waits_first = {
        let o = c.n.objects();
        o.irps.get(&(Tag as usize)).is_some_and(|r| {
            // SAFETY: a live IRP block; its first location is the PnP manager's.
            let minor = unsafe { (*objects::first_location(Tag as usize)).MinorFunction };
            r.kind == IrpKind::System
                && u32::from(minor) == wdk_sys::IRP_MN_REMOVE_DEVICE
                && r.completed.is_none()
        })
    };
    if waits_first {
        c.report(Violation::RemoveLockWaitBeforeRemovePassedDown);
    }
    // SAFETY: an initialized lock: mark removed, drop the caller's
    // reference and the initial bias, wait for the others.
    let count = unsafe {
        (*RemoveLock).Common.Removed = 1;
        (*RemoveLock).Common.IoCount -= 2;
        &raw mut (*RemoveLock).Common.IoCount
    };
    // SAFETY: as above.
    if unsafe { *count } > 0 {
        c.n.block(c.me, Wait::Zero(count as usize));
    }
}

// ---- interrupts, registers, mappings --------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoConnectInterruptEx(
    Parameters: *mut IO_CONNECT_INTERRUPT_PARAMETERS,
) -> NTSTATUS {
    let c = Call::enter();
    // SAFETY: the caller's parameters.
    let version = unsafe { (*Parameters).Version };
    if version != super::dma::CONNECT_MESSAGE_BASED {
        return st(NtStatus::NOT_SUPPORTED);
    }
    let object = c.n.objects().interrupt_object.as_ptr() as usize;
    // SAFETY: the MessageBased arm, which the caller filled.
    let m = unsafe { &mut (*Parameters).__bindgen_anon_1.MessageBased };
    let kind = c.n.sys.with(|k| k.msi_available);
    let isr = if kind {
        m.MessageServiceRoutine.map(|f| Isr {
            message: true,
            routine: f as usize,
            context: m.ServiceContext as usize,
            object,
        })
    } else {
        m.FallBackServiceRoutine.map(|f| Isr {
            message: false,
            routine: f as usize,
            context: m.ServiceContext as usize,
            object,
        })
    };
    let Some(isr) = isr else {
        return st(NtStatus::INVALID_PARAMETER);
    };
    c.n.objects().interrupt = Some(isr);
    // A message-based connection returns its IO_INTERRUPT_MESSAGE_INFO, a
    // line-based one its interrupt object (Learn, IoConnectInterruptEx).
    let context = if kind {
        let mut objects = c.n.objects();
        objects.message_info.MessageCount = 1;
        objects.message_info.MessageInfo[0].InterruptObject = object as wdk_sys::PKINTERRUPT;
        std::ptr::from_mut(&mut *objects.message_info) as usize
    } else {
        object
    };
    // SAFETY: the caller's ConnectionContext output; Version says which.
    unsafe {
        *m.ConnectionContext.Generic = context as PVOID;
        if !kind {
            (*Parameters).Version = super::dma::CONNECT_LINE_BASED;
        }
    }
    let _ = c.n.sys.io_connect_interrupt_ex();
    st(NtStatus::SUCCESS)
}

/// The PnP manager is told the device's state changed: it will send
/// `IRP_MN_QUERY_PNP_DEVICE_STATE` (the machine counts the calls; a test
/// sends the query).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoInvalidateDeviceState(_PhysicalDeviceObject: *mut DEVICE_OBJECT) {
    let c = Call::enter();
    must_be_at_most_dispatch(&c, "IoInvalidateDeviceState");
    c.n.sys.with(|k| k.stats.device_state_invalidated += 1);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoDisconnectInterruptEx(
    _Parameters: *mut IO_DISCONNECT_INTERRUPT_PARAMETERS,
) {
    let c = Call::enter();
    // As KeDisconnectInterrupt: at the interrupt's IRQL (no ISR preempts
    // us here) and holding its spin lock (an ISR running on another CPU
    // finishes first; one delivered later finds nothing connected).
    let old = c.n.sys.with(|k| k.cpus.set_irql(Irql::Device));
    let word = interrupt_lock_word(&c.n);
    let _ = c.n.spin_acquire(c.me, word);
    c.n.sys.io_disconnect_interrupt_ex();
    c.n.objects().interrupt = None;
    release_word(&c.n, c.me, word);
    c.n.sys.with(|k| k.cpus.set_irql(old));
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeSynchronizeExecution(
    Interrupt: PKINTERRUPT,
    SynchronizeRoutine: PKSYNCHRONIZE_ROUTINE,
    SynchronizeContext: PVOID,
) -> BOOLEAN {
    let c = Call::enter();
    must_be_at_most_dispatch(&c, "KeSynchronizeExecution");
    let object = c.n.objects().interrupt_object.as_ptr() as usize;
    if Interrupt as usize != object || c.n.objects().interrupt.is_none() {
        // On Windows a stray pointer here is a bug check (a bad pointer
        // dereferenced at DIRQL).
        c.n.sys.with(|k| {
            k.faults.push(Crash::Hang(
                "KeSynchronizeExecution given no connected interrupt object".into(),
            ))
        });
        return 0;
    }
    let Some(routine) = SynchronizeRoutine else {
        return 0;
    };
    // At the interrupt's IRQL holding its spin lock: no ISR runs meanwhile
    // on any CPU.
    let old = c.n.sys.with(|k| k.cpus.set_irql(Irql::Device));
    let word = interrupt_lock_word(&c.n);
    let _ = c.n.spin_acquire(c.me, word);
    objects::push(&c.n, &c.n.sys);
    // SAFETY: the caller's routine and context, called as the kernel does.
    let result = as_driver(|| unsafe { routine(SynchronizeContext) });
    objects::pull(&c.n, &c.n.sys);
    release_word(&c.n, c.me, word);
    c.n.sys.with(|k| k.cpus.set_irql(old));
    result
}

/// The address of the interrupt spin lock's word (the guard is not kept).
pub(crate) fn interrupt_lock_word(n: &Native) -> usize {
    let o = n.objects();
    std::ptr::from_ref::<usize>(&o.interrupt_lock) as usize
}

/// Release a lock word `me` holds.
pub(crate) fn release_word(_n: &Native, me: super::sched::ActId, word: usize) {
    // SAFETY: a live lock word; only the baton holder touches it.
    unsafe {
        if *(word as *const usize) == me as usize {
            *(word as *mut usize) = 0;
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn MmMapIoSpaceEx(
    PhysicalAddress: PHYSICAL_ADDRESS,
    NumberOfBytes: SIZE_T,
    _Protect: ULONG,
) -> PVOID {
    let c = Call::enter();
    // SAFETY: QuadPart is the 64-bit view.
    let pa = unsafe { PhysicalAddress.QuadPart };
    let end = pa.saturating_add(NumberOfBytes as i64);
    if pa < objects::BAR0_PHYSICAL
        || end > objects::BAR0_PHYSICAL + i64::from(objects::BAR0_LENGTH)
        || NumberOfBytes == 0
    {
        return std::ptr::null_mut();
    }
    let backing: Box<[u8]> = vec![0u8; NumberOfBytes as usize].into_boxed_slice();
    let va = backing.as_ptr() as usize;
    c.n.objects()
        .mappings
        .insert(va, (pa, NumberOfBytes as usize, backing));
    va as PVOID
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn MmUnmapIoSpace(BaseAddress: PVOID, NumberOfBytes: SIZE_T) {
    let c = Call::enter();
    let mut o = c.n.objects();
    match o.mappings.get(&(BaseAddress as usize)) {
        Some((_, len, _)) if *len == NumberOfBytes as usize => {
            o.mappings.remove(&(BaseAddress as usize));
        }
        _ => {
            drop(o);
            c.fault("MmUnmapIoSpace of something MmMapIoSpaceEx did not return".into());
        }
    }
}

/// The BAR0 offset of a register address, if it is inside a mapping.
fn register_offset(c: &Call, register: *mut u32) -> Option<u32> {
    let a = register as usize;
    let o = c.n.objects();
    let (base, (pa, len, _)) = o.mappings.range(..=a).next_back()?;
    if a + 4 > base + len {
        return None;
    }
    Some((pa - objects::BAR0_PHYSICAL) as u32 + (a - base) as u32)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn READ_REGISTER_ULONG(Register: *mut u32) -> u32 {
    let c = Call::enter();
    super::dma::sync_common_buffers(&c.n, false);
    match register_offset(&c, Register) {
        Some(offset) => c.n.sys.read_register(offset),
        None => {
            c.fault(format!(
                "READ_REGISTER_ULONG outside any mapping of BAR0, by {}",
                c.n.activity_label(c.me)
            ));
            u32::MAX
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn WRITE_REGISTER_ULONG(Register: *mut u32, Value: u32) {
    let c = Call::enter();
    super::dma::sync_common_buffers(&c.n, true);
    match register_offset(&c, Register) {
        Some(offset) => c.n.sys.write_register(offset, Value),
        None => c.fault(format!(
            "WRITE_REGISTER_ULONG outside any mapping of BAR0, by {}",
            c.n.activity_label(c.me)
        )),
    }
}

// ---- the StartIo queue ----------------------------------------------------------------

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoSetStartIoAttributes(
    _DeviceObject: *mut DEVICE_OBJECT,
    DeferredStartIo: BOOLEAN,
    NonCancelable: BOOLEAN,
) {
    let c = Call::enter();
    c.n.sys
        .io_set_start_io_attributes(DeferredStartIo != 0, NonCancelable != 0);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoStartPacket(
    _DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
    _Key: PULONG,
    CancelFunction: PDRIVER_CANCEL,
) {
    let c = Call::enter();
    let Some(id) = objects::user_id(&c.n, Irp) else {
        c.fault("IoStartPacket of an IRP that is not a request".into());
        return;
    };
    let cancel = CancelFunction.map(|f| CancelRoutine(f as usize as u64));
    let mut d = c.driver();
    c.n.sys.io_start_packet(&mut d, id, cancel);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoStartNextPacket(_DeviceObject: *mut DEVICE_OBJECT, Cancelable: BOOLEAN) {
    let c = Call::enter();
    let mut d = c.driver();
    c.n.sys.io_start_next_packet(&mut d, Cancelable != 0);
}

/// Offset of `Tail.Overlay.DeviceQueueEntry` in an IRP.
fn device_queue_entry_offset() -> usize {
    let irp = std::mem::MaybeUninit::<IRP>::uninit();
    let base = irp.as_ptr();
    // SAFETY: only addresses are formed.
    let field = unsafe { &raw const (*base).Tail.Overlay.__bindgen_anon_1.DeviceQueueEntry };
    field as usize - base as usize
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeRemoveEntryDeviceQueue(
    _DeviceQueue: *mut KDEVICE_QUEUE,
    DeviceQueueEntry: *mut KDEVICE_QUEUE_ENTRY,
) -> BOOLEAN {
    let c = Call::enter();
    let irp = (DeviceQueueEntry as usize - device_queue_entry_offset()) as *mut IRP;
    let Some(id) = objects::user_id(&c.n, irp) else {
        return 0;
    };
    lock_device_queue(&c.n);
    let removed = c.n.sys.ke_remove_entry_device_queue(id);
    unlock_device_queue(&c.n);
    u8::from(removed)
}

// ---- IRPs ----------------------------------------------------------------------------

/// `IoCallDriver`: make the next location current and call its driver.
///
/// # Safety
/// `irp` must be a live IRP block with a next location.
pub(crate) unsafe fn call_driver(
    n: &Arc<Native>,
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
) -> NTSTATUS {
    // SAFETY: the caller's live IRP; the header's own arithmetic.
    let stack = unsafe {
        (*irp).CurrentLocation -= 1;
        let overlay = &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1;
        (*overlay).CurrentStackLocation = (*overlay).CurrentStackLocation.sub(1);
        if (*irp).CurrentLocation <= 0 {
            n.sys.with(|k| {
                k.faults.push(Crash::Hang(
                    "bug check 0x35: NO_MORE_IRP_STACK_LOCATIONS".into(),
                ))
            });
            return st(NtStatus::INVALID_DEVICE_STATE);
        }
        (*overlay).CurrentStackLocation
    };
    // SAFETY: as above.
    unsafe { (*stack).DeviceObject = device };
    let pdo = n.objects().pdo;
    if device as usize == pdo {
        // SAFETY: the IRP is the bus driver's now.
        return unsafe { super::bus::dispatch(n, irp) };
    }
    // SAFETY: the driver's dispatch routine for the location's major code.
    unsafe {
        let major = usize::from((*stack).MajorFunction);
        let driver = (*device).DriverObject;
        match (*driver).MajorFunction.get(major).copied().flatten() {
            Some(f) => {
                objects::push(n, &n.sys);
                let s = as_driver(|| f(device, irp));
                objects::pull(n, &n.sys);
                s
            }
            None => {
                complete(n, irp);
                st(NtStatus::INVALID_DEVICE_REQUEST)
            }
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IofCallDriver(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
) -> NTSTATUS {
    let c = Call::enter();
    // SAFETY: forwarded.
    unsafe { call_driver(&c.n, DeviceObject, Irp) }
}

/// `IoCompleteRequest` of any IRP block.
pub(crate) fn complete(n: &Arc<Native>, irp: *mut IRP) {
    let kind = n
        .objects()
        .irps
        .get(&(irp as usize))
        .map(|r| (r.kind, r.forwarding));
    // SAFETY: a live IRP block (checked by kind below).
    let (status, information) = unsafe { io_status(irp) };
    match kind {
        None => n.sys.with(|k| {
            k.verifier
                .report(Violation::IrpUsedAfterCompletion { irp: irp as u64 })
        }),
        Some((_, true)) => {
            // IoForwardIrpSynchronously's completion routine: stop here,
            // back at the caller's location.
            if let Some(r) = n.objects().irps.get_mut(&(irp as usize)) {
                r.forwarding = false;
            }
            // SAFETY: as above.
            unsafe {
                (*irp).CurrentLocation += 1;
                let overlay = &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1;
                (*overlay).CurrentStackLocation = (*overlay).CurrentStackLocation.add(1);
            }
        }
        Some((IrpKind::User(id), false)) => {
            objects::copy_back_system_buffer(n, &n.sys, irp, id);
            super::dma::unmap_system_views(n, irp);
            if let Some(r) = n.objects().irps.get_mut(&(irp as usize)) {
                r.completed = Some(status);
            }
            n.sys.io_complete_request(id, NtStatus(status), information);
            // SAFETY: as above.
            unsafe { unwind(n, irp, false) };
        }
        Some((IrpKind::System, false)) => {
            let done = n
                .objects()
                .irps
                .get(&(irp as usize))
                .is_some_and(|r| r.completed.is_some());
            if done {
                n.sys
                    .report_violation(Violation::DoubleCompletion { irp: irp as u64 });
                return;
            }
            // SAFETY: as above; the drivers' completion routines run.
            if unsafe { unwind(n, irp, true) } {
                // STATUS_MORE_PROCESSING_REQUIRED: a driver took it back.
                return;
            }
            // SAFETY: as above (the routines may have changed the status).
            let (status, information) = unsafe { io_status(irp) };
            let request = {
                let mut o = n.objects();
                let r = o.irps.get_mut(&(irp as usize));
                r.and_then(|r| {
                    r.completed = Some(status);
                    r.information = information;
                    r.power_request
                })
            };
            if let Some(request) = request {
                super::power::requested_irp_completed(n, irp, request);
            }
        }
        Some((IrpKind::Built, false)) => {
            // SAFETY: the event and status block IoBuildSynchronousFsdRequest got.
            unsafe {
                let iosb = (*irp).UserIosb;
                if !iosb.is_null() {
                    (*iosb).__bindgen_anon_1.Status = status;
                    (*iosb).Information = information as u64;
                }
                let event = (*irp).UserEvent;
                if !event.is_null() {
                    (*event).Header.SignalState = 1;
                }
            }
            n.objects().free_irp(irp as usize);
        }
    }
}

/// `IoStatus.Status` and `IoStatus.Information`.
///
/// # Safety
/// `irp` must be a live IRP block.
unsafe fn io_status(irp: *mut IRP) -> (NTSTATUS, usize) {
    // SAFETY: the caller's live IRP.
    unsafe {
        (
            (*irp).IoStatus.__bindgen_anon_1.Status,
            (*irp).IoStatus.Information as usize,
        )
    }
}

/// `SL_PENDING_RETURNED` and the `SL_INVOKE_ON_*` bits of `Control` (wdm.h).
const SL_PENDING_RETURNED: u8 = 0x01;
const SL_INVOKE_ON_CANCEL: u8 = 0x20;
const SL_INVOKE_ON_SUCCESS: u8 = 0x40;
const SL_INVOKE_ON_ERROR: u8 = 0x80;
/// `STATUS_MORE_PROCESSING_REQUIRED`.
const STATUS_MORE_PROCESSING_REQUIRED: NTSTATUS = 0xC000_0016_u32 as i32;

/// The completion walks back up the stack as `IoCompleteRequest` does:
/// each location left sets `PendingReturned` from its `Control`, and, when
/// `routines`, the completion routine the driver above set in it runs (with
/// the upper driver's device object) if its `SL_INVOKE_ON_*` bits match.
/// True when a routine returned `STATUS_MORE_PROCESSING_REQUIRED`: the
/// unwind stops there and the IRP is that driver's again.
///
/// # Safety
/// `irp` must be a live IRP block.
unsafe fn unwind(n: &Arc<Native>, irp: *mut IRP, routines: bool) -> bool {
    // SAFETY: the caller's live IRP; the locations are the block's own.
    unsafe {
        let overlay = &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1;
        while ((*irp).CurrentLocation as usize) <= objects::STACK_SIZE {
            let left = (*overlay).CurrentStackLocation;
            (*irp).PendingReturned = u8::from((*left).Control & SL_PENDING_RETURNED != 0);
            (*irp).CurrentLocation += 1;
            (*overlay).CurrentStackLocation = left.add(1);
            let routine = (*left).CompletionRoutine.take();
            let context = (*left).Context;
            let control = std::mem::take(&mut (*left).Control);
            let status = (*irp).IoStatus.__bindgen_anon_1.Status;
            let wanted = if (*irp).Cancel != 0 {
                SL_INVOKE_ON_CANCEL
            } else if status < 0 {
                SL_INVOKE_ON_ERROR
            } else {
                SL_INVOKE_ON_SUCCESS
            };
            let top = (*irp).CurrentLocation as usize > objects::STACK_SIZE;
            match routine {
                Some(routine) if routines && control & wanted != 0 => {
                    let device = if top {
                        std::ptr::null_mut()
                    } else {
                        (*(*overlay).CurrentStackLocation).DeviceObject
                    };
                    objects::push(n, &n.sys);
                    let result = as_driver(|| routine(device, irp, context));
                    objects::pull(n, &n.sys);
                    if result == STATUS_MORE_PROCESSING_REQUIRED {
                        return true;
                    }
                }
                _ => {
                    if (*irp).PendingReturned != 0 && !top {
                        (*(*overlay).CurrentStackLocation).Control |= SL_PENDING_RETURNED;
                    }
                }
            }
        }
    }
    false
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IofCompleteRequest(Irp: *mut IRP, _PriorityBoost: CCHAR) {
    let c = Call::enter();
    complete(&c.n, Irp);
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoForwardIrpSynchronously(
    DeviceObject: *mut DEVICE_OBJECT,
    Irp: *mut IRP,
) -> BOOLEAN {
    let c = Call::enter();
    must_be_passive(&c, "IoForwardIrpSynchronously");
    // IoCopyCurrentIrpStackLocationToNext, then call and wait.
    // SAFETY: a live IRP with a location below the current one.
    unsafe {
        let current = (*irp_overlay(Irp)).CurrentStackLocation;
        let next = current.sub(1);
        std::ptr::copy_nonoverlapping(current, next, 1);
        (*next).Control = 0;
        (*next).CompletionRoutine = None;
    }
    if let Some(r) = c.n.objects().irps.get_mut(&(Irp as usize)) {
        r.forwarding = true;
    }
    // SAFETY: forwarded.
    unsafe { call_driver(&c.n, DeviceObject, Irp) };
    let still =
        c.n.objects()
            .irps
            .get(&(Irp as usize))
            .is_some_and(|r| r.forwarding);
    if still {
        c.fault("IoForwardIrpSynchronously: the lower driver never completed the IRP".into());
        return 0;
    }
    1
}

fn irp_overlay(
    irp: *mut IRP,
) -> *mut wdk_sys::_IRP__bindgen_ty_3__bindgen_ty_1__bindgen_ty_2__bindgen_ty_1 {
    // SAFETY: only an address is formed.
    unsafe { &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1 }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoBuildSynchronousFsdRequest(
    MajorFunction: ULONG,
    _DeviceObject: *mut DEVICE_OBJECT,
    _Buffer: PVOID,
    _Length: ULONG,
    _StartingOffset: *mut LARGE_INTEGER,
    Event: *mut KEVENT,
    IoStatusBlock: *mut IO_STATUS_BLOCK,
) -> *mut IRP {
    let c = Call::enter();
    let addr = objects::build_system_irp(&c.n, &c.n.sys, MajorFunction as u8, 0, None);
    let irp = addr as *mut IRP;
    if let Some(r) = c.n.objects().irps.get_mut(&addr) {
        r.kind = IrpKind::Built;
    }
    // SAFETY: the IRP just built.
    unsafe {
        (*irp).UserEvent = Event;
        (*irp).UserIosb = IoStatusBlock;
        (*irp).IoStatus.__bindgen_anon_1.Status = 0;
    }
    irp
}

/// `IoCancelIrp` as the I/O manager runs it for a user thread or a DPC.
///
/// # Safety
/// `irp` must be a live IRP block of a user request.
pub(crate) unsafe fn cancel_irp(n: &Arc<Native>, sys: &crate::kernel::Sys, irp: *mut IRP) {
    let kernel = Mark::kernel();
    let me = current().1;
    objects::pull(n, sys);
    let c = Call {
        n: Arc::clone(n),
        me,
        _kernel: kernel,
    };
    let word = cancel_lock_word(n);
    let old = acquire(&c, word, SpinLock::Cancel);
    let Some(id) = objects::user_id(n, irp) else {
        release(&c, word, SpinLock::Cancel, old);
        return;
    };
    // SAFETY: the cancel spin lock is held: set Cancel, take the routine.
    let routine = unsafe {
        (*irp).Cancel = 1;
        (*irp).CancelIrql = kirql(old);
        let slot = (&raw mut (*irp).CancelRoutine).cast::<*mut core::ffi::c_void>();
        std::sync::atomic::AtomicPtr::from_ptr(slot)
            .swap(std::ptr::null_mut(), std::sync::atomic::Ordering::SeqCst)
    };
    sys.with(|k| {
        if let Some(i) = k.irps.get_mut(id) {
            i.cancel = true;
            i.cancelled_at.get_or_insert(k.sched.now());
            i.cancel_routine = None;
        }
    });
    if routine.is_null() {
        release(&c, word, SpinLock::Cancel, old);
        return;
    }
    sys.with(|k| k.stats.cancel_routines += 1);
    // SAFETY: a non-null CancelRoutine is a PDRIVER_CANCEL.
    let f: unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut IRP) =
        unsafe { std::mem::transmute(routine) };
    let fdo = n.objects().fdo as *mut DEVICE_OBJECT;
    objects::push(n, sys);
    // SAFETY: called holding the cancel spin lock, which it releases.
    as_driver(|| unsafe { f(fdo, irp) });
    objects::pull(n, sys);
    let still = sys.with(|k| {
        k.cpus
            .cpu()
            .locks
            .iter()
            .any(|(l, _)| *l == SpinLock::Cancel)
    });
    if still {
        sys.report_violation(Violation::CancelSpinLockMisuse);
        release(&c, word, SpinLock::Cancel, old);
    }
    // `c` pushes on drop.
}
