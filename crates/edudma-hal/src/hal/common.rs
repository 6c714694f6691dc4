//! Common buffers: `AllocateCommonBuffer` and `FreeCommonBuffer`
//! (PASSIVE_LEVEL), one page each from frames below every address width the
//! HAL serves, and the rules that guard them.

use super::{AdapterId, Hal, HalCtx};
use crate::irql::Irql;
use crate::memory::PAGE_SIZE;
use crate::verifier::Violation;

impl Hal {
    /// `AllocateCommonBuffer` (PASSIVE_LEVEL): the logical address of
    /// `length` bytes (at most a page here) that the device reaches, zeroed;
    /// `None` when none is left (NULL).
    pub fn allocate_common_buffer(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        length: u32,
        cache_enabled: bool,
    ) -> Option<u64> {
        if !self.live(ctx, id, "AllocateCommonBuffer", Irql::Passive) {
            return None;
        }
        if length == 0 || u64::from(length) > PAGE_SIZE {
            return None;
        }
        let width = self.adapters.get(id.0 as usize)?.width;
        let limit = if width >= 64 { u64::MAX } else { 1u64 << width };
        let slot = (0..self.common_frames.len())
            .find(|&i| !self.common_used[i] && (self.common_frames[i] + 1) * PAGE_SIZE <= limit)?;
        self.common_used[slot] = true;
        let logical = self.common_frames[slot] * PAGE_SIZE;
        ctx.mem.fill(logical, PAGE_SIZE as usize, 0);
        self.adapters[id.0 as usize]
            .common
            .push((logical, length, cache_enabled));
        self.stats.common_buffers += 1;
        Some(logical)
    }

    /// `FreeCommonBuffer` (PASSIVE_LEVEL) with the arguments of the
    /// allocation it ends: another length or cache setting is refused (the
    /// caller checks the virtual address), an unknown address is 0xE6/0x03.
    pub fn free_common_buffer(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        length: u32,
        logical: u64,
        cache_enabled: bool,
    ) -> bool {
        if !self.live(ctx, id, "FreeCommonBuffer", Irql::Passive) {
            return false;
        }
        let a = &self.adapters[id.0 as usize];
        let Some(index) = a.common.iter().position(|c| c.0 == logical) else {
            ctx.verifier.report(Violation::CommonBufferFreedTooOften);
            return false;
        };
        if a.common[index] != (logical, length, cache_enabled) {
            ctx.verifier
                .report(Violation::CommonBufferFreedWithOtherArguments);
            return false;
        }
        self.adapters[id.0 as usize].common.remove(index);
        if let Some(slot) = self
            .common_frames
            .iter()
            .position(|&pfn| pfn * PAGE_SIZE == logical)
        {
            self.common_used[slot] = false;
        }
        true
    }

    /// True when `[address, address + length)` touches a common buffer of a
    /// live adapter.
    pub fn touches_common_buffer(&self, address: u64, length: u64) -> bool {
        let end = address.saturating_add(length);
        self.adapters.iter().filter(|a| !a.released).any(|a| {
            a.common
                .iter()
                .any(|&(logical, len, _)| logical < end && address < logical + u64::from(len))
        })
    }

    /// Common buffers of the adapter not freed yet.
    pub fn common_buffers(&self, id: AdapterId) -> usize {
        self.adapters
            .get(id.0 as usize)
            .map_or(0, |a| a.common.len())
    }
}
