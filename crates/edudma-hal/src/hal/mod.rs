//! The HAL's DMA routines, as a bus-master driver sees them: adapters made
//! from a `DEVICE_DESCRIPTION` (version 3, or 1 and 2 without the version-3
//! members), channels granted synchronously or through a queue, map
//! registers backed by bounce pages below the device's address width,
//! scatter/gather lists, partial maps, flushes that copy bounce pages back —
//! with Driver Verifier's DMA checks on every call.
//!
//! Here: the types, the adapters and the checks every routine shares;
//! `channel` holds the channel and map-register routines, `map` the
//! maps and flushes, `lists` the scatter/gather-list routines.
//!
//! The model is plain data. Calls take a [`HalCtx`] with the memory, the
//! MDLs, the verifier and the caller's IRQL; what must happen later (an
//! execution routine to run) is returned for the machine to schedule.

use edudma_core::NtStatus;
use edudma_core::dma::SgElement;

use crate::irql::Irql;
use crate::mdl::{ChainError, MdlId, MdlTable, Segment};
use crate::memory::{PAGE_SIZE, PhysMemory};
use crate::rng::SimRng;
use crate::verifier::{Verifier, Violation};

mod channel;
mod common;
mod lists;
mod map;

/// `DEVICE_DESCRIPTION_VERSION`.
pub const DEVICE_DESCRIPTION_VERSION: u32 = 0;
/// `DEVICE_DESCRIPTION_VERSION1`.
pub const DEVICE_DESCRIPTION_VERSION1: u32 = 1;
/// `DEVICE_DESCRIPTION_VERSION2`.
pub const DEVICE_DESCRIPTION_VERSION2: u32 = 2;
/// `DEVICE_DESCRIPTION_VERSION3`.
pub const DEVICE_DESCRIPTION_VERSION3: u32 = 3;
/// Bytes of a scatter/gather list header.
pub const SG_HEADER_BYTES: u32 = 16;
/// Bytes of one scatter/gather element.
pub const SG_ELEMENT_BYTES: u32 = 16;
/// HAL-private bytes a scatter/gather buffer must also hold.
pub const SG_PRIVATE_BYTES: u32 = 64;
/// The byte pattern written around bounce data; any change is 0xE6/0x0F.
pub const GUARD_BYTE: u8 = 0xA5;

/// `ScatterGatherListSize` for `elements` elements.
pub const fn sg_list_size(elements: u32) -> u32 {
    SG_HEADER_BYTES + SG_PRIVATE_BYTES + SG_ELEMENT_BYTES * elements
}

/// `INTERFACE_TYPE`, only what matters here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InterfaceType {
    /// `PCIBus`.
    #[default]
    Pci,
    /// `Isa`.
    Isa,
}

/// `DEVICE_DESCRIPTION`, the fields the HAL looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceDescription {
    /// `Version`: 0..=3.
    pub version: u32,
    /// `Master`: a bus master.
    pub master: bool,
    /// `ScatterGather`.
    pub scatter_gather: bool,
    /// `Dma32BitAddresses` (ignored by version 3).
    pub dma32_bit_addresses: bool,
    /// `Dma64BitAddresses` (ignored by version 3).
    pub dma64_bit_addresses: bool,
    /// `InterfaceType`.
    pub interface_type: InterfaceType,
    /// `MaximumLength`: sizes the map-register grant.
    pub maximum_length: u32,
    /// `DmaAddressWidth` (version 3, bus master): 1..=64.
    pub dma_address_width: u32,
}

/// Handle of an adapter (`PDMA_ADAPTER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdapterId(pub u32);

/// Opaque `MapRegisterBase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapRegisterBase(pub u64);

/// `IO_ALLOCATION_ACTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoAllocationAction {
    /// `KeepObject`: keep channel and registers until `FreeAdapterChannel`.
    KeepObject,
    /// `DeallocateObject`: free both now.
    DeallocateObject,
    /// `DeallocateObjectKeepRegisters`: free the channel, keep the registers
    /// until `FreeMapRegisters`.
    DeallocateObjectKeepRegisters,
}

/// Knobs of the HAL model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HalConfig {
    /// Map registers `IoGetDmaAdapter` grants at most (the budget; 1 forces
    /// a split per page).
    pub map_registers: u32,
    /// Size of the bounce pool (the HAL's absolute maximum per request).
    pub pool_registers: u32,
    /// Bounce every page, as Driver Verifier's double buffering does
    /// (`None`: whenever DMA verification is on, as Driver Verifier does).
    pub double_buffer_all: Option<bool>,
    /// Percent of free-resource asynchronous allocations whose execution
    /// routine runs inside `AllocateAdapterChannelEx`.
    pub inline_grant_percent: u32,
    /// Percent of allocations that find the map registers busy with another
    /// device (sync: `STATUS_INSUFFICIENT_RESOURCES`; async: queued).
    pub contention_percent: u32,
    /// The platform gives this adapter scatter/gather (false: the HAL treats
    /// the description's `ScatterGather` as FALSE and maps one contiguous
    /// run per `MapTransferEx`).
    pub scatter_gather: bool,
    /// Bytes of scatter/gather buffer the driver's DmaOps gives `MapTransferEx`
    /// (`None`: enough for [`edudma_core::dma::MAX_SG_ELEMENTS`] elements).
    pub sg_buffer_bytes: Option<u32>,
    /// How late a committed grant's execution routine runs after the
    /// allocating call returned (`None`: 1–60 µs; Windows gives no bound).
    pub grant_latency_ns: Option<u64>,
    /// What `GetDmaAlignment` returns: the DMA system's alignment in bytes
    /// (1: none).
    pub dma_alignment: u32,
    /// The platform has DMA version 3 (false: `IoGetDmaAdapter` returns
    /// NULL for a `DEVICE_DESCRIPTION_VERSION3`, as before Windows 8).
    pub dma_v3: bool,
    /// Percent of `MapTransferEx` calls that map fewer bytes than they could
    /// (Learn: on output `Length` is "the number of bytes mapped"; a driver
    /// must take what it is given and map the rest later).
    pub short_map_percent: u32,
    /// Percent of `MapTransferEx` calls that fail with
    /// `STATUS_INSUFFICIENT_RESOURCES` and map nothing (fault injection).
    pub map_failure_percent: u32,
}

impl Default for HalConfig {
    fn default() -> Self {
        Self {
            map_registers: 16,
            pool_registers: 64,
            double_buffer_all: None,
            inline_grant_percent: 50,
            contention_percent: 10,
            scatter_gather: true,
            sg_buffer_bytes: None,
            grant_latency_ns: None,
            dma_alignment: 1,
            dma_v3: true,
            short_map_percent: 0,
            map_failure_percent: 0,
        }
    }
}

/// The pages the HAL's map registers bounce through.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BouncePool {
    /// One frame per map register, below the narrowest address width served.
    pub frames: Vec<u64>,
    /// Frames next to the pool that must keep their guard bytes.
    pub guards: Vec<u64>,
    /// Frames `AllocateCommonBuffer` hands out, one page each, below every
    /// address width served.
    pub common: Vec<u64>,
}

/// Counters of the HAL.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HalStats {
    /// Adapters created.
    pub adapters: u64,
    /// Channel grants.
    pub grants: u64,
    /// Grants whose execution routine ran inside the allocate call.
    pub inline_grants: u64,
    /// Allocations that had to wait.
    pub queued: u64,
    /// Synchronous allocations refused.
    pub sync_refusals: u64,
    /// `CancelAdapterChannel` that returned TRUE.
    pub cancels_true: u64,
    /// `CancelAdapterChannel` that returned FALSE.
    pub cancels_false: u64,
    /// Allocations cancelled by a `CancelAdapterChannel` made before them.
    pub pre_cancelled: u64,
    /// `MapTransferEx` calls that mapped something.
    pub maps: u64,
    /// Maps shorter than asked.
    pub partial_maps: u64,
    /// `MapTransferEx` calls failed by fault injection.
    pub failed_maps: u64,
    /// Pages double-buffered through map registers.
    pub bounced_pages: u64,
    /// Pages the device was given directly (not double-buffered).
    pub direct_pages: u64,
    /// `FlushAdapterBuffersEx` calls that ended a mapping.
    pub flushes: u64,
    /// `GetDmaTransferInfo` calls answered.
    pub transfer_infos: u64,
    /// Scatter/gather elements handed out by maps.
    pub sg_elements: u64,
    /// Most elements in one map's list.
    pub max_sg_elements: u64,
    /// Bytes copied into bounce pages (memory → device, at the map).
    pub bounce_bytes_in: u64,
    /// Bytes copied out of bounce pages (device → memory, at the flush).
    pub bounce_bytes_out: u64,
    /// Channels ended by `FreeAdapterChannel`.
    pub channel_frees: u64,
    /// Map registers given back by `FreeMapRegisters`.
    pub map_register_frees: u64,
    /// `KeFlushIoBuffers` calls.
    pub io_buffer_flushes: u64,
    /// Scatter/gather lists built for their routine.
    pub lists_built: u64,
    /// Scatter/gather lists put.
    pub lists_put: u64,
    /// Common buffers allocated.
    pub common_buffers: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Channel {
    Free,
    /// Queued, the execution routine has not run.
    Waiting {
        count: u32,
    },
    /// Resources committed; the execution routine is about to run.
    Granting {
        base: MapRegisterBase,
        count: u32,
        first: u32,
    },
    /// Held (KeepObject).
    Held {
        base: MapRegisterBase,
        count: u32,
        first: u32,
    },
}

/// The range one map call covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct MapRange {
    mdl: MdlId,
    offset: u64,
    length: u32,
    write_to_device: bool,
}

#[derive(Clone, Debug)]
struct Mapping {
    mdl: MdlId,
    offset: u64,
    length: u32,
    write_to_device: bool,
    elements: Vec<SgElement>,
    /// (bus address, original segment) of each bounced piece.
    bounced: Vec<(u64, Segment)>,
    /// Register pages used by this mapping.
    registers: Vec<u32>,
}

#[derive(Clone, Debug)]
struct Adapter {
    /// The `DEVICE_DESCRIPTION` version it was made from.
    version: u32,
    width: u32,
    scatter_gather: bool,
    granted: u32,
    released: bool,
    context: Context,
    channel: Channel,
    /// Registers kept after `DeallocateObjectKeepRegisters`: (base, count, first).
    registers_only: Vec<(MapRegisterBase, u32, u32)>,
    mappings: Vec<Mapping>,
    /// Registers of the current channel in use by a mapping.
    used: Vec<bool>,
    /// The scatter/gather list asked for or outstanding (one at a time in
    /// this model, as the driver uses them).
    list: Option<lists::ListState>,
    /// Common buffers allocated: (logical address, length, cache enabled).
    common: Vec<(u64, u32, bool)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Context {
    Uninitialized,
    Initialized,
    InUse,
    /// `CancelAdapterChannel` found no request pending on an initialized
    /// context: the next allocation with it is cancelled.
    Cancelled,
}

/// What the caller of the HAL brings: the machine's state it may touch.
pub struct HalCtx<'a> {
    /// Physical memory.
    pub mem: &'a mut dyn PhysMemory,
    /// MDLs.
    pub mdls: &'a MdlTable,
    /// The verifier.
    pub verifier: &'a mut Verifier,
    /// IRQL of the caller.
    pub irql: Irql,
    /// Randomness for the HAL's choices.
    pub rng: &'a mut SimRng,
    /// The device's running transfer: (bus address, count, to RAM).
    pub device_busy: Option<(u64, u64, bool)>,
}

/// What `AllocateAdapterChannelEx` led to, for the machine to act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocateResult {
    /// Run the execution routine now, before the call returns.
    RunNow(MapRegisterBase),
    /// Resources committed: the execution routine runs shortly (an event).
    Committed(MapRegisterBase),
    /// Queued behind another device: retry when the pool frees.
    Waiting,
}

/// The HAL.
#[derive(Debug)]
pub struct Hal {
    config: HalConfig,
    adapters: Vec<Adapter>,
    /// The frame of each map register's bounce page.
    pool_frames: Vec<u64>,
    /// Frames around the pool that nothing may write (checked at frees).
    guard_frames: Vec<u64>,
    pool_used: Vec<bool>,
    /// Frames for common buffers, and which are allocated.
    common_frames: Vec<u64>,
    common_used: Vec<bool>,
    next_base: u64,
    /// Another device holds the map registers (contention), until released.
    pub contended: bool,
    stats: HalStats,
}

fn dma_fail<T>(ctx: &mut HalCtx<'_>, v: Violation, status: NtStatus) -> Result<T, NtStatus> {
    if ctx.verifier.dma_checks {
        ctx.verifier.report(v);
    }
    Err(status)
}

impl Hal {
    /// A HAL whose map registers bounce through `pool.frames` (one page
    /// each, below every address width it will serve), with `pool.guards`
    /// around them. Every bounce and guard page is filled with
    /// [`GUARD_BYTE`]; `config.pool_registers` becomes the pool's size.
    pub fn new(config: HalConfig, pool: BouncePool, mem: &mut dyn PhysMemory) -> Self {
        for &pfn in pool.frames.iter().chain(&pool.guards) {
            mem.fill(pfn * PAGE_SIZE, PAGE_SIZE as usize, GUARD_BYTE);
        }
        let registers = pool.frames.len() as u32;
        Self {
            config: HalConfig {
                pool_registers: registers,
                map_registers: config.map_registers.min(registers),
                ..config
            },
            adapters: Vec::new(),
            pool_used: vec![false; pool.frames.len()],
            pool_frames: pool.frames,
            guard_frames: pool.guards,
            common_used: vec![false; pool.common.len()],
            common_frames: pool.common,
            next_base: 0x1000,
            contended: false,
            stats: HalStats::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HalConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> HalStats {
        self.stats
    }

    /// Bytes of scatter/gather buffer a driver should allocate.
    pub fn sg_buffer_bytes(&self) -> u32 {
        self.config
            .sg_buffer_bytes
            .unwrap_or(sg_list_size(edudma_core::dma::MAX_SG_ELEMENTS as u32))
    }

    fn adapter(&mut self, id: AdapterId) -> Option<&mut Adapter> {
        self.adapters.get_mut(id.0 as usize)
    }

    /// `IoGetDmaAdapter`: an adapter and the map registers granted, or `None`
    /// (an unknown version is also 0xE6/0x25 under the verifier).
    pub fn io_get_dma_adapter(
        &mut self,
        ctx: &mut HalCtx<'_>,
        desc: &DeviceDescription,
    ) -> Option<(AdapterId, u32)> {
        if ctx.irql != Irql::Passive {
            ctx.verifier.report(Violation::WrongIrql {
                routine: "IoGetDmaAdapter",
                irql: ctx.irql,
            });
            return None;
        }
        if desc.version == DEVICE_DESCRIPTION_VERSION3 && !self.config.dma_v3 {
            // Learn: "If IoGetDmaAdapter returns NULL, the routine is not
            // available on your platform."
            return None;
        }
        if desc.version > DEVICE_DESCRIPTION_VERSION3 {
            if ctx.verifier.dma_checks {
                ctx.verifier
                    .report(Violation::UnknownDeviceDescriptionVersion {
                        version: desc.version,
                    });
            }
            return None;
        }
        let width = if desc.version == DEVICE_DESCRIPTION_VERSION3 && desc.master {
            if desc.dma_address_width == 0 || desc.dma_address_width > 64 {
                return None;
            }
            desc.dma_address_width
        } else if desc.dma64_bit_addresses {
            64
        } else if desc.dma32_bit_addresses || desc.interface_type == InterfaceType::Pci {
            32
        } else {
            24
        };
        let pages = u64::from(desc.maximum_length).div_ceil(PAGE_SIZE) + 1;
        let granted = (pages.min(u64::from(self.config.map_registers)) as u32).max(1);
        self.adapters.push(Adapter {
            version: desc.version,
            width,
            scatter_gather: desc.scatter_gather && self.config.scatter_gather,
            granted,
            released: false,
            context: Context::Uninitialized,
            channel: Channel::Free,
            registers_only: Vec::new(),
            mappings: Vec::new(),
            used: Vec::new(),
            list: None,
            common: Vec::new(),
        });
        self.stats.adapters += 1;
        Some((AdapterId(self.adapters.len() as u32 - 1), granted))
    }

    /// The `DEVICE_DESCRIPTION` version an adapter was made from: which
    /// `DMA_OPERATIONS` members it has.
    pub fn adapter_version(&self, id: AdapterId) -> Option<u32> {
        self.adapters.get(id.0 as usize).map(|a| a.version)
    }

    /// `KeFlushIoBuffers` (`IRQL <= DISPATCH_LEVEL`): on the machines
    /// modelled here caches are coherent with DMA, so it only counts.
    pub fn ke_flush_io_buffers(&mut self, ctx: &mut HalCtx<'_>) {
        if ctx.irql > Irql::Dispatch {
            ctx.verifier.report(Violation::WrongIrql {
                routine: "KeFlushIoBuffers",
                irql: ctx.irql,
            });
            return;
        }
        self.stats.io_buffer_flushes += 1;
    }

    fn live(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        routine: &'static str,
        max: Irql,
    ) -> bool {
        let Some(a) = self.adapter(id) else {
            ctx.verifier
                .report(Violation::AdapterUsedAfterRelease { routine });
            return false;
        };
        if a.released {
            ctx.verifier
                .report(Violation::AdapterUsedAfterRelease { routine });
            return false;
        }
        if ctx.irql > max {
            ctx.verifier.report(Violation::DmaIrqlTooHigh {
                routine,
                irql: ctx.irql,
            });
            return false;
        }
        true
    }

    /// [`Hal::live`] for a routine that runs exactly at DISPATCH_LEVEL: below
    /// it, [`Violation::DmaIrqlTooLow`], reported like every DMA check.
    fn live_at_dispatch(
        &mut self,
        ctx: &mut HalCtx<'_>,
        id: AdapterId,
        routine: &'static str,
    ) -> bool {
        if !self.live(ctx, id, routine, Irql::Dispatch) {
            return false;
        }
        if ctx.irql < Irql::Dispatch {
            let too_low = Violation::DmaIrqlTooLow {
                routine,
                irql: ctx.irql,
            };
            return dma_fail::<()>(ctx, too_low, NtStatus::INVALID_PARAMETER).is_ok();
        }
        true
    }

    /// `GetDmaAlignment` (PASSIVE_LEVEL).
    pub fn get_dma_alignment(&mut self, ctx: &mut HalCtx<'_>, id: AdapterId) -> u32 {
        if !self.live(ctx, id, "GetDmaAlignment", Irql::Passive) {
            return 1;
        }
        self.config.dma_alignment.max(1)
    }

    fn resolve(
        &self,
        ctx: &mut HalCtx<'_>,
        mdl: MdlId,
        offset: u64,
        length: u64,
    ) -> Result<Vec<Segment>, NtStatus> {
        if length == 0 {
            return dma_fail(
                ctx,
                Violation::ZeroLengthMapping,
                NtStatus::INVALID_PARAMETER,
            );
        }
        match ctx.mdls.segments(mdl, offset, length, true) {
            Ok(s) => Ok(s),
            Err(ChainError::NotLocked) => {
                dma_fail(ctx, Violation::UnlockedBuffer, NtStatus::INVALID_PARAMETER)
            }
            Err(ChainError::OutOfRange { chain_length }) => dma_fail(
                ctx,
                Violation::AddressNotInMdl {
                    offset,
                    length,
                    chain_length,
                },
                NtStatus::INVALID_PARAMETER,
            ),
            Err(ChainError::NoSuchMdl) => dma_fail(
                ctx,
                Violation::AddressNotInMdl {
                    offset,
                    length,
                    chain_length: 0,
                },
                NtStatus::INVALID_PARAMETER,
            ),
        }
    }

    /// `PutDmaAdapter`.
    pub fn put_dma_adapter(&mut self, ctx: &mut HalCtx<'_>, id: AdapterId) {
        if !self.live(ctx, id, "PutDmaAdapter", Irql::Dispatch) {
            return;
        }
        let a = &self.adapters[id.0 as usize];
        if a.list.is_some_and(|l| l.given) {
            ctx.verifier
                .report(Violation::AdapterPutWithScatterGatherLists { outstanding: 1 });
            return;
        }
        if a.channel != Channel::Free {
            ctx.verifier.report(Violation::AdapterPutWithChannel);
            return;
        }
        if !a.common.is_empty() {
            let outstanding = a.common.len();
            ctx.verifier
                .report(Violation::AdapterPutWithCommonBuffers { outstanding });
            return;
        }
        if !a.registers_only.is_empty() {
            let outstanding = a.registers_only.iter().map(|(_, count, _)| count).sum();
            ctx.verifier
                .report(Violation::AdapterPutWithMapRegisters { outstanding });
            return;
        }
        self.adapters[id.0 as usize].released = true;
    }

    /// True once `PutDmaAdapter` succeeded.
    pub fn released(&self, id: AdapterId) -> bool {
        self.adapters.get(id.0 as usize).is_some_and(|a| a.released)
    }

    /// True when the adapter holds or waits for nothing.
    pub fn idle(&self, id: AdapterId) -> bool {
        self.adapters.get(id.0 as usize).is_none_or(|a| {
            // A common buffer is the adapter's until it is put (which
            // checks it, 0xE6/0x07): not a channel outstanding.
            a.channel == Channel::Free && a.registers_only.is_empty() && a.mappings.is_empty()
        })
    }

    /// The leak check of one adapter when its device is gone: it was put,
    /// and it holds, waits for and maps nothing.
    pub fn leaks(&self, id: AdapterId) -> Vec<Violation> {
        let mut found = Vec::new();
        if !self.released(id) {
            found.push(Violation::AdapterLeaked);
        }
        if !self.idle(id) {
            found.push(Violation::ChannelLeaked);
        }
        found
    }

    /// Adapters not put.
    pub fn live_adapters(&self) -> usize {
        self.adapters.iter().filter(|a| !a.released).count()
    }

    /// True when a mapping of any adapter covers part of this MDL chain.
    pub fn has_mapping_on(&self, mdls: &MdlTable, head: MdlId) -> bool {
        let chain = mdls.chain(head);
        self.adapters
            .iter()
            .any(|a| a.mappings.iter().any(|m| chain.contains(&m.mdl)))
    }

    /// The bus check: may the device touch `[address, address + length)`
    /// in this direction? Only a live mapping's elements allow it.
    pub fn bus_access_allowed(&self, address: u64, length: u64, device_writes: bool) -> bool {
        if length == 0 {
            return true;
        }
        let end = address.saturating_add(length);
        let mut covered: Vec<(u64, u64)> = self
            .adapters
            .iter()
            .flat_map(|a| a.mappings.iter())
            .filter(|m| m.write_to_device != device_writes)
            .flat_map(|m| m.elements.iter())
            .map(|e| (e.address, e.address + u64::from(e.length)))
            // A common buffer is the device's in both directions.
            .chain(self.adapters.iter().filter(|a| !a.released).flat_map(|a| {
                a.common
                    .iter()
                    .map(|&(logical, length, _)| (logical, logical + u64::from(length)))
            }))
            .collect();
        covered.sort_unstable();
        let mut pos = address;
        for (s, e) in covered {
            if s <= pos && e > pos {
                pos = e;
            }
            if pos >= end {
                return true;
            }
        }
        pos >= end
    }
}
