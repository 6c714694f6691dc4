//! Channels and map registers: `AllocateAdapterChannel[Ex]`, the grant's
//! delivery and its routine's return, `CancelAdapterChannel`,
//! `FreeAdapterChannel`, `FreeMapRegisters` and `FreeAdapterObject`.

use edudma_core::NtStatus;

use super::{
    AdapterId, AllocateResult, Channel, Context, GUARD_BYTE, Hal, HalCtx, IoAllocationAction,
    MapRegisterBase, dma_fail,
};
use crate::irql::Irql;
use crate::memory::{PAGE_SIZE, PhysMemory};
use crate::verifier::{Verifier, Violation};

impl Hal {
    pub(super) fn take_registers(&mut self, count: u32) -> Option<u32> {
        let n = count.max(1) as usize;
        let pool = self.pool_used.len();
        (0..=pool.saturating_sub(n))
            .find(|&first| self.pool_used[first..first + n].iter().all(|u| !u))
            .map(|first| {
                for u in &mut self.pool_used[first..first + n] {
                    *u = true;
                }
                first as u32
            })
    }

    pub(super) fn release_registers(&mut self, first: u32, count: u32) {
        let n = count.max(1) as usize;
        for u in self.pool_used.iter_mut().skip(first as usize).take(n) {
            *u = false;
        }
    }

    pub(super) fn register_pfn(&self, register: u32) -> u64 {
        // Registers are handed out within the pool: the index is in range.
        self.pool_frames
            .get(register as usize)
            .copied()
            .unwrap_or(u64::MAX / PAGE_SIZE)
    }

    pub(super) fn commit(
        &mut self,
        mem: &mut dyn PhysMemory,
        id: AdapterId,
        count: u32,
    ) -> Option<(MapRegisterBase, u32)> {
        if self.contended {
            return None;
        }
        let first = self.take_registers(count)?;
        for r in first..first + count.max(1) {
            mem.fill(
                self.register_pfn(r) * PAGE_SIZE,
                PAGE_SIZE as usize,
                GUARD_BYTE,
            );
        }
        self.next_base += 0x10;
        let base = MapRegisterBase(self.next_base);
        if let Some(a) = self.adapter(id) {
            a.channel = Channel::Granting { base, count, first };
            a.used = vec![false; count.max(1) as usize];
        }
        self.stats.grants += 1;
        Some((base, first))
    }

    /// `AllocateAdapterChannelEx` with an execution routine. `synchronous`
    /// is `DMA_SYNCHRONOUS_CALLBACK`.
    pub fn allocate_adapter_channel_ex(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        count: u32,
        synchronous: bool,
    ) -> Result<AllocateResult, NtStatus> {
        self.allocate(ctx, id, count, synchronous, "AllocateAdapterChannelEx")
    }

    /// The shared body of both allocations; `routine` names the caller.
    pub(super) fn allocate(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        count: u32,
        synchronous: bool,
        routine: &'static str,
    ) -> Result<AllocateResult, NtStatus> {
        if !self.live_at_dispatch(ctx, id, routine) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let version1 = routine == "AllocateAdapterChannel";
        let pool = self.config.pool_registers;
        let Some(a) = self.adapter(id) else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        // Registers kept by DeallocateObjectKeepRegisters do not hold the
        // channel: a new allocation is legal.
        if a.channel != Channel::Free {
            return dma_fail(
                ctx,
                Violation::TooManyAdapterChannels,
                NtStatus::INVALID_PARAMETER,
            );
        }
        if count > pool {
            return dma_fail(
                ctx,
                Violation::MapRegistersAboveMaximum {
                    requested: count,
                    maximum: pool,
                },
                NtStatus::INSUFFICIENT_RESOURCES,
            );
        }
        if count > a.granted {
            let granted = a.granted;
            return dma_fail(
                ctx,
                Violation::TooManyMapRegisters {
                    requested: count,
                    granted,
                },
                NtStatus::INSUFFICIENT_RESOURCES,
            );
        }
        if version1 {
            // No transfer context in version 1: the model's state machine
            // still tracks the channel's use through one.
            a.context = Context::Initialized;
        }
        if a.context == Context::Cancelled {
            a.context = Context::Uninitialized;
            self.stats.pre_cancelled += 1;
            return Err(NtStatus::CANCELLED);
        }
        if a.context != Context::Initialized {
            return dma_fail(
                ctx,
                Violation::TransferContextNotInitialized,
                NtStatus::INVALID_PARAMETER,
            );
        }
        if !self.contended && ctx.rng.chance(self.config.contention_percent) {
            self.contended = true;
        }
        if synchronous {
            return match self.commit(ctx.mem, id, count) {
                Some((base, _)) => {
                    if let Some(a) = self.adapter(id) {
                        a.context = Context::InUse;
                    }
                    self.stats.inline_grants += 1;
                    Ok(AllocateResult::RunNow(base))
                }
                None => {
                    self.stats.sync_refusals += 1;
                    // The call consumed the transfer context: a retry must
                    // initialize it again.
                    if let Some(a) = self.adapter(id) {
                        a.context = Context::Uninitialized;
                    }
                    Err(NtStatus::INSUFFICIENT_RESOURCES)
                }
            };
        }
        if let Some(a) = self.adapter(id) {
            a.context = Context::InUse;
        }
        let inline = ctx.rng.chance(self.config.inline_grant_percent);
        match self.commit(ctx.mem, id, count) {
            Some((base, _)) if inline => {
                self.stats.inline_grants += 1;
                Ok(AllocateResult::RunNow(base))
            }
            Some((base, _)) => Ok(AllocateResult::Committed(base)),
            None => {
                if let Some(a) = self.adapter(id) {
                    a.channel = Channel::Waiting { count };
                }
                self.stats.queued += 1;
                Ok(AllocateResult::Waiting)
            }
        }
    }

    /// `AllocateAdapterChannel` (DISPATCH_LEVEL) with an `AdapterControl`
    /// routine: version 1 has no transfer context and no synchronous form;
    /// the routine runs inside the call or later, like an asynchronous
    /// `AllocateAdapterChannelEx`.
    pub fn allocate_adapter_channel(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        count: u32,
    ) -> Result<AllocateResult, NtStatus> {
        self.allocate(ctx, id, count, false, "AllocateAdapterChannel")
    }

    /// The pool is free again (another device released it): retry a
    /// waiting request. `Some(base)`: its execution routine is to run.
    pub fn retry_waiting(
        &mut self,
        mem: &mut dyn PhysMemory,
        id: AdapterId,
    ) -> Option<MapRegisterBase> {
        let count = match self.adapters.get(id.0 as usize)?.channel {
            Channel::Waiting { count } => count,
            _ => return None,
        };
        self.commit(mem, id, count).map(|(b, _)| b)
    }

    /// The adapters with a request waiting in the queue.
    pub fn waiting_adapters(&self) -> Vec<AdapterId> {
        (0..self.adapters.len())
            .map(|i| AdapterId(i as u32))
            .filter(|id| self.is_waiting(*id))
            .collect()
    }

    /// True when a request of this adapter waits in the queue.
    pub fn is_waiting(&self, id: AdapterId) -> bool {
        self.adapters
            .get(id.0 as usize)
            .is_some_and(|a| matches!(a.channel, Channel::Waiting { .. }))
    }

    /// The execution routine ran and returned `action`. A `DeallocateObject*`
    /// return asks the HAL to free the adapter channel: if the routine already
    /// freed it with `FreeAdapterChannel`, that is a second free (0x04).
    pub fn routine_returned(
        &mut self,
        verifier: &mut Verifier,
        id: AdapterId,
        base: MapRegisterBase,
        action: IoAllocationAction,
    ) {
        let Some(a) = self.adapter(id) else { return };
        let Channel::Granting {
            base: b,
            count,
            first,
        } = a.channel
        else {
            if a.channel == Channel::Free && action != IoAllocationAction::KeepObject {
                verifier.report(Violation::AdapterChannelFreedTooOften);
            }
            return;
        };
        if b != base {
            return;
        }
        match action {
            IoAllocationAction::KeepObject => a.channel = Channel::Held { base, count, first },
            IoAllocationAction::DeallocateObjectKeepRegisters => {
                a.channel = Channel::Free;
                a.context = Context::Uninitialized;
                a.registers_only.push((base, count, first));
            }
            IoAllocationAction::DeallocateObject => {
                a.channel = Channel::Free;
                a.context = Context::Uninitialized;
                self.release_registers(first, count);
            }
        }
    }

    /// The grant being delivered, if the execution routine is about to run.
    pub fn granting(&self, id: AdapterId) -> Option<MapRegisterBase> {
        match self.adapters.get(id.0 as usize)?.channel {
            Channel::Granting { base, .. } => Some(base),
            _ => None,
        }
    }

    /// `CancelAdapterChannel`: TRUE when the request was still queued (it
    /// is dropped, the routine never runs), or when none was made yet on an
    /// initialized context (the next allocation with it is cancelled).
    pub fn cancel_adapter_channel(&mut self, ctx: &mut HalCtx<'_>, id: AdapterId) -> bool {
        if !self.live(ctx, id, "CancelAdapterChannel", Irql::Dispatch) {
            return false;
        }
        let Some(a) = self.adapter(id) else {
            return false;
        };
        if matches!(a.channel, Channel::Waiting { .. }) {
            a.channel = Channel::Free;
            a.context = Context::Uninitialized;
            self.stats.cancels_true += 1;
            true
        } else if a.channel == Channel::Free && a.context == Context::Initialized {
            a.context = Context::Cancelled;
            self.stats.cancels_true += 1;
            true
        } else {
            self.stats.cancels_false += 1;
            false
        }
    }

    pub(super) fn held(&self, id: AdapterId, base: MapRegisterBase) -> Option<(u32, u32)> {
        let a = self.adapters.get(id.0 as usize)?;
        match a.channel {
            Channel::Held {
                base: b,
                count,
                first,
            }
            | Channel::Granting {
                base: b,
                count,
                first,
            } if b == base => Some((count, first)),
            _ => a
                .registers_only
                .iter()
                .find(|(b, _, _)| *b == base)
                .map(|&(_, count, first)| (count, first)),
        }
    }

    /// `FreeAdapterChannel` (DISPATCH_LEVEL).
    pub fn free_adapter_channel(&mut self, ctx: &mut HalCtx<'_>, id: AdapterId) {
        if !self.live_at_dispatch(ctx, id, "FreeAdapterChannel") {
            return;
        }
        let a = &self.adapters[id.0 as usize];
        let (Channel::Held { count, first, .. } | Channel::Granting { count, first, .. }) =
            a.channel
        else {
            ctx.verifier.report(Violation::AdapterChannelFreedTooOften);
            return;
        };
        if !a.mappings.is_empty() {
            ctx.verifier.report(Violation::MapRegistersFreedWhileMapped);
            return;
        }
        self.end_channel(ctx, id, first, count);
        self.stats.channel_frees += 1;
    }

    /// The channel and its map registers are given back: the guard bytes of
    /// the registers it held and of the pool are checked first.
    pub(super) fn end_channel(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        first: u32,
        count: u32,
    ) {
        self.check_guards(ctx, first, count);
        self.release_registers(first, count);
        let a = &mut self.adapters[id.0 as usize];
        a.channel = Channel::Free;
        a.context = Context::Uninitialized;
        a.used.clear();
    }

    /// `FreeMapRegisters` (DISPATCH_LEVEL), after `DeallocateObjectKeepRegisters`.
    pub fn free_map_registers(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        base: MapRegisterBase,
        count: u32,
    ) {
        if !self.live_at_dispatch(ctx, id, "FreeMapRegisters") {
            return;
        }
        let a = &self.adapters[id.0 as usize];
        match a.registers_only.iter().position(|(b, _, _)| *b == base) {
            Some(i) if a.registers_only[i].1 == count => {
                if !a.mappings.is_empty() {
                    ctx.verifier.report(Violation::MapRegistersFreedWhileMapped);
                    return;
                }
                let (_, held, first) = a.registers_only[i];
                self.check_guards(ctx, first, held);
                self.release_registers(first, held);
                self.adapters[id.0 as usize].registers_only.remove(i);
                self.stats.map_register_frees += 1;
            }
            Some(i) => ctx.verifier.report(Violation::MapRegistersFreedTooOften {
                count,
                held: a.registers_only[i].1,
            }),
            None => ctx
                .verifier
                .report(Violation::MapRegistersFreedTooOften { count, held: 0 }),
        }
    }

    /// `FreeAdapterObject` (DISPATCH_LEVEL): the end of a channel a
    /// synchronous `AllocateAdapterChannelEx` without an execution routine
    /// granted. `DeallocateObject` frees the channel and its map registers,
    /// `DeallocateObjectKeepRegisters` the channel only.
    pub fn free_adapter_object(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        action: IoAllocationAction,
    ) {
        if !self.live_at_dispatch(ctx, id, "FreeAdapterObject") {
            return;
        }
        let a = &self.adapters[id.0 as usize];
        let Channel::Held { base, count, first } = a.channel else {
            ctx.verifier.report(Violation::AdapterChannelFreedTooOften);
            return;
        };
        match action {
            // Not a way to free anything: the channel stays held.
            IoAllocationAction::KeepObject => {}
            IoAllocationAction::DeallocateObjectKeepRegisters => {
                let a = &mut self.adapters[id.0 as usize];
                a.channel = Channel::Free;
                a.context = Context::Uninitialized;
                a.registers_only.push((base, count, first));
            }
            IoAllocationAction::DeallocateObject => {
                if !a.mappings.is_empty() {
                    ctx.verifier.report(Violation::MapRegistersFreedWhileMapped);
                    return;
                }
                self.end_channel(ctx, id, first, count);
            }
        }
    }
}
