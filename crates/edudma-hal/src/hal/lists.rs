//! The scatter/gather-list routines: `CalculateScatterGatherList`,
//! `GetScatterGatherList` / `BuildScatterGatherList` and
//! `PutScatterGatherList`, on the channel and map-register machinery of the
//! packet routines.
//!
//! A list request commits map registers like an asynchronous
//! `AllocateAdapterChannelEx`; the range is mapped when its list routine is
//! about to run ([`Hal::build_list`]), and `PutScatterGatherList` flushes it
//! and frees the registers, as Learn describes ("frees map registers and
//! scatter/gather list previously allocated by GetScatterGatherList").

use edudma_core::NtStatus;
use edudma_core::dma::{SgElement, SgList};

use super::{
    AllocateResult, Channel, Context, Hal, HalCtx, MapRange, MapRegisterBase, dma_fail,
    sg_list_size,
};
use crate::irql::Irql;
use crate::mdl::MdlId;
use crate::verifier::Violation;

/// The list of an adapter: asked for, then given to its routine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ListState {
    range: MapRange,
    /// The list routine was given the list: it is outstanding until put.
    pub(super) given: bool,
    base: Option<MapRegisterBase>,
}

impl Hal {
    /// `CalculateScatterGatherList` (`IRQL <= DISPATCH_LEVEL`): the bytes a
    /// list for the range needs, and its map registers.
    pub fn calculate_scatter_gather_list(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: super::AdapterId,
        mdl: MdlId,
        offset: u64,
        length: u32,
    ) -> Result<(u32, u32), NtStatus> {
        if !self.live(ctx, id, "CalculateScatterGatherList", Irql::Dispatch) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let pages = self.resolve(ctx, mdl, offset, u64::from(length))?.len() as u32;
        Ok((sg_list_size(pages), pages))
    }

    /// `GetScatterGatherList` (`buffer_bytes` `None`) or
    /// `BuildScatterGatherList` into a buffer of `buffer_bytes`
    /// (`IRQL <= DISPATCH_LEVEL`): the list routine runs now, later, or when
    /// the pool frees, like an asynchronous `AllocateAdapterChannelEx`'s.
    #[allow(clippy::too_many_arguments)]
    pub fn get_scatter_gather_list(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: super::AdapterId,
        mdl: MdlId,
        offset: u64,
        length: u32,
        write_to_device: bool,
        buffer_bytes: Option<u32>,
    ) -> Result<AllocateResult, NtStatus> {
        let routine = match buffer_bytes {
            Some(_) => "BuildScatterGatherList",
            None => "GetScatterGatherList",
        };
        if !self.live(ctx, id, routine, Irql::Dispatch) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let pages = self.resolve(ctx, mdl, offset, u64::from(length))?.len() as u32;
        let Some(a) = self.adapter(id) else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        // Learn: the routines fail when the map registers the transfer
        // needs exceed the adapter's, or the driver's buffer is too small.
        if pages > a.granted {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        if buffer_bytes.is_some_and(|bytes| bytes < sg_list_size(pages)) {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        if a.list.is_some() || a.channel != Channel::Free {
            // One list or channel at a time in this model (the driver never
            // asks for a second).
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        a.context = Context::Initialized;
        a.list = Some(ListState {
            range: MapRange {
                mdl,
                offset,
                length,
                write_to_device,
            },
            given: false,
            base: None,
        });
        let result = self.allocate(ctx, id, pages, false, routine);
        if result.is_err()
            && let Some(a) = self.adapter(id)
        {
            a.list = None;
        }
        result
    }

    /// The list routine of the grant `base` is about to run: map the range
    /// and give its elements (the list the routine is handed).
    pub fn build_list(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: super::AdapterId,
        base: MapRegisterBase,
    ) -> Result<Vec<SgElement>, NtStatus> {
        let Some(held) = self.held(id, base) else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        let Some(state) = self.adapters.get(id.0 as usize).and_then(|a| a.list) else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        let range = state.range;
        let segments = self.resolve(ctx, range.mdl, range.offset, u64::from(range.length))?;
        let mut sg = SgList::new();
        let bytes = sg_list_size(edudma_core::dma::MAX_SG_ELEMENTS as u32);
        let mapped = self.map_range(ctx, id, range, held, segments, bytes, &mut sg)?;
        if mapped != range.length {
            // A list covers all of its range; a shorter map is the model's
            // limit (too many elements), not something a driver sees.
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        if let Some(a) = self.adapter(id) {
            a.list = Some(ListState {
                given: true,
                base: Some(base),
                ..state
            });
        }
        self.stats.lists_built += 1;
        Ok(sg.as_slice().to_vec())
    }

    /// `PutScatterGatherList` (DISPATCH_LEVEL) of the list `base` in the
    /// direction it was asked for: flush, free the map registers.
    pub fn put_scatter_gather_list(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: super::AdapterId,
        base: MapRegisterBase,
        write_to_device: bool,
    ) {
        if !self.live_at_dispatch(ctx, id, "PutScatterGatherList") {
            return;
        }
        let state = self.adapters[id.0 as usize]
            .list
            .filter(|l| l.given && l.base == Some(base));
        let Some(state) = state else {
            let _ = dma_fail::<()>(
                ctx,
                Violation::ScatterGatherListFreedTooOften,
                NtStatus::INVALID_PARAMETER,
            );
            return;
        };
        if state.range.write_to_device != write_to_device {
            let _ = dma_fail::<()>(
                ctx,
                Violation::ScatterGatherListPutWithOtherDirection,
                NtStatus::INVALID_PARAMETER,
            );
            return;
        }
        if self
            .flush_range(ctx, id, "PutScatterGatherList", base, state.range)
            .is_err()
        {
            return;
        }
        let Some((count, first)) = self.held(id, base) else {
            return;
        };
        self.end_channel(ctx, id, first, count);
        self.adapters[id.0 as usize].list = None;
        self.stats.lists_put += 1;
    }

    /// True when a list was asked for and its routine has not run yet.
    pub fn list_pending(&self, id: super::AdapterId) -> bool {
        self.adapters
            .get(id.0 as usize)
            .and_then(|a| a.list)
            .is_some_and(|l| !l.given)
    }

    /// True when the adapter's list was given to its routine and not put.
    pub fn list_outstanding(&self, id: super::AdapterId) -> bool {
        self.adapters
            .get(id.0 as usize)
            .and_then(|a| a.list)
            .is_some_and(|l| l.given)
    }
}
