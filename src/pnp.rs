//! IRP_MJ_PNP: start (map BAR0, bus master, DMA adapter — version 3, or
//! version 2 or 1 where it is missing — interrupt, engine), stop / surprise removal / removal (engine stop, wait for the
//! adapter to be put, disconnect, unmap, detach, delete); the rest passes down.

use core::ptr;
use core::sync::atomic::Ordering;

use edudma_core::engine::{AdapterFacts, AdapterRequest, DmaStrategy, StopReason};
use edudma_core::regs::{BAR0_SIZE, DEVICE_BUFFER_SIZE};
use wdk_sys::ntddk::{
    IoBuildSynchronousFsdRequest, IoDeleteDevice, IoDetachDevice, IoForwardIrpSynchronously,
    IoGetAttachedDeviceReference, IoGetDmaAdapter, IoSetDeviceInterfaceState, KeClearEvent,
    KeFlushQueuedDpcs, KeInitializeEvent, MmMapIoSpaceEx, MmUnmapIoSpace, ObfDereferenceObject,
    PoSetPowerState, RtlFreeUnicodeString,
};
use wdk_sys::{
    _DMA_SPEED, _DMA_WIDTH, _EVENT_TYPE, _INTERFACE_TYPE, _POWER_STATE_TYPE,
    BUS_INTERFACE_STANDARD, DEVICE_DESCRIPTION, DEVICE_OBJECT, DMA_ADAPTER, IO_STATUS_BLOCK, IRP,
    IRP_MJ_PNP, IRP_MN_CANCEL_REMOVE_DEVICE, IRP_MN_CANCEL_STOP_DEVICE, IRP_MN_QUERY_INTERFACE,
    IRP_MN_QUERY_PNP_DEVICE_STATE, IRP_MN_QUERY_REMOVE_DEVICE, IRP_MN_QUERY_STOP_DEVICE,
    IRP_MN_REMOVE_DEVICE, IRP_MN_START_DEVICE, IRP_MN_STOP_DEVICE, IRP_MN_SURPRISE_REMOVAL, KEVENT,
    NTSTATUS, PHYSICAL_ADDRESS, PNP_DEVICE_FAILED, POWER_STATE, PVOID, SIZE_T,
    STATUS_DEVICE_CONFIGURATION_ERROR, STATUS_DEVICE_NOT_READY, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_NOT_SUPPORTED, STATUS_PENDING, STATUS_SUCCESS, STATUS_UNSUCCESSFUL,
};

use crate::device::{DeviceExtension, pnp_state};
use crate::dma_ops::WinDma;
use crate::startio::deliver;
use crate::{ffi, isr};

/// Pass the IRP down unchanged and drop our remove-lock reference.
///
/// # Safety
/// We own `irp` and hold its remove-lock reference.
pub unsafe fn pass_down(ext: &DeviceExtension, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: see above; the lower device outlives our attachment.
    unsafe {
        ffi::skip_current_stack_location(irp);
        let status = ffi::call_driver(ext.lower, irp);
        ffi::release_remove_lock(ext.remove_lock(), irp.cast());
        status
    }
}

/// `IRP_MJ_PNP`.
pub unsafe extern "C" fn dispatch_pnp(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: `device` is our FDO.
    let ext = unsafe { DeviceExtension::from_device(device) };
    // SAFETY: an initialized remove lock; the IRP is the tag.
    let status = unsafe { ffi::acquire_remove_lock(ext.remove_lock(), irp.cast()) };
    if status < 0 {
        // SAFETY: ours to complete; no lock acquired.
        unsafe { ffi::complete_irp(irp, status, 0) };
        return status;
    }
    // SAFETY: a live PnP IRP.
    let minor = u32::from(unsafe { (*ffi::current_stack(irp)).MinorFunction });
    // SAFETY: (all arms) we own the IRP and hold its remove-lock reference.
    unsafe {
        match minor {
            IRP_MN_START_DEVICE => {
                let status = start_device(ext, irp);
                ffi::complete_irp(irp, status, 0);
                ffi::release_remove_lock(ext.remove_lock(), irp.cast());
                status
            }
            IRP_MN_QUERY_STOP_DEVICE
            | IRP_MN_QUERY_REMOVE_DEVICE
            | IRP_MN_CANCEL_STOP_DEVICE
            | IRP_MN_CANCEL_REMOVE_DEVICE => {
                ffi::set_irp_status(irp, STATUS_SUCCESS);
                pass_down(ext, irp)
            }
            IRP_MN_STOP_DEVICE => {
                release_hardware(ext, StopReason::Stop, pnp_state::STOPPED);
                ffi::set_irp_status(irp, STATUS_SUCCESS);
                pass_down(ext, irp)
            }
            IRP_MN_SURPRISE_REMOVAL => {
                release_hardware(ext, StopReason::SurpriseRemoval, pnp_state::GONE);
                ffi::set_irp_status(irp, STATUS_SUCCESS);
                pass_down(ext, irp)
            }
            IRP_MN_REMOVE_DEVICE => remove_device(ext, irp),
            IRP_MN_QUERY_PNP_DEVICE_STATE => {
                let (status, state) = query_pnp_device_state(ext, irp);
                ffi::complete_irp(irp, status, state);
                ffi::release_remove_lock(ext.remove_lock(), irp.cast());
                status
            }
            _ => pass_down(ext, irp),
        }
    }
}

/// `IRP_MN_QUERY_PNP_DEVICE_STATE`: on the way up, add `PNP_DEVICE_FAILED`
/// once the engine abandoned a command (the device is off the bus).
///
/// # Safety
/// PASSIVE_LEVEL; we own the IRP.
unsafe fn query_pnp_device_state(ext: &DeviceExtension, irp: *mut IRP) -> (NTSTATUS, usize) {
    // SAFETY: PASSIVE_LEVEL; the bus driver answers first.
    if unsafe { IoForwardIrpSynchronously(ext.lower, irp) } == 0 {
        return (STATUS_UNSUCCESSFUL, 0);
    }
    // SAFETY: the IRP came back to us.
    let (status, below) = unsafe { (ffi::irp_status(irp), ffi::irp_information(irp)) };
    let mut state = match status {
        // A bus driver that does not handle it leaves STATUS_NOT_SUPPORTED.
        STATUS_NOT_SUPPORTED => 0,
        s if s < 0 => return (s, below),
        _ => below,
    };
    if ext.lock().engine.device_failed() {
        state |= PNP_DEVICE_FAILED as usize;
    }
    (STATUS_SUCCESS, state)
}

/// `IRP_MN_START_DEVICE`, after the lower drivers started.
///
/// # Safety
/// PASSIVE_LEVEL; we own the start IRP.
unsafe fn start_device(ext: &DeviceExtension, irp: *mut IRP) -> NTSTATUS {
    if ext.pnp.load(Ordering::Acquire) == pnp_state::STARTED {
        // Started again without a stop (the PnP manager restarting the
        // device): give the first start's resources back before taking the
        // new ones, as a stop would. A held packet resumes after the start.
        release_hardware(ext, StopReason::Stop, pnp_state::STOPPED);
    }
    // SAFETY: PASSIVE_LEVEL; the bus driver starts first.
    if unsafe { IoForwardIrpSynchronously(ext.lower, irp) } == 0 {
        return STATUS_UNSUCCESSFUL;
    }
    // SAFETY: the IRP came back to us.
    let status = unsafe { ffi::irp_status(irp) };
    if status < 0 {
        return status;
    }
    // SAFETY: the start IRP's own stack location and resource list.
    let resources = unsafe { ffi::translated_resources(ffi::current_stack(irp)) };
    // SAFETY: null or the PnP manager's translated list for this start.
    let resource = unsafe { ffi::first_memory_resource(resources) };
    let Some((start, length)) = resource else {
        return STATUS_DEVICE_CONFIGURATION_ERROR;
    };
    if u64::from(length) < BAR0_SIZE {
        return STATUS_DEVICE_CONFIGURATION_ERROR;
    }
    // SAFETY: PASSIVE_LEVEL; a translated memory resource of our device.
    let va = unsafe {
        MmMapIoSpaceEx(
            PHYSICAL_ADDRESS { QuadPart: start },
            BAR0_SIZE as SIZE_T,
            ffi::PAGE_READWRITE | ffi::PAGE_NOCACHE,
        )
    };
    if va.is_null() {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    ext.bar0_length.store(BAR0_SIZE as u32, Ordering::Release);
    ext.bar0.store(va.cast(), Ordering::Release);

    // Bus Master Enable waits for the engine: it sets it once it knows the
    // device runs no command from before.
    // SAFETY: PASSIVE_LEVEL, our started stack.
    if let Err(status) = unsafe { take_bus_interface(ext) } {
        unmap(ext);
        return status;
    }

    // Step 1: the adapters the strategy asks for, in the core's order (a
    // version-3 one stating the device's reach first, where it is asked for).
    let config = *ext.lock().engine.config();
    let obtained = config.adapter_requests().find_map(|request| {
        // SAFETY: PASSIVE_LEVEL, our PDO.
        unsafe { get_dma_adapter(ext, &request) }.map(|(a, n)| (a, n, request))
    });
    let Some((adapter, map_registers, request)) = obtained else {
        // NULL for every version: no DMA for this device.
        unmap(ext);
        release_bus_interface(ext);
        return STATUS_INSUFFICIENT_RESOURCES;
    };

    let interrupt_kind = isr::connect(ext);
    let mut ops = WinDma::new(adapter, ext);
    // The common-buffer strategy's one page, allocated at PASSIVE_LEVEL;
    // the engine decides whether it will do.
    let common_buffer = match request.strategy {
        DmaStrategy::CommonBuffer => ops.allocate_common_buffer(),
        _ => None,
    };
    let facts = AdapterFacts {
        dma_interface_version: request.version,
        strategy: request.strategy,
        map_registers,
        dma_address_width: config.device_reach(),
        scatter_gather: request.scatter_gather,
        interrupt_kind,
        common_buffer,
    };
    // Learn (GetDmaAlignment): "The returned value should be used to set the
    // AlignmentRequirement field in the device object" — a FILE_*_ALIGNMENT
    // mask, the alignment in bytes minus one; never lowered.
    // SAFETY: PASSIVE_LEVEL at start; our FDO.
    unsafe {
        let mask = ops.alignment().max(1) - 1;
        if (*ext.fdo).AlignmentRequirement < mask {
            (*ext.fdo).AlignmentRequirement = mask;
        }
    }
    ext.failure_reported.store(false, Ordering::Release);
    // SAFETY: initialized in AddDevice; nobody waits on it during a start.
    unsafe { KeClearEvent(ext.adapter_put.get()) };
    let started = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        shared.engine.start_device(ops, facts, &mut regs)
    };
    if let Err(status) = started {
        // The engine put the adapter, or left it quiet with its common
        // buffer for us to release here, at PASSIVE_LEVEL.
        release_quiet_adapter(ext);
        isr::disconnect(ext);
        unmap(ext);
        release_bus_interface(ext);
        return status.0;
    }
    // A start finds the device in D0 (Learn, PoSetPowerState: "When handling
    // a PnP IRP_MN_START_DEVICE request, the driver should call
    // PoSetPowerState to notify the power manager that the device is in the
    // D0 state"); whatever a failed wake left behind is over.
    ext.device_off.store(false, Ordering::Release);
    ext.draining.store(false, Ordering::Release);
    // SAFETY: our FDO; PASSIVE_LEVEL.
    unsafe {
        let _ = PoSetPowerState(
            ext.fdo,
            _POWER_STATE_TYPE::DevicePowerState,
            POWER_STATE {
                DeviceState: edudma_core::engine::POWER_DEVICE_D0,
            },
        );
    }
    set_interface(ext, true);
    ext.pnp.store(pnp_state::STARTED, Ordering::Release);
    // The packet held while the device was stopped (a rebalance) goes on.
    let resumed = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        shared.engine.resume(&mut regs)
    };
    if let Some(c) = resumed {
        deliver(ext, c);
    }
    STATUS_SUCCESS
}

/// `IoGetDmaAdapter` for a bus master with the description the core asks
/// for: the adapter and its map registers, `None` for NULL.
///
/// # Safety
/// PASSIVE_LEVEL; `ext` is our started device's extension.
unsafe fn get_dma_adapter(
    ext: &DeviceExtension,
    request: &AdapterRequest,
) -> Option<(*mut DMA_ADAPTER, u32)> {
    // SAFETY: all-zero DEVICE_DESCRIPTION is what the DDI asks to start from.
    let mut description: DEVICE_DESCRIPTION = unsafe { core::mem::zeroed() };
    description.Version = request.version;
    description.Master = 1;
    description.ScatterGather = u8::from(request.scatter_gather);
    description.Dma32BitAddresses = u8::from(request.dma32_bit_addresses);
    description.InterfaceType = _INTERFACE_TYPE::PCIBus;
    description.DmaWidth = _DMA_WIDTH::Width32Bits;
    description.DmaSpeed = _DMA_SPEED::Compatible;
    description.MaximumLength = DEVICE_BUFFER_SIZE;
    description.DmaAddressWidth = request.dma_address_width;
    let mut map_registers: u32 = 0;
    // SAFETY: PASSIVE_LEVEL with our PDO and a filled description.
    let adapter = unsafe { IoGetDmaAdapter(ext.pdo, &mut description, &mut map_registers) };
    (!adapter.is_null()).then_some((adapter, map_registers))
}

/// Stop, surprise removal or removal: the engine decides what happens to
/// the request in flight and to the next ones (after a stop StartIo's
/// packet is held until the restart; after a removal it is failed); the
/// glue waits for the adapter to be put, then gives back the interrupt, the
/// registers and the bus interface. PASSIVE_LEVEL.
fn release_hardware(ext: &DeviceExtension, reason: StopReason, next: u32) {
    let previous = ext.pnp.swap(next, Ordering::AcqRel);
    let enabled = previous == pnp_state::STARTED || previous == pnp_state::STOPPED;
    if next == pnp_state::GONE && enabled {
        // Going away: no new opens first (the interface is enabled from the
        // first start to the removal; a stop, a rebalance, keeps it), then
        // the resources.
        set_interface(ext, false);
    }
    let completion = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        shared.engine.stop(reason, &mut regs)
    };
    if let Some(c) = completion {
        deliver(ext, c);
    }
    if previous != pnp_state::STARTED {
        // Released already (a removal after a stop or a surprise removal).
        return;
    }
    // Proof, not a clock: the engine puts the adapter when nothing is
    // outstanding any more (the transfer in flight ended, a committed grant
    // arrived and was given back, or the watchdog timed the command out and
    // took the device off the bus); until then the HAL may still run our
    // execution routine and the device may still own a mapping.
    // SAFETY: PASSIVE_LEVEL; the event lives in the extension.
    unsafe { ffi::wait_for_event(ext.adapter_put.get()) };
    release_quiet_adapter(ext);
    isr::stop_watchdog(ext);
    isr::disconnect(ext);
    // SAFETY: PASSIVE_LEVEL; waits for every queued DPC (ISR, watchdog,
    // grant, mailbox) to finish before the registers go away.
    unsafe { KeFlushQueuedDpcs() };
    unmap(ext);
    release_bus_interface(ext);
}

/// A quiet adapter (the common-buffer strategy): `FreeCommonBuffer`, then
/// `PutDmaAdapter`, both at PASSIVE_LEVEL and outside the engine lock.
fn release_quiet_adapter(ext: &DeviceExtension) {
    let quiet = ext.lock().engine.take_quiet_adapter();
    if let Some(quiet) = quiet {
        quiet.release();
    }
}

/// `IRP_MN_REMOVE_DEVICE`.
///
/// # Safety
/// PASSIVE_LEVEL; we own the IRP and hold its remove-lock reference.
unsafe fn remove_device(ext: &DeviceExtension, irp: *mut IRP) -> NTSTATUS {
    release_hardware(ext, StopReason::Remove, pnp_state::GONE);
    // Learn (IoReleaseRemoveLockAndWait): "each driver should call
    // IoReleaseRemoveLockAndWait after it passes the remove IRP to the
    // next-lower driver, and before it releases memory, calls
    // IoDetachDevice, or calls IoDeleteDevice" — the bus driver cancels
    // what it still holds of ours on the removal. The IRP is only the tag.
    // SAFETY: see above. After the wait no other IRP is in the driver.
    let status = unsafe {
        ffi::set_irp_status(irp, STATUS_SUCCESS);
        ffi::skip_current_stack_location(irp);
        let status = ffi::call_driver(ext.lower, irp);
        ffi::release_remove_lock_and_wait(ext.remove_lock(), irp.cast());
        status
    };
    // SAFETY: PASSIVE_LEVEL; nothing queues our DPCs any more.
    unsafe { KeFlushQueuedDpcs() };
    let fdo = ext.fdo;
    // SAFETY: the interface name IoRegisterDeviceInterface allocated; the
    // lower device we attached to; then our own device object, after which
    // `ext` is not touched.
    unsafe {
        RtlFreeUnicodeString(ext.interface_name.get());
        IoDetachDevice(ext.lower);
        IoDeleteDevice(fdo);
    }
    status
}

/// Unmap BAR0 (the ISR is disconnected and the DPCs flushed, or BAR0 was
/// never used).
fn unmap(ext: &DeviceExtension) {
    // Cleared under the engine lock: whoever holds it has finished with the
    // old mapping, whoever takes it next sees none (EngineGuard::regs).
    let (va, length) = {
        let _shared = ext.lock();
        (
            ext.bar0.swap(ptr::null_mut(), Ordering::AcqRel),
            ext.bar0_length.swap(0, Ordering::AcqRel),
        )
    };
    if !va.is_null() {
        // SAFETY: the mapping MmMapIoSpaceEx returned, with its length.
        unsafe { MmUnmapIoSpace(va.cast(), length as SIZE_T) };
    }
}

/// Enable or disable the device interface the tool finds.
fn set_interface(ext: &DeviceExtension, enable: bool) {
    // SAFETY: the name IoRegisterDeviceInterface returned (empty if it
    // failed, in which case AddDevice failed and we are not here).
    unsafe {
        let _ = IoSetDeviceInterfaceState(ext.interface_name.get(), u8::from(enable));
    }
}

/// Take the bus driver's `BUS_INTERFACE_STANDARD` (config space) for the
/// engine's Bus Master Enable, and check the command register reads; a
/// device left on the bus from before (firmware, a stop after a timeout)
/// is taken off it until the engine decides.
///
/// # Safety
/// PASSIVE_LEVEL, during start.
unsafe fn take_bus_interface(ext: &DeviceExtension) -> Result<(), NTSTATUS> {
    // SAFETY: all-zero is a valid BUS_INTERFACE_STANDARD (None routines).
    let mut bus: BUS_INTERFACE_STANDARD = unsafe { core::mem::zeroed() };
    // SAFETY: forwarded.
    unsafe { query_bus_interface(ext, &mut bus)? };
    // Kept (and referenced) until the hardware is released: the engine may
    // have to take the device off the bus at DISPATCH_LEVEL.
    // SAFETY: PASSIVE_LEVEL at start: nothing else uses `bus` yet.
    unsafe { *ext.bus.get() = bus };
    ext.bus_referenced.store(true, Ordering::Release);
    let result = match (bus.GetBusData, bus.SetBusData) {
        (Some(get), Some(set)) => {
            // SAFETY: the routines and context of the interface just obtained.
            unsafe { set_bus_master(get, set, bus.Context, false) }
        }
        _ => Err(STATUS_NOT_SUPPORTED),
    };
    if result.is_err() {
        release_bus_interface(ext);
    }
    result
}

/// Give back the reference `IRP_MN_QUERY_INTERFACE` took for us.
fn release_bus_interface(ext: &DeviceExtension) {
    if !ext.bus_referenced.swap(false, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the interface stored at start; no one uses it any more (the
    // adapter is put, so the engine will not take the device off the bus).
    let bus = unsafe { &*ext.bus.get() };
    if let Some(dereference) = bus.InterfaceDereference {
        // SAFETY: the interface's own routine and context.
        unsafe { dereference(bus.Context) };
    }
}

/// Clear Bus Master Enable: the device can no longer reach memory (nor send
/// an MSI). IRQL <= DISPATCH_LEVEL (config space through the bus interface
/// is callable up to DIRQL).
///
/// # Safety
/// Between start and the release of the hardware.
pub unsafe fn clear_bus_master(ext: &DeviceExtension) {
    // SAFETY: forwarded. A failure leaves nothing more to try: the device
    // is reported failed anyway.
    let _ = unsafe { bus_master_through_kept_interface(ext, false) };
}

/// Set Bus Master Enable again after the device came back to D0 (a wake
/// resets the PCI function and the bus driver leaves the bit to us).
///
/// # Safety
/// Between start and the release of the hardware, IRQL <= DISPATCH_LEVEL.
pub unsafe fn restore_bus_master(ext: &DeviceExtension) -> Result<(), NTSTATUS> {
    // SAFETY: forwarded.
    unsafe { bus_master_through_kept_interface(ext, true) }
}

/// Bus Master Enable on or off through the `BUS_INTERFACE_STANDARD` kept
/// since start (`STATUS_DEVICE_NOT_READY` when none is held).
///
/// # Safety
/// As [`clear_bus_master`].
unsafe fn bus_master_through_kept_interface(
    ext: &DeviceExtension,
    enable: bool,
) -> Result<(), NTSTATUS> {
    if !ext.bus_referenced.load(Ordering::Acquire) {
        return Err(STATUS_DEVICE_NOT_READY);
    }
    // SAFETY: the interface stored at start, referenced until released.
    let bus = unsafe { &*ext.bus.get() };
    match (bus.GetBusData, bus.SetBusData) {
        // SAFETY: the routines and context of that interface.
        (Some(get), Some(set)) => unsafe { set_bus_master(get, set, bus.Context, enable) },
        _ => Err(STATUS_NOT_SUPPORTED),
    }
}

/// Bus Master Enable is set in the command register, read through the
/// `BUS_INTERFACE_STANDARD` kept since start (`GetBusData`, callable at
/// IRQL <= DISPATCH_LEVEL). No interface or an unreadable register: false.
///
/// # Safety
/// As [`clear_bus_master`].
pub unsafe fn bus_master_enabled(ext: &DeviceExtension) -> bool {
    if !ext.bus_referenced.load(Ordering::Acquire) {
        return false;
    }
    // SAFETY: the interface stored at start, referenced until released.
    let bus = unsafe { &*ext.bus.get() };
    match bus.GetBusData {
        // SAFETY: the routine and context of that interface.
        Some(get) => unsafe { read_command(get, bus.Context) }
            .is_some_and(|c| c & ffi::PCI_ENABLE_BUS_MASTER != 0),
        None => false,
    }
}

/// The PCI command register through `GetBusData`; `None` when the bus
/// driver returned fewer than its two bytes.
///
/// # Safety
/// `get`/`context` must come from one live `BUS_INTERFACE_STANDARD`.
unsafe fn read_command(get: GetSetBusData, context: PVOID) -> Option<u16> {
    let mut command: u16 = 0;
    // SAFETY: a 2-byte buffer for 2 bytes of config space.
    let n = unsafe {
        get(
            context,
            ffi::PCI_WHICHSPACE_CONFIG,
            ptr::from_mut(&mut command).cast(),
            ffi::PCI_COMMAND_OFFSET,
            2,
        )
    };
    (n == 2).then_some(command)
}

/// Read the command register; set (or clear) Bus Master Enable if it is
/// not already so; read back.
///
/// # Safety
/// `get`/`set`/`context` must come from one live `BUS_INTERFACE_STANDARD`.
unsafe fn set_bus_master(
    get: GetSetBusData,
    set: GetSetBusData,
    context: PVOID,
    enable: bool,
) -> Result<(), NTSTATUS> {
    // SAFETY: the caller's interface.
    let read = || unsafe { read_command(get, context) };
    let command = read().ok_or(STATUS_DEVICE_CONFIGURATION_ERROR)?;
    let is_on = |c: u16| c & ffi::PCI_ENABLE_BUS_MASTER != 0;
    if is_on(command) == enable {
        return Ok(());
    }
    let mut wanted = if enable {
        command | ffi::PCI_ENABLE_BUS_MASTER
    } else {
        command & !ffi::PCI_ENABLE_BUS_MASTER
    };
    // SAFETY: as for the read.
    unsafe {
        set(
            context,
            ffi::PCI_WHICHSPACE_CONFIG,
            ptr::from_mut(&mut wanted).cast(),
            ffi::PCI_COMMAND_OFFSET,
            2,
        );
    }
    match read() {
        Some(c) if is_on(c) == enable => Ok(()),
        _ => Err(STATUS_DEVICE_CONFIGURATION_ERROR),
    }
}

/// The `GET_SET_DEVICE_DATA` routine type of `BUS_INTERFACE_STANDARD`
/// (`ULONG (PVOID Context, ULONG DataType, PVOID Buffer, ULONG Offset, ULONG Length)`).
type GetSetBusData = unsafe extern "C" fn(PVOID, u32, PVOID, u32, u32) -> u32;

/// `IRP_MN_QUERY_INTERFACE` for `GUID_BUS_INTERFACE_STANDARD`, sent to the
/// top of our device stack and waited for.
///
/// # Safety
/// PASSIVE_LEVEL.
unsafe fn query_bus_interface(
    ext: &DeviceExtension,
    bus: &mut BUS_INTERFACE_STANDARD,
) -> Result<(), NTSTATUS> {
    // SAFETY: all-zero KEVENT / IO_STATUS_BLOCK are valid before init.
    let mut event: KEVENT = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    let mut io_status: IO_STATUS_BLOCK = unsafe { core::mem::zeroed() };
    // SAFETY: PASSIVE_LEVEL; every pointer is to this frame, which waits for
    // the IRP to finish before returning; the top device is referenced.
    unsafe {
        KeInitializeEvent(&mut event, _EVENT_TYPE::NotificationEvent, 0);
        let top = IoGetAttachedDeviceReference(ext.fdo);
        let irp = IoBuildSynchronousFsdRequest(
            IRP_MJ_PNP,
            top,
            ptr::null_mut(),
            0,
            ptr::null_mut(),
            &mut event,
            &mut io_status,
        );
        if irp.is_null() {
            ObfDereferenceObject(top.cast());
            return Err(STATUS_INSUFFICIENT_RESOURCES);
        }
        // PnP IRPs start as STATUS_NOT_SUPPORTED.
        ffi::set_irp_status(irp, STATUS_NOT_SUPPORTED);
        let next = ffi::next_stack(irp);
        (*next).MajorFunction = IRP_MJ_PNP as u8;
        (*next).MinorFunction = IRP_MN_QUERY_INTERFACE as u8;
        ffi::set_query_interface(next, &ffi::GUID_BUS_INTERFACE_STANDARD, bus);
        let mut status = ffi::call_driver(top, irp);
        if status == STATUS_PENDING {
            ffi::wait_for_event(&mut event);
            status = ffi::io_status_status(&io_status);
        }
        ObfDereferenceObject(top.cast());
        if status < 0 { Err(status) } else { Ok(()) }
    }
}
