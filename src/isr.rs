//! The interrupt service routines, DpcForIsr, the watchdog timer, and the
//! interrupt connection (message-signalled, with a line-based fallback).

use core::ptr;
use core::sync::atomic::Ordering;

use edudma_core::ioctl::InterruptKind;
use edudma_core::regs::{self, IrqBits};
use wdk_sys::ntddk::{
    IoConnectInterruptEx, IoDisconnectInterruptEx, IoInvalidateDeviceState, KeCancelTimer,
    KeSetTimerEx, KeSynchronizeExecution,
};
use wdk_sys::{BOOLEAN, DEVICE_OBJECT, KDPC, LARGE_INTEGER, PKINTERRUPT, PVOID, ULONG};

use crate::device::DeviceExtension;
use crate::ffi;
use crate::startio::deliver;

/// The watchdog period in milliseconds (the engine counts ticks of it).
const WATCHDOG_PERIOD_MS: i32 = 100;

/// The ISR's work at DIRQL: read and acknowledge the status, record the
/// bits in atomics, request the DPC. No lock, no engine.
fn service(ext: &DeviceExtension) -> BOOLEAN {
    if ext.device_off.load(Ordering::Acquire) {
        // Out of D0 the function does not decode BAR0: an interrupt on the
        // shared line is another device's.
        return 0;
    }
    let mut regs = ext.regs_in_isr();
    match regs::isr_acknowledge(&mut regs) {
        Some(bits) => {
            ext.irq_bits.fetch_or(bits.bits(), Ordering::AcqRel);
            ext.irq_count.fetch_add(1, Ordering::AcqRel);
            // SAFETY: our FDO, whose DPC was initialized in AddDevice;
            // IoRequestDpc is callable at DIRQL.
            unsafe { ffi::request_dpc(ext.fdo) };
            1
        }
        None => 0,
    }
}

/// Line-based ISR (`KSERVICE_ROUTINE`), also the fallback of a
/// message-based connection.
unsafe extern "C" fn line_isr(_interrupt: PKINTERRUPT, context: PVOID) -> BOOLEAN {
    // SAFETY: the service context is the extension (IoConnectInterruptEx).
    service(unsafe { &*context.cast::<DeviceExtension>() })
}

/// Message-signalled ISR (`KMESSAGE_SERVICE_ROUTINE`); edu has one message.
unsafe extern "C" fn message_isr(
    _interrupt: PKINTERRUPT,
    context: PVOID,
    _message_id: ULONG,
) -> BOOLEAN {
    // SAFETY: as in `line_isr`.
    service(unsafe { &*context.cast::<DeviceExtension>() })
}

/// DpcForIsr, in the `KDEFERRED_ROUTINE` shape `IoInitializeDpcRequest`
/// registers (its context is the FDO).
pub unsafe extern "C" fn dpc_for_isr(_dpc: *mut KDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    // SAFETY: the DPC's context is our FDO (IoInitializeDpcRequest).
    let ext = unsafe { DeviceExtension::from_device(context.cast::<DEVICE_OBJECT>()) };
    let bits = ext.irq_bits.swap(0, Ordering::AcqRel);
    let count = ext.irq_count.swap(0, Ordering::AcqRel);
    let completion = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        shared
            .engine
            .dpc(IrqBits::from_bits_retain(bits), count, &mut regs)
    };
    if let Some(c) = completion {
        deliver(ext, c);
    }
}

/// The watchdog timer's DPC: one engine tick, 100 ms after the engine
/// began to need it or after the previous tick (re-armed by the guard).
pub unsafe extern "C" fn watchdog_dpc(_dpc: *mut KDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    // SAFETY: the DPC's context is the extension.
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    let (completion, failed) = {
        let mut shared = ext.lock();
        // The timer fired: the guard arms it again if the engine still
        // needs it after this tick.
        shared.watchdog_armed = false;
        let mut regs = shared.regs();
        let c = shared.engine.watchdog_tick(&mut regs);
        (c, shared.engine.device_failed())
    };
    if let Some(c) = completion {
        deliver(ext, c);
    }
    if failed && !ext.failure_reported.swap(true, Ordering::AcqRel) {
        // A command timed out and was abandoned with the device off the
        // bus: the PnP manager queries our state (PNP_DEVICE_FAILED) and
        // stops and restarts or removes the device.
        // SAFETY: our PDO; IoInvalidateDeviceState is callable at
        // DISPATCH_LEVEL.
        unsafe { IoInvalidateDeviceState(ext.pdo) };
    }
}

/// Arm the watchdog for one tick (one-shot: its DPC re-arms it through
/// the engine guard while the engine still needs it). Called holding the
/// engine lock.
pub fn arm_watchdog(ext: &DeviceExtension) {
    // Relative due time in 100 ns units (negative = relative).
    let due = LARGE_INTEGER {
        QuadPart: -i64::from(WATCHDOG_PERIOD_MS) * 10_000,
    };
    // SAFETY: timer and DPC were initialized in AddDevice and live in the
    // nonpaged extension; KeSetTimerEx is callable at <= DISPATCH_LEVEL.
    unsafe {
        KeSetTimerEx(ext.watchdog_timer.get(), due, 0, ext.watchdog_dpc.get());
    }
}

/// Stop the watchdog (a DPC already queued may still run: callers flush
/// queued DPCs before freeing anything it uses).
pub fn stop_watchdog(ext: &DeviceExtension) {
    let mut shared = ext.lock();
    // SAFETY: the timer was initialized in AddDevice.
    unsafe {
        KeCancelTimer(ext.watchdog_timer.get());
    }
    shared.watchdog_armed = false;
}

/// Connect the interrupt: message-signalled when the INF's `MSISupported`
/// gave us a message, else line-based through the fallback routine.
/// PASSIVE_LEVEL.
pub fn connect(ext: &DeviceExtension) -> InterruptKind {
    let mut params = ffi::message_based_parameters(
        ext.pdo,
        ext.interrupt.context.get(),
        Some(message_isr),
        Some(line_isr),
        ext.as_context(),
    );
    // SAFETY: PASSIVE_LEVEL at IRP_MN_START_DEVICE; the parameters point to
    // our PDO, our routines and the nonpaged extension.
    let status = unsafe { IoConnectInterruptEx(&mut params) };
    if status < 0 {
        // No interrupt: the engine's watchdog still finishes every command
        // (lost-interrupt recovery), only slower.
        ext.interrupt.version.store(0, Ordering::Release);
        return InterruptKind::None;
    }
    let version = params.Version;
    ext.interrupt.version.store(version, Ordering::Release);
    if version == ffi::CONNECT_LINE_BASED {
        InterruptKind::LineBased
    } else {
        InterruptKind::MessageSignaled
    }
}

/// Mark the device out of D0 so that no ISR touches its registers again:
/// set at DIRQL holding the interrupt's spin lock (`KeSynchronizeExecution`),
/// so an ISR that read the flag before is finished when this returns — its
/// acknowledge cannot reach a function that no longer decodes. PASSIVE_LEVEL
/// or DISPATCH_LEVEL.
pub fn mark_device_off(ext: &DeviceExtension) {
    let version = ext.interrupt.version.load(Ordering::Acquire);
    // SAFETY: written by IoConnectInterruptEx at start; the interrupt stays
    // connected until the hardware is released, which cannot overlap a
    // power IRP.
    let object = unsafe { ffi::interrupt_object(version, *ext.interrupt.context.get()) };
    if version == 0 || object.is_null() {
        ext.device_off.store(true, Ordering::Release);
        return;
    }
    // SAFETY: the connection's interrupt object; the routine only stores.
    unsafe {
        let _ = KeSynchronizeExecution(object, Some(set_device_off), ext.as_context());
    }
}

/// `KSYNCHRONIZE_ROUTINE` of [`mark_device_off`].
unsafe extern "C" fn set_device_off(context: PVOID) -> BOOLEAN {
    // SAFETY: the context is the extension.
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    ext.device_off.store(true, Ordering::Release);
    1
}

/// Disconnect what [`connect`] connected. PASSIVE_LEVEL.
pub fn disconnect(ext: &DeviceExtension) {
    let version = ext.interrupt.version.swap(0, Ordering::AcqRel);
    if version == 0 {
        return;
    }
    // SAFETY: written by IoConnectInterruptEx, read once here.
    let connection = unsafe { *ext.interrupt.context.get() };
    let mut params = ffi::disconnect_parameters(version, connection);
    // SAFETY: PASSIVE_LEVEL; the connection context IoConnectInterruptEx
    // returned, with its version.
    unsafe { IoDisconnectInterruptEx(&mut params) };
    // SAFETY: no ISR runs any more; nothing else reads this.
    unsafe { *ext.interrupt.context.get() = ptr::null_mut() };
}
