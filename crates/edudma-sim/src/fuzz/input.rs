//! What a fuzzer input is: the machine, the operations, and their decoding from bytes.

use arbitrary::{Arbitrary, Unstructured};
use edudma_core::ioctl::{self, DeviceInfo, SelfTestReport, Stats};

use crate::machine::iomgr::{POOL_CANARY, POOL_QUOTA, UserBuffer};

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

pub(super) fn offset_value(offset: Offset, window: u32) -> i64 {
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

pub(super) fn user_buffer(buf: Buf, window: u32) -> UserBuffer {
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
pub(super) fn input_as_driver_sees(code: u32, input: &UserBuffer) -> Vec<u8> {
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

pub(super) const CODES: [u32; 6] = ioctl::CONTROL_CODES;
