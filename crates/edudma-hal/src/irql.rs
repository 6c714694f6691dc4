//! Interrupt request levels: the HAL checks the caller's on every routine.

use std::fmt;

/// An IRQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Irql {
    /// PASSIVE_LEVEL (0): threads.
    Passive,
    /// APC_LEVEL (1).
    Apc,
    /// DISPATCH_LEVEL (2): DPCs, StartIo, spin locks.
    Dispatch,
    /// The device's DIRQL: the ISR.
    Device,
    /// HIGH_LEVEL.
    High,
}

impl fmt::Display for Irql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Irql::Passive => "PASSIVE_LEVEL",
            Irql::Apc => "APC_LEVEL",
            Irql::Dispatch => "DISPATCH_LEVEL",
            Irql::Device => "DIRQL",
            Irql::High => "HIGH_LEVEL",
        };
        f.write_str(s)
    }
}
