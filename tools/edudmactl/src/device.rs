//! Typed calls over a [`Backend`]: the IOCTL contract of `edudma_core::ioctl`
//! from the caller's side, with every answer checked for size and layout.

use edudma_core::ioctl::{
    DeviceInfo, DmaHeader, IOCTL_EDUDMA_DMA_READ, IOCTL_EDUDMA_DMA_WRITE, IOCTL_EDUDMA_GET_INFO,
    IOCTL_EDUDMA_GET_STATS, IOCTL_EDUDMA_RESET_STATS, IOCTL_EDUDMA_SELFTEST, RequestError,
    SelfTestReport, Stats, check_window,
};
use zerocopy::{FromBytes, IntoBytes};

use crate::backend::{Backend, BackendDescription, Queued, Ticket, VirtualClock};
use crate::error::{Error, Result};
use crate::output::count_of;

/// A readable name of one of our control codes, for messages.
pub fn operation_name(code: u32) -> &'static str {
    match code {
        IOCTL_EDUDMA_GET_INFO => "IOCTL_EDUDMA_GET_INFO",
        IOCTL_EDUDMA_GET_STATS => "IOCTL_EDUDMA_GET_STATS",
        IOCTL_EDUDMA_RESET_STATS => "IOCTL_EDUDMA_RESET_STATS",
        IOCTL_EDUDMA_SELFTEST => "IOCTL_EDUDMA_SELFTEST",
        IOCTL_EDUDMA_DMA_WRITE => "IOCTL_EDUDMA_DMA_WRITE",
        IOCTL_EDUDMA_DMA_READ => "IOCTL_EDUDMA_DMA_READ",
        _ => "an unknown IOCTL",
    }
}

/// A DMA request started by [`Device::submit_dma_write`] or
/// [`Device::submit_dma_read`], to be finished by [`Device::complete`].
#[derive(Debug)]
#[must_use = "a request in flight must be completed"]
pub struct InFlight {
    ticket: Ticket,
    code: u32,
    len: usize,
}

/// The device, spoken to through the IOCTL contract.
pub struct Device {
    backend: Box<dyn Backend>,
    window: Option<u32>,
}

impl Device {
    /// Wrap an open backend.
    pub fn new(backend: Box<dyn Backend>) -> Self {
        Self {
            backend,
            window: None,
        }
    }

    /// What the backend is.
    pub fn describe(&self) -> BackendDescription {
        self.backend.describe()
    }

    /// End the session (on the simulator: removal and leak check).
    pub fn finish(&mut self) -> Result<()> {
        self.backend.finish()
    }

    /// The simulator's virtual clock, if this is the simulator.
    pub fn virtual_clock(&self) -> Option<VirtualClock> {
        self.backend.virtual_clock()
    }

    /// Send a buffered IOCTL that answers with a `T`, and decode the answer.
    fn query<T: FromBytes + IntoBytes + Default>(&mut self, code: u32) -> Result<T> {
        let mut answer = T::default();
        let returned = self
            .backend
            .device_control(code, &[], answer.as_mut_bytes())?;
        let expected = size_of::<T>();
        if returned != expected {
            return Err(Error::Protocol(format!(
                "{} returned {returned} bytes, expected {expected}",
                operation_name(code)
            )));
        }
        Ok(answer)
    }

    /// `IOCTL_EDUDMA_GET_INFO`, with its layout checked.
    pub fn info(&mut self) -> Result<DeviceInfo> {
        let info: DeviceInfo = self.query(IOCTL_EDUDMA_GET_INFO)?;
        if info.size as usize != size_of::<DeviceInfo>() {
            return Err(Error::Protocol(format!(
                "DeviceInfo says it is {} bytes, this tool knows {}",
                info.size,
                size_of::<DeviceInfo>()
            )));
        }
        self.window = Some(info.dma_window);
        Ok(info)
    }

    /// The DMA window in bytes (asks the driver once).
    pub fn window(&mut self) -> Result<u32> {
        match self.window {
            Some(window) => Ok(window),
            None => Ok(self.info()?.dma_window),
        }
    }

    /// `IOCTL_EDUDMA_GET_STATS`.
    pub fn stats(&mut self) -> Result<Stats> {
        self.query(IOCTL_EDUDMA_GET_STATS)
    }

    /// `IOCTL_EDUDMA_RESET_STATS`.
    pub fn reset_stats(&mut self) -> Result<()> {
        self.backend
            .device_control(IOCTL_EDUDMA_RESET_STATS, &[], &mut [])?;
        Ok(())
    }

    /// `IOCTL_EDUDMA_SELFTEST`.
    pub fn selftest(&mut self) -> Result<SelfTestReport> {
        self.query(IOCTL_EDUDMA_SELFTEST)
    }

    /// Check a range against the window before sending it: a usage error
    /// names the problem once, and what would fit.
    pub fn check_range(&mut self, offset: u32, len: usize) -> Result<()> {
        let window = self.window()?;
        check_window(u64::from(offset), len as u64, window)
            .map_err(|error| Error::Usage(range_problem(&error, window)))
    }

    /// `IOCTL_EDUDMA_DMA_WRITE`: DMA `data` into the device at `offset`.
    pub fn dma_write(&mut self, offset: u32, data: &[u8]) -> Result<usize> {
        let header = DmaHeader {
            device_offset: offset,
            flags: 0,
        };
        // METHOD_IN_DIRECT: the data travels in the output buffer (the MDL).
        let mut buffer = zeroed_buffer(data.len(), "the write buffer")?;
        buffer.copy_from_slice(data);
        let moved =
            self.backend
                .device_control(IOCTL_EDUDMA_DMA_WRITE, header.as_bytes(), &mut buffer)?;
        expect_moved("IOCTL_EDUDMA_DMA_WRITE", moved, data.len())?;
        Ok(moved)
    }

    /// `IOCTL_EDUDMA_DMA_READ`: DMA `len` bytes out of the device at `offset`.
    pub fn dma_read(&mut self, offset: u32, len: usize) -> Result<Vec<u8>> {
        let header = DmaHeader {
            device_offset: offset,
            flags: 0,
        };
        let mut buffer = zeroed_buffer(len, "the read buffer")?;
        let moved =
            self.backend
                .device_control(IOCTL_EDUDMA_DMA_READ, header.as_bytes(), &mut buffer)?;
        expect_moved("IOCTL_EDUDMA_DMA_READ", moved, len)?;
        Ok(buffer)
    }

    /// Start `IOCTL_EDUDMA_DMA_WRITE` of `data` at `offset` without waiting
    /// for it (several may be in flight; the driver runs them in order).
    pub fn submit_dma_write(&mut self, offset: u32, data: &[u8]) -> Result<InFlight> {
        let header = DmaHeader {
            device_offset: offset,
            flags: 0,
        };
        let mut buffer = zeroed_buffer(data.len(), "the write buffer")?;
        buffer.copy_from_slice(data);
        let ticket = self.backend.submit(Queued {
            code: IOCTL_EDUDMA_DMA_WRITE,
            input: header.as_bytes().to_vec(),
            buffer,
        })?;
        Ok(InFlight {
            ticket,
            code: IOCTL_EDUDMA_DMA_WRITE,
            len: data.len(),
        })
    }

    /// Start `IOCTL_EDUDMA_DMA_READ` of `len` bytes at `offset` without
    /// waiting for it.
    pub fn submit_dma_read(&mut self, offset: u32, len: usize) -> Result<InFlight> {
        let header = DmaHeader {
            device_offset: offset,
            flags: 0,
        };
        let buffer = zeroed_buffer(len, "the read buffer")?;
        let ticket = self.backend.submit(Queued {
            code: IOCTL_EDUDMA_DMA_READ,
            input: header.as_bytes().to_vec(),
            buffer,
        })?;
        Ok(InFlight {
            ticket,
            code: IOCTL_EDUDMA_DMA_READ,
            len,
        })
    }

    /// Wait for a request started by `submit_dma_*`: the bytes a read
    /// brought back (empty for a write), once all of them moved.
    pub fn complete(&mut self, request: InFlight) -> Result<Vec<u8>> {
        let done = self.backend.complete(request.ticket)?;
        let operation = operation_name(request.code);
        expect_moved(operation, done.information, request.len)?;
        if request.code == IOCTL_EDUDMA_DMA_READ && done.output.len() != request.len {
            return Err(Error::Protocol(format!(
                "{operation} returned {} bytes for {} moved",
                done.output.len(),
                request.len
            )));
        }
        Ok(done.output)
    }

    /// `WriteFile` at `offset`: the `IRP_MJ_WRITE` path.
    pub fn file_write(&mut self, offset: u32, data: &[u8]) -> Result<usize> {
        let moved = self.backend.write_at(u64::from(offset), data)?;
        expect_moved("WriteFile", moved, data.len())?;
        Ok(moved)
    }

    /// `ReadFile` at `offset`: the `IRP_MJ_READ` path (short at the end of the window).
    pub fn file_read(&mut self, offset: u32, len: usize) -> Result<Vec<u8>> {
        let mut buffer = zeroed_buffer(len, "the read buffer")?;
        let moved = self.backend.read_at(u64::from(offset), &mut buffer)?;
        buffer.truncate(moved);
        Ok(buffer)
    }
}

/// `len` zero bytes, or [`Error::OutOfMemory`] instead of an abort.
pub fn zeroed_buffer(len: usize, what: &'static str) -> Result<Vec<u8>> {
    let mut probe: Vec<u8> = Vec::new();
    probe
        .try_reserve_exact(len)
        .map_err(|_| Error::OutOfMemory {
            bytes: len as u64,
            what,
        })?;
    drop(probe);
    // `vec!` of zeros asks the allocator for zeroed memory: a large buffer's
    // pages are touched only where an answer is written.
    Ok(vec![0u8; len])
}

/// What is wrong with a range, and what would fit, in one sentence.
pub fn range_problem(error: &RequestError, window: u32) -> String {
    let info = "`edudmactl info` shows the window";
    match *error {
        RequestError::ZeroLength => {
            "--len 0 moves nothing: a DMA transfer needs at least one byte".into()
        }
        RequestError::OffsetOutsideWindow { offset, window } => format!(
            "--offset {offset} is outside the {window}-byte window: use an offset below \
             {window} ({info})"
        ),
        RequestError::BeyondWindow { offset, length, .. } => format!(
            "--offset {offset} with --len {length} ends at byte {}, past the {window}-byte \
             window: at this offset use at most {} ({info})",
            offset.saturating_add(length),
            count_of(u64::from(window).saturating_sub(offset), "byte")
        ),
        ref other => format!("{other} ({info})"),
    }
}

/// A transfer that moved fewer bytes than asked is a protocol error.
fn expect_moved(operation: &str, moved: usize, asked: usize) -> Result<()> {
    if moved == asked {
        Ok(())
    } else {
        Err(Error::Protocol(format!(
            "{operation} moved {moved} of {asked} bytes"
        )))
    }
}
