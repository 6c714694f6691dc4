//! The conformance sequences with MSI enabled (the phase set that drives the
//! device through `vfio-pci`): the same step language as [`crate::conform`],
//! with [`Op::Irq`] meaning "an MSI message was delivered within the time".
//!
//! Expectations, from QEMU's `hw/misc/edu.c` and `hw/pci/msi.c`: with MSI
//! enabled `edu_raise_irq` calls `msi_notify` on every raise while
//! `irq_status` is non-zero (an edge per write, even one that adds no new
//! bit) and never touches INTx; `edu_lower_irq` sends nothing; edu's MSI
//! capability has no per-vector mask, so nothing is ever pended; the message
//! is a write through the function's bus-master address space, so with Bus
//! Master Enable clear it goes nowhere — lost, while `irq_status` keeps the
//! bits.

use crate::conform::{Device, Expect, Op, Sequence, Val};

use Expect::Eq as E;
use Op::*;
use Val::{K, Page};

const fn poll_done(min_us: u64, max_us: u64) -> Op {
    Poll {
        off: 0x98,
        mask: 1,
        want: 0,
        min_us,
        max_us,
    }
}

/// The MSI sequences. Every DMA stays inside 0x40000..0x40FFF.
pub const MSI_SEQUENCES: &[Sequence] = &[
    Sequence {
        name: "msi-factirq",
        about: "with MSI the factorial's irq 0x01 is one message, not a level; the ack sends nothing",
        ops: &[
            R32(0x24, E(0)),
            W32(0x20, K(0x80)),
            W32(0x08, K(4)),
            Irq(true, 500_000),
            R32(0x24, E(1)),
            R32(0x08, E(24)),
            Irq(false, 30_000),
            W32(0x64, K(1)),
            R32(0x24, E(0)),
            Irq(false, 30_000),
            W32(0x20, K(0)),
            R32(0x20, E(0)),
        ],
    },
    Sequence {
        name: "msi-raise",
        about: "MSI is an edge: one message per raise write while irq_status is non-zero (also one adding no new bit; three raises, three messages), none on unmask or ack",
        ops: &[
            R32(0x24, E(0)),
            W32(0x60, K(0x0001_0000)),
            Irq(true, 500_000),
            R32(0x24, E(0x0001_0000)),
            Irq(false, 30_000),
            Unmask,
            Irq(false, 30_000),
            W32(0x60, K(0x3)),
            Irq(true, 500_000),
            R32(0x24, E(0x0001_0003)),
            W32(0x60, K(0x1)),
            Irq(true, 500_000),
            W32(0x60, K(0)),
            Irq(true, 500_000),
            W32(0x64, K(0x0001_0001)),
            R32(0x24, E(2)),
            Irq(false, 30_000),
            W32(0x64, K(0xFFFF_FFFF)),
            R32(0x24, E(0)),
            Irq(false, 30_000),
            W32(0x60, K(0)),
            Irq(false, 30_000),
            // Three raises in a row: three messages (a level would be one).
            W32(0x60, K(0x1)),
            W32(0x60, K(0x2)),
            W32(0x60, K(0x4)),
            Irqs(3, 100_000),
            R32(0x24, E(0x7)),
            W32(0x64, K(0x7)),
            Irqs(0, 30_000),
        ],
    },
    Sequence {
        name: "msi-dma",
        about: "a DMA with the irq bit completes with one message 0x100; without it, none",
        ops: &[
            Fill(0, 256, 6),
            W32(0x80, Page(0)),
            W32(0x88, K(0x40000)),
            W32(0x90, K(256)),
            W32(0x98, K(0x1)),
            poll_done(60_000, 1_000_000),
            R32(0x24, E(0)),
            Irq(false, 30_000),
            Fill(1024, 256, 0),
            W32(0x80, K(0x40000)),
            W32(0x88, Page(1024)),
            W32(0x98, K(0x7)),
            R32(0x98, E(0x7)),
            Irq(true, 1_000_000),
            R32(0x24, E(0x100)),
            R32(0x98, E(0x6)),
            Check(1024, 256, 6),
            Irq(false, 30_000),
            W32(0x64, K(0x100)),
            R32(0x24, E(0)),
            Irq(false, 30_000),
        ],
    },
    Sequence {
        name: "msi-nobm",
        about: "an MSI while Bus Master Enable is clear is lost, not pended: irq_status keeps the bits, bus mastering back on delivers nothing, the next raise sends exactly one message (raise, factorial, DMA)",
        ops: &[
            R32(0x24, E(0)),
            BusMaster(false),
            W32(0x60, K(0x4)),
            Irq(false, 200_000),
            R32(0x24, E(0x4)),
            BusMaster(true),
            Irq(false, 200_000),
            R32(0x24, E(0x4)),
            W32(0x60, K(0)),
            Irqs(1, 300_000),
            W32(0x64, K(0x4)),
            R32(0x24, E(0)),
            // The factorial's message with bus mastering off.
            W32(0x20, K(0x80)),
            BusMaster(false),
            W32(0x08, K(3)),
            Poll {
                off: 0x20,
                mask: 1,
                want: 0,
                min_us: 0,
                max_us: 200_000,
            },
            R32(0x08, E(6)),
            R32(0x24, E(1)),
            Irq(false, 100_000),
            BusMaster(true),
            Irq(false, 200_000),
            W32(0x60, K(0)),
            Irqs(1, 300_000),
            W32(0x64, K(1)),
            W32(0x20, K(0)),
            // A DMA's completion message with bus mastering off.
            W32(0x80, K(0x40000)),
            W32(0x88, Page(2048)),
            W32(0x90, K(64)),
            BusMaster(false),
            W32(0x98, K(0x7)),
            poll_done(60_000, 1_000_000),
            R32(0x24, E(0x100)),
            BusMaster(true),
            Irq(false, 200_000),
            R32(0x24, E(0x100)),
            W32(0x60, K(0)),
            Irqs(1, 300_000),
            W32(0x64, K(0x100)),
            R32(0x24, E(0)),
            Irq(false, 30_000),
        ],
    },
];

/// Run every MSI sequence on `dev` (MSI enabled, bus mastering on).
/// Returns (sequences, steps that failed).
pub fn run_all(dev: &mut impl Device) -> (usize, usize) {
    let failed = MSI_SEQUENCES
        .iter()
        .map(|seq| crate::conform::run_sequence(dev, seq))
        .sum();
    (MSI_SEQUENCES.len(), failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msi_sequences_never_reach_the_last_byte_and_have_their_own_names() {
        for seq in MSI_SEQUENCES {
            assert!(seq.name.starts_with("msi-"), "{}", seq.name);
            assert!(
                crate::conform::SEQUENCES.iter().all(|s| s.name != seq.name),
                "{}",
                seq.name
            );
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
}
