//! Memory descriptor lists: a buffer described as physical pages with a
//! byte offset into the first one, possibly chained, locked or not.

use std::collections::BTreeMap;

use crate::phys::{PAGE_SIZE, PhysicalMemory, Placement};
use crate::rng::SimRng;

/// Handle of an MDL (the `PMDL` of the simulated Windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MdlId(pub u32);

/// One MDL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mdl {
    /// Physical frame of each page the buffer touches.
    pub pages: Vec<u64>,
    /// `MmGetMdlByteOffset`: offset of the first byte in the first page.
    pub byte_offset: u32,
    /// `MmGetMdlByteCount`.
    pub byte_count: u32,
    /// Pages probed and locked (`MDL_PAGES_LOCKED`): DMA may use them.
    pub locked: bool,
    /// `Mdl->Next`.
    pub next: Option<MdlId>,
    /// Mapped into system space (`MmGetSystemAddressForMdlSafe` was called).
    pub system_va_mapped: bool,
}

/// One physically contiguous piece of an MDL chain range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Physical address of the piece.
    pub phys: u64,
    /// Its length (never crosses a page boundary).
    pub len: u32,
}

/// Why a range of an MDL chain cannot be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainError {
    /// The handle names no live MDL.
    NoSuchMdl,
    /// The range goes past the chain's last byte.
    OutOfRange {
        /// Bytes the chain describes.
        chain_length: u64,
    },
    /// A page of the range is not locked.
    NotLocked,
}

/// How a buffer is laid out in physical memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BufferLayout {
    /// Where its frames come from.
    pub placement: Placement,
    /// Offset of the first byte in its first page; random when `None`.
    pub byte_offset: Option<u32>,
    /// Split the buffer into a chain of MDLs of these lengths (the last
    /// one takes the rest); one MDL when empty.
    pub chain: Vec<u32>,
    /// Leave the pages unlocked (a pageable buffer: a driver bug to DMA on).
    pub unlocked: bool,
}

/// Every MDL in the machine.
#[derive(Debug, Default)]
pub struct MdlTable {
    mdls: BTreeMap<u32, Mdl>,
    next_id: u32,
}

impl MdlTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Look an MDL up.
    pub fn get(&self, id: MdlId) -> Option<&Mdl> {
        self.mdls.get(&id.0)
    }

    /// Look an MDL up for change.
    pub fn get_mut(&mut self, id: MdlId) -> Option<&mut Mdl> {
        self.mdls.get_mut(&id.0)
    }

    /// Number of live MDLs.
    pub fn len(&self) -> usize {
        self.mdls.len()
    }

    /// True when no MDL is live.
    pub fn is_empty(&self) -> bool {
        self.mdls.is_empty()
    }

    /// Insert an MDL and return its handle.
    pub fn insert(&mut self, mdl: Mdl) -> MdlId {
        self.next_id += 1;
        self.mdls.insert(self.next_id, mdl);
        MdlId(self.next_id)
    }

    /// Allocate frames for `length` bytes laid out as `layout` and describe
    /// them with an MDL chain; returns the head. `None` when memory ran out
    /// or `length` is 0.
    pub fn build(
        &mut self,
        mem: &mut PhysicalMemory,
        rng: &mut SimRng,
        length: u32,
        layout: &BufferLayout,
    ) -> Option<MdlId> {
        if length == 0 {
            return None;
        }
        let mut pieces: Vec<u32> = Vec::new();
        let mut left = length;
        for &piece in &layout.chain {
            if left == 0 {
                break;
            }
            let piece = piece.clamp(1, left);
            pieces.push(piece);
            left -= piece;
        }
        if left > 0 {
            pieces.push(left);
        }
        let mut ids = Vec::new();
        let mut page_index = 0usize;
        for (i, &piece) in pieces.iter().enumerate() {
            let byte_offset = match (i, layout.byte_offset) {
                (0, Some(o)) => o % PAGE_SIZE as u32,
                _ => rng.below(PAGE_SIZE) as u32,
            };
            let span = (u64::from(byte_offset) + u64::from(piece)).div_ceil(PAGE_SIZE);
            let mut pages = Vec::new();
            for _ in 0..span {
                pages.push(mem.alloc_frame(layout.placement, page_index, rng)?);
                page_index += 1;
            }
            ids.push(self.insert(Mdl {
                pages,
                byte_offset,
                byte_count: piece,
                locked: !layout.unlocked,
                next: None,
                system_va_mapped: false,
            }));
        }
        for pair in ids.windows(2) {
            if let Some(m) = self.get_mut(pair[0]) {
                m.next = Some(pair[1]);
            }
        }
        ids.first().copied()
    }

    /// The MDLs of a chain, head first (stops at a dangling link or a loop).
    pub fn chain(&self, head: MdlId) -> Vec<MdlId> {
        let mut out = Vec::new();
        let mut cur = Some(head);
        while let Some(id) = cur {
            if out.contains(&id) || self.get(id).is_none() {
                break;
            }
            out.push(id);
            cur = self.get(id).and_then(|m| m.next);
        }
        out
    }

    /// Bytes described by the whole chain.
    pub fn chain_length(&self, head: MdlId) -> u64 {
        self.chain(head)
            .iter()
            .filter_map(|id| self.get(*id))
            .map(|m| u64::from(m.byte_count))
            .sum()
    }

    /// The physical pieces of `length` bytes at `offset` into the chain,
    /// split at page boundaries; checks bounds and, when `need_locked`, locks.
    pub fn segments(
        &self,
        head: MdlId,
        offset: u64,
        length: u64,
        need_locked: bool,
    ) -> Result<Vec<Segment>, ChainError> {
        if self.get(head).is_none() {
            return Err(ChainError::NoSuchMdl);
        }
        let chain_length = self.chain_length(head);
        if offset
            .checked_add(length)
            .is_none_or(|end| end > chain_length)
        {
            return Err(ChainError::OutOfRange { chain_length });
        }
        let mut out = Vec::new();
        let mut skip = offset;
        let mut want = length;
        for id in self.chain(head) {
            let Some(m) = self.get(id) else { break };
            if want == 0 {
                break;
            }
            let count = u64::from(m.byte_count);
            if skip >= count {
                skip -= count;
                continue;
            }
            if need_locked && !m.locked {
                return Err(ChainError::NotLocked);
            }
            let mut pos = u64::from(m.byte_offset) + skip;
            let end = u64::from(m.byte_offset) + count;
            skip = 0;
            while pos < end && want > 0 {
                let page = (pos / PAGE_SIZE) as usize;
                let in_page = pos % PAGE_SIZE;
                let n = (PAGE_SIZE - in_page).min(end - pos).min(want);
                let Some(&pfn) = m.pages.get(page) else {
                    return Err(ChainError::OutOfRange { chain_length });
                };
                out.push(Segment {
                    phys: pfn * PAGE_SIZE + in_page,
                    len: n as u32,
                });
                pos += n;
                want -= n;
            }
        }
        Ok(out)
    }

    /// Copy bytes out of the chain (as the CPU would through a system VA).
    pub fn read(
        &self,
        mem: &PhysicalMemory,
        head: MdlId,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(), ChainError> {
        let mut done = 0usize;
        for s in self.segments(head, offset, buf.len() as u64, false)? {
            mem.read(s.phys, &mut buf[done..done + s.len as usize]);
            done += s.len as usize;
        }
        Ok(())
    }

    /// Copy bytes into the chain.
    pub fn write(
        &self,
        mem: &mut PhysicalMemory,
        head: MdlId,
        offset: u64,
        data: &[u8],
    ) -> Result<(), ChainError> {
        let mut done = 0usize;
        for s in self.segments(head, offset, data.len() as u64, false)? {
            mem.write(s.phys, &data[done..done + s.len as usize]);
            done += s.len as usize;
        }
        Ok(())
    }

    /// Free a chain and its frames (`IoFreeMdl` after `MmUnlockPages`).
    pub fn free_chain(&mut self, mem: &mut PhysicalMemory, head: MdlId) {
        for id in self.chain(head) {
            if let Some(m) = self.mdls.remove(&id.0) {
                for pfn in m.pages {
                    mem.free_frame(pfn);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (PhysicalMemory, SimRng, MdlTable) {
        (
            PhysicalMemory::new(4 << 30),
            SimRng::new(11),
            MdlTable::new(),
        )
    }

    #[test]
    fn chain_round_trip_with_offsets() {
        let (mut mem, mut rng, mut t) = setup();
        let layout = BufferLayout {
            placement: Placement::Mixed,
            byte_offset: Some(4000),
            chain: vec![100, 5000],
            unlocked: false,
        };
        let head = t.build(&mut mem, &mut rng, 9000, &layout).unwrap();
        assert_eq!(t.chain(head).len(), 3);
        assert_eq!(t.chain_length(head), 9000);
        let data: Vec<u8> = (0..9000u32).map(|i| (i * 7 + 3) as u8).collect();
        t.write(&mut mem, head, 0, &data).unwrap();
        let mut back = vec![0u8; 8000];
        t.read(&mem, head, 1000, &mut back).unwrap();
        assert_eq!(&back[..], &data[1000..]);
        let segs = t.segments(head, 0, 9000, true).unwrap();
        assert!(
            segs.iter().all(
                |s| s.len as u64 <= PAGE_SIZE && s.phys % PAGE_SIZE + s.len as u64 <= PAGE_SIZE
            )
        );
        assert_eq!(segs.iter().map(|s| s.len as u64).sum::<u64>(), 9000);
        assert_eq!(
            t.segments(head, 8999, 2, false),
            Err(ChainError::OutOfRange { chain_length: 9000 })
        );
        t.free_chain(&mut mem, head);
        assert!(t.is_empty());
        assert_eq!(mem.buffer_frames(), 0);
    }

    #[test]
    fn unlocked_pages_are_reported() {
        let (mut mem, mut rng, mut t) = setup();
        let layout = BufferLayout {
            unlocked: true,
            ..BufferLayout::default()
        };
        let head = t.build(&mut mem, &mut rng, 10, &layout).unwrap();
        assert_eq!(t.segments(head, 0, 10, true), Err(ChainError::NotLocked));
        assert!(t.segments(head, 0, 10, false).is_ok());
    }
}
