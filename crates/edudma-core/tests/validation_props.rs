//! Property tests: validation turns *any* input into a request that is safe
//! to start, or an error status — never a panic, never a range the device
//! would abort on.

use edudma_core::NtStatus;
use edudma_core::ioctl::{
    ControlRequest, Direction, DmaHeader, FileRequest, IOCTL_EDUDMA_DMA_READ,
    IOCTL_EDUDMA_DMA_WRITE, IOCTL_EDUDMA_GET_INFO, IOCTL_EDUDMA_GET_STATS,
    IOCTL_EDUDMA_RESET_STATS, IOCTL_EDUDMA_SELFTEST, validate_control, validate_read,
    validate_write,
};
use proptest::prelude::*;
use zerocopy::IntoBytes;

const CODES: [u32; 6] = [
    IOCTL_EDUDMA_GET_INFO,
    IOCTL_EDUDMA_GET_STATS,
    IOCTL_EDUDMA_RESET_STATS,
    IOCTL_EDUDMA_SELFTEST,
    IOCTL_EDUDMA_DMA_WRITE,
    IOCTL_EDUDMA_DMA_READ,
];

/// Our codes most of the time, any 32-bit value otherwise.
fn code() -> impl Strategy<Value = u32> {
    prop_oneof![
        3 => proptest::sample::select(CODES.to_vec()),
        1 => any::<u32>(),
    ]
}

/// Inputs that are often well-formed DMA headers.
fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        (any::<u32>(), prop_oneof![Just(0u32), any::<u32>()]).prop_map(|(o, f)| {
            DmaHeader {
                device_offset: o % 5000,
                flags: f,
            }
            .as_bytes()
            .to_vec()
        }),
        proptest::collection::vec(any::<u8>(), 0..24),
    ]
}

fn assert_startable(direction_ok: bool, offset: u32, length: u32, window: u32) {
    assert!(direction_ok, "direction matches the code");
    assert!(length >= 1, "never a zero-length DMA (verifier 0x21)");
    assert!(
        u64::from(offset) + u64::from(length) <= u64::from(window),
        "{length} bytes at {offset} stay inside the {window}-byte window"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn control_requests_are_startable_or_refused(
        code in code(),
        input in input(),
        output_length in prop_oneof![0u32..5000, any::<u32>()],
        has_mdl in any::<bool>(),
        window in 1u32..=4096,
    ) {
        match validate_control(code, &input, output_length, has_mdl, window) {
            Ok(ControlRequest::Dma(r)) => {
                let expected = if code == IOCTL_EDUDMA_DMA_WRITE {
                    Direction::ToDevice
                } else {
                    Direction::FromDevice
                };
                assert!(has_mdl, "a DMA request always has its buffer");
                assert_eq!(r.length, output_length, "the whole buffer moves");
                assert_startable(r.direction == expected, r.device_offset, r.length, window);
            }
            Ok(_) => assert!(CODES.contains(&code)),
            Err(e) => {
                let status = e.status();
                assert!(status.is_error(), "{e}: {status}");
                assert_ne!(status, NtStatus::SUCCESS);
                assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn file_reads_are_startable_or_refused(
        offset in prop_oneof![-10i64..5000, any::<i64>()],
        length in prop_oneof![0u32..5000, any::<u32>()],
        has_mdl in any::<bool>(),
        window in 1u32..=4096,
    ) {
        match validate_read(offset, length, has_mdl, window) {
            Ok(FileRequest::Dma(r)) => {
                assert!(r.length <= length, "a read is never longer than asked");
                assert_eq!(u64::from(r.device_offset), offset as u64);
                assert_startable(r.direction == Direction::FromDevice, r.device_offset, r.length, window);
            }
            Ok(FileRequest::Empty) => assert_eq!(length, 0),
            Ok(FileRequest::EndOfFile) => assert!(offset >= i64::from(window)),
            Err(e) => assert!(e.status().is_error()),
        }
    }

    #[test]
    fn file_writes_are_startable_or_refused(
        offset in prop_oneof![-10i64..5000, any::<i64>()],
        length in prop_oneof![0u32..5000, any::<u32>()],
        has_mdl in any::<bool>(),
        window in 1u32..=4096,
    ) {
        match validate_write(offset, length, has_mdl, window) {
            Ok(FileRequest::Dma(r)) => {
                assert_eq!(r.length, length, "a write moves all or nothing");
                assert_startable(r.direction == Direction::ToDevice, r.device_offset, r.length, window);
            }
            Ok(FileRequest::Empty) => assert_eq!(length, 0),
            Ok(FileRequest::EndOfFile) => panic!("a write never reports end of file"),
            Err(e) => assert!(e.status().is_error()),
        }
    }
}
