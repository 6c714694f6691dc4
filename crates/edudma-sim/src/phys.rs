//! Sparse physical memory: pages exist once touched, frames are handed out
//! by a seeded allocator both below and above the edu device's 256 MiB reach.

use std::collections::BTreeMap;

use crate::rng::SimRng;

/// Bytes in a page.
pub const PAGE_SIZE: u64 = edudma_hal::PAGE_SIZE;
/// Page size as `usize`.
pub const PAGE: usize = 4096;
/// The first address the edu device cannot reach with its 28-bit `dma_mask`.
pub const LOW_LIMIT: u64 = 1 << 28;

/// Frames below 16 MiB are firmware's and the kernel's: never handed out.
const RESERVED_FRAMES: u64 = (16 << 20) / PAGE_SIZE;

/// Which part of physical memory a buffer's frames come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Placement {
    /// Any frame, chosen at random (most land above 256 MiB in a 4 GiB machine).
    #[default]
    Any,
    /// Only frames below 256 MiB.
    Low,
    /// Only frames at or above 256 MiB.
    High,
    /// Alternate: even pages low, odd pages high.
    Mixed,
}

/// What a frame is used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameUse {
    /// Firmware, kernel image: never handed out.
    Reserved,
    /// The HAL's bounce pages and their guards.
    Hal,
    /// A buffer of a request or a test.
    Buffer,
}

/// The physical address space.
#[derive(Debug)]
pub struct PhysicalMemory {
    size: u64,
    pages: BTreeMap<u64, Box<[u8; PAGE]>>,
    owners: BTreeMap<u64, FrameUse>,
}

impl PhysicalMemory {
    /// A machine with `size` bytes (rounded down to pages, at least 512 MiB
    /// so both regions exist). The first 16 MiB are reserved.
    pub fn new(size: u64) -> Self {
        let size = (size.max(2 * LOW_LIMIT)) & !(PAGE_SIZE - 1);
        Self {
            size,
            pages: BTreeMap::new(),
            owners: BTreeMap::new(),
        }
    }

    fn taken(&self, pfn: u64) -> bool {
        pfn < RESERVED_FRAMES || self.owners.contains_key(&pfn)
    }

    /// Bytes of physical memory.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of frames.
    pub fn frames(&self) -> u64 {
        self.size / PAGE_SIZE
    }

    /// Mark `count` frames from `first` as used for `what`; false if any is taken.
    pub fn reserve(&mut self, first: u64, count: u64, what: FrameUse) -> bool {
        if first + count > self.frames() || (first..first + count).any(|p| self.taken(p)) {
            return false;
        }
        for pfn in first..first + count {
            self.owners.insert(pfn, what);
        }
        true
    }

    /// Allocate one free frame in `placement` (the `index`th page of a
    /// buffer, for [`Placement::Mixed`]).
    pub fn alloc_frame(
        &mut self,
        placement: Placement,
        index: usize,
        rng: &mut SimRng,
    ) -> Option<u64> {
        let low_frames = LOW_LIMIT / PAGE_SIZE;
        let (lo, hi) = match placement {
            Placement::Any => (0, self.frames()),
            Placement::Low => (0, low_frames),
            Placement::High => (low_frames, self.frames()),
            Placement::Mixed if index % 2 == 0 => (0, low_frames),
            Placement::Mixed => (low_frames, self.frames()),
        };
        for _ in 0..64 {
            let pfn = lo + rng.below(hi - lo);
            if !self.taken(pfn) {
                self.owners.insert(pfn, FrameUse::Buffer);
                return Some(pfn);
            }
        }
        let pfn = (lo..hi).find(|p| !self.taken(*p))?;
        self.owners.insert(pfn, FrameUse::Buffer);
        Some(pfn)
    }

    /// Allocate `count` physically contiguous free frames in `placement`.
    pub fn alloc_contiguous(
        &mut self,
        count: u64,
        placement: Placement,
        rng: &mut SimRng,
    ) -> Option<u64> {
        let low_frames = LOW_LIMIT / PAGE_SIZE;
        let (lo, hi) = match placement {
            Placement::Low | Placement::Mixed => (0, low_frames),
            Placement::High => (low_frames, self.frames()),
            Placement::Any => (0, self.frames()),
        };
        if count == 0 || hi - lo < count {
            return None;
        }
        for _ in 0..64 {
            let first = lo + rng.below(hi - lo - count + 1);
            if self.reserve(first, count, FrameUse::Buffer) {
                return Some(first);
            }
        }
        None
    }

    /// Give a frame back (its contents are scrubbed).
    pub fn free_frame(&mut self, pfn: u64) {
        if self.owners.get(&pfn) == Some(&FrameUse::Buffer) {
            self.owners.remove(&pfn);
            self.pages.remove(&pfn);
        }
    }

    /// Who uses the frame, if anyone.
    pub fn owner(&self, pfn: u64) -> Option<FrameUse> {
        if pfn < RESERVED_FRAMES {
            return Some(FrameUse::Reserved);
        }
        self.owners.get(&pfn).copied()
    }

    /// Frames in use by buffers (for leak checks).
    pub fn buffer_frames(&self) -> usize {
        self.owners
            .values()
            .filter(|u| **u == FrameUse::Buffer)
            .count()
    }

    /// True when `[addr, addr + len)` lies inside physical memory.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr.checked_add(len).is_some_and(|end| end <= self.size)
    }

    /// Read bytes at a physical address; unbacked bytes read as zero and
    /// bytes past the end as all-ones (nothing decodes there).
    pub fn read(&self, addr: u64, buf: &mut [u8]) {
        let mut done = 0usize;
        while done < buf.len() {
            let a = addr.wrapping_add(done as u64);
            if a >= self.size || a < addr {
                buf[done..].fill(0xFF);
                return;
            }
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(buf.len() - done);
            match self.pages.get(&(a / PAGE_SIZE)) {
                Some(page) => buf[done..done + n].copy_from_slice(&page[off..off + n]),
                None => buf[done..done + n].fill(0),
            }
            done += n;
        }
    }

    /// Write bytes at a physical address; writes past the end are dropped.
    pub fn write(&mut self, addr: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let a = addr.wrapping_add(done as u64);
            if a >= self.size {
                return;
            }
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(data.len() - done);
            let page = self
                .pages
                .entry(a / PAGE_SIZE)
                .or_insert_with(|| Box::new([0u8; PAGE]));
            page[off..off + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    /// Fill `[addr, addr + len)` with `byte`.
    pub fn fill(&mut self, addr: u64, len: usize, byte: u8) {
        let mut done = 0usize;
        while done < len {
            let a = addr.wrapping_add(done as u64);
            if a >= self.size {
                return;
            }
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(len - done);
            let page = self
                .pages
                .entry(a / PAGE_SIZE)
                .or_insert_with(|| Box::new([0u8; PAGE]));
            page[off..off + n].fill(byte);
            done += n;
        }
    }
}

impl edudma_hal::PhysMemory for PhysicalMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) {
        PhysicalMemory::read(self, addr, buf);
    }
    fn write(&mut self, addr: u64, data: &[u8]) {
        PhysicalMemory::write(self, addr, data);
    }
    fn fill(&mut self, addr: u64, len: usize, byte: u8) {
        PhysicalMemory::fill(self, addr, len, byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_read_write_across_pages() {
        let mut m = PhysicalMemory::new(4 << 30);
        m.write(PAGE_SIZE * 5000 - 3, &[1, 2, 3, 4, 5, 6]);
        let mut b = [0u8; 8];
        m.read(PAGE_SIZE * 5000 - 4, &mut b);
        assert_eq!(b, [0, 1, 2, 3, 4, 5, 6, 0]);
        let mut end = [0u8; 2];
        m.read(m.size() - 1, &mut end);
        assert_eq!(end, [0, 0xFF]);
    }

    #[test]
    fn allocator_respects_placement() {
        let mut m = PhysicalMemory::new(1 << 30);
        let mut rng = SimRng::new(3);
        for i in 0..200 {
            let low = m.alloc_frame(Placement::Low, i, &mut rng).unwrap();
            assert!(low * PAGE_SIZE < LOW_LIMIT && low >= 4096);
            let high = m.alloc_frame(Placement::High, i, &mut rng).unwrap();
            assert!(high * PAGE_SIZE >= LOW_LIMIT && high < m.frames());
        }
        assert_eq!(m.buffer_frames(), 400);
        let c = m.alloc_contiguous(8, Placement::Low, &mut rng).unwrap();
        assert!(!m.reserve(c + 3, 1, FrameUse::Hal));
    }
}
