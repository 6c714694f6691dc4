//! Byte-for-byte comparison of what was written with what came back.

use serde::Serialize;

use crate::output::count_of;

/// The first byte that differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Device offset of the byte.
    pub offset: u64,
    /// The byte written.
    pub expected: u8,
    /// The byte read back.
    pub actual: u8,
}

/// The result of comparing two buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Comparison {
    /// Bytes compared.
    pub compared: u64,
    /// Bytes that differ (a length difference counts every missing byte).
    pub mismatched: u64,
    /// The first difference, if any.
    pub first: Option<Mismatch>,
}

impl Comparison {
    /// True when every byte matched.
    pub fn ok(&self) -> bool {
        self.mismatched == 0
    }

    /// Compare `actual` with `expected`; `base` is the device offset of byte 0.
    pub fn of(expected: &[u8], actual: &[u8], base: u32) -> Self {
        let mut result = Comparison {
            compared: expected.len() as u64,
            ..Comparison::default()
        };
        for (index, (&want, &got)) in expected.iter().zip(actual).enumerate() {
            if want != got {
                result.note(u64::from(base) + index as u64, want, got);
            }
        }
        let missing = expected.len().abs_diff(actual.len()) as u64;
        result.mismatched += missing;
        result
    }

    /// Record one differing byte.
    fn note(&mut self, offset: u64, expected: u8, actual: u8) {
        self.mismatched += 1;
        self.first.get_or_insert(Mismatch {
            offset,
            expected,
            actual,
        });
    }

    /// A one-line description of the first difference.
    pub fn describe(&self) -> String {
        match self.first {
            Some(first) => format!(
                "{} of {} {}, first at device offset {}: wrote 0x{:02x}, read 0x{:02x}",
                self.mismatched,
                count_of(self.compared, "byte"),
                if self.mismatched == 1 {
                    "differs"
                } else {
                    "differ"
                },
                first.offset,
                first.expected,
                first.actual
            ),
            None if self.mismatched > 0 => format!(
                "{} of {} missing from the read",
                self.mismatched,
                count_of(self.compared, "byte")
            ),
            None if self.compared == 1 => "the 1 byte matches".into(),
            None => format!("all {} bytes match", self.compared),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_difference() {
        let result = Comparison::of(&[1, 2, 3, 4], &[1, 9, 3, 8], 100);
        assert_eq!(result.mismatched, 2);
        assert_eq!(
            result.first,
            Some(Mismatch {
                offset: 101,
                expected: 2,
                actual: 9
            })
        );
        assert!(!result.ok());
        assert!(result.describe().contains("offset 101"));
        assert!(Comparison::of(&[5; 10], &[5; 10], 0).ok());
        assert_eq!(Comparison::of(&[5; 10], &[5; 7], 0).mismatched, 3);
    }
}
