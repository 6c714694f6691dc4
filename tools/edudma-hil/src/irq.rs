//! The rig's interrupt source: INTx through `uio_pci_generic`, or MSI
//! through `vfio-pci`'s eventfd.

use std::io;
use std::time::Duration;

use edudma_core::ioctl::InterruptKind;

use crate::linux::{Uio, Wait};
use crate::vfio::Msi;

/// Where the device's interrupts arrive.
pub enum Interrupts {
    /// Line-based: the kernel masks INTx (command bit 10) on each interrupt;
    /// the ISR's caller unmasks it after acknowledging the device.
    Intx(Uio),
    /// Message-signalled: an edge per message, nothing to unmask.
    Msi(Msi),
}

impl Interrupts {
    /// Wait up to `timeout` for an interrupt.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Wait> {
        match self {
            Self::Intx(uio) => uio.wait(timeout),
            Self::Msi(msi) => msi.wait(timeout),
        }
    }

    /// True for the line-based source (INTx must be unmasked after each interrupt).
    pub fn is_intx(&self) -> bool {
        matches!(self, Self::Intx(_))
    }

    /// What the engine is told at START_DEVICE.
    pub fn kind(&self) -> InterruptKind {
        match self {
            Self::Intx(_) => InterruptKind::LineBased,
            Self::Msi(_) => InterruptKind::MessageSignaled,
        }
    }
}
