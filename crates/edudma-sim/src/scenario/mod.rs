//! The scenario generator: each seed draws a machine (strategy, CPUs, map
//! registers, memory, interrupts, faults) and a run of operations on it —
//! concurrent reads, writes and IOCTL transfers, self-tests, cancels of
//! current and queued requests, cleanup of a handle with requests queued,
//! query-stop/stop/start, sleeps, orderly and surprise removals with I/O
//! pending, spurious and shared-line interrupts, bus mastering cleared
//! behind the driver, a wrong ID register at a restart — through the driver
//! that ships (`src/`). After each operation: every IRP completed once with
//! a status the operation allows, every accepted write readable byte for
//! byte; at the end no verifier violation and the leak check.
//!
//! One seed, one run: [`run`] replays a failing seed exactly, and
//! [`run_seeds`] spreads many over threads (a machine's simulated CPUs are
//! OS threads that mostly wait for the baton, so several machines share a
//! core well).

mod draw;
mod ops;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use draw::machine_for;

/// What one scenario did, by name ("op:write", "fault:hang", "status:IO_TIMEOUT").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage(pub BTreeMap<String, u64>);

impl Coverage {
    /// Count one occurrence of `what`.
    pub fn add(&mut self, what: impl Into<String>) {
        self.add_many(what, 1);
    }

    /// Count `n` occurrences of `what` (none: no entry).
    pub fn add_many(&mut self, what: impl Into<String>, n: u64) {
        if n > 0 {
            *self.0.entry(what.into()).or_default() += n;
        }
    }

    /// Fold another scenario's counts in.
    pub fn merge(&mut self, other: &Coverage) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }

    /// The count of `what`.
    pub fn get(&self, what: &str) -> u64 {
        self.0.get(what).copied().unwrap_or(0)
    }
}

/// A scenario that broke an invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// Its seed.
    pub seed: u64,
    /// What went wrong, with the machine it ran on.
    pub message: String,
}

/// Run the scenario of `seed` on the driver.
pub fn run(seed: u64) -> Result<Coverage, Failure> {
    run_with(seed, false).0
}

/// [`run`], recording the timeline: the trace-event JSON of the run (up to
/// its failure) comes back with the verdict.
pub fn run_traced(seed: u64) -> (Result<Coverage, Failure>, String) {
    let (verdict, trace) = run_with(seed, true);
    (verdict, trace.unwrap_or_default())
}

fn run_with(seed: u64, traced: bool) -> (Result<Coverage, Failure>, Option<String>) {
    let (mut cfg, plan) = draw::machine_for(seed);
    cfg.trace = traced;
    let label = draw::label(&cfg, &plan);
    let mut trace = None;
    let verdict = ops::run(seed, cfg, plan, &mut trace).map_err(|message| Failure {
        seed,
        message: format!("{message} [{label}]"),
    });
    (verdict, trace)
}

/// Many seeds.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Scenarios run.
    pub scenarios: u64,
    /// Their coverage, summed.
    pub coverage: Coverage,
    /// The failing ones (at most `max_failures`).
    pub failures: Vec<Failure>,
}

/// Run seeds `first..first + count` on `threads` threads; stops early after
/// `max_failures` failures.
pub fn run_seeds(first: u64, count: u64, threads: usize, max_failures: usize) -> Summary {
    let next = AtomicU64::new(0);
    let total = Arc::new(Mutex::new(Summary::default()));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut mine = Summary::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    if total
                        .lock()
                        .map_or(true, |t| t.failures.len() >= max_failures)
                    {
                        break;
                    }
                    mine.scenarios += 1;
                    match run(first + i) {
                        Ok(c) => mine.coverage.merge(&c),
                        Err(f) => {
                            if let Ok(mut t) = total.lock() {
                                t.failures.push(f);
                            }
                        }
                    }
                }
                if let Ok(mut t) = total.lock() {
                    t.scenarios += mine.scenarios;
                    t.coverage.merge(&mine.coverage);
                }
            });
        }
    });
    let mut summary = total.lock().map(|t| t.clone()).unwrap_or_default();
    summary.failures.sort_by_key(|f| f.seed);
    summary
}
