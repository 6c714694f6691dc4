//! IRP_MJ_POWER and IRP_MJ_SYSTEM_CONTROL: passed down.
//!
//! The driver targets Windows 10 and later (the INF's `NT$ARCH$.10.0...`
//! models). Since Windows Vista a power IRP is passed down with
//! `IoCallDriver` (not `PoCallDriver`) and `PoStartNextPowerIrp` is not
//! needed (Microsoft Learn, "Passing Power IRPs"). The edu device keeps no
//! state across D-states that the engine does not restore at start.

use wdk_sys::{DEVICE_OBJECT, IRP, NTSTATUS};

use crate::device::DeviceExtension;
use crate::ffi;
use crate::pnp::pass_down;

/// `IRP_MJ_POWER` and `IRP_MJ_SYSTEM_CONTROL`: hold the remove lock, skip our
/// stack location, `IoCallDriver` the lower device.
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
