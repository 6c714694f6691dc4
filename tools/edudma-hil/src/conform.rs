//! Model conformance: register-level sequences, as data, that run unchanged
//! against QEMU's real edu device (in the guest) and against a device model,
//! recording every observation as one trace line.
//!
//! Each step carries the expectation read from QEMU's `hw/misc/edu.c`; a
//! step marked [`Expect::Record`] has no fixed answer in the source (for
//! example what an access of the wrong size gives, which the memory core
//! decides) and is compared between the traces instead. Timing is compared by
//! order and by window (a DMA completes after about 100 ms), not to the
//! microsecond.
//!
//! The trace format, one line per step:
//! `<sequence>.<step> <operation> = <observed> <ok|MISMATCH (expected ...)|rec>`.

use std::fmt::Write as _;

/// What a model must offer to run the sequences.
pub trait Device {
    /// 4-byte read of BAR0.
    fn read32(&mut self, offset: u32) -> u32;
    /// 4-byte write of BAR0.
    fn write32(&mut self, offset: u32, value: u32);
    /// 8-byte read of BAR0.
    fn read64(&mut self, offset: u32) -> u64;
    /// 8-byte write of BAR0.
    fn write64(&mut self, offset: u32, value: u64);
    /// 2-byte read of BAR0 (an access size the device rejects).
    fn read16(&mut self, offset: u32) -> u16;
    /// 2-byte write of BAR0.
    fn write16(&mut self, offset: u32, value: u16);
    /// Let `micros` microseconds pass.
    fn wait_us(&mut self, micros: u64);
    /// Microseconds since an arbitrary origin.
    fn now_us(&mut self) -> u64;
    /// Whether an interrupt was delivered within `timeout_us` (INTx: the
    /// line was seen asserted, and is now masked until [`Device::irq_unmask`]).
    fn irq_pending(&mut self, timeout_us: u64) -> bool;
    /// How many interrupts (MSI: messages) were delivered in the next
    /// `timeout_us`, waiting all of it. The default tells only none or one.
    fn irq_count(&mut self, timeout_us: u64) -> u32 {
        u32::from(self.irq_pending(timeout_us))
    }
    /// Unmask INTx again (clear command bit 10).
    fn irq_unmask(&mut self);
    /// Set or clear Bus Master Enable.
    fn bus_master(&mut self, on: bool);
    /// Bus address of a 4096-byte scratch page below 256 MiB.
    fn dma_page(&mut self) -> u64;
    /// Write memory at a bus address inside the scratch page.
    fn mem_write(&mut self, addr: u64, data: &[u8]);
    /// Read memory at a bus address inside the scratch page.
    fn mem_read(&mut self, addr: u64, out: &mut [u8]);
    /// One trace line, and whether it met its expectation.
    fn record(&mut self, line: &str, ok: bool);
}

/// What a read must give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Exactly this value.
    Eq(u64),
    /// `(value & mask) == want`.
    Masked {
        /// Bits compared.
        mask: u64,
        /// Their wanted value.
        want: u64,
    },
    /// No fixed answer: recorded and compared between models.
    Record,
    /// Depends on timing (a race with the device's thread): recorded, never compared.
    Racy,
    /// The scratch page's bus address plus this offset.
    PageAt(u64),
}

/// A value written: a constant or an address inside the scratch page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val {
    /// This value.
    K(u64),
    /// The scratch page's bus address plus this offset.
    Page(u64),
}

/// One step of a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// 4-byte read.
    R32(u32, Expect),
    /// 4-byte write.
    W32(u32, Val),
    /// 8-byte read.
    R64(u32, Expect),
    /// 8-byte write.
    W64(u32, Val),
    /// 2-byte read.
    R16(u32, Expect),
    /// 2-byte write.
    W16(u32, u16),
    /// Let time pass (microseconds).
    Wait(u64),
    /// Poll a 4-byte register every millisecond until `(v & mask) == want`;
    /// the time it took must lie in `[min_us, max_us]`.
    Poll {
        /// Register.
        off: u32,
        /// Bits compared.
        mask: u32,
        /// Wanted value.
        want: u32,
        /// Earliest acceptable time, µs.
        min_us: u64,
        /// Latest acceptable time (and the give-up time), µs.
        max_us: u64,
    },
    /// An interrupt is (true) or is not (false) delivered within the time (µs).
    Irq(bool, u64),
    /// Exactly this many interrupts (MSI: messages) arrive within the time (µs).
    Irqs(u32, u64),
    /// Unmask INTx.
    Unmask,
    /// Bus Master Enable on or off.
    BusMaster(bool),
    /// Fill scratch bytes `[off, off + len)` with the pattern of `seed`.
    Fill(u64, usize, u8),
    /// Scratch bytes `[off, off + len)` must hold the pattern of `seed`.
    Check(u64, usize, u8),
    /// Record what scratch bytes `[off, off + len)` hold: a seed's pattern,
    /// zeros, all-ones, or their first bytes (compared between models).
    Dump(u64, usize),
}

/// A named sequence of steps.
#[derive(Clone, Copy, Debug)]
pub struct Sequence {
    /// Short name, used in the trace.
    pub name: &'static str,
    /// What it shows.
    pub about: &'static str,
    /// The steps.
    pub ops: &'static [Op],
}

use Expect::{Eq as E, Masked, PageAt, Racy, Record};
use Op::*;
use Val::{K, Page};

const ALL32: u64 = 0xFFFF_FFFF;

/// The sequences. Every DMA stays inside 0x40000..0x40FFF (never the last
/// byte: QEMU 7.2 aborts on that).
pub const SEQUENCES: &[Sequence] = &[
    Sequence {
        name: "ident",
        about: "identification, unknown offsets, write-only registers and wrong access sizes",
        ops: &[
            R32(0x00, E(0x0100_00ED)),
            R32(0x0C, E(ALL32)),
            R32(0x10, E(ALL32)),
            R32(0x60, E(ALL32)),
            R32(0x64, E(ALL32)),
            R32(0x84, E(ALL32)),
            R32(0xFFC, E(ALL32)),
            R64(0x00, Record),
            R16(0x00, Record),
            R16(0x80, Record),
        ],
    },
    Sequence {
        name: "liveness",
        about: "the liveness register stores the inverse; wrong-size writes are dropped",
        ops: &[
            W32(0x04, K(0x1234_5678)),
            R32(0x04, E(0xEDCB_A987)),
            W32(0x04, K(0)),
            R32(0x04, E(ALL32)),
            W16(0x04, 0x1111),
            R32(0x04, E(ALL32)),
            W64(0x04, K(0x2222_2222_2222_2222)),
            R32(0x04, E(ALL32)),
            W32(0x04, K(0xFFFF_FFFF)),
            R32(0x04, E(0)),
        ],
    },
    Sequence {
        name: "factorial",
        about: "factorial by polling the status register; u32 wrap-around; 0! = 1",
        ops: &[
            W32(0x20, K(0)),
            R32(0x20, E(0)),
            W32(0x08, K(5)),
            R32(0x20, Racy),
            Poll {
                off: 0x20,
                mask: 1,
                want: 0,
                min_us: 0,
                max_us: 200_000,
            },
            R32(0x08, E(120)),
            W32(0x08, K(13)),
            Poll {
                off: 0x20,
                mask: 1,
                want: 0,
                min_us: 0,
                max_us: 200_000,
            },
            R32(0x08, E(1_932_053_504)),
            W32(0x08, K(0)),
            Poll {
                off: 0x20,
                mask: 1,
                want: 0,
                min_us: 0,
                max_us: 200_000,
            },
            R32(0x08, E(1)),
            R32(0x24, E(0)),
        ],
    },
    Sequence {
        name: "factirq",
        about: "status bit 0x80 raises irq 0x01 when the factorial is done",
        ops: &[
            W32(0x20, K(0x80)),
            R32(
                0x20,
                Masked {
                    mask: 0x80,
                    want: 0x80,
                },
            ),
            W32(0x20, K(0x81)),
            R32(0x20, E(0x80)),
            W32(0x08, K(4)),
            Irq(true, 500_000),
            R32(0x24, E(1)),
            R32(0x08, E(24)),
            R32(0x20, E(0x80)),
            W32(0x64, K(1)),
            Unmask,
            R32(0x24, E(0)),
            Irq(false, 30_000),
            W32(0x20, K(0x7F)),
            R32(0x20, E(0)),
        ],
    },
    Sequence {
        name: "raise",
        about: "raise/ack through 0x60/0x64; INTx is level-triggered: it fires again when unmasked while bits remain",
        ops: &[
            R32(0x24, E(0)),
            W32(0x60, K(0x0001_0000)),
            Irq(true, 500_000),
            R32(0x24, E(0x0001_0000)),
            W32(0x60, K(0x3)),
            R32(0x24, E(0x0001_0003)),
            Unmask,
            Irq(true, 500_000),
            W32(0x64, K(0x0001_0001)),
            R32(0x24, E(2)),
            W32(0x64, K(0xFFFF_FFFF)),
            Unmask,
            R32(0x24, E(0)),
            Irq(false, 30_000),
            W32(0x64, K(0x8)),
            R32(0x24, E(0)),
            Irq(false, 30_000),
        ],
    },
    Sequence {
        name: "dmaregs",
        about: "DMA registers: 4-byte writes zero-extend, 8-byte accesses, a command without START is ignored",
        ops: &[
            W32(0x80, K(0x12345)),
            R32(0x80, E(0x12345)),
            R64(0x80, E(0x12345)),
            W64(0x80, K(0x1_0000_0010)),
            R64(0x80, E(0x1_0000_0010)),
            R32(0x80, E(0x10)),
            R32(0x84, E(ALL32)),
            W32(0x80, K(0xABC)),
            R64(0x80, E(0xABC)),
            W32(0x88, K(0x40000)),
            R32(0x88, E(0x40000)),
            W32(0x90, K(16)),
            R32(0x90, E(16)),
            R32(0x98, Record),
            W32(0x98, K(0x6)),
            R32(0x98, Record),
            R32(0x24, E(0)),
        ],
    },
    Sequence {
        name: "dmaout",
        about: "RAM to device without interrupt: running for ~100 ms, register writes dropped while busy, no irq",
        ops: &[
            Fill(0, 256, 1),
            W32(0x80, Page(0)),
            W32(0x88, K(0x40000)),
            W32(0x90, K(256)),
            W32(0x98, K(0x1)),
            R32(0x98, E(0x1)),
            W32(0x80, Page(0x100)),
            R32(0x80, PageAt(0)),
            W32(0x90, K(8)),
            R32(0x90, E(256)),
            W32(0x98, K(0x5)),
            R32(0x98, E(0x1)),
            Wait(5_000),
            R32(0x98, E(0x1)),
            R32(0x24, E(0)),
            Poll {
                off: 0x98,
                mask: 1,
                want: 0,
                min_us: 60_000,
                max_us: 1_000_000,
            },
            R32(0x98, E(0)),
            R32(0x24, E(0)),
            Irq(false, 30_000),
        ],
    },
    Sequence {
        name: "dmain",
        about: "device to RAM with interrupt 0x100: the bytes written out are those written in",
        ops: &[
            Fill(1024, 256, 0),
            W32(0x80, K(0x40000)),
            W32(0x88, Page(1024)),
            W32(0x90, K(256)),
            W32(0x98, K(0x7)),
            R32(0x98, E(0x7)),
            Irq(true, 1_000_000),
            R32(0x24, E(0x100)),
            R32(0x98, E(0x6)),
            Check(1024, 256, 1),
            W32(0x64, K(0x100)),
            Unmask,
            R32(0x24, E(0)),
            Irq(false, 30_000),
        ],
    },
    Sequence {
        name: "dmaedge",
        about: "one byte at the last usable device address (0x40FFE) to the last byte of the page, and back",
        ops: &[
            Fill(4095, 1, 7),
            W32(0x80, Page(4095)),
            W32(0x88, K(0x40FFE)),
            W32(0x90, K(1)),
            W32(0x98, K(0x5)),
            Irq(true, 1_000_000),
            R32(0x24, E(0x100)),
            W32(0x64, K(0x100)),
            Unmask,
            Fill(4094, 1, 0),
            W32(0x80, K(0x40FFE)),
            W32(0x88, Page(4094)),
            W32(0x90, K(1)),
            W32(0x98, K(0x7)),
            Irq(true, 1_000_000),
            W32(0x64, K(0x100)),
            Unmask,
            Check(4094, 1, 7),
            Check(4095, 1, 7),
        ],
    },
    Sequence {
        name: "nobm",
        about: "with Bus Master Enable clear a DMA completes and interrupts but moves no data",
        ops: &[
            Fill(2048, 64, 3),
            BusMaster(false),
            W32(0x80, K(0x40000)),
            W32(0x88, Page(2048)),
            W32(0x90, K(64)),
            W32(0x98, K(0x7)),
            Poll {
                off: 0x98,
                mask: 1,
                want: 0,
                min_us: 60_000,
                max_us: 1_000_000,
            },
            R32(0x24, E(0x100)),
            BusMaster(true),
            Irq(true, 200_000),
            W32(0x64, K(0x100)),
            Unmask,
            Check(2048, 64, 3),
            // The device buffer at 0x40800 gets a known pattern...
            Fill(0xC00, 64, 5),
            W32(0x80, Page(0xC00)),
            W32(0x88, K(0x40800)),
            W32(0x90, K(64)),
            W32(0x98, K(0x1)),
            Poll {
                off: 0x98,
                mask: 1,
                want: 0,
                min_us: 60_000,
                max_us: 1_000_000,
            },
            // (control: it is there)
            Fill(0xC00, 64, 0),
            W32(0x80, K(0x40800)),
            W32(0x88, Page(0xC00)),
            W32(0x98, K(0x3)),
            Poll {
                off: 0x98,
                mask: 1,
                want: 0,
                min_us: 60_000,
                max_us: 1_000_000,
            },
            Check(0xC00, 64, 5),
            // ...then a RAM → device transfer without bus mastering...
            Fill(0xC00, 64, 4),
            W32(0x80, Page(0xC00)),
            W32(0x88, K(0x40800)),
            BusMaster(false),
            W32(0x98, K(0x1)),
            Poll {
                off: 0x98,
                mask: 1,
                want: 0,
                min_us: 60_000,
                max_us: 1_000_000,
            },
            BusMaster(true),
            // ...and what the device buffer holds now comes back to RAM.
            Fill(0xC00, 64, 0),
            W32(0x80, K(0x40800)),
            W32(0x88, Page(0xC00)),
            W32(0x98, K(0x3)),
            Poll {
                off: 0x98,
                mask: 1,
                want: 0,
                min_us: 60_000,
                max_us: 1_000_000,
            },
            Dump(0xC00, 64),
            R32(0x24, E(0)),
        ],
    },
];

/// The byte at position `i` of the pattern of `seed` (seed 0: all zeros).
pub fn pattern(seed: u8, i: usize) -> u8 {
    if seed == 0 {
        0
    } else {
        (i as u8)
            .wrapping_mul(31)
            .wrapping_add(seed.wrapping_mul(77))
            ^ 0x5A
    }
}

fn check(expect: Expect, got: u64, page: u64) -> (bool, String) {
    match expect {
        Expect::PageAt(off) if got == page + off => (true, "ok".into()),
        Expect::PageAt(off) => (false, format!("MISMATCH (expected page+0x{off:x})")),
        Expect::Eq(want) if got == want => (true, "ok".into()),
        Expect::Eq(want) => (false, format!("MISMATCH (expected 0x{want:x})")),
        Expect::Masked { mask, want } if got & mask == want => (true, "ok".into()),
        Expect::Masked { mask, want } => (
            false,
            format!("MISMATCH (expected 0x{want:x} under mask 0x{mask:x})"),
        ),
        Expect::Record => (true, "rec".into()),
        Expect::Racy => (true, "racy".into()),
    }
}

/// Run every sequence on `dev`. Returns (sequences, steps that failed).
pub fn run_all(dev: &mut impl Device) -> (usize, usize) {
    let mut failed = 0;
    for seq in SEQUENCES {
        failed += run_sequence(dev, seq);
    }
    (SEQUENCES.len(), failed)
}

/// Run one sequence; returns the number of steps that missed their expectation.
pub fn run_sequence(dev: &mut impl Device, seq: &Sequence) -> usize {
    let page = dev.dma_page();
    let value = |v: Val| match v {
        K(k) => k,
        Page(off) => page + off,
    };
    let mut failed = 0;
    for (i, op) in seq.ops.iter().enumerate() {
        if i == 0 {
            dev.record(&format!("{}.-- {}", seq.name, seq.about), true);
        }
        let mut line = format!("{}.{i:02} ", seq.name);
        let ok = match *op {
            R32(off, expect) => {
                let got = u64::from(dev.read32(off));
                let (ok, verdict) = check(expect, got, page);
                if let PageAt(_) = expect {
                    let rel = got.wrapping_sub(page);
                    let _ = write!(line, "r32 0x{off:03x} = page+0x{rel:x} {verdict}");
                } else {
                    let _ = write!(line, "r32 0x{off:03x} = 0x{got:08x} {verdict}");
                }
                ok
            }
            R64(off, expect) => {
                let got = dev.read64(off);
                let (ok, verdict) = check(expect, got, page);
                let _ = write!(line, "r64 0x{off:03x} = 0x{got:016x} {verdict}");
                ok
            }
            R16(off, expect) => {
                let got = u64::from(dev.read16(off));
                let (ok, verdict) = check(expect, got, page);
                let _ = write!(line, "r16 0x{off:03x} = 0x{got:04x} {verdict}");
                ok
            }
            W32(off, v) => {
                let v = value(v);
                dev.write32(off, v as u32);
                let shown = match op {
                    W32(_, Page(o)) => format!("page+0x{o:x}"),
                    _ => format!("0x{v:x}"),
                };
                let _ = write!(line, "w32 0x{off:03x} {shown}");
                true
            }
            W64(off, v) => {
                let v = value(v);
                dev.write64(off, v);
                let _ = write!(line, "w64 0x{off:03x} 0x{v:x}");
                true
            }
            W16(off, v) => {
                dev.write16(off, v);
                let _ = write!(line, "w16 0x{off:03x} 0x{v:x}");
                true
            }
            Wait(us) => {
                dev.wait_us(us);
                let _ = write!(line, "wait {us}us");
                true
            }
            Poll {
                off,
                mask,
                want,
                min_us,
                max_us,
            } => {
                let start = dev.now_us();
                let mut reached = None;
                loop {
                    let v = dev.read32(off);
                    let now = dev.now_us().saturating_sub(start);
                    if v & mask == want {
                        reached = Some(now);
                        break;
                    }
                    if now > max_us {
                        break;
                    }
                    dev.wait_us(1000);
                }
                match reached {
                    Some(t) if t >= min_us => {
                        let _ = write!(
                            line,
                            "poll 0x{off:03x}&0x{mask:x}==0x{want:x} = in-window ok"
                        );
                        true
                    }
                    Some(t) => {
                        let _ = write!(
                            line,
                            "poll 0x{off:03x}&0x{mask:x}==0x{want:x} = early MISMATCH (after {t}us, expected >= {min_us}us)"
                        );
                        false
                    }
                    None => {
                        let _ = write!(
                            line,
                            "poll 0x{off:03x}&0x{mask:x}==0x{want:x} = never MISMATCH (not within {max_us}us)"
                        );
                        false
                    }
                }
            }
            Irqs(want, timeout) => {
                let got = dev.irq_count(timeout);
                let verdict = if got == want { "ok" } else { "MISMATCH" };
                let _ = write!(line, "irqs = {got} {verdict}");
                got == want
            }
            Irq(want, timeout) => {
                let got = dev.irq_pending(timeout);
                let verdict = if got == want { "ok" } else { "MISMATCH" };
                let _ = write!(line, "irq = {} {verdict}", if got { "yes" } else { "no" });
                got == want
            }
            Unmask => {
                dev.irq_unmask();
                line.push_str("unmask");
                true
            }
            BusMaster(on) => {
                dev.bus_master(on);
                let _ = write!(line, "busmaster {}", if on { "on" } else { "off" });
                true
            }
            Fill(off, len, seed) => {
                let data: Vec<u8> = (0..len).map(|i| pattern(seed, i)).collect();
                dev.mem_write(page + off, &data);
                let _ = write!(line, "fill page+0x{off:x} {len} seed {seed}");
                true
            }
            Check(off, len, seed) => {
                let mut got = vec![0u8; len];
                dev.mem_read(page + off, &mut got);
                let bad = (0..len).filter(|&i| got[i] != pattern(seed, i)).count();
                let verdict = if bad == 0 {
                    "ok".to_string()
                } else {
                    format!("MISMATCH ({bad} bytes differ)")
                };
                let _ = write!(line, "check page+0x{off:x} {len} seed {seed} = {verdict}");
                bad == 0
            }
            Dump(off, len) => {
                let mut got = vec![0u8; len];
                dev.mem_read(page + off, &mut got);
                let what = (1..=9u8)
                    .find(|&seed| (0..len).all(|i| got[i] == pattern(seed, i)))
                    .map(|seed| format!("seed {seed}"))
                    .unwrap_or_else(|| {
                        if got.iter().all(|&b| b == 0) {
                            "zeros".into()
                        } else if got.iter().all(|&b| b == 0xFF) {
                            "all-ones".into()
                        } else {
                            got.iter().take(8).map(|b| format!("{b:02x}")).collect()
                        }
                    });
                let _ = write!(line, "dump page+0x{off:x} {len} = {what} rec");
                true
            }
        };
        if !ok {
            failed += 1;
        }
        dev.record(&line, ok);
    }
    failed
}

/// One parsed trace line: step id, operation text, observed value, whether
/// it is compared between models.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLine {
    /// `<sequence>.<step>`.
    pub step: String,
    /// The operation and its observation (`r32 0x000 = 0x010000ed`).
    pub observation: String,
    /// False for racy steps.
    pub compared: bool,
}

/// Parse the `TRACE` lines of a console log (the `TRACE ` prefix optional).
pub fn parse_trace(text: &str) -> Vec<TraceLine> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim().strip_prefix("TRACE ").unwrap_or(l.trim());
            let (step, rest) = l.split_once(' ')?;
            if !step.contains('.') {
                return None;
            }
            let compared = !rest.ends_with(" racy");
            // Keep ok/MISMATCH (for checks and interrupts it is the
            // observation), drop the expectation's wording.
            let observation = rest
                .trim_end_matches(" rec")
                .trim_end_matches(" racy")
                .split(" MISMATCH")
                .next()
                .map(|head| {
                    if head.len() < rest.len()
                        && !rest.ends_with(" rec")
                        && !rest.ends_with(" racy")
                        && rest[head.len()..].starts_with(" MISMATCH")
                    {
                        format!("{head} MISMATCH")
                    } else {
                        head.to_string()
                    }
                })
                .unwrap_or_else(|| rest.to_string());
            Some(TraceLine {
                step: step.to_string(),
                observation,
                compared,
            })
        })
        .collect()
}

/// Differences between two traces (the reference first), step by step.
pub fn diff_traces(real: &[TraceLine], model: &[TraceLine]) -> Vec<String> {
    let mut out = Vec::new();
    for r in real {
        match model.iter().find(|m| m.step == r.step) {
            None => out.push(format!("{}: missing from the observed trace", r.step)),
            Some(m) if r.compared && m.compared && m.observation != r.observation => {
                out.push(format!(
                    "{}: reference `{}`, observed `{}`",
                    r.step, r.observation, m.observation
                ))
            }
            Some(_) => {}
        }
    }
    for m in model {
        if !real.iter().any(|r| r.step == m.step) {
            out.push(format!("{}: missing from the reference trace", m.step));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dma_sequences_never_reach_the_last_byte() {
        // Every DMA programmed: device address + count <= 0x40FFF.
        for seq in SEQUENCES {
            let (mut src, mut dst, mut cnt) = (0u64, 0u64, 0u64);
            for op in seq.ops {
                match *op {
                    W32(0x80, K(v)) => src = v,
                    W32(0x80, Page(_)) => src = 0,
                    W32(0x88, K(v)) => dst = v,
                    W32(0x88, Page(_)) => dst = 0,
                    W32(0x90, K(v)) => cnt = v,
                    W32(0x98, K(v)) if v & 1 == 1 => {
                        let dev = if v & 2 == 0 { dst } else { src };
                        assert!(
                            dev >= 0x40000 && dev + cnt <= 0x40FFF,
                            "{}: device range {dev:#x}+{cnt}",
                            seq.name
                        );
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn traces_parse_and_diff() {
        let real = parse_trace(
            "TRACE a.00 r32 0x000 = 0x010000ed ok\nnoise\nTRACE a.01 r32 0x020 = 0x00000001 racy\nTRACE a.02 r16 0x000 = 0x0000 rec\n",
        );
        assert_eq!(real.len(), 3);
        assert!(!real[1].compared);
        let model = parse_trace(
            "a.00 r32 0x000 = 0x010000ed ok\na.01 r32 0x020 = 0x00000000 racy\na.02 r16 0x000 = 0xffff rec\n",
        );
        let diff = diff_traces(&real, &model);
        assert_eq!(diff.len(), 1, "{diff:?}");
        assert!(diff[0].starts_with("a.02"));
    }
}
