//! Win32 errors back to the driver's NTSTATUS.
//!
//! `DeviceIoControl`, `ReadFile` and `WriteFile` do not return the status the
//! driver completed the IRP with: the I/O manager translates it
//! (`RtlNtStatusToDosError`) and the caller sees a Win32 error from
//! `GetLastError`. The translation loses information, so this module maps the
//! Win32 errors our driver's statuses produce back to those statuses. The
//! table is platform-neutral so it is tested on every host.

use edudma_core::NtStatus;

/// `ERROR_INVALID_FUNCTION`.
pub const ERROR_INVALID_FUNCTION: u32 = 1;
/// `ERROR_FILE_NOT_FOUND`.
pub const ERROR_FILE_NOT_FOUND: u32 = 2;
/// `ERROR_PATH_NOT_FOUND`.
pub const ERROR_PATH_NOT_FOUND: u32 = 3;
/// `ERROR_ACCESS_DENIED`.
pub const ERROR_ACCESS_DENIED: u32 = 5;
/// `ERROR_NOT_READY`.
pub const ERROR_NOT_READY: u32 = 21;
/// `ERROR_BAD_COMMAND`.
pub const ERROR_BAD_COMMAND: u32 = 22;
/// `ERROR_BAD_LENGTH`.
pub const ERROR_BAD_LENGTH: u32 = 24;
/// `ERROR_SHARING_VIOLATION`.
pub const ERROR_SHARING_VIOLATION: u32 = 32;
/// `ERROR_HANDLE_EOF`.
pub const ERROR_HANDLE_EOF: u32 = 38;
/// `ERROR_NOT_SUPPORTED`.
pub const ERROR_NOT_SUPPORTED: u32 = 50;
/// `ERROR_INVALID_PARAMETER`.
pub const ERROR_INVALID_PARAMETER: u32 = 87;
/// `ERROR_SEM_TIMEOUT`.
pub const ERROR_SEM_TIMEOUT: u32 = 121;
/// `ERROR_INSUFFICIENT_BUFFER`.
pub const ERROR_INSUFFICIENT_BUFFER: u32 = 122;
/// `ERROR_BUSY`.
pub const ERROR_BUSY: u32 = 170;
/// `ERROR_MORE_DATA`.
pub const ERROR_MORE_DATA: u32 = 234;
/// `ERROR_OPERATION_ABORTED`.
pub const ERROR_OPERATION_ABORTED: u32 = 995;
/// `ERROR_IO_DEVICE`.
pub const ERROR_IO_DEVICE: u32 = 1117;
/// `ERROR_DEVICE_NOT_CONNECTED`.
pub const ERROR_DEVICE_NOT_CONNECTED: u32 = 1167;
/// `ERROR_NOT_ENOUGH_MEMORY`.
pub const ERROR_NOT_ENOUGH_MEMORY: u32 = 8;
/// `ERROR_NO_SYSTEM_RESOURCES`.
pub const ERROR_NO_SYSTEM_RESOURCES: u32 = 1450;
/// `ERROR_WORKING_SET_QUOTA`.
pub const ERROR_WORKING_SET_QUOTA: u32 = 1453;
/// `ERROR_DEVICE_REMOVED`.
pub const ERROR_DEVICE_REMOVED: u32 = 1617;
/// `ERROR_INVALID_USER_BUFFER`.
pub const ERROR_INVALID_USER_BUFFER: u32 = 1784;

/// The driver status that most likely produced this Win32 error on a request
/// to our device, or `None` when the error is not one our driver causes.
///
/// `ERROR_ACCESS_DENIED` is deliberately absent: on a request (not an open)
/// it comes from `STATUS_DELETE_PENDING`, but it is far more often the open
/// being refused, which the Windows backend reports on its own.
pub fn ntstatus_from_win32(code: u32) -> Option<NtStatus> {
    Some(match code {
        ERROR_INVALID_FUNCTION => NtStatus::INVALID_DEVICE_REQUEST,
        ERROR_BAD_LENGTH => NtStatus::INFO_LENGTH_MISMATCH,
        ERROR_INSUFFICIENT_BUFFER => NtStatus::BUFFER_TOO_SMALL,
        ERROR_MORE_DATA => NtStatus::BUFFER_OVERFLOW,
        ERROR_INVALID_PARAMETER => NtStatus::INVALID_PARAMETER,
        ERROR_INVALID_USER_BUFFER => NtStatus::INVALID_BUFFER_SIZE,
        ERROR_HANDLE_EOF => NtStatus::END_OF_FILE,
        ERROR_OPERATION_ABORTED => NtStatus::CANCELLED,
        ERROR_SEM_TIMEOUT => NtStatus::IO_TIMEOUT,
        ERROR_DEVICE_REMOVED => NtStatus::DEVICE_REMOVED,
        ERROR_NOT_READY => NtStatus::DEVICE_NOT_READY,
        // The I/O manager failing to allocate or lock a buffer too large for
        // the machine (STATUS_NO_MEMORY, STATUS_WORKING_SET_QUOTA) reads as the
        // driver's own shortage: the tool says either may be the cause.
        ERROR_NO_SYSTEM_RESOURCES | ERROR_WORKING_SET_QUOTA | ERROR_NOT_ENOUGH_MEMORY => {
            NtStatus::INSUFFICIENT_RESOURCES
        }
        ERROR_NOT_SUPPORTED => NtStatus::NOT_SUPPORTED,
        ERROR_BAD_COMMAND => NtStatus::INVALID_DEVICE_STATE,
        ERROR_IO_DEVICE => NtStatus::DEVICE_HARDWARE_ERROR,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_our_driver_fails_with_maps_back() {
        for status in [
            NtStatus::INVALID_DEVICE_REQUEST,
            NtStatus::INFO_LENGTH_MISMATCH,
            NtStatus::BUFFER_TOO_SMALL,
            NtStatus::INVALID_PARAMETER,
            NtStatus::INVALID_BUFFER_SIZE,
            NtStatus::END_OF_FILE,
            NtStatus::CANCELLED,
            NtStatus::IO_TIMEOUT,
            NtStatus::DEVICE_REMOVED,
            NtStatus::DEVICE_NOT_READY,
            NtStatus::INSUFFICIENT_RESOURCES,
        ] {
            let found = (0..2000)
                .filter_map(ntstatus_from_win32)
                .any(|s| s == status);
            assert!(found, "{status} has no Win32 error mapping back to it");
        }
        for locking_failed in [ERROR_WORKING_SET_QUOTA, ERROR_NOT_ENOUGH_MEMORY] {
            assert_eq!(
                ntstatus_from_win32(locking_failed),
                Some(NtStatus::INSUFFICIENT_RESOURCES)
            );
        }
        assert_eq!(ntstatus_from_win32(ERROR_FILE_NOT_FOUND), None);
        assert_eq!(ntstatus_from_win32(ERROR_ACCESS_DENIED), None);
    }
}
