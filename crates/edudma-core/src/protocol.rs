//! Typed tokens over [`DmaOps`] that let the packet-based DMA steps happen
//! only in their documented order — the ten version-3 steps, or the
//! version-1 sequence ([`Routines`] says which routines the tokens call;
//! the order is the same).
//!
//! Each token owns the adapter while it is outstanding, so the state of the
//! adapter is always exactly one token:
//!
//! ```text
//! Adapter ──allocate──▶ Channel ──map──▶ Mapping ──flush──▶ Channel ──free──▶ Adapter ──put──▶ (gone)
//!    │                     ▲
//!    └──allocate──▶ PendingChannel ──granted──┘
//!                       └──cancel──▶ Adapter (TRUE) | GrantAwaited (FALSE) ──granted──▶ Channel
//! ```
//!
//! What follows from the types, checked by the compiler:
//! - a [`Mapping`] can only be left by [`Mapping::flush`], which uses the very
//!   offset (`CurrentVa`), length, MDL and direction of its map
//!   (`FlushAdapterBuffers[Ex]` after EVERY `MapTransfer[Ex]`, before the next
//!   map and before the free);
//! - a [`Channel`] is freed once, the way its grant was made:
//!   `FreeAdapterChannel` after a version-3 `KeepObject` grant,
//!   `FreeMapRegisters` with the grant's own base and count after a
//!   version-1 `DeallocateObjectKeepRegisters` grant;
//! - there is no `map` on a [`Mapping`], so a range cannot be mapped twice;
//! - [`Adapter::put`] needs the [`Adapter`], which does not exist while a
//!   channel is requested, granted or mapped; it consumes it, so it happens once;
//! - one adapter has at most one channel request outstanding.
//!
//! ```compile_fail
//! # use edudma_core::protocol::*;
//! // A mapping cannot be freed: it must be flushed first.
//! fn skip_flush<D: edudma_core::dma::DmaOps>(m: Mapping<D>) -> Adapter<D> {
//!     m.free()
//! }
//! ```
//!
//! ```compile_fail
//! # use edudma_core::protocol::*;
//! // The adapter cannot be put while a channel is held: the channel owns it.
//! fn put_with_channel<D: edudma_core::dma::DmaOps>(c: Channel<D>) {
//!     c.put();
//! }
//! ```
//!
//! ```compile_fail
//! # use edudma_core::protocol::*;
//! // A flush takes the map's own CurrentVa and length: no other can be given.
//! fn flush_elsewhere<D: edudma_core::dma::DmaOps>(m: Mapping<D>) {
//!     let _ = m.flush(0, 100);
//! }
//! ```
//!
//! ```compile_fail
//! # use edudma_core::protocol::*;
//! // A scatter/gather list is put once, in its own direction.
//! fn put_twice<D: edudma_core::dma::DmaOps>(l: ListGrant<D>) {
//!     let _a = l.put();
//!     let _b = l.put();
//! }
//! ```
//!
//! ```compile_fail
//! # use edudma_core::protocol::*;
//! fn put_the_other_way<D: edudma_core::dma::DmaOps>(l: ListGrant<D>) {
//!     let _ = l.put(false);
//! }
//! ```
//!
//! ```compile_fail
//! # use edudma_core::protocol::*;
//! // A quiet adapter is released once: FreeCommonBuffer and the put happen once.
//! fn release_twice<D: edudma_core::dma::DmaOps>(q: QuietAdapter<D>) {
//!     q.release();
//!     q.release();
//! }
//! ```
//!
//! ```compile_fail
//! # use edudma_core::protocol::*;
//! // The free takes no arguments: they are the allocation's own.
//! fn free_with_other_length<D: edudma_core::dma::DmaOps>(q: QuietAdapter<D>) {
//!     q.release(2048);
//! }
//! ```
//!
//! ```compile_fail
//! # use edudma_core::protocol::*;
//! // A token is used once: no double free.
//! fn free_twice<D: edudma_core::dma::DmaOps>(c: Channel<D>) {
//!     let _a = c.free();
//!     let _b = c.free();
//! }
//! ```

use crate::dma::{
    AllocateOutcome, AllocationMode, DmaOps, ListBuffer, MdlSpot, PAGE_SIZE, SgList, span_pages,
};
use crate::status::NtStatus;

/// Which DMA routines the tokens of an adapter call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Routines {
    /// `GetDmaTransferInfo`, `InitializeDmaTransferContext`,
    /// `AllocateAdapterChannelEx`, `CancelAdapterChannel`, `MapTransferEx`,
    /// `FlushAdapterBuffersEx`, `FreeAdapterChannel`.
    Version3,
    /// `KeFlushIoBuffers`, `AllocateAdapterChannel`, `MapTransfer`,
    /// `FlushAdapterBuffers`, `FreeMapRegisters`: no transfer context, no
    /// synchronous allocation, no cancel of a queued request.
    Version1,
}

/// The adapter with nothing outstanding: steps 2, 3 and 10 start here.
#[derive(Debug)]
pub struct Adapter<D: DmaOps> {
    ops: D,
    routines: Routines,
}

impl<D: DmaOps> Adapter<D> {
    /// Bus Master Enable on, at start ([`DmaOps::enable_bus_master`]).
    pub fn enable_bus_master(&mut self) -> bool {
        self.ops.enable_bus_master()
    }
}

/// Result of [`Adapter::allocate_channel`].
#[derive(Debug)]
pub enum Allocation<D: DmaOps> {
    /// Step 3 granted the channel now.
    Granted(Channel<D>),
    /// Step 3 queued the request; the grant arrives as an event.
    Queued(PendingChannel<D>),
    /// The call failed; the adapter is unchanged.
    Failed(Adapter<D>, NtStatus),
}

/// A channel request that was queued and may still be cancelled (step 4).
#[derive(Debug)]
pub struct PendingChannel<D: DmaOps> {
    adapter: Adapter<D>,
    map_registers: u32,
}

/// `CancelAdapterChannel` returned FALSE: the execution routine runs or ran,
/// so its grant must be awaited and then released.
#[derive(Debug)]
pub struct GrantAwaited<D: DmaOps> {
    pending: PendingChannel<D>,
}

/// A granted channel with its map registers, nothing mapped.
#[derive(Debug)]
pub struct Channel<D: DmaOps> {
    adapter: Adapter<D>,
    base: D::MapRegisterBase,
    map_registers: u32,
}

/// A range mapped by `MapTransferEx` (step 5) that must be flushed (step 8).
#[derive(Debug)]
#[must_use = "a mapped range must be flushed with Mapping::flush"]
pub struct Mapping<D: DmaOps> {
    channel: Channel<D>,
    mdl: D::Mdl,
    offset: u64,
    length: u32,
    write_to_device: bool,
}

impl<D: DmaOps> Adapter<D> {
    /// Take ownership of the operations of an adapter just obtained from
    /// `IoGetDmaAdapter` (step 1), used through `routines`.
    pub fn new(ops: D, routines: Routines) -> Self {
        Self { ops, routines }
    }

    /// The routines this adapter's tokens call.
    pub fn routines(&self) -> Routines {
        self.routines
    }

    /// `GetDmaAlignment`.
    pub fn alignment(&mut self) -> u32 {
        self.ops.get_dma_alignment()
    }

    /// Step 2, before a channel is asked for: the map registers the
    /// transfer needs. Version 3: `GetDmaTransferInfo`, then
    /// `InitializeDmaTransferContext`. Version 1: `KeFlushIoBuffers`, then
    /// `ADDRESS_AND_SIZE_TO_SPAN_PAGES` of the buffer's `CurrentVa`.
    pub fn prepare_transfer(
        &mut self,
        mdl: D::Mdl,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<u32, NtStatus> {
        match self.routines {
            Routines::Version3 => {
                let info = self
                    .ops
                    .get_dma_transfer_info(mdl, offset, length, write_to_device)?;
                self.ops.initialize_dma_transfer_context()?;
                Ok(info.map_register_count)
            }
            Routines::Version1 => {
                self.ops.flush_io_buffers(mdl, !write_to_device);
                let spot = self
                    .ops
                    .locate(mdl, offset)
                    .ok_or(NtStatus::INVALID_PARAMETER)?;
                Ok(span_pages(spot.page_offset, length))
            }
        }
    }

    /// `InitializeDmaTransferContext` again: an allocating call consumes the
    /// context even when it fails, so a retry starts from a fresh one.
    /// Version 1 has no context.
    pub fn reinitialize_context(&mut self) -> Result<(), NtStatus> {
        match self.routines {
            Routines::Version3 => self.ops.initialize_dma_transfer_context(),
            Routines::Version1 => Ok(()),
        }
    }

    /// Step 3: `AllocateAdapterChannelEx` (in `mode`) or, on version 1,
    /// `AllocateAdapterChannel` for `map_registers` map registers.
    pub fn allocate_channel(mut self, map_registers: u32, mode: AllocationMode) -> Allocation<D> {
        let outcome = match self.routines {
            Routines::Version3 => self.ops.allocate_adapter_channel_ex(map_registers, mode),
            Routines::Version1 => self.ops.allocate_adapter_channel(map_registers),
        };
        match outcome {
            Ok(AllocateOutcome::Granted(base)) => Allocation::Granted(Channel {
                adapter: self,
                base,
                map_registers,
            }),
            Ok(AllocateOutcome::Queued) => Allocation::Queued(PendingChannel {
                adapter: self,
                map_registers,
            }),
            Err(status) => Allocation::Failed(self, status),
        }
    }

    /// Step 10: `PutDmaAdapter`. Consumes the adapter: it cannot be used again.
    pub fn put(mut self) {
        self.ops.put_dma_adapter();
    }

    /// The part of `length` bytes at `offset` that one version-1 call may
    /// cover: inside the MDL of `offset` (one `CurrentVa` is in one MDL) and
    /// within `map_registers` pages from its page offset.
    fn one_call_length(
        &mut self,
        mdl: D::Mdl,
        offset: u64,
        length: u32,
        map_registers: u32,
    ) -> Result<u32, NtStatus> {
        let MdlSpot {
            page_offset,
            bytes_to_mdl_end,
        } = self
            .ops
            .locate(mdl, offset)
            .ok_or(NtStatus::INVALID_PARAMETER)?;
        let page_offset = page_offset % PAGE_SIZE;
        let register_bytes =
            (u64::from(map_registers.max(1)) * u64::from(PAGE_SIZE)) - u64::from(page_offset);
        Ok(u64::from(length)
            .min(u64::from(bytes_to_mdl_end))
            .min(register_bytes) as u32)
    }

    /// A scatter/gather list for the part of `length` bytes at `offset` that
    /// `map_registers` map registers cover (the rest is a later list):
    /// `CalculateScatterGatherList`, then `BuildScatterGatherList` into the
    /// driver's buffer when the list fits it, else `GetScatterGatherList`.
    pub fn request_list(
        mut self,
        mdl: D::Mdl,
        offset: u64,
        length: u32,
        write_to_device: bool,
        map_registers: u32,
    ) -> ListAllocation<D> {
        let range = match self.one_call_length(mdl, offset, length, map_registers) {
            Ok(length) if length > 0 => ListRange {
                length,
                write_to_device,
            },
            Ok(_) => return ListAllocation::Failed(self, NtStatus::INVALID_PARAMETER),
            Err(status) => return ListAllocation::Failed(self, status),
        };
        let buffer = match self
            .ops
            .calculate_scatter_gather_list(mdl, offset, range.length)
        {
            Ok(bytes) if bytes <= self.ops.scatter_gather_buffer_bytes() => ListBuffer::Driver,
            Ok(_) => ListBuffer::Hal,
            Err(status) => return ListAllocation::Failed(self, status),
        };
        match self
            .ops
            .get_scatter_gather_list(buffer, mdl, offset, range.length, write_to_device)
        {
            Ok(AllocateOutcome::Granted(list)) => ListAllocation::Granted(
                ListGrant {
                    adapter: self,
                    list,
                    range,
                },
                buffer,
            ),
            Ok(AllocateOutcome::Queued) => ListAllocation::Queued(
                PendingList {
                    adapter: self,
                    range,
                },
                buffer,
            ),
            Err(status) => ListAllocation::Failed(self, status),
        }
    }
}

/// The common buffer the glue allocated at start (`AllocateCommonBuffer`):
/// its logical address and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommonBuffer {
    /// `LogicalAddress`: the bus address the device is given.
    pub logical: u64,
    /// `Length`.
    pub length: u32,
}

/// A request using the common buffer: the device works on it until
/// [`CommonUse::end`] (which copies a read out) or [`CommonUse::abandon`].
#[derive(Debug)]
#[must_use = "a request using the common buffer ends with CommonUse::end or abandon"]
pub struct CommonUse<D: DmaOps> {
    adapter: Adapter<D>,
    mdl: D::Mdl,
    offset: u64,
    length: u32,
    write_to_device: bool,
}

/// The adapter with its common buffer, nothing outstanding, stopping: the
/// glue releases it at PASSIVE_LEVEL — `FreeCommonBuffer` (0xE6/0x07 if
/// the adapter went first), then `PutDmaAdapter`.
#[derive(Debug)]
#[must_use = "a quiet adapter is released with QuietAdapter::release"]
pub struct QuietAdapter<D: DmaOps> {
    adapter: Adapter<D>,
}

impl<D: DmaOps> Adapter<D> {
    /// Put `length` bytes at `offset` of `mdl` through the common buffer: a
    /// write is copied in now, a read out at [`CommonUse::end`].
    pub fn use_common_buffer(
        mut self,
        mdl: D::Mdl,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<CommonUse<D>, (Adapter<D>, NtStatus)> {
        if write_to_device && let Err(status) = self.ops.copy_to_common_buffer(mdl, offset, length)
        {
            return Err((self, status));
        }
        Ok(CommonUse {
            adapter: self,
            mdl,
            offset,
            length,
            write_to_device,
        })
    }

    /// Stopping with a common buffer: the adapter waits for the glue.
    pub fn quiet(mut self) -> QuietAdapter<D> {
        self.ops.adapter_quiet();
        QuietAdapter { adapter: self }
    }
}

impl<D: DmaOps> CommonUse<D> {
    /// Bytes the request moves.
    pub fn length(&self) -> u32 {
        self.length
    }

    /// Off the bus before the request ends while the device may still own
    /// a command.
    pub fn cut_off_device(&mut self) {
        self.adapter.ops.disable_bus_master();
    }

    /// The device is still a bus master ([`DmaOps::bus_master_enabled`]).
    pub fn device_on_bus(&mut self) -> bool {
        self.adapter.ops.bus_master_enabled()
    }

    /// The device finished: a read is copied out of the common buffer.
    pub fn end(mut self) -> (Adapter<D>, Result<(), NtStatus>) {
        let copied = if self.write_to_device {
            Ok(())
        } else {
            self.adapter
                .ops
                .copy_from_common_buffer(self.mdl, self.offset, self.length)
        };
        (self.adapter, copied)
    }

    /// The request ends without its bytes (cancelled, failed).
    pub fn abandon(self) -> Adapter<D> {
        self.adapter
    }
}

impl<D: DmaOps> QuietAdapter<D> {
    /// PASSIVE_LEVEL: `FreeCommonBuffer` with its allocation's arguments,
    /// then `PutDmaAdapter`. Consumes both: neither happens twice.
    pub fn release(mut self) {
        self.adapter.ops.free_common_buffer();
        self.adapter.put();
    }
}

/// What one scatter/gather list covers: its bytes and direction.
#[derive(Clone, Copy, Debug)]
struct ListRange {
    length: u32,
    write_to_device: bool,
}

/// Result of [`Adapter::request_list`], with the routine that made it.
#[derive(Debug)]
pub enum ListAllocation<D: DmaOps> {
    /// The list routine ran inside the call.
    Granted(ListGrant<D>, ListBuffer),
    /// The list routine runs later; its list arrives as an event.
    Queued(PendingList<D>, ListBuffer),
    /// The call failed; the adapter is unchanged.
    Failed(Adapter<D>, NtStatus),
}

/// A list asked for whose routine has not run. It cannot be cancelled.
#[derive(Debug)]
pub struct PendingList<D: DmaOps> {
    adapter: Adapter<D>,
    range: ListRange,
}

/// A scatter/gather list the routine was given, that must be put
/// ([`ListGrant::put`], with its own direction, once).
#[derive(Debug)]
#[must_use = "a scatter/gather list must be put with ListGrant::put"]
pub struct ListGrant<D: DmaOps> {
    adapter: Adapter<D>,
    list: D::MapRegisterBase,
    range: ListRange,
}

impl<D: DmaOps> PendingList<D> {
    /// The list routine ran with `list`.
    pub fn granted(self, list: D::MapRegisterBase) -> ListGrant<D> {
        ListGrant {
            adapter: self.adapter,
            list,
            range: self.range,
        }
    }
}

impl<D: DmaOps> ListGrant<D> {
    /// Bytes the list covers.
    pub fn length(&self) -> u32 {
        self.range.length
    }

    /// Its elements, into `sg` (cleared first); false when they do not fit.
    pub fn elements(&mut self, sg: &mut SgList) -> bool {
        sg.clear();
        self.adapter.ops.scatter_gather_elements(self.list, sg)
    }

    /// Cut the device off the bus before the list is put while it may still
    /// own a command ([`DmaOps::disable_bus_master`]).
    pub fn cut_off_device(&mut self) {
        self.adapter.ops.disable_bus_master();
    }

    /// The device is still a bus master ([`DmaOps::bus_master_enabled`]).
    pub fn device_on_bus(&mut self) -> bool {
        self.adapter.ops.bus_master_enabled()
    }

    /// `PutScatterGatherList` with the direction of the request: the adapter
    /// is free again.
    pub fn put(mut self) -> Adapter<D> {
        self.adapter
            .ops
            .put_scatter_gather_list(self.list, self.range.write_to_device);
        self.adapter
    }
}

impl<D: DmaOps> PendingChannel<D> {
    /// The execution routine ran with this map-register base.
    pub fn granted(self, base: D::MapRegisterBase) -> Channel<D> {
        Channel {
            adapter: self.adapter,
            base,
            map_registers: self.map_registers,
        }
    }

    /// The routines of the adapter: version 1 has no `CancelAdapterChannel`.
    pub fn routines(&self) -> Routines {
        self.adapter.routines
    }

    /// Step 4: `CancelAdapterChannel`. `Ok` when the request was cancelled
    /// (TRUE); `Err` when it was already granted (FALSE). A version-1
    /// request cannot be cancelled: its grant is always awaited.
    pub fn cancel(mut self) -> Result<Adapter<D>, GrantAwaited<D>> {
        if self.adapter.routines == Routines::Version3 && self.adapter.ops.cancel_adapter_channel()
        {
            Ok(self.adapter)
        } else {
            Err(GrantAwaited { pending: self })
        }
    }
}

impl<D: DmaOps> GrantAwaited<D> {
    /// The grant arrived after the failed cancel: the channel must now be freed.
    pub fn granted(self, base: D::MapRegisterBase) -> Channel<D> {
        self.pending.granted(base)
    }
}

impl<D: DmaOps> Channel<D> {
    /// Number of map registers this channel holds.
    pub fn map_registers(&self) -> u32 {
        self.map_registers
    }

    /// The routines of the adapter.
    pub fn routines(&self) -> Routines {
        self.adapter.routines
    }

    /// Step 5: `MapTransferEx`, or `MapTransfer` for the part of the range
    /// that one call may map. On success the mapped length may be shorter
    /// than asked (a partial map, or a version-1 split); on failure nothing
    /// is mapped and the channel comes back.
    pub fn map(
        mut self,
        mdl: D::Mdl,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<Mapping<D>, (Channel<D>, NtStatus)> {
        sg.clear();
        let mapped = match self.routines() {
            Routines::Version3 => self.adapter.ops.map_transfer_ex(
                mdl,
                self.base,
                offset,
                length,
                write_to_device,
                sg,
            ),
            Routines::Version1 => self.map_version1(mdl, offset, length, write_to_device, sg),
        };
        match mapped {
            // Never more than asked; a zero-length "success" maps nothing.
            Ok(mapped) if mapped > 0 && mapped <= length => Ok(Mapping {
                channel: self,
                mdl,
                offset,
                length: mapped,
                write_to_device,
            }),
            Ok(_) => {
                sg.clear();
                Err((self, NtStatus::DEVICE_HARDWARE_ERROR))
            }
            Err(status) => {
                sg.clear();
                Err((self, status))
            }
        }
    }

    /// `MapTransfer` of what one call may map: within the MDL of `offset`
    /// (one `CurrentVa` is in one MDL) and within the map registers held
    /// (a bus master without scatter/gather gets all of `Length` or a
    /// verifier violation, so the split is the driver's).
    fn map_version1(
        &mut self,
        mdl: D::Mdl,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        let length = self
            .adapter
            .one_call_length(mdl, offset, length, self.map_registers)?;
        let element =
            self.adapter
                .ops
                .map_transfer(mdl, self.base, offset, length, write_to_device)?;
        if element.length > length || !sg.push(element) {
            return Ok(0);
        }
        Ok(element.length)
    }

    /// Step 9: the channel ends the way it was granted — `FreeAdapterChannel`
    /// (version 3, `KeepObject`) or `FreeMapRegisters` with the grant's base
    /// and count (version 1, `DeallocateObjectKeepRegisters`). The adapter
    /// is free again.
    pub fn free(mut self) -> Adapter<D> {
        match self.routines() {
            Routines::Version3 => self.adapter.ops.free_adapter_channel(),
            Routines::Version1 => self
                .adapter
                .ops
                .free_map_registers(self.base, self.map_registers),
        }
        self.adapter
    }
}

impl<D: DmaOps> Mapping<D> {
    /// Offset of the mapped range in the MDL chain.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes mapped.
    pub fn length(&self) -> u32 {
        self.length
    }

    /// Cut the device off the bus before its mapping ends while it may still
    /// own a command ([`DmaOps::disable_bus_master`]).
    pub fn cut_off_device(&mut self) {
        self.channel.adapter.ops.disable_bus_master();
    }

    /// The device is still a bus master ([`DmaOps::bus_master_enabled`]).
    pub fn device_on_bus(&mut self) -> bool {
        self.channel.adapter.ops.bus_master_enabled()
    }

    /// Step 8: `FlushAdapterBuffersEx` (or `FlushAdapterBuffers`) with the
    /// parameters of the map. The channel comes back either way: a failed
    /// flush still ends the mapping.
    pub fn flush(mut self) -> (Channel<D>, Result<(), NtStatus>) {
        let ops = &mut self.channel.adapter.ops;
        let result = match self.channel.adapter.routines {
            Routines::Version3 => ops.flush_adapter_buffers_ex(
                self.mdl,
                self.channel.base,
                self.offset,
                self.length,
                self.write_to_device,
            ),
            Routines::Version1 => ops.flush_adapter_buffers(
                self.mdl,
                self.channel.base,
                self.offset,
                self.length,
                self.write_to_device,
            ),
        };
        (self.channel, result)
    }
}
