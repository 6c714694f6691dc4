//! StartIo, the two cancel routines, and the delivery of the engine's
//! completions: release the engine lock, `IoStartNextPacket`, copy the
//! self-test report, `IoCompleteRequest` — never under a lock, always at
//! DISPATCH_LEVEL (a completion decided lower goes through the mailbox DPC).

use core::ptr;
use core::sync::atomic::Ordering;

use edudma_core::NtStatus;
use edudma_core::engine::Completion;
use edudma_core::ioctl::SelfTestReport;
use wdk_sys::ntddk::{
    IoAcquireCancelSpinLock, IoReleaseCancelSpinLock, IoStartNextPacket, KeGetCurrentIrql,
    KeInsertQueueDpc, KeRemoveEntryDeviceQueue,
};
use wdk_sys::{DEVICE_OBJECT, IRP, KDPC, KIRQL, PVOID};

use crate::device::{DeviceExtension, ReqId};
use crate::dispatch::{Classified, classify};
use crate::ffi;

/// `DISPATCH_LEVEL` (wdm.h) as a `KIRQL`.
const DISPATCH_LEVEL: KIRQL = 2;

/// Complete an IRP that never reached StartIo (or was removed from the
/// device queue) and drop its remove-lock reference.
///
/// # Safety
/// The caller owns `irp`, holds its remove lock, and holds no spin lock.
pub unsafe fn complete_unstarted(
    ext: &DeviceExtension,
    irp: *mut IRP,
    status: NtStatus,
    info: usize,
) {
    // SAFETY: see above.
    unsafe {
        ffi::complete_irp(irp, status.0, info);
        ffi::release_remove_lock(ext.remove_lock(), irp.cast());
    }
}

/// Carry out a completion of the current StartIo packet.
pub fn deliver(ext: &DeviceExtension, completion: Completion<ReqId>) {
    // SAFETY: KeGetCurrentIrql has no preconditions.
    if unsafe { KeGetCurrentIrql() } < DISPATCH_LEVEL {
        {
            let mut shared = ext.lock();
            debug_assert!(shared.mailbox.is_none());
            shared.mailbox = Some(completion);
        }
        // SAFETY: the mailbox DPC was initialized in AddDevice.
        unsafe {
            KeInsertQueueDpc(ext.mailbox_dpc.get(), ptr::null_mut(), ptr::null_mut());
        }
        return;
    }
    // Before the completion: once the IRP's remove-lock reference is
    // dropped, `ext` may be gone.
    crate::power::wake_drain(ext);
    let irp = completion.request.irp;
    // SAFETY: the completion makes us the IRP's owner. If a cancel routine
    // was already taken by IoCancelIrp, it is running under the cancel spin
    // lock and may still read the IRP: wait for it to drop that lock. Our
    // cancel routines never touch the IRP after releasing it.
    unsafe {
        if ffi::set_cancel_routine(irp, None).is_none() {
            let mut irql: KIRQL = 0;
            IoAcquireCancelSpinLock(&mut irql);
            IoReleaseCancelSpinLock(irql);
        }
        IoStartNextPacket(ext.fdo, 1);
        if let Some(report) = completion.selftest {
            let output = (*irp).AssociatedIrp.SystemBuffer;
            if !output.is_null() {
                // Validation checked the output length >= the report size.
                ptr::write_unaligned(output.cast::<SelfTestReport>(), report);
            }
        }
        ffi::complete_irp(irp, completion.status.0, completion.information);
        ffi::release_remove_lock(ext.remove_lock(), irp.cast());
    }
}

/// The mailbox DPC (`KDEFERRED_ROUTINE`): delivers a completion that was
/// decided below DISPATCH_LEVEL.
pub unsafe extern "C" fn mailbox_dpc(_dpc: *mut KDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    // SAFETY: the DPC's context is the extension.
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    let completion = ext.lock().mailbox.take();
    if let Some(c) = completion {
        deliver(ext, c);
    }
}

/// A cancelled completion of `irp`.
fn cancelled(irp: *mut IRP, seq: u32) -> Completion<ReqId> {
    Completion {
        request: ReqId { irp, seq },
        status: NtStatus::CANCELLED,
        information: 0,
        selftest: None,
    }
}

/// `DriverStartIo` (DISPATCH_LEVEL, deferred: never recursive).
pub unsafe extern "C" fn start_io(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: `device` is our FDO.
    let ext = unsafe { DeviceExtension::from_device(device) };
    let seq = ext.next_seq.fetch_add(1, Ordering::Relaxed);
    let mut irql: KIRQL = 0;
    // A queue cancel routine already taken left this packet to us (it was
    // no longer in the device queue, see `queue_cancel`), and so does a
    // cancel flag set before we cleared the routine; otherwise we own
    // cancellation from here on.
    // SAFETY: the cancel spin lock orders us against IoCancelIrp, and the
    // IRP is ours either way: nobody else completes it.
    unsafe {
        IoAcquireCancelSpinLock(&mut irql);
        let routine_taken = ffi::set_cancel_routine(irp, None).is_none();
        if routine_taken || (*irp).Cancel != 0 {
            IoReleaseCancelSpinLock(irql);
            deliver(ext, cancelled(irp, seq));
            return;
        }
        ffi::set_driver_context(irp, seq as usize);
        ffi::set_cancel_routine(irp, Some(engine_cancel));
        IoReleaseCancelSpinLock(irql);
    }
    let id = ReqId { irp, seq };
    // SAFETY: a live IRP this driver queued.
    let what = match unsafe { classify(ext, irp) } {
        Classified::Start(what) => what,
        // Dispatch queued only what classified as Start, and classification
        // is pure; if that ever breaks, the engine refuses the packet.
        Classified::Rejected(status) | Classified::Done(status, _) => {
            let rejected = ext.lock().engine.reject(id, status);
            deliver(ext, rejected);
            return;
        }
        Classified::Control(_) => {
            let rejected = ext
                .lock()
                .engine
                .reject(id, NtStatus::INVALID_DEVICE_REQUEST);
            deliver(ext, rejected);
            return;
        }
    };
    let completion = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        match shared.engine.start_io(id, what, &mut regs) {
            None if shared.pending_cancel == Some(id) => {
                shared.pending_cancel = None;
                shared.engine.cancel(id, &mut regs)
            }
            other => other,
        }
    };
    if let Some(c) = completion {
        deliver(ext, c);
    }
}

/// Cancel routine of a packet in the device queue (set by `IoStartPacket`).
/// Called with the cancel spin lock held.
pub unsafe extern "C" fn queue_cancel(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: `device` is our FDO.
    let ext = unsafe { DeviceExtension::from_device(device) };
    // The IRP is either still queued (we remove it and complete it) or has
    // left the queue to become the current packet: then its StartIo runs,
    // finds the cancel routine gone and completes it. Completing it here
    // would free an IRP StartIo is about to touch.
    // SAFETY: called with the cancel spin lock held, which keeps the IRP
    // alive; `DEVICE_OBJECT.DeviceQueue` is a named C member.
    let removed = unsafe {
        let removed =
            KeRemoveEntryDeviceQueue(&raw mut (*device).DeviceQueue, ffi::device_queue_entry(irp));
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        removed != 0
    };
    if removed {
        // SAFETY: removed from the queue: ours, remove lock held since dispatch.
        unsafe { complete_unstarted(ext, irp, NtStatus::CANCELLED, 0) };
    }
}

/// Cancel routine while the engine works on the packet. It gives the engine
/// its cancel event and never touches the IRP after the cancel spin lock.
unsafe extern "C" fn engine_cancel(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: `device` is our FDO.
    let ext = unsafe { DeviceExtension::from_device(device) };
    // SAFETY: the IRP is alive while we hold the cancel spin lock (`deliver`
    // waits for that lock before completing).
    let seq = unsafe {
        let seq = ffi::driver_context(irp) as u32;
        IoReleaseCancelSpinLock((*irp).CancelIrql);
        seq
    };
    let id = ReqId { irp, seq };
    let completion = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        if shared.engine.current_request() == Some(id) {
            shared.engine.cancel(id, &mut regs)
        } else {
            // Not started yet (StartIo is between its two steps) or already
            // finished. Only the newest StartIo packet can be between the
            // steps: a late cancel of an older (finished) one must not
            // overwrite the pending cancel of the live one.
            let newest = ext.next_seq.load(Ordering::Acquire).wrapping_sub(1);
            if seq == newest {
                shared.pending_cancel = Some(id);
            }
            None
        }
    };
    if let Some(c) = completion {
        deliver(ext, c);
    }
}
