//! The only home of bindgen union paths and of the header-inline helpers
//! wdk-sys does not generate.
//!
//! Every wdk-sys field path and name used in this crate is either here or a
//! plain struct field / exported function named like its C declaration.
//! Each item says where the exact spelling was seen. Every path here is also
//! compiled for `x86_64-pc-windows-msvc` by `scripts/windows-check.sh`, and
//! its offsets and anonymous-member nesting are held to Microsoft's metadata
//! (windows-sys) by `crates/wdk-layout-check`, whose table is
//! `docs/wdk-names.md`. Abbreviations:
//! - **W**: `microsoft/windows-drivers-rs` (wdk-build's `bindgen.rs` sets
//!   `EnumVariation::ModuleConsts`, so a C enum `_E` is the module `_E` with a
//!   `Type` alias; anonymous members become `__bindgen_anon_N` in declaration
//!   order; named members keep their C names).
//! - **P**: public Rust code compiled against wdk-sys, found through the code
//!   index (its index ids are in the research log).
//! - **H**: the C declaration in `wdm.h` as published in the Microsoft Learn
//!   reference, mapped with bindgen's naming rule above. Such paths could not
//!   be found in public Rust code and are listed as unconfirmed in the report.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};
#[cfg(windows)]
use core::sync::atomic::{compiler_fence, fence};

use wdk_sys::ntddk::{
    IoAcquireRemoveLockEx, IoInitializeRemoveLockEx, IoReleaseRemoveLockAndWaitEx,
    IoReleaseRemoveLockEx, IofCallDriver, IofCompleteRequest, KeInitializeDpc, KeInsertQueueDpc,
    KeWaitForSingleObject,
};
use wdk_sys::{
    _KWAIT_REASON, _MODE, BUS_INTERFACE_STANDARD, CM_PARTIAL_RESOURCE_DESCRIPTOR, CM_RESOURCE_LIST,
    DEVICE_OBJECT, DMA_TRANSFER_INFO, FILE_OBJECT, GUID, INTERFACE,
    IO_CONNECT_INTERRUPT_PARAMETERS, IO_DISCONNECT_INTERRUPT_PARAMETERS, IO_NO_INCREMENT,
    IO_REMOVE_LOCK, IO_STACK_LOCATION, IO_STATUS_BLOCK, IRP, KDEVICE_QUEUE_ENTRY, KDPC, KEVENT,
    KSPIN_LOCK, LIST_ENTRY, MDL, NTSTATUS, PIO_COMPLETION_ROUTINE, PKINTERRUPT, POWER_STATE,
    POWER_STATE_TYPE, PVOID, SCATTER_GATHER_ELEMENT, SCATTER_GATHER_LIST, SL_INVOKE_ON_CANCEL,
    SL_INVOKE_ON_ERROR, SL_INVOKE_ON_SUCCESS, SL_PENDING_RETURNED, ULONG_PTR,
};

// ---- numeric macros of the WDK headers --------------------------------------
//
// bindgen turns simple `#define`s into constants too, but the Rust type it
// picks (u32 or i32) is not documented; these values are fixed ABI, so they
// are spelled out here with the header they come from.

/// `DMA_TRANSFER_INFO_VERSION1` (wdm.h).
pub const DMA_TRANSFER_INFO_VERSION1: u32 = 1;
/// `DMA_SYNCHRONOUS_CALLBACK`, a flag of `AllocateAdapterChannelEx` (wdm.h).
pub const DMA_SYNCHRONOUS_CALLBACK: u32 = 0x01;
/// `DMA_TRANSFER_CONTEXT_SIZE_V1` (wdm.h): bytes of a DMA transfer context.
pub const DMA_TRANSFER_CONTEXT_SIZE_V1: usize = 128;
/// `CONNECT_LINE_BASED` (wdm.h).
pub const CONNECT_LINE_BASED: u32 = 0x2;
/// `CONNECT_MESSAGE_BASED` (wdm.h).
pub const CONNECT_MESSAGE_BASED: u32 = 0x3;
/// `CmResourceTypeMemory` (wdm.h).
pub const CM_RESOURCE_TYPE_MEMORY: u8 = 3;
/// `PCI_WHICHSPACE_CONFIG` (wdm.h), the config-space selector of `GetBusData`.
pub const PCI_WHICHSPACE_CONFIG: u32 = 0;
/// Offset of the PCI command register in config space.
pub const PCI_COMMAND_OFFSET: u32 = 0x04;
/// `PCI_ENABLE_BUS_MASTER` (wdm.h), bit 2 of the command register.
pub const PCI_ENABLE_BUS_MASTER: u16 = 0x0004;
/// `PAGE_READWRITE` (wdm.h), a protection of `MmMapIoSpaceEx`.
pub const PAGE_READWRITE: u32 = 0x04;
/// `PAGE_NOCACHE` (wdm.h): device registers are mapped uncached.
pub const PAGE_NOCACHE: u32 = 0x200;
/// `PLUGPLAY_REGKEY_DEVICE` (wdm.h): the device's hardware key
/// ("Device Parameters"), written by the INF's `DDInstall.HW` `AddReg`.
pub const PLUGPLAY_REGKEY_DEVICE: u32 = 1;
/// `KEY_READ` (wdm.h): `(STANDARD_RIGHTS_READ | KEY_QUERY_VALUE |
/// KEY_ENUMERATE_SUB_KEYS | KEY_NOTIFY) & ~SYNCHRONIZE`.
pub const KEY_READ: u32 = 0x0002_0019;
/// `REG_DWORD` (winnt.h).
pub const REG_DWORD: u32 = 4;
/// `GUID_BUS_INTERFACE_STANDARD` (wdmguid.h, not among wdk-sys's headers):
/// `{496B8280-6F25-11D0-BEAF-08002BE2092F}`.
pub const GUID_BUS_INTERFACE_STANDARD: GUID = GUID {
    Data1: 0x496B_8280,
    Data2: 0x6F25,
    Data3: 0x11D0,
    Data4: [0xBE, 0xAF, 0x08, 0x00, 0x2B, 0xE2, 0x09, 0x2F],
};

/// A `GUID` from the `(u32, u16, u16, [u8; 8])` form the core uses.
pub const fn guid(parts: (u32, u16, u16, [u8; 8])) -> GUID {
    // `GUID`'s fields Data1..Data4: W crates/wdk-macros tests and every
    // windows GUID binding; plain C field names.
    GUID {
        Data1: parts.0,
        Data2: parts.1,
        Data3: parts.2,
        Data4: parts.3,
    }
}

// ---- IRP and stack locations -------------------------------------------------

/// `IoGetCurrentIrpStackLocation` (wdm.h inline).
///
/// Path `Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.CurrentStackLocation`:
/// P (several wdk-sys drivers, e.g. index ids 54554315463, 36343011348) and
/// the project reference `windows-drivers-rs.md`.
///
/// # Safety
/// `irp` must point to a live IRP owned by the caller's driver.
pub unsafe fn current_stack(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: the caller guarantees a live IRP; the overlay's stack arm is
    // the active one for every IRP that reaches a dispatch routine.
    unsafe {
        (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation
    }
}

/// `IoGetNextIrpStackLocation` (wdm.h inline): the location below the current.
///
/// # Safety
/// `irp` must be live and have a stack location below the current one.
pub unsafe fn next_stack(irp: *mut IRP) -> *mut IO_STACK_LOCATION {
    // SAFETY: as `current_stack`; an IRP built for a lower driver always has
    // its next location allocated (StackSize of the target).
    unsafe { current_stack(irp).sub(1) }
}

/// `IoMarkIrpPending` (wdm.h inline): set `SL_PENDING_RETURNED` in the
/// current location's `Control` (P: id 54554315463, `Control |= SL_PENDING_RETURNED as u8`).
///
/// # Safety
/// `irp` must be live and owned by the caller.
pub unsafe fn mark_irp_pending(irp: *mut IRP) {
    // SAFETY: the caller owns the IRP; Control is a plain UCHAR.
    unsafe {
        let stack = current_stack(irp);
        (*stack).Control |= SL_PENDING_RETURNED as u8;
    }
}

/// `IoCopyCurrentIrpStackLocationToNext` (wdm.h inline): the current
/// location up to (not including) `CompletionRoutine` copied to the next,
/// whose `Control` is cleared.
///
/// # Safety
/// `irp` must be live, owned by the caller, with a location below the current.
pub unsafe fn copy_current_stack_location_to_next(irp: *mut IRP) {
    let length = core::mem::offset_of!(IO_STACK_LOCATION, CompletionRoutine);
    // SAFETY: two distinct locations of the caller's IRP; the copied prefix
    // is plain data (the header's RtlCopyMemory of the same bytes).
    unsafe {
        let current = current_stack(irp);
        let next = next_stack(irp);
        ptr::copy_nonoverlapping(current.cast::<u8>(), next.cast::<u8>(), length);
        (*next).Control = 0;
    }
}

/// `IoSetCompletionRoutine(Irp, routine, context, TRUE, TRUE, TRUE)` (wdm.h
/// inline): the routine and its context in the next location, invoked on
/// success, error and cancel.
///
/// # Safety
/// `irp` must be live, owned by the caller, its next location set up.
pub unsafe fn set_completion_routine(
    irp: *mut IRP,
    routine: PIO_COMPLETION_ROUTINE,
    context: PVOID,
) {
    // SAFETY: the caller's IRP; plain fields of its next location.
    unsafe {
        let next = next_stack(irp);
        (*next).CompletionRoutine = routine;
        (*next).Context = context;
        (*next).Control = (SL_INVOKE_ON_SUCCESS | SL_INVOKE_ON_ERROR | SL_INVOKE_ON_CANCEL) as u8;
    }
}

/// `Parameters.Power.Type` and `Parameters.Power.State` of a power IRP's
/// location (named C members of the `Power` arm).
///
/// # Safety
/// `stack` must be the live location of an `IRP_MJ_POWER` IRP.
pub unsafe fn power_parameters(stack: *mut IO_STACK_LOCATION) -> (POWER_STATE_TYPE, POWER_STATE) {
    // SAFETY: the Power arm is the active one for IRP_MJ_POWER.
    unsafe {
        (
            (*stack).Parameters.Power.Type,
            (*stack).Parameters.Power.State,
        )
    }
}

/// `IoSkipCurrentIrpStackLocation` (wdm.h inline): `CurrentLocation++`,
/// `CurrentStackLocation++`.
///
/// # Safety
/// `irp` must be live, owned by the caller, and about to be passed down.
pub unsafe fn skip_current_stack_location(irp: *mut IRP) {
    // SAFETY: the caller owns the IRP and passes it down right after; the
    // pointer arithmetic is the header's own.
    unsafe {
        (*irp).CurrentLocation += 1;
        let overlay = &raw mut (*irp).Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1;
        (*overlay).CurrentStackLocation = (*overlay).CurrentStackLocation.add(1);
    }
}

/// `IoCallDriver` (wdm.h macro → the export `IofCallDriver`, W reference).
///
/// # Safety
/// `device` must be a live device object and `irp` an IRP whose next stack
/// location is set up for it.
pub unsafe fn call_driver(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: forwarded from the caller.
    unsafe { IofCallDriver(device, irp) }
}

/// `KeWaitForSingleObject(event, Executive, KernelMode, FALSE, NULL)`: wait,
/// without a timeout, for an event to be signalled.
///
/// # Safety
/// PASSIVE_LEVEL; `event` is an initialized KEVENT that outlives the wait.
pub unsafe fn wait_for_event(event: *mut KEVENT) {
    // SAFETY: forwarded; a KEVENT is a dispatcher object.
    unsafe {
        let _ = KeWaitForSingleObject(
            event.cast(),
            _KWAIT_REASON::Executive,
            _MODE::KernelMode as i8,
            0,
            ptr::null_mut(),
        );
    }
}

/// `IoCompleteRequest(Irp, IO_NO_INCREMENT)` (wdm.h macro → `IofCompleteRequest`;
/// P: id 3668005010 `IofCompleteRequest(irp, IO_NO_INCREMENT as i8)`), after
/// setting `IoStatus.__bindgen_anon_1.Status` (P: id 54554315463) and
/// `IoStatus.Information`.
///
/// # Safety
/// The caller owns `irp`, has not completed it, holds no spin lock, and runs
/// at IRQL <= DISPATCH_LEVEL.
pub unsafe fn complete_irp(irp: *mut IRP, status: NTSTATUS, information: usize) {
    // SAFETY: the caller owns the IRP; after this call it is gone.
    unsafe {
        (*irp).IoStatus.__bindgen_anon_1.Status = status;
        (*irp).IoStatus.Information = information as ULONG_PTR;
        IofCompleteRequest(irp, IO_NO_INCREMENT as i8);
    }
}

/// `Irp->IoStatus.Status` (P: id 54554315463).
///
/// # Safety
/// `irp` must be live.
pub unsafe fn irp_status(irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the caller's live IRP.
    unsafe { io_status_status(&(*irp).IoStatus) }
}

/// `FileObject->FileName.Length` of an `IRP_MJ_CREATE` location (named C
/// members; a create always has a file object): 0 for an open of the
/// device itself, the bytes of the name below it otherwise.
///
/// # Safety
/// `stack` must be the current location of a live create IRP.
pub unsafe fn create_file_name_length(stack: *mut IO_STACK_LOCATION) -> u16 {
    // SAFETY: the caller's create location; its FileObject is live.
    unsafe {
        let file = (*stack).FileObject;
        if file.is_null() {
            0
        } else {
            (*file).FileName.Length
        }
    }
}

/// `Irp->IoStatus.Information` (a plain field).
///
/// # Safety
/// `irp` must be a live IRP.
pub unsafe fn irp_information(irp: *mut IRP) -> usize {
    // SAFETY: the caller's live IRP.
    unsafe { (*irp).IoStatus.Information as usize }
}

/// `IoStatus.Status` of an `IO_STATUS_BLOCK` (the same confirmed path as
/// `Irp->IoStatus`, whose type it is).
pub fn io_status_status(io_status: &IO_STATUS_BLOCK) -> NTSTATUS {
    // SAFETY: the Status arm of IO_STATUS_BLOCK's union is the one drivers
    // use; reading an i32 from the union is valid for any bit pattern.
    unsafe { io_status.__bindgen_anon_1.Status }
}

/// Set `Irp->IoStatus.Status` without completing (PnP IRPs passed down).
///
/// # Safety
/// `irp` must be live and owned by the caller.
pub unsafe fn set_irp_status(irp: *mut IRP, status: NTSTATUS) {
    // SAFETY: as `irp_status`.
    unsafe { (*irp).IoStatus.__bindgen_anon_1.Status = status }
}

/// Cancel routine type of `IRP.CancelRoutine` (`PDRIVER_CANCEL`); P: id
/// 54554315463 spells it `Option<unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut IRP)>`.
pub type CancelRoutine = unsafe extern "C" fn(*mut DEVICE_OBJECT, *mut IRP);

/// `IoSetCancelRoutine` (wdm.h inline: `InterlockedExchangePointer` on
/// `Irp->CancelRoutine`). Returns the previous routine.
///
/// # Safety
/// `irp` must be live.
pub unsafe fn set_cancel_routine(
    irp: *mut IRP,
    routine: Option<CancelRoutine>,
) -> Option<CancelRoutine> {
    let new = match routine {
        Some(f) => f as *mut c_void,
        None => ptr::null_mut(),
    };
    // SAFETY: `CancelRoutine` is a pointer-sized, pointer-aligned
    // `Option<fn>` (null = None), so it may be viewed as an `AtomicPtr`, which
    // is what the header's interlocked exchange does.
    let old = unsafe {
        let slot = (&raw mut (*irp).CancelRoutine).cast::<*mut c_void>();
        AtomicPtr::from_ptr(slot).swap(new, Ordering::SeqCst)
    };
    if old.is_null() {
        None
    } else {
        // SAFETY: a non-null value in this field was stored from a
        // `CancelRoutine` (by us or the I/O manager).
        Some(unsafe { core::mem::transmute::<*mut c_void, CancelRoutine>(old) })
    }
}

/// `Irp->Tail.Overlay.DriverContext[0]`, free for the owning driver once the
/// IRP has left the device queue (it overlaps `DeviceQueueEntry`).
/// Path `Tail.Overlay.__bindgen_anon_1.__bindgen_anon_1.DriverContext`: P (id 70901551084).
///
/// # Safety
/// `irp` must be live, owned by this driver, and out of the device queue.
pub unsafe fn set_driver_context(irp: *mut IRP, value: usize) {
    // SAFETY: see above; DriverContext is 4 PVOIDs of driver scratch space.
    unsafe {
        (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_1
            .__bindgen_anon_1
            .DriverContext[0] = value as PVOID;
    }
}

/// Read back [`set_driver_context`].
///
/// # Safety
/// As [`set_driver_context`].
pub unsafe fn driver_context(irp: *mut IRP) -> usize {
    // SAFETY: see `set_driver_context`.
    unsafe {
        (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_1
            .__bindgen_anon_1
            .DriverContext[0] as usize
    }
}

/// `&Irp->Tail.Overlay.DeviceQueueEntry`, for `KeRemoveEntryDeviceQueue` in
/// the cancel routine of a queued packet. Path (H):
/// `Tail.Overlay.__bindgen_anon_1.DeviceQueueEntry` — the sibling of the
/// confirmed `__bindgen_anon_1.__bindgen_anon_1.DriverContext`.
///
/// # Safety
/// `irp` must be live.
pub unsafe fn device_queue_entry(irp: *mut IRP) -> *mut KDEVICE_QUEUE_ENTRY {
    // SAFETY: only an address is formed.
    unsafe { &raw mut (*irp).Tail.Overlay.__bindgen_anon_1.DeviceQueueEntry }
}

/// `&DeviceObject->DeviceQueue.DeviceListHead` and `&...DeviceQueue.Lock`
/// (named C members): the StartIo queue a cleanup routine walks, holding
/// the cancel spin lock and then the queue's own lock.
///
/// # Safety
/// `device` must be a live device object.
pub unsafe fn device_queue_list(device: *mut DEVICE_OBJECT) -> (*mut LIST_ENTRY, *mut KSPIN_LOCK) {
    // SAFETY: only addresses are formed.
    unsafe {
        (
            &raw mut (*device).DeviceQueue.DeviceListHead,
            &raw mut (*device).DeviceQueue.Lock,
        )
    }
}

/// The IRP a device-queue link belongs to: `CONTAINING_RECORD(entry, IRP,
/// Tail.Overlay.DeviceQueueEntry.DeviceListEntry)` (the entry's first
/// member, so the offset of [`device_queue_entry`]).
///
/// # Safety
/// `entry` must be a link of a device queue (not its head).
pub unsafe fn irp_of_device_list_entry(entry: *mut LIST_ENTRY) -> *mut IRP {
    let probe = core::mem::MaybeUninit::<IRP>::uninit();
    let base = probe.as_ptr().cast_mut();
    // SAFETY: only the address of a field of an uninitialized IRP is formed.
    let offset = unsafe { device_queue_entry(base) } as usize - base as usize;
    entry.cast::<u8>().wrapping_sub(offset).cast::<IRP>()
}

/// `RemoveEntryList(&Irp->Tail.Overlay.DeviceQueueEntry.DeviceListEntry)`
/// (wdm.h inline) and `Inserted = FALSE`, as `KeRemoveEntryDeviceQueue`
/// does: for a caller that holds the queue's lock while it walks it.
///
/// # Safety
/// `irp` must be in the device queue whose lock the caller holds.
pub unsafe fn unlink_from_device_queue(irp: *mut IRP) {
    // SAFETY: a linked entry of a list whose lock is held.
    unsafe {
        let entry = device_queue_entry(irp);
        let link = &raw mut (*entry).DeviceListEntry;
        let (flink, blink) = ((*link).Flink, (*link).Blink);
        (*blink).Flink = flink;
        (*flink).Blink = blink;
        (*entry).Inserted = 0;
    }
}

/// `IoGetCurrentIrpStackLocation(Irp)->FileObject` (a named member): the
/// handle the request came on.
///
/// # Safety
/// `irp` must be live and owned by this driver.
pub unsafe fn irp_file_object(irp: *mut IRP) -> *mut FILE_OBJECT {
    // SAFETY: the caller's live IRP and its current location.
    unsafe { (*current_stack(irp)).FileObject }
}

/// `IoGetCurrentIrpStackLocation(Irp)->Parameters.DeviceIoControl`:
/// `(IoControlCode, InputBufferLength, OutputBufferLength)`; P (id 54554315463,
/// 3668005010) and the project reference.
///
/// # Safety
/// `stack` must be the live location of an `IRP_MJ_DEVICE_CONTROL` IRP.
pub unsafe fn device_io_control(stack: *mut IO_STACK_LOCATION) -> (u32, u32, u32) {
    // SAFETY: the DeviceIoControl arm is the active one for this major code.
    unsafe {
        let p = &(*stack).Parameters.DeviceIoControl;
        (p.IoControlCode, p.InputBufferLength, p.OutputBufferLength)
    }
}

/// `Parameters.Read.{ByteOffset.QuadPart, Length}` (project reference; P: id
/// 56294412101 builds `Parameters.Read` with `Length`, `Key`, `ByteOffset`).
///
/// # Safety
/// `stack` must be the live location of an `IRP_MJ_READ` IRP.
pub unsafe fn read_parameters(stack: *mut IO_STACK_LOCATION) -> (i64, u32) {
    // SAFETY: the Read arm is the active one for IRP_MJ_READ.
    unsafe {
        let p = &(*stack).Parameters.Read;
        (p.ByteOffset.QuadPart, p.Length)
    }
}

/// `Parameters.Write.{ByteOffset.QuadPart, Length}` (H: same shape as Read;
/// P: id 56294412101 assigns `stack.Parameters.Write`).
///
/// # Safety
/// `stack` must be the live location of an `IRP_MJ_WRITE` IRP.
pub unsafe fn write_parameters(stack: *mut IO_STACK_LOCATION) -> (i64, u32) {
    // SAFETY: the Write arm is the active one for IRP_MJ_WRITE.
    unsafe {
        let p = &(*stack).Parameters.Write;
        (p.ByteOffset.QuadPart, p.Length)
    }
}

/// `Parameters.StartDevice.AllocatedResourcesTranslated` (H; the C member is
/// named, seen in public copies of the IO_STACK_LOCATION layout).
///
/// # Safety
/// `stack` must be the live location of an `IRP_MN_START_DEVICE` IRP.
pub unsafe fn translated_resources(stack: *mut IO_STACK_LOCATION) -> *mut CM_RESOURCE_LIST {
    // SAFETY: the StartDevice arm is the active one for this minor code.
    unsafe { (*stack).Parameters.StartDevice.AllocatedResourcesTranslated }
}

/// Fill `Parameters.QueryInterface` of the next location (H: the C member
/// `QueryInterface { InterfaceType, Size, Version, Interface,
/// InterfaceSpecificData }`).
///
/// # Safety
/// `stack` must be the next location of an IRP the caller built, and the
/// pointers must outlive the request.
pub unsafe fn set_query_interface(
    stack: *mut IO_STACK_LOCATION,
    interface_type: *const GUID,
    interface: *mut BUS_INTERFACE_STANDARD,
) {
    // SAFETY: the caller built the IRP; writing the arm selects it.
    unsafe {
        let q = &mut (*stack).Parameters.QueryInterface;
        q.InterfaceType = interface_type;
        q.Size = size_of::<BUS_INTERFACE_STANDARD>() as u16;
        q.Version = 1;
        q.Interface = interface.cast::<INTERFACE>();
        q.InterfaceSpecificData = ptr::null_mut();
    }
}

// ---- MDLs ---------------------------------------------------------------------

/// `MmGetMdlByteCount` (wdm.h inline: `Mdl->ByteCount`; MDL fields are named
/// in C, H).
///
/// # Safety
/// `mdl` must be a live MDL.
pub unsafe fn mdl_byte_count(mdl: *mut MDL) -> u32 {
    // SAFETY: plain field read of a live MDL.
    unsafe { (*mdl).ByteCount }
}

/// The bytes an MDL chain describes: `ByteCount` of each MDL, through
/// `Next` (a named C member, H).
///
/// # Safety
/// `mdl` must be a live MDL whose chain is live.
pub unsafe fn mdl_chain_byte_count(mut mdl: *mut MDL) -> u64 {
    let mut total = 0u64;
    while !mdl.is_null() {
        // SAFETY: every MDL of a live chain is live.
        unsafe {
            total += u64::from(mdl_byte_count(mdl));
            mdl = (*mdl).Next;
        }
    }
    total
}

/// `MmGetMdlVirtualAddress` (wdm.h macro:
/// `(PVOID)((PCHAR)(Mdl)->StartVa + (Mdl)->ByteOffset)`; named C members,
/// H): the `CurrentVa` base of the version-1 routines, used as an index
/// into the MDL, never dereferenced.
///
/// # Safety
/// `mdl` must be a live MDL.
pub unsafe fn mdl_virtual_address(mdl: *mut MDL) -> usize {
    // SAFETY: plain field reads of a live MDL.
    unsafe { (*mdl).StartVa as usize + (*mdl).ByteOffset as usize }
}

/// The MDL of the chain `mdl` that holds byte `offset` of the chain, and
/// the byte's offset in it; `None` past the chain's end.
///
/// # Safety
/// `mdl` must be a live MDL whose chain is live.
pub unsafe fn mdl_at(mut mdl: *mut MDL, mut offset: u64) -> Option<(*mut MDL, u32)> {
    while !mdl.is_null() {
        // SAFETY: every MDL of a live chain is live.
        let bytes = u64::from(unsafe { mdl_byte_count(mdl) });
        if offset < bytes {
            return Some((mdl, offset as u32));
        }
        offset -= bytes;
        // SAFETY: as above; `Next` is a named C member (H).
        mdl = unsafe { (*mdl).Next };
    }
    None
}

/// `MDL_MAPPED_TO_SYSTEM_VA` (wdm.h; windows-sys's metadata has no MDL
/// flags to hold it to).
pub const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// `MDL_SOURCE_IS_NONPAGED_POOL` (wdm.h; as above).
pub const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;
/// `MdlMappingNoExecute` (wdm.h), or-ed into an `MM_PAGE_PRIORITY`.
pub const MDL_MAPPING_NO_EXECUTE: u32 = 0x4000_0000;

/// `MmGetSystemAddressForMdlSafe(Mdl, NormalPagePriority |
/// MdlMappingNoExecute)` (wdm.h inline: `MappedSystemVa` when the MDL is
/// mapped or describes nonpaged pool, else `MmMapLockedPagesSpecifyCache(Mdl,
/// KernelMode, MmCached, NULL, FALSE, Priority)`); null when the mapping
/// fails. `MdlFlags` and `MappedSystemVa` are named C members (H).
///
/// # Safety
/// `mdl` must be a live, locked MDL; `IRQL <= DISPATCH_LEVEL`.
pub unsafe fn system_address_for_mdl(mdl: *mut MDL) -> *mut u8 {
    // SAFETY: plain field reads of a live MDL.
    let flags = unsafe { (*mdl).MdlFlags };
    if flags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
        // SAFETY: as above.
        return unsafe { (*mdl).MappedSystemVa }.cast();
    }
    let priority = wdk_sys::_MM_PAGE_PRIORITY::NormalPagePriority as u32 | MDL_MAPPING_NO_EXECUTE;
    // SAFETY: a locked MDL at <= DISPATCH_LEVEL; FALSE: NULL on failure.
    unsafe {
        wdk_sys::ntddk::MmMapLockedPagesSpecifyCache(
            mdl,
            wdk_sys::_MODE::KernelMode as i8,
            wdk_sys::_MEMORY_CACHING_TYPE::MmCached,
            ptr::null_mut(),
            0,
            priority as wdk_sys::MM_PAGE_PRIORITY,
        )
    }
    .cast()
}

/// `KeFlushIoBuffers(Mdl, ReadOperation, DmaOperation = TRUE)`. wdm.h
/// defines it to nothing on x86 and x64, whose caches are coherent with
/// DMA: the Windows build of this driver (x64) has nothing to call.
///
/// # Safety
/// `mdl` must be a live, locked MDL.
#[cfg(windows)]
pub unsafe fn flush_io_buffers(_mdl: *mut MDL, _read_operation: bool) {}

#[cfg(not(windows))]
unsafe extern "C" {
    /// The simulator's `KeFlushIoBuffers` (host build only: it counts the
    /// call and checks its IRQL).
    #[link_name = "KeFlushIoBuffers"]
    fn host_ke_flush_io_buffers(mdl: *mut MDL, read_operation: u8, dma_operation: u8);
}

/// `KeFlushIoBuffers`, served by the simulator on a non-Windows host.
///
/// # Safety
/// As the Windows version.
#[cfg(not(windows))]
pub unsafe fn flush_io_buffers(mdl: *mut MDL, read_operation: bool) {
    // SAFETY: forwarded from the caller.
    unsafe { host_ke_flush_io_buffers(mdl, u8::from(read_operation), 1) }
}

// ---- resources ------------------------------------------------------------------

/// `CmResourceTypeDeviceSpecific` (wdm.h).
pub const CM_RESOURCE_TYPE_DEVICE_SPECIFIC: u8 = 5;

/// A translated `CmResourceTypeMemory` descriptor: `(start, length)`.
///
/// Paths `List[0].PartialResourceList.{Count, PartialDescriptors}`,
/// `u.Memory.{Start.QuadPart, Length}` and `u.DeviceSpecificData.DataSize`
/// (H; `u`, `Memory` and `DeviceSpecificData` are named C members,
/// `QuadPart` of PHYSICAL_ADDRESS is P: id 3668005010). The list and
/// descriptors are `#pragma pack(4)` structures with variable-length
/// arrays, and a descriptor of type `CmResourceTypeDeviceSpecific` is
/// followed by its `DataSize` bytes of data (Learn,
/// CM_PARTIAL_RESOURCE_DESCRIPTOR), so the next descriptor may be unaligned:
/// only raw pointers and unaligned by-value reads, never references.
///
/// # Safety
/// `list` must be null or a live resource list from the PnP manager.
pub unsafe fn first_memory_resource(list: *mut CM_RESOURCE_LIST) -> Option<(i64, u32)> {
    if list.is_null() {
        return None;
    }
    // SAFETY: the PnP manager's list has `Count` full descriptors; for a WDM
    // driver it is 1 (Learn, CM_RESOURCE_LIST), so `List[0]` is the only one
    // read; its partial list has `Count` entries laid out one after the
    // other, each device-specific one followed by its data.
    unsafe {
        if (&raw const (*list).Count).read_unaligned() == 0 {
            return None;
        }
        let full = (&raw mut (*list).List).cast::<wdk_sys::CM_FULL_RESOURCE_DESCRIPTOR>();
        let partial = &raw mut (*full).PartialResourceList;
        let count = (&raw const (*partial).Count).read_unaligned() as usize;
        let mut d =
            (&raw mut (*partial).PartialDescriptors).cast::<CM_PARTIAL_RESOURCE_DESCRIPTOR>();
        for _ in 0..count {
            let kind = (&raw const (*d).Type).read_unaligned();
            if kind == CM_RESOURCE_TYPE_MEMORY {
                let start = (&raw const (*d).u.Memory.Start.QuadPart).read_unaligned();
                let length = (&raw const (*d).u.Memory.Length).read_unaligned();
                return Some((start, length));
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

// ---- DMA ----------------------------------------------------------------------------

/// `DMA_TRANSFER_INFO.__bindgen_anon_1.V1` (H: `union { DMA_TRANSFER_INFO_V1
/// V1; DMA_TRANSFER_INFO_V2 V2; }` is the struct's only anonymous member):
/// `(MapRegisterCount, ScatterGatherElementCount, ScatterGatherListSize)`.
pub fn transfer_info_v1(info: &DMA_TRANSFER_INFO) -> (u32, u32, u32) {
    // SAFETY: Version 1 was requested, so the V1 arm is the one written.
    let v1 = unsafe { info.__bindgen_anon_1.V1 };
    (
        v1.MapRegisterCount,
        v1.ScatterGatherElementCount,
        v1.ScatterGatherListSize,
    )
}

/// The elements of a `SCATTER_GATHER_LIST` filled by `MapTransferEx`
/// (`NumberOfElements`, `Elements[]`; H, named C members). The flexible
/// array is reached through its address, whatever bindgen's field type.
///
/// # Safety
/// `list` must point to a list the HAL filled, inside a buffer of at least
/// the size `GetDmaTransferInfo` asked for.
pub unsafe fn sg_elements<'a>(list: *const SCATTER_GATHER_LIST) -> &'a [SCATTER_GATHER_ELEMENT] {
    // SAFETY: the HAL wrote `NumberOfElements` contiguous elements.
    unsafe {
        let n = (*list).NumberOfElements as usize;
        let first = (&raw const (*list).Elements).cast::<SCATTER_GATHER_ELEMENT>();
        core::slice::from_raw_parts(first, n)
    }
}

// ---- interrupts -----------------------------------------------------------------

/// Fill `IO_CONNECT_INTERRUPT_PARAMETERS` for `CONNECT_MESSAGE_BASED` with a
/// line-based fallback. Path `__bindgen_anon_1.MessageBased` (H: the struct's
/// only anonymous member is the union of FullySpecified/LineBased/
/// MessageBased) and `ConnectionContext.Generic` (H: a named union).
#[allow(clippy::too_many_arguments)]
pub fn message_based_parameters(
    pdo: *mut DEVICE_OBJECT,
    connection_context: *mut PVOID,
    message_isr: wdk_sys::PKMESSAGE_SERVICE_ROUTINE,
    line_isr: wdk_sys::PKSERVICE_ROUTINE,
    context: PVOID,
) -> IO_CONNECT_INTERRUPT_PARAMETERS {
    // SAFETY: an all-zero IO_CONNECT_INTERRUPT_PARAMETERS is valid (null
    // pointers, None routines, zero integers); the DDI asks callers to zero it.
    let mut p: IO_CONNECT_INTERRUPT_PARAMETERS = unsafe { core::mem::zeroed() };
    p.Version = CONNECT_MESSAGE_BASED;
    // SAFETY: writing the MessageBased arm selects it; nothing else is read.
    unsafe {
        let m = &mut p.__bindgen_anon_1.MessageBased;
        m.PhysicalDeviceObject = pdo;
        m.ConnectionContext.Generic = connection_context;
        m.MessageServiceRoutine = message_isr;
        m.ServiceContext = context;
        m.SpinLock = ptr::null_mut();
        m.SynchronizeIrql = 0;
        m.FloatingSave = 0;
        m.FallBackServiceRoutine = line_isr;
    }
    p
}

/// `IO_DISCONNECT_INTERRUPT_PARAMETERS` for the version `IoConnectInterruptEx`
/// returned. Path `ConnectionContext.Generic` (H: named union).
pub fn disconnect_parameters(
    version: u32,
    connection: PVOID,
) -> IO_DISCONNECT_INTERRUPT_PARAMETERS {
    // SAFETY: all-zero is a valid value of this C struct.
    let mut p: IO_DISCONNECT_INTERRUPT_PARAMETERS = unsafe { core::mem::zeroed() };
    p.Version = version;
    p.ConnectionContext.Generic = connection;
    p
}

/// The interrupt object of a connection, for `KeSynchronizeExecution`:
/// the `PKINTERRUPT` itself for a line-based one, the first (edu's only)
/// message's `MessageInfo[0].InterruptObject` of the
/// `IO_INTERRUPT_MESSAGE_INFO` a message-based one returns. Paths
/// `MessageCount`, `MessageInfo[0].InterruptObject` (H: named members).
///
/// # Safety
/// `connection` must be what `IoConnectInterruptEx` returned for `version`.
pub unsafe fn interrupt_object(version: u32, connection: PVOID) -> PKINTERRUPT {
    if version == CONNECT_LINE_BASED || connection.is_null() {
        return connection.cast();
    }
    let info = connection.cast::<wdk_sys::IO_INTERRUPT_MESSAGE_INFO>();
    // SAFETY: a message-based connection's context is its message info.
    unsafe {
        if (*info).MessageCount == 0 {
            return ptr::null_mut();
        }
        (*info).MessageInfo[0].InterruptObject
    }
}

/// The `PKINTERRUPT` type, re-exported for the ISR signature.
pub type Interrupt = PKINTERRUPT;

// ---- DPCs -----------------------------------------------------------------------

/// A `KDEFERRED_ROUTINE`: `(Dpc, DeferredContext, SystemArgument1, SystemArgument2)`.
pub type DeferredRoutine = unsafe extern "C" fn(*mut KDPC, PVOID, PVOID, PVOID);

/// `IoInitializeDpcRequest` (wdm.h inline): `KeInitializeDpc(&Dev->Dpc,
/// routine, Dev)`. `DEVICE_OBJECT.Dpc` is a named C member (H). The routine is
/// given in its `KDEFERRED_ROUTINE` shape, which is how the header calls it.
///
/// # Safety
/// `device` must be a live device object not yet in use.
pub unsafe fn initialize_dpc_request(device: *mut DEVICE_OBJECT, routine: DeferredRoutine) {
    // SAFETY: the DPC object lives in the nonpaged device object.
    unsafe { KeInitializeDpc(&raw mut (*device).Dpc, Some(routine), device.cast()) }
}

/// `IoRequestDpc` (wdm.h inline): `KeInsertQueueDpc(&Dev->Dpc, Irp, Context)`.
/// Callable at DIRQL.
///
/// # Safety
/// `device` must be a live device object whose DPC was initialized.
pub unsafe fn request_dpc(device: *mut DEVICE_OBJECT) {
    // SAFETY: see above; a DPC already queued is not queued twice (requests
    // collapse), which the engine is built for.
    unsafe {
        KeInsertQueueDpc(&raw mut (*device).Dpc, ptr::null_mut(), ptr::null_mut());
    }
}

// ---- registers ------------------------------------------------------------------
//
// The one seam between the Windows build and the simulator's host build. On
// Windows `READ_REGISTER_ULONG`/`WRITE_REGISTER_ULONG` are wdm.h inlines (on
// x64 a volatile access between compiler barriers, the write followed by a
// fence), written out here. On any other host they are calls to symbols of
// those names, which the simulator's kernel defines so that its edu model
// sees every MMIO access.

/// `READ_REGISTER_ULONG` (wdm.h inline on x64).
///
/// # Safety
/// `register` must be an aligned register inside a live uncached mapping.
#[cfg(windows)]
#[inline(always)]
pub unsafe fn read_register_ulong(register: *mut u32) -> u32 {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: forwarded from the caller.
    let value = unsafe { register.read_volatile() };
    compiler_fence(Ordering::SeqCst);
    value
}

/// `WRITE_REGISTER_ULONG` (wdm.h inline on x64).
///
/// # Safety
/// As [`read_register_ulong`].
#[cfg(windows)]
#[inline(always)]
pub unsafe fn write_register_ulong(register: *mut u32, value: u32) {
    compiler_fence(Ordering::SeqCst);
    // SAFETY: forwarded from the caller.
    unsafe { register.write_volatile(value) };
    fence(Ordering::SeqCst);
}

#[cfg(not(windows))]
unsafe extern "C" {
    /// The simulator's `READ_REGISTER_ULONG` (host build only).
    #[link_name = "READ_REGISTER_ULONG"]
    fn host_read_register_ulong(register: *mut u32) -> u32;
    /// The simulator's `WRITE_REGISTER_ULONG` (host build only).
    #[link_name = "WRITE_REGISTER_ULONG"]
    fn host_write_register_ulong(register: *mut u32, value: u32);
}

/// `READ_REGISTER_ULONG`, served by the simulator on a non-Windows host.
///
/// # Safety
/// `register` must be an aligned register inside a live mapping.
#[cfg(not(windows))]
pub unsafe fn read_register_ulong(register: *mut u32) -> u32 {
    // SAFETY: forwarded from the caller.
    unsafe { host_read_register_ulong(register) }
}

/// `WRITE_REGISTER_ULONG`, served by the simulator on a non-Windows host.
///
/// # Safety
/// As [`read_register_ulong`].
#[cfg(not(windows))]
pub unsafe fn write_register_ulong(register: *mut u32, value: u32) {
    // SAFETY: forwarded from the caller.
    unsafe { host_write_register_ulong(register, value) }
}

// ---- remove lock ----------------------------------------------------------------

/// The `sizeof(IO_REMOVE_LOCK)` argument every `*RemoveLockEx` export takes.
const REMOVE_LOCK_SIZE: u32 = size_of::<IO_REMOVE_LOCK>() as u32;
/// Pool tag for the remove lock ("edma").
const REMOVE_LOCK_TAG: u32 = u32::from_le_bytes(*b"edma");

/// `IoInitializeRemoveLock` (wdm.h macro → `IoInitializeRemoveLockEx`).
///
/// # Safety
/// `lock` must be nonpaged and not yet in use.
pub unsafe fn initialize_remove_lock(lock: *mut IO_REMOVE_LOCK) {
    // SAFETY: forwarded; 0/0 = no max-locked-minutes, no high watermark.
    unsafe { IoInitializeRemoveLockEx(lock, REMOVE_LOCK_TAG, 0, 0, REMOVE_LOCK_SIZE) }
}

/// `IoAcquireRemoveLock` (→ `IoAcquireRemoveLockEx(lock, tag, __FILE__, __LINE__, size)`).
///
/// # Safety
/// `lock` must be an initialized remove lock.
pub unsafe fn acquire_remove_lock(lock: *mut IO_REMOVE_LOCK, tag: PVOID) -> NTSTATUS {
    // SAFETY: forwarded; the file name is a static NUL-terminated string.
    unsafe { IoAcquireRemoveLockEx(lock, tag, c"edudma".as_ptr(), line!(), REMOVE_LOCK_SIZE) }
}

/// `IoReleaseRemoveLock` (→ `IoReleaseRemoveLockEx`).
///
/// # Safety
/// `tag` must have been acquired on `lock`.
pub unsafe fn release_remove_lock(lock: *mut IO_REMOVE_LOCK, tag: PVOID) {
    // SAFETY: forwarded.
    unsafe { IoReleaseRemoveLockEx(lock, tag, REMOVE_LOCK_SIZE) }
}

/// `IoReleaseRemoveLockAndWait` (→ `IoReleaseRemoveLockAndWaitEx`).
///
/// # Safety
/// PASSIVE_LEVEL, at `IRP_MN_REMOVE_DEVICE`, with `tag` acquired.
pub unsafe fn release_remove_lock_and_wait(lock: *mut IO_REMOVE_LOCK, tag: PVOID) {
    // SAFETY: forwarded.
    unsafe { IoReleaseRemoveLockAndWaitEx(lock, tag, REMOVE_LOCK_SIZE) }
}
