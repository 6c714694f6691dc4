//! Interrupt request levels and the processors of the machine: each CPU has
//! an IRQL and the spin locks it holds.

pub use edudma_hal::Irql;

/// A spin lock of the simulated machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SpinLock {
    /// The system-wide cancel spin lock (`IoAcquireCancelSpinLock`).
    Cancel,
    /// A driver's own lock (the engine lock of the edudma glue).
    Driver(&'static str),
    /// The interrupt spin lock (`KeSynchronizeExecution`).
    Interrupt,
    /// A `KSPIN_LOCK` of a native driver, by address.
    Native(u64),
}

impl SpinLock {
    /// A printable name.
    pub fn name(self) -> &'static str {
        match self {
            SpinLock::Cancel => "cancel spin lock",
            SpinLock::Driver(name) => name,
            SpinLock::Interrupt => "interrupt spin lock",
            SpinLock::Native(_) => "driver spin lock",
        }
    }
}

/// One processor.
#[derive(Clone, Debug)]
pub struct Cpu {
    /// Current IRQL.
    pub irql: Irql,
    /// Spin locks held, in acquisition order, with the IRQL to return to.
    pub locks: Vec<(SpinLock, Irql)>,
    /// The IRQL the running routine was entered at (a DPC's DISPATCH_LEVEL,
    /// an ISR's DIRQL): it may raise above it, never lower below it.
    pub floor: Irql,
}

/// The processors, and which one runs the code being simulated now.
#[derive(Clone, Debug)]
pub struct Cpus {
    cpus: Vec<Cpu>,
    current: usize,
}

impl Cpus {
    /// `n` processors (at least 1), all at PASSIVE_LEVEL.
    pub fn new(n: usize) -> Self {
        Self {
            cpus: vec![
                Cpu {
                    irql: Irql::Passive,
                    locks: Vec::new(),
                    floor: Irql::Passive,
                };
                n.max(1)
            ],
            current: 0,
        }
    }

    /// Number of processors.
    pub fn count(&self) -> usize {
        self.cpus.len()
    }

    /// Index of the current processor.
    pub fn current(&self) -> usize {
        self.current
    }

    /// Switch to processor `index` (modulo the count).
    pub fn switch_to(&mut self, index: usize) {
        self.current = index % self.cpus.len();
    }

    /// The current processor.
    pub fn cpu(&self) -> &Cpu {
        &self.cpus[self.current]
    }

    /// The current processor, for change.
    pub fn cpu_mut(&mut self) -> &mut Cpu {
        &mut self.cpus[self.current]
    }

    /// IRQL of the current processor.
    pub fn irql(&self) -> Irql {
        self.cpu().irql
    }

    /// Set the IRQL of the current processor, returning the old one.
    pub fn set_irql(&mut self, irql: Irql) -> Irql {
        std::mem::replace(&mut self.cpu_mut().irql, irql)
    }

    /// True when any processor holds `lock`.
    pub fn lock_held_anywhere(&self, lock: SpinLock) -> bool {
        self.cpus
            .iter()
            .any(|c| c.locks.iter().any(|(l, _)| *l == lock))
    }

    /// The first spin lock the current processor holds.
    pub fn held_lock(&self) -> Option<SpinLock> {
        self.cpu().locks.first().map(|(l, _)| *l)
    }
}
