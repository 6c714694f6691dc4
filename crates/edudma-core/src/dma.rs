//! The DMA operations of one adapter, as the HAL offers them (version 3, and
//! version 1's packet-based routines), and the plain data they exchange.
//!
//! [`DmaOps`] is the seam between the engine and a DMA implementation: the
//! Windows glue implements it over `DMA_OPERATIONS` function pointers, the
//! simulator over its HAL model, the hardware-in-the-loop harness over real
//! guest memory. The engine never calls it directly: it goes through the
//! typed tokens of [`crate::protocol`], which fix the order of the calls.

use core::fmt::Debug;

use crate::status::NtStatus;

/// `DMA_TRANSFER_INFO_V1`: what `GetDmaTransferInfo` says a transfer needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaTransferInfo {
    /// Map registers needed to map the whole transfer at once.
    pub map_register_count: u32,
    /// Scatter/gather elements needed to describe it.
    pub scatter_gather_element_count: u32,
    /// Bytes of scatter/gather buffer `MapTransferEx` needs for it
    /// (including HAL-private space).
    pub scatter_gather_list_size: u32,
}

/// How `AllocateAdapterChannelEx` is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocationMode {
    /// `DMA_SYNCHRONOUS_CALLBACK`: never waits; `STATUS_INSUFFICIENT_RESOURCES`
    /// when the channel or map registers are not free right now.
    Synchronous,
    /// Flags 0: the execution routine runs when the resources are free —
    /// possibly before the call returns, on the calling CPU.
    Asynchronous,
}

/// What a successful `AllocateAdapterChannelEx` call led to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllocateOutcome<B> {
    /// The channel is ours now: a synchronous grant, or an asynchronous one
    /// whose execution routine already ran (inside the call or on another
    /// CPU before the call returned). `B` is the map-register base.
    Granted(B),
    /// Queued: the execution routine will run later and the glue will feed
    /// the grant to the engine as an event.
    Queued,
}

/// One scatter/gather element: a bus-logical address range the device may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SgElement {
    /// Logical (bus) address of the range.
    pub address: u64,
    /// Length of the range in bytes.
    pub length: u32,
}

/// How many scatter/gather elements one mapping may have. A transfer that
/// needs more is mapped partially and finished by further mappings.
pub const MAX_SG_ELEMENTS: usize = 16;

/// A fixed-capacity scatter/gather list, owned by the engine so that the I/O
/// path never allocates. `MapTransferEx` implementations fill it.
#[derive(Clone, Debug)]
pub struct SgList {
    elements: [SgElement; MAX_SG_ELEMENTS],
    len: usize,
}

impl Default for SgList {
    fn default() -> Self {
        Self::new()
    }
}

impl SgList {
    /// An empty list.
    pub const fn new() -> Self {
        Self {
            elements: [SgElement {
                address: 0,
                length: 0,
            }; MAX_SG_ELEMENTS],
            len: 0,
        }
    }

    /// Forget every element.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Append an element; `false` (and nothing stored) when the list is full.
    pub fn push(&mut self, element: SgElement) -> bool {
        match self.elements.get_mut(self.len) {
            Some(slot) => {
                *slot = element;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// The elements stored.
    pub fn as_slice(&self) -> &[SgElement] {
        &self.elements[..self.len]
    }

    /// Number of elements stored.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no element is stored.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Room for more elements.
    pub fn is_full(&self) -> bool {
        self.len == MAX_SG_ELEMENTS
    }

    /// Total bytes described by the elements.
    pub fn total_length(&self) -> u64 {
        self.as_slice().iter().map(|e| u64::from(e.length)).sum()
    }
}

/// The page size of every Windows architecture the driver builds for.
pub const PAGE_SIZE: u32 = 4096;

/// `ADDRESS_AND_SIZE_TO_SPAN_PAGES(Va, Size)` for a virtual address whose
/// offset in its page (`BYTE_OFFSET(Va)`) is `page_offset`: the pages the
/// range touches, 0 for an empty range.
pub const fn span_pages(page_offset: u32, size: u32) -> u32 {
    if size == 0 {
        return 0;
    }
    let first = (page_offset % PAGE_SIZE) as u64;
    ((first + size as u64).div_ceil(PAGE_SIZE as u64)) as u32
}

/// Where a byte offset of an MDL chain falls, as the version-1 routines
/// (which take one MDL and a `CurrentVa` in it) need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MdlSpot {
    /// `BYTE_OFFSET` of the byte's virtual address
    /// (`MmGetMdlVirtualAddress` of its MDL plus the offset in that MDL).
    pub page_offset: u32,
    /// Bytes from the byte to the end of its MDL: one `MapTransfer` never
    /// crosses an MDL.
    pub bytes_to_mdl_end: u32,
}

/// How a scatter/gather list is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListBuffer {
    /// `BuildScatterGatherList` into the implementation's own buffer
    /// (allocated at start: nothing allocates on the I/O path).
    Driver,
    /// `GetScatterGatherList`: the HAL allocates the list.
    Hal,
}

/// The version-3 DMA routines of one adapter (`DMA_OPERATIONS`), exactly as
/// the HAL offers them to a bus-master driver, the version-1 routines of
/// the packet-based sequence and the scatter/gather-list routines (the
/// members every version of the table has).
///
/// `MapRegisterBase` is the handle a grant delivers: a map-register base
/// for `AllocateAdapterChannel[Ex]`, the `PSCATTER_GATHER_LIST` for
/// `Get`/`BuildScatterGatherList` (both a `PVOID` the routine is given).
///
/// Parameters are those of the DDIs; what the implementation owns instead of
/// taking it per call is said on each method. The implementation keeps one
/// transfer context (`DMA_TRANSFER_CONTEXT_SIZE_V1` bytes) and one
/// scatter/gather buffer, both allocated at start: there is at most one
/// request in flight per adapter.
pub trait DmaOps {
    /// Opaque handle of an MDL chain (`PMDL` on Windows).
    type Mdl: Copy + Eq + Debug;
    /// Opaque handle of allocated map registers (`PVOID MapRegisterBase`).
    type MapRegisterBase: Copy + Eq + Debug;

    /// `GetDmaAlignment`: the buffer alignment the adapter needs. The DDI
    /// runs at PASSIVE_LEVEL, but the engine asks from `start_device`, which
    /// a glue may call under its spin lock: implementations call the DDI when
    /// the adapter is obtained and return that value here.
    fn get_dma_alignment(&mut self) -> u32;

    /// `GetDmaTransferInfo` with `DMA_TRANSFER_INFO_VERSION1`. `write_only` is
    /// true for a memory → device transfer.
    fn get_dma_transfer_info(
        &mut self,
        mdl: Self::Mdl,
        offset: u64,
        length: u32,
        write_only: bool,
    ) -> Result<DmaTransferInfo, NtStatus>;

    /// `InitializeDmaTransferContext` on the implementation's context.
    fn initialize_dma_transfer_context(&mut self) -> Result<(), NtStatus>;

    /// `AllocateAdapterChannelEx` with the implementation's context and its
    /// execution routine (which returns `KeepObject`). In
    /// [`AllocationMode::Synchronous`] a busy adapter gives
    /// `Err(STATUS_INSUFFICIENT_RESOURCES)`.
    fn allocate_adapter_channel_ex(
        &mut self,
        map_register_count: u32,
        mode: AllocationMode,
    ) -> Result<AllocateOutcome<Self::MapRegisterBase>, NtStatus>;

    /// `CancelAdapterChannel`: true when the queued request was cancelled
    /// (the execution routine will never run), false when it was already
    /// granted (the routine runs or ran; its grant will still arrive).
    fn cancel_adapter_channel(&mut self) -> bool;

    /// `MapTransferEx` for a bus master (`DeviceOffset` 0, no completion
    /// routine), with the implementation's scatter/gather buffer. Returns the
    /// bytes mapped — fewer than `length` when map registers or the
    /// scatter/gather buffer ran short — and fills `sg` with the elements.
    #[allow(clippy::too_many_arguments)]
    fn map_transfer_ex(
        &mut self,
        mdl: Self::Mdl,
        map_register_base: Self::MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus>;

    /// `FlushAdapterBuffersEx`, with the same MDL, offset, length and
    /// direction as the `MapTransferEx` it ends.
    fn flush_adapter_buffers_ex(
        &mut self,
        mdl: Self::Mdl,
        map_register_base: Self::MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus>;

    /// `FreeAdapterChannel` (DISPATCH_LEVEL): frees the channel and the map
    /// registers of a `KeepObject` grant.
    fn free_adapter_channel(&mut self);

    /// `FreeMapRegisters` (DISPATCH_LEVEL), for a grant whose routine
    /// returned `DeallocateObjectKeepRegisters`: the end of a version-1
    /// transfer, with the base and count of its `AllocateAdapterChannel`.
    fn free_map_registers(
        &mut self,
        map_register_base: Self::MapRegisterBase,
        map_register_count: u32,
    );

    /// `PutDmaAdapter`: releases the adapter. Nothing may be outstanding.
    fn put_dma_adapter(&mut self);

    // ---- version 1: the packet-based sequence ---------------------------

    /// `KeFlushIoBuffers(Mdl, ReadOperation, TRUE)` before a version-1
    /// transfer (`read_operation`: device → memory).
    fn flush_io_buffers(&mut self, mdl: Self::Mdl, read_operation: bool);

    /// Where `offset` of the chain `mdl` falls (`MmGetMdlVirtualAddress`),
    /// `None` past its end.
    fn locate(&mut self, mdl: Self::Mdl, offset: u64) -> Option<MdlSpot>;

    /// `AllocateAdapterChannel` with the implementation's `AdapterControl`
    /// routine, which returns `DeallocateObjectKeepRegisters`: the adapter
    /// object is released when it returns, the map registers stay held
    /// until [`DmaOps::free_map_registers`]. The routine may run inside the
    /// call (`Granted`) or later (`Queued`); a version-1 request cannot be
    /// cancelled.
    fn allocate_adapter_channel(
        &mut self,
        map_register_count: u32,
    ) -> Result<AllocateOutcome<Self::MapRegisterBase>, NtStatus>;

    /// `MapTransfer` of `length` bytes at `offset` of the chain, inside one
    /// MDL (the engine never asks across one, nor for more pages than the
    /// map registers held): one logically contiguous range.
    fn map_transfer(
        &mut self,
        mdl: Self::Mdl,
        map_register_base: Self::MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<SgElement, NtStatus>;

    /// `CalculateScatterGatherList` for `length` bytes at `offset` of the
    /// chain (inside one MDL): the bytes its list needs.
    fn calculate_scatter_gather_list(
        &mut self,
        mdl: Self::Mdl,
        offset: u64,
        length: u32,
    ) -> Result<u32, NtStatus>;

    /// Bytes of the implementation's list buffer ([`ListBuffer::Driver`]).
    fn scatter_gather_buffer_bytes(&self) -> u32;

    /// `BuildScatterGatherList` or `GetScatterGatherList` of `length` bytes at
    /// `offset` of the chain (inside one MDL), with the implementation's
    /// `AdapterListControl` routine, which hands its list over like the
    /// execution routine hands a grant (`Granted` inside the call, or
    /// `Queued`). The list cannot be cancelled: its routine always runs.
    fn get_scatter_gather_list(
        &mut self,
        buffer: ListBuffer,
        mdl: Self::Mdl,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<AllocateOutcome<Self::MapRegisterBase>, NtStatus>;

    /// The elements of a list the routine was given, into `sg`; false when
    /// they do not fit.
    fn scatter_gather_elements(&mut self, list: Self::MapRegisterBase, sg: &mut SgList) -> bool;

    /// `PutScatterGatherList` with the direction the list was asked for: the
    /// HAL flushes it and frees its map registers.
    fn put_scatter_gather_list(&mut self, list: Self::MapRegisterBase, write_to_device: bool);

    // ---- the common buffer ------------------------------------------------

    /// Copy `length` bytes at `offset` of the chain into the common buffer
    /// the glue allocated at start (`MmGetSystemAddressForMdlSafe` of each
    /// MDL of the range), from its first byte.
    fn copy_to_common_buffer(
        &mut self,
        mdl: Self::Mdl,
        offset: u64,
        length: u32,
    ) -> Result<(), NtStatus>;

    /// Copy the common buffer's first `length` bytes into the chain at
    /// `offset`.
    fn copy_from_common_buffer(
        &mut self,
        mdl: Self::Mdl,
        offset: u64,
        length: u32,
    ) -> Result<(), NtStatus>;

    /// `FreeCommonBuffer` with the arguments of its `AllocateCommonBuffer`
    /// (PASSIVE_LEVEL: only [`crate::protocol::QuietAdapter::release`]
    /// calls it, from the glue's stop path).
    fn free_common_buffer(&mut self);

    /// The adapter is quiet and holds a common buffer: nothing uses it any
    /// more, and the glue may release it at PASSIVE_LEVEL (what a put
    /// tells the glue otherwise).
    fn adapter_quiet(&mut self);

    /// `FlushAdapterBuffers` with the MDL, `CurrentVa`, length and direction
    /// of the `MapTransfer` it ends.
    fn flush_adapter_buffers(
        &mut self,
        mdl: Self::Mdl,
        map_register_base: Self::MapRegisterBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus>;

    /// Clear Bus Master Enable in the device's PCI command register (through
    /// the bus driver's `BUS_INTERFACE_STANDARD`, callable at DISPATCH_LEVEL).
    /// The engine calls it before it flushes and frees the mapping of a
    /// command the device may still own (a timeout, a surprise removal):
    /// the edu device cannot abort a command, and once its mapping is gone a
    /// late DMA must not reach memory. The device stays off the bus until
    /// the next start.
    fn disable_bus_master(&mut self);

    /// Bus Master Enable is still set in the device's PCI command register
    /// (read through the same interface). Someone else may clear it — a
    /// bus driver, a tool writing config space — and then edu's DMA reaches
    /// no memory and its MSI is lost while its status still says done: the
    /// engine asks at every command the device reports finished, so such a
    /// request fails instead of succeeding with bytes that never moved. An
    /// unreadable register counts as cleared.
    fn bus_master_enabled(&mut self) -> bool;

    /// Set Bus Master Enable and read it back (true: set). The engine calls
    /// it at start once it knows the device owns no command from before —
    /// a device that is still running one must stay off the bus, or that
    /// command's late DMA would reach memory the HAL has since handed out.
    fn enable_bus_master(&mut self) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sg_list_is_bounded() {
        let mut sg = SgList::new();
        for i in 0..MAX_SG_ELEMENTS {
            assert!(sg.push(SgElement {
                address: i as u64 * 4096,
                length: 10,
            }));
        }
        assert!(sg.is_full());
        assert!(!sg.push(SgElement::default()));
        assert_eq!(sg.len(), MAX_SG_ELEMENTS);
        assert_eq!(sg.total_length(), 10 * MAX_SG_ELEMENTS as u64);
        sg.clear();
        assert!(sg.is_empty());
    }

    #[test]
    fn span_pages_is_the_macro() {
        assert_eq!(span_pages(0, 0), 0);
        assert_eq!(span_pages(0, 1), 1);
        assert_eq!(span_pages(0, 4096), 1);
        assert_eq!(span_pages(1, 4096), 2);
        assert_eq!(span_pages(4095, 2), 2);
        assert_eq!(span_pages(4096 + 5, 10), 1);
        assert_eq!(span_pages(100, 3 * 4096), 4);
    }
}
