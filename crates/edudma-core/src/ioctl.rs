//! The IOCTL contract between the driver and `edudmactl`: control codes,
//! `#[repr(C)]` payloads and the validation of every request, in one place
//! so that the two sides cannot drift.
//!
//! | code | method | input | output |
//! |---|---|---|---|
//! | [`IOCTL_EDUDMA_GET_INFO`] | BUFFERED | none | [`DeviceInfo`] |
//! | [`IOCTL_EDUDMA_GET_STATS`] | BUFFERED | none | [`Stats`] |
//! | [`IOCTL_EDUDMA_RESET_STATS`] | BUFFERED | none | none |
//! | [`IOCTL_EDUDMA_SELFTEST`] | BUFFERED | none | [`SelfTestReport`] |
//! | [`IOCTL_EDUDMA_DMA_WRITE`] | IN_DIRECT | [`DmaHeader`] | data to write, in the MDL |
//! | [`IOCTL_EDUDMA_DMA_READ`] | OUT_DIRECT | [`DmaHeader`] | data read, in the MDL |
//!
//! `IRP_MJ_READ` / `IRP_MJ_WRITE` (direct I/O) take the same DMA path, with
//! `ByteOffset` as the device offset, so the device reads like a file of
//! [`EngineConfig::window`](crate::engine::EngineConfig) bytes.

use core::fmt;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::status::NtStatus;

/// `METHOD_BUFFERED`.
pub const METHOD_BUFFERED: u32 = 0;
/// `METHOD_IN_DIRECT`.
pub const METHOD_IN_DIRECT: u32 = 1;
/// `METHOD_OUT_DIRECT`.
pub const METHOD_OUT_DIRECT: u32 = 2;
/// `METHOD_NEITHER`.
pub const METHOD_NEITHER: u32 = 3;
/// `FILE_ANY_ACCESS`.
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS`.
pub const FILE_READ_ACCESS: u32 = 1;
/// `FILE_WRITE_ACCESS`.
pub const FILE_WRITE_ACCESS: u32 = 2;

/// The `CTL_CODE` macro of `devioctl.h`.
pub const fn ctl_code(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// The method bits of a control code.
pub const fn method_of(code: u32) -> u32 {
    code & 3
}

/// Our device type (vendor range 0x8000–0xFFFF).
pub const FILE_DEVICE_EDUDMA: u32 = 0x8ED0;

/// Return a [`DeviceInfo`].
pub const IOCTL_EDUDMA_GET_INFO: u32 =
    ctl_code(FILE_DEVICE_EDUDMA, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Return the [`Stats`].
pub const IOCTL_EDUDMA_GET_STATS: u32 =
    ctl_code(FILE_DEVICE_EDUDMA, 0x801, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Zero the [`Stats`].
pub const IOCTL_EDUDMA_RESET_STATS: u32 = ctl_code(
    FILE_DEVICE_EDUDMA,
    0x802,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// Run the no-DMA self-test and return a [`SelfTestReport`].
pub const IOCTL_EDUDMA_SELFTEST: u32 = ctl_code(
    FILE_DEVICE_EDUDMA,
    0x803,
    METHOD_BUFFERED,
    FILE_READ_ACCESS | FILE_WRITE_ACCESS,
);
/// DMA from the caller's buffer (the MDL) into the device at an offset.
pub const IOCTL_EDUDMA_DMA_WRITE: u32 = ctl_code(
    FILE_DEVICE_EDUDMA,
    0x810,
    METHOD_IN_DIRECT,
    FILE_WRITE_ACCESS,
);
/// DMA from the device at an offset into the caller's buffer (the MDL).
pub const IOCTL_EDUDMA_DMA_READ: u32 = ctl_code(
    FILE_DEVICE_EDUDMA,
    0x811,
    METHOD_OUT_DIRECT,
    FILE_READ_ACCESS,
);

/// Every control code of the contract (what [`validate_control`] accepts).
pub const CONTROL_CODES: [u32; 6] = [
    IOCTL_EDUDMA_GET_INFO,
    IOCTL_EDUDMA_GET_STATS,
    IOCTL_EDUDMA_RESET_STATS,
    IOCTL_EDUDMA_SELFTEST,
    IOCTL_EDUDMA_DMA_WRITE,
    IOCTL_EDUDMA_DMA_READ,
];

/// Device interface class GUID the driver registers and the tool looks up:
/// `{5E0D1C3A-7B2F-4C1E-9A8D-0E1D5A0DA7A1}`.
pub const GUID_DEVINTERFACE_EDUDMA: (u32, u16, u16, [u8; 8]) = (
    0x5E0D_1C3A,
    0x7B2F,
    0x4C1E,
    [0x9A, 0x8D, 0x0E, 0x1D, 0x5A, 0x0D, 0xA7, 0xA1],
);
/// What the tool looks for when no path is given: the first present
/// interface of [`GUID_DEVINTERFACE_EDUDMA`] (the device has no other name).
pub const DEVICE_INTERFACE_NAME: &str = "GUID_DEVINTERFACE_EDUDMA";

/// Version of this contract, reported in [`DeviceInfo::contract_version`].
pub const CONTRACT_VERSION: u32 = 2;

/// Input of the DMA IOCTLs.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct DmaHeader {
    /// Offset in the device's DMA window.
    pub device_offset: u32,
    /// Reserved, must be zero.
    pub flags: u32,
}

/// Output of [`IOCTL_EDUDMA_GET_INFO`].
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct DeviceInfo {
    /// `size_of::<DeviceInfo>()`, so callers can detect an older layout.
    pub size: u32,
    /// [`CONTRACT_VERSION`].
    pub contract_version: u32,
    /// Driver version, `major << 16 | minor << 8 | patch`.
    pub driver_version: u32,
    /// The device's identification register.
    pub device_id: u32,
    /// DMA operations interface in use (3 for `DEVICE_DESCRIPTION_VERSION3`).
    pub dma_interface_version: u32,
    /// Map registers `IoGetDmaAdapter` granted.
    pub map_registers: u32,
    /// `GetDmaAlignment`.
    pub dma_alignment: u32,
    /// `DmaAddressWidth` asked for.
    pub dma_address_width: u32,
    /// 1 when the adapter does scatter/gather.
    pub scatter_gather: u32,
    /// See [`InterruptKind`].
    pub interrupt_kind: u32,
    /// Size of the device's DMA buffer (4096).
    pub device_buffer_size: u32,
    /// Bytes of it the driver uses: 4095 by default, 4096 when configured.
    pub dma_window: u32,
    /// See [`AllocationPolicyCode`].
    pub allocation_policy: u32,
    /// The DMA strategy in force, a [`DmaStrategyCode`].
    pub dma_strategy: u32,
    /// The DMA strategy the registry asked for: it differs from
    /// `dma_strategy` when the platform had no version 3 (the fallback).
    pub requested_dma_strategy: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// How the driver is interrupted, in [`DeviceInfo::interrupt_kind`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InterruptKind {
    /// No interrupt connected (polling only).
    None = 0,
    /// Line-based (INTx).
    LineBased = 1,
    /// Message-signalled (MSI).
    MessageSignaled = 2,
}

impl InterruptKind {
    /// Decode [`DeviceInfo::interrupt_kind`].
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::None),
            1 => Some(Self::LineBased),
            2 => Some(Self::MessageSignaled),
            _ => None,
        }
    }
}

/// How channels are allocated, in [`DeviceInfo::allocation_policy`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationPolicyCode {
    /// Synchronous when no map registers are needed, asynchronous otherwise
    /// and on `STATUS_INSUFFICIENT_RESOURCES`.
    SyncThenAsync = 0,
    /// Asynchronous only.
    AsyncOnly = 1,
}

/// The DMA strategy in force, in [`DeviceInfo::dma_strategy`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DmaStrategyCode {
    /// The ten version-3 steps (`MapTransferEx`, `FlushAdapterBuffersEx`).
    V3Packet = 0,
    /// The version-1 packet-based sequence (`AllocateAdapterChannel`,
    /// `MapTransfer`, `FlushAdapterBuffers`, `FreeMapRegisters`).
    V1Packet = 1,
    /// Scatter/gather lists (`CalculateScatterGatherList`,
    /// `BuildScatterGatherList` or `GetScatterGatherList`,
    /// `PutScatterGatherList`).
    SgList = 2,
    /// The common buffer (`AllocateCommonBuffer`, the bytes copied through
    /// it, `FreeCommonBuffer`).
    CommonBuffer = 3,
}

impl DmaStrategyCode {
    /// Decode [`DeviceInfo::dma_strategy`].
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::V3Packet),
            1 => Some(Self::V1Packet),
            2 => Some(Self::SgList),
            3 => Some(Self::CommonBuffer),
            _ => None,
        }
    }

    /// The name `edudmactl` shows and takes (`--dma-strategy`).
    pub fn name(self) -> &'static str {
        match self {
            Self::V3Packet => "v3-packet",
            Self::V1Packet => "v1-packet",
            Self::SgList => "sg-list",
            Self::CommonBuffer => "common-buffer",
        }
    }

    /// The strategy a name selects.
    pub fn from_name(name: &str) -> Option<Self> {
        [
            Self::V3Packet,
            Self::V1Packet,
            Self::SgList,
            Self::CommonBuffer,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// Output of [`IOCTL_EDUDMA_GET_STATS`]: counters since start or reset.
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct Stats {
    /// Requests started (DMA and self-test).
    pub requests: u64,
    /// Requests completed successfully.
    pub completed: u64,
    /// Bytes moved memory → device.
    pub bytes_to_device: u64,
    /// Bytes moved device → memory.
    pub bytes_from_device: u64,
    /// `GetDmaTransferInfo` calls.
    pub get_dma_transfer_info: u64,
    /// `AllocateAdapterChannelEx` (version 3) or `AllocateAdapterChannel`
    /// (version 1) calls.
    pub allocate_adapter_channel: u64,
    /// Synchronous allocations that fell back to asynchronous.
    pub sync_allocation_fallbacks: u64,
    /// `CancelAdapterChannel` calls.
    pub cancel_adapter_channel: u64,
    /// `MapTransferEx` (version 3) or `MapTransfer` (version 1) calls.
    pub map_transfer: u64,
    /// Maps that covered less than the bytes left: `MapTransferEx` mapped
    /// less than asked, or a version-1 request was split.
    pub partial_maps: u64,
    /// `FlushAdapterBuffersEx` or `FlushAdapterBuffers` calls.
    pub flush_adapter_buffers: u64,
    /// `FreeAdapterChannel` calls.
    pub free_adapter_channel: u64,
    /// Device commands (one per scatter/gather element).
    pub device_commands: u64,
    /// Interrupts our ISR claimed.
    pub interrupts: u64,
    /// DpcForIsr runs.
    pub dpcs: u64,
    /// Requests cancelled.
    pub cancels: u64,
    /// Lost interrupts recovered by the watchdog.
    pub lost_interrupts: u64,
    /// Requests timed out.
    pub timeouts: u64,
    /// Requests failed with an error status (validation errors included).
    pub errors: u64,
    /// `KeFlushIoBuffers` calls (version 1).
    pub flush_io_buffers: u64,
    /// `FreeMapRegisters` calls (version 1).
    pub free_map_registers: u64,
    /// `CalculateScatterGatherList` calls (sg-list).
    pub calculate_scatter_gather_list: u64,
    /// `BuildScatterGatherList` calls (sg-list, the driver's buffer).
    pub build_scatter_gather_list: u64,
    /// `GetScatterGatherList` calls (sg-list, a list the HAL allocates).
    pub get_scatter_gather_list: u64,
    /// `PutScatterGatherList` calls (sg-list).
    pub put_scatter_gather_list: u64,
    /// Copies through the common buffer (common-buffer: one per request).
    pub common_buffer_copies: u64,
}

/// Self-test step bits, in [`SelfTestReport::passed`] and [`SelfTestReport::failed`].
pub mod selftest_steps {
    /// The identification register reads `0x??????ED`.
    pub const IDENTIFICATION: u32 = 1 << 0;
    /// The liveness register inverts what is written.
    pub const LIVENESS: u32 = 1 << 1;
    /// A factorial computed and polled.
    pub const FACTORIAL_POLLED: u32 = 1 << 2;
    /// A factorial computed with its completion interrupt.
    pub const FACTORIAL_INTERRUPT: u32 = 1 << 3;
    /// An interrupt raised by hand was seen and acknowledged.
    pub const RAISE_ACKNOWLEDGE: u32 = 1 << 4;
    /// All steps.
    pub const ALL: u32 = 0x1F;
}

/// Output of [`IOCTL_EDUDMA_SELFTEST`].
#[repr(C)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct SelfTestReport {
    /// Steps that passed ([`selftest_steps`]).
    pub passed: u32,
    /// Steps that failed.
    pub failed: u32,
    /// Identification register read.
    pub device_id: u32,
    /// Value written to the liveness register.
    pub liveness_written: u32,
    /// Value read back (expected: its inverse).
    pub liveness_read: u32,
    /// Argument of the polled factorial.
    pub factorial_input: u32,
    /// Result of the polled factorial.
    pub factorial_polled: u32,
    /// Result of the interrupt-driven factorial.
    pub factorial_interrupt: u32,
    /// Interrupt bits seen by the DPC during the test.
    pub irq_bits_seen: u32,
    /// Argument of the interrupt-driven factorial.
    pub factorial_interrupt_input: u32,
}

impl SelfTestReport {
    /// True when every step passed.
    pub fn all_passed(&self) -> bool {
        self.passed == selftest_steps::ALL && self.failed == 0
    }
}

/// Direction of a DMA request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Memory → device (`WriteToDevice` TRUE): a write.
    ToDevice,
    /// Device → memory: a read.
    FromDevice,
}

impl Direction {
    /// The `WriteToDevice` / `WriteOnly` argument of the DMA routines.
    pub fn write_to_device(self) -> bool {
        matches!(self, Direction::ToDevice)
    }
}

/// A validated DMA request: `length` bytes at `device_offset`, all inside the window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRequest {
    /// Which way the data moves.
    pub direction: Direction,
    /// Offset in the device window.
    pub device_offset: u32,
    /// Bytes to move, at least 1.
    pub length: u32,
}

/// A validated device-control request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlRequest {
    /// Answer with [`DeviceInfo`] now.
    GetInfo,
    /// Answer with [`Stats`] now.
    GetStats,
    /// Zero the statistics now.
    ResetStats,
    /// Queue a self-test (StartIo).
    SelfTest,
    /// Queue a DMA transfer (StartIo).
    Dma(DmaRequest),
}

/// What a validated `IRP_MJ_READ` / `IRP_MJ_WRITE` needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRequest {
    /// Nothing to move (zero length): complete with success and 0 bytes.
    Empty,
    /// A read at or past the end of the window: `STATUS_END_OF_FILE`.
    EndOfFile,
    /// Queue this transfer (StartIo). A read that crosses the end of the
    /// window is shortened to end there, as a file read would be.
    Dma(DmaRequest),
}

/// Why a request was refused; each maps to one NTSTATUS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// Not one of our control codes.
    UnknownControlCode(u32),
    /// The input buffer has the wrong size for this code.
    InputLength {
        /// Bytes this code takes.
        expected: u32,
        /// Bytes given.
        actual: u32,
    },
    /// The output buffer is too small for the answer.
    OutputTooSmall {
        /// Bytes needed.
        needed: u32,
        /// Bytes given.
        actual: u32,
    },
    /// A DMA request of zero bytes.
    ZeroLength,
    /// A data buffer was expected but none was given (no MDL).
    MissingBuffer,
    /// Reserved flags were not zero.
    ReservedFlags(u32),
    /// The offset is outside the window.
    OffsetOutsideWindow {
        /// Offset asked.
        offset: u64,
        /// Window size.
        window: u32,
    },
    /// Offset plus length goes past the window.
    BeyondWindow {
        /// Offset asked.
        offset: u64,
        /// Length asked.
        length: u64,
        /// Window size.
        window: u32,
    },
}

impl RequestError {
    /// The status the request is completed with.
    pub fn status(self) -> NtStatus {
        match self {
            RequestError::UnknownControlCode(_) => NtStatus::INVALID_DEVICE_REQUEST,
            RequestError::InputLength { .. } => NtStatus::INFO_LENGTH_MISMATCH,
            RequestError::OutputTooSmall { .. } => NtStatus::BUFFER_TOO_SMALL,
            RequestError::ZeroLength
            | RequestError::MissingBuffer
            | RequestError::ReservedFlags(_)
            | RequestError::OffsetOutsideWindow { .. } => NtStatus::INVALID_PARAMETER,
            RequestError::BeyondWindow { .. } => NtStatus::INVALID_BUFFER_SIZE,
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RequestError::UnknownControlCode(code) => {
                write!(f, "unknown control code 0x{code:08X}")
            }
            RequestError::InputLength { expected, actual } => {
                write!(
                    f,
                    "input buffer is {actual} bytes, this request takes {expected}"
                )
            }
            RequestError::OutputTooSmall { needed, actual } => {
                write!(
                    f,
                    "output buffer is {actual} bytes, the answer needs {needed}"
                )
            }
            RequestError::ZeroLength => write!(f, "a DMA transfer needs at least one byte"),
            RequestError::MissingBuffer => write!(f, "no data buffer was given"),
            RequestError::ReservedFlags(flags) => {
                write!(f, "reserved flags 0x{flags:08X} must be zero")
            }
            RequestError::OffsetOutsideWindow { offset, window } => {
                write!(
                    f,
                    "device offset {offset} is outside the {window}-byte window"
                )
            }
            RequestError::BeyondWindow {
                offset,
                length,
                window,
            } => write!(
                f,
                "{length} bytes at offset {offset} go past the {window}-byte window"
            ),
        }
    }
}

/// A short explanation of a status the driver completes requests with, for
/// the tool's error messages.
pub fn explain_status(status: NtStatus) -> &'static str {
    match status {
        NtStatus::SUCCESS => "success",
        NtStatus::INVALID_DEVICE_REQUEST => "the driver does not know this request",
        NtStatus::INFO_LENGTH_MISMATCH => "the input buffer has the wrong size",
        NtStatus::BUFFER_TOO_SMALL => "the output buffer is too small",
        NtStatus::INVALID_PARAMETER => "a parameter is out of range (offset, length or flags)",
        NtStatus::INVALID_BUFFER_SIZE => "the transfer goes past the end of the device window",
        NtStatus::END_OF_FILE => "the offset is at or past the end of the device window",
        NtStatus::CANCELLED => "the request was cancelled",
        NtStatus::IO_TIMEOUT => "the device did not finish the transfer in time",
        NtStatus::DEVICE_REMOVED => "the device was removed",
        NtStatus::DELETE_PENDING => "the device is being removed",
        NtStatus::DEVICE_NOT_READY => "the device is stopped",
        NtStatus::INSUFFICIENT_RESOURCES => "the system ran out of DMA resources",
        NtStatus::DEVICE_HARDWARE_ERROR => "the device or the DMA mapping misbehaved",
        _ => "the driver reported an error",
    }
}

fn expect_input(expected: usize, input: &[u8]) -> Result<(), RequestError> {
    if input.len() == expected {
        Ok(())
    } else {
        Err(RequestError::InputLength {
            expected: expected as u32,
            actual: u32::try_from(input.len()).unwrap_or(u32::MAX),
        })
    }
}

fn expect_output(needed: usize, output_length: u32) -> Result<(), RequestError> {
    if output_length as usize >= needed {
        Ok(())
    } else {
        Err(RequestError::OutputTooSmall {
            needed: needed as u32,
            actual: output_length,
        })
    }
}

/// Check that `length` bytes at `offset` lie inside a `window`-byte window.
pub fn check_window(offset: u64, length: u64, window: u32) -> Result<(), RequestError> {
    if length == 0 {
        return Err(RequestError::ZeroLength);
    }
    if offset >= u64::from(window) {
        return Err(RequestError::OffsetOutsideWindow { offset, window });
    }
    match offset.checked_add(length) {
        Some(end) if end <= u64::from(window) => Ok(()),
        _ => Err(RequestError::BeyondWindow {
            offset,
            length,
            window,
        }),
    }
}

/// Validate an `IRP_MJ_DEVICE_CONTROL` request.
///
/// `input` is the input buffer (`SystemBuffer` for every code here),
/// `output_length` the `OutputBufferLength`, and `has_mdl` whether
/// `Irp->MdlAddress` is set (the data buffer of the direct-I/O codes).
pub fn validate_control(
    code: u32,
    input: &[u8],
    output_length: u32,
    has_mdl: bool,
    window: u32,
) -> Result<ControlRequest, RequestError> {
    match code {
        IOCTL_EDUDMA_GET_INFO => {
            expect_input(0, input)?;
            expect_output(size_of::<DeviceInfo>(), output_length)?;
            Ok(ControlRequest::GetInfo)
        }
        IOCTL_EDUDMA_GET_STATS => {
            expect_input(0, input)?;
            expect_output(size_of::<Stats>(), output_length)?;
            Ok(ControlRequest::GetStats)
        }
        IOCTL_EDUDMA_RESET_STATS => {
            expect_input(0, input)?;
            Ok(ControlRequest::ResetStats)
        }
        IOCTL_EDUDMA_SELFTEST => {
            expect_input(0, input)?;
            expect_output(size_of::<SelfTestReport>(), output_length)?;
            Ok(ControlRequest::SelfTest)
        }
        IOCTL_EDUDMA_DMA_WRITE | IOCTL_EDUDMA_DMA_READ => {
            expect_input(size_of::<DmaHeader>(), input)?;
            let header =
                DmaHeader::read_from_bytes(input).map_err(|_| RequestError::InputLength {
                    expected: size_of::<DmaHeader>() as u32,
                    actual: input.len() as u32,
                })?;
            if header.flags != 0 {
                return Err(RequestError::ReservedFlags(header.flags));
            }
            if output_length == 0 {
                return Err(RequestError::ZeroLength);
            }
            if !has_mdl {
                return Err(RequestError::MissingBuffer);
            }
            check_window(
                u64::from(header.device_offset),
                u64::from(output_length),
                window,
            )?;
            let direction = if code == IOCTL_EDUDMA_DMA_WRITE {
                Direction::ToDevice
            } else {
                Direction::FromDevice
            };
            Ok(ControlRequest::Dma(DmaRequest {
                direction,
                device_offset: header.device_offset,
                length: output_length,
            }))
        }
        other => Err(RequestError::UnknownControlCode(other)),
    }
}

fn file_offset(byte_offset: i64) -> Result<u64, RequestError> {
    u64::try_from(byte_offset).map_err(|_| RequestError::OffsetOutsideWindow {
        offset: byte_offset as u64,
        window: 0,
    })
}

/// Validate an `IRP_MJ_READ`: `length` bytes at `ByteOffset`, like a file
/// of `window` bytes (short reads at the end, end-of-file past it).
pub fn validate_read(
    byte_offset: i64,
    length: u32,
    has_mdl: bool,
    window: u32,
) -> Result<FileRequest, RequestError> {
    let offset = file_offset(byte_offset)?;
    if length == 0 {
        return Ok(FileRequest::Empty);
    }
    if offset >= u64::from(window) {
        return Ok(FileRequest::EndOfFile);
    }
    if !has_mdl {
        return Err(RequestError::MissingBuffer);
    }
    let available = u64::from(window) - offset;
    let length = u64::from(length).min(available) as u32;
    Ok(FileRequest::Dma(DmaRequest {
        direction: Direction::FromDevice,
        device_offset: offset as u32,
        length,
    }))
}

/// Validate an `IRP_MJ_WRITE`: the whole range must fit in the window (a
/// device cannot grow).
pub fn validate_write(
    byte_offset: i64,
    length: u32,
    has_mdl: bool,
    window: u32,
) -> Result<FileRequest, RequestError> {
    let offset = file_offset(byte_offset)?;
    if length == 0 {
        return Ok(FileRequest::Empty);
    }
    check_window(offset, u64::from(length), window)?;
    if !has_mdl {
        return Err(RequestError::MissingBuffer);
    }
    Ok(FileRequest::Dma(DmaRequest {
        direction: Direction::ToDevice,
        device_offset: offset as u32,
        length,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 4095;

    fn header(offset: u32, flags: u32) -> [u8; 8] {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(
            DmaHeader {
                device_offset: offset,
                flags,
            }
            .as_bytes(),
        );
        bytes
    }

    #[test]
    fn ctl_code_matches_devioctl_h() {
        // CTL_CODE(FILE_DEVICE_UNKNOWN=0x22, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS) = 0x222000
        assert_eq!(
            ctl_code(0x22, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS),
            0x0022_2000
        );
        // IOCTL_DISK_GET_DRIVE_GEOMETRY = CTL_CODE(7, 0, 0, 0) = 0x70000
        assert_eq!(ctl_code(7, 0, 0, 0), 0x0007_0000);
        assert_eq!(method_of(IOCTL_EDUDMA_DMA_WRITE), METHOD_IN_DIRECT);
        assert_eq!(method_of(IOCTL_EDUDMA_DMA_READ), METHOD_OUT_DIRECT);
        assert_eq!(method_of(IOCTL_EDUDMA_GET_INFO), METHOD_BUFFERED);
    }

    #[test]
    fn codes_are_distinct() {
        let codes = [
            IOCTL_EDUDMA_GET_INFO,
            IOCTL_EDUDMA_GET_STATS,
            IOCTL_EDUDMA_RESET_STATS,
            IOCTL_EDUDMA_SELFTEST,
            IOCTL_EDUDMA_DMA_WRITE,
            IOCTL_EDUDMA_DMA_READ,
        ];
        for (i, a) in codes.iter().enumerate() {
            for b in &codes[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn layouts_are_stable() {
        assert_eq!(size_of::<DmaHeader>(), 8);
        assert_eq!(size_of::<DeviceInfo>(), 64);
        for code in 0..5 {
            match DmaStrategyCode::from_code(code) {
                Some(s) => {
                    assert_eq!(s as u32, code);
                    assert_eq!(DmaStrategyCode::from_name(s.name()), Some(s));
                }
                None => assert_eq!(code, 4, "0..=3 are the strategies"),
            }
        }
        assert_eq!(DmaStrategyCode::from_name("v2-packet"), None);
        assert_eq!(size_of::<Stats>(), 26 * 8);
        assert_eq!(size_of::<SelfTestReport>(), 40);
    }

    #[test]
    fn dma_write_validates() {
        let ok = validate_control(IOCTL_EDUDMA_DMA_WRITE, &header(10, 0), 100, true, W);
        assert_eq!(
            ok,
            Ok(ControlRequest::Dma(DmaRequest {
                direction: Direction::ToDevice,
                device_offset: 10,
                length: 100
            }))
        );
        let read = validate_control(IOCTL_EDUDMA_DMA_READ, &header(0, 0), W, true, W);
        assert!(
            matches!(read, Ok(ControlRequest::Dma(r)) if r.direction == Direction::FromDevice && r.length == W)
        );
    }

    #[test]
    fn dma_bad_inputs_get_clear_statuses() {
        let code = IOCTL_EDUDMA_DMA_WRITE;
        let short = validate_control(code, &[0u8; 4], 10, true, W).unwrap_err();
        assert_eq!(short.status(), NtStatus::INFO_LENGTH_MISMATCH);
        let long = validate_control(code, &[0u8; 12], 10, true, W).unwrap_err();
        assert_eq!(long.status(), NtStatus::INFO_LENGTH_MISMATCH);
        let zero = validate_control(code, &header(0, 0), 0, false, W).unwrap_err();
        assert_eq!(zero, RequestError::ZeroLength);
        let no_mdl = validate_control(code, &header(0, 0), 5, false, W).unwrap_err();
        assert_eq!(no_mdl, RequestError::MissingBuffer);
        let flags = validate_control(code, &header(0, 1), 5, true, W).unwrap_err();
        assert_eq!(flags.status(), NtStatus::INVALID_PARAMETER);
        let outside = validate_control(code, &header(W, 0), 1, true, W).unwrap_err();
        assert!(matches!(outside, RequestError::OffsetOutsideWindow { .. }));
        let beyond = validate_control(code, &header(4000, 0), 96, true, W).unwrap_err();
        assert_eq!(beyond.status(), NtStatus::INVALID_BUFFER_SIZE);
        let huge = validate_control(code, &header(u32::MAX, 0), u32::MAX, true, W).unwrap_err();
        assert!(matches!(huge, RequestError::OffsetOutsideWindow { .. }));
        // The last byte of the window is reachable, one past is not.
        assert!(validate_control(code, &header(4000, 0), 95, true, W).is_ok());
        assert!(validate_control(code, &header(0, 0), 4096, true, 4096).is_ok());
        assert!(validate_control(code, &header(0, 0), 4096, true, 4095).is_err());
    }

    #[test]
    fn buffered_codes_validate_sizes() {
        assert_eq!(
            validate_control(IOCTL_EDUDMA_GET_INFO, &[], 64, false, W),
            Ok(ControlRequest::GetInfo)
        );
        assert_eq!(
            validate_control(IOCTL_EDUDMA_GET_INFO, &[], 63, false, W)
                .unwrap_err()
                .status(),
            NtStatus::BUFFER_TOO_SMALL
        );
        assert_eq!(
            validate_control(IOCTL_EDUDMA_GET_STATS, &[1], 1000, false, W)
                .unwrap_err()
                .status(),
            NtStatus::INFO_LENGTH_MISMATCH
        );
        assert_eq!(
            validate_control(IOCTL_EDUDMA_RESET_STATS, &[], 0, false, W),
            Ok(ControlRequest::ResetStats)
        );
        assert_eq!(
            validate_control(IOCTL_EDUDMA_SELFTEST, &[], 39, false, W)
                .unwrap_err()
                .status(),
            NtStatus::BUFFER_TOO_SMALL
        );
        assert_eq!(
            validate_control(0x1234_5678, &[], 0, false, W)
                .unwrap_err()
                .status(),
            NtStatus::INVALID_DEVICE_REQUEST
        );
    }

    #[test]
    fn file_reads_behave_like_a_file() {
        assert_eq!(validate_read(0, 0, false, W), Ok(FileRequest::Empty));
        assert_eq!(validate_read(4095, 10, true, W), Ok(FileRequest::EndOfFile));
        assert_eq!(
            validate_read(4000, 200, true, W),
            Ok(FileRequest::Dma(DmaRequest {
                direction: Direction::FromDevice,
                device_offset: 4000,
                length: 95
            }))
        );
        assert!(validate_read(-1, 10, true, W).is_err());
        assert_eq!(
            validate_read(0, 10, false, W),
            Err(RequestError::MissingBuffer)
        );
    }

    #[test]
    fn file_writes_must_fit() {
        assert_eq!(validate_write(5, 0, false, W), Ok(FileRequest::Empty));
        assert!(matches!(
            validate_write(0, 4095, true, W),
            Ok(FileRequest::Dma(_))
        ));
        assert_eq!(
            validate_write(1, 4095, true, W).unwrap_err().status(),
            NtStatus::INVALID_BUFFER_SIZE
        );
        assert_eq!(
            validate_write(-5, 1, true, W).unwrap_err().status(),
            NtStatus::INVALID_PARAMETER
        );
        assert_eq!(
            validate_write(i64::MAX, 1, true, W).unwrap_err().status(),
            NtStatus::INVALID_PARAMETER
        );
    }
}
