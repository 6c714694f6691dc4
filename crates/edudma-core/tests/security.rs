//! The contract's share of the security review (`docs/security.md`): no
//! code of it is METHOD_NEITHER (the driver never touches a caller's
//! address), and any other method bits make a code unknown.

use edudma_core::NtStatus;
use edudma_core::ioctl::{
    self, CONTROL_CODES, METHOD_BUFFERED, METHOD_IN_DIRECT, METHOD_NEITHER, METHOD_OUT_DIRECT,
    method_of,
};

#[test]
fn no_code_of_the_contract_is_method_neither() {
    for code in CONTROL_CODES {
        let method = method_of(code);
        assert_ne!(method, METHOD_NEITHER, "0x{code:08X}");
        assert!(
            [METHOD_BUFFERED, METHOD_IN_DIRECT, METHOD_OUT_DIRECT].contains(&method),
            "0x{code:08X}"
        );
        // Only the DMA codes take a data buffer (direct I/O, an MDL).
        let dma = [ioctl::IOCTL_EDUDMA_DMA_WRITE, ioctl::IOCTL_EDUDMA_DMA_READ].contains(&code);
        assert_eq!(method != METHOD_BUFFERED, dma, "0x{code:08X}");
    }
}

#[test]
fn a_contract_code_with_other_method_bits_is_unknown() {
    for code in CONTROL_CODES {
        for method in 0..4 {
            let other = (code & !3) | method;
            if other == code {
                continue;
            }
            // Whatever the buffers, the code alone decides.
            for (input, output, mdl) in [(&[][..], 0, false), (&[0u8; 8][..], 64, true)] {
                let refused = ioctl::validate_control(other, input, output, mdl, 4095);
                assert_eq!(
                    refused.map_err(|e| e.status()),
                    Err(NtStatus::INVALID_DEVICE_REQUEST),
                    "0x{other:08X}"
                );
            }
        }
    }
}

#[test]
fn the_contract_codes_are_distinct_and_of_our_device_type() {
    for (i, code) in CONTROL_CODES.iter().enumerate() {
        assert_eq!(code >> 16, ioctl::FILE_DEVICE_EDUDMA, "0x{code:08X}");
        assert!(!CONTROL_CODES[i + 1..].contains(code), "0x{code:08X} twice");
    }
}
