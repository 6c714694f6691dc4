//! The no-DMA self-test: identification, liveness, a polled factorial, a
//! factorial by interrupt, and an interrupt raised and acknowledged by hand.
//!
//! The first two steps run at once in StartIo, and the polled factorial if
//! the device is free (a cancelled test's factorial may still be
//! computing: the watchdog's tick starts it then) and it is done within
//! 50 µs of stalling (Learn, KeStallExecutionProcessor:
//! drivers should stall no longer than 50 µs — StartIo runs at
//! DISPATCH_LEVEL under the engine lock); otherwise the watchdog's tick
//! polls it on. The two interrupt steps wait for the DPC (or give up after
//! the watchdog's timeout), so the test exercises the same ISR → DPC path
//! as a DMA transfer.

use crate::ioctl::{SelfTestReport, selftest_steps as step};
use crate::regs::{self, IrqBits, RegisterFile, Status};

/// Value written to the liveness register.
const LIVENESS_PATTERN: u32 = 0x5EED_C0DE;
/// Factorial computed by polling (5! = 120).
const POLLED_INPUT: u32 = 5;
/// Factorial computed with its interrupt (6! = 720).
const INTERRUPT_INPUT: u32 = 6;
/// Polls of the status register in StartIo before the watchdog takes over.
const POLL_LIMIT: u32 = 5;
/// Microseconds between polls: at most 50 µs of stalling in all.
const POLL_INTERVAL_US: u32 = 10;

/// Which interrupt the test waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiting {
    /// The device still computes a factorial an abandoned test started (a
    /// cancel does not stop it): edu ignores a new one until it is done.
    DeviceBusy,
    PolledFactorial,
    FactorialInterrupt,
    RaisedInterrupt,
}

/// A self-test in progress.
#[derive(Debug)]
pub(super) struct SelfTest<R> {
    request: R,
    report: SelfTestReport,
    waiting: Waiting,
    ticks: u32,
}

impl<R: Copy> SelfTest<R> {
    /// Run the immediate steps and start waiting for the factorial
    /// interrupt. Returns the report if the test is already over.
    pub(super) fn begin(
        request: R,
        regs: &mut impl RegisterFile,
    ) -> (Self, Option<SelfTestReport>) {
        let mut report = SelfTestReport {
            device_id: regs.read32(regs::REG_ID),
            ..SelfTestReport::default()
        };

        let identified = regs::decode_id(report.device_id).is_some();
        mark(&mut report, step::IDENTIFICATION, identified);

        report.liveness_written = LIVENESS_PATTERN;
        regs.write32(regs::REG_LIVENESS, LIVENESS_PATTERN);
        report.liveness_read = regs.read32(regs::REG_LIVENESS);
        let alive = report.liveness_read == !LIVENESS_PATTERN;
        mark(&mut report, step::LIVENESS, alive);

        report.factorial_input = POLLED_INPUT;
        regs.write32(regs::REG_STATUS, 0);
        let mut test = Self {
            request,
            report,
            waiting: Waiting::DeviceBusy,
            ticks: 0,
        };
        // Busy after a cancelled test: the watchdog's tick starts it later
        // (no second 50 µs of stalling here).
        if factorial_finished(regs) {
            test.start_polled_factorial(regs);
        }
        (test, None)
    }

    /// Write the polled factorial's input and wait for it, at most 50 µs.
    fn start_polled_factorial(&mut self, regs: &mut impl RegisterFile) {
        regs.write32(regs::REG_FACTORIAL, POLLED_INPUT);
        self.waiting = Waiting::PolledFactorial;
        self.ticks = 0;
        if poll_factorial(regs) {
            self.polled_factorial_done(true, regs);
        }
    }

    /// Record the polled factorial and start the one by interrupt.
    fn polled_factorial_done(&mut self, finished: bool, regs: &mut impl RegisterFile) {
        self.report.factorial_polled = regs.read32(regs::REG_FACTORIAL);
        let computed =
            finished && self.report.factorial_polled == regs::factorial_u32(POLLED_INPUT);
        mark(&mut self.report, step::FACTORIAL_POLLED, computed);
        self.report.factorial_interrupt_input = INTERRUPT_INPUT;
        regs.write32(regs::REG_STATUS, Status::IRQ_ON_FACTORIAL.bits());
        regs.write32(regs::REG_FACTORIAL, INTERRUPT_INPUT);
        self.waiting = Waiting::FactorialInterrupt;
        self.ticks = 0;
    }

    /// The request this test answers.
    pub(super) fn request(&self) -> R {
        self.request
    }

    /// The DPC saw `irq`. Returns the report when the test is over.
    pub(super) fn on_interrupt(
        &mut self,
        irq: IrqBits,
        regs: &mut impl RegisterFile,
    ) -> Option<SelfTestReport> {
        self.report.irq_bits_seen |= irq.bits();
        match self.waiting {
            Waiting::FactorialInterrupt if irq.contains(IrqBits::FACTORIAL) => {
                self.report.factorial_interrupt = regs.read32(regs::REG_FACTORIAL);
                let ok = self.report.factorial_interrupt == regs::factorial_u32(INTERRUPT_INPUT);
                mark(&mut self.report, step::FACTORIAL_INTERRUPT, ok);
                self.raise(regs);
                None
            }
            Waiting::RaisedInterrupt if irq.contains(IrqBits::SELFTEST) => {
                // The ISR acknowledged it: the bit must be gone now.
                let still_set = regs.read32(regs::REG_IRQ_STATUS) & IrqBits::SELFTEST.bits() != 0;
                mark(&mut self.report, step::RAISE_ACKNOWLEDGE, !still_set);
                Some(self.report)
            }
            _ => None,
        }
    }

    /// A watchdog tick. After `timeout_ticks` ticks the awaited step fails.
    pub(super) fn on_tick(
        &mut self,
        timeout_ticks: u32,
        regs: &mut impl RegisterFile,
    ) -> Option<SelfTestReport> {
        self.ticks += 1;
        if self.waiting == Waiting::DeviceBusy {
            if factorial_finished(regs) {
                self.start_polled_factorial(regs);
            } else if self.ticks >= timeout_ticks {
                self.polled_factorial_done(false, regs);
            }
            return None;
        }
        if self.waiting == Waiting::PolledFactorial {
            let done = factorial_finished(regs);
            if done || self.ticks >= timeout_ticks {
                self.polled_factorial_done(done, regs);
            }
            return None;
        }
        if self.ticks < timeout_ticks {
            return None;
        }
        match self.waiting {
            Waiting::DeviceBusy | Waiting::PolledFactorial => None,
            Waiting::FactorialInterrupt => {
                mark(&mut self.report, step::FACTORIAL_INTERRUPT, false);
                self.raise(regs);
                None
            }
            Waiting::RaisedInterrupt => {
                mark(&mut self.report, step::RAISE_ACKNOWLEDGE, false);
                regs.write32(regs::REG_IRQ_ACK, IrqBits::SELFTEST.bits());
                Some(self.report)
            }
        }
    }

    /// Leave the device as the test found it (cancel, stop).
    pub(super) fn abandon(&self, regs: &mut impl RegisterFile) {
        regs.write32(regs::REG_STATUS, 0);
        regs.write32(
            regs::REG_IRQ_ACK,
            (IrqBits::FACTORIAL | IrqBits::SELFTEST).bits(),
        );
    }

    fn raise(&mut self, regs: &mut impl RegisterFile) {
        regs.write32(regs::REG_STATUS, 0);
        self.waiting = Waiting::RaisedInterrupt;
        self.ticks = 0;
        regs.write32(regs::REG_IRQ_RAISE, IrqBits::SELFTEST.bits());
    }
}

fn mark(report: &mut SelfTestReport, bit: u32, passed: bool) {
    if passed {
        report.passed |= bit;
    } else {
        report.failed |= bit;
    }
}

/// Wait, at most 50 µs, for the factorial to finish.
fn poll_factorial(regs: &mut impl RegisterFile) -> bool {
    for _ in 0..POLL_LIMIT {
        if factorial_finished(regs) {
            return true;
        }
        regs.stall_us(POLL_INTERVAL_US);
    }
    factorial_finished(regs)
}

/// The factorial is no longer computing (and the device is there).
fn factorial_finished(regs: &mut impl RegisterFile) -> bool {
    let status = regs.read32(regs::REG_STATUS);
    status != u32::MAX && status & Status::COMPUTING.bits() == 0
}
