//! Bugs the dispatch fuzzer (`fuzz/`, `edudma_sim::fuzz`) found, each as a
//! directed test of `src/` on the simulator and as the fuzzer's own input
//! (the scenario it decoded, kept as a value).

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

/// The fuzzer's own input for the bug above, as the scenario it decoded to
/// (a value, so that it survives changes of the byte decoding): eight
/// self-tests queued on one handle with two cancels among them, on an MSI
/// machine with the common-buffer strategy.
#[test]
fn the_fuzzers_self_test_input_passes() {
    use edudma_sim::fuzz::{Buf, Code, Input, Len, MachineChoice, Offset, Op, Scenario};
    let selftest = Op::Control {
        file: 1,
        code: Code::Known(33),
        input: Input::None,
        output: Buf::Valid(Len::Small(81), 33),
    };
    let read = |length| Op::Read {
        file: 3,
        offset: Offset::WindowLess1,
        buffer: Buf::Valid(Len::Small(length), 39),
    };
    let mut ops = vec![
        Op::Control {
            file: 2,
            code: Code::Known(154),
            input: Input::Raw(Buf::Valid(Len::Small(762), 148)),
            output: Buf::Valid(Len::Struct(201), 46),
        },
        Op::Control {
            file: 2,
            code: Code::Known(84),
            input: Input::None,
            output: Buf::Valid(Len::Small(457), 255),
        },
        Op::Control {
            file: 2,
            code: Code::Known(158),
            input: Input::Header(Offset::Negative(2387225703656530428), false),
            output: Buf::Valid(Len::Small(81), 33),
        },
    ];
    ops.extend([selftest; 8]);
    ops.extend([
        Op::Write {
            file: 1,
            offset: Offset::WindowLess1,
            buffer: Buf::Valid(Len::Small(1623), 39),
        },
        read(1623),
        read(1623),
        read(87),
        selftest,
        Op::Control {
            file: 1,
            code: Code::Known(33),
            input: Input::None,
            output: Buf::Valid(Len::Small(3865), 123),
        },
        Op::Read {
            file: 3,
            offset: Offset::Near(46913),
            buffer: Buf::Valid(Len::Small(279), 105),
        },
        Op::Control {
            file: 3,
            code: Code::Known(75),
            input: Input::None,
            output: Buf::Valid(Len::Zero, 0),
        },
        Op::Control {
            file: 0,
            code: Code::OtherMethod(0, 0),
            input: Input::Header(Offset::Any(-3786440478485131559), false),
            output: Buf::Valid(Len::Small(2465), 59),
        },
        Op::CancelLater(255, 123),
        Op::Control {
            file: 1,
            code: Code::Known(191),
            input: Input::Header(Offset::Negative(1476082143563937750), false),
            output: Buf::Valid(Len::Small(1497), 14),
        },
        Op::Read {
            file: 0,
            offset: Offset::Page,
            buffer: Buf::Valid(Len::Zero, 46),
        },
        Op::Cancel(169),
    ]);
    let scenario = Scenario {
        machine: MachineChoice {
            seed: 16130,
            strategy: 3,
            full_window: false,
            msi: true,
            async_only: true,
            one_map_register: true,
            two_cpus: true,
            preempt: 1,
        },
        ops,
    };
    if let Err(e) = edudma_sim::fuzz::run(&scenario) {
        panic!("{e}");
    }
}
