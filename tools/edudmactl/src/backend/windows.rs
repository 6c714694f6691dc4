//! The Windows backend: the installed driver's device, through `windows-sys`.
//!
//! The device is opened for overlapped I/O (`FILE_FLAG_OVERLAPPED`), so that
//! `bench --queue-depth N` can keep N requests in flight: each request lives
//! in a [`Slot`] (its `OVERLAPPED` at a fixed address, a manual-reset event,
//! its buffers), is started with `DeviceIoControl`/`ReadFile`/`WriteFile`
//! and finished with `GetOverlappedResult`. The one-at-a-time calls are the
//! same start followed at once by the wait. The `OVERLAPPED` of a read or
//! write also carries its byte offset, which the I/O manager hands the
//! driver as `Parameters.Read.ByteOffset`.

use std::ffi::c_void;
use std::ptr;

use edudma_core::ioctl::{
    DEVICE_INTERFACE_NAME, GUID_DEVINTERFACE_EDUDMA, METHOD_IN_DIRECT, method_of,
};
use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    CM_GET_DEVICE_INTERFACE_LIST_PRESENT, CM_Get_Device_Interface_List_SizeW,
    CM_Get_Device_Interface_ListW, CR_BUFFER_SMALL, CR_SUCCESS,
};
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_IO_PENDING, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE,
    INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE,
    OPEN_EXISTING, ReadFile, WriteFile,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, DeviceIoControl, GetOverlappedResult, OVERLAPPED,
};
use windows_sys::Win32::System::Threading::CreateEventW;
use windows_sys::core::GUID;

use super::win32_status::{
    ERROR_ACCESS_DENIED, ERROR_BUSY, ERROR_DEVICE_NOT_CONNECTED, ERROR_FILE_NOT_FOUND,
    ERROR_HANDLE_EOF, ERROR_PATH_NOT_FOUND, ERROR_SHARING_VIOLATION, ntstatus_from_win32,
};
use super::{Backend, BackendDescription, Completed, Queued, Ticket};
use crate::error::{Error, Result};

/// The interface class GUID as `windows-sys` spells it.
fn interface_guid() -> GUID {
    let (data1, data2, data3, data4) = GUID_DEVINTERFACE_EDUDMA;
    GUID {
        data1,
        data2,
        data3,
        data4,
    }
}

/// `path` as a NUL-terminated UTF-16 string.
fn wide(path: &str) -> Vec<u16> {
    path.encode_utf16().chain(std::iter::once(0)).collect()
}

/// The first present device interface of `GUID_DEVINTERFACE_EDUDMA`, if any.
fn find_interface_path() -> Option<String> {
    let guid = interface_guid();
    // The list can grow between the size query and the fetch; retry a few times.
    for _ in 0..4 {
        let mut len: u32 = 0;
        // SAFETY: `len` and `guid` are valid for the call; a null device ID asks for all devices.
        let cr = unsafe {
            CM_Get_Device_Interface_List_SizeW(
                &mut len,
                &guid,
                ptr::null(),
                CM_GET_DEVICE_INTERFACE_LIST_PRESENT,
            )
        };
        if cr != CR_SUCCESS || len <= 1 {
            return None;
        }
        let mut buffer = vec![0u16; len as usize];
        // SAFETY: `buffer` holds `len` UTF-16 units, as the call is told.
        let cr = unsafe {
            CM_Get_Device_Interface_ListW(
                &guid,
                ptr::null(),
                buffer.as_mut_ptr(),
                len,
                CM_GET_DEVICE_INTERFACE_LIST_PRESENT,
            )
        };
        if cr == CR_BUFFER_SMALL {
            continue;
        }
        if cr != CR_SUCCESS {
            return None;
        }
        // A multi-string: the first entry ends at the first NUL.
        let end = buffer.iter().position(|&c| c == 0).unwrap_or(buffer.len());
        if end == 0 {
            return None;
        }
        return Some(String::from_utf16_lossy(&buffer[..end]));
    }
    None
}

/// `GetLastError()`.
fn last_error() -> u32 {
    // SAFETY: GetLastError has no preconditions.
    unsafe { GetLastError() }
}

/// What a slot's request is.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// `DeviceIoControl` with this code (`input` in, `buffer` out).
    Control(u32),
    /// `ReadFile` into `buffer` at this byte offset.
    Read(u64),
    /// `WriteFile` of `buffer` at this byte offset.
    Write(u64),
}

/// The home of one overlapped request: everything the I/O manager may
/// touch until the request completes stays here, at a fixed address.
struct Slot {
    /// Boxed: the I/O manager writes it at completion, wherever the
    /// backend's slot vector has moved to.
    overlapped: Box<OVERLAPPED>,
    /// Manual-reset event the request signals (the I/O manager clears it
    /// when the request starts).
    event: HANDLE,
    input: Vec<u8>,
    /// A `Vec`'s bytes stay put when the `Vec` itself moves.
    buffer: Vec<u8>,
    op: Op,
    /// The request in flight here, if any.
    ticket: Option<Ticket>,
}

/// An open handle to the driver's device.
pub struct WindowsBackend {
    handle: HANDLE,
    path: String,
    slots: Vec<Slot>,
    next_ticket: u64,
}

impl WindowsBackend {
    /// Open `path`, or the driver's device interface (the device has no
    /// other name).
    pub fn open(path: Option<&str>) -> Result<Self> {
        let path = match path {
            Some(path) => path.to_owned(),
            None => find_interface_path().ok_or_else(|| Error::DeviceNotFound {
                path: format!("any present {DEVICE_INTERFACE_NAME} interface"),
            })?,
        };
        let name = wide(&path);
        // SAFETY: `name` is NUL-terminated and outlives the call; no security
        // attributes or template handle are passed.
        let handle = unsafe {
            CreateFileW(
                name.as_ptr(),
                GENERIC_READ | GENERIC_WRITE,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                ptr::null(),
                OPEN_EXISTING,
                FILE_ATTRIBUTE_NORMAL | FILE_FLAG_OVERLAPPED,
                ptr::null_mut(),
            )
        };
        if handle == INVALID_HANDLE_VALUE {
            return Err(match last_error() {
                ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND | ERROR_DEVICE_NOT_CONNECTED => {
                    Error::DeviceNotFound { path }
                }
                ERROR_ACCESS_DENIED => Error::AccessDenied { path },
                ERROR_SHARING_VIOLATION | ERROR_BUSY => Error::DeviceBusy { path },
                code => Error::Os {
                    operation: format!("opening {path}"),
                    code,
                },
            });
        }
        Ok(Self {
            handle,
            path,
            slots: Vec::new(),
            next_ticket: 1,
        })
    }

    /// The error for a failed request, the driver's status when it can be recovered.
    fn request_error(&self, operation: &'static str, code: u32) -> Error {
        match ntstatus_from_win32(code) {
            Some(status) => Error::Driver { operation, status },
            None if code == ERROR_ACCESS_DENIED => Error::AccessDenied {
                path: self.path.clone(),
            },
            None => Error::Os {
                operation: operation.to_owned(),
                code,
            },
        }
    }

    /// A slot with no request in flight (a new one when all are busy).
    fn free_slot(&mut self) -> Result<usize> {
        if let Some(index) = self.slots.iter().position(|slot| slot.ticket.is_none()) {
            return Ok(index);
        }
        // SAFETY: no security attributes and no name; manual reset, not signalled.
        let event = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
        if event.is_null() {
            return Err(Error::Os {
                operation: "CreateEventW for an overlapped request".into(),
                code: last_error(),
            });
        }
        self.slots.push(Slot {
            overlapped: Box::default(),
            event,
            input: Vec::new(),
            buffer: Vec::new(),
            op: Op::Control(0),
            ticket: None,
        });
        Ok(self.slots.len() - 1)
    }

    /// Start the request of slot `index` (its buffers and `op` set):
    /// `Err` with the Win32 error when it failed at once.
    fn start(&mut self, index: usize) -> std::result::Result<(), u32> {
        let handle = self.handle;
        let slot = &mut self.slots[index];
        let in_len = u32::try_from(slot.input.len()).map_err(|_| ERROR_INVALID_LENGTH)?;
        let out_len = u32::try_from(slot.buffer.len()).map_err(|_| ERROR_INVALID_LENGTH)?;
        let offset = match slot.op {
            Op::Control(_) => 0,
            Op::Read(offset) | Op::Write(offset) => offset,
        };
        *slot.overlapped = at_offset(offset);
        slot.overlapped.hEvent = slot.event;
        let overlapped: *mut OVERLAPPED = &mut *slot.overlapped;
        let ok = match slot.op {
            Op::Control(code) => {
                let in_ptr = if slot.input.is_empty() {
                    ptr::null()
                } else {
                    slot.input.as_ptr().cast::<c_void>()
                };
                let out_ptr = if slot.buffer.is_empty() {
                    ptr::null_mut()
                } else {
                    slot.buffer.as_mut_ptr().cast::<c_void>()
                };
                // SAFETY: the handle is open for overlapped I/O; both buffers and
                // the OVERLAPPED live in the slot, untouched until the request
                // completes (`finish` or the backend's drop waits for it).
                unsafe {
                    DeviceIoControl(
                        handle,
                        code,
                        in_ptr,
                        in_len,
                        out_ptr,
                        out_len,
                        ptr::null_mut(),
                        overlapped,
                    )
                }
            }
            // SAFETY: as above; `buffer` is valid for `out_len` bytes.
            Op::Read(_) => unsafe {
                ReadFile(
                    handle,
                    slot.buffer.as_mut_ptr(),
                    out_len,
                    ptr::null_mut(),
                    overlapped,
                )
            },
            // SAFETY: as above.
            Op::Write(_) => unsafe {
                WriteFile(
                    handle,
                    slot.buffer.as_ptr(),
                    out_len,
                    ptr::null_mut(),
                    overlapped,
                )
            },
        };
        if ok == 0 {
            let code = last_error();
            if code != ERROR_IO_PENDING {
                return Err(code);
            }
        }
        Ok(())
    }

    /// Wait for the request of slot `index`: the bytes it moved, or its
    /// Win32 error.
    fn finish(&mut self, index: usize) -> std::result::Result<usize, u32> {
        let mut moved: u32 = 0;
        // SAFETY: the slot's OVERLAPPED of a request started on this handle;
        // waiting (bWait TRUE) returns once the I/O manager is done with it.
        let ok = unsafe {
            GetOverlappedResult(self.handle, &*self.slots[index].overlapped, &mut moved, 1)
        };
        if ok == 0 {
            return Err(last_error());
        }
        Ok(moved as usize)
    }

    /// One request, waited for: `buffer` back with the bytes moved.
    fn call(
        &mut self,
        op: Op,
        input: &[u8],
        buffer: Vec<u8>,
    ) -> std::result::Result<(usize, Vec<u8>), u32> {
        let index = self.free_slot().map_err(|_| last_error())?;
        let slot = &mut self.slots[index];
        slot.op = op;
        slot.input.clear();
        slot.input.extend_from_slice(input);
        slot.buffer = buffer;
        let result = self.start(index).and_then(|()| self.finish(index));
        let buffer = std::mem::take(&mut self.slots[index].buffer);
        result.map(|moved| (moved, buffer))
    }
}

/// `ERROR_INVALID_LENGTH`: a buffer longer than a `DWORD` counts.
const ERROR_INVALID_LENGTH: u32 = 24;

/// An `OVERLAPPED` that carries a byte offset.
fn at_offset(offset: u64) -> OVERLAPPED {
    let mut overlapped = OVERLAPPED::default();
    overlapped.Anonymous.Anonymous.Offset = offset as u32;
    overlapped.Anonymous.Anonymous.OffsetHigh = (offset >> 32) as u32;
    overlapped
}

/// A buffer length as the `u32` Win32 wants, or a usage error.
fn length(len: usize) -> Result<u32> {
    u32::try_from(len).map_err(|_| {
        Error::Usage(format!(
            "{len} bytes is too long for one request: use at most 4096"
        ))
    })
}

impl Backend for WindowsBackend {
    fn describe(&self) -> BackendDescription {
        BackendDescription::Device {
            path: self.path.clone(),
        }
    }

    fn device_control(&mut self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize> {
        length(input.len())?;
        length(output.len())?;
        let (returned, buffer) = self
            .call(Op::Control(code), input, output.to_vec())
            .map_err(|error| self.request_error(operation_name(code), error))?;
        output.copy_from_slice(&buffer);
        Ok(returned)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        length(buf.len())?;
        match self.call(Op::Read(offset), &[], vec![0; buf.len()]) {
            Ok((read, data)) => {
                let read = read.min(buf.len());
                buf[..read].copy_from_slice(&data[..read]);
                Ok(read)
            }
            // A read at the end of the window is end of file, not an error.
            Err(ERROR_HANDLE_EOF) => Ok(0),
            Err(code) => Err(self.request_error("ReadFile", code)),
        }
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<usize> {
        length(data.len())?;
        self.call(Op::Write(offset), &[], data.to_vec())
            .map(|(written, _)| written)
            .map_err(|code| self.request_error("WriteFile", code))
    }

    fn submit(&mut self, request: Queued) -> Result<Ticket> {
        length(request.input.len())?;
        length(request.buffer.len())?;
        let index = self.free_slot()?;
        let slot = &mut self.slots[index];
        slot.op = Op::Control(request.code);
        slot.input = request.input;
        slot.buffer = request.buffer;
        if let Err(code) = self.start(index) {
            return Err(self.request_error(operation_name(request.code), code));
        }
        let ticket = Ticket(self.next_ticket);
        self.next_ticket += 1;
        self.slots[index].ticket = Some(ticket);
        Ok(ticket)
    }

    fn complete(&mut self, ticket: Ticket) -> Result<Completed> {
        let Some(index) = self.slots.iter().position(|s| s.ticket == Some(ticket)) else {
            return Err(Error::Protocol(format!(
                "no request in flight has ticket {}",
                ticket.0
            )));
        };
        let result = self.finish(index);
        let slot = &mut self.slots[index];
        slot.ticket = None;
        let code = match slot.op {
            Op::Control(code) => code,
            Op::Read(_) | Op::Write(_) => 0,
        };
        let mut buffer = std::mem::take(&mut slot.buffer);
        let information =
            result.map_err(|error| self.request_error(operation_name(code), error))?;
        let output = if method_of(code) == METHOD_IN_DIRECT {
            Vec::new()
        } else {
            buffer.truncate(information);
            buffer
        };
        Ok(Completed {
            information,
            output,
        })
    }
}

/// A readable name of a control code, for error messages.
fn operation_name(code: u32) -> &'static str {
    crate::device::operation_name(code)
}

impl Drop for WindowsBackend {
    fn drop(&mut self) {
        for slot in &self.slots {
            if slot.ticket.is_some() {
                let mut moved: u32 = 0;
                // SAFETY: a request started on this handle with this OVERLAPPED:
                // cancel it and wait until the I/O manager is done with the
                // slot's buffers before they are freed.
                unsafe {
                    CancelIoEx(self.handle, &*slot.overlapped);
                    GetOverlappedResult(self.handle, &*slot.overlapped, &mut moved, 1);
                }
            }
            // SAFETY: the event came from CreateEventW and is closed exactly once.
            unsafe {
                CloseHandle(slot.event);
            }
        }
        // SAFETY: the handle came from CreateFileW and is closed exactly once.
        unsafe {
            CloseHandle(self.handle);
        }
    }
}
