//! Memory descriptor lists: the table and its chains are the HAL model's
//! ([`edudma_hal::mdl`]); what is the simulator's own is how a buffer's
//! frames are chosen and given back.

pub use edudma_hal::mdl::*;

use crate::phys::{PAGE_SIZE, PhysicalMemory, Placement};
use crate::rng::SimRng;

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

/// Allocate frames for `length` bytes laid out as `layout` and describe
/// them with an MDL chain; returns the head. `None` when memory ran out
/// or `length` is 0.
pub fn build(
    table: &mut MdlTable,
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
    // Each piece spans at most one page more than its bytes: a buffer that
    // cannot fit fails before it takes any frame.
    let most_pages = pieces
        .iter()
        .map(|&piece| u64::from(piece).div_ceil(PAGE_SIZE) + 1)
        .sum();
    if !mem.can_allocate(layout.placement, most_pages) {
        return None;
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
            let Some(pfn) = mem.alloc_frame(layout.placement, page_index, rng) else {
                // Give back what this chain took so far.
                for pfn in pages {
                    mem.free_frame(pfn);
                }
                // Not linked yet: each MDL is a chain of one.
                for id in ids {
                    free_chain(table, mem, id);
                }
                return None;
            };
            pages.push(pfn);
            page_index += 1;
        }
        ids.push(table.insert(Mdl {
            pages,
            byte_offset,
            byte_count: piece,
            locked: !layout.unlocked,
            next: None,
            system_va_mapped: false,
        }));
    }
    for pair in ids.windows(2) {
        if let Some(m) = table.get_mut(pair[0]) {
            m.next = Some(pair[1]);
        }
    }
    ids.first().copied()
}

/// Free a chain and its frames (`IoFreeMdl` after `MmUnlockPages`).
pub fn free_chain(table: &mut MdlTable, mem: &mut PhysicalMemory, head: MdlId) {
    for m in table.remove_chain(head) {
        for pfn in m.pages {
            mem.free_frame(pfn);
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
        let head = build(&mut t, &mut mem, &mut rng, 9000, &layout).unwrap();
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
        free_chain(&mut t, &mut mem, head);
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
        let head = build(&mut t, &mut mem, &mut rng, 10, &layout).unwrap();
        assert_eq!(t.segments(head, 0, 10, true), Err(ChainError::NotLocked));
        assert!(t.segments(head, 0, 10, false).is_ok());
    }
}
