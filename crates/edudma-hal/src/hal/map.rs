//! Mapping and flushing: `GetDmaTransferInfo`, `InitializeDmaTransferContext`,
//! `MapTransferEx` and `MapTransfer`, `FlushAdapterBuffersEx` and
//! `FlushAdapterBuffers`, with the bounce pages and their guard bytes.

use edudma_core::NtStatus;
use edudma_core::dma::{DmaTransferInfo, SgElement, SgList};

use super::{
    AdapterId, Context, GUARD_BYTE, Hal, HalCtx, MapRange, MapRegisterBase, Mapping,
    SG_ELEMENT_BYTES, SG_HEADER_BYTES, SG_PRIVATE_BYTES, dma_fail, sg_list_size,
};
use crate::irql::Irql;
use crate::mdl::{MdlId, Segment};
use crate::memory::PAGE_SIZE;
use crate::verifier::Violation;

impl Hal {
    /// `GetDmaTransferInfo` (`DMA_TRANSFER_INFO_VERSION1`).
    pub fn get_dma_transfer_info(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        mdl: MdlId,
        offset: u64,
        length: u32,
        _write_only: bool,
    ) -> Result<DmaTransferInfo, NtStatus> {
        if !self.live(ctx, id, "GetDmaTransferInfo", Irql::Dispatch) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let segments = self.resolve(ctx, mdl, offset, u64::from(length))?;
        let pages = segments.len() as u32;
        self.stats.transfer_infos += 1;
        Ok(DmaTransferInfo {
            map_register_count: pages,
            scatter_gather_element_count: pages,
            scatter_gather_list_size: sg_list_size(pages),
        })
    }

    /// `InitializeDmaTransferContext`.
    pub fn initialize_dma_transfer_context(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
    ) -> Result<(), NtStatus> {
        if !self.live(ctx, id, "InitializeDmaTransferContext", Irql::Dispatch) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let Some(a) = self.adapter(id) else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        if a.context == Context::InUse {
            return dma_fail(
                ctx,
                Violation::TransferContextNotInitialized,
                NtStatus::INVALID_PARAMETER,
            );
        }
        a.context = Context::Initialized;
        Ok(())
    }

    /// `MapTransferEx` for a bus master. Fills `sg`, returns bytes mapped.
    #[allow(clippy::too_many_arguments)]
    pub fn map_transfer_ex(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        mdl: MdlId,
        base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg_buffer_bytes: u32,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        if !self.live(ctx, id, "MapTransferEx", Irql::Dispatch) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let Some((count, first)) = self.held(id, base) else {
            return dma_fail(
                ctx,
                Violation::InvalidMapRegisterBase,
                NtStatus::INVALID_PARAMETER,
            );
        };
        let mut segments = self.resolve(ctx, mdl, offset, u64::from(length))?;
        if self.config.map_failure_percent > 0 && ctx.rng.chance(self.config.map_failure_percent) {
            self.stats.failed_maps += 1;
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        if segments.len() > 1
            && self.config.short_map_percent > 0
            && ctx.rng.chance(self.config.short_map_percent)
        {
            let keep = ctx.rng.range(1, segments.len() as u64 - 1) as usize;
            segments.truncate(keep);
        }
        let range = MapRange {
            mdl,
            offset,
            length,
            write_to_device,
        };
        self.map_range(
            ctx,
            id,
            range,
            (count, first),
            segments,
            sg_buffer_bytes,
            sg,
        )
    }

    /// `MapTransfer` (`IRQL <= DISPATCH_LEVEL`) of `length` bytes at
    /// `offset` in the one MDL `mdl` (its `CurrentVa` minus
    /// `MmGetMdlVirtualAddress`): one logically contiguous range, the whole
    /// `Length` (a bus master without scatter/gather) or, with
    /// scatter/gather, one physically contiguous run of it.
    #[allow(clippy::too_many_arguments)]
    pub fn map_transfer(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        mdl: MdlId,
        base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<SgElement, NtStatus> {
        if !self.live(ctx, id, "MapTransfer", Irql::Dispatch) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let Some((count, first)) = self.held(id, base) else {
            return dma_fail(
                ctx,
                Violation::InvalidMapRegisterBase,
                NtStatus::INVALID_PARAMETER,
            );
        };
        // One CurrentVa is inside one MDL: the range may not run past it.
        let in_mdl = ctx.mdls.get(mdl).map_or(0, |m| u64::from(m.byte_count));
        if offset + u64::from(length) > in_mdl {
            return dma_fail(
                ctx,
                Violation::AddressNotInMdl {
                    offset,
                    length: u64::from(length),
                    chain_length: in_mdl,
                },
                NtStatus::INVALID_PARAMETER,
            );
        }
        let segments = self.resolve(ctx, mdl, offset, u64::from(length))?;
        let needed = segments.len() as u32;
        if needed > count.max(1) {
            return dma_fail(
                ctx,
                Violation::MapBeyondMapRegisters {
                    needed,
                    held: count,
                },
                NtStatus::INSUFFICIENT_RESOURCES,
            );
        }
        let range = MapRange {
            mdl,
            offset,
            length,
            write_to_device,
        };
        let mut sg = SgList::new();
        let bytes = sg_list_size(1);
        let mapped = self.map_range(ctx, id, range, (count, first), segments, bytes, &mut sg)?;
        let element = sg.as_slice()[0];
        debug_assert_eq!(element.length, mapped);
        Ok(element)
    }

    /// Map `range` (resolved to `segments`) through the registers
    /// `(count, first)` of a channel: the shared body of both maps.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn map_range(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        range: MapRange,
        (count, first): (u32, u32),
        segments: Vec<Segment>,
        sg_buffer_bytes: u32,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        let MapRange {
            mdl,
            offset,
            length,
            write_to_device,
        } = range;
        let needed = sg_list_size(1);
        if sg_buffer_bytes < needed {
            return dma_fail(
                ctx,
                Violation::ScatterGatherBufferTooSmall {
                    needed,
                    given: sg_buffer_bytes,
                },
                NtStatus::BUFFER_TOO_SMALL,
            );
        }
        let end = offset + u64::from(length);
        let a = &self.adapters[id.0 as usize];
        for m in &a.mappings {
            let m_end = m.offset + u64::from(m.length);
            if m.mdl == mdl && m.offset < end && offset < m_end {
                return dma_fail(
                    ctx,
                    Violation::RangeAlreadyMapped,
                    NtStatus::INVALID_PARAMETER,
                );
            }
        }
        if !a.mappings.is_empty() {
            return dma_fail(
                ctx,
                Violation::AdapterBuffersNotFlushed,
                NtStatus::INVALID_PARAMETER,
            );
        }
        let width = a.width;
        let scatter_gather = a.scatter_gather;
        let max_elements = (((sg_buffer_bytes - SG_HEADER_BYTES - SG_PRIVATE_BYTES)
            / SG_ELEMENT_BYTES) as usize)
            .min(edudma_core::dma::MAX_SG_ELEMENTS);
        let limit = if width >= 64 { u64::MAX } else { 1u64 << width };
        // Without scatter/gather the device gets one logically contiguous
        // range: the HAL builds it in its map registers, so every page goes
        // through one (MapTransfer: "Otherwise, the input and output values
        // of Length are identical").
        let double_all = self.config.double_buffer_all.unwrap_or(false) || !scatter_gather;
        sg.clear();
        let mut mapping = Mapping {
            mdl,
            offset,
            length: 0,
            write_to_device,
            elements: Vec::new(),
            bounced: Vec::new(),
            registers: Vec::new(),
        };
        let mut next_register = 0u32;
        #[allow(clippy::explicit_counter_loop)]
        for seg in segments {
            if next_register >= count.max(1) || (count == 0) {
                break;
            }
            let bounce = double_all || seg.phys + u64::from(seg.len) > limit;
            let bus = if bounce {
                self.register_pfn(first + next_register) * PAGE_SIZE + seg.phys % PAGE_SIZE
            } else {
                seg.phys
            };
            let extends = mapping
                .elements
                .last()
                .is_some_and(|e| e.address + u64::from(e.length) == bus);
            if !extends {
                if !mapping.elements.is_empty() && !scatter_gather {
                    break;
                }
                if mapping.elements.len() >= max_elements {
                    break;
                }
                mapping.elements.push(SgElement {
                    address: bus,
                    length: 0,
                });
            }
            if let Some(e) = mapping.elements.last_mut() {
                e.length += seg.len;
            }
            mapping.registers.push(next_register);
            next_register += 1;
            if bounce {
                self.stats.bounced_pages += 1;
                if write_to_device {
                    ctx.mem.copy(seg.phys, bus, seg.len as usize);
                    self.stats.bounce_bytes_in += u64::from(seg.len);
                }
                mapping.bounced.push((bus, seg));
            } else {
                self.stats.direct_pages += 1;
            }
            mapping.length += seg.len;
        }
        if count == 0 || mapping.length == 0 {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        for e in &mapping.elements {
            sg.push(*e);
        }
        self.stats.maps += 1;
        self.stats.sg_elements += mapping.elements.len() as u64;
        self.stats.max_sg_elements = self
            .stats
            .max_sg_elements
            .max(mapping.elements.len() as u64);
        if mapping.length < length {
            self.stats.partial_maps += 1;
        }
        let mapped = mapping.length;
        let a = &mut self.adapters[id.0 as usize];
        for r in &mapping.registers {
            if let Some(u) = a.used.get_mut(*r as usize) {
                *u = true;
            }
        }
        a.mappings.push(mapping);
        Ok(mapped)
    }

    /// `FlushAdapterBuffersEx`: ends the mapping with these exact parameters.
    #[allow(clippy::too_many_arguments)]
    pub fn flush_adapter_buffers_ex(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        mdl: MdlId,
        base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        let range = MapRange {
            mdl,
            offset,
            length,
            write_to_device,
        };
        self.flush_range(ctx, id, "FlushAdapterBuffersEx", base, range)
    }

    /// `FlushAdapterBuffers` (`IRQL <= DISPATCH_LEVEL`): ends the
    /// `MapTransfer` with this MDL, `CurrentVa` (`offset` in the MDL),
    /// length and direction. More bytes than that map covered is 0xE6/0x00.
    #[allow(clippy::too_many_arguments)]
    pub fn flush_adapter_buffers(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        mdl: MdlId,
        base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        if !self.live(ctx, id, "FlushAdapterBuffers", Irql::Dispatch) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let overrun = self.adapters.get(id.0 as usize).and_then(|a| {
            a.mappings
                .iter()
                .find(|m| m.mdl == mdl && m.offset == offset && length > m.length)
                .map(|m| m.length)
        });
        if let Some(mapped) = overrun {
            return dma_fail(
                ctx,
                Violation::FlushedPastMapping {
                    mapped,
                    flushed: length,
                },
                NtStatus::INVALID_PARAMETER,
            );
        }
        let range = MapRange {
            mdl,
            offset,
            length,
            write_to_device,
        };
        self.flush_range(ctx, id, "FlushAdapterBuffers", base, range)
    }

    /// End the mapping `range` of the channel `base`: the shared body of
    /// both flushes.
    pub(super) fn flush_range(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        routine: &'static str,
        base: MapRegisterBase,
        range: MapRange,
    ) -> Result<(), NtStatus> {
        let MapRange {
            mdl,
            offset,
            length,
            write_to_device,
        } = range;
        if !self.live(ctx, id, routine, Irql::Dispatch) {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let Some((_count, first)) = self.held(id, base) else {
            return dma_fail(
                ctx,
                Violation::InvalidMapRegisterBase,
                NtStatus::INVALID_PARAMETER,
            );
        };
        if length == 0 {
            return dma_fail(
                ctx,
                Violation::ZeroLengthMapping,
                NtStatus::INVALID_PARAMETER,
            );
        }
        let a = &self.adapters[id.0 as usize];
        let Some(index) = a.mappings.iter().position(|m| {
            m.mdl == mdl
                && m.offset == offset
                && m.length == length
                && m.write_to_device == write_to_device
        }) else {
            return dma_fail(
                ctx,
                Violation::FlushedUnmappedBuffer,
                NtStatus::INVALID_PARAMETER,
            );
        };
        if let Some((addr, cnt, _)) = ctx.device_busy {
            let touches = a.mappings[index].elements.iter().any(|e| {
                addr < e.address + u64::from(e.length) && e.address < addr.saturating_add(cnt)
            });
            if touches {
                return dma_fail(
                    ctx,
                    Violation::FlushedChannelNotCompleted,
                    NtStatus::INVALID_PARAMETER,
                );
            }
        }
        let mapping = self.adapters[id.0 as usize].mappings.remove(index);
        // Guard bytes: everything of the used register pages outside the data,
        // scanned by range (before and after the data), not byte by byte.
        for r in &mapping.registers {
            let page = self.register_pfn(first + r) * PAGE_SIZE;
            let (start, len) = mapping
                .bounced
                .iter()
                .find(|(bus, _)| bus / PAGE_SIZE == page / PAGE_SIZE)
                .map_or((0, 0), |(bus, seg)| (bus % PAGE_SIZE, u64::from(seg.len)));
            let end = (start + len).min(PAGE_SIZE);
            let overwritten = ctx
                .mem
                .find_other_than(page, start as usize, GUARD_BYTE)
                .or_else(|| {
                    ctx.mem
                        .find_other_than(page + end, (PAGE_SIZE - end) as usize, GUARD_BYTE)
                });
            if let Some(bus_address) = overwritten {
                return dma_fail(
                    ctx,
                    Violation::GuardBytesOverwritten { bus_address },
                    NtStatus::DEVICE_HARDWARE_ERROR,
                );
            }
        }
        for (bus, seg) in &mapping.bounced {
            if !write_to_device {
                ctx.mem.copy(*bus, seg.phys, seg.len as usize);
                self.stats.bounce_bytes_out += u64::from(seg.len);
            }
            ctx.mem.fill(*bus, seg.len as usize, GUARD_BYTE);
        }
        let a = &mut self.adapters[id.0 as usize];
        for r in &mapping.registers {
            if let Some(u) = a.used.get_mut(*r as usize) {
                *u = false;
            }
        }
        self.stats.flushes += 1;
        Ok(())
    }

    pub(super) fn check_guards(&self, ctx: &mut HalCtx<'_>, first: u32, count: u32) -> bool {
        let pages = (first..first + count.max(1))
            .map(|r| self.register_pfn(r))
            .chain(self.guard_frames.iter().copied());
        for pfn in pages {
            let found = ctx
                .mem
                .find_other_than(pfn * PAGE_SIZE, PAGE_SIZE as usize, GUARD_BYTE);
            if let Some(bus_address) = found {
                if ctx.verifier.dma_checks {
                    ctx.verifier
                        .report(Violation::GuardBytesOverwritten { bus_address });
                }
                return false;
            }
        }
        true
    }
}
