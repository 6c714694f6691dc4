//! A user-space HAL for one 28-bit bus-master adapter: the version-3 DMA
//! routines ([`DmaOps`]) over real physical pages, with the bookkeeping of a
//! strict Driver Verifier.
//!
//! It behaves like Windows' HAL for `DEVICE_DESCRIPTION_VERSION3` with
//! `Master`, `ScatterGather` and `DmaAddressWidth = 28`:
//! - an MDL ([`MdlId`]) is a locked list of physical pages with a byte offset
//!   and a byte count, registered with [`HalHandle::lock_pages`];
//! - `MapTransferEx` walks the MDL page by page, one map register per page;
//!   a page whose range reaches 256 MiB or above is double-buffered through
//!   the map register's bounce page (allocated below 256 MiB when the adapter
//!   is created), every other page is handed to the device directly;
//!   physically adjacent pieces coalesce into one scatter/gather element;
//! - a transfer that needs more map registers than the channel holds, or more
//!   elements than the scatter/gather list has room for, is mapped partially;
//! - `FlushAdapterBuffersEx` after a device → memory transfer copies the bounce
//!   pages back into the MDL's pages.
//!
//! Every rule a strict HAL would bug-check on is recorded as a
//! [`Violation`] instead (the harness fails the run on any).
//! Nothing here panics on bad input.

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;

use edudma_core::NtStatus;
use edudma_core::dma::{
    AllocateOutcome, AllocationMode, DmaOps, DmaTransferInfo, MAX_SG_ELEMENTS, SgElement, SgList,
};

/// Page size of the guest (x86-64).
pub const PAGE_SIZE: usize = 4096;

/// Index of one physical page in a [`PhysMemory`].
pub type PageId = usize;

/// Guest physical memory, page by page, as the HAL sees it.
pub trait PhysMemory {
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
    /// Refuse synchronous allocations with `STATUS_INSUFFICIENT_RESOURCES`,
    /// as if another device held the channel.
    pub sync_busy: bool,
    /// Queue asynchronous allocations: the execution routine runs later,
    /// when the harness calls [`HalHandle::take_queued_grant`].
    pub queue_async: bool,
}

impl Default for HalConfig {
    fn default() -> Self {
        Self {
            map_registers: 2,
            address_bits: 28,
            sync_busy: false,
            queue_async: false,
        }
    }
}

/// Handle of a locked buffer (the MDL of the request).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MdlId(pub u32);

/// Handle of a grant's map registers: a generation number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MapBase(pub u32);

/// A rule of the strict HAL that was broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// Driver Verifier bug check 0xE6 parameter 1, or 0 for rules of this HAL.
    pub code: u32,
    /// What happened.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "verifier 0x{:02X}: {}", self.code, self.what)
    }
}

/// Counters of what the HAL did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HalCounters {
    /// `GetDmaTransferInfo` calls.
    pub transfer_infos: u64,
    /// Times the engine took the device off the bus.
    pub bus_master_disabled: u64,
    /// Channels granted.
    pub channels: u64,
    /// Synchronous allocations refused as busy.
    pub sync_refusals: u64,
    /// Grants delivered later (queued asynchronous allocations).
    pub queued_grants: u64,
    /// `MapTransferEx` calls that mapped something.
    pub maps: u64,
    /// Maps that mapped less than asked.
    pub partial_maps: u64,
    /// `FlushAdapterBuffersEx` calls.
    pub flushes: u64,
    /// Pages double-buffered through a bounce page.
    pub bounced_pages: u64,
    /// Bytes copied into bounce pages (memory → device).
    pub bounce_bytes_in: u64,
    /// Bytes copied back out of bounce pages (device → memory).
    pub bounce_bytes_out: u64,
    /// Pages handed to the device directly.
    pub direct_pages: u64,
    /// Scatter/gather elements handed out.
    pub sg_elements: u64,
    /// Most elements in one list.
    pub max_sg_elements: u64,
    /// `FreeAdapterChannel` calls.
    pub frees: u64,
}

/// One locked buffer: what an MDL describes.
#[derive(Clone, Debug)]
struct MdlRecord {
    pages: Vec<PageId>,
    /// Physical address of each page when it was locked.
    phys: Vec<u64>,
    byte_offset: usize,
    byte_count: usize,
}

/// One piece of a mapping that went through a bounce page.
#[derive(Clone, Copy, Debug)]
struct Bounced {
    page: PageId,
    bounce: PageId,
    in_page: usize,
    len: usize,
}

#[derive(Clone, Debug)]
struct MapRecord {
    mdl: MdlId,
    offset: u64,
    length: u32,
    write_to_device: bool,
    bounced: Vec<Bounced>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChannelState {
    Free,
    Queued { base: MapBase, count: u32 },
    Granted { base: MapBase, count: u32 },
}

/// Byte written into bounce pages before a device → memory transfer, so that
/// bytes the device did not write show up in the comparison.
pub const BOUNCE_POISON: u8 = 0x5A;

struct HalInner<M: PhysMemory> {
    mem: M,
    config: HalConfig,
    bounce: Vec<(PageId, u64)>,
    mdls: Vec<Option<MdlRecord>>,
    channel: ChannelState,
    context_ready: bool,
    mapping: Option<MapRecord>,
    queued_grant: bool,
    put: bool,
    next_base: u32,
    counters: HalCounters,
    violations: Vec<Violation>,
    /// Clears Bus Master Enable in the device's command register.
    bus_master_off: Option<Box<dyn FnMut()>>,
}

impl<M: PhysMemory> HalInner<M> {
    fn violate(&mut self, code: u32, what: impl Into<String>) {
        self.violations.push(Violation {
            code,
            what: what.into(),
        });
    }

    fn limit(&self) -> u64 {
        1u64.checked_shl(self.config.address_bits)
            .unwrap_or(u64::MAX)
    }

    fn mdl(&self, mdl: MdlId) -> Option<&MdlRecord> {
        self.mdls.get(mdl.0 as usize).and_then(Option::as_ref)
    }

    /// Common checks of the MDL, offset and length; the violation is recorded.
    fn check_range(&mut self, mdl: MdlId, offset: u64, length: u32, what: &str) -> bool {
        let Some(record) = self.mdl(mdl) else {
            self.violate(0x0E, format!("{what}: MDL {mdl:?} is not a locked buffer"));
            return false;
        };
        let count = record.byte_count as u64;
        if length == 0 {
            self.violate(0x21, format!("{what}: zero length"));
            return false;
        }
        if offset
            .checked_add(u64::from(length))
            .is_none_or(|end| end > count)
        {
            self.violate(
                0x1B,
                format!(
                    "{what}: {length} bytes at offset {offset} are not inside the {count}-byte MDL"
                ),
            );
            return false;
        }
        true
    }
}

/// The harness's handle on the HAL: shared with the [`HalDma`] the engine owns.
pub struct HalHandle<M: PhysMemory> {
    inner: Rc<RefCell<HalInner<M>>>,
}

impl<M: PhysMemory> Clone for HalHandle<M> {
    fn clone(&self) -> Self {
        Self {
            inner: Rc::clone(&self.inner),
        }
    }
}

/// The adapter's DMA operations, owned by the engine.
pub struct HalDma<M: PhysMemory> {
    inner: Rc<RefCell<HalInner<M>>>,
}

impl<M: PhysMemory> fmt::Debug for HalDma<M> {
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
        }
    }
}

impl<M: PhysMemory> HalHandle<M> {
    /// `IoGetDmaAdapter`: an adapter over `mem`, with one bounce page per map
    /// register taken from `bounce_pages` (which must lie below the limit).
    pub fn new(mem: M, config: HalConfig, bounce_pages: &[PageId]) -> Result<Self, HalError> {
        let needed = config.map_registers as usize;
        if bounce_pages.len() < needed {
            return Err(HalError::NotEnoughBouncePages {
                needed,
                given: bounce_pages.len(),
            });
        }
        let limit = 1u64.checked_shl(config.address_bits).unwrap_or(u64::MAX);
        let mut bounce = Vec::with_capacity(needed);
        for &page in &bounce_pages[..needed] {
            match mem.phys(page) {
                Some(phys) if phys + PAGE_SIZE as u64 <= limit => bounce.push((page, phys)),
                _ => return Err(HalError::BouncePageTooHigh(page)),
            }
        }
        Ok(Self {
            inner: Rc::new(RefCell::new(HalInner {
                mem,
                config,
                bounce,
                mdls: Vec::new(),
                channel: ChannelState::Free,
                context_ready: false,
                mapping: None,
                queued_grant: false,
                put: false,
                next_base: 1,
                counters: HalCounters::default(),
                violations: Vec::new(),
                bus_master_off: None,
            })),
        })
    }

    /// How to take the device off the bus (the guest's config-space write
    /// of the command register), for [`DmaOps::disable_bus_master`].
    pub fn set_bus_master_control(&self, off: Box<dyn FnMut()>) {
        self.inner.borrow_mut().bus_master_off = Some(off);
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
        if byte_count == 0 || end > pages.len().checked_mul(PAGE_SIZE)? {
            return None;
        }
        let phys = pages
            .iter()
            .map(|&p| inner.mem.phys(p))
            .collect::<Option<Vec<u64>>>()?;
        let record = MdlRecord {
            pages: pages.to_vec(),
            phys,
            byte_offset,
            byte_count,
        };
        let slot = inner.mdls.iter().position(Option::is_none);
        let id = match slot {
            Some(i) => {
                inner.mdls[i] = Some(record);
                i
            }
            None => {
                inner.mdls.push(Some(record));
                inner.mdls.len() - 1
            }
        };
        Some(MdlId(u32::try_from(id).ok()?))
    }

    /// `MmUnlockPages` + `IoFreeMdl`. Unlocking a buffer that is still
    /// mapped, or twice, is a violation.
    pub fn unlock(&self, mdl: MdlId) {
        let mut inner = self.inner.borrow_mut();
        if inner.mapping.as_ref().is_some_and(|m| m.mdl == mdl) {
            inner.violate(0x0E, format!("MDL {mdl:?} unlocked while still mapped"));
        }
        match inner.mdls.get_mut(mdl.0 as usize) {
            Some(slot @ Some(_)) => *slot = None,
            _ => inner.violate(0, format!("MDL {mdl:?} unlocked twice or never locked")),
        }
    }

    /// The byte at `index` of the buffer an MDL describes.
    pub fn read_mdl(&self, mdl: MdlId, out: &mut [u8]) -> bool {
        self.access_mdl(mdl, |mem, page, in_page, range| {
            mem.read(page, in_page, &mut out[range]);
        })
    }

    /// Fill the buffer an MDL describes.
    pub fn write_mdl(&self, mdl: MdlId, data: &[u8]) -> bool {
        self.access_mdl(mdl, |mem, page, in_page, range| {
            mem.write(page, in_page, &data[range]);
        })
    }

    fn access_mdl(
        &self,
        mdl: MdlId,
        mut f: impl FnMut(&mut M, PageId, usize, std::ops::Range<usize>),
    ) -> bool {
        let mut inner = self.inner.borrow_mut();
        let Some(record) = inner.mdl(mdl).cloned() else {
            return false;
        };
        let mut done = 0;
        let mut pos = record.byte_offset;
        while done < record.byte_count {
            let Some(&page) = record.pages.get(pos / PAGE_SIZE) else {
                return false;
            };
            let in_page = pos % PAGE_SIZE;
            let chunk = (PAGE_SIZE - in_page).min(record.byte_count - done);
            f(&mut inner.mem, page, in_page, done..done + chunk);
            done += chunk;
            pos += chunk;
        }
        true
    }

    /// The queued execution routine runs now: the map-register base to feed
    /// to the engine's `channel_granted`, if an allocation was queued.
    pub fn take_queued_grant(&self) -> Option<MapBase> {
        let mut inner = self.inner.borrow_mut();
        if !inner.queued_grant {
            return None;
        }
        inner.queued_grant = false;
        match inner.channel {
            ChannelState::Queued { base, count } => {
                inner.channel = ChannelState::Granted { base, count };
                inner.counters.channels += 1;
                inner.counters.queued_grants += 1;
                Some(base)
            }
            _ => None,
        }
    }

    /// What the HAL counted.
    pub fn counters(&self) -> HalCounters {
        self.inner.borrow().counters
    }

    /// Every rule broken so far.
    pub fn violations(&self) -> Vec<Violation> {
        self.inner.borrow().violations.clone()
    }

    /// Leak check at the end of a run: the adapter was put, nothing is
    /// allocated or mapped, every buffer was unlocked, every map was flushed.
    pub fn leak_check(&self) -> Vec<Violation> {
        let inner = self.inner.borrow();
        let mut found = Vec::new();
        let mut push = |code, what: &str| {
            found.push(Violation {
                code,
                what: what.to_string(),
            })
        };
        if !inner.put {
            push(0x11, "the adapter was never put (PutDmaAdapter missing)");
        }
        if inner.channel != ChannelState::Free {
            push(0x08, "an adapter channel is still allocated");
        }
        if inner.mapping.is_some() {
            push(0x0D, "a mapped range was never flushed");
        }
        if inner.counters.maps != inner.counters.flushes {
            push(
                0x0D,
                "not every MapTransferEx was followed by FlushAdapterBuffersEx",
            );
        }
        if inner.mdls.iter().any(Option::is_some) {
            push(0, "a locked buffer was never unlocked");
        }
        found
    }

    /// Run a closure on the memory (for the tests' own checks).
    #[cfg(test)]
    pub fn with_memory<T>(&self, f: impl FnOnce(&mut M) -> T) -> T {
        f(&mut self.inner.borrow_mut().mem)
    }
}

impl<M: PhysMemory> HalDma<M> {
    fn guard(inner: &mut HalInner<M>, what: &str) -> bool {
        if inner.put {
            inner.violate(0x18, format!("{what} after PutDmaAdapter"));
            return false;
        }
        true
    }
}

impl<M: PhysMemory> DmaOps for HalDma<M> {
    type Mdl = MdlId;
    type MapRegisterBase = MapBase;

    fn get_dma_alignment(&mut self) -> u32 {
        1
    }

    fn get_dma_transfer_info(
        &mut self,
        mdl: MdlId,
        offset: u64,
        length: u32,
        _write_only: bool,
    ) -> Result<DmaTransferInfo, NtStatus> {
        let mut inner = self.inner.borrow_mut();
        if !Self::guard(&mut inner, "GetDmaTransferInfo") {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        if !inner.check_range(mdl, offset, length, "GetDmaTransferInfo") {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let byte_offset = inner.mdl(mdl).map_or(0, |r| r.byte_offset) as u64;
        let start = byte_offset + offset;
        let end = start + u64::from(length);
        let pages = end.div_ceil(PAGE_SIZE as u64) - start / PAGE_SIZE as u64;
        let pages = u32::try_from(pages).unwrap_or(u32::MAX);
        inner.counters.transfer_infos += 1;
        Ok(DmaTransferInfo {
            map_register_count: pages,
            scatter_gather_element_count: pages,
            scatter_gather_list_size: pages.saturating_mul(16).saturating_add(64),
        })
    }

    fn initialize_dma_transfer_context(&mut self) -> Result<(), NtStatus> {
        let mut inner = self.inner.borrow_mut();
        if !Self::guard(&mut inner, "InitializeDmaTransferContext") {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        if inner.channel != ChannelState::Free {
            inner.violate(
                0,
                "InitializeDmaTransferContext on a context that a channel request still uses",
            );
        }
        inner.context_ready = true;
        Ok(())
    }

    fn allocate_adapter_channel_ex(
        &mut self,
        map_register_count: u32,
        mode: AllocationMode,
    ) -> Result<AllocateOutcome<MapBase>, NtStatus> {
        let mut inner = self.inner.borrow_mut();
        if !Self::guard(&mut inner, "AllocateAdapterChannelEx") {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        if inner.channel != ChannelState::Free {
            inner.violate(
                0x0B,
                "a second adapter channel requested while one is outstanding",
            );
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        if map_register_count > inner.config.map_registers {
            let max = inner.config.map_registers;
            inner.violate(
                0x15,
                format!("{map_register_count} map registers requested, the adapter has {max}"),
            );
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        if !inner.context_ready {
            inner.violate(
                0,
                "AllocateAdapterChannelEx without a fresh InitializeDmaTransferContext",
            );
        }
        let base = MapBase(inner.next_base);
        inner.next_base = inner.next_base.wrapping_add(1).max(1);
        match mode {
            AllocationMode::Synchronous if inner.config.sync_busy => {
                inner.counters.sync_refusals += 1;
                Err(NtStatus::INSUFFICIENT_RESOURCES)
            }
            AllocationMode::Asynchronous if inner.config.queue_async => {
                inner.context_ready = false;
                inner.channel = ChannelState::Queued {
                    base,
                    count: map_register_count,
                };
                inner.queued_grant = true;
                Ok(AllocateOutcome::Queued)
            }
            _ => {
                inner.context_ready = false;
                inner.channel = ChannelState::Granted {
                    base,
                    count: map_register_count,
                };
                inner.counters.channels += 1;
                Ok(AllocateOutcome::Granted(base))
            }
        }
    }

    fn cancel_adapter_channel(&mut self) -> bool {
        let mut inner = self.inner.borrow_mut();
        match inner.channel {
            ChannelState::Queued { .. } => {
                inner.channel = ChannelState::Free;
                inner.queued_grant = false;
                true
            }
            ChannelState::Granted { .. } => false,
            ChannelState::Free => {
                inner.violate(0, "CancelAdapterChannel with no channel request");
                false
            }
        }
    }

    fn map_transfer_ex(
        &mut self,
        mdl: MdlId,
        map_register_base: MapBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        let mut inner = self.inner.borrow_mut();
        sg.clear();
        if !Self::guard(&mut inner, "MapTransferEx") {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        let count = match inner.channel {
            ChannelState::Granted { base, count } if base == map_register_base => count,
            ChannelState::Granted { .. } => {
                inner.violate(
                    0x05,
                    "MapTransferEx with a map-register base of another grant",
                );
                return Err(NtStatus::INVALID_PARAMETER);
            }
            _ => {
                inner.violate(0x04, "MapTransferEx without a granted channel");
                return Err(NtStatus::INVALID_PARAMETER);
            }
        };
        if inner.mapping.is_some() {
            inner.violate(0x1D, "MapTransferEx while the previous map is not flushed");
            return Err(NtStatus::INVALID_PARAMETER);
        }
        if !inner.check_range(mdl, offset, length, "MapTransferEx") {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let Some(record) = inner.mdl(mdl).cloned() else {
            return Err(NtStatus::INVALID_PARAMETER);
        };
        // The pages must still be where they were locked.
        for (&page, &locked) in record.pages.iter().zip(&record.phys) {
            let now = inner.mem.phys(page);
            if now != Some(locked) {
                inner.violate(
                    0x0E,
                    format!("locked page {page} moved from {locked:#x} to {now:x?}"),
                );
                return Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
        }
        let limit = inner.limit();
        let mut pos = record.byte_offset + offset as usize;
        let mut remaining = length as usize;
        let mut mapped = 0usize;
        let mut registers = 0u32;
        let mut bounced = Vec::new();
        let mut poison = [BOUNCE_POISON; PAGE_SIZE];
        let mut copy = [0u8; PAGE_SIZE];
        while remaining > 0 && registers < count {
            let index = pos / PAGE_SIZE;
            let in_page = pos % PAGE_SIZE;
            let chunk = (PAGE_SIZE - in_page).min(remaining);
            let (Some(&page), Some(&phys)) = (record.pages.get(index), record.phys.get(index))
            else {
                break;
            };
            let direct = phys + (in_page + chunk) as u64 <= limit;
            let address = if direct {
                phys + in_page as u64
            } else {
                let Some(&(_, bounce_phys)) = inner.bounce.get(registers as usize) else {
                    break;
                };
                bounce_phys + in_page as u64
            };
            // Coalesce with the previous element when physically adjacent.
            let merged = sg
                .as_slice()
                .last()
                .is_some_and(|last| last.address + u64::from(last.length) == address);
            if !merged && sg.len() == MAX_SG_ELEMENTS {
                break;
            }
            if merged {
                let mut elements: Vec<SgElement> = sg.as_slice().to_vec();
                if let Some(last) = elements.last_mut() {
                    last.length += chunk as u32;
                }
                sg.clear();
                for e in elements {
                    sg.push(e);
                }
            } else {
                sg.push(SgElement {
                    address,
                    length: chunk as u32,
                });
            }
            if direct {
                inner.counters.direct_pages += 1;
            } else {
                let bounce = inner.bounce[registers as usize].0;
                if write_to_device {
                    inner.mem.read(page, in_page, &mut copy[..chunk]);
                    inner.mem.write(bounce, in_page, &copy[..chunk]);
                    inner.counters.bounce_bytes_in += chunk as u64;
                } else {
                    poison.fill(BOUNCE_POISON);
                    inner.mem.write(bounce, in_page, &poison[..chunk]);
                }
                inner.counters.bounced_pages += 1;
                bounced.push(Bounced {
                    page,
                    bounce,
                    in_page,
                    len: chunk,
                });
            }
            registers += 1;
            mapped += chunk;
            remaining -= chunk;
            pos += chunk;
        }
        if mapped == 0 {
            sg.clear();
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        inner.counters.maps += 1;
        if mapped < length as usize {
            inner.counters.partial_maps += 1;
        }
        inner.counters.sg_elements += sg.len() as u64;
        inner.counters.max_sg_elements = inner.counters.max_sg_elements.max(sg.len() as u64);
        inner.mapping = Some(MapRecord {
            mdl,
            offset,
            length: mapped as u32,
            write_to_device,
            bounced,
        });
        Ok(mapped as u32)
    }

    fn flush_adapter_buffers_ex(
        &mut self,
        mdl: MdlId,
        map_register_base: MapBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        let mut inner = self.inner.borrow_mut();
        if !Self::guard(&mut inner, "FlushAdapterBuffersEx") {
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        match inner.channel {
            ChannelState::Granted { base, .. } if base == map_register_base => {}
            _ => inner.violate(0x23, "FlushAdapterBuffersEx without the granted channel"),
        }
        let Some(map) = inner.mapping.take() else {
            inner.violate(0x16, "FlushAdapterBuffersEx of a range that is not mapped");
            return Err(NtStatus::INVALID_PARAMETER);
        };
        if map.mdl != mdl
            || map.offset != offset
            || map.length != length
            || map.write_to_device != write_to_device
        {
            inner.violate(
                0x16,
                format!(
                    "FlushAdapterBuffersEx({mdl:?}, {offset}, {length}, {write_to_device}) does not match \
                     MapTransferEx({:?}, {}, {}, {})",
                    map.mdl, map.offset, map.length, map.write_to_device
                ),
            );
        }
        if !map.write_to_device {
            let mut copy = [0u8; PAGE_SIZE];
            for b in &map.bounced {
                inner.mem.read(b.bounce, b.in_page, &mut copy[..b.len]);
                inner.mem.write(b.page, b.in_page, &copy[..b.len]);
                inner.counters.bounce_bytes_out += b.len as u64;
            }
        }
        inner.counters.flushes += 1;
        Ok(())
    }

    fn free_adapter_channel(&mut self) {
        let mut inner = self.inner.borrow_mut();
        if !Self::guard(&mut inner, "FreeAdapterChannel") {
            return;
        }
        if inner.mapping.is_some() {
            inner.violate(0x10, "FreeAdapterChannel while a range is still mapped");
            inner.mapping = None;
        }
        match inner.channel {
            ChannelState::Granted { .. } => {
                inner.channel = ChannelState::Free;
                inner.counters.frees += 1;
            }
            _ => inner.violate(0x04, "FreeAdapterChannel without a granted channel"),
        }
    }

    fn free_map_registers(&mut self, _map_register_base: MapBase, _map_register_count: u32) {
        let mut inner = self.inner.borrow_mut();
        inner.violate(
            0x05,
            "FreeMapRegisters on a KeepObject grant (FreeAdapterChannel frees them)",
        );
    }

    fn put_dma_adapter(&mut self) {
        let mut inner = self.inner.borrow_mut();
        if inner.put {
            inner.violate(0x18, "PutDmaAdapter twice");
            return;
        }
        if inner.channel != ChannelState::Free {
            inner.violate(0x08, "PutDmaAdapter with an adapter channel outstanding");
        }
        if inner.mapping.is_some() {
            inner.violate(0x09, "PutDmaAdapter with map registers still mapped");
        }
        inner.put = true;
    }

    fn disable_bus_master(&mut self) {
        let mut inner = self.inner.borrow_mut();
        inner.counters.bus_master_disabled += 1;
        if let Some(off) = inner.bus_master_off.as_mut() {
            off();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    impl PhysMemory for FakeMemory {
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
    fn hal(map_registers: u32) -> HalHandle<FakeMemory> {
        let mem = FakeMemory::new(&[MB, MB + 4096, 10 * MB, 10 * MB + 4096, 300 * MB, 20 * MB]);
        let config = HalConfig {
            map_registers,
            ..HalConfig::default()
        };
        HalHandle::new(mem, config, &[0, 1]).unwrap()
    }

    fn grant(ops: &mut HalDma<FakeMemory>, count: u32) -> MapBase {
        ops.initialize_dma_transfer_context().unwrap();
        match ops
            .allocate_adapter_channel_ex(count, AllocationMode::Synchronous)
            .unwrap()
        {
            AllocateOutcome::Granted(base) => base,
            AllocateOutcome::Queued => panic!("queued"),
        }
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
        assert!(hal.violations().is_empty());
        assert!(hal.leak_check().is_empty());
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
        assert_eq!(hal.counters().bounced_pages, 2);
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
        assert_eq!(hal.counters().partial_maps, 1);
        assert!(hal.violations().is_empty());
    }

    #[test]
    fn verifier_catches_misuse() {
        let hal = hal(1);
        let mut ops = hal.dma_ops();
        let mdl = hal.lock_pages(&[2], 0, 10).unwrap();
        ops.initialize_dma_transfer_context().unwrap();
        assert!(
            ops.allocate_adapter_channel_ex(2, AllocationMode::Synchronous)
                .is_err()
        );
        let base = grant(&mut ops, 1);
        let mut sg = SgList::new();
        ops.map_transfer_ex(mdl, base, 0, 10, true, &mut sg)
            .unwrap();
        assert!(
            ops.map_transfer_ex(mdl, base, 0, 10, true, &mut sg)
                .is_err()
        );
        ops.flush_adapter_buffers_ex(mdl, base, 0, 9, true).unwrap();
        ops.free_adapter_channel();
        ops.free_adapter_channel();
        ops.put_dma_adapter();
        ops.put_dma_adapter();
        let codes: Vec<u32> = hal.violations().iter().map(|v| v.code).collect();
        assert_eq!(codes, vec![0x15, 0x1D, 0x16, 0x04, 0x18]);
        assert_eq!(hal.leak_check().len(), 1, "the MDL is still locked");
    }
}
