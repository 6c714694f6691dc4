//! The DMA sequence of one request: the packet strategies' steps 2–9
//! (version 3 or 1) and the scatter/gather-list strategy's lists, from
//! StartIo to the completion.

use core::fmt::Debug;

use super::{
    AllocationPolicy, Awaited, Completion, DmaStrategy, Engine, Job, Mapped, Pending, State,
    StopReason, Transfer, device_idle,
};
use crate::dma::{AllocationMode, DmaOps, ListBuffer};
use crate::ioctl::{self, Direction};
use crate::protocol::{
    Adapter, Allocation, Channel, CommonUse, ListAllocation, ListGrant, PendingChannel, Routines,
};
use crate::regs::{self, DEVICE_BUFFER_ADDR, DmaCommand, RegisterFile};
use crate::status::NtStatus;

impl<D: DmaOps, R: Copy + Eq + Debug> Engine<D, R> {
    /// Steps 2 and 3 (a packet strategy), or the first list (sg-list).
    pub(super) fn begin_dma(
        &mut self,
        mut adapter: Adapter<D>,
        job: Job<R, D::Mdl>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        // Validated in dispatch already; checked again because a zero length
        // or a range past the device buffer must never reach the HAL or the
        // device (verifier 0x21, QEMU's fatal range check).
        if let Err(error) = ioctl::check_window(
            u64::from(job.dma.device_offset),
            u64::from(job.dma.length),
            self.window(),
        ) {
            self.state = State::Idle(adapter);
            return self.fail(job.request, error.status());
        }
        match self.strategy() {
            DmaStrategy::SgList => return self.request_list(adapter, job, regs),
            DmaStrategy::CommonBuffer => return self.through_common_buffer(adapter, job, regs),
            DmaStrategy::V3Packet | DmaStrategy::V1Packet => {}
        }
        let write = job.dma.direction.write_to_device();
        match adapter.routines() {
            Routines::Version3 => self.stats.get_dma_transfer_info += 1,
            Routines::Version1 => self.stats.flush_io_buffers += 1,
        }
        let needed = match adapter.prepare_transfer(job.mdl, 0, job.dma.length, write) {
            Ok(needed) => needed,
            Err(status) => {
                self.state = State::Idle(adapter);
                return self.fail(job.request, status);
            }
        };
        // Never ask for more map registers than granted (verifier 0x0C/0x15):
        // a transfer that needs more is mapped in parts.
        let granted = self.facts.map_or(1, |f| f.map_registers).max(1);
        let count = needed.clamp(1, granted);
        let first_mode = first_mode(
            adapter.routines(),
            self.config.allocation,
            needed,
            self.sync_refused,
        );
        self.stats.allocate_adapter_channel += 1;
        let allocation = match adapter.allocate_channel(count, first_mode) {
            Allocation::Failed(mut adapter, NtStatus::INSUFFICIENT_RESOURCES)
                if first_mode == AllocationMode::Synchronous =>
            {
                self.stats.sync_allocation_fallbacks += 1;
                self.sync_refused = true;
                match adapter.reinitialize_context() {
                    Ok(()) => {
                        self.stats.allocate_adapter_channel += 1;
                        adapter.allocate_channel(count, AllocationMode::Asynchronous)
                    }
                    Err(status) => Allocation::Failed(adapter, status),
                }
            }
            other => other,
        };
        match allocation {
            Allocation::Granted(channel) => {
                // Granted inside the call: the adapter was free.
                self.sync_refused = false;
                self.map_next(job, channel, regs)
            }
            Allocation::Queued(pending) => {
                self.state = State::AwaitingChannel {
                    job,
                    pending: Pending::Channel(pending),
                };
                None
            }
            Allocation::Failed(adapter, status) => {
                self.state = State::Idle(adapter);
                self.fail(job.request, status)
            }
        }
    }

    /// Step 5 for the bytes that remain, then step 6 for the first element.
    pub(super) fn map_next(
        &mut self,
        job: Job<R, D::Mdl>,
        channel: Channel<D>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        let remaining = job.dma.length - job.done;
        let write = job.dma.direction.write_to_device();
        self.stats.map_transfer += 1;
        let mapping =
            match channel.map(job.mdl, u64::from(job.done), remaining, write, &mut self.sg) {
                Ok(mapping) => mapping,
                Err((channel, status)) => return self.end(channel, job, status),
            };
        if mapping.length() < remaining {
            self.stats.partial_maps += 1;
        }
        self.begin_transfer(job, Mapped::Packet(mapping), regs)
    }

    /// A list for the bytes that remain (what the map registers cover), then
    /// step 6 for its first element when it is given at once.
    pub(super) fn request_list(
        &mut self,
        adapter: Adapter<D>,
        job: Job<R, D::Mdl>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        let remaining = job.dma.length - job.done;
        let write = job.dma.direction.write_to_device();
        let granted = self.facts.map_or(1, |f| f.map_registers).max(1);
        self.stats.calculate_scatter_gather_list += 1;
        let allocation =
            adapter.request_list(job.mdl, u64::from(job.done), remaining, write, granted);
        if let ListAllocation::Granted(_, buffer) | ListAllocation::Queued(_, buffer) = &allocation
        {
            match buffer {
                ListBuffer::Driver => self.stats.build_scatter_gather_list += 1,
                ListBuffer::Hal => self.stats.get_scatter_gather_list += 1,
            }
        }
        match allocation {
            ListAllocation::Granted(list, _) => self.start_list(job, list, regs),
            ListAllocation::Queued(pending, _) => {
                self.state = State::AwaitingChannel {
                    job,
                    pending: Pending::List(pending),
                };
                None
            }
            ListAllocation::Failed(adapter, status) => {
                self.settle(adapter);
                self.fail(job.request, status)
            }
        }
    }

    /// The whole request through the common buffer: a write copied in, one
    /// edu command at its logical address.
    fn through_common_buffer(
        &mut self,
        adapter: Adapter<D>,
        job: Job<R, D::Mdl>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        let Some(common) = self.facts.and_then(|f| f.common_buffer) else {
            self.settle(adapter);
            return self.fail(job.request, NtStatus::INSUFFICIENT_RESOURCES);
        };
        let write = job.dma.direction.write_to_device();
        let used = match adapter.use_common_buffer(job.mdl, 0, job.dma.length, write) {
            Ok(used) => used,
            Err((adapter, status)) => {
                self.settle(adapter);
                return self.fail(job.request, status);
            }
        };
        if write {
            self.stats.common_buffer_copies += 1;
        }
        self.sg.clear();
        self.sg.push(crate::dma::SgElement {
            address: common.logical,
            length: job.dma.length,
        });
        self.begin_transfer(job, Mapped::Common(used), regs)
    }

    /// The device finished the common buffer's command: a read is copied
    /// out, then the completion.
    fn common_done(&mut self, job: Job<R, D::Mdl>, used: CommonUse<D>) -> Option<Completion<R>> {
        let write = job.dma.direction.write_to_device();
        let moved = used.length();
        if let Some(reason) = self.stopping.filter(|r| *r == StopReason::SurpriseRemoval) {
            self.settle(used.abandon());
            return self.fail(job.request, reason.status());
        }
        let (adapter, copied) = used.end();
        if !write {
            self.stats.common_buffer_copies += 1;
        }
        self.settle(adapter);
        match copied {
            Ok(()) => {
                self.count_bytes(job.dma.direction, moved);
                self.finish(job.request, NtStatus::SUCCESS, moved as usize, None)
            }
            Err(status) => self.fail(job.request, status),
        }
    }

    /// The list routine ran: step 6 for the list's first element.
    pub(super) fn start_list(
        &mut self,
        job: Job<R, D::Mdl>,
        mut list: ListGrant<D>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        if !list.elements(&mut self.sg) {
            let adapter = self.put_list(list);
            self.settle(adapter);
            return self.fail(job.request, NtStatus::DEVICE_HARDWARE_ERROR);
        }
        if list.length() < job.dma.length - job.done {
            self.stats.partial_maps += 1;
        }
        self.begin_transfer(job, Mapped::List(list), regs)
    }

    /// Step 6 for the first element of a mapping or list, once its elements
    /// are known to be usable.
    fn begin_transfer(
        &mut self,
        job: Job<R, D::Mdl>,
        mapping: Mapped<D>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        let length = mapping.length();
        let transfer = Transfer {
            device_offset: job.dma.device_offset + job.done,
            job,
            mapping,
            element: 0,
            programmed: false,
            ticks: 0,
        };
        if !self.mapping_is_usable(length) {
            // Programming it would send the device to the wrong memory (the
            // edu device silently masks addresses to 28 bits).
            return self.flush_and_end(transfer, NtStatus::DEVICE_HARDWARE_ERROR);
        }
        self.program(transfer, regs)
    }

    /// The scatter/gather list covers the `length` bytes mapped exactly,
    /// and every element is non-empty and reachable by the device.
    fn mapping_is_usable(&self, length: u32) -> bool {
        let limit = self.facts.map_or(1 << 32, |f| f.address_limit());
        !self.sg.is_empty()
            && self.sg.total_length() == u64::from(length)
            && self.sg.as_slice().iter().all(|e| {
                e.length > 0
                    && e.address
                        .checked_add(u64::from(e.length))
                        .is_some_and(|end| end <= limit)
            })
    }

    /// Step 6: one edu command for the current element, unless the device
    /// is still busy (its registers would drop the writes).
    pub(super) fn program(
        &mut self,
        mut transfer: Transfer<D, R>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        if transfer.job.cancelled {
            return self.flush_and_end(transfer, NtStatus::CANCELLED);
        }
        if !device_idle(regs) {
            transfer.programmed = false;
            self.state = State::Transferring(transfer);
            return None;
        }
        let element = self.sg.as_slice()[transfer.element];
        let device = DEVICE_BUFFER_ADDR as u32 + transfer.device_offset;
        // mapping_is_usable() proved the address fits in 32 bits.
        let bus = element.address as u32;
        let (source, destination, command) = match transfer.job.dma.direction {
            Direction::ToDevice => (bus, device, DmaCommand::START | DmaCommand::IRQ),
            Direction::FromDevice => (
                device,
                bus,
                DmaCommand::START | DmaCommand::IRQ | DmaCommand::TO_RAM,
            ),
        };
        regs.write32(regs::REG_DMA_SRC, source);
        regs.write32(regs::REG_DMA_DST, destination);
        regs.write32(regs::REG_DMA_COUNT, element.length);
        regs.write32(regs::REG_DMA_CMD, command.bits());
        self.stats.device_commands += 1;
        transfer.programmed = true;
        transfer.ticks = 0;
        self.state = State::Transferring(transfer);
        None
    }

    /// Step 7 for one element: the next element, or step 8 after the last.
    pub(super) fn element_done(
        &mut self,
        mut transfer: Transfer<D, R>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        if !transfer.mapping.device_on_bus() {
            // Bus mastering was switched off under the command: its bytes
            // went nowhere although the device says done.
            return self.abandon(transfer, NtStatus::DEVICE_HARDWARE_ERROR);
        }
        let finished = self.sg.as_slice()[transfer.element];
        transfer.device_offset += finished.length;
        transfer.element += 1;
        if transfer.job.cancelled {
            return self.flush_and_end(transfer, NtStatus::CANCELLED);
        }
        if transfer.element < self.sg.len() {
            transfer.programmed = false;
            return self.program(transfer, regs);
        }
        // Step 8, then the rest of the request (back to step 5) or its end.
        let Transfer {
            mut job, mapping, ..
        } = transfer;
        let mapping = match mapping {
            Mapped::Packet(mapping) => mapping,
            Mapped::List(list) => return self.list_done(job, list, regs),
            Mapped::Common(used) => return self.common_done(job, used),
        };
        let moved = mapping.length();
        self.stats.flush_adapter_buffers += 1;
        let (channel, flushed) = mapping.flush();
        self.count_bytes(job.dma.direction, moved);
        job.done += moved;
        if let Err(status) = flushed {
            return self.end(channel, job, status);
        }
        if let Some(reason) = self.stopping.filter(|r| *r == StopReason::SurpriseRemoval) {
            return self.end(channel, job, reason.status());
        }
        if job.done < job.dma.length {
            self.map_next(job, channel, regs)
        } else {
            let length = job.dma.length as usize;
            self.end_with(channel, job, NtStatus::SUCCESS, length)
        }
    }

    /// Every element of a list moved: put it, then the next list or the end.
    fn list_done(
        &mut self,
        mut job: Job<R, D::Mdl>,
        list: ListGrant<D>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        let moved = list.length();
        let adapter = self.put_list(list);
        self.count_bytes(job.dma.direction, moved);
        job.done += moved;
        if let Some(reason) = self.stopping.filter(|r| *r == StopReason::SurpriseRemoval) {
            self.settle(adapter);
            return self.fail(job.request, reason.status());
        }
        if job.done < job.dma.length {
            self.request_list(adapter, job, regs)
        } else {
            self.settle(adapter);
            let length = job.dma.length as usize;
            self.finish(job.request, NtStatus::SUCCESS, length, None)
        }
    }

    /// End a transfer whose command the device may still own: off the bus
    /// first, then flush, free and complete; the device is failed.
    pub(super) fn abandon(
        &mut self,
        mut transfer: Transfer<D, R>,
        status: NtStatus,
    ) -> Option<Completion<R>> {
        transfer.mapping.cut_off_device();
        self.failed = true;
        self.flush_and_end(transfer, status)
    }

    /// Step 8 for a transfer cut short (or the list's put), then step 9 and
    /// the completion.
    pub(super) fn flush_and_end(
        &mut self,
        transfer: Transfer<D, R>,
        status: NtStatus,
    ) -> Option<Completion<R>> {
        let Transfer { job, mapping, .. } = transfer;
        match mapping {
            Mapped::Packet(mapping) => {
                self.stats.flush_adapter_buffers += 1;
                let (channel, _) = mapping.flush();
                self.end(channel, job, status)
            }
            Mapped::List(list) => {
                let adapter = self.put_list(list);
                self.settle(adapter);
                self.finish(job.request, status, 0, None)
            }
            Mapped::Common(used) => {
                self.settle(used.abandon());
                self.finish(job.request, status, 0, None)
            }
        }
    }

    pub(super) fn end(
        &mut self,
        channel: Channel<D>,
        job: Job<R, D::Mdl>,
        status: NtStatus,
    ) -> Option<Completion<R>> {
        self.end_with(channel, job, status, 0)
    }

    /// Step 9 and the completion.
    fn end_with(
        &mut self,
        channel: Channel<D>,
        job: Job<R, D::Mdl>,
        status: NtStatus,
        information: usize,
    ) -> Option<Completion<R>> {
        let adapter = self.free_channel(channel);
        self.settle(adapter);
        self.finish(job.request, status, information, None)
    }

    /// Step 4, counted: `CancelAdapterChannel`. Version 1 and lists have
    /// none: their grant is awaited.
    pub(super) fn cancel_pending(&mut self, pending: Pending<D>) -> Result<Adapter<D>, Awaited<D>> {
        match pending {
            Pending::Channel(pending) => self.cancel_channel(pending).map_err(Awaited::Channel),
            Pending::List(pending) => Err(Awaited::List(pending)),
        }
    }

    fn cancel_channel(
        &mut self,
        pending: PendingChannel<D>,
    ) -> Result<Adapter<D>, crate::protocol::GrantAwaited<D>> {
        if pending.routines() == Routines::Version3 {
            self.stats.cancel_adapter_channel += 1;
        }
        pending.cancel()
    }

    /// A grant that was taken back arrived: the channel is freed or the
    /// list put, unused.
    pub(super) fn release_awaited(
        &mut self,
        awaited: Awaited<D>,
        grant: D::MapRegisterBase,
    ) -> Adapter<D> {
        match awaited {
            Awaited::Channel(awaited) => self.free_channel(awaited.granted(grant)),
            Awaited::List(pending) => self.put_list(pending.granted(grant)),
        }
    }

    /// `PutScatterGatherList`, counted.
    fn put_list(&mut self, list: ListGrant<D>) -> Adapter<D> {
        self.stats.put_scatter_gather_list += 1;
        list.put()
    }

    /// Step 9, counted: `FreeAdapterChannel` or `FreeMapRegisters`.
    pub(super) fn free_channel(&mut self, channel: Channel<D>) -> Adapter<D> {
        match channel.routines() {
            Routines::Version3 => self.stats.free_adapter_channel += 1,
            Routines::Version1 => self.stats.free_map_registers += 1,
        }
        channel.free()
    }
}

/// How the first `AllocateAdapterChannelEx` of a request is made, from what
/// the engine knows of the adapter: the floor is one call per request, and a
/// refused synchronous attempt retried asynchronously is two.
///
/// `needed` is `GetDmaTransferInfo`'s map-register count (exact in version
/// 3); `sync_refused` says the last synchronous attempt was refused and no
/// allocation has been granted inside its call since.
pub(super) fn first_mode(
    routines: Routines,
    policy: AllocationPolicy,
    needed: u32,
    sync_refused: bool,
) -> AllocationMode {
    match (routines, policy) {
        // Map registers come from a pool other devices share, whose state
        // no driver can see: a synchronous attempt may be refused and cost
        // a second call, while the asynchronous form is granted at once
        // (often inside the call) when they are free. Without map
        // registers, only this device's own channel is asked for, unless
        // the adapter has just refused one.
        (Routines::Version3, AllocationPolicy::SyncThenAsync) if needed == 0 && !sync_refused => {
            AllocationMode::Synchronous
        }
        // Version 1 has only the asynchronous form.
        _ => AllocationMode::Asynchronous,
    }
}
