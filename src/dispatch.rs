//! Create/Close/Cleanup and Read/Write/DeviceControl: core validation, then
//! either an immediate answer or `IoMarkIrpPending` + `IoStartPacket`.

use core::ptr;

use edudma_core::NtStatus;
use edudma_core::engine::StartRequest;
use edudma_core::ioctl::{self, ControlRequest, DeviceInfo, FileRequest, Stats};
use wdk_sys::ntddk::{
    IoAcquireCancelSpinLock, IoReleaseCancelSpinLock, IoStartPacket, KeAcquireSpinLockAtDpcLevel,
    KeReleaseSpinLockFromDpcLevel,
};
use wdk_sys::{
    DEVICE_OBJECT, FILE_OBJECT, IRP, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ, IRP_MJ_WRITE, KIRQL, MDL,
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_PENDING, STATUS_SUCCESS,
};

use crate::device::DeviceExtension;
use crate::dma_ops::MdlRef;
use crate::ffi;
use crate::startio::{complete_unstarted, deliver, queue_cancel};

/// What a Read/Write/DeviceControl IRP turns into, by the core's validation.
pub enum Classified {
    /// Queue for StartIo.
    Start(StartRequest<MdlRef>),
    /// A buffered control request answered now.
    Control(ControlRequest),
    /// Complete now with this status and information (not an error of the caller).
    Done(NtStatus, usize),
    /// Refused by validation.
    Rejected(NtStatus),
}

/// True when the MDL chain at `mdl` describes at least `length` bytes (a
/// driver above may hand down a chain; the I/O manager builds one MDL).
///
/// # Safety
/// `mdl` must be null or a live MDL chain.
unsafe fn has_buffer(mdl: *mut MDL, length: u32) -> bool {
    // SAFETY: a non-null MdlAddress of a live IRP is a live MDL chain.
    !mdl.is_null() && unsafe { ffi::mdl_chain_byte_count(mdl) } >= u64::from(length)
}

/// Translate an IRP into the core's request types. Pure: StartIo calls it
/// again for the same IRP and gets the same answer.
///
/// # Safety
/// `irp` must be a live Read/Write/DeviceControl IRP owned by this driver.
pub unsafe fn classify(ext: &DeviceExtension, irp: *mut IRP) -> Classified {
    // SAFETY: the caller owns the live IRP; every read below is of its
    // current stack location and of fields the I/O manager filled.
    unsafe {
        let stack = ffi::current_stack(irp);
        let mdl = (*irp).MdlAddress;
        let window = ext.window;
        let file = |r: Result<FileRequest, ioctl::RequestError>| match r {
            Ok(FileRequest::Dma(request)) => Classified::Start(StartRequest::Dma {
                request,
                mdl: MdlRef(mdl),
            }),
            Ok(FileRequest::Empty) => Classified::Done(NtStatus::SUCCESS, 0),
            Ok(FileRequest::EndOfFile) => Classified::Done(NtStatus::END_OF_FILE, 0),
            Err(e) => Classified::Rejected(e.status()),
        };
        match u32::from((*stack).MajorFunction) {
            IRP_MJ_READ => {
                let (offset, length) = ffi::read_parameters(stack);
                file(ioctl::validate_read(
                    offset,
                    length,
                    has_buffer(mdl, length),
                    window,
                ))
            }
            IRP_MJ_WRITE => {
                let (offset, length) = ffi::write_parameters(stack);
                file(ioctl::validate_write(
                    offset,
                    length,
                    has_buffer(mdl, length),
                    window,
                ))
            }
            IRP_MJ_DEVICE_CONTROL => {
                let (code, input_length, output_length) = ffi::device_io_control(stack);
                let system_buffer = (*irp).AssociatedIrp.SystemBuffer.cast::<u8>();
                let input: &[u8] = if input_length == 0 || system_buffer.is_null() {
                    &[]
                } else {
                    core::slice::from_raw_parts(system_buffer, input_length as usize)
                };
                let has_mdl = has_buffer(mdl, output_length);
                match ioctl::validate_control(code, input, output_length, has_mdl, window) {
                    Ok(ControlRequest::Dma(request)) => Classified::Start(StartRequest::Dma {
                        request,
                        mdl: MdlRef(mdl),
                    }),
                    Ok(ControlRequest::SelfTest) => Classified::Start(StartRequest::SelfTest),
                    Ok(other) => Classified::Control(other),
                    Err(e) => Classified::Rejected(e.status()),
                }
            }
            _ => Classified::Rejected(NtStatus::INVALID_DEVICE_REQUEST),
        }
    }
}

/// `IRP_MJ_CREATE`: nothing to set up per handle; access is restricted by
/// the device's security descriptor (INF `Security`). The device has no
/// namespace: an open of a name below it (`<interface path>\anything`,
/// a non-empty `FileObject->FileName`) is refused.
pub unsafe extern "C" fn dispatch_create(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the create IRP's own stack location and file object.
    let status = if unsafe { ffi::create_file_name_length(ffi::current_stack(irp)) } == 0 {
        STATUS_SUCCESS
    } else {
        STATUS_ACCESS_DENIED
    };
    // SAFETY: the I/O manager hands us the IRP; we complete it once.
    unsafe { ffi::complete_irp(irp, status, 0) };
    status
}

/// `IRP_MJ_CLOSE`: nothing to tear down per handle.
pub unsafe extern "C" fn dispatch_close(_device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: the I/O manager hands us the IRP; we complete it once.
    unsafe { ffi::complete_irp(irp, STATUS_SUCCESS, 0) };
    STATUS_SUCCESS
}

/// Take the first packet of `file` out of the device queue, its cancel
/// routine cleared, under the cancel spin lock and the queue's lock (the
/// order `IoStartPacket` takes them in). PASSIVE_LEVEL.
///
/// # Safety
/// `device` is our FDO.
unsafe fn dequeue_one_of(device: *mut DEVICE_OBJECT, file: *mut FILE_OBJECT) -> Option<*mut IRP> {
    let mut irql: KIRQL = 0;
    // SAFETY: the queue of our live FDO, walked while both locks are held:
    // nothing inserts, removes or cancels meanwhile.
    unsafe {
        let (head, lock) = ffi::device_queue_list(device);
        IoAcquireCancelSpinLock(&mut irql);
        KeAcquireSpinLockAtDpcLevel(lock);
        let mut found = None;
        let mut entry = (*head).Flink;
        while entry != head {
            let queued = ffi::irp_of_device_list_entry(entry);
            if ffi::irp_file_object(queued) == file {
                ffi::unlink_from_device_queue(queued);
                // Cancel spin lock held: no IoCancelIrp is taking it now,
                // and none will call it once it is cleared.
                let _ = ffi::set_cancel_routine(queued, None);
                found = Some(queued);
                break;
            }
            entry = (*entry).Flink;
        }
        KeReleaseSpinLockFromDpcLevel(lock);
        IoReleaseCancelSpinLock(irql);
        found
    }
}

/// `IRP_MJ_CLEANUP`: the last handle of a file object closed. Learn
/// (DispatchCleanup Routines): every IRP of that file object in the device
/// queue is completed as cancelled; a request of it the engine is working
/// on gets the cancel event.
pub unsafe extern "C" fn dispatch_cleanup(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: `device` is our FDO.
    let ext = unsafe { DeviceExtension::from_device(device) };
    // SAFETY: the cleanup IRP is live and ours.
    let file = unsafe { (*ffi::current_stack(irp)).FileObject };
    // SAFETY: PASSIVE_LEVEL; our FDO. Each packet taken out of the queue is
    // ours to complete (its remove-lock reference was taken in dispatch).
    while let Some(queued) = unsafe { dequeue_one_of(device, file) } {
        // SAFETY: as above.
        unsafe { complete_unstarted(ext, queued, NtStatus::CANCELLED, 0) };
    }
    let completion = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        match shared.engine.current_request() {
            // SAFETY: the engine's current request is live until the engine
            // hands out its completion, which needs this lock.
            Some(id) if unsafe { (*ffi::current_stack(id.irp)).FileObject } == file => {
                shared.engine.cancel(id, &mut regs)
            }
            _ => None,
        }
    };
    if let Some(c) = completion {
        deliver(ext, c);
    }
    // SAFETY: the cleanup IRP is ours to complete once.
    unsafe { ffi::complete_irp(irp, STATUS_SUCCESS, 0) };
    STATUS_SUCCESS
}

/// `IRP_MJ_READ`, `IRP_MJ_WRITE` and `IRP_MJ_DEVICE_CONTROL`.
pub unsafe extern "C" fn dispatch_io(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: `device` is our FDO.
    let ext = unsafe { DeviceExtension::from_device(device) };
    // SAFETY: an initialized remove lock; the IRP is the tag.
    let status = unsafe { ffi::acquire_remove_lock(ext.remove_lock(), irp.cast()) };
    if status < 0 {
        // SAFETY: the IRP is ours; the lock was not acquired.
        unsafe { ffi::complete_irp(irp, status, 0) };
        return status;
    }
    // SAFETY: a live IRP of one of the three major codes.
    match unsafe { classify(ext, irp) } {
        Classified::Start(_) => {
            // SAFETY: mark pending before queuing; the packet may complete
            // before IoStartPacket returns, which STATUS_PENDING allows.
            unsafe {
                ffi::mark_irp_pending(irp);
                IoStartPacket(device, irp, ptr::null_mut(), Some(queue_cancel));
            }
            STATUS_PENDING
        }
        Classified::Control(request) => {
            // SAFETY: a live buffered IRP whose output size was validated.
            let (status, information) = unsafe { answer_now(ext, irp, request) };
            // SAFETY: ours, with the remove lock held.
            unsafe { complete_unstarted(ext, irp, status, information) };
            status.0
        }
        Classified::Done(status, information) => {
            // SAFETY: as above.
            unsafe { complete_unstarted(ext, irp, status, information) };
            status.0
        }
        Classified::Rejected(status) => {
            ext.lock().engine.record_rejected();
            // SAFETY: as above.
            unsafe { complete_unstarted(ext, irp, status, 0) };
            status.0
        }
    }
}

/// Answer a buffered control request from the engine's state. The engine
/// lock is released before the output buffer is written.
///
/// # Safety
/// `irp` must be a live METHOD_BUFFERED IRP whose output length the core
/// validated for `request`.
unsafe fn answer_now(
    ext: &DeviceExtension,
    irp: *mut IRP,
    request: ControlRequest,
) -> (NtStatus, usize) {
    // SAFETY: METHOD_BUFFERED: SystemBuffer holds max(in, out) bytes.
    let output = unsafe { (*irp).AssociatedIrp.SystemBuffer };
    match request {
        ControlRequest::GetInfo => {
            let info = ext.lock().engine.device_info();
            // SAFETY: the output length was checked >= size_of::<DeviceInfo>().
            unsafe { ptr::write_unaligned(output.cast::<DeviceInfo>(), info) };
            (NtStatus::SUCCESS, size_of::<DeviceInfo>())
        }
        ControlRequest::GetStats => {
            let stats = ext.lock().engine.stats();
            // SAFETY: the output length was checked >= size_of::<Stats>().
            unsafe { ptr::write_unaligned(output.cast::<Stats>(), stats) };
            (NtStatus::SUCCESS, size_of::<Stats>())
        }
        ControlRequest::ResetStats => {
            ext.lock().engine.reset_stats();
            (NtStatus::SUCCESS, 0)
        }
        // Classified as Start, never here.
        ControlRequest::SelfTest | ControlRequest::Dma(_) => (NtStatus::INVALID_DEVICE_REQUEST, 0),
    }
}
