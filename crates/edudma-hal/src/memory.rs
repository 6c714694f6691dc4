//! Physical memory as the HAL and a bus-master device see it: bytes at
//! physical addresses.

/// Bytes in a page (x86-64).
pub const PAGE_SIZE: u64 = 4096;

/// Physical memory, byte-addressed. The simulator's sparse memory and the
/// HIL guest's pinned pages implement it; the HAL reads and writes only the
/// pages of locked buffers and its own bounce pages.
pub trait PhysMemory {
    /// Copy the bytes at `addr` into `buf`. Bytes the memory cannot give
    /// (not present, not pinned) are left as they are.
    fn read(&self, addr: u64, buf: &mut [u8]);
    /// Copy `data` to `addr`. Bytes that land nowhere are dropped.
    fn write(&mut self, addr: u64, data: &[u8]);
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
