use super::*;
use crate::CorruptByte;
use crate::io::Major;

fn machine() -> MachineChoice {
    MachineChoice {
        seed: 3,
        strategy: 0,
        full_window: false,
        msi: false,
        async_only: false,
        one_map_register: false,
        two_cpus: false,
        preempt: 0,
    }
}

fn write_then_read() -> Scenario {
    let at = Offset::Near(40);
    Scenario {
        machine: machine(),
        ops: vec![
            Op::Write {
                file: 0,
                offset: at,
                buffer: Buf::Valid(Len::Small(300), 9),
            },
            Op::Settle,
            Op::Read {
                file: 1,
                offset: at,
                buffer: Buf::Valid(Len::Small(300), 0),
            },
            Op::Settle,
        ],
    }
}

#[test]
fn a_healthy_device_passes() {
    let o = run(&write_then_read()).expect("no broken invariant");
    assert_eq!((o.sent, o.succeeded), (2, 2));
}

/// The checks can fail: a byte flipped on the way into the device is
/// seen in the device buffer, one flipped on the way out in the data read.
#[test]
fn a_corrupting_device_is_caught() {
    for (transfer, seen) in [(1, "device buffer"), (2, "data read")] {
        let e = run_with(&write_then_read(), |c| {
            c.corrupt_byte_injection = Some(CorruptByte { transfer, byte: 17 });
        })
        .expect_err("a flipped byte");
        assert!(e.contains(seen), "transfer {transfer}: {e}");
    }
}

#[test]
fn the_documented_sets_hold_no_stray_status() {
    let majors = [
        Major::Read {
            byte_offset: 0,
            length: 1,
        },
        Major::Write {
            byte_offset: 0,
            length: 1,
        },
        Major::DeviceControl {
            code: 0,
            input_length: 0,
            output_length: 0,
        },
    ];
    for major in majors {
        let set = allowed(&major);
        for stray in [
            NtStatus::PENDING,
            NtStatus::DEVICE_HARDWARE_ERROR,
            NtStatus::IO_TIMEOUT,
            NtStatus::INVALID_DEVICE_STATE,
            NtStatus::ACCESS_DENIED,
        ] {
            assert!(!set.contains(&stray), "{major:?}: {stray}");
        }
        assert!(set.contains(&NtStatus::SUCCESS));
    }
    // Only a read has an end of file; only a control code can be unknown.
    assert!(allowed(&majors[0]).contains(&NtStatus::END_OF_FILE));
    assert!(!allowed(&majors[1]).contains(&NtStatus::END_OF_FILE));
    assert!(!allowed(&majors[0]).contains(&NtStatus::INVALID_DEVICE_REQUEST));
}

#[test]
fn the_shadow_allows_only_what_was_written() {
    let mut s = Shadow::new(&[0u8; 4096]);
    s.set(5, 0xAB);
    assert!(s.check("x", 5, &[0xAB]).is_ok());
    assert!(s.check("x", 5, &[0]).is_err());
    s.add(5, 0x01);
    assert!(s.check("x", 5, &[0x01]).is_ok() && s.check("x", 5, &[0xAB]).is_ok());
    assert!(s.check("x", 4, &[0xFF]).is_err());
}

/// Every status the sets allow is one the contract documents (it has its
/// own explanation in `ioctl::explain_status`, the tool's table). The
/// contract's other statuses (a timeout, no DMA resources, a hardware
/// error) are left out: the fuzzed machine is healthy.
#[test]
fn the_documented_sets_come_from_the_contract() {
    let fallback = ioctl::explain_status(NtStatus(0xC000_0001u32 as i32));
    for major in [
        Major::Read {
            byte_offset: 0,
            length: 1,
        },
        Major::DeviceControl {
            code: 0,
            input_length: 0,
            output_length: 0,
        },
    ] {
        for status in allowed(&major) {
            assert_ne!(ioctl::explain_status(*status), fallback, "{status}");
        }
    }
}
