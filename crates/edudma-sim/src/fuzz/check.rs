//! What the contract predicts for a request, and the checks of its completion.

use edudma_core::NtStatus;
use edudma_core::ioctl::{self, DeviceInfo, Direction, FileRequest, SelfTestReport, Stats};
use zerocopy::FromBytes;

use super::Run;
use crate::io::Major;

/// What the contract says a request becomes, from the parameters the
/// driver sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Predicted {
    /// Refused by validation with this status.
    Rejected(NtStatus),
    /// Completed at once with this status and no bytes (empty, end of file).
    Immediate(NtStatus),
    /// A transfer.
    Dma {
        direction: Direction,
        offset: u32,
        length: u32,
        /// The bytes a write sends.
        data: Vec<u8>,
    },
    /// Answered from the engine's state.
    Info,
    /// As above.
    Stats,
    /// As above.
    Reset,
    /// Queued for StartIo.
    SelfTest,
}

impl Predicted {
    /// Statuses the contract documents for this kind of request, beyond the
    /// predicted one: the request's life may end it otherwise.
    fn lifecycle_ok(&self, status: NtStatus, life: &Life) -> bool {
        let queued = matches!(self, Predicted::Dma { .. } | Predicted::SelfTest);
        (status == NtStatus::CANCELLED && queued && life.cancel_asked)
            // The engine's `StopReason::Stop`: a request that meets a
            // stopping device it cannot hold.
            || (status == NtStatus::DEVICE_NOT_READY && queued && life.power_or_pnp)
            || (life.removed
                && [
                    NtStatus::DEVICE_REMOVED,
                    NtStatus::DELETE_PENDING,
                    NtStatus::CANCELLED,
                ]
                .contains(&status))
    }
}

/// What happened around a request while it was in flight.
#[derive(Clone, Debug, Default)]
pub(super) struct Life {
    pub(super) cancel_asked: bool,
    pub(super) removed: bool,
    pub(super) power_or_pnp: bool,
}

pub(super) struct InFlight {
    pub(super) op: usize,
    pub(super) file: u64,
    pub(super) predicted: Predicted,
    pub(super) life: Life,
}

/// Which values each byte of the device buffer may hold (a write cut short
/// leaves either its byte or the old one).
pub(super) struct Shadow {
    possible: Vec<[u64; 4]>,
}

impl Shadow {
    pub(super) fn new(buffer: &[u8; 4096]) -> Self {
        let mut s = Self {
            possible: vec![[0; 4]; 4096],
        };
        for (i, b) in buffer.iter().enumerate() {
            s.set(i, *b);
        }
        s
    }
    pub(super) fn set(&mut self, i: usize, b: u8) {
        self.possible[i] = [0; 4];
        self.add(i, b);
    }
    pub(super) fn add(&mut self, i: usize, b: u8) {
        self.possible[i][usize::from(b >> 6)] |= 1 << (b & 63);
    }
    pub(super) fn may_be(&self, i: usize, b: u8) -> bool {
        self.possible[i][usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
    pub(super) fn check(&self, what: &str, offset: usize, bytes: &[u8]) -> Result<(), String> {
        for (i, b) in bytes.iter().enumerate() {
            if !self.may_be(offset + i, *b) {
                return Err(format!(
                    "{what}: byte {} is 0x{b:02X}, which no accepted write put there",
                    offset + i
                ));
            }
        }
        Ok(())
    }
}

pub(super) fn predict_file(r: Result<FileRequest, ioctl::RequestError>, data: &[u8]) -> Predicted {
    match r {
        Ok(FileRequest::Empty) => Predicted::Immediate(NtStatus::SUCCESS),
        Ok(FileRequest::EndOfFile) => Predicted::Immediate(NtStatus::END_OF_FILE),
        Ok(FileRequest::Dma(d)) => Predicted::Dma {
            direction: d.direction,
            offset: d.device_offset,
            length: d.length,
            data: if d.direction == Direction::ToDevice {
                prefix(data, d.length)
            } else {
                Vec::new()
            },
        },
        Err(e) => Predicted::Rejected(e.status()),
    }
}

/// The documented statuses of a request kind (the contract's table, the
/// validation errors of `RequestError::status`, the life of a request).
pub fn allowed(major: &Major) -> &'static [NtStatus] {
    const VALIDATION: [NtStatus; 5] = [
        NtStatus::INVALID_DEVICE_REQUEST,
        NtStatus::INFO_LENGTH_MISMATCH,
        NtStatus::BUFFER_TOO_SMALL,
        NtStatus::INVALID_PARAMETER,
        NtStatus::INVALID_BUFFER_SIZE,
    ];
    const CONTROL: [NtStatus; 10] = [
        NtStatus::SUCCESS,
        VALIDATION[0],
        VALIDATION[1],
        VALIDATION[2],
        VALIDATION[3],
        VALIDATION[4],
        NtStatus::CANCELLED,
        NtStatus::DEVICE_NOT_READY,
        NtStatus::DEVICE_REMOVED,
        NtStatus::DELETE_PENDING,
    ];
    const READ: [NtStatus; 8] = [
        NtStatus::SUCCESS,
        NtStatus::END_OF_FILE,
        NtStatus::INVALID_PARAMETER,
        NtStatus::INVALID_BUFFER_SIZE,
        NtStatus::CANCELLED,
        NtStatus::DEVICE_NOT_READY,
        NtStatus::DEVICE_REMOVED,
        NtStatus::DELETE_PENDING,
    ];
    const WRITE: [NtStatus; 7] = [
        NtStatus::SUCCESS,
        NtStatus::INVALID_PARAMETER,
        NtStatus::INVALID_BUFFER_SIZE,
        NtStatus::CANCELLED,
        NtStatus::DEVICE_NOT_READY,
        NtStatus::DEVICE_REMOVED,
        NtStatus::DELETE_PENDING,
    ];
    match major {
        Major::DeviceControl { .. } => &CONTROL,
        Major::Read { .. } => &READ,
        Major::Write { .. } => &WRITE,
    }
}

impl Run {
    pub(super) fn check(
        &mut self,
        f: &InFlight,
        major: &Major,
        r: crate::machine::IrpResult,
    ) -> Result<(), String> {
        let status = r.status;
        if !allowed(major).contains(&status) {
            return Err(format!("{status} is not documented for {major:?}"));
        }
        if status.is_error() && r.information != 0 {
            return Err(format!("{status} with Information {}", r.information));
        }
        if f.predicted != Predicted::Rejected(status) && f.predicted.lifecycle_ok(status, &f.life) {
            if status == NtStatus::CANCELLED {
                self.outcome.cancelled += 1;
            }
            // A transfer cut short may have moved some of its bytes.
            if let Predicted::Dma {
                direction: Direction::ToDevice,
                offset,
                data,
                ..
            } = &f.predicted
            {
                for (i, b) in data.iter().enumerate() {
                    self.shadow.add(*offset as usize + i, *b);
                }
            }
            return Ok(());
        }
        match &f.predicted {
            Predicted::Rejected(expected) => {
                self.outcome.rejected += 1;
                expect(status, *expected)
            }
            Predicted::Immediate(expected) => {
                expect(status, *expected)?;
                expect_len(r.information, 0)
            }
            Predicted::Dma {
                direction,
                offset,
                length,
                data,
            } => {
                expect(status, NtStatus::SUCCESS)?;
                expect_len(r.information, *length as usize)?;
                self.outcome.succeeded += 1;
                match direction {
                    Direction::ToDevice => {
                        for (i, b) in data.iter().enumerate() {
                            self.shadow.set(*offset as usize + i, *b);
                        }
                        Ok(())
                    }
                    Direction::FromDevice => {
                        self.shadow
                            .check("data read", *offset as usize, &r.output)?;
                        expect_len(r.output.len(), *length as usize)
                    }
                }
            }
            Predicted::Reset => {
                expect(status, NtStatus::SUCCESS)?;
                expect_len(r.information, 0)
            }
            Predicted::Info => {
                expect(status, NtStatus::SUCCESS)?;
                expect_len(r.information, size_of::<DeviceInfo>())?;
                self.check_info(&r.output)
            }
            Predicted::Stats => {
                expect(status, NtStatus::SUCCESS)?;
                expect_len(r.information, size_of::<Stats>())?;
                let s = Stats::read_from_bytes(&r.output).map_err(|_| "a short Stats")?;
                // Counters of at most a few hundred requests: a word of pool
                // content (or a kernel address) is far larger.
                for (i, word) in r.output.chunks(8).enumerate() {
                    let v = u64::from_le_bytes(word.try_into().unwrap_or_default());
                    if v > 1 << 24 {
                        return Err(format!("Stats word {i} is 0x{v:X}: {s:?}"));
                    }
                }
                Ok(())
            }
            Predicted::SelfTest => {
                expect(status, NtStatus::SUCCESS)?;
                expect_len(r.information, size_of::<SelfTestReport>())?;
                let rep =
                    SelfTestReport::read_from_bytes(&r.output).map_err(|_| "a short report")?;
                let all = ioctl::selftest_steps::ALL;
                if rep.passed & !all != 0 || rep.failed & !all != 0 || rep.passed & rep.failed != 0
                {
                    return Err(format!("self-test report with undefined bits: {rep:?}"));
                }
                if !f.life.power_or_pnp && !rep.all_passed() {
                    return Err(format!("self-test failed on a healthy device: {rep:?}"));
                }
                Ok(())
            }
        }
    }

    /// Every field of `DeviceInfo` is a value the driver defines.
    pub(super) fn check_info(&mut self, bytes: &[u8]) -> Result<(), String> {
        let i = DeviceInfo::read_from_bytes(bytes).map_err(|_| "a short DeviceInfo")?;
        let id = self.sim.machine().sys().with(|k| k.device.read(0, 4)) as u32;
        let want_irq = if self.msi { 2 } else { 1 };
        let ok = i.size == size_of::<DeviceInfo>() as u32
            && i.contract_version == ioctl::CONTRACT_VERSION
            && (self.removed || i.device_id == id)
            && (1..=3).contains(&i.dma_interface_version)
            && (1..=self.map_registers).contains(&i.map_registers)
            && i.dma_alignment <= 4096
            && i.dma_address_width == 28
            && i.scatter_gather <= 1
            && (self.removed || i.interrupt_kind == want_irq)
            && i.device_buffer_size == 4096
            && i.dma_window == self.window
            && i.allocation_policy <= 1
            && i.dma_strategy == self.strategy.code() as u32
            && i.requested_dma_strategy == self.strategy.code() as u32
            && i.reserved == 0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "DeviceInfo with a field the driver does not define: {i:?}"
            ))
        }
    }

    pub(super) fn check_device_buffer(&self) -> Result<(), String> {
        let buffer = self.sim.device_buffer();
        self.shadow.check("device buffer", 0, &buffer)
    }
}
fn expect(status: NtStatus, expected: NtStatus) -> Result<(), String> {
    if status == expected {
        Ok(())
    } else {
        Err(format!(
            "completed with {status}, the contract says {expected}"
        ))
    }
}

fn expect_len(actual: usize, expected: usize) -> Result<(), String> {
    if actual == expected {
        Ok(())
    } else {
        Err(format!(
            "Information {actual}, the contract says {expected}"
        ))
    }
}

/// The first `n` bytes a call sends (all of them when the caller committed
/// fewer: the I/O manager refuses that call, and the prediction is unused).
pub(super) fn prefix(data: &[u8], n: u32) -> Vec<u8> {
    data.get(..n as usize).unwrap_or(data).to_vec()
}
