//! NTSTATUS values, with the real numbers from `ntstatus.h`.
//!
//! The engine speaks NTSTATUS so that the Windows glue can hand its decisions
//! to `IoCompleteRequest` unchanged, and the tool can print what the driver said.

use core::fmt;

/// A Windows NTSTATUS code.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtStatus(pub i32);

macro_rules! statuses {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl NtStatus {
            $($(#[$doc])* pub const $name: NtStatus = NtStatus($value as u32 as i32);)*

            /// The symbolic name of a known status, as in `ntstatus.h`.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 as u32 {
                    $($value => Some(concat!("STATUS_", stringify!($name))),)*
                    _ => None,
                }
            }
        }
    };
}

statuses! {
    /// The operation completed successfully.
    SUCCESS = 0x0000_0000u32;
    /// The operation is in progress; the IRP was marked pending.
    PENDING = 0x0000_0103u32;
    /// The data was too large for the buffer; part of it was returned.
    BUFFER_OVERFLOW = 0x8000_0005u32;
    /// The specified information record length does not match the length required.
    INFO_LENGTH_MISMATCH = 0xC000_0004u32;
    /// An invalid parameter was passed.
    INVALID_PARAMETER = 0xC000_000Du32;
    /// The device does not exist.
    NO_SUCH_DEVICE = 0xC000_000Eu32;
    /// The request is not valid for this device.
    INVALID_DEVICE_REQUEST = 0xC000_0010u32;
    /// The end of the file (the device window) was reached.
    END_OF_FILE = 0xC000_0011u32;
    /// A process has requested access to an object but has not been granted
    /// those access rights (here: an open of a name below the device).
    ACCESS_DENIED = 0xC000_0022u32;
    /// The buffer is too small to contain the entry.
    BUFFER_TOO_SMALL = 0xC000_0023u32;
    /// A file or device is being deleted: the device is being removed.
    DELETE_PENDING = 0xC000_0056u32;
    /// Insufficient system resources exist to complete the request.
    INSUFFICIENT_RESOURCES = 0xC000_009Au32;
    /// The device is not ready.
    DEVICE_NOT_READY = 0xC000_00A3u32;
    /// The I/O operation did not complete before its time-out period expired.
    IO_TIMEOUT = 0xC000_00B5u32;
    /// The request is not supported.
    NOT_SUPPORTED = 0xC000_00BBu32;
    /// The I/O request was cancelled.
    CANCELLED = 0xC000_0120u32;
    /// The device is not in a valid state to perform this request.
    INVALID_DEVICE_STATE = 0xC000_0184u32;
    /// The size of the buffer is invalid for the specified operation.
    INVALID_BUFFER_SIZE = 0xC000_0206u32;
    /// The device has been removed.
    DEVICE_REMOVED = 0xC000_02B6u32;
    /// The device is not configured as the driver needs it (here: Bus
    /// Master Enable could not be set again after a wake).
    DEVICE_CONFIGURATION_ERROR = 0xC000_0182u32;
    /// The hardware has reported an uncorrectable error.
    DEVICE_HARDWARE_ERROR = 0xC000_0483u32;
}

impl NtStatus {
    /// `NT_SUCCESS()`: success and informational values (severity 0 or 1).
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// `NT_ERROR()`: severity 3.
    pub const fn is_error(self) -> bool {
        (self.0 as u32) >> 30 == 3
    }

    /// The status as the unsigned number Windows prints (`0xC0000120`).
    pub const fn as_u32(self) -> u32 {
        self.0 as u32
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:08X})", self.as_u32()),
            None => write!(f, "NTSTATUS 0x{:08X}", self.as_u32()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_match_ntstatus_h() {
        assert_eq!(NtStatus::CANCELLED.as_u32(), 0xC000_0120);
        assert_eq!(NtStatus::INSUFFICIENT_RESOURCES.as_u32(), 0xC000_009A);
        assert_eq!(NtStatus::IO_TIMEOUT.as_u32(), 0xC000_00B5);
        assert_eq!(NtStatus::PENDING.0, 0x103);
    }

    #[test]
    fn severity_classes() {
        assert!(NtStatus::SUCCESS.is_success());
        assert!(NtStatus::PENDING.is_success());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_success());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_error());
        assert!(NtStatus::CANCELLED.is_error());
    }

    #[test]
    fn names_print() {
        extern crate std;
        use std::format;
        assert_eq!(
            format!("{}", NtStatus::CANCELLED),
            "STATUS_CANCELLED (0xC0000120)"
        );
        assert_eq!(format!("{}", NtStatus(0x1234)), "NTSTATUS 0x00001234");
    }
}
