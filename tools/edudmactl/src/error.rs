//! The tool's errors: each one a single line naming the cause and what to do,
//! and each with a documented exit code.

use std::fmt;
use std::path::PathBuf;

use edudma_core::NtStatus;
use edudma_core::ioctl::explain_status;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the device or the driver failed (no device, access denied, error status).
pub const EXIT_DEVICE: u8 = 1;
/// Exit code: a bad or missing argument.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the bytes read back differ from the bytes written.
pub const EXIT_MISMATCH: u8 = 3;

/// Everything that can stop a command.
#[derive(Debug)]
pub enum Error {
    /// A bad argument the parser could not catch (a range outside the window, a knob without `--sim`).
    Usage(String),
    /// No device at this path (or no device interface registered).
    DeviceNotFound {
        /// What was looked for.
        path: String,
    },
    /// The device exists but may not be opened by this user.
    AccessDenied {
        /// The path opened.
        path: String,
    },
    /// Another handle holds the device exclusively.
    DeviceBusy {
        /// The path opened.
        path: String,
    },
    /// The driver completed a request with an error status.
    Driver {
        /// What was asked ("DMA write", "get info", …).
        operation: &'static str,
        /// The status the driver completed the request with.
        status: NtStatus,
    },
    /// An operating-system error with no driver status behind it.
    Os {
        /// What was being done.
        operation: String,
        /// The Win32 error code.
        code: u32,
    },
    /// The driver answered with a payload of the wrong size or an older layout.
    Protocol(String),
    /// The simulator stopped the driver: a Driver Verifier, IRQL or IRP rule was broken,
    /// or the simulated machine could not be built.
    Simulator(String),
    /// This backend does not exist on this platform.
    Unsupported(String),
    /// An input file (`write --file`) could not be read.
    InputFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// An output (`read --out`, stdout) could not be written.
    Output {
        /// The file, or `None` for stdout.
        path: Option<PathBuf>,
        /// Why.
        source: std::io::Error,
    },
    /// The tool could not allocate a buffer this large.
    OutOfMemory {
        /// Bytes asked for.
        bytes: u64,
        /// What for.
        what: &'static str,
    },
    /// A line of a `script` failed.
    Script {
        /// The line's number, from 1.
        line: usize,
        /// How it failed.
        source: Box<Error>,
    },
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            // A file named on the command line is an argument, read or written.
            Error::Usage(_) | Error::InputFile { .. } | Error::Output { path: Some(_), .. } => {
                EXIT_USAGE
            }
            Error::Script { source, .. } => source.exit_code(),
            Error::DeviceNotFound { .. }
            | Error::AccessDenied { .. }
            | Error::DeviceBusy { .. }
            | Error::Driver { .. }
            | Error::Os { .. }
            | Error::Protocol(_)
            | Error::Simulator(_)
            | Error::Unsupported(_)
            | Error::OutOfMemory { .. }
            | Error::Output { path: None, .. } => EXIT_DEVICE,
        }
    }

    /// The failing line, for an error of a `script`.
    pub fn script_line(&self) -> Option<usize> {
        match self {
            Error::Script { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// This error as the failure of script line `line`.
    pub fn at_line(self, line: usize) -> Self {
        Error::Script {
            line,
            source: Box::new(self),
        }
    }

    /// A short machine-readable name of the error, for `--json`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::DeviceNotFound { .. } => "device_not_found",
            Error::AccessDenied { .. } => "access_denied",
            Error::DeviceBusy { .. } => "device_busy",
            Error::Driver { .. } => "driver_status",
            Error::Os { .. } => "os_error",
            Error::Protocol(_) => "protocol",
            Error::Simulator(_) => "simulator",
            Error::Unsupported(_) => "unsupported",
            Error::InputFile { .. } => "input_file",
            Error::Output { .. } => "output",
            Error::OutOfMemory { .. } => "out_of_memory",
            Error::Script { source, .. } => source.kind(),
        }
    }

    /// The driver's status, when the driver is what failed.
    pub fn status(&self) -> Option<NtStatus> {
        match self {
            Error::Driver { status, .. } => Some(*status),
            Error::Script { source, .. } => source.status(),
            _ => None,
        }
    }
}

/// What the user can do about a driver status.
fn advice(status: NtStatus) -> &'static str {
    match status {
        NtStatus::INVALID_PARAMETER | NtStatus::INVALID_BUFFER_SIZE | NtStatus::END_OF_FILE => {
            "keep --offset and --len inside the window that `edudmactl info` shows"
        }
        NtStatus::IO_TIMEOUT => {
            "the device looks hung: check the VM's edu device, then `edudmactl stats` and retry"
        }
        NtStatus::DEVICE_REMOVED | NtStatus::DELETE_PENDING | NtStatus::DEVICE_NOT_READY => {
            "re-enable the device (Device Manager or pnputil) and retry"
        }
        NtStatus::INSUFFICIENT_RESOURCES => "retry later, or with a smaller --len",
        NtStatus::CANCELLED => "retry; nothing was left half-done",
        NtStatus::INVALID_DEVICE_REQUEST | NtStatus::INFO_LENGTH_MISMATCH => {
            "the tool and the driver disagree on the IOCTL contract: install a matching driver"
        }
        _ => "see `edudmactl stats` and the system event log",
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(f, "{message}"),
            Error::DeviceNotFound { path } => write!(
                f,
                "no edudma device at {path}: the driver is not installed or the device is not \
                 started; install it (scripts/), pass --device PATH, or run with --sim"
            ),
            Error::AccessDenied { path } => write!(
                f,
                "access denied opening {path}: run from an elevated (Administrator) prompt"
            ),
            Error::DeviceBusy { path } => {
                write!(f, "{path} is in use by another program: close it and retry")
            }
            // The I/O manager fails a buffer it cannot allocate or lock
            // before the driver sees it: the status does not tell who.
            Error::Driver { operation, status } if *status == NtStatus::INSUFFICIENT_RESOURCES => {
                write!(
                    f,
                    "{operation} failed with {status}: the system could not allocate or lock the \
                 request's buffer, or the DMA resources for it; use a smaller --len \
                 (or, with --sim, a larger --memory-mib)"
                )
            }
            Error::Driver { operation, status } => write!(
                f,
                "the driver failed {operation} with {status}: {}; {}",
                explain_status(*status),
                advice(*status)
            ),
            Error::Os { operation, code } => write!(
                f,
                "{operation} failed with Windows error {code} (0x{code:08X}); run \
                 `certutil -error {code}` for its meaning and check the device in Device Manager"
            ),
            Error::Protocol(message) => write!(
                f,
                "unexpected answer from the driver: {message}; install the driver built from \
                 the same sources as this tool"
            ),
            Error::Simulator(message) => write!(
                f,
                "the simulator stopped the driver: {message}; this is a driver bug, report it \
                 with the command line (and --seed) that reproduces it"
            ),
            Error::Unsupported(message) => write!(f, "{message}"),
            Error::InputFile { path, source } => write!(
                f,
                "cannot read {}: {source}; check the path",
                path.display()
            ),
            Error::Output {
                path: Some(path),
                source,
            } => write!(
                f,
                "cannot write {}: {source}; check the --out path and free space",
                path.display()
            ),
            Error::Output { path: None, source } => {
                write!(f, "cannot write to stdout: {source}")
            }
            Error::OutOfMemory { bytes, what } => write!(
                f,
                "cannot allocate {bytes} bytes for {what}: this machine is out of memory; \
                 use a smaller --len"
            ),
            Error::Script { line, source } => write!(f, "line {line}: {source}"),
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with the tool's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_with_advice() {
        let errors = [
            Error::Usage(
                "device offset 5000 is outside the 4095-byte window: keep --offset below it".into(),
            ),
            Error::DeviceNotFound {
                path: r"\\?\PCI#VEN_1234&DEV_11E8#3&11583659&0&10#{5e0d1c3a-7b2f-4c1e-9a8d-0e1d5a0da7a1}".into(),
            },
            Error::AccessDenied {
                path: r"\\?\PCI#VEN_1234&DEV_11E8#3&11583659&0&10#{5e0d1c3a-7b2f-4c1e-9a8d-0e1d5a0da7a1}".into(),
            },
            Error::Driver {
                operation: "DMA write",
                status: NtStatus::INVALID_BUFFER_SIZE,
            },
            Error::Os {
                operation: "DeviceIoControl".into(),
                code: 1167,
            },
        ];
        for error in &errors {
            let text = error.to_string();
            assert!(!text.contains('\n'), "{text}");
            assert!(text.contains(';') || text.contains(':'), "{text}");
        }
        let driver = errors[3].to_string();
        assert!(driver.contains("STATUS_INVALID_BUFFER_SIZE"), "{driver}");
        assert!(driver.contains("window"), "{driver}");
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Error::Usage(String::new()).exit_code(), EXIT_USAGE);
        assert_eq!(
            Error::Driver {
                operation: "x",
                status: NtStatus::CANCELLED
            }
            .exit_code(),
            EXIT_DEVICE
        );
        assert_eq!(EXIT_OK, 0);
        assert_eq!(EXIT_MISMATCH, 3);
    }
}
