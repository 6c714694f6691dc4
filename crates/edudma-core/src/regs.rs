//! The edu device's register file (BAR0), its command encoding, and the
//! [`RegisterFile`] seam the engine drives it through.
//!
//! Facts from QEMU `hw/misc/edu.c`: offsets below 0x80 take 4-byte accesses
//! only; the DMA registers take 4 or 8 bytes, and a 4-byte write zero-extends.
//! The engine only ever uses 4-byte accesses: every address it programs is
//! below 2^28 (the device's `dma_mask`), so nothing is lost.

use bitflags::bitflags;

/// Identification register: `0xRRrr00ed` (major, minor, 0x00, 0xed).
pub const REG_ID: u32 = 0x00;
/// Liveness check: a write stores the bitwise inverse, a read returns it.
pub const REG_LIVENESS: u32 = 0x04;
/// Factorial: write n to start, read n! when [`Status::COMPUTING`] is clear.
pub const REG_FACTORIAL: u32 = 0x08;
/// Status register, see [`Status`].
pub const REG_STATUS: u32 = 0x20;
/// Interrupt status: the bits that raised the interrupt.
pub const REG_IRQ_STATUS: u32 = 0x24;
/// Interrupt raise: `irq_status |= value`.
pub const REG_IRQ_RAISE: u32 = 0x60;
/// Interrupt acknowledge: `irq_status &= !value`.
pub const REG_IRQ_ACK: u32 = 0x64;
/// DMA source address (bus address or device address).
pub const REG_DMA_SRC: u32 = 0x80;
/// DMA destination address.
pub const REG_DMA_DST: u32 = 0x88;
/// DMA transfer count in bytes.
pub const REG_DMA_COUNT: u32 = 0x90;
/// DMA command register, see [`DmaCommand`].
pub const REG_DMA_CMD: u32 = 0x98;

/// Size of BAR0 in bytes (1 MiB).
pub const BAR0_SIZE: u64 = 1 << 20;
/// The low 16 bits of [`REG_ID`] on every edu device.
pub const ID_MAGIC: u32 = 0xED;
/// Device-side address of the DMA buffer.
pub const DEVICE_BUFFER_ADDR: u64 = 0x40000;
/// Size of the device's DMA buffer.
pub const DEVICE_BUFFER_SIZE: u32 = 4096;
/// QEMU's default `dma_mask`: the device drives 28 address bits.
pub const DMA_ADDRESS_BITS: u32 = 28;
/// PCI vendor id of the edu device.
pub const PCI_VENDOR_ID: u16 = 0x1234;
/// PCI device id of the edu device.
pub const PCI_DEVICE_ID: u16 = 0x11E8;

bitflags! {
    /// The status register at [`REG_STATUS`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Status: u32 {
        /// A factorial computation is running (read-only).
        const COMPUTING = 0x01;
        /// Raise [`IrqBits::FACTORIAL`] when a factorial completes.
        const IRQ_ON_FACTORIAL = 0x80;
    }
}

bitflags! {
    /// The DMA command register at [`REG_DMA_CMD`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct DmaCommand: u32 {
        /// Start the transfer; stays set while it runs.
        const START = 0x1;
        /// Direction: set for device → RAM, clear for RAM → device.
        const TO_RAM = 0x2;
        /// Raise [`IrqBits::DMA`] when the transfer completes.
        const IRQ = 0x4;
    }
}

bitflags! {
    /// Interrupt status bits at [`REG_IRQ_STATUS`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct IrqBits: u32 {
        /// A factorial completed with [`Status::IRQ_ON_FACTORIAL`] set.
        const FACTORIAL = 0x0000_0001;
        /// A DMA transfer completed with [`DmaCommand::IRQ`] set.
        const DMA = 0x0000_0100;
        /// The bit the self-test raises by hand through [`REG_IRQ_RAISE`].
        const SELFTEST = 0x0001_0000;
        // Other bits can be raised through REG_IRQ_RAISE by anyone.
        const _ = !0;
    }
}

/// 32-bit access to the edu register file.
///
/// Windows implements it over the mapped BAR with `READ_REGISTER_ULONG` /
/// `WRITE_REGISTER_ULONG`; the simulator over its device model; the
/// hardware-in-the-loop harness over the sysfs BAR mapping.
pub trait RegisterFile {
    /// Read the 32-bit register at `offset`.
    fn read32(&mut self, offset: u32) -> u32;
    /// Write the 32-bit register at `offset`.
    fn write32(&mut self, offset: u32, value: u32);
    /// Busy-wait for `micros` microseconds (`KeStallExecutionProcessor` on
    /// Windows; virtual time in the simulator). Used only by the self-test's
    /// bounded polling.
    fn stall_us(&mut self, micros: u32);
}

/// Decode the identification register: `(major, minor)` if it is an edu device.
pub fn decode_id(id: u32) -> Option<(u8, u8)> {
    ((id & 0xFFFF) == ID_MAGIC).then_some(((id >> 24) as u8, (id >> 16) as u8))
}

/// The wrapping 32-bit factorial the device computes.
pub fn factorial_u32(n: u32) -> u32 {
    (1..=n).fold(1u32, |acc, k| acc.wrapping_mul(k))
}

/// The interrupt service routine's work, callable at DIRQL: read the
/// interrupt status, acknowledge exactly those bits, and return them.
/// `None` means the interrupt was not ours (a shared line).
pub fn isr_acknowledge(regs: &mut impl RegisterFile) -> Option<IrqBits> {
    let bits = regs.read32(REG_IRQ_STATUS);
    // All-ones is what a surprise-removed device reads: not our interrupt.
    if bits == 0 || bits == u32::MAX {
        return None;
    }
    regs.write32(REG_IRQ_ACK, bits);
    Some(IrqBits::from_bits_retain(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_decoding() {
        assert_eq!(decode_id(0x0100_00ED), Some((1, 0)));
        assert_eq!(decode_id(0xFFFF_FFFF), None);
        assert_eq!(decode_id(0), None);
    }

    #[test]
    fn factorial_wraps_like_the_device() {
        assert_eq!(factorial_u32(0), 1);
        assert_eq!(factorial_u32(5), 120);
        assert_eq!(factorial_u32(12), 479_001_600);
        assert_eq!(factorial_u32(13), 1_932_053_504); // 13! mod 2^32
    }
}
