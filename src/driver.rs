//! DriverEntry, AddDevice and DriverUnload.

use core::ptr;

use edudma_core::engine::{Engine, EngineConfig};
use edudma_core::ioctl::{FILE_DEVICE_EDUDMA, GUID_DEVINTERFACE_EDUDMA};
use wdk_sys::ntddk::{
    IoAttachDeviceToDeviceStack, IoCreateDevice, IoDeleteDevice, IoDetachDevice,
    IoRegisterDeviceInterface, IoSetStartIoAttributes, KeInitializeDpc, KeInitializeEvent,
    KeInitializeTimerEx,
};
use wdk_sys::{
    _EVENT_TYPE, _TIMER_TYPE, DEVICE_OBJECT, DO_DEVICE_INITIALIZING, DO_DIRECT_IO,
    DO_POWER_PAGABLE, DRIVER_OBJECT, FILE_DEVICE_SECURE_OPEN, GUID, IRP_MJ_CLEANUP, IRP_MJ_CLOSE,
    IRP_MJ_CREATE, IRP_MJ_DEVICE_CONTROL, IRP_MJ_PNP, IRP_MJ_POWER, IRP_MJ_READ,
    IRP_MJ_SYSTEM_CONTROL, IRP_MJ_WRITE, NTSTATUS, PCUNICODE_STRING, STATUS_NO_SUCH_DEVICE,
    STATUS_SUCCESS,
};

use crate::device::DeviceExtension;
use crate::dispatch::{dispatch_cleanup, dispatch_close, dispatch_create, dispatch_io};
use crate::dma_ops::grant_dpc;
use crate::isr::{dpc_for_isr, watchdog_dpc};
use crate::pnp::dispatch_pnp;
use crate::power::{dispatch_pass_down, dispatch_power};
use crate::startio::{mailbox_dpc, start_io};
use crate::{ffi, registry};

/// The device interface class through which applications open the device.
/// The FDO has no name (Learn, "NT Device Names": function device objects
/// are not named; the PDO is the stack's one named object), so no
/// `\\.\` path reaches the device before the INF's security applies.
static INTERFACE_GUID: GUID = ffi::guid(GUID_DEVINTERFACE_EDUDMA);

/// The driver's entry point.
///
/// # Safety
/// Called once by the I/O manager with its driver object.
// SAFETY: "DriverEntry" is the entry symbol wdk-build links with
// (/ENTRY:DriverEntry); nothing else in the image exports that name.
#[unsafe(export_name = "DriverEntry")]
pub unsafe extern "system" fn driver_entry(
    driver: &mut DRIVER_OBJECT,
    _registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    driver.MajorFunction[IRP_MJ_CREATE as usize] = Some(dispatch_create);
    driver.MajorFunction[IRP_MJ_CLOSE as usize] = Some(dispatch_close);
    driver.MajorFunction[IRP_MJ_CLEANUP as usize] = Some(dispatch_cleanup);
    driver.MajorFunction[IRP_MJ_READ as usize] = Some(dispatch_io);
    driver.MajorFunction[IRP_MJ_WRITE as usize] = Some(dispatch_io);
    driver.MajorFunction[IRP_MJ_DEVICE_CONTROL as usize] = Some(dispatch_io);
    driver.MajorFunction[IRP_MJ_PNP as usize] = Some(dispatch_pnp);
    driver.MajorFunction[IRP_MJ_POWER as usize] = Some(dispatch_power);
    driver.MajorFunction[IRP_MJ_SYSTEM_CONTROL as usize] = Some(dispatch_pass_down);
    driver.DriverStartIo = Some(start_io);
    driver.DriverUnload = Some(driver_unload);
    // SAFETY: the I/O manager gives every driver object a driver extension.
    unsafe { (*driver.DriverExtension).AddDevice = Some(add_device) };
    STATUS_SUCCESS
}

/// Nothing global to free: every device went away through PnP removal.
unsafe extern "C" fn driver_unload(_driver: *mut DRIVER_OBJECT) {}

/// AddDevice: create the FDO, set it up, attach it to the PCI PDO.
unsafe extern "C" fn add_device(driver: *mut DRIVER_OBJECT, pdo: *mut DEVICE_OBJECT) -> NTSTATUS {
    let config = EngineConfig {
        window: registry::dma_window(pdo),
        allocation: registry::allocation_policy(pdo),
        strategy: registry::dma_strategy(pdo),
        dma_address_width: registry::dma_address_width(pdo),
        ..EngineConfig::default()
    };
    let extension_size = size_of::<DeviceExtension>() as u32;
    let mut fdo: *mut DEVICE_OBJECT = ptr::null_mut();
    // SAFETY: PASSIVE_LEVEL; our driver object; an unnamed FDO.
    // FILE_DEVICE_SECURE_OPEN applies the device's security (the INF
    // restricts it to SYSTEM and Administrators) to every open.
    let status = unsafe {
        IoCreateDevice(
            driver,
            extension_size,
            ptr::null_mut(),
            FILE_DEVICE_EDUDMA,
            FILE_DEVICE_SECURE_OPEN,
            0,
            &mut fdo,
        )
    };
    if status < 0 {
        return status;
    }
    // SAFETY: IoCreateDevice allocated `extension_size` suitably aligned
    // nonpaged bytes at DeviceExtension for us.
    let ext = unsafe {
        let slot = (*fdo).DeviceExtension.cast::<DeviceExtension>();
        DeviceExtension::init_in_place(slot, fdo, pdo, Engine::new(config))
    };
    let context = ext.as_context();
    // SAFETY: PASSIVE_LEVEL; every object lives in the nonpaged extension or
    // device object, and is initialized before the device can get IRPs.
    unsafe {
        ffi::initialize_remove_lock(ext.remove_lock());
        ffi::initialize_dpc_request(fdo, dpc_for_isr);
        KeInitializeDpc(ext.grant_dpc.get(), Some(grant_dpc), context);
        KeInitializeDpc(ext.mailbox_dpc.get(), Some(mailbox_dpc), context);
        KeInitializeDpc(ext.watchdog_dpc.get(), Some(watchdog_dpc), context);
        KeInitializeTimerEx(ext.watchdog_timer.get(), _TIMER_TYPE::NotificationTimer);
        KeInitializeEvent(ext.adapter_put.get(), _EVENT_TYPE::NotificationEvent, 0);
        KeInitializeEvent(ext.power_drained.get(), _EVENT_TYPE::NotificationEvent, 0);
        // Deferred StartIo: IoStartNextPacket never recurses into StartIo.
        IoSetStartIoAttributes(fdo, 1, 0);
        (*fdo).Flags |= DO_DIRECT_IO | DO_POWER_PAGABLE;
    }
    // SAFETY: PASSIVE_LEVEL; our new FDO onto the PDO we were given.
    let lower = unsafe { IoAttachDeviceToDeviceStack(fdo, pdo) };
    if lower.is_null() {
        // SAFETY: nothing refers to the new device yet.
        unsafe { IoDeleteDevice(fdo) };
        return STATUS_NO_SUCH_DEVICE;
    }
    ext.lower = lower;
    // SAFETY: PASSIVE_LEVEL; the name buffer is allocated by the call.
    let status = unsafe {
        IoRegisterDeviceInterface(
            pdo,
            &INTERFACE_GUID,
            ptr::null_mut(),
            ext.interface_name.get(),
        )
    };
    if status < 0 {
        // SAFETY: undo the attach, then delete the unused device.
        unsafe {
            IoDetachDevice(lower);
            IoDeleteDevice(fdo);
        }
        return status;
    }
    // SAFETY: set up complete; the I/O manager may send IRPs now.
    unsafe { (*fdo).Flags &= !DO_DEVICE_INITIALIZING };
    STATUS_SUCCESS
}
