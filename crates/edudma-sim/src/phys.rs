//! Sparse physical memory: pages exist once touched, frames are handed out
//! by a seeded allocator both below and above the edu device's 256 MiB reach.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

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
    /// Which frames are taken (reserved or owned), for allocation that stays
    /// fast as memory fills.
    taken: FrameBitmap,
}

/// One bit per frame (set: taken), with a summary bit per 64-frame word
/// (set: all 64 taken), so a search for a free frame skips 4096 taken
/// frames per summary bit it reads: finding a frame in a 4 GiB machine
/// reads at most 256 summary words, never every frame.
#[derive(Debug)]
struct FrameBitmap {
    frames: u64,
    words: Vec<u64>,
    full: Vec<u64>,
}

impl FrameBitmap {
    /// `frames` frames, all free.
    fn new(frames: u64) -> Self {
        let word_count = frames.div_ceil(64) as usize;
        let mut bitmap = Self {
            frames,
            words: vec![0; word_count],
            full: vec![0; word_count.div_ceil(64)],
        };
        // Bits past the last frame are taken, so no search returns them.
        for pfn in frames..word_count as u64 * 64 {
            bitmap.set(pfn, true);
        }
        bitmap
    }

    fn get(&self, pfn: u64) -> bool {
        pfn >= self.frames || self.words[(pfn / 64) as usize] & (1 << (pfn % 64)) != 0
    }

    fn set(&mut self, pfn: u64, taken: bool) {
        let word = (pfn / 64) as usize;
        if taken {
            self.words[word] |= 1 << (pfn % 64);
        } else {
            self.words[word] &= !(1 << (pfn % 64));
        }
        let bit = 1u64 << (word % 64);
        if self.words[word] == u64::MAX {
            self.full[word / 64] |= bit;
        } else {
            self.full[word / 64] &= !bit;
        }
    }

    /// The first free frame in `[from, to)`.
    fn first_free(&self, from: u64, to: u64) -> Option<u64> {
        let to = to.min(self.frames);
        let mut pfn = from;
        while pfn < to {
            let word = (pfn / 64) as usize;
            let free = !self.words[word] & (u64::MAX << (pfn % 64));
            if free != 0 {
                let found = word as u64 * 64 + u64::from(free.trailing_zeros());
                return (found < to).then_some(found);
            }
            pfn = self.next_word_with_room(word + 1)? as u64 * 64;
        }
        None
    }

    /// The first word at or after `word` with a free frame, by the summary.
    fn next_word_with_room(&self, mut word: usize) -> Option<usize> {
        while word / 64 < self.full.len() {
            let room = !self.full[word / 64] & (u64::MAX << (word % 64));
            if room != 0 {
                return Some(word / 64 * 64 + room.trailing_zeros() as usize);
            }
            word = (word / 64 + 1) * 64;
        }
        None
    }

    /// Free frames in `[from, to)`, counted until `enough` are found (a
    /// small buffer in a large, mostly free machine reads one word).
    fn free_between(&self, from: u64, to: u64, enough: u64) -> u64 {
        let to = to.min(self.frames);
        if from >= to {
            return 0;
        }
        let (first, last) = ((from / 64) as usize, ((to - 1) / 64) as usize);
        let mut free = 0u64;
        for word in first..=last {
            let mut mask = u64::MAX;
            if word == first {
                mask &= u64::MAX << (from % 64);
            }
            if word == last && to % 64 != 0 {
                mask &= u64::MAX >> (64 - to % 64);
            }
            free += u64::from((!self.words[word] & mask).count_ones());
            if free >= enough {
                break;
            }
        }
        free
    }
}

impl PhysicalMemory {
    /// A machine with `size` bytes (rounded down to pages, at least 512 MiB
    /// so both regions exist). The first 16 MiB are reserved.
    pub fn new(size: u64) -> Self {
        let size = (size.max(2 * LOW_LIMIT)) & !(PAGE_SIZE - 1);
        let mut taken = FrameBitmap::new(size / PAGE_SIZE);
        for pfn in 0..RESERVED_FRAMES {
            taken.set(pfn, true);
        }
        Self {
            size,
            pages: BTreeMap::new(),
            owners: BTreeMap::new(),
            taken,
        }
    }

    fn taken(&self, pfn: u64) -> bool {
        self.taken.get(pfn)
    }

    /// Give `pfn` to `what`.
    fn take(&mut self, pfn: u64, what: FrameUse) {
        self.owners.insert(pfn, what);
        self.taken.set(pfn, true);
    }

    /// The frame range `[lo, hi)` of `placement` for a buffer's `index`th page.
    fn range_of(&self, placement: Placement, index: usize) -> (u64, u64) {
        let low_frames = LOW_LIMIT / PAGE_SIZE;
        match placement {
            Placement::Any => (0, self.frames()),
            Placement::Low => (0, low_frames),
            Placement::High => (low_frames, self.frames()),
            Placement::Mixed if index % 2 == 0 => (0, low_frames),
            Placement::Mixed => (low_frames, self.frames()),
        }
    }

    /// True when `pages` frames for one buffer can be found in `placement`:
    /// checked before a buffer is built, so that one larger than memory
    /// fails at once instead of after taking every free frame.
    pub fn can_allocate(&self, placement: Placement, pages: u64) -> bool {
        let (even, odd) = (pages.div_ceil(2), pages / 2);
        let has = |(lo, hi): (u64, u64), n: u64| self.taken.free_between(lo, hi, n) >= n;
        match placement {
            Placement::Mixed => {
                has(self.range_of(placement, 0), even) && has(self.range_of(placement, 1), odd)
            }
            _ => has(self.range_of(placement, 0), pages),
        }
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
            self.take(pfn, what);
        }
        true
    }

    /// Mark `count` frames from `first` as the HAL's. Unlike [`reserve`](Self::reserve)
    /// they may lie in the firmware's first 16 MiB: the HAL sets low
    /// memory aside at boot for devices that reach little. Frames already
    /// in use are left to their owner.
    pub fn reserve_for_hal(&mut self, first: u64, count: u64) {
        for pfn in first..(first + count).min(self.frames()) {
            if !self.owners.contains_key(&pfn) {
                self.take(pfn, FrameUse::Hal);
            }
        }
    }

    /// Allocate one free frame in `placement` (the `index`th page of a
    /// buffer, for [`Placement::Mixed`]).
    pub fn alloc_frame(
        &mut self,
        placement: Placement,
        index: usize,
        rng: &mut SimRng,
    ) -> Option<u64> {
        let (lo, hi) = self.range_of(placement, index);
        // A random frame, or the next free one after it (wrapping): seeded
        // and scattered like a real allocator's, and never a scan of every
        // frame however full memory is.
        let start = lo + rng.below(hi - lo);
        let pfn = self
            .taken
            .first_free(start, hi)
            .or_else(|| self.taken.first_free(lo, start))?;
        self.take(pfn, FrameUse::Buffer);
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
            self.taken.set(pfn, false);
            self.pages.remove(&pfn);
        }
    }

    /// Who uses the frame, if anyone.
    pub fn owner(&self, pfn: u64) -> Option<FrameUse> {
        match self.owners.get(&pfn) {
            Some(owner) => Some(*owner),
            None if pfn < RESERVED_FRAMES => Some(FrameUse::Reserved),
            None => None,
        }
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

    /// Append `len` bytes at a physical address to `out`, as
    /// [`PhysicalMemory::read`] gives them, without a zeroed buffer first.
    pub fn extend_vec(&self, addr: u64, len: usize, out: &mut Vec<u8>) {
        let mut done = 0usize;
        while done < len {
            let a = addr.wrapping_add(done as u64);
            if a >= self.size || a < addr {
                out.resize(out.len() + len - done, 0xFF);
                return;
            }
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(len - done);
            match self.pages.get(&(a / PAGE_SIZE)) {
                Some(page) => out.extend_from_slice(&page[off..off + n]),
                None => out.resize(out.len() + n, 0),
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
            let bytes = &data[done..done + n];
            match self.pages.entry(a / PAGE_SIZE) {
                Entry::Occupied(page) => page.into_mut()[off..off + n].copy_from_slice(bytes),
                // A new page is made around the bytes, not zeroed first.
                Entry::Vacant(slot) => {
                    slot.insert(new_page(off, |page| page.extend_from_slice(bytes)));
                }
            }
            done += n;
        }
    }

    /// Copy `len` bytes from `from` to `to` (ranges that do not overlap)
    /// between the pages in place, exactly as [`PhysicalMemory::read`] into
    /// a zeroed buffer and [`PhysicalMemory::write`] of it would.
    pub fn copy(&mut self, from: u64, to: u64, len: usize) {
        let mut done = 0usize;
        while done < len {
            let s = from.wrapping_add(done as u64);
            let d = to.wrapping_add(done as u64);
            if d >= self.size {
                return;
            }
            if s >= self.size || s < from {
                // read gives all-ones from here on.
                self.fill(d, len - done, 0xFF);
                return;
            }
            let (s_off, d_off) = ((s % PAGE_SIZE) as usize, (d % PAGE_SIZE) as usize);
            let n = (PAGE - s_off).min(PAGE - d_off).min(len - done);
            let (s_page, d_page) = (s / PAGE_SIZE, d / PAGE_SIZE);
            if !self.pages.contains_key(&s_page) {
                self.fill(d, n, 0);
            } else if s_page == d_page {
                if let Some(page) = self.pages.get_mut(&s_page) {
                    page.copy_within(s_off..s_off + n, d_off);
                }
            } else if !self.pages.contains_key(&d_page) {
                let bytes = &self.pages[&s_page][s_off..s_off + n];
                let page = new_page(d_off, |page| page.extend_from_slice(bytes));
                self.pages.insert(d_page, page);
            } else {
                self.pages
                    .entry(d_page)
                    .or_insert_with(|| Box::new([0u8; PAGE]));
                // Both pages at once: the two ends of the range between them.
                let mut both = self
                    .pages
                    .range_mut(s_page.min(d_page)..=s_page.max(d_page));
                let (Some((_, low)), Some((_, high))) = (both.next(), both.next_back()) else {
                    return;
                };
                let (source, target) = if s_page < d_page {
                    (low, high)
                } else {
                    (high, low)
                };
                target[d_off..d_off + n].copy_from_slice(&source[s_off..s_off + n]);
            }
            done += n;
        }
    }

    /// The first address in `[addr, addr + len)` whose byte is not `byte`,
    /// scanning the pages in place (unbacked bytes read as zero, bytes past
    /// the end as all-ones, as [`PhysicalMemory::read`] gives them).
    pub fn find_other_than(&self, addr: u64, len: usize, byte: u8) -> Option<u64> {
        let mut done = 0usize;
        while done < len {
            let a = addr.wrapping_add(done as u64);
            if a >= self.size || a < addr {
                return (byte != 0xFF).then_some(a);
            }
            let off = (a % PAGE_SIZE) as usize;
            let n = (PAGE - off).min(len - done);
            let found = match self.pages.get(&(a / PAGE_SIZE)) {
                Some(page) => edudma_hal::memory::first_other_than(&page[off..off + n], byte),
                None => (byte != 0).then_some(0),
            };
            if let Some(j) = found {
                return Some(a + j as u64);
            }
            done += n;
        }
        None
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
            match self.pages.entry(a / PAGE_SIZE) {
                Entry::Occupied(page) => page.into_mut()[off..off + n].fill(byte),
                // A new page is made around the bytes, not zeroed first.
                Entry::Vacant(slot) => {
                    slot.insert(new_page(off, |page| page.resize(off + n, byte)));
                }
            }
            done += n;
        }
    }
}

/// A new page: zeros up to `off`, what `put` appends (at most the rest of
/// the page), zeros after it — each byte written once.
fn new_page(off: usize, put: impl FnOnce(&mut Vec<u8>)) -> Box<[u8; PAGE]> {
    let mut page = Vec::with_capacity(PAGE);
    page.resize(off, 0);
    put(&mut page);
    page.resize(PAGE, 0);
    page.into_boxed_slice().try_into().expect("one page")
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
    fn copy(&mut self, from: u64, to: u64, len: usize) {
        PhysicalMemory::copy(self, from, to, len);
    }
    fn find_other_than(&self, addr: u64, len: usize, byte: u8) -> Option<u64> {
        PhysicalMemory::find_other_than(self, addr, len, byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_for_other_bytes_crosses_pages_and_reads_unbacked_and_missing_bytes_as_read_does() {
        let mut m = PhysicalMemory::new(0);
        let end = m.size();
        m.fill(PAGE_SIZE, 2 * PAGE, 0xA5);
        assert_eq!(m.find_other_than(PAGE_SIZE, 2 * PAGE, 0xA5), None);
        m.write(2 * PAGE_SIZE + 7, &[0]);
        assert_eq!(
            m.find_other_than(PAGE_SIZE + 9, 2 * PAGE - 9, 0xA5),
            Some(2 * PAGE_SIZE + 7)
        );
        // An unbacked page reads as zeros, past the end as all-ones.
        assert_eq!(m.find_other_than(5 * PAGE_SIZE, 10, 0), None);
        assert_eq!(
            m.find_other_than(5 * PAGE_SIZE, 10, 0xA5),
            Some(5 * PAGE_SIZE)
        );
        assert_eq!(m.find_other_than(end, 10, 0xFF), None);
        assert_eq!(m.find_other_than(end - 1, 10, 0), Some(end));
        // The HAL trait's default scan agrees with the in-place one.
        struct ByRead<'a>(&'a PhysicalMemory);
        impl edudma_hal::PhysMemory for ByRead<'_> {
            fn read(&self, addr: u64, buf: &mut [u8]) {
                self.0.read(addr, buf);
            }
            fn write(&mut self, _: u64, _: &[u8]) {}
        }
        for (addr, len, byte) in [
            (PAGE_SIZE + 9, 2 * PAGE - 9, 0xA5),
            (5 * PAGE_SIZE, 10, 0xA5),
        ] {
            assert_eq!(
                edudma_hal::PhysMemory::find_other_than(&ByRead(&m), addr, len, byte),
                m.find_other_than(addr, len, byte)
            );
        }
    }

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

    /// [`PhysicalMemory::copy`] against what it replaces: a read into a
    /// zeroed buffer, then a write of it — the bytes and the pages backed,
    /// within a page, across pages, from unbacked pages, off the end; and
    /// [`PhysicalMemory::extend_vec`] against a read.
    #[test]
    fn a_copy_is_a_read_into_zeroes_then_a_write() {
        let mut rng = SimRng::new(11);
        let base = PhysicalMemory::new(0).size() - 8 * PAGE_SIZE;
        for round in 0..2000 {
            let mut copied = PhysicalMemory::new(0);
            for _ in 0..rng.below(6) {
                let mut junk = vec![0u8; rng.below(2 * PAGE as u64) as usize];
                rng.fill(&mut junk);
                copied.write(base + rng.below(8 * PAGE_SIZE), &junk);
            }
            let mut expected = PhysicalMemory::new(0);
            expected.pages = copied.pages.clone();
            let mut from = base + rng.below(9 * PAGE_SIZE);
            let mut to = base + rng.below(9 * PAGE_SIZE);
            if rng.chance(30) {
                // Whole pages, into pages that may not exist yet.
                from &= !(PAGE_SIZE - 1);
                to &= !(PAGE_SIZE - 1);
            }
            let len = match rng.below(3) {
                0 => PAGE,
                _ => rng.below(3 * PAGE as u64) as usize,
            };
            if from.max(to) - from.min(to) < len as u64 {
                continue; // overlapping ranges are not copied
            }
            copied.copy(from, to, len);
            let mut data = vec![0u8; len];
            expected.read(from, &mut data);
            expected.write(to, &data);
            assert_eq!(copied.pages, expected.pages, "round {round}");
            // extend_vec gives what read gives, after what is there.
            let mut appended = vec![7u8];
            copied.extend_vec(from, len, &mut appended);
            copied.read(from, &mut data);
            assert_eq!(appended[0], 7);
            assert_eq!(appended[1..], data[..], "round {round}");
        }
    }

    /// Writes, fills and copies into new and backed pages against a flat
    /// array of zeros: new pages read as zero around what was put there.
    #[test]
    fn writes_fills_and_copies_match_a_flat_memory() {
        let mut rng = SimRng::new(12);
        let base = 100 * PAGE_SIZE;
        let span = 6 * PAGE;
        let mut m = PhysicalMemory::new(0);
        let mut flat = vec![0u8; span];
        for round in 0..3000 {
            let at = rng.below(span as u64) as usize;
            let len = (rng.below(2 * PAGE as u64) as usize).min(span - at);
            match rng.below(3) {
                0 => {
                    let mut data = vec![0u8; len];
                    rng.fill(&mut data);
                    m.write(base + at as u64, &data);
                    flat[at..at + len].copy_from_slice(&data);
                }
                1 => {
                    let byte = rng.below(256) as u8;
                    m.fill(base + at as u64, len, byte);
                    flat[at..at + len].fill(byte);
                }
                _ => {
                    let to = rng.below(span as u64) as usize;
                    let len = len.min(span - to);
                    if at.max(to) - at.min(to) >= len {
                        m.copy(base + at as u64, base + to as u64, len);
                        flat.copy_within(at..at + len, to);
                    }
                }
            }
            let mut all = vec![0u8; span];
            m.read(base, &mut all);
            assert_eq!(all, flat, "round {round}");
            if round % 500 == 0 {
                m = PhysicalMemory::new(0);
                flat.fill(0);
            }
        }
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

    #[test]
    fn filling_memory_stays_fast_and_exact() {
        // Every free frame of a 1 GiB machine, then one more: the old
        // allocator scanned every frame once memory was nearly full
        // (quadratic); this one must hand out each frame exactly once.
        let mut m = PhysicalMemory::new(1 << 30);
        let mut rng = SimRng::new(9);
        let free = m.frames() - RESERVED_FRAMES;
        assert!(m.can_allocate(Placement::Any, free));
        assert!(!m.can_allocate(Placement::Any, free + 1));
        let started = std::time::Instant::now();
        let mut seen = vec![false; m.frames() as usize];
        for i in 0..free {
            let pfn = m.alloc_frame(Placement::Any, i as usize, &mut rng).unwrap();
            assert!(
                pfn >= RESERVED_FRAMES && !seen[pfn as usize],
                "frame {pfn} twice"
            );
            seen[pfn as usize] = true;
        }
        assert_eq!(m.alloc_frame(Placement::Any, 0, &mut rng), None);
        assert!(!m.can_allocate(Placement::Any, 1));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{free} frames took {:?}",
            started.elapsed()
        );
        m.free_frame(5000);
        assert_eq!(m.alloc_frame(Placement::High, 0, &mut rng), None);
        assert_eq!(m.alloc_frame(Placement::Low, 0, &mut rng), Some(5000));
    }

    #[test]
    fn hal_frames_may_come_from_low_memory() {
        let mut m = PhysicalMemory::new(1 << 30);
        m.reserve_for_hal(256, 8);
        assert_eq!(m.owner(256), Some(FrameUse::Hal));
        assert_eq!(m.owner(264), Some(FrameUse::Reserved));
        assert_eq!(m.buffer_frames(), 0);
    }
}
