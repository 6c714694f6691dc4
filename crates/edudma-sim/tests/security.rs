//! The security review (`docs/security.md`), held on the simulated Windows
//! with `src/` itself: every caller's buffer comes through the I/O
//! manager's front end (`machine::iomgr`), as `DeviceIoControl`,
//! `ReadFile` and `WriteFile` build IRPs.

mod common;

use common::*;
use edudma_core::NtStatus;
use edudma_core::ioctl::{
    self, CONTROL_CODES, DeviceInfo, DmaHeader, METHOD_BUFFERED, METHOD_NEITHER, SelfTestReport,
    Stats, method_of,
};
use edudma_sim::io::{FileId, IrpId};
use edudma_sim::irql::Irql;
use edudma_sim::machine::iomgr::{POOL_CANARY, Submitted, UserBuffer, UserCall};
use edudma_sim::machine::{IrpResult, Machine};
use edudma_sim::mdl::BufferLayout;
use edudma_sim::native::NativeDriver;
use edudma_sim::sched::MS;
use zerocopy::{FromBytes, IntoBytes};

const WINDOW: u32 = 4095;

fn started(seed: u64) -> Machine<NativeDriver> {
    boot_native(&quiet_config(seed), 0, &[])
}

fn send(m: &mut Machine<NativeDriver>, file: u64, call: &UserCall) -> IrpId {
    match m
        .send_user(FileId(file), call, &BufferLayout::default())
        .expect("no crash")
    {
        Submitted::Sent(irp) => irp,
        Submitted::Refused(s) => panic!("the I/O manager refused {call:?}: {s}"),
    }
}

/// The IRP's whole system buffer and its result, once complete.
fn finish(m: &mut Machine<NativeDriver>, irp: IrpId) -> (Vec<u8>, IrpResult) {
    m.run_until(|m| m.is_complete(irp), 2_000 * MS)
        .expect("completes");
    let system_buffer = m
        .sys()
        .with(|k| k.irps.get(irp).map(|i| i.system_buffer.clone()))
        .expect("the IRP");
    (system_buffer, m.collect(irp).expect("collected"))
}

fn control(code: u32, input: UserBuffer, output: UserBuffer) -> UserCall {
    UserCall::DeviceIoControl {
        code,
        input,
        output,
    }
}

/// §2, §3: the FDO has no name and no symbolic link (only the device
/// interface reaches it), it was created with FILE_DEVICE_SECURE_OPEN, and
/// any open of a name below it is refused.
#[test]
fn the_device_has_no_name_no_link_and_no_namespace() {
    let mut m = started(1);
    assert_eq!(m.driver().device_name(), None);
    assert_eq!(m.driver().symbolic_links(), Vec::<String>::new());
    assert!(
        m.driver().interface_enabled(),
        "reached through its interface"
    );
    let fdo = m.driver().fdo_address();
    // SAFETY: the started driver's live FDO, read between routines.
    let characteristics = unsafe { (*(fdo as *const wdk_sys::DEVICE_OBJECT)).Characteristics };
    assert_ne!(
        characteristics & wdk_sys::FILE_DEVICE_SECURE_OPEN,
        0,
        "0x{characteristics:X}"
    );
    let open = |m: &mut Machine<NativeDriver>, file: u64, name: &'static str| {
        m.run(0, Irql::Passive, move |d, sys| {
            d.create(sys, FileId(file), name)
        })
    };
    assert_eq!(open(&mut m, 1, ""), Some(NtStatus::SUCCESS));
    for (file, name) in [
        (2, "\\"),
        (3, "\\x"),
        (4, "\\..\\..\\Device\\Other"),
        (5, "x"),
    ] {
        assert_eq!(
            open(&mut m, file, name),
            Some(NtStatus::ACCESS_DENIED),
            "{name:?}"
        );
    }
    m.leak_check().unwrap();
}

/// §4: a METHOD_NEITHER variant of every code gets
/// STATUS_INVALID_DEVICE_REQUEST and nothing else: the driver is handed
/// the caller's raw addresses (never mapped on the host: a dereference
/// would crash the run) and touches neither.
#[test]
fn method_neither_codes_are_refused_without_touching_the_callers_addresses() {
    let mut m = started(2);
    for code in CONTROL_CODES.map(|c| (c & !3) | METHOD_NEITHER) {
        let irp = send(
            &mut m,
            1,
            &control(code, UserBuffer::of(&[0; 8]), UserBuffer::out(4096)),
        );
        let (system_buffer, r) = finish(&mut m, irp);
        assert!(system_buffer.is_empty(), "no system buffer");
        assert_eq!(
            (r.status, r.information),
            (NtStatus::INVALID_DEVICE_REQUEST, 0),
            "0x{code:08X}"
        );
    }
    m.leak_check().unwrap();
}

/// §5: every length the caller gives is checked before anything is read or
/// written: each code with input lengths around its size (NULL and valid
/// pointers) and output lengths around its answer gets the core's status;
/// a direct-I/O code with a NULL output (no MDL) is refused, not followed.
#[test]
fn every_user_length_is_validated_before_use() {
    let mut m = started(3);
    let header = DmaHeader {
        device_offset: 0,
        flags: 0,
    };
    for code in CONTROL_CODES {
        let needed = match code {
            ioctl::IOCTL_EDUDMA_GET_INFO => size_of::<DeviceInfo>() as u32,
            ioctl::IOCTL_EDUDMA_GET_STATS => size_of::<Stats>() as u32,
            ioctl::IOCTL_EDUDMA_SELFTEST => size_of::<SelfTestReport>() as u32,
            _ => 16,
        };
        let buffered = method_of(code) == METHOD_BUFFERED;
        for input_length in [0u32, 1, 7, 8, 9, 64] {
            for present in [false, true] {
                for output_length in [0, 1, needed - 1, needed, needed + 1] {
                    let mut bytes = vec![0u8; input_length as usize];
                    let n = bytes.len().min(8);
                    bytes[..n].copy_from_slice(&header.as_bytes()[..n]);
                    let input = if present {
                        UserBuffer::of(&bytes)
                    } else {
                        UserBuffer::null(input_length)
                    };
                    let output = UserBuffer::out(output_length);
                    // What the driver sees: the copied input, or pool bytes.
                    let seen = if !present {
                        vec![POOL_CANARY; input_length as usize]
                    } else {
                        bytes.clone()
                    };
                    let has_mdl = !buffered && output_length > 0;
                    let expected =
                        ioctl::validate_control(code, &seen, output_length, has_mdl, WINDOW);
                    let irp = send(&mut m, 1, &control(code, input, output));
                    let (_, r) = finish(&mut m, irp);
                    match expected {
                        Err(e) => assert_eq!(
                            (r.status, r.information),
                            (e.status(), 0),
                            "0x{code:08X} in {input_length} ({present}) out {output_length}"
                        ),
                        Ok(_) => assert_eq!(
                            r.status,
                            NtStatus::SUCCESS,
                            "0x{code:08X} in {input_length} out {output_length}"
                        ),
                    }
                }
            }
        }
        if !buffered {
            // A NULL output of 16 bytes: OutputBufferLength says 16, no MDL.
            let irp = send(
                &mut m,
                1,
                &control(
                    code,
                    UserBuffer::of(header.as_bytes()),
                    UserBuffer::null(16),
                ),
            );
            let (_, r) = finish(&mut m, irp);
            assert_eq!(
                (r.status, r.information),
                (NtStatus::INVALID_PARAMETER, 0),
                "0x{code:08X} without an MDL"
            );
        }
    }
    // ReadFile/WriteFile: negative, huge and past-the-window offsets.
    for offset in [-1i64, i64::MIN, i64::MAX, i64::from(WINDOW), 4096, 1 << 32] {
        let read = send(
            &mut m,
            1,
            &UserCall::ReadFile {
                offset,
                buffer: UserBuffer::out(16),
            },
        );
        let write = send(
            &mut m,
            1,
            &UserCall::WriteFile {
                offset,
                buffer: UserBuffer::of(&[1; 16]),
            },
        );
        let (_, r) = finish(&mut m, read);
        let (_, w) = finish(&mut m, write);
        let eof = offset >= 0;
        let want = if eof {
            NtStatus::END_OF_FILE
        } else {
            NtStatus::INVALID_PARAMETER
        };
        assert_eq!((r.status, r.information), (want, 0), "read at {offset}");
        assert!(w.status.is_error(), "write at {offset}: {}", w.status);
        assert_eq!(w.information, 0);
    }
    m.leak_check().unwrap();
}

/// §6: what the driver returns is its answer and nothing else. The system
/// buffer starts as old pool content (the canary); a 4 KiB output buffer
/// gets exactly the structure (`Information` its size, every field a value
/// the driver defines) and the pool bytes past it are untouched; a refused
/// request returns nothing (`Information` 0) and leaves the buffer as it was.
#[test]
fn answers_carry_defined_fields_and_nothing_of_the_pool() {
    let mut m = started(4);
    let out = UserBuffer::out(4096);
    let none = || UserBuffer::null(0);
    // DeviceInfo, field by field.
    let irp = send(
        &mut m,
        1,
        &control(ioctl::IOCTL_EDUDMA_GET_INFO, none(), out.clone()),
    );
    let (sb, r) = finish(&mut m, irp);
    assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 64));
    assert!(
        sb[64..].iter().all(|b| *b == POOL_CANARY),
        "past the answer"
    );
    let info = DeviceInfo::read_from_bytes(&r.output).unwrap();
    let id = m.sys().with(|k| k.device.read(0, 4)) as u32;
    let expected = DeviceInfo {
        size: 64,
        contract_version: ioctl::CONTRACT_VERSION,
        driver_version: info.driver_version,
        device_id: id,
        dma_interface_version: 3,
        map_registers: info.map_registers,
        dma_alignment: 1,
        dma_address_width: 28,
        scatter_gather: 1,
        interrupt_kind: ioctl::InterruptKind::LineBased as u32,
        device_buffer_size: 4096,
        dma_window: WINDOW,
        allocation_policy: 0,
        dma_strategy: 0,
        requested_dma_strategy: 0,
        reserved: 0,
    };
    assert_eq!(info, expected);
    assert!((1..=16).contains(&info.map_registers), "{info:?}");
    let version = env!("CARGO_PKG_VERSION")
        .split('.')
        .map(|p| p.parse::<u32>().unwrap())
        .fold(0, |v, p| v << 8 | p);
    assert_eq!(
        info.driver_version, version,
        "major << 16 | minor << 8 | patch"
    );

    // Stats after one write: small counters, not words of pool or addresses.
    let w = send(
        &mut m,
        1,
        &UserCall::WriteFile {
            offset: 0,
            buffer: UserBuffer::of(&[7; 32]),
        },
    );
    assert_eq!(finish(&mut m, w).1.status, NtStatus::SUCCESS);
    let irp = send(
        &mut m,
        1,
        &control(ioctl::IOCTL_EDUDMA_GET_STATS, none(), out.clone()),
    );
    let (sb, r) = finish(&mut m, irp);
    assert_eq!(
        (r.status, r.information),
        (NtStatus::SUCCESS, size_of::<Stats>())
    );
    assert!(sb[size_of::<Stats>()..].iter().all(|b| *b == POOL_CANARY));
    let stats = Stats::read_from_bytes(&r.output).unwrap();
    assert_eq!((stats.requests, stats.completed), (1, 1));
    assert_eq!(stats.bytes_to_device, 32);
    for word in r.output.chunks(8) {
        assert!(
            u64::from_le_bytes(word.try_into().unwrap()) < 1 << 16,
            "{stats:?}"
        );
    }

    // The self-test report.
    let irp = send(
        &mut m,
        1,
        &control(ioctl::IOCTL_EDUDMA_SELFTEST, none(), out.clone()),
    );
    let (sb, r) = finish(&mut m, irp);
    assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 40));
    assert!(sb[40..].iter().all(|b| *b == POOL_CANARY));
    let report = SelfTestReport::read_from_bytes(&r.output).unwrap();
    assert!(report.all_passed(), "{report:?}");
    assert_eq!(report.device_id, id);

    // Refused: nothing returned, nothing written.
    for code in [ioctl::IOCTL_EDUDMA_GET_INFO, ioctl::IOCTL_EDUDMA_SELFTEST] {
        let irp = send(&mut m, 1, &control(code, none(), UserBuffer::out(39)));
        let (sb, r) = finish(&mut m, irp);
        assert_eq!((r.status, r.information), (NtStatus::BUFFER_TOO_SMALL, 0));
        assert!(r.output.is_empty());
        assert!(sb.iter().all(|b| *b == POOL_CANARY), "0x{code:08X}");
    }
    // A NULL input of 8 bytes: the pool bytes are the driver's input, and
    // they are not a valid header (reserved flags), so nothing moves.
    let before = m.sys().with(|k| *k.device.buffer());
    let irp = send(
        &mut m,
        1,
        &control(
            ioctl::IOCTL_EDUDMA_DMA_WRITE,
            UserBuffer::null(8),
            UserBuffer::of(&[9; 64]),
        ),
    );
    let (_, r) = finish(&mut m, irp);
    assert_eq!((r.status, r.information), (NtStatus::INVALID_PARAMETER, 0));
    assert_eq!(m.sys().with(|k| *k.device.buffer()), before);
    m.leak_check().unwrap();
}

/// §7: a handle's requests are its own: closing another handle (its
/// IRP_MJ_CLEANUP) cancels none of them, neither the one the device is
/// working on nor the queued ones, and what a read returns goes to its own
/// buffer only — the closed handle's cancelled read gets nothing.
#[test]
fn another_handles_requests_cannot_be_cancelled_or_observed() {
    let mut m = started(5);
    let mine = 7;
    let other = 8;
    let data: Vec<u8> = (0..200u32).map(|i| (i * 13 + 1) as u8).collect();
    let write = send(
        &mut m,
        mine,
        &UserCall::WriteFile {
            offset: 100,
            buffer: UserBuffer::of(&data),
        },
    );
    let other_read = send(
        &mut m,
        other,
        &UserCall::ReadFile {
            offset: 100,
            buffer: UserBuffer::out(200),
        },
    );
    let read = send(
        &mut m,
        mine,
        &UserCall::ReadFile {
            offset: 100,
            buffer: UserBuffer::out(200),
        },
    );
    // The other handle closes while my write is on the device and my read
    // waits behind its read.
    assert!(!m.is_complete(write));
    assert_eq!(m.cleanup(FileId(other)), Ok(NtStatus::SUCCESS));
    let (_, w) = finish(&mut m, write);
    assert_eq!((w.status, w.information), (NtStatus::SUCCESS, 200));
    let (_, o) = finish(&mut m, other_read);
    assert_eq!((o.status, o.information), (NtStatus::CANCELLED, 0));
    assert!(o.output.is_empty(), "the closed handle observed nothing");
    let (_, r) = finish(&mut m, read);
    assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 200));
    assert_eq!(r.output, data);
    m.leak_check().unwrap();
}

/// §4 in the glue's text: no file of `src/` names the two fields through
/// which METHOD_NEITHER hands over a caller's raw addresses.
#[test]
fn the_glue_never_reads_a_callers_raw_address() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../src");
    let mut files = 0;
    for entry in std::fs::read_dir(dir).expect("src/") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("a source file");
            for field in ["Type3InputBuffer", "UserBuffer"] {
                assert!(!text.contains(field), "{} names {field}", path.display());
            }
            files += 1;
        }
    }
    assert!(files >= 10, "{files} files in src/");
}
