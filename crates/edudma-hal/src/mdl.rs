//! Memory descriptor lists: a buffer described as physical pages with a
//! byte offset into the first one, possibly chained, locked or not.

use std::collections::BTreeMap;

use crate::memory::{PAGE_SIZE, PhysMemory};

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

    /// The MDL of the chain `head` that holds byte `offset` of the chain,
    /// and the byte's offset in that MDL; `None` past the chain's end.
    pub fn locate(&self, head: MdlId, offset: u64) -> Option<(MdlId, u64)> {
        let mut left = offset;
        for id in self.chain(head) {
            let bytes = u64::from(self.get(id)?.byte_count);
            if left < bytes {
                return Some((id, left));
            }
            left -= bytes;
        }
        None
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
        mem: &dyn PhysMemory,
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
        mem: &mut dyn PhysMemory,
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

    /// Take a chain out of the table (`IoFreeMdl`), head first: what its
    /// MDLs described, for the caller to release.
    pub fn remove_chain(&mut self, head: MdlId) -> Vec<Mdl> {
        self.chain(head)
            .into_iter()
            .filter_map(|id| self.mdls.remove(&id.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flat memory of a few pages at physical address 0.
    struct Flat(Vec<u8>);

    impl PhysMemory for Flat {
        fn read(&self, addr: u64, buf: &mut [u8]) {
            let a = addr as usize;
            buf.copy_from_slice(&self.0[a..a + buf.len()]);
        }
        fn write(&mut self, addr: u64, data: &[u8]) {
            let a = addr as usize;
            self.0[a..a + data.len()].copy_from_slice(data);
        }
    }

    fn mdl(pages: Vec<u64>, byte_offset: u32, byte_count: u32, locked: bool) -> Mdl {
        Mdl {
            pages,
            byte_offset,
            byte_count,
            locked,
            next: None,
            system_va_mapped: false,
        }
    }

    #[test]
    fn chain_round_trip_with_offsets() {
        let mut mem = Flat(vec![0; 8 * PAGE_SIZE as usize]);
        let mut t = MdlTable::new();
        // 100 bytes at the end of page 5, then 5000 bytes over pages 1 and 3.
        let head = t.insert(mdl(vec![5], 3996, 100, true));
        let tail = t.insert(mdl(vec![1, 3], 0, 5000, true));
        t.get_mut(head).unwrap().next = Some(tail);
        assert_eq!(t.chain(head), vec![head, tail]);
        assert_eq!(t.chain_length(head), 5100);
        let data: Vec<u8> = (0..5100u32).map(|i| (i * 7 + 3) as u8).collect();
        t.write(&mut mem, head, 0, &data).unwrap();
        let mut back = vec![0u8; 5000];
        t.read(&mem, head, 100, &mut back).unwrap();
        assert_eq!(&back[..], &data[100..]);
        let segs = t.segments(head, 0, 5100, true).unwrap();
        let expected = [
            Segment {
                phys: 5 * PAGE_SIZE + 3996,
                len: 100,
            },
            Segment {
                phys: PAGE_SIZE,
                len: 4096,
            },
            Segment {
                phys: 3 * PAGE_SIZE,
                len: 904,
            },
        ];
        assert_eq!(segs, expected);
        assert_eq!(
            t.segments(head, 5099, 2, false),
            Err(ChainError::OutOfRange { chain_length: 5100 })
        );
        assert_eq!(t.remove_chain(head).len(), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn unlocked_pages_are_reported() {
        let mut t = MdlTable::new();
        let head = t.insert(mdl(vec![2], 0, 10, false));
        assert_eq!(t.segments(head, 0, 10, true), Err(ChainError::NotLocked));
        assert!(t.segments(head, 0, 10, false).is_ok());
    }
}
