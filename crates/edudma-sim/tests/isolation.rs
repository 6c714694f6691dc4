//! An abort inside driver code fails one test, not the suite: the test
//! that may abort runs in a child process (`edudma_sim::isolate`).

use edudma_core::NtStatus;
use edudma_sim::irql::Irql;
use edudma_sim::isolate;
use edudma_sim::machine::{Machine, MachineConfig};
use edudma_sim::native::{NativeConfig, NativeDriver};
use wdk_sys::{DRIVER_OBJECT, NTSTATUS, UNICODE_STRING};

/// A driver with a bug: its `DriverEntry` panics, which cannot unwind out
/// of an `extern "system"` function and aborts the process.
unsafe extern "system" fn panicking_driver_entry(
    _driver: *mut DRIVER_OBJECT,
    _registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    panic!("a bug in driver code");
}

fn load(entry: edudma_sim::native::DriverEntryFn) -> Option<NtStatus> {
    let config = MachineConfig::default();
    let native = NativeConfig {
        entry,
        ..NativeConfig::default()
    };
    let mut m = Machine::new_with(&config, |sys| NativeDriver::new(sys, &native));
    m.run(0, Irql::Passive, |d, sys| d.load(sys))
}

#[test]
fn a_driver_that_aborts() {
    if !isolate::is_child() {
        // Only meaningful as the child of the test below.
        return;
    }
    let _ = load(panicking_driver_entry);
    unreachable!("the process aborted in DriverEntry");
}

#[test]
fn an_abort_in_driver_code_ends_only_the_child_process_of_its_test() {
    let end = isolate::run_in_child("a_driver_that_aborts").expect("child started");
    assert!(end.aborted(), "{end:?}");
    assert!(
        end.stderr.contains("a bug in driver code"),
        "{}",
        end.stderr
    );
    // This process, and the rest of the suite, go on: the real driver loads.
    assert_eq!(
        load(edudma_sim::native::edudma_driver_entry()),
        Some(NtStatus::SUCCESS)
    );
}
