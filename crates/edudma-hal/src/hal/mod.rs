//! The HAL's DMA version 3, as a bus-master driver sees it: adapters made
//! from a `DEVICE_DESCRIPTION`, channels granted synchronously or through a
//! queue, map registers backed by bounce pages below the device's address
//! width, scatter/gather lists, partial maps, flushes that copy bounce pages
//! back — with Driver Verifier's DMA checks on every call.
//!
//! The model is plain data. Calls take a [`HalCtx`] with the memory, the
//! MDLs, the verifier and the caller's IRQL; what must happen later (an
//! execution routine to run) is returned for the machine to schedule.

use edudma_core::NtStatus;
use edudma_core::dma::{DmaTransferInfo, SgElement, SgList};

use crate::irql::Irql;
use crate::mdl::{ChainError, MdlId, MdlTable, Segment};
use crate::memory::{PAGE_SIZE, PhysMemory};
use crate::rng::SimRng;
use crate::verifier::{Verifier, Violation};

mod lists;

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

    fn take_registers(&mut self, count: u32) -> Option<u32> {
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

    fn release_registers(&mut self, first: u32, count: u32) {
        let n = count.max(1) as usize;
        for u in self.pool_used.iter_mut().skip(first as usize).take(n) {
            *u = false;
        }
    }

    fn register_pfn(&self, register: u32) -> u64 {
        // Registers are handed out within the pool: the index is in range.
        self.pool_frames
            .get(register as usize)
            .copied()
            .unwrap_or(u64::MAX / PAGE_SIZE)
    }

    fn commit(
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
    fn allocate(
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

    fn held(&self, id: AdapterId, base: MapRegisterBase) -> Option<(u32, u32)> {
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
        let segments = self.resolve(ctx, mdl, offset, u64::from(length))?;
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
    fn map_range(
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
                    let mut data = vec![0u8; seg.len as usize];
                    ctx.mem.read(seg.phys, &mut data);
                    ctx.mem.write(bus, &data);
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
    fn flush_range(
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
        // Guard bytes: everything of the used register pages outside the data.
        for (i, r) in mapping.registers.iter().enumerate() {
            let page = self.register_pfn(first + r) * PAGE_SIZE;
            let mut bytes = vec![0u8; PAGE_SIZE as usize];
            ctx.mem.read(page, &mut bytes);
            let data = mapping
                .bounced
                .iter()
                .find(|(bus, _)| bus / PAGE_SIZE == page / PAGE_SIZE)
                .map(|(bus, seg)| ((bus % PAGE_SIZE) as usize, seg.len as usize));
            for (j, b) in bytes.iter().enumerate() {
                let inside = data.is_some_and(|(start, len)| j >= start && j < start + len);
                if !inside && *b != GUARD_BYTE {
                    let _ = i;
                    return dma_fail(
                        ctx,
                        Violation::GuardBytesOverwritten {
                            bus_address: page + j as u64,
                        },
                        NtStatus::DEVICE_HARDWARE_ERROR,
                    );
                }
            }
        }
        for (bus, seg) in &mapping.bounced {
            if !write_to_device {
                let mut data = vec![0u8; seg.len as usize];
                ctx.mem.read(*bus, &mut data);
                ctx.mem.write(seg.phys, &data);
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

    fn check_guards(&self, ctx: &mut HalCtx<'_>, first: u32, count: u32) -> bool {
        let mut bytes = vec![0u8; PAGE_SIZE as usize];
        let pages = (first..first + count.max(1))
            .map(|r| self.register_pfn(r))
            .chain(self.guard_frames.iter().copied());
        for pfn in pages {
            ctx.mem.read(pfn * PAGE_SIZE, &mut bytes);
            if let Some(j) = bytes.iter().position(|b| *b != GUARD_BYTE) {
                if ctx.verifier.dma_checks {
                    ctx.verifier.report(Violation::GuardBytesOverwritten {
                        bus_address: pfn * PAGE_SIZE + j as u64,
                    });
                }
                return false;
            }
        }
        true
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
    fn end_channel(&mut self, ctx: &mut HalCtx<'_>, id: AdapterId, first: u32, count: u32) {
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
