//! The I/O manager's and IRQL rules (SDV rule names): for each, a test
//! driver that breaks it on purpose, and the exact violation it must end
//! with. The driver (`Bad`) is written against the kernel exports like a C
//! WDM driver; its `Mode` comes from the registry.

mod common;

use common::testdriver::{
    self as kit, DEFERRED_START_IO, DMA_ADAPTER_AT_START, KEEP_ADAPTER_AT_REMOVE, MODE,
    NON_CANCELABLE, Probe, STATUS_PENDING, STATUS_SUCCESS, TestDriver, WAIT_BEFORE_REMOVE_PASSES,
};
use common::{bugcheck, quiet_config};
use edudma_core::NtStatus;
use edudma_core::regs::REG_IRQ_RAISE;
use edudma_sim::io::IrpId;
use edudma_sim::irql::{Irql, SpinLock};
use edudma_sim::kernel::Crash;
use edudma_sim::machine::{IrpSpec, Machine};
use edudma_sim::mdl::BufferLayout;
use edudma_sim::native::NativeDriver;
use edudma_sim::sched::MS;
use edudma_sim::verifier::{Rule, Violation};
use edudma_sim::wdm::PnpMinor;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use wdk_sys::ntddk::{
    IoReleaseCancelSpinLock, IoStartNextPacket, IoStartPacket, KeAcquireSpinLockRaiseToDpc,
    KeReleaseSpinLock,
};
use wdk_sys::{DEVICE_OBJECT, IRP, KDPC, KSPIN_LOCK, NTSTATUS, PVOID};

/// The name the kernel gives every driver `KSPIN_LOCK` in a violation (a
/// `KSPIN_LOCK` is a word: it has no name of its own).
fn driver_lock() -> &'static str {
    SpinLock::Native(0).name()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
enum Mode {
    /// Queue every request with IoStartPacket; StartIo leaves it for the
    /// DPC (the default).
    Queue = 0,
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
    /// The dispatch routine sets its own cancel routine and queues with
    /// `IoStartPacket(…, CancelFunction = NULL)`.
    OwnCancelRoutine,
    /// StartIo logs whether the IRP still has a cancel routine; the DPC
    /// starts the next packet with `Cancelable = TRUE`.
    LogCancelRoutine,
    /// DpcForIsr releases a spin lock to PASSIVE_LEVEL.
    LowerBelowDpc,
    /// Two spin locks released out of order: the second release runs at
    /// PASSIVE_LEVEL.
    ReleaseOutOfOrder,
}

const MODES: [Mode; 20] = [
    Mode::Queue,
    Mode::DoubleComplete,
    Mode::CompleteUnderLock,
    Mode::PendingWithoutMark,
    Mode::MarkedReturnsSuccess,
    Mode::ReturnWithoutCompleting,
    Mode::CompleteWithPending,
    Mode::StartNextUnderLock,
    Mode::SyncStartIo,
    Mode::IgnoreCancel,
    Mode::LockHeldAtReturn,
    Mode::CancelLockKept,
    Mode::CompleteWithCancelRoutine,
    Mode::StartNextAtPassive,
    Mode::LockTwice,
    Mode::UseAfterComplete,
    Mode::OwnCancelRoutine,
    Mode::LogCancelRoutine,
    Mode::LowerBelowDpc,
    Mode::ReleaseOutOfOrder,
];

/// The mode of the device (from its registry `Mode`).
///
/// # Safety
/// `device` must be the test driver's live FDO.
unsafe fn mode(device: *mut DEVICE_OBJECT) -> Mode {
    // SAFETY: forwarded.
    let m = unsafe { kit::ext(device) }.mode;
    MODES.get(m as usize).copied().unwrap_or(Mode::Queue)
}

/// The dispatch routine of every request.
unsafe extern "C" fn dispatch(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: (whole body) our FDO and a request we own at PASSIVE_LEVEL;
    // what each mode breaks is the point of the test.
    unsafe {
        let ext = kit::ext(device);
        match mode(device) {
            Mode::DoubleComplete => {
                kit::complete(irp, STATUS_SUCCESS, 0);
                kit::complete(irp, STATUS_SUCCESS, 0);
                STATUS_SUCCESS
            }
            Mode::CompleteUnderLock => {
                let old = KeAcquireSpinLockRaiseToDpc(ext.lock());
                kit::complete(irp, STATUS_SUCCESS, 0);
                KeReleaseSpinLock(ext.lock(), old);
                STATUS_SUCCESS
            }
            Mode::PendingWithoutMark => STATUS_PENDING,
            Mode::MarkedReturnsSuccess => {
                kit::mark_irp_pending(irp);
                kit::complete(irp, STATUS_SUCCESS, 0);
                STATUS_SUCCESS
            }
            Mode::ReturnWithoutCompleting => STATUS_SUCCESS,
            Mode::CompleteWithPending => {
                kit::mark_irp_pending(irp);
                kit::complete(irp, STATUS_PENDING, 0);
                STATUS_PENDING
            }
            Mode::LockHeldAtReturn => {
                kit::complete(irp, STATUS_SUCCESS, 0);
                KeAcquireSpinLockRaiseToDpc(ext.lock());
                STATUS_SUCCESS
            }
            Mode::StartNextAtPassive => {
                kit::mark_irp_pending(irp);
                IoStartNextPacket(device, 0);
                STATUS_PENDING
            }
            Mode::LockTwice => {
                let old = KeAcquireSpinLockRaiseToDpc(ext.lock());
                KeAcquireSpinLockRaiseToDpc(ext.lock());
                KeReleaseSpinLock(ext.lock(), old);
                kit::complete(irp, STATUS_SUCCESS, 0);
                STATUS_SUCCESS
            }
            Mode::OwnCancelRoutine => {
                kit::mark_irp_pending(irp);
                kit::set_cancel_routine(irp, Some(cancel));
                IoStartPacket(device, irp, std::ptr::null_mut(), None);
                STATUS_PENDING
            }
            Mode::ReleaseOutOfOrder => {
                let mut second: KSPIN_LOCK = 0;
                let a = KeAcquireSpinLockRaiseToDpc(ext.lock());
                let b = KeAcquireSpinLockRaiseToDpc(&mut second);
                KeReleaseSpinLock(ext.lock(), a);
                KeReleaseSpinLock(&mut second, b);
                kit::complete(irp, STATUS_SUCCESS, 0);
                STATUS_SUCCESS
            }
            Mode::UseAfterComplete => {
                kit::complete(irp, STATUS_SUCCESS, 0);
                // IoMarkIrpPending is a header inline the kernel never sees
                // once the IRP is gone; IoStartPacket is an export.
                IoStartPacket(device, irp, std::ptr::null_mut(), Some(cancel));
                STATUS_SUCCESS
            }
            _ => {
                kit::mark_irp_pending(irp);
                IoStartPacket(device, irp, std::ptr::null_mut(), Some(cancel));
                STATUS_PENDING
            }
        }
    }
}

/// StartIo.
unsafe extern "C" fn start_io(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: (whole body) our FDO and the current packet, at DISPATCH_LEVEL.
    unsafe {
        let ext = kit::ext(device);
        let started = ext.start_io_calls.fetch_add(1, Ordering::AcqRel) + 1;
        match mode(device) {
            Mode::StartNextUnderLock => {
                let old = KeAcquireSpinLockRaiseToDpc(ext.lock());
                kit::set_cancel_routine(irp, None);
                IoStartNextPacket(device, 0);
                KeReleaseSpinLock(ext.lock(), old);
                kit::complete(irp, STATUS_SUCCESS, 0);
            }
            Mode::SyncStartIo if started > 1 => {
                kit::set_cancel_routine(irp, None);
                IoStartNextPacket(device, 0);
                kit::complete(irp, STATUS_SUCCESS, 0);
            }
            Mode::CompleteWithCancelRoutine => {
                IoStartNextPacket(device, 0);
                kit::complete(irp, STATUS_SUCCESS, 0);
            }
            Mode::LogCancelRoutine => {
                let set = if (*irp).CancelRoutine.is_some() {
                    "set"
                } else {
                    "null"
                };
                ext.probe.push(format!("start_io cancel routine {set}"));
            }
            _ => {}
        }
    }
}

/// The cancel routine of every queued request: releases the cancel spin
/// lock (unless the mode keeps it) and completes nothing.
unsafe extern "C" fn cancel(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    // SAFETY: called holding the cancel spin lock, with our FDO and the IRP.
    unsafe {
        if mode(device) == Mode::OwnCancelRoutine {
            kit::ext(device)
                .probe
                .push("own cancel routine called".into());
        }
        if mode(device) != Mode::CancelLockKept {
            IoReleaseCancelSpinLock((*irp).CancelIrql);
        }
    }
}

/// DpcForIsr: finish the current packet the way the glue rule says.
unsafe extern "C" fn dpc_for_isr(_dpc: *mut KDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    let device = context.cast::<DEVICE_OBJECT>();
    // SAFETY: the DPC's context is our FDO; CurrentIrp is the I/O manager's.
    unsafe {
        let ext = kit::ext(device);
        if mode(device) == Mode::LowerBelowDpc {
            let _ = KeAcquireSpinLockRaiseToDpc(ext.lock());
            KeReleaseSpinLock(ext.lock(), 0);
            return;
        }
        let cancelable = u8::from(mode(device) == Mode::LogCancelRoutine);
        let irp = (*device).CurrentIrp;
        if !irp.is_null() {
            kit::set_cancel_routine(irp, None);
            IoStartNextPacket(device, cancelable);
            kit::complete(irp, STATUS_SUCCESS, 0);
        }
    }
}

/// The misbehaving driver.
struct Bad;

impl TestDriver for Bad {
    const DISPATCH: kit::DispatchRoutine = dispatch;
    const START_IO: Option<kit::StartIoRoutine> = Some(start_io);
    const DPC_FOR_ISR: kit::DeferredRoutine = dpc_for_isr;
}

fn machine_with(mode: Mode, extra: &[(&str, u32)]) -> (Machine<NativeDriver>, Arc<Probe>) {
    let mut registry = vec![(MODE, mode as u32)];
    registry.extend_from_slice(extra);
    kit::boot::<Bad>(&quiet_config(1), &registry)
}

fn machine(mode: Mode) -> Machine<NativeDriver> {
    machine_with(mode, &[]).0
}

fn info_irp() -> IrpSpec {
    IrpSpec::Control {
        code: edudma_core::ioctl::IOCTL_EDUDMA_GET_INFO,
        input: vec![],
        output_length: 56,
        data: vec![],
    }
}

fn send(m: &mut Machine<NativeDriver>) -> Result<IrpId, Crash> {
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
        Violation::CompletedUnderSpinLock {
            lock: driver_lock(),
        },
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
        Violation::SpinLockHeldAtReturn {
            lock: driver_lock(),
        },
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
        Violation::SpinLockDeadlock {
            lock: driver_lock(),
        },
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
        Violation::StartNextPacketUnderSpinLock {
            lock: driver_lock(),
        },
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
/// StartIo, so the second's IoStartNextPacket re-enters StartIo. The DPC
/// comes from the device's interrupt (edu's IRQ_RAISE register).
fn recursion(deferred: bool) -> Machine<NativeDriver> {
    let (mut m, probe) = machine_with(
        Mode::SyncStartIo,
        &[(DEFERRED_START_IO, u32::from(deferred))],
    );
    let a = send(&mut m).unwrap();
    let b = send(&mut m).unwrap();
    let c = send(&mut m).unwrap();
    kit::write_register(&mut m, &probe, REG_IRQ_RAISE, 0x1);
    let _ = m.run_until(|m| [a, b, c].iter().all(|i| m.is_complete(*i)), 100 * MS);
    assert_eq!(
        probe.log().first().map(String::as_str),
        Some("isr 0x1 queued=true")
    );
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
    // The driver gets its adapter at start and forgets to put it at removal.
    let (mut m, _) = kit::boot::<Bad>(
        &quiet_config(3),
        &[(DMA_ADAPTER_AT_START, 1), (KEEP_ADAPTER_AT_REMOVE, 1)],
    );
    assert_eq!(
        m.pnp(PnpMinor::RemoveDevice, MS),
        Err(Crash::BugCheck(Violation::AdapterLeaked))
    );
}

#[test]
fn verifier_catches_a_remove_lock_wait_before_the_removal_went_down() {
    // Learn: IoReleaseRemoveLockAndWait after passing the remove IRP down.
    let (mut m, _) = kit::boot::<Bad>(&quiet_config(3), &[(WAIT_BEFORE_REMOVE_PASSES, 1)]);
    assert_eq!(
        m.pnp(PnpMinor::RemoveDevice, MS),
        Err(Crash::BugCheck(
            Violation::RemoveLockWaitBeforeRemovePassedDown
        ))
    );
}

#[test]
fn verifier_removal_that_puts_the_adapter_leaks_nothing() {
    // The same driver, putting its adapter: removal and the leak check pass.
    let (mut m, _) = kit::boot::<Bad>(&quiet_config(3), &[(DMA_ADAPTER_AT_START, 1)]);
    assert_eq!(m.pnp(PnpMinor::RemoveDevice, MS), Ok(NtStatus::SUCCESS));
    m.leak_check().unwrap();
    assert!(m.driver().leaks().is_empty(), "{:?}", m.driver().leaks());
}

/// `IoStartPacket` with no cancel routine leaves the one the driver set:
/// a cancel of the queued request still calls it.
#[test]
fn io_start_packet_without_a_cancel_function_keeps_the_drivers_routine() {
    let (mut m, probe) = machine_with(Mode::OwnCancelRoutine, &[]);
    let _busy = send(&mut m).unwrap();
    let queued = send(&mut m).unwrap();
    m.cancel(queued).unwrap();
    assert_eq!(probe.log(), vec!["own cancel routine called"]);
    assert_eq!(m.sys().with(|k| k.stats.cancel_routines), 1);
}

/// `IoSetStartIoAttributes(NonCancelable)`: StartIo gets the IRP without a
/// cancel routine, from `IoStartPacket` and from `IoStartNextPacket(TRUE)`.
#[test]
fn non_cancelable_start_io_attributes_clear_the_cancel_routine() {
    for (non_cancelable, seen) in [(1, "null"), (0, "set")] {
        let (mut m, probe) =
            machine_with(Mode::LogCancelRoutine, &[(NON_CANCELABLE, non_cancelable)]);
        let a = send(&mut m).unwrap();
        let b = send(&mut m).unwrap();
        kit::write_register(&mut m, &probe, REG_IRQ_RAISE, 0x1);
        m.run_until(|m| m.is_complete(a), 100 * MS).unwrap();
        let expected = format!("start_io cancel routine {seen}");
        let starts: Vec<String> = probe
            .log()
            .into_iter()
            .filter(|l| l.starts_with("start_io"))
            .collect();
        assert_eq!(
            starts,
            vec![expected.clone(), expected],
            "NonCancelable={non_cancelable}"
        );
        assert!(!m.is_complete(b));
    }
}

/// A DPC that lowers the IRQL below DISPATCH_LEVEL (a spin lock released
/// to PASSIVE_LEVEL) is flagged.
#[test]
fn verifier_irql_lowered_below_dispatch_in_a_dpc() {
    let (mut m, probe) = machine_with(Mode::LowerBelowDpc, &[]);
    kit::write_register(&mut m, &probe, REG_IRQ_RAISE, 0x1);
    let _ = m.run_for(10 * MS);
    assert_eq!(
        bugcheck(&m),
        Some(Violation::WrongIrql {
            routine: edudma_sim::kernel::LOWERED_BELOW_ENTRY,
            irql: Irql::Passive,
        })
    );
}

/// `KeReleaseSpinLock` runs at DISPATCH_LEVEL: the second of two locks
/// released out of order is released at PASSIVE_LEVEL.
#[test]
fn verifier_irql_spin_lock_released_at_the_wrong_irql() {
    expect(
        Mode::ReleaseOutOfOrder,
        Violation::WrongIrql {
            routine: "KeReleaseSpinLock",
            irql: Irql::Passive,
        },
    );
}
