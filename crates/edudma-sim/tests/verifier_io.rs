//! The I/O manager's and IRQL rules (SDV rule names): for each, a driver
//! that breaks it on purpose, and the exact violation it must end with.

mod common;

use common::{Null, bugcheck, quiet_config};
use edudma_core::NtStatus;
use edudma_sim::hal::{IoAllocationAction, MapRegisterBase};
use edudma_sim::io::{CancelRoutine, IrpId};
use edudma_sim::irql::{Irql, SpinLock};
use edudma_sim::kernel::{Crash, Sys};
use edudma_sim::machine::{IrpSpec, Machine};
use edudma_sim::mdl::BufferLayout;
use edudma_sim::sched::MS;
use edudma_sim::verifier::{Rule, Violation};
use edudma_sim::wdm::{PnpMinor, PnpOutcome, WdmDriver};

const LOCK: SpinLock = SpinLock::Driver("test lock");

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    DoubleComplete,
    CompleteUnderLock,
    PendingWithoutMark,
    MarkedReturnsSuccess,
    ReturnWithoutCompleting,
    CompleteWithPending,
    StartNextUnderLock,
    /// StartIo completes synchronously and starts the next packet; the
    /// first packet waits for a DPC.
    SyncStartIo,
    IgnoreCancel,
    LockHeldAtReturn,
    CancelLockKept,
    CompleteWithCancelRoutine,
    StartNextAtPassive,
    LockTwice,
    UseAfterComplete,
}

struct Bad {
    mode: Mode,
    started: Vec<IrpId>,
}

impl Bad {
    fn new(mode: Mode) -> Self {
        Self {
            mode,
            started: Vec::new(),
        }
    }
}

impl WdmDriver for Bad {
    fn dispatch(&mut self, sys: &Sys, irp: IrpId) -> NtStatus {
        match self.mode {
            Mode::DoubleComplete => {
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
                NtStatus::SUCCESS
            }
            Mode::CompleteUnderLock => {
                let old = sys.ke_acquire_spin_lock(LOCK);
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
                sys.ke_release_spin_lock(LOCK, old);
                NtStatus::SUCCESS
            }
            Mode::PendingWithoutMark => NtStatus::PENDING,
            Mode::MarkedReturnsSuccess => {
                sys.io_mark_irp_pending(irp);
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
                NtStatus::SUCCESS
            }
            Mode::ReturnWithoutCompleting => NtStatus::SUCCESS,
            Mode::CompleteWithPending => {
                sys.io_mark_irp_pending(irp);
                sys.io_complete_request(irp, NtStatus::PENDING, 0);
                NtStatus::PENDING
            }
            Mode::LockHeldAtReturn => {
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
                sys.ke_acquire_spin_lock(LOCK);
                NtStatus::SUCCESS
            }
            Mode::StartNextAtPassive => {
                sys.io_mark_irp_pending(irp);
                sys.io_start_next_packet(self, false);
                NtStatus::PENDING
            }
            Mode::LockTwice => {
                let a = sys.ke_acquire_spin_lock(LOCK);
                sys.ke_acquire_spin_lock(LOCK);
                sys.ke_release_spin_lock(LOCK, a);
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
                NtStatus::SUCCESS
            }
            Mode::UseAfterComplete => {
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
                sys.io_mark_irp_pending(irp);
                NtStatus::SUCCESS
            }
            _ => {
                sys.io_mark_irp_pending(irp);
                sys.io_start_packet(self, irp, Some(CancelRoutine(1)));
                NtStatus::PENDING
            }
        }
    }

    fn pnp(&mut self, _: &Sys, _: PnpMinor) -> PnpOutcome {
        PnpOutcome::Done(NtStatus::SUCCESS)
    }

    fn start_io(&mut self, sys: &Sys, irp: IrpId) {
        self.started.push(irp);
        match self.mode {
            Mode::StartNextUnderLock => {
                let old = sys.ke_acquire_spin_lock(LOCK);
                sys.io_set_cancel_routine(irp, None);
                sys.io_start_next_packet(self, false);
                sys.ke_release_spin_lock(LOCK, old);
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
            }
            Mode::SyncStartIo if self.started.len() > 1 => {
                sys.io_set_cancel_routine(irp, None);
                sys.io_start_next_packet(self, false);
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
            }
            Mode::CompleteWithCancelRoutine => {
                sys.io_start_next_packet(self, false);
                sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
            }
            _ => {}
        }
    }

    fn cancel(&mut self, sys: &Sys, _: CancelRoutine, _irp: IrpId, irql: Irql) {
        if self.mode != Mode::CancelLockKept {
            sys.io_release_cancel_spin_lock(irql);
        }
    }

    fn isr(&mut self, _: &Sys) -> bool {
        false
    }

    fn dpc_for_isr(&mut self, sys: &Sys, _: Option<IrpId>) {
        // Finish the current packet the way the glue rule says.
        if let Some(irp) = sys.current_irp() {
            sys.io_set_cancel_routine(irp, None);
            sys.io_start_next_packet(self, false);
            sys.io_complete_request(irp, NtStatus::SUCCESS, 0);
        }
    }

    fn timer_dpc(&mut self, _: &Sys) {}

    fn execution_routine(&mut self, _: &Sys, _: MapRegisterBase) -> IoAllocationAction {
        IoAllocationAction::KeepObject
    }
}

fn machine(mode: Mode) -> Machine<Bad> {
    Machine::new(&quiet_config(1), Bad::new(mode))
}

fn info_irp() -> IrpSpec {
    IrpSpec::Control {
        code: edudma_core::ioctl::IOCTL_EDUDMA_GET_INFO,
        input: vec![],
        output_length: 56,
        data: vec![],
    }
}

fn send(m: &mut Machine<Bad>) -> Result<IrpId, Crash> {
    m.send(info_irp(), &BufferLayout::default())
}

fn expect(mode: Mode, v: Violation) {
    let mut m = machine(mode);
    let r = send(&mut m);
    assert_eq!(r.err(), Some(Crash::BugCheck(v.clone())), "{mode:?}");
    assert_eq!(bugcheck(&m), Some(v));
}

#[test]
fn verifier_sdv_double_completion() {
    expect(Mode::DoubleComplete, Violation::DoubleCompletion { irp: 1 });
    assert_eq!(
        Violation::DoubleCompletion { irp: 1 }.rule(),
        Rule::Sdv("DoubleCompletion")
    );
}

#[test]
fn verifier_sdv_spin_lock_safe_complete_under_lock() {
    expect(
        Mode::CompleteUnderLock,
        Violation::CompletedUnderSpinLock { lock: "test lock" },
    );
}

#[test]
fn verifier_sdv_mark_irp_pending_missing() {
    expect(
        Mode::PendingWithoutMark,
        Violation::PendingWithoutMark { irp: 1 },
    );
}

#[test]
fn verifier_sdv_pended_completed_request() {
    expect(
        Mode::MarkedReturnsSuccess,
        Violation::MarkedPendingReturnedOther { irp: 1 },
    );
}

#[test]
fn verifier_sdv_returned_without_completing() {
    expect(
        Mode::ReturnWithoutCompleting,
        Violation::ReturnedWithoutCompleting { irp: 1 },
    );
}

#[test]
fn verifier_sdv_complete_with_status_pending() {
    expect(
        Mode::CompleteWithPending,
        Violation::CompletedWithPending { irp: 1 },
    );
}

#[test]
fn verifier_sdv_spin_lock_held_at_return() {
    expect(
        Mode::LockHeldAtReturn,
        Violation::SpinLockHeldAtReturn { lock: "test lock" },
    );
}

#[test]
fn verifier_irql_start_next_packet_at_passive() {
    expect(
        Mode::StartNextAtPassive,
        Violation::WrongIrql {
            routine: "IoStartNextPacket",
            irql: Irql::Passive,
        },
    );
}

#[test]
fn verifier_sdv_spin_lock_acquired_twice() {
    expect(
        Mode::LockTwice,
        Violation::SpinLockDeadlock { lock: "test lock" },
    );
}

#[test]
fn verifier_sdv_irp_used_after_completion() {
    expect(
        Mode::UseAfterComplete,
        Violation::IrpUsedAfterCompletion { irp: 1 },
    );
}

#[test]
fn verifier_sdv_spin_lock_safe_start_next_packet_under_lock() {
    expect(
        Mode::StartNextUnderLock,
        Violation::StartNextPacketUnderSpinLock { lock: "test lock" },
    );
}

#[test]
fn verifier_sdv_cancel_routine_still_set_at_completion() {
    expect(
        Mode::CompleteWithCancelRoutine,
        Violation::CompletedWithCancelRoutine { irp: 1 },
    );
}

/// Three packets: the first waits for a DPC, the next two complete inside
/// StartIo, so the second's IoStartNextPacket re-enters StartIo.
fn recursion(deferred: bool) -> Machine<Bad> {
    let mut m = machine(Mode::SyncStartIo);
    m.sys().io_set_start_io_attributes(deferred, false);
    let a = send(&mut m).unwrap();
    let b = send(&mut m).unwrap();
    let c = send(&mut m).unwrap();
    let sys = m.sys().clone();
    let old = sys.ke_raise_irql(Irql::Device);
    sys.io_request_dpc(None);
    sys.ke_lower_irql(old);
    let _ = m.run_until(|m| [a, b, c].iter().all(|i| m.is_complete(*i)), 100 * MS);
    m
}

#[test]
fn verifier_sdv_start_io_recursion_without_deferred_start_io() {
    let m = recursion(false);
    assert_eq!(bugcheck(&m), Some(Violation::StartIoRecursion));
}

#[test]
fn verifier_deferred_start_io_prevents_recursion() {
    let m = recursion(true);
    assert_eq!(bugcheck(&m), None);
    assert!(m.sys().with(|k| k.stats.start_io_deferred) >= 1);
}

#[test]
fn verifier_sdv_cancelled_irp_never_completed() {
    let mut m = machine(Mode::IgnoreCancel);
    let irp = send(&mut m).unwrap();
    m.cancel(irp).unwrap();
    assert_eq!(
        m.leak_check(),
        Err(Crash::BugCheck(Violation::CancelledIrpNeverCompleted {
            irp: irp.0
        }))
    );
}

#[test]
fn verifier_sdv_cancel_spin_lock_not_released() {
    let mut m = machine(Mode::CancelLockKept);
    let irp = send(&mut m).unwrap();
    assert_eq!(
        m.cancel(irp),
        Err(Crash::BugCheck(Violation::CancelSpinLockMisuse))
    );
}

#[test]
fn verifier_sdv_request_incomplete_at_removal() {
    let mut m = machine(Mode::IgnoreCancel);
    let irp = send(&mut m).unwrap();
    let r = m.pnp(PnpMinor::RemoveDevice, 10 * MS);
    assert_eq!(
        r,
        Err(Crash::BugCheck(Violation::RequestIncompleteAtRemoval {
            irp: irp.0
        }))
    );
}

#[test]
fn verifier_leak_check_catches_an_adapter_never_put() {
    let mut m = Machine::new(&quiet_config(3), Null);
    let _ = m
        .sys()
        .io_get_dma_adapter(&common::edu_description())
        .unwrap();
    assert_eq!(
        m.pnp(PnpMinor::RemoveDevice, MS),
        Err(Crash::BugCheck(Violation::AdapterLeaked))
    );
}
