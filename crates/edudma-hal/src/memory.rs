//! Physical memory as the HAL and a bus-master device see it: bytes at
//! physical addresses.

/// Bytes in a page (x86-64).
pub const PAGE_SIZE: u64 = 4096;

/// The index of the first byte of `bytes` that is not `byte`. Scans 64
/// bytes at a time without an early exit inside a block, which the
/// compiler turns into vector compares: guard checks scan whole pages.
pub fn first_other_than(bytes: &[u8], byte: u8) -> Option<usize> {
    const BLOCK: usize = 64;
    let mut blocks = bytes.chunks_exact(BLOCK);
    for (i, block) in (&mut blocks).enumerate() {
        if block.iter().fold(0u8, |acc, b| acc | (b ^ byte)) != 0 {
            return block.iter().position(|b| *b != byte).map(|j| i * BLOCK + j);
        }
    }
    let tail = bytes.len() - blocks.remainder().len();
    blocks
        .remainder()
        .iter()
        .position(|b| *b != byte)
        .map(|j| tail + j)
}

/// Physical memory, byte-addressed. The simulator's sparse memory and the
/// HIL guest's pinned pages implement it; the HAL reads and writes only the
/// pages of locked buffers and its own bounce pages.
pub trait PhysMemory {
    /// Copy the bytes at `addr` into `buf`. Bytes the memory cannot give
    /// (not present, not pinned) are left as they are.
    fn read(&self, addr: u64, buf: &mut [u8]);
    /// Copy `data` to `addr`. Bytes that land nowhere are dropped.
    fn write(&mut self, addr: u64, data: &[u8]);
    /// The first address in `[addr, addr + len)` whose byte is not `byte`
    /// (bytes the memory cannot give count as zero). Guard checks use it:
    /// a memory that can scan its pages in place overrides it.
    fn find_other_than(&self, addr: u64, len: usize, byte: u8) -> Option<u64> {
        let mut chunk = [0u8; 256];
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(chunk.len());
            let at = addr.wrapping_add(done as u64);
            chunk[..n].fill(0);
            self.read(at, &mut chunk[..n]);
            if let Some(j) = first_other_than(&chunk[..n], byte) {
                return Some(at.wrapping_add(j as u64));
            }
            done += n;
        }
        None
    }
    /// Copy `len` bytes from `from` to `to` (ranges that do not overlap), as
    /// a [`read`](Self::read) into a zeroed buffer and a
    /// [`write`](Self::write) of it would: the HAL's bounce copies use it. A
    /// memory that can copy between its pages in place overrides it.
    fn copy(&mut self, from: u64, to: u64, len: usize) {
        let mut chunk = [0u8; 256];
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(chunk.len());
            chunk[..n].fill(0);
            self.read(from.wrapping_add(done as u64), &mut chunk[..n]);
            self.write(to.wrapping_add(done as u64), &chunk[..n]);
            done += n;
        }
    }
    /// Fill `len` bytes at `addr` with `byte`.
    fn fill(&mut self, addr: u64, len: usize, byte: u8) {
        let chunk = [byte; PAGE_SIZE as usize];
        let mut done = 0usize;
        while done < len {
            let n = (len - done).min(chunk.len());
            self.write(addr.wrapping_add(done as u64), &chunk[..n]);
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_other_than;

    #[test]
    fn the_first_other_byte_is_found_in_every_block_position_and_the_tail() {
        for len in [0usize, 1, 63, 64, 65, 200, 4096] {
            let clean = vec![0xA5u8; len];
            assert_eq!(first_other_than(&clean, 0xA5), None, "len {len}");
            for at in [0, 1, 62, 63, 64, 127, 128, 199, 4095] {
                if at >= len {
                    continue;
                }
                let mut bytes = clean.clone();
                bytes[at] = 0x5A;
                if at + 1 < len {
                    bytes[len - 1] = 0; // a later difference never wins
                }
                assert_eq!(
                    first_other_than(&bytes, 0xA5),
                    Some(at),
                    "len {len} at {at}"
                );
            }
        }
    }
}
