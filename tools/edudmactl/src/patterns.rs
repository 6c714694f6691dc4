//! Data patterns for `write`, `loopback`, `selftest` and `bench`.

use clap::ValueEnum;

/// A named byte pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Pattern {
    /// Every byte 0x00.
    Zeros,
    /// Every byte 0xFF.
    Ones,
    /// 0x00, 0x01, … 0xFF, 0x00, … (byte i is i mod 256).
    Counter,
    /// 0x55, 0xAA, 0x55, … (alternating bits).
    Alternating,
    /// 0x01, 0x02, 0x04, … 0x80, 0x01, … (a walking one).
    Walking,
    /// Pseudo-random bytes from a seed (xorshift64*), reproducible.
    Random,
}

impl Pattern {
    /// `len` bytes of this pattern; `seed` only matters for [`Pattern::Random`].
    pub fn generate(self, len: usize, seed: u64) -> Vec<u8> {
        let mut bytes = vec![0; len];
        self.fill(&mut bytes, seed);
        bytes
    }

    /// Fill `bytes` with this pattern, byte 0 first.
    pub fn fill(self, bytes: &mut [u8], seed: u64) {
        match self {
            Pattern::Zeros => bytes.fill(0),
            Pattern::Ones => bytes.fill(0xFF),
            Pattern::Counter => bytes.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8),
            Pattern::Alternating => bytes
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = if i % 2 == 0 { 0x55 } else { 0xAA }),
            Pattern::Walking => bytes
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = 1u8 << (i % 8)),
            Pattern::Random => bytes.copy_from_slice(&random_bytes(bytes.len(), seed)),
        }
    }

    /// The pattern's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Zeros => "zeros",
            Pattern::Ones => "ones",
            Pattern::Counter => "counter",
            Pattern::Alternating => "alternating",
            Pattern::Walking => "walking",
            Pattern::Random => "random",
        }
    }
}

/// `len` reproducible pseudo-random bytes (xorshift64*).
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    // A zero state would stay zero; mix the seed so 0 is a valid seed too.
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    if state == 0 {
        state = 1;
    }
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let word = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&word.to_le_bytes()[..take]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_have_the_asked_length_and_shape() {
        for pattern in Pattern::value_variants() {
            assert_eq!(pattern.generate(37, 5).len(), 37);
        }
        assert_eq!(Pattern::Counter.generate(258, 0)[257], 1);
        assert_eq!(
            Pattern::Walking.generate(9, 0),
            [1, 2, 4, 8, 16, 32, 64, 128, 1]
        );
        assert_eq!(Pattern::Alternating.generate(3, 0), [0x55, 0xAA, 0x55]);
    }

    #[test]
    fn random_is_reproducible_and_seeded() {
        assert_eq!(random_bytes(100, 3), random_bytes(100, 3));
        assert_ne!(random_bytes(100, 3), random_bytes(100, 4));
        assert_eq!(random_bytes(13, 0).len(), 13);
    }
}
