//! Bugs the dispatch fuzzer (`fuzz/`, `edudma_sim::fuzz`) found, each as a
//! directed test of `src/` on the simulator. Their inputs are in the seed
//! corpus too (`fuzz/corpus/dispatch/seed-regression-*`: the fuzzer's own find).

mod common;

use common::*;
use edudma_core::NtStatus;
use edudma_core::ioctl::{self, SelfTestReport};
use edudma_core::regs::{REG_STATUS, Status};
use edudma_sim::machine::IrpSpec;
use edudma_sim::mdl::BufferLayout;
use edudma_sim::sched::MS;
use zerocopy::FromBytes;

/// A self-test cancelled while its interrupt-driven factorial computes
/// leaves the device computing for a few microseconds; the edu device
/// ignores a factorial written meanwhile. The next self-test's polled
/// factorial was written into that window and read the cancelled test's
/// 6! = 720 instead of 5! = 120: a healthy device failed its self-test.
/// The next test now waits for the device to finish first.
#[test]
fn a_self_test_after_a_cancelled_one_passes() {
    for seed in 0..8 {
        let mut m = boot_native(&quiet_config(seed), 0, &[]);
        let spec = || IrpSpec::Control {
            code: ioctl::IOCTL_EDUDMA_SELFTEST,
            input: Vec::new(),
            output_length: size_of::<SelfTestReport>() as u32,
            data: Vec::new(),
        };
        let first = m.send(spec(), &BufferLayout::default()).unwrap();
        let second = m.send(spec(), &BufferLayout::default()).unwrap();
        // The first test's interrupt-driven factorial is computing.
        let both = (Status::COMPUTING | Status::IRQ_ON_FACTORIAL).bits();
        m.run_until(
            |m| {
                m.sys()
                    .with(|k| k.device.read(REG_STATUS as u64, 4) as u32 & both == both)
            },
            1_000 * MS,
        )
        .unwrap();
        m.cancel(first).unwrap();
        let r = m.wait(first, 1_000 * MS).unwrap();
        assert_eq!(r.status, NtStatus::CANCELLED, "seed {seed}");
        let r = m.wait(second, 1_000 * MS).unwrap();
        assert_eq!(r.status, NtStatus::SUCCESS, "seed {seed}");
        let report = SelfTestReport::read_from_bytes(&r.output).unwrap();
        assert!(report.all_passed(), "seed {seed}: {report:?}");
        assert_eq!(report.factorial_polled, 120, "seed {seed}");
        m.leak_check().unwrap();
    }
}
