//! The Windows backend: the installed driver's device, through `windows-sys`.
//!
//! The device is opened synchronously (no `FILE_FLAG_OVERLAPPED`); reads and
//! writes still pass an `OVERLAPPED` to carry the byte offset, which the I/O
//! manager hands the driver as `Parameters.Read.ByteOffset`.

use std::ffi::c_void;
use std::ptr;

use edudma_core::ioctl::{DEVICE_INTERFACE_NAME, GUID_DEVINTERFACE_EDUDMA};
use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    CM_GET_DEVICE_INTERFACE_LIST_PRESENT, CM_Get_Device_Interface_List_SizeW,
    CM_Get_Device_Interface_ListW, CR_BUFFER_SMALL, CR_SUCCESS,
};
use windows_sys::Win32::Foundation::{
    CloseHandle, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE, INVALID_HANDLE_VALUE,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING, ReadFile,
    WriteFile,
};
use windows_sys::Win32::System::IO::{DeviceIoControl, OVERLAPPED};
use windows_sys::core::GUID;

use super::win32_status::{
    ERROR_ACCESS_DENIED, ERROR_BUSY, ERROR_DEVICE_NOT_CONNECTED, ERROR_FILE_NOT_FOUND,
    ERROR_HANDLE_EOF, ERROR_PATH_NOT_FOUND, ERROR_SHARING_VIOLATION, ntstatus_from_win32,
};
use super::{Backend, BackendDescription};
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

/// An open handle to the driver's device.
pub struct WindowsBackend {
    handle: HANDLE,
    path: String,
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
                FILE_ATTRIBUTE_NORMAL,
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
        Ok(Self { handle, path })
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
}

/// An `OVERLAPPED` that only carries a byte offset.
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
        let in_len = length(input.len())?;
        let out_len = length(output.len())?;
        let in_ptr = if input.is_empty() {
            ptr::null()
        } else {
            input.as_ptr().cast::<c_void>()
        };
        let out_ptr = if output.is_empty() {
            ptr::null_mut()
        } else {
            output.as_mut_ptr().cast::<c_void>()
        };
        let mut returned: u32 = 0;
        // SAFETY: the handle is open and synchronous; both buffers are valid for the
        // lengths passed and outlive the call, which completes before returning.
        let ok = unsafe {
            DeviceIoControl(
                self.handle,
                code,
                in_ptr,
                in_len,
                out_ptr,
                out_len,
                &mut returned,
                ptr::null_mut(),
            )
        };
        if ok == 0 {
            return Err(self.request_error(operation_name(code), last_error()));
        }
        Ok(returned as usize)
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let len = length(buf.len())?;
        let mut overlapped = at_offset(offset);
        let mut read: u32 = 0;
        // SAFETY: the handle is synchronous, so ReadFile completes before returning;
        // `buf` is valid for `len` bytes and `overlapped` lives across the call.
        let ok = unsafe {
            ReadFile(
                self.handle,
                buf.as_mut_ptr(),
                len,
                &mut read,
                &mut overlapped,
            )
        };
        if ok == 0 {
            let code = last_error();
            // A read at the end of the window is end of file, not an error.
            if code == ERROR_HANDLE_EOF {
                return Ok(0);
            }
            return Err(self.request_error("ReadFile", code));
        }
        Ok(read as usize)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<usize> {
        let len = length(data.len())?;
        let mut overlapped = at_offset(offset);
        let mut written: u32 = 0;
        // SAFETY: as in `read_at`; `data` is valid for `len` bytes.
        let ok = unsafe {
            WriteFile(
                self.handle,
                data.as_ptr(),
                len,
                &mut written,
                &mut overlapped,
            )
        };
        if ok == 0 {
            return Err(self.request_error("WriteFile", last_error()));
        }
        Ok(written as usize)
    }
}

/// A readable name of a control code, for error messages.
fn operation_name(code: u32) -> &'static str {
    crate::device::operation_name(code)
}

impl Drop for WindowsBackend {
    fn drop(&mut self) {
        // SAFETY: the handle came from CreateFileW and is closed exactly once.
        unsafe {
            CloseHandle(self.handle);
        }
    }
}
