//! IRP_MJ_POWER: the driver is its device's power policy owner;
//! IRP_MJ_SYSTEM_CONTROL is passed down.
//!
//! The driver targets Windows 10 and later (the INF's `NT$ARCH$.10.0...`
//! models): a power IRP is passed down with `IoCallDriver` and
//! `PoStartNextPowerIrp` is not needed (Microsoft Learn, "Passing Power
//! IRPs"). The FDO sets `DO_POWER_PAGABLE`, so power IRPs arrive at
//! PASSIVE_LEVEL (Learn, IRP_MN_SET_POWER).
//!
//! - **System IRPs** (query or set, any S-state): passed down with a
//!   completion routine that requests the matching device IRP with
//!   `PoRequestPowerIrp` (D0 for S0, D3 otherwise, see
//!   [`edudma_core::engine::device_state_for`]); the device IRP's callback
//!   completes the system IRP (Learn, "Handling a System Set-Power IRP in a
//!   Device Power Policy Owner", and the same for a query).
//! - **Device set-power to D1–D3**: the engine holds StartIo's packets from
//!   now on; the request in flight finishes (the watchdog bounds it); the
//!   device is quiesced, `PoSetPowerState` reports the new state *before*
//!   the device leaves D0, and the IRP goes down to the bus driver.
//! - **Device set-power to D0**: down first (the bus driver makes the
//!   function decode again and restores what it owns), then Bus Master
//!   Enable, the engine's check and quiesce of the device, `PoSetPowerState`,
//!   and the held packet goes on.
//! - **Queries** succeed: every request can be held (the device queue and
//!   the engine's held slot) or finished (the watchdog ends a stuck one), so
//!   there is no state in which sleep must be refused.

use core::ptr;
use core::sync::atomic::Ordering;

use edudma_core::NtStatus;
use edudma_core::engine::{POWER_DEVICE_D0, device_state_for, system_power_status};
use wdk_sys::ntddk::{
    IoForwardIrpSynchronously, IoInvalidateDeviceState, KeClearEvent, KeSetEvent,
    PoRequestPowerIrp, PoSetPowerState,
};
use wdk_sys::{
    _POWER_STATE_TYPE, DEVICE_OBJECT, IO_NO_INCREMENT, IO_STATUS_BLOCK, IRP, IRP_MN_QUERY_POWER,
    IRP_MN_SET_POWER, NTSTATUS, POWER_STATE, PVOID, STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING, STATUS_SUCCESS, STATUS_UNSUCCESSFUL, UCHAR,
};

use crate::device::DeviceExtension;
use crate::ffi;
use crate::pnp::{pass_down, restore_bus_master};
use crate::startio::deliver;

/// `IRP_MJ_SYSTEM_CONTROL`: hold the remove lock, skip our stack location,
/// `IoCallDriver` the lower device.
pub unsafe extern "C" fn dispatch_pass_down(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: `device` is our FDO.
    let ext = unsafe { DeviceExtension::from_device(device) };
    // SAFETY: an initialized remove lock; the IRP is the tag.
    let status = unsafe { ffi::acquire_remove_lock(ext.remove_lock(), irp.cast()) };
    if status < 0 {
        // SAFETY: ours to complete.
        unsafe { ffi::complete_irp(irp, status, 0) };
        return status;
    }
    // SAFETY: we own the IRP and hold its remove-lock reference.
    unsafe { pass_down(ext, irp) }
}

/// `IRP_MJ_POWER` (PASSIVE_LEVEL: `DO_POWER_PAGABLE`).
pub unsafe extern "C" fn dispatch_power(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: `device` is our FDO.
    let ext = unsafe { DeviceExtension::from_device(device) };
    // SAFETY: an initialized remove lock; the IRP is the tag.
    let status = unsafe { ffi::acquire_remove_lock(ext.remove_lock(), irp.cast()) };
    if status < 0 {
        // SAFETY: ours to complete.
        unsafe { ffi::complete_irp(irp, status, 0) };
        return status;
    }
    // SAFETY: a live power IRP at our location.
    let (minor, kind, state) = unsafe {
        let stack = ffi::current_stack(irp);
        let (kind, state) = ffi::power_parameters(stack);
        (u32::from((*stack).MinorFunction), kind, state)
    };
    // SAFETY: (all arms) we own the IRP and hold its remove-lock reference.
    unsafe {
        match (minor, kind) {
            (IRP_MN_SET_POWER | IRP_MN_QUERY_POWER, _POWER_STATE_TYPE::SystemPowerState) => {
                system_power(ext, irp)
            }
            (IRP_MN_SET_POWER, _POWER_STATE_TYPE::DevicePowerState)
                if state.DeviceState == POWER_DEVICE_D0 =>
            {
                power_up(ext, irp)
            }
            (IRP_MN_SET_POWER, _POWER_STATE_TYPE::DevicePowerState) => power_down(ext, irp, state),
            // Device queries (nothing to refuse), wait-wake, power sequence.
            _ => pass_down(ext, irp),
        }
    }
}

/// A system query or set: down with [`system_power_done`] as completion
/// routine, which asks for the device IRP.
///
/// # Safety
/// We own `irp` and hold its remove-lock reference (released when the
/// system IRP completes).
unsafe fn system_power(ext: &DeviceExtension, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: see above; the lower device outlives our attachment.
    unsafe {
        ffi::copy_current_stack_location_to_next(irp);
        ffi::set_completion_routine(irp, Some(system_power_done), ext.as_context());
        ffi::mark_irp_pending(irp);
        let _ = ffi::call_driver(ext.lower, irp);
    }
    STATUS_PENDING
}

/// `IO_COMPLETION_ROUTINE` of a system IRP (any IRQL <= DISPATCH_LEVEL):
/// the lower drivers agreed; request the device IRP of the same minor code
/// and keep the system IRP until it completes.
unsafe extern "C" fn system_power_done(
    _device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    context: PVOID,
) -> NTSTATUS {
    // SAFETY: the context is the extension (system_power).
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    // SAFETY: the IRP is back at our location.
    let (status, minor, system_state) = unsafe {
        let stack = ffi::current_stack(irp);
        let (_, state) = ffi::power_parameters(stack);
        (
            ffi::irp_status(irp),
            (*stack).MinorFunction,
            state.SystemState,
        )
    };
    if status >= 0 {
        let device_state = POWER_STATE {
            DeviceState: device_state_for(system_state),
        };
        // SAFETY: our PDO (Learn: the target of the request; the power
        // manager sends it to the top of the stack); the system IRP is the
        // callback's context and stays ours (MORE_PROCESSING_REQUIRED).
        let requested = unsafe {
            PoRequestPowerIrp(
                ext.pdo,
                minor,
                device_state,
                Some(device_power_done),
                irp.cast(),
                ptr::null_mut(),
            )
        };
        if requested == STATUS_PENDING {
            return STATUS_MORE_PROCESSING_REQUIRED;
        }
        // No device IRP: a query fails with the reason; a set cannot fail
        // (Learn, "Power IRPs for the System": a driver "cannot fail
        // IRP_MN_SET_POWER").
        let status = settled_status(minor, requested);
        // SAFETY: ours until this routine returns.
        unsafe { ffi::set_irp_status(irp, status) };
    }
    // SAFETY: the reference taken in dispatch_power; the IRP goes on up.
    unsafe { ffi::release_remove_lock(ext.remove_lock(), irp.cast()) };
    STATUS_SUCCESS // STATUS_CONTINUE_COMPLETION
}

/// [`system_power_status`] for a minor code.
fn settled_status(minor: UCHAR, device: NTSTATUS) -> NTSTATUS {
    system_power_status(u32::from(minor) == IRP_MN_QUERY_POWER, NtStatus(device)).0
}

/// `REQUEST_POWER_COMPLETE` of the device IRP: complete the system IRP
/// (see [`settled_status`]).
unsafe extern "C" fn device_power_done(
    _device: *mut DEVICE_OBJECT,
    minor: UCHAR,
    _state: POWER_STATE,
    context: PVOID,
    io_status: *mut IO_STATUS_BLOCK,
) {
    let system_irp = context.cast::<IRP>();
    // SAFETY: the system IRP system_power_done kept; its current location is
    // ours (the unwind stopped there), so its device object is our FDO.
    unsafe {
        let ext = DeviceExtension::from_device((*ffi::current_stack(system_irp)).DeviceObject);
        let status = settled_status(minor, ffi::io_status_status(&*io_status));
        ffi::complete_irp(system_irp, status, 0);
        ffi::release_remove_lock(ext.remove_lock(), system_irp.cast());
    }
}

/// Device set-power to D1–D3: drain, quiesce, report, pass down.
///
/// # Safety
/// PASSIVE_LEVEL; we own `irp` and hold its remove-lock reference.
unsafe fn power_down(ext: &DeviceExtension, irp: *mut IRP, state: POWER_STATE) -> NTSTATUS {
    if ext.device_off.load(Ordering::Acquire) {
        // Already out of D0 (D3 after D2, say): nothing runs, nothing decodes.
        // SAFETY: our FDO; PASSIVE_LEVEL; we own the IRP.
        unsafe {
            let _ = PoSetPowerState(ext.fdo, _POWER_STATE_TYPE::DevicePowerState, state);
            return pass_down(ext, irp);
        }
    }
    ext.draining.store(true, Ordering::Release);
    loop {
        // Cleared before the engine is asked, so a completion in between
        // leaves the event set.
        // SAFETY: initialized in AddDevice.
        unsafe { KeClearEvent(ext.power_drained.get()) };
        let down = {
            let mut shared = ext.lock();
            let mut regs = shared.regs();
            shared.engine.power_down(&mut regs)
        };
        if let Some(c) = down.completion {
            deliver(ext, c);
        }
        if down.drained {
            break;
        }
        // The request in flight ends (done, cancelled or timed out by the
        // watchdog) and its completion sets the event.
        // SAFETY: PASSIVE_LEVEL; the event lives in the extension.
        unsafe { ffi::wait_for_event(ext.power_drained.get()) };
    }
    ext.draining.store(false, Ordering::Release);
    crate::isr::mark_device_off(ext);
    // Learn (PoSetPowerState): "If the device is powering down, the driver
    // must call PoSetPowerState before leaving the D0 state."
    // SAFETY: our FDO; PASSIVE_LEVEL.
    unsafe {
        let _ = PoSetPowerState(ext.fdo, _POWER_STATE_TYPE::DevicePowerState, state);
        pass_down(ext, irp)
    }
}

/// A D3 IRP may be waiting for the engine to drain: let it look again.
/// Called after every engine event that may end the work in flight, before
/// anything that could let the device go (a completion's remove-lock
/// release). IRQL <= DISPATCH_LEVEL.
pub fn wake_drain(ext: &DeviceExtension) {
    if ext.draining.load(Ordering::Acquire) {
        // SAFETY: initialized in AddDevice; KeSetEvent with Wait FALSE is
        // callable at DISPATCH_LEVEL.
        unsafe {
            let _ = KeSetEvent(ext.power_drained.get(), IO_NO_INCREMENT as i32, 0);
        }
    }
}

/// Device set-power to D0: the bus driver first, then the device.
///
/// # Safety
/// PASSIVE_LEVEL; we own `irp` and hold its remove-lock reference.
unsafe fn power_up(ext: &DeviceExtension, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: PASSIVE_LEVEL (DO_POWER_PAGABLE); the lower device is ours.
    let status = if unsafe { IoForwardIrpSynchronously(ext.lower, irp) } == 0 {
        STATUS_UNSUCCESSFUL
    } else {
        // SAFETY: the IRP came back to us.
        unsafe { ffi::irp_status(irp) }
    };
    restore_device(ext, status >= 0);
    if status >= 0 {
        // SAFETY: our FDO, after the device entered D0.
        unsafe {
            let _ = PoSetPowerState(
                ext.fdo,
                _POWER_STATE_TYPE::DevicePowerState,
                POWER_STATE {
                    DeviceState: POWER_DEVICE_D0,
                },
            );
        }
    }
    // SAFETY: ours to complete; the reference taken in dispatch_power.
    unsafe {
        ffi::complete_irp(irp, status, 0);
        ffi::release_remove_lock(ext.remove_lock(), irp.cast());
    }
    status
}

/// After the D0 IRP (`powered`: the bus driver completed it with success):
/// the wake reset the PCI function and the device kept stale registers.
/// Bus mastering first (a held packet starts right after), then the
/// engine's ID check and quiesce. A device that did not come back, or that
/// the watchdog cut off the bus on purpose (it may still own an abandoned
/// command), gets no bus mastering: the engine fails the held packet and the
/// device is reported failed, so the PnP manager restarts or removes it.
fn restore_device(ext: &DeviceExtension, powered: bool) {
    let started = !ext.bar0.load(Ordering::Acquire).is_null();
    let cut_off = ext.lock().engine.device_failed();
    if powered {
        // Decoding again. Stale interrupt bits the ISR may acknowledge before
        // the quiesce below are harmless: the engine believes the command
        // register, not the bits.
        ext.device_off.store(false, Ordering::Release);
    }
    // SAFETY: started: the bus interface is held until the hardware is
    // released, which cannot happen while we hold the remove lock of a
    // power IRP (PnP and power are serialized for this stack).
    let restored = powered && !cut_off && (!started || unsafe { restore_bus_master(ext) }.is_ok());
    let up = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        shared.engine.power_up(restored, &mut regs)
    };
    if let Some(c) = up.resumed {
        deliver(ext, c);
    }
    if started && !up.status.is_success() && !ext.failure_reported.swap(true, Ordering::AcqRel) {
        // SAFETY: our PDO; PASSIVE_LEVEL.
        unsafe { IoInvalidateDeviceState(ext.pdo) };
    }
}
