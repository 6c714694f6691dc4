//! The HAL of the harness: the one model of `edudma-hal` — the simulator's —
//! run over the guest's pinned pages, behind the [`DmaOps`] the engine owns.
//!
//! It is `IoGetDmaAdapter` with `DEVICE_DESCRIPTION_VERSION3`, `Master`,
//! `ScatterGather` and the configured `DmaAddressWidth` (28 bits: the edu
//! device's `dma_mask`). What is the harness's own, and only that, lives
//! here:
//! - guest pages ([`GuestPages`]) addressed by physical address for the
//!   model ([`Pinned`]): a page is known once it is a bounce page or part of
//!   a locked buffer;
//! - an MDL ([`MdlId`]) is a locked list of those pages with a byte offset
//!   and a byte count ([`HalHandle::lock_pages`]); a page that moved since it
//!   was locked is the model's 0xE6/0x0E;
//! - a busy adapter ([`HalConfig::busy`]): another device holds the map
//!   registers, so a synchronous allocation is refused and an asynchronous
//!   one waits until the harness lets the grant through
//!   ([`HalHandle::take_queued_grant`]).
//!
//! Every rule is the model's [`Violation`], with the simulator's codes.
//! Nothing here panics on bad input.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::rc::Rc;

use edudma_core::NtStatus;
use edudma_core::dma::{
    AllocateOutcome, AllocationMode, DmaOps, DmaTransferInfo, ListBuffer, MdlSpot, SgElement,
    SgList,
};
use edudma_core::engine::{AdapterRequest, DmaStrategy};
use edudma_core::protocol::CommonBuffer;
use edudma_hal::hal::{
    AdapterId, AllocateResult, BouncePool, DEVICE_DESCRIPTION_VERSION3, DeviceDescription, Hal,
    HalConfig as ModelConfig, HalCtx, HalStats, InterfaceType, IoAllocationAction, MapRegisterBase,
};
use edudma_hal::mdl::{Mdl, MdlTable};
use edudma_hal::rng::SimRng;
use edudma_hal::{Irql, PhysMemory, Verifier};

pub use edudma_hal::Violation;
pub use edudma_hal::mdl::MdlId;

/// Page size of the guest (x86-64).
pub const PAGE_SIZE: usize = edudma_hal::PAGE_SIZE as usize;

/// Index of one physical page in a [`GuestPages`].
pub type PageId = usize;

/// Guest physical memory, page by page, as the harness holds it.
pub trait GuestPages {
    /// The physical address of `page` as the platform reports it now
    /// (`None` when it cannot tell).
    fn phys(&self, page: PageId) -> Option<u64>;
    /// Copy bytes out of `page` starting at `offset`. Out-of-page parts are
    /// left untouched.
    fn read(&self, page: PageId, offset: usize, out: &mut [u8]);
    /// Copy bytes into `page` starting at `offset`. Out-of-page parts are dropped.
    fn write(&mut self, page: PageId, offset: usize, data: &[u8]);
}

/// How the adapter behaves (what `IoGetDmaAdapter` gave and how busy it is).
#[derive(Clone, Copy, Debug)]
pub struct HalConfig {
    /// Map registers the adapter grants (`NumberOfMapRegisters`).
    pub map_registers: u32,
    /// `DmaAddressWidth`: pages at or above `1 << bits` are bounced.
    pub address_bits: u32,
    /// Another device holds the map registers: synchronous allocations are
    /// refused with `STATUS_INSUFFICIENT_RESOURCES`, asynchronous ones wait
    /// for [`HalHandle::take_queued_grant`].
    pub busy: bool,
    /// The strategy the driver asks for: the adapters it asks for, in the
    /// core's order ([`DmaStrategy::adapter_requests`]).
    pub strategy: DmaStrategy,
    /// The platform has DMA version 3 (false: the first adapter the core
    /// asks for is refused, as `IoGetDmaAdapter` returns NULL).
    pub dma_v3: bool,
    /// A page below 256 MiB for `AllocateCommonBuffer` (`common-buffer`).
    pub common_page: Option<PageId>,
}

impl Default for HalConfig {
    fn default() -> Self {
        Self {
            map_registers: 2,
            address_bits: 28,
            busy: false,
            strategy: DmaStrategy::V3Packet,
            dma_v3: true,
            common_page: None,
        }
    }
}

/// What the HAL did: the model's counters and the harness's own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HalCounters {
    /// The model's counters.
    pub model: HalStats,
    /// Times the engine took the device off the bus.
    pub bus_master_disabled: u64,
}

/// Guest pages addressed by physical address: what the model reads and
/// writes. Only pages the harness registered (bounce pages, locked
/// buffers) are reachable; any other address reads nothing and drops writes.
pub struct Pinned<M: GuestPages> {
    pages: M,
    frames: HashMap<u64, PageId>,
}

impl<M: GuestPages> Pinned<M> {
    fn register(&mut self, page: PageId, phys: u64) {
        self.frames.insert(phys / PAGE_SIZE as u64, page);
    }

    /// Call `f` for each in-page piece of `[addr, addr + len)` that lands
    /// on a registered page.
    fn pieces(
        &self,
        addr: u64,
        len: usize,
        mut f: impl FnMut(PageId, usize, std::ops::Range<usize>),
    ) {
        let mut done = 0usize;
        while done < len {
            let a = addr.wrapping_add(done as u64);
            let in_page = (a % PAGE_SIZE as u64) as usize;
            let n = (PAGE_SIZE - in_page).min(len - done);
            if let Some(&page) = self.frames.get(&(a / PAGE_SIZE as u64)) {
                f(page, in_page, done..done + n);
            }
            done += n;
        }
    }
}

impl<M: GuestPages> PhysMemory for Pinned<M> {
    fn read(&self, addr: u64, buf: &mut [u8]) {
        self.pieces(addr, buf.len(), |page, in_page, range| {
            self.pages.read(page, in_page, &mut buf[range]);
        });
    }
    fn write(&mut self, addr: u64, data: &[u8]) {
        let mut targets = Vec::new();
        self.pieces(addr, data.len(), |page, in_page, range| {
            targets.push((page, in_page, range));
        });
        for (page, in_page, range) in targets {
            self.pages.write(page, in_page, &data[range]);
        }
    }
}

struct Shared<M: GuestPages> {
    hal: Hal,
    mem: Pinned<M>,
    mdls: MdlTable,
    /// The pages of each locked buffer and where they were when locked.
    locked: BTreeMap<MdlId, Vec<(PageId, u64)>>,
    verifier: Verifier,
    rng: SimRng,
    adapter: AdapterId,
    busy: bool,
    bus_master_disabled: u64,
    /// Clears Bus Master Enable in the device's command register.
    bus_master_off: Option<Box<dyn FnMut()>>,
    bus_master_on: Option<Box<dyn FnMut() -> bool>>,
    /// The elements of each list given and not put yet.
    lists: HashMap<MapRegisterBase, Vec<edudma_core::dma::SgElement>>,
    /// The adapter request `IoGetDmaAdapter` granted.
    request: AdapterRequest,
    /// The common buffer allocated, if any.
    common: Option<CommonBuffer>,
}

impl<M: GuestPages> Shared<M> {
    /// One call into the model at `irql`.
    fn call<T>(
        &mut self,
        irql: Irql,
        f: impl FnOnce(&mut Hal, AdapterId, &mut HalCtx<'_>) -> T,
    ) -> T {
        let mut ctx = HalCtx {
            mem: &mut self.mem,
            mdls: &self.mdls,
            verifier: &mut self.verifier,
            irql,
            rng: &mut self.rng,
            // The real device's progress is not observable from here.
            device_busy: None,
        };
        f(&mut self.hal, self.adapter, &mut ctx)
    }

    /// The channel is ours: the routine ran and returned what the driver's
    /// does — `KeepObject` for a version-3 execution routine,
    /// `DeallocateObjectKeepRegisters` for a version-1 `AdapterControl`.
    fn granted(&mut self, base: MapRegisterBase) -> MapRegisterBase {
        let id = self.adapter;
        if self.hal.list_pending(id) {
            // A list routine: the list is built as it runs.
            let built = self.call(Irql::Dispatch, |hal, id, ctx| hal.build_list(ctx, id, base));
            if let Ok(elements) = built {
                self.lists.insert(base, elements);
            }
        }
        let action = if self.hal.adapter_version(id) < Some(DEVICE_DESCRIPTION_VERSION3) {
            IoAllocationAction::DeallocateObjectKeepRegisters
        } else {
            IoAllocationAction::KeepObject
        };
        self.hal
            .routine_returned(&mut self.verifier, id, base, action);
        base
    }

    /// The MDL of the chain `mdl` holding `offset`, and the offset in it.
    fn locate(&self, mdl: MdlId, offset: u64) -> Result<(MdlId, u64), NtStatus> {
        self.mdls
            .locate(mdl, offset)
            .ok_or(NtStatus::INVALID_PARAMETER)
    }

    /// 0xE6/0x0E when a page of `mdl` is no longer where it was locked.
    fn still_pinned(&mut self, mdl: MdlId) -> bool {
        let Some(pages) = self.locked.get(&mdl) else {
            return true;
        };
        let moved = pages
            .iter()
            .any(|&(page, phys)| self.mem.pages.phys(page) != Some(phys));
        if moved {
            self.verifier.report(Violation::UnlockedBuffer);
        }
        !moved
    }
}

/// The harness's handle on the HAL: shared with the [`HalDma`] the engine owns.
pub struct HalHandle<M: GuestPages> {
    inner: Rc<RefCell<Shared<M>>>,
}

impl<M: GuestPages> Clone for HalHandle<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

/// The adapter's DMA operations, owned by the engine.
pub struct HalDma<M: GuestPages> {
    inner: Rc<RefCell<Shared<M>>>,
}

impl<M: GuestPages> fmt::Debug for HalDma<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HalDma")
    }
}

/// Why an adapter could not be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HalError {
    /// Fewer bounce pages below the address limit than map registers.
    NotEnoughBouncePages {
        /// Pages needed.
        needed: usize,
        /// Pages given.
        given: usize,
    },
    /// A bounce page is not below the address limit (or its address is unknown).
    BouncePageTooHigh(PageId),
    /// The model refused the adapter (`IoGetDmaAdapter` returned NULL).
    NoAdapter,
}

impl fmt::Display for HalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HalError::NotEnoughBouncePages { needed, given } => {
                write!(f, "{needed} bounce pages needed, {given} given")
            }
            HalError::BouncePageTooHigh(page) => {
                write!(f, "bounce page {page} is not below the DMA address limit")
            }
            HalError::NoAdapter => f.write_str("IoGetDmaAdapter returned NULL"),
        }
    }
}

impl<M: GuestPages> HalHandle<M> {
    /// `IoGetDmaAdapter`: an adapter over `mem` whose HAL bounces through
    /// `bounce_pages` (at least one per map register, all below 256 MiB).
    pub fn new(mem: M, config: HalConfig, bounce_pages: &[PageId]) -> Result<Self, HalError> {
        let needed = config.map_registers.max(1) as usize;
        if bounce_pages.len() < needed {
            return Err(HalError::NotEnoughBouncePages {
                needed,
                given: bounce_pages.len(),
            });
        }
        // The pool serves every width down to 28 bits (the device's reach).
        let limit = 1u64 << config.address_bits.clamp(1, 63).min(28);
        let mut mem = Pinned {
            pages: mem,
            frames: HashMap::new(),
        };
        let mut frames = Vec::with_capacity(needed);
        for &page in bounce_pages {
            match mem.pages.phys(page) {
                Some(phys) if phys + PAGE_SIZE as u64 <= limit => {
                    mem.register(page, phys);
                    frames.push(phys / PAGE_SIZE as u64);
                }
                _ => return Err(HalError::BouncePageTooHigh(page)),
            }
        }
        let mut common = Vec::new();
        if let Some(page) = config.common_page {
            match mem.pages.phys(page) {
                Some(phys) if phys + PAGE_SIZE as u64 <= limit => {
                    mem.register(page, phys);
                    common.push(phys / PAGE_SIZE as u64);
                }
                _ => return Err(HalError::BouncePageTooHigh(page)),
            }
        }
        let model = ModelConfig {
            map_registers: config.map_registers,
            pool_registers: frames.len() as u32,
            double_buffer_all: Some(false),
            // Decided by `busy`, not by chance.
            inline_grant_percent: 100,
            contention_percent: 0,
            scatter_gather: true,
            sg_buffer_bytes: None,
            grant_latency_ns: None,
            dma_alignment: 1,
            dma_v3: config.dma_v3,
            short_map_percent: 0,
            map_failure_percent: 0,
        };
        let pool = BouncePool {
            frames,
            guards: Vec::new(),
            common,
        };
        let mut hal = Hal::new(model, pool, &mut mem);
        hal.contended = config.busy;
        let mut shared = Shared {
            hal,
            mem,
            mdls: MdlTable::new(),
            locked: BTreeMap::new(),
            verifier: Verifier::new(),
            rng: SimRng::new(0),
            adapter: AdapterId(0),
            busy: config.busy,
            bus_master_disabled: 0,
            bus_master_off: None,
            bus_master_on: None,
            lists: HashMap::new(),
            request: DmaStrategy::V3Packet.adapter_requests()[0],
            common: None,
        };
        // As the glue's start does: each adapter the core asks for, until
        // one is given.
        let obtained = config
            .strategy
            .adapter_requests()
            .iter()
            .find_map(|request| {
                let description = DeviceDescription {
                    version: request.version,
                    master: true,
                    scatter_gather: request.scatter_gather,
                    dma32_bit_addresses: request.dma32_bit_addresses,
                    dma64_bit_addresses: false,
                    interface_type: InterfaceType::Pci,
                    maximum_length: config.map_registers.saturating_mul(PAGE_SIZE as u32),
                    dma_address_width: if request.dma_address_width == 0 {
                        0
                    } else {
                        config.address_bits
                    },
                };
                shared
                    .call(Irql::Passive, |hal, _, ctx| {
                        hal.io_get_dma_adapter(ctx, &description)
                    })
                    .map(|(adapter, _)| (adapter, *request))
            });
        let (adapter, request) = obtained.ok_or(HalError::NoAdapter)?;
        shared.adapter = adapter;
        shared.request = request;
        Ok(Self {
            inner: Rc::new(RefCell::new(shared)),
        })
    }

    /// How to take the device off the bus (the guest's config-space write
    /// of the command register), for [`DmaOps::disable_bus_master`], and how
    /// to read whether it still is a bus master, for
    /// [`DmaOps::bus_master_enabled`].
    pub fn set_bus_master_control(&self, off: Box<dyn FnMut()>, on_bus: Box<dyn FnMut() -> bool>) {
        let mut inner = self.inner.borrow_mut();
        inner.bus_master_off = Some(off);
        inner.bus_master_on = Some(on_bus);
    }

    /// `AllocateCommonBuffer` of a page, at PASSIVE_LEVEL, as the glue's
    /// start does for `common-buffer`.
    pub fn allocate_common_buffer(&self) -> Option<CommonBuffer> {
        let inner = &mut *self.inner.borrow_mut();
        let logical = inner.call(Irql::Passive, |hal, id, ctx| {
            hal.allocate_common_buffer(ctx, id, PAGE_SIZE as u32, false)
        })?;
        let common = CommonBuffer {
            logical,
            length: PAGE_SIZE as u32,
        };
        inner.common = Some(common);
        Some(common)
    }

    /// The adapter request `IoGetDmaAdapter` granted: its version and the
    /// strategy it runs.
    pub fn request(&self) -> AdapterRequest {
        self.inner.borrow().request
    }

    /// The [`DmaOps`] to hand to the engine.
    pub fn dma_ops(&self) -> HalDma<M> {
        HalDma {
            inner: Rc::clone(&self.inner),
        }
    }

    /// `MmProbeAndLockPages`: describe `byte_count` bytes starting
    /// `byte_offset` bytes into the first of `pages`, and lock them (remember
    /// their physical addresses). `None` when the range does not fit the pages
    /// or a page's address is unknown.
    pub fn lock_pages(
        &self,
        pages: &[PageId],
        byte_offset: usize,
        byte_count: usize,
    ) -> Option<MdlId> {
        let mut inner = self.inner.borrow_mut();
        let end = byte_offset.checked_add(byte_count)?;
        if byte_count == 0
            || byte_offset >= PAGE_SIZE
            || end > pages.len().checked_mul(PAGE_SIZE)?
        {
            return None;
        }
        let span = end.div_ceil(PAGE_SIZE);
        let mut locked = Vec::with_capacity(span);
        for &page in &pages[..span] {
            locked.push((page, inner.mem.pages.phys(page)?));
        }
        for &(page, phys) in &locked {
            inner.mem.register(page, phys);
        }
        let id = inner.mdls.insert(Mdl {
            pages: locked
                .iter()
                .map(|&(_, phys)| phys / PAGE_SIZE as u64)
                .collect(),
            byte_offset: u32::try_from(byte_offset).ok()?,
            byte_count: u32::try_from(byte_count).ok()?,
            locked: true,
            next: None,
            system_va_mapped: false,
        });
        inner.locked.insert(id, locked);
        Some(id)
    }

    /// `MmUnlockPages` + `IoFreeMdl`. Unlocking a buffer that is still
    /// mapped is 0xE6/0x0D (its map was never flushed); one never locked
    /// (or unlocked twice) is the leak check's `IoFreeMdl` rule.
    pub fn unlock(&self, mdl: MdlId) {
        let mut inner = self.inner.borrow_mut();
        if inner.hal.has_mapping_on(&inner.mdls, mdl) {
            inner.verifier.report(Violation::AdapterBuffersNotFlushed);
        }
        if inner.mdls.remove_chain(mdl).is_empty() {
            inner.verifier.report(Violation::MdlLeaked { count: 0 });
        }
        inner.locked.remove(&mdl);
    }

    /// Copy the buffer an MDL describes into `out` (its length).
    pub fn read_mdl(&self, mdl: MdlId, out: &mut [u8]) -> bool {
        let inner = self.inner.borrow();
        inner.mdls.read(&inner.mem, mdl, 0, out).is_ok()
    }

    /// Fill the buffer an MDL describes from `data`.
    pub fn write_mdl(&self, mdl: MdlId, data: &[u8]) -> bool {
        let inner = &mut *self.inner.borrow_mut();
        inner.mdls.write(&mut inner.mem, mdl, 0, data).is_ok()
    }

    /// The other device lets the map registers go: the waiting execution
    /// routine runs now. The map-register base to feed to the engine's
    /// `channel_granted`, if an allocation was waiting. The adapter stays as
    /// busy as configured for the next allocation.
    pub fn take_queued_grant(&self) -> Option<MapRegisterBase> {
        let inner = &mut *self.inner.borrow_mut();
        let id = inner.adapter;
        if !inner.hal.is_waiting(id) {
            return None;
        }
        inner.hal.contended = false;
        let base = inner.hal.retry_waiting(&mut inner.mem, id);
        inner.hal.contended = inner.busy;
        base.map(|b| inner.granted(b))
    }

    /// What the HAL counted.
    pub fn counters(&self) -> HalCounters {
        let inner = self.inner.borrow();
        HalCounters {
            model: inner.hal.stats(),
            bus_master_disabled: inner.bus_master_disabled,
        }
    }

    /// Every rule broken so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.inner.borrow().verifier.violations().to_vec()
    }

    /// Leak check at the end of a run: the adapter was put, it holds and
    /// maps nothing, every buffer was unlocked.
    pub fn leak_check(&self) -> Vec<Violation> {
        let inner = self.inner.borrow();
        let mut found = inner.hal.leaks(inner.adapter);
        if !inner.mdls.is_empty() {
            found.push(Violation::MdlLeaked {
                count: inner.mdls.len(),
            });
        }
        found
    }

    /// Run a closure on the guest pages (for the tests' own checks).
    #[cfg(test)]
    pub fn with_memory<T>(&self, f: impl FnOnce(&mut M) -> T) -> T {
        f(&mut self.inner.borrow_mut().mem.pages)
    }
}

impl<M: GuestPages> HalDma<M> {
    /// A DMA routine at DISPATCH_LEVEL, where the engine's callers run.
    fn at_dispatch<T>(&self, f: impl FnOnce(&mut Hal, AdapterId, &mut HalCtx<'_>) -> T) -> T {
        self.inner.borrow_mut().call(Irql::Dispatch, f)
    }
}

impl<M: GuestPages> DmaOps for HalDma<M> {
    type Mdl = MdlId;
    type MapRegisterBase = MapRegisterBase;

    fn get_dma_alignment(&mut self) -> u32 {
        self.inner
            .borrow_mut()
            .call(Irql::Passive, |hal, id, ctx| hal.get_dma_alignment(ctx, id))
    }

    fn get_dma_transfer_info(
        &mut self,
        mdl: MdlId,
        offset: u64,
        length: u32,
        write_only: bool,
    ) -> Result<DmaTransferInfo, NtStatus> {
        self.at_dispatch(|hal, id, ctx| {
            hal.get_dma_transfer_info(ctx, id, mdl, offset, length, write_only)
        })
    }

    fn initialize_dma_transfer_context(&mut self) -> Result<(), NtStatus> {
        self.at_dispatch(|hal, id, ctx| hal.initialize_dma_transfer_context(ctx, id))
    }

    fn allocate_adapter_channel_ex(
        &mut self,
        map_register_count: u32,
        mode: AllocationMode,
    ) -> Result<AllocateOutcome<MapRegisterBase>, NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        let synchronous = mode == AllocationMode::Synchronous;
        let result = inner.call(Irql::Dispatch, |hal, id, ctx| {
            hal.allocate_adapter_channel_ex(ctx, id, map_register_count, synchronous)
        })?;
        Ok(match result {
            AllocateResult::RunNow(base) | AllocateResult::Committed(base) => {
                AllocateOutcome::Granted(inner.granted(base))
            }
            AllocateResult::Waiting => AllocateOutcome::Queued,
        })
    }

    fn cancel_adapter_channel(&mut self) -> bool {
        self.at_dispatch(|hal, id, ctx| hal.cancel_adapter_channel(ctx, id))
    }

    fn map_transfer_ex(
        &mut self,
        mdl: MdlId,
        map_register_base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        if !inner.still_pinned(mdl) {
            sg.clear();
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        inner.call(Irql::Dispatch, |hal, id, ctx| {
            let sg_bytes = hal.sg_buffer_bytes();
            hal.map_transfer_ex(
                ctx,
                id,
                mdl,
                map_register_base,
                offset,
                length,
                write_to_device,
                sg_bytes,
                sg,
            )
        })
    }

    fn flush_adapter_buffers_ex(
        &mut self,
        mdl: MdlId,
        map_register_base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        self.at_dispatch(|hal, id, ctx| {
            hal.flush_adapter_buffers_ex(
                ctx,
                id,
                mdl,
                map_register_base,
                offset,
                length,
                write_to_device,
            )
        })
    }

    fn free_adapter_channel(&mut self) {
        self.at_dispatch(|hal, id, ctx| hal.free_adapter_channel(ctx, id));
    }

    fn free_map_registers(&mut self, map_register_base: MapRegisterBase, map_register_count: u32) {
        self.at_dispatch(|hal, id, ctx| {
            hal.free_map_registers(ctx, id, map_register_base, map_register_count)
        });
    }

    fn put_dma_adapter(&mut self) {
        self.at_dispatch(|hal, id, ctx| hal.put_dma_adapter(ctx, id));
    }

    fn bus_master_enabled(&mut self) -> bool {
        // Without a way to read config space (unit runs), the command
        // register is what this harness last wrote.
        let mut inner = self.inner.borrow_mut();
        match inner.bus_master_on.as_mut() {
            Some(on_bus) => on_bus(),
            None => inner.bus_master_disabled == 0,
        }
    }

    fn enable_bus_master(&mut self) -> bool {
        // The harness set Bus Master Enable before the start (config space),
        // as far as it can tell it still is.
        self.bus_master_enabled()
    }

    fn disable_bus_master(&mut self) {
        let mut inner = self.inner.borrow_mut();
        inner.bus_master_disabled += 1;
        if let Some(off) = inner.bus_master_off.as_mut() {
            off();
        }
    }

    fn flush_io_buffers(&mut self, _mdl: MdlId, _read_operation: bool) {
        self.at_dispatch(|hal, _, ctx| hal.ke_flush_io_buffers(ctx));
    }

    fn locate(&mut self, mdl: MdlId, offset: u64) -> Option<MdlSpot> {
        let inner = self.inner.borrow();
        let (held_by, in_mdl) = inner.locate(mdl, offset).ok()?;
        let m = inner.mdls.get(held_by)?;
        Some(MdlSpot {
            page_offset: ((u64::from(m.byte_offset) + in_mdl) % PAGE_SIZE as u64) as u32,
            bytes_to_mdl_end: (u64::from(m.byte_count) - in_mdl) as u32,
        })
    }

    fn allocate_adapter_channel(
        &mut self,
        map_register_count: u32,
    ) -> Result<AllocateOutcome<MapRegisterBase>, NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        let result = inner.call(Irql::Dispatch, |hal, id, ctx| {
            hal.allocate_adapter_channel(ctx, id, map_register_count)
        })?;
        Ok(match result {
            AllocateResult::RunNow(base) | AllocateResult::Committed(base) => {
                AllocateOutcome::Granted(inner.granted(base))
            }
            AllocateResult::Waiting => AllocateOutcome::Queued,
        })
    }

    /// The CPU's copy through the common buffer: the buffer's pages through
    /// their MDL, the common page through its frame.
    fn copy_to_common_buffer(
        &mut self,
        mdl: MdlId,
        offset: u64,
        length: u32,
    ) -> Result<(), NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        let common = inner.common.ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        let mut data = vec![0u8; length.min(common.length) as usize];
        inner
            .mdls
            .read(&inner.mem, mdl, offset, &mut data)
            .map_err(|_| NtStatus::INVALID_PARAMETER)?;
        inner.mem.write(common.logical, &data);
        Ok(())
    }

    fn copy_from_common_buffer(
        &mut self,
        mdl: MdlId,
        offset: u64,
        length: u32,
    ) -> Result<(), NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        let common = inner.common.ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        let mut data = vec![0u8; length.min(common.length) as usize];
        inner.mem.read(common.logical, &mut data);
        inner
            .mdls
            .write(&mut inner.mem, mdl, offset, &data)
            .map_err(|_| NtStatus::INVALID_PARAMETER)
    }

    fn free_common_buffer(&mut self) {
        let inner = &mut *self.inner.borrow_mut();
        if let Some(common) = inner.common.take() {
            inner.call(Irql::Passive, |hal, id, ctx| {
                hal.free_common_buffer(ctx, id, common.length, common.logical, false)
            });
        }
    }

    /// The harness releases a quiet adapter itself, right after the stop.
    fn adapter_quiet(&mut self) {}

    fn calculate_scatter_gather_list(
        &mut self,
        mdl: MdlId,
        offset: u64,
        length: u32,
    ) -> Result<u32, NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        let (held_by, in_mdl) = inner.locate(mdl, offset)?;
        inner
            .call(Irql::Dispatch, |hal, id, ctx| {
                hal.calculate_scatter_gather_list(ctx, id, held_by, in_mdl, length)
            })
            .map(|(bytes, _)| bytes)
    }

    fn scatter_gather_buffer_bytes(&self) -> u32 {
        self.inner.borrow().hal.sg_buffer_bytes()
    }

    /// The list routine runs inside the call (the harness's only CPU), or
    /// when [`HalHandle::take_queued_grant`] releases a busy adapter.
    fn get_scatter_gather_list(
        &mut self,
        buffer: ListBuffer,
        mdl: MdlId,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<AllocateOutcome<MapRegisterBase>, NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        if !inner.still_pinned(mdl) {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let (held_by, in_mdl) = inner.locate(mdl, offset)?;
        let bytes = (buffer == ListBuffer::Driver).then(|| inner.hal.sg_buffer_bytes());
        let result = inner.call(Irql::Dispatch, |hal, id, ctx| {
            hal.get_scatter_gather_list(ctx, id, held_by, in_mdl, length, write_to_device, bytes)
        })?;
        Ok(match result {
            AllocateResult::RunNow(base) | AllocateResult::Committed(base) => {
                AllocateOutcome::Granted(inner.granted(base))
            }
            AllocateResult::Waiting => AllocateOutcome::Queued,
        })
    }

    fn scatter_gather_elements(&mut self, list: MapRegisterBase, sg: &mut SgList) -> bool {
        let inner = self.inner.borrow();
        inner
            .lists
            .get(&list)
            .is_some_and(|elements| elements.iter().all(|e| sg.push(*e)))
    }

    fn put_scatter_gather_list(&mut self, list: MapRegisterBase, write_to_device: bool) {
        let inner = &mut *self.inner.borrow_mut();
        inner.call(Irql::Dispatch, |hal, id, ctx| {
            hal.put_scatter_gather_list(ctx, id, list, write_to_device)
        });
        inner.lists.remove(&list);
    }

    fn map_transfer(
        &mut self,
        mdl: MdlId,
        map_register_base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<SgElement, NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        if !inner.still_pinned(mdl) {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        let (held_by, in_mdl) = inner.locate(mdl, offset)?;
        inner.call(Irql::Dispatch, |hal, id, ctx| {
            hal.map_transfer(
                ctx,
                id,
                held_by,
                map_register_base,
                in_mdl,
                length,
                write_to_device,
            )
        })
    }

    fn flush_adapter_buffers(
        &mut self,
        mdl: MdlId,
        map_register_base: MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        let inner = &mut *self.inner.borrow_mut();
        let (held_by, in_mdl) = inner.locate(mdl, offset)?;
        inner.call(Irql::Dispatch, |hal, id, ctx| {
            hal.flush_adapter_buffers(
                ctx,
                id,
                held_by,
                map_register_base,
                in_mdl,
                length,
                write_to_device,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edudma_core::dma::SgElement;
    use edudma_hal::hal::GUARD_BYTE;

    /// Memory whose page i lives at the physical address the test chose.
    struct FakeMemory {
        phys: Vec<u64>,
        data: Vec<[u8; PAGE_SIZE]>,
    }

    impl FakeMemory {
        fn new(phys: &[u64]) -> Self {
            Self {
                phys: phys.to_vec(),
                data: vec![[0; PAGE_SIZE]; phys.len()],
            }
        }
    }

    impl GuestPages for FakeMemory {
        fn phys(&self, page: PageId) -> Option<u64> {
            self.phys.get(page).copied()
        }
        fn read(&self, page: PageId, offset: usize, out: &mut [u8]) {
            if let Some(p) = self.data.get(page) {
                let end = (offset + out.len()).min(PAGE_SIZE);
                if offset < end {
                    out[..end - offset].copy_from_slice(&p[offset..end]);
                }
            }
        }
        fn write(&mut self, page: PageId, offset: usize, data: &[u8]) {
            if let Some(p) = self.data.get_mut(page) {
                let end = (offset + data.len()).min(PAGE_SIZE);
                if offset < end {
                    p[offset..end].copy_from_slice(&data[..end - offset]);
                }
            }
        }
    }

    const MB: u64 = 1 << 20;

    /// Pages 0, 1: bounce pages (low); 2, 3: adjacent low pages; 4: high; 5: low.
    fn hal_with(map_registers: u32, busy: bool) -> HalHandle<FakeMemory> {
        let mem = FakeMemory::new(&[MB, MB + 4096, 10 * MB, 10 * MB + 4096, 300 * MB, 20 * MB]);
        let config = HalConfig {
            map_registers,
            busy,
            ..HalConfig::default()
        };
        HalHandle::new(mem, config, &[0, 1]).unwrap()
    }

    fn hal(map_registers: u32) -> HalHandle<FakeMemory> {
        hal_with(map_registers, false)
    }

    fn grant(ops: &mut HalDma<FakeMemory>, count: u32) -> MapRegisterBase {
        ops.initialize_dma_transfer_context().unwrap();
        match ops
            .allocate_adapter_channel_ex(count, AllocationMode::Synchronous)
            .unwrap()
        {
            AllocateOutcome::Granted(base) => base,
            AllocateOutcome::Queued => panic!("queued"),
        }
    }

    fn codes(hal: &HalHandle<FakeMemory>) -> Vec<Option<u32>> {
        hal.violations()
            .iter()
            .map(Violation::dma_subcode)
            .collect()
    }

    #[test]
    fn adjacent_low_pages_coalesce() {
        let hal = hal(2);
        let mut ops = hal.dma_ops();
        let mdl = hal.lock_pages(&[2, 3], 100, 5000).unwrap();
        let info = ops.get_dma_transfer_info(mdl, 0, 5000, true).unwrap();
        assert_eq!(info.map_register_count, 2);
        let base = grant(&mut ops, 2);
        let mut sg = SgList::new();
        assert_eq!(
            ops.map_transfer_ex(mdl, base, 0, 5000, true, &mut sg),
            Ok(5000)
        );
        assert_eq!(
            sg.as_slice(),
            &[SgElement {
                address: 10 * MB + 100,
                length: 5000
            }]
        );
        ops.flush_adapter_buffers_ex(mdl, base, 0, 5000, true)
            .unwrap();
        ops.free_adapter_channel();
        hal.unlock(mdl);
        ops.put_dma_adapter();
        assert!(hal.violations().is_empty(), "{:?}", hal.violations());
        assert!(hal.leak_check().is_empty(), "{:?}", hal.leak_check());
    }

    #[test]
    fn high_pages_bounce_both_ways() {
        let hal = hal(2);
        let mut ops = hal.dma_ops();
        // Page 5 (low) then page 4 (high).
        let mdl = hal.lock_pages(&[5, 4], 4000, 200).unwrap();
        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        assert!(hal.write_mdl(mdl, &data));
        let base = grant(&mut ops, 2);
        let mut sg = SgList::new();
        assert_eq!(
            ops.map_transfer_ex(mdl, base, 0, 200, true, &mut sg),
            Ok(200)
        );
        assert_eq!(sg.len(), 2);
        assert_eq!(sg.as_slice()[0].address, 20 * MB + 4000);
        // The second piece goes through map register 1's bounce page.
        assert_eq!(
            sg.as_slice()[1],
            SgElement {
                address: MB + 4096,
                length: 104
            }
        );
        let mut bounced = [0u8; 104];
        hal.with_memory(|m| m.read(1, 0, &mut bounced));
        assert_eq!(&bounced[..], &data[96..]);
        ops.flush_adapter_buffers_ex(mdl, base, 0, 200, true)
            .unwrap();

        // Device → memory: the device writes the bounce page, flush copies back.
        assert_eq!(
            ops.map_transfer_ex(mdl, base, 0, 200, false, &mut sg),
            Ok(200)
        );
        hal.with_memory(|m| m.write(1, 0, &[0xEE; 104]));
        let mut out = vec![0u8; 200];
        hal.read_mdl(mdl, &mut out);
        assert_eq!(out[199], 199, "not copied back before the flush");
        ops.flush_adapter_buffers_ex(mdl, base, 0, 200, false)
            .unwrap();
        hal.read_mdl(mdl, &mut out);
        assert_eq!(&out[96..], &[0xEE; 104][..]);
        let counters = hal.counters().model;
        assert_eq!(counters.bounced_pages, 2);
        assert_eq!(
            (counters.bounce_bytes_in, counters.bounce_bytes_out),
            (104, 104)
        );
        // The bounce page is guard bytes again once flushed.
        hal.with_memory(|m| m.read(1, 0, &mut bounced));
        assert_eq!(bounced, [GUARD_BYTE; 104]);
        ops.free_adapter_channel();
        hal.unlock(mdl);
        ops.put_dma_adapter();
        assert!(hal.violations().is_empty(), "{:?}", hal.violations());
    }

    #[test]
    fn one_map_register_maps_partially() {
        let hal = hal(1);
        let mut ops = hal.dma_ops();
        let mdl = hal.lock_pages(&[2, 3], 4000, 1000).unwrap();
        let base = grant(&mut ops, 1);
        let mut sg = SgList::new();
        assert_eq!(
            ops.map_transfer_ex(mdl, base, 0, 1000, true, &mut sg),
            Ok(96)
        );
        ops.flush_adapter_buffers_ex(mdl, base, 0, 96, true)
            .unwrap();
        assert_eq!(
            ops.map_transfer_ex(mdl, base, 96, 904, true, &mut sg),
            Ok(904)
        );
        ops.flush_adapter_buffers_ex(mdl, base, 96, 904, true)
            .unwrap();
        assert_eq!(hal.counters().model.partial_maps, 1);
        assert!(hal.violations().is_empty(), "{:?}", hal.violations());
    }

    #[test]
    fn a_busy_adapter_refuses_sync_and_queues_async_until_released() {
        let hal = hal_with(2, true);
        let mut ops = hal.dma_ops();
        ops.initialize_dma_transfer_context().unwrap();
        assert_eq!(
            ops.allocate_adapter_channel_ex(1, AllocationMode::Synchronous),
            Err(NtStatus::INSUFFICIENT_RESOURCES)
        );
        ops.initialize_dma_transfer_context().unwrap();
        assert_eq!(
            ops.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous),
            Ok(AllocateOutcome::Queued)
        );
        let base = hal.take_queued_grant().expect("the waiting grant");
        assert_eq!(hal.take_queued_grant(), None, "one grant per allocation");
        let mdl = hal.lock_pages(&[2], 0, 10).unwrap();
        let mut sg = SgList::new();
        assert_eq!(ops.map_transfer_ex(mdl, base, 0, 10, true, &mut sg), Ok(10));
        ops.flush_adapter_buffers_ex(mdl, base, 0, 10, true)
            .unwrap();
        ops.free_adapter_channel();
        // Still busy: the next asynchronous allocation waits again, and a
        // cancel takes it back.
        ops.initialize_dma_transfer_context().unwrap();
        assert_eq!(
            ops.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous),
            Ok(AllocateOutcome::Queued)
        );
        assert!(ops.cancel_adapter_channel());
        assert_eq!(hal.take_queued_grant(), None);
        hal.unlock(mdl);
        ops.put_dma_adapter();
        let counters = hal.counters().model;
        assert_eq!((counters.sync_refusals, counters.queued), (1, 2));
        assert!(hal.violations().is_empty(), "{:?}", hal.violations());
        assert!(hal.leak_check().is_empty(), "{:?}", hal.leak_check());
    }

    /// The codes are the simulator's: one model, one table.
    #[test]
    fn verifier_catches_misuse_with_the_simulators_codes() {
        let hal = hal(1);
        let mut ops = hal.dma_ops();
        let mdl = hal.lock_pages(&[2], 0, 10).unwrap();
        let other = hal.lock_pages(&[5], 0, 10).unwrap();
        ops.initialize_dma_transfer_context().unwrap();
        assert!(
            ops.allocate_adapter_channel_ex(2, AllocationMode::Synchronous)
                .is_err()
        );
        let base = grant(&mut ops, 1);
        let mut sg = SgList::new();
        ops.map_transfer_ex(mdl, base, 0, 10, true, &mut sg)
            .unwrap();
        // The same range again: already mapped.
        assert!(
            ops.map_transfer_ex(mdl, base, 0, 10, true, &mut sg)
                .is_err()
        );
        // Another range before the flush: the first was not flushed.
        assert!(
            ops.map_transfer_ex(other, base, 0, 10, true, &mut sg)
                .is_err()
        );
        // A flush with another length than the map's.
        assert!(ops.flush_adapter_buffers_ex(mdl, base, 0, 9, true).is_err());
        ops.flush_adapter_buffers_ex(mdl, base, 0, 10, true)
            .unwrap();
        ops.free_adapter_channel();
        ops.free_adapter_channel();
        ops.put_dma_adapter();
        ops.put_dma_adapter();
        assert_eq!(
            codes(&hal),
            [0x0C, 0x1D, 0x0D, 0x16, 0x04, 0x18].map(Some).to_vec()
        );
        assert_eq!(hal.leak_check().len(), 1, "two MDLs are still locked");
    }

    #[test]
    fn a_page_that_moved_since_it_was_locked_is_not_mapped() {
        let hal = hal(1);
        let mut ops = hal.dma_ops();
        let mdl = hal.lock_pages(&[2], 0, 10).unwrap();
        let base = grant(&mut ops, 1);
        hal.with_memory(|m| m.phys[2] = 40 * MB);
        let mut sg = SgList::new();
        assert_eq!(
            ops.map_transfer_ex(mdl, base, 0, 10, true, &mut sg),
            Err(NtStatus::INSUFFICIENT_RESOURCES)
        );
        assert_eq!(codes(&hal), vec![Some(0x0E)]);
    }
}
