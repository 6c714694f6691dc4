//! The dispatch fuzzer's one interpretation of an input: a [`Scenario`]
//! (from any bytes, through `arbitrary`) run on a [`SimMachine`] — `src/`
//! itself — with every invariant checked. The `cargo fuzz` target
//! (`fuzz/fuzz_targets/dispatch.rs`) and the stable proptest version
//! (`tests/fuzz_dispatch.rs`) both call [`run_bytes`], so they cannot drift.
//!
//! Invariants, after every operation and at the end:
//! - every call ends in a status of its request kind's documented set
//!   ([`allowed`]); a request the core's validation refuses gets exactly the
//!   core's status, with `Information` 0;
//! - an accepted request returns exactly its bytes: `Information` is the
//!   contract's, a read returns what the device holds (a shadow of the
//!   device buffer follows every accepted write), `DeviceInfo` and `Stats`
//!   are field values, never pool content ([`iomgr::POOL_CANARY`]);
//! - the verifier stays silent, nothing crashes or hangs, and
//!   [`SimMachine::finish`]'s leak check passes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use edudma_core::NtStatus;
use edudma_core::ioctl::{
    self, ControlRequest, DeviceInfo, Direction, FileRequest, SelfTestReport, Stats,
};
use zerocopy::FromBytes;

use crate::io::{FileId, IrpId, Major};
use crate::irql::Irql;
use crate::machine::iomgr::{POOL_CANARY, POOL_QUOTA, Submitted, UserBuffer, UserCall};
use crate::mdl::BufferLayout;
use crate::sched::MS;
use crate::sim::{DmaStrategy, SimConfig, SimMachine};
use crate::wdm::PnpMinor;

/// At most this many operations run per input (longer inputs are cut).
pub const MAX_OPS: usize = 24;

/// Bytes a caller commits at most for one buffer (a longer length
/// argument runs past them: the I/O manager's probe faults).
pub const MAX_COMMIT: u32 = 3 * 4096;

/// The machine a scenario runs on.
#[derive(Arbitrary, Clone, Debug)]
pub struct MachineChoice {
    /// The seed (schedule included).
    pub seed: u16,
    /// 0–3: `DmaStrategy`.
    pub strategy: u8,
    /// The 4096-byte window of a fixed QEMU, else 4095.
    pub full_window: bool,
    /// Message-signalled interrupts.
    pub msi: bool,
    /// Asynchronous channel allocation only.
    pub async_only: bool,
    /// One map register (every page a split) instead of 16.
    pub one_map_register: bool,
    /// 1 or 2 CPUs.
    pub two_cpus: bool,
    /// Percent of kernel calls that preempt, 0–31.
    pub preempt: u8,
}

/// A length argument, at and past every boundary.
#[derive(Clone, Copy, Debug)]
pub enum Len {
    /// 0.
    Zero,
    /// 1.
    One,
    /// `size_of::<DmaHeader>()`.
    Header,
    /// The size of one of the contract's structures, or one less.
    Struct(u8),
    /// The window less one.
    WindowLess1,
    /// The window.
    Window,
    /// The window plus one.
    WindowPlus1,
    /// A page.
    Page,
    /// Anything up to 64 KiB.
    Small(u16),
    /// Anything (mostly past what the caller committed).
    Huge(u32),
}

/// A buffer argument.
#[derive(Clone, Copy, Debug)]
pub enum Buf {
    /// A NULL pointer with this length.
    Null(Len),
    /// A valid buffer; its contents start from the byte given.
    Valid(Len, u8),
    /// A pointer whose committed bytes end before its length.
    Short(Len),
}

/// A device or file offset.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Offset {
    /// 0.
    Zero,
    /// The window less one.
    WindowLess1,
    /// The window.
    Window,
    /// 4096.
    Page,
    /// Anything below 8 KiB.
    Near(u16),
    /// A negative offset.
    Negative(i64),
    /// Anything.
    Any(i64),
}

/// The input of a control request.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    /// No input (NULL, 0 bytes).
    None,
    /// A `DmaHeader` with this offset; `flags` non-zero when `bad_flags`.
    Header(Offset, bool),
    /// Any buffer.
    Raw(Buf),
}

/// A control code.
#[derive(Clone, Copy, Debug)]
pub enum Code {
    /// One of the contract's codes.
    Known(u8),
    /// One of the contract's codes with other method bits.
    OtherMethod(u8, u8),
    /// Any code.
    Any(u32),
}

/// A PnP or power event, as the PnP and power managers send them.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    /// `IRP_MN_QUERY_STOP_DEVICE`, then the stop (or the cancel, if refused).
    Stop,
    /// `IRP_MN_START_DEVICE` after a stop.
    Start,
    /// A query-stop the PnP manager cancels.
    QueryStopCancelled,
    /// A query-remove the PnP manager cancels.
    QueryRemoveCancelled,
    /// A system sleep and wake.
    Sleep,
    /// `IRP_MN_SURPRISE_REMOVAL`.
    SurpriseRemoval,
}

/// One thing the callers, the PnP manager or time do.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// `DeviceIoControl` on handle `file`.
    Control {
        /// The handle (0–3).
        file: u8,
        /// The code.
        code: Code,
        /// The input.
        input: Input,
        /// The output buffer.
        output: Buf,
    },
    /// `ReadFile`.
    Read {
        /// The handle.
        file: u8,
        /// `ByteOffset`.
        offset: Offset,
        /// The buffer.
        buffer: Buf,
    },
    /// `WriteFile`.
    Write {
        /// The handle.
        file: u8,
        /// `ByteOffset`.
        offset: Offset,
        /// The buffer.
        buffer: Buf,
    },
    /// A well-formed transfer inside the window (so that data moves often):
    /// `offset` and `length` are reduced into it.
    Transfer {
        /// The handle.
        file: u8,
        /// A write (else a read).
        write: bool,
        /// Through the DMA IOCTLs (else `ReadFile`/`WriteFile`).
        ioctl: bool,
        /// Offset, modulo the window.
        offset: u16,
        /// Length, reduced to fit.
        length: u16,
        /// First byte of the data.
        fill: u8,
    },
    /// `IoCancelIrp` now of the n-th request in flight.
    Cancel(u8),
    /// `IoCancelIrp` of the n-th request in flight after some milliseconds.
    CancelLater(u8, u8),
    /// The last handle of a file object closes (`IRP_MJ_CLEANUP`).
    Close(u8),
    /// `CreateFile` of a name below the device (must be refused).
    OpenBelow,
    /// Wait for every request in flight.
    Settle,
    /// Let virtual time pass (milliseconds).
    RunFor(u8),
    /// A PnP or power event.
    Pnp(Event),
}

// Weighted choices: most calls should be well-formed enough to reach the
// engine, and a surprise removal (which ends the device's life) rare.

impl<'a> Arbitrary<'a> for Len {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=19u8)? {
            0 | 1 => Len::Zero,
            2 => Len::One,
            3 => Len::Header,
            4..=6 => Len::Struct(u.arbitrary()?),
            7 => Len::WindowLess1,
            8 => Len::Window,
            9 => Len::WindowPlus1,
            10 => Len::Page,
            11 => Len::Huge(u.arbitrary()?),
            _ => Len::Small(u.arbitrary::<u16>()? % 4200),
        })
    }
}

impl<'a> Arbitrary<'a> for Buf {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=9u8)? {
            0 => Buf::Null(u.arbitrary()?),
            1 => Buf::Short(u.arbitrary()?),
            _ => Buf::Valid(u.arbitrary()?, u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=9u8)? {
            0..=3 => Input::None,
            4..=6 => Input::Header(u.arbitrary()?, u.int_in_range(0..=7u8)? == 0),
            _ => Input::Raw(u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Code {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=19u8)? {
            0..=2 => Code::OtherMethod(u.arbitrary()?, u.arbitrary()?),
            3..=4 => Code::Any(u.arbitrary()?),
            _ => Code::Known(u.arbitrary()?),
        })
    }
}

impl<'a> Arbitrary<'a> for Event {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        Ok(match u.int_in_range(0..=11u8)? {
            0..=2 => Event::Stop,
            3..=5 => Event::Start,
            6 => Event::QueryStopCancelled,
            7 => Event::QueryRemoveCancelled,
            8..=10 => Event::Sleep,
            _ => Event::SurpriseRemoval,
        })
    }
}

impl<'a> Arbitrary<'a> for Op {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let file = u.arbitrary::<u8>()? % 4;
        Ok(match u.int_in_range(0..=99u8)? {
            0..=29 => Op::Control {
                file,
                code: u.arbitrary()?,
                input: u.arbitrary()?,
                output: u.arbitrary()?,
            },
            30..=41 => Op::Read {
                file,
                offset: u.arbitrary()?,
                buffer: u.arbitrary()?,
            },
            42..=52 => Op::Transfer {
                file,
                write: u.arbitrary()?,
                ioctl: u.arbitrary()?,
                offset: u.arbitrary()?,
                length: u.arbitrary()?,
                fill: u.arbitrary()?,
            },
            53..=64 => Op::Write {
                file,
                offset: u.arbitrary()?,
                buffer: u.arbitrary()?,
            },
            65..=69 => Op::Cancel(u.arbitrary()?),
            70..=74 => Op::CancelLater(u.arbitrary()?, u.arbitrary()?),
            75..=78 => Op::Close(file),
            79..=80 => Op::OpenBelow,
            81..=88 => Op::Settle,
            89..=93 => Op::RunFor(u.arbitrary()?),
            _ => Op::Pnp(u.arbitrary()?),
        })
    }
}

/// One input of the fuzzer.
#[derive(Arbitrary, Clone, Debug)]
pub struct Scenario {
    /// The machine.
    pub machine: MachineChoice,
    /// What happens on it.
    pub ops: Vec<Op>,
}

/// What a run did, for the fuzzer's and the test's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Operations run.
    pub ops: usize,
    /// Requests the driver got.
    pub sent: usize,
    /// Calls the I/O manager refused itself.
    pub refused: usize,
    /// Requests completed with success.
    pub succeeded: usize,
    /// Requests the core's validation refused.
    pub rejected: usize,
    /// Requests completed as cancelled.
    pub cancelled: usize,
    /// Requests sent on a handle after a surprise removal.
    pub after_removal: usize,
}

/// Decode `data` into a scenario and run it. `Err` names the broken invariant.
pub fn run_bytes(data: &[u8]) -> Result<Outcome, String> {
    run(&scenario_of(data))
}

/// The scenario `data` describes: the machine, then operations until the
/// bytes run out (at most [`MAX_OPS`]). Any bytes are a scenario.
pub fn scenario_of(data: &[u8]) -> Scenario {
    let mut u = Unstructured::new(data);
    // Out of bytes, `arbitrary` gives zeros: never an error for these types.
    let machine = MachineChoice::arbitrary(&mut u).unwrap_or(MachineChoice {
        seed: 0,
        strategy: 0,
        full_window: false,
        msi: false,
        async_only: false,
        one_map_register: false,
        two_cpus: false,
        preempt: 0,
    });
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    Scenario { machine, ops }
}

const CODES: [u32; 6] = ioctl::CONTROL_CODES;

/// What the contract says a request becomes, from the parameters the
/// driver sees.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Predicted {
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
struct Life {
    cancel_asked: bool,
    removed: bool,
    power_or_pnp: bool,
}

struct InFlight {
    op: usize,
    file: u64,
    predicted: Predicted,
    life: Life,
}

/// Which values each byte of the device buffer may hold (a write cut short
/// leaves either its byte or the old one).
struct Shadow {
    possible: Vec<[u64; 4]>,
}

impl Shadow {
    fn new(buffer: &[u8; 4096]) -> Self {
        let mut s = Self {
            possible: vec![[0; 4]; 4096],
        };
        for (i, b) in buffer.iter().enumerate() {
            s.set(i, *b);
        }
        s
    }
    fn set(&mut self, i: usize, b: u8) {
        self.possible[i] = [0; 4];
        self.add(i, b);
    }
    fn add(&mut self, i: usize, b: u8) {
        self.possible[i][usize::from(b >> 6)] |= 1 << (b & 63);
    }
    fn may_be(&self, i: usize, b: u8) -> bool {
        self.possible[i][usize::from(b >> 6)] & (1 << (b & 63)) != 0
    }
    fn check(&self, what: &str, offset: usize, bytes: &[u8]) -> Result<(), String> {
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

struct Run {
    sim: SimMachine,
    window: u32,
    strategy: DmaStrategy,
    msi: bool,
    map_registers: u32,
    shadow: Shadow,
    in_flight: BTreeMap<IrpId, InFlight>,
    /// Generation of each handle: a closed handle's next use is a new file object.
    generation: [u64; 4],
    opened: Vec<u64>,
    stopped: bool,
    removed: bool,
    outcome: Outcome,
    log: String,
}

fn len_value(len: Len, window: u32) -> u32 {
    const SIZES: [u32; 4] = [
        size_of::<DeviceInfo>() as u32,
        size_of::<Stats>() as u32,
        size_of::<SelfTestReport>() as u32,
        size_of::<ioctl::DmaHeader>() as u32,
    ];
    match len {
        Len::Zero => 0,
        Len::One => 1,
        Len::Header => 8,
        Len::Struct(n) => SIZES[usize::from(n % 4)] - u32::from(n & 4 != 0),
        Len::WindowLess1 => window - 1,
        Len::Window => window,
        Len::WindowPlus1 => window + 1,
        Len::Page => 4096,
        Len::Small(n) => u32::from(n),
        Len::Huge(n) => n,
    }
}

fn offset_value(offset: Offset, window: u32) -> i64 {
    match offset {
        Offset::Zero => 0,
        Offset::WindowLess1 => i64::from(window) - 1,
        Offset::Window => i64::from(window),
        Offset::Page => 4096,
        Offset::Near(n) => i64::from(n % 8192),
        Offset::Negative(n) => -(n.unsigned_abs().max(1) as i64 & i64::MAX).max(1),
        Offset::Any(n) => n,
    }
}

fn user_buffer(buf: Buf, window: u32) -> UserBuffer {
    match buf {
        Buf::Null(len) => UserBuffer::null(len_value(len, window)),
        Buf::Valid(len, first) => {
            let length = len_value(len, window);
            let committed = length.min(MAX_COMMIT);
            let contents = (0..committed)
                .map(|i| first.wrapping_add((i.wrapping_mul(31) ^ (i >> 8)) as u8))
                .collect();
            UserBuffer {
                present: true,
                length,
                committed,
                contents,
            }
        }
        Buf::Short(len) => {
            let length = len_value(len, window).max(1);
            UserBuffer {
                present: true,
                length,
                committed: length / 2,
                contents: vec![0x3C; (length / 2).min(MAX_COMMIT) as usize],
            }
        }
    }
}

/// The bytes the driver finds at `SystemBuffer` for a control input.
fn input_as_driver_sees(code: u32, input: &UserBuffer) -> Vec<u8> {
    // Past the pool quota the I/O manager refuses the call: no prediction
    // is needed (nor a buffer of gigabytes).
    if ioctl::method_of(code) == ioctl::METHOD_NEITHER
        || input.length == 0
        || input.length > POOL_QUOTA
    {
        return Vec::new();
    }
    let mut b = vec![POOL_CANARY; input.length as usize];
    if input.present {
        let n = input.contents.len().min(b.len());
        b[..n].copy_from_slice(&input.contents[..n]);
    }
    b
}

fn predict_file(r: Result<FileRequest, ioctl::RequestError>, data: &[u8]) -> Predicted {
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

/// Run a scenario. `Err` names the broken invariant and the operations run.
pub fn run(scenario: &Scenario) -> Result<Outcome, String> {
    run_with(scenario, |_| {})
}

/// [`run`] on a machine `tweak` changed (the tests that show the checks
/// catch a misbehaving device use it).
pub fn run_with(
    scenario: &Scenario,
    tweak: impl FnOnce(&mut SimConfig),
) -> Result<Outcome, String> {
    let m = &scenario.machine;
    let strategy = match m.strategy % 4 {
        0 => DmaStrategy::V3Packet,
        1 => DmaStrategy::V1Packet,
        2 => DmaStrategy::SgList,
        _ => DmaStrategy::CommonBuffer,
    };
    let config = SimConfig {
        seed: u64::from(m.seed),
        window: if m.full_window { 4096 } else { 4095 },
        qemu_fixed_range_check: m.full_window,
        dma_strategy: strategy,
        msi: m.msi,
        allocation: if m.async_only {
            crate::sim::Allocation::Async
        } else {
            crate::sim::Allocation::Sync
        },
        map_registers: if m.one_map_register { 1 } else { 16 },
        cpus: if m.two_cpus { 2 } else { 1 },
        preempt_percent: u32::from(m.preempt % 32),
        timeout: Duration::from_secs(20),
        ..SimConfig::default()
    };
    let mut config = config;
    tweak(&mut config);
    let sim = SimMachine::new(config.clone()).map_err(|e| format!("boot: {e}"))?;
    let shadow = Shadow::new(&sim.device_buffer());
    let mut run = Run {
        sim,
        window: config.window,
        strategy,
        msi: config.msi,
        map_registers: config.map_registers,
        shadow,
        in_flight: BTreeMap::new(),
        generation: [0; 4],
        opened: Vec::new(),
        stopped: false,
        removed: false,
        outcome: Outcome::default(),
        log: String::new(),
    };
    let fail = |e: String, log: &str| format!("{e}\n{config:?}\noperations:\n{log}");
    if let Err(e) = run.all(&scenario.ops) {
        return Err(fail(e, &run.log));
    }
    let Run {
        sim, log, outcome, ..
    } = run;
    match sim.finish() {
        Ok(_) => Ok(outcome),
        Err(e) => Err(fail(format!("finish (removal, leak check): {e}"), &log)),
    }
}

impl Run {
    fn all(&mut self, ops: &[Op]) -> Result<(), String> {
        for (i, op) in ops.iter().take(MAX_OPS).enumerate() {
            let _ = writeln!(self.log, "  {i}: {op:?}");
            self.op(i, *op).map_err(|e| format!("op {i}: {e}"))?;
            self.quiet().map_err(|e| format!("op {i}: {e}"))?;
            self.outcome.ops += 1;
        }
        if self.stopped {
            self.event(Event::Start)?;
        }
        self.settle()?;
        self.check_device_buffer()
    }

    fn quiet(&self) -> Result<(), String> {
        if let Some(c) = self.sim.crash() {
            return Err(format!("crash: {c}"));
        }
        let report = self.sim.verifier_report();
        if let Some(v) = report.violations.first() {
            return Err(format!("verifier: {v:?}"));
        }
        Ok(())
    }

    /// The file object of `handle`, opened first if it is new; `None` once
    /// the device is gone and the handle was never opened (its interface
    /// is disabled: no new open reaches the driver).
    fn file(&mut self, handle: u8) -> Result<Option<FileId>, String> {
        let h = usize::from(handle % 4);
        let id = 1 + h as u64 * 1000 + self.generation[h];
        if !self.opened.contains(&id) {
            if self.removed {
                return Ok(None);
            }
            self.opened.push(id);
            let status = self.sim.machine().run(0, Irql::Passive, move |d, sys| {
                d.create(sys, FileId(id), "")
            });
            if status != Some(NtStatus::SUCCESS) {
                return Err(format!("open of the device: {status:?}"));
            }
        }
        Ok(Some(FileId(id)))
    }

    fn op(&mut self, index: usize, op: Op) -> Result<(), String> {
        let w = self.window;
        match op {
            Op::Control {
                file,
                code,
                input,
                output,
            } => {
                let code = match code {
                    Code::Known(n) => CODES[usize::from(n) % CODES.len()],
                    Code::OtherMethod(n, m) => {
                        let c = CODES[usize::from(n) % CODES.len()];
                        let other = (ioctl::method_of(c) + 1 + u32::from(m % 3)) % 4;
                        (c & !3) | other
                    }
                    Code::Any(c) => c,
                };
                let input = match input {
                    Input::None => UserBuffer::null(0),
                    Input::Header(offset, bad_flags) => {
                        let mut h = Vec::with_capacity(8);
                        h.extend_from_slice(&(offset_value(offset, w) as u32).to_le_bytes());
                        h.extend_from_slice(&u32::from(bad_flags).to_le_bytes());
                        UserBuffer::of(&h)
                    }
                    Input::Raw(b) => user_buffer(b, w),
                };
                let output = user_buffer(output, w);
                let seen = input_as_driver_sees(code, &input);
                let method = ioctl::method_of(code);
                let has_mdl = (method == ioctl::METHOD_IN_DIRECT
                    || method == ioctl::METHOD_OUT_DIRECT)
                    && output.present
                    && output.length > 0;
                let predicted =
                    match ioctl::validate_control(code, &seen, output.length, has_mdl, w) {
                        Ok(ControlRequest::GetInfo) => Predicted::Info,
                        Ok(ControlRequest::GetStats) => Predicted::Stats,
                        Ok(ControlRequest::ResetStats) => Predicted::Reset,
                        Ok(ControlRequest::SelfTest) => Predicted::SelfTest,
                        Ok(ControlRequest::Dma(d)) => Predicted::Dma {
                            direction: d.direction,
                            offset: d.device_offset,
                            length: d.length,
                            data: if d.direction == Direction::ToDevice {
                                prefix(&output.contents, d.length)
                            } else {
                                Vec::new()
                            },
                        },
                        Err(e) => Predicted::Rejected(e.status()),
                    };
                let call = UserCall::DeviceIoControl {
                    code,
                    input,
                    output,
                };
                self.send(index, file, call, predicted)
            }
            Op::Read {
                file,
                offset,
                buffer,
            } => {
                let offset = offset_value(offset, w);
                let buffer = user_buffer(buffer, w);
                let predicted = predict_file(
                    ioctl::validate_read(offset, buffer.length, buffer.length > 0, w),
                    &[],
                );
                self.send(
                    index,
                    file,
                    UserCall::ReadFile { offset, buffer },
                    predicted,
                )
            }
            Op::Write {
                file,
                offset,
                buffer,
            } => {
                let offset = offset_value(offset, w);
                let buffer = user_buffer(buffer, w);
                let predicted = predict_file(
                    ioctl::validate_write(offset, buffer.length, buffer.length > 0, w),
                    &buffer.contents,
                );
                self.send(
                    index,
                    file,
                    UserCall::WriteFile { offset, buffer },
                    predicted,
                )
            }
            Op::Transfer {
                file,
                write,
                ioctl,
                offset,
                length,
                fill,
            } => {
                let offset = u32::from(offset) % w;
                let length = 1 + u32::from(length) % (w - offset);
                let (at, len) = (Offset::Near(offset as u16), Len::Small(length as u16));
                let buffer = Buf::Valid(len, fill);
                let op = match (ioctl, write) {
                    (true, _) => Op::Control {
                        file,
                        code: Code::Known(if write { 4 } else { 5 }),
                        input: Input::Header(at, false),
                        output: buffer,
                    },
                    (false, true) => Op::Write {
                        file,
                        offset: at,
                        buffer,
                    },
                    (false, false) => Op::Read {
                        file,
                        offset: at,
                        buffer,
                    },
                };
                self.op(index, op)
            }
            Op::Cancel(n) => {
                if let Some(irp) = self.nth_incomplete(n) {
                    self.mark(irp);
                    self.sim
                        .machine()
                        .cancel(irp)
                        .map_err(|c| format!("cancel: {c}"))?;
                }
                self.reap()
            }
            Op::CancelLater(n, ms) => {
                if let Some(irp) = self.nth_incomplete(n) {
                    self.mark(irp);
                    self.sim
                        .cancel_after(irp, Duration::from_millis(u64::from(ms)));
                }
                Ok(())
            }
            Op::Close(handle) => {
                let h = usize::from(handle % 4);
                let id = 1 + h as u64 * 1000 + self.generation[h];
                if self.opened.contains(&id) {
                    for f in self.in_flight.values_mut() {
                        if f.file == id {
                            f.life.cancel_asked = true;
                        }
                    }
                    let status = self
                        .sim
                        .machine()
                        .cleanup(FileId(id))
                        .map_err(|c| format!("cleanup: {c}"))?;
                    if status != NtStatus::SUCCESS {
                        return Err(format!("IRP_MJ_CLEANUP: {status}"));
                    }
                    self.generation[h] += 1;
                }
                self.reap()
            }
            Op::OpenBelow => {
                let id = 900_000 + index as u64;
                let status = self.sim.machine().run(0, Irql::Passive, move |d, sys| {
                    d.create(sys, FileId(id), "\\x")
                });
                if !self.removed && status != Some(NtStatus::ACCESS_DENIED) {
                    return Err(format!("a namespace open got {status:?}"));
                }
                Ok(())
            }
            Op::Settle => {
                if !self.stopped {
                    self.settle()?;
                    self.check_device_buffer()?;
                }
                Ok(())
            }
            Op::RunFor(ms) => {
                self.sim
                    .run_for(Duration::from_millis(u64::from(ms) * 4))
                    .map_err(|e| format!("run: {e}"))?;
                self.reap()
            }
            Op::Pnp(event) => {
                for f in self.in_flight.values_mut() {
                    f.life.power_or_pnp = true;
                }
                self.event(event)?;
                self.reap()
            }
        }
    }

    fn event(&mut self, event: Event) -> Result<(), String> {
        let _ = writeln!(self.log, "     (event {event:?})");
        let expect_success = |what: &str, r: Result<NtStatus, crate::SimError>| match r {
            Ok(s) if s == NtStatus::SUCCESS => Ok(()),
            other => Err(format!("{what}: {other:?}")),
        };
        match event {
            _ if self.removed => Ok(()),
            Event::Stop if !self.stopped => {
                let query = self
                    .sim
                    .pnp_irp(PnpMinor::QueryStopDevice)
                    .map_err(|e| format!("query stop: {e}"))?;
                if query.is_success() {
                    expect_success("stop", self.sim.stop_device())?;
                    self.stopped = true;
                    Ok(())
                } else {
                    expect_success("cancel stop", self.sim.pnp_irp(PnpMinor::CancelStopDevice))
                }
            }
            Event::Start if self.stopped => {
                expect_success("start", self.sim.start_device())?;
                self.stopped = false;
                Ok(())
            }
            Event::QueryStopCancelled | Event::QueryRemoveCancelled if !self.stopped => {
                let (query, cancel) = if matches!(event, Event::QueryStopCancelled) {
                    (PnpMinor::QueryStopDevice, PnpMinor::CancelStopDevice)
                } else {
                    (PnpMinor::QueryRemoveDevice, PnpMinor::CancelRemoveDevice)
                };
                let _ = self
                    .sim
                    .pnp_irp(query)
                    .map_err(|e| format!("{query:?}: {e}"))?;
                expect_success("cancel", self.sim.pnp_irp(cancel))
            }
            Event::Sleep if !self.stopped => {
                let s = self.sim.sleep().map_err(|e| format!("sleep: {e}"))?;
                if !s.is_success() {
                    return Err(format!("sleep: {s}"));
                }
                Ok(())
            }
            Event::SurpriseRemoval => {
                expect_success("surprise removal", self.sim.surprise_remove())?;
                self.removed = true;
                for f in self.in_flight.values_mut() {
                    f.life.removed = true;
                }
                Ok(())
            }
            // Not what the PnP manager sends in this state.
            _ => Ok(()),
        }
    }

    fn nth_incomplete(&mut self, n: u8) -> Option<IrpId> {
        let live: Vec<IrpId> = self
            .in_flight
            .keys()
            .copied()
            .filter(|id| !self.sim.machine().is_complete(*id))
            .collect();
        (!live.is_empty()).then(|| live[usize::from(n) % live.len()])
    }

    fn mark(&mut self, irp: IrpId) {
        if let Some(f) = self.in_flight.get_mut(&irp) {
            f.life.cancel_asked = true;
        }
    }

    fn send(
        &mut self,
        index: usize,
        handle: u8,
        call: UserCall,
        predicted: Predicted,
    ) -> Result<(), String> {
        // A handle opened before a surprise removal still sends requests.
        let Some(file) = self.file(handle)? else {
            return Ok(());
        };
        let layout = BufferLayout {
            byte_offset: Some(u32::from(handle) * 1237 + index as u32 * 509),
            ..BufferLayout::default()
        };
        let submitted = self
            .sim
            .machine()
            .send_user(file, &call, &layout)
            .map_err(|c| format!("send: {c}"))?;
        match submitted {
            Submitted::Refused(_) => self.outcome.refused += 1,
            Submitted::Sent(irp) => {
                self.outcome.sent += 1;
                self.outcome.after_removal += usize::from(self.removed);
                let _ = writeln!(self.log, "     -> {irp:?}, predicted {predicted:?}");
                self.in_flight.insert(
                    irp,
                    InFlight {
                        op: index,
                        file: file.0,
                        predicted,
                        life: Life {
                            removed: self.removed,
                            ..Life::default()
                        },
                    },
                );
            }
        }
        self.reap()
    }

    /// Wait for every request in flight.
    fn settle(&mut self) -> Result<(), String> {
        let ids: Vec<IrpId> = self.in_flight.keys().copied().collect();
        self.sim
            .machine()
            .run_until(|m| ids.iter().all(|id| m.is_complete(*id)), 60_000 * MS)
            .map_err(|c| format!("settle: {c}"))?;
        self.reap()
    }

    /// Check and collect every completed request, in completion order (the
    /// order the device ran them: StartIo runs one at a time).
    fn reap(&mut self) -> Result<(), String> {
        let mut done: Vec<(u64, IrpId)> = self.sim.machine().sys().with(|k| {
            self.in_flight
                .keys()
                .filter_map(|id| {
                    let i = k.irps.get(*id)?;
                    i.completed.then(|| (i.completed_at.unwrap_or(0), *id))
                })
                .collect()
        });
        done.sort();
        for (_, id) in done {
            let Some(f) = self.in_flight.remove(&id) else {
                continue;
            };
            let major = self
                .sim
                .machine()
                .sys()
                .with(|k| k.irps.get(id).map(|i| i.major));
            let Some(result) = self.sim.machine().collect(id) else {
                return Err(format!("{id:?} completed but not collectable"));
            };
            let major = major.ok_or("no major")?;
            self.check(&f, &major, result)
                .map_err(|e| format!("request of op {} ({id:?}): {e}", f.op))?;
        }
        Ok(())
    }

    fn check(
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
    fn check_info(&mut self, bytes: &[u8]) -> Result<(), String> {
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

    fn check_device_buffer(&self) -> Result<(), String> {
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
fn prefix(data: &[u8], n: u32) -> Vec<u8> {
    data.get(..n as usize).unwrap_or(data).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CorruptByte;

    fn machine() -> MachineChoice {
        MachineChoice {
            seed: 3,
            strategy: 0,
            full_window: false,
            msi: false,
            async_only: false,
            one_map_register: false,
            two_cpus: false,
            preempt: 0,
        }
    }

    fn write_then_read() -> Scenario {
        let at = Offset::Near(40);
        Scenario {
            machine: machine(),
            ops: vec![
                Op::Write {
                    file: 0,
                    offset: at,
                    buffer: Buf::Valid(Len::Small(300), 9),
                },
                Op::Settle,
                Op::Read {
                    file: 1,
                    offset: at,
                    buffer: Buf::Valid(Len::Small(300), 0),
                },
                Op::Settle,
            ],
        }
    }

    #[test]
    fn a_healthy_device_passes() {
        let o = run(&write_then_read()).expect("no broken invariant");
        assert_eq!((o.sent, o.succeeded), (2, 2));
    }

    /// The checks can fail: a byte flipped on the way into the device is
    /// seen in the device buffer, one flipped on the way out in the data read.
    #[test]
    fn a_corrupting_device_is_caught() {
        for (transfer, seen) in [(1, "device buffer"), (2, "data read")] {
            let e = run_with(&write_then_read(), |c| {
                c.corrupt_byte_injection = Some(CorruptByte { transfer, byte: 17 });
            })
            .expect_err("a flipped byte");
            assert!(e.contains(seen), "transfer {transfer}: {e}");
        }
    }

    #[test]
    fn the_documented_sets_hold_no_stray_status() {
        let majors = [
            Major::Read {
                byte_offset: 0,
                length: 1,
            },
            Major::Write {
                byte_offset: 0,
                length: 1,
            },
            Major::DeviceControl {
                code: 0,
                input_length: 0,
                output_length: 0,
            },
        ];
        for major in majors {
            let set = allowed(&major);
            for stray in [
                NtStatus::PENDING,
                NtStatus::DEVICE_HARDWARE_ERROR,
                NtStatus::IO_TIMEOUT,
                NtStatus::INVALID_DEVICE_STATE,
                NtStatus::ACCESS_DENIED,
            ] {
                assert!(!set.contains(&stray), "{major:?}: {stray}");
            }
            assert!(set.contains(&NtStatus::SUCCESS));
        }
        // Only a read has an end of file; only a control code can be unknown.
        assert!(allowed(&majors[0]).contains(&NtStatus::END_OF_FILE));
        assert!(!allowed(&majors[1]).contains(&NtStatus::END_OF_FILE));
        assert!(!allowed(&majors[0]).contains(&NtStatus::INVALID_DEVICE_REQUEST));
    }

    #[test]
    fn the_shadow_allows_only_what_was_written() {
        let mut s = Shadow::new(&[0u8; 4096]);
        s.set(5, 0xAB);
        assert!(s.check("x", 5, &[0xAB]).is_ok());
        assert!(s.check("x", 5, &[0]).is_err());
        s.add(5, 0x01);
        assert!(s.check("x", 5, &[0x01]).is_ok() && s.check("x", 5, &[0xAB]).is_ok());
        assert!(s.check("x", 4, &[0xFF]).is_err());
    }
}
