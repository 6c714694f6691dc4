//! `DmaOps` over the `DMA_OPERATIONS` function pointers of one adapter, the
//! execution routine (version 3), the `AdapterControl` routine (version 1)
//! and the `AdapterListControl` routine (scatter/gather lists), and the
//! grant DPC that hands a late grant or list to the engine.
//!
//! `DMA_ADAPTER.DmaOperations` and the `DMA_OPERATIONS` members are named C
//! members (H); each is an `Option<unsafe extern "C" fn>` in wdk-sys, called
//! as the project reference shows: `(*(*adapter).DmaOperations).MapTransferEx`.

use core::ffi::c_void;
use core::ptr;

use edudma_core::NtStatus;
use edudma_core::dma::{
    AllocateOutcome, AllocationMode, DmaOps, DmaTransferInfo, ListBuffer, MdlSpot, SgElement,
    SgList,
};
use edudma_core::grant::{Delivery, Settled};
use edudma_core::protocol::CommonBuffer;
use wdk_sys::ntddk::{KeInsertQueueDpc, KeSetEvent};
use wdk_sys::{
    _IO_ALLOCATION_ACTION, DEVICE_OBJECT, DMA_ADAPTER, DMA_OPERATIONS, DMA_TRANSFER_INFO,
    IO_ALLOCATION_ACTION, IO_NO_INCREMENT, IRP, KDPC, MDL, PHYSICAL_ADDRESS, PVOID,
    SCATTER_GATHER_LIST,
};

use crate::device::DeviceExtension;
use crate::ffi;
use crate::startio::deliver;

/// Words of the DMA transfer context.
pub const CONTEXT_WORDS: usize = ffi::DMA_TRANSFER_CONTEXT_SIZE_V1.div_ceil(size_of::<usize>());
/// Words of the scatter/gather buffer: 4 KiB, far more than the two
/// elements plus HAL-private space a 4096-byte transfer needs.
pub const SG_BUFFER_WORDS: usize = 512;

/// The page size of every Windows architecture this driver builds for.
const PAGE: usize = 4096;

/// An MDL chain handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MdlRef(pub *mut MDL);

/// A map-register base handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapBase(pub *mut c_void);

/// The version-3 DMA operations of our adapter.
#[derive(Debug)]
pub struct WinDma {
    adapter: *mut DMA_ADAPTER,
    ext: *const DeviceExtension,
    /// `GetDmaAlignment`, asked at PASSIVE_LEVEL (its documented IRQL) when
    /// the adapter is obtained: the engine asks for it under its spin lock.
    alignment: u32,
    /// The common buffer `AllocateCommonBuffer` gave (`common-buffer`):
    /// every argument its `FreeCommonBuffer` must repeat.
    common: Option<AllocatedCommonBuffer>,
}

/// One `AllocateCommonBuffer`: what it returned and was given.
#[derive(Clone, Copy, Debug)]
struct AllocatedCommonBuffer {
    virtual_address: *mut u8,
    logical: i64,
    length: u32,
}

/// `CacheEnabled` of the common buffer: FALSE, so the CPU's copies and the
/// device's DMA need no flush between them.
const COMMON_BUFFER_CACHED: u8 = 0;

impl WinDma {
    /// What `GetDmaAlignment` returned: the DMA system's alignment in bytes.
    pub fn alignment(&self) -> u32 {
        self.alignment
    }

    /// Wrap the adapter `IoGetDmaAdapter` returned for `ext`'s device.
    /// PASSIVE_LEVEL (it calls `GetDmaAlignment`).
    pub fn new(adapter: *mut DMA_ADAPTER, ext: &DeviceExtension) -> Self {
        // SAFETY: a live adapter from IoGetDmaAdapter; its operations table
        // stays valid until PutDmaAdapter.
        let get_alignment = unsafe { (*(*adapter).DmaOperations).GetDmaAlignment };
        let alignment = match get_alignment {
            // SAFETY: PASSIVE_LEVEL (start), a live adapter.
            Some(f) => unsafe { f(adapter) },
            None => 1,
        };
        Self {
            adapter,
            ext: ptr::from_ref(ext),
            alignment,
            common: None,
        }
    }

    /// `AllocateCommonBuffer` of one page, uncached (PASSIVE_LEVEL, at start,
    /// before the engine takes the adapter): what the engine is told, or
    /// `None` when the HAL has none.
    pub fn allocate_common_buffer(&mut self) -> Option<CommonBuffer> {
        let f = self.ops().AllocateCommonBuffer?;
        let length = PAGE as u32;
        let mut logical = PHYSICAL_ADDRESS { QuadPart: 0 };
        // SAFETY: PASSIVE_LEVEL, a live adapter, a valid out pointer.
        let va = unsafe { f(self.adapter, length, &mut logical, COMMON_BUFFER_CACHED) };
        if va.is_null() {
            return None;
        }
        // SAFETY: QuadPart is the 64-bit view of PHYSICAL_ADDRESS.
        let logical = unsafe { logical.QuadPart };
        self.common = Some(AllocatedCommonBuffer {
            virtual_address: va.cast(),
            logical,
            length,
        });
        Some(CommonBuffer {
            logical: logical as u64,
            length,
        })
    }

    /// Copy between `length` bytes at `offset` of the chain and the common
    /// buffer's first bytes, MDL by MDL (`MmGetSystemAddressForMdlSafe`).
    fn copy_common(
        &mut self,
        mdl: MdlRef,
        offset: u64,
        length: u32,
        into_common: bool,
    ) -> Result<(), NtStatus> {
        let common = self.common.ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
        if length > common.length {
            return Err(NtStatus::INVALID_BUFFER_SIZE);
        }
        let mut done = 0u32;
        while done < length {
            // SAFETY: the caller's live chain.
            let (held_by, in_mdl) = unsafe { ffi::mdl_at(mdl.0, offset + u64::from(done)) }
                .ok_or(NtStatus::INVALID_PARAMETER)?;
            // SAFETY: a live, locked MDL of the chain; DISPATCH_LEVEL at most.
            let (system, bytes) = unsafe {
                (
                    ffi::system_address_for_mdl(held_by),
                    ffi::mdl_byte_count(held_by),
                )
            };
            if system.is_null() {
                return Err(NtStatus::INSUFFICIENT_RESOURCES);
            }
            let piece = (bytes - in_mdl).min(length - done);
            // SAFETY: `piece` bytes inside both the MDL's system mapping and
            // the common buffer (`length` fits it); they do not overlap.
            unsafe {
                let user = system.add(in_mdl as usize);
                let shared = common.virtual_address.add(done as usize);
                if into_common {
                    ptr::copy_nonoverlapping(user, shared, piece as usize);
                } else {
                    ptr::copy_nonoverlapping(shared, user, piece as usize);
                }
            }
            done += piece;
        }
        Ok(())
    }

    fn ext(&self) -> &DeviceExtension {
        // SAFETY: the extension outlives the engine that owns this value.
        unsafe { &*self.ext }
    }

    fn ops(&self) -> &DMA_OPERATIONS {
        // SAFETY: a live adapter from IoGetDmaAdapter has a valid operations
        // table until PutDmaAdapter, after which the engine drops this value.
        unsafe { &*(*self.adapter).DmaOperations }
    }

    fn context(&self) -> PVOID {
        self.ext().dma_context.get().cast()
    }
}

/// The execution routine (`DRIVER_CONTROL`) of every `AllocateAdapterChannelEx`.
/// Runs at DISPATCH_LEVEL, possibly inside the allocating call on the same
/// CPU — or inside any other DMA call the engine makes under its lock — so
/// it never takes that lock: the core's `GrantSlot` decides whether the
/// allocating call picks the grant up, or a DPC hands it to the engine.
///
/// It returns `KeepObject`: the channel and its map registers stay held
/// until the transfer ends, and one `FreeAdapterChannel` gives both back
/// (step 9 of the version-3 sequence). Learn (IO_ALLOCATION_ACTION) says a
/// packet-based bus master "should return DeallocateObjectKeepRegisters",
/// which frees the adapter object here so that another device object can
/// allocate it while this one's map registers stay held (then released with
/// `FreeMapRegisters`). That buys nothing here: the adapter IoGetDmaAdapter
/// returned serves this one device, whose StartIo never asks for a second
/// channel before the first is freed; keeping the object makes the one
/// documented v3 release, `FreeAdapterChannel`, the only one. `_device` is
/// the PDO the allocation named (Learn).
unsafe extern "C" fn execution_routine(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    map_register_base: PVOID,
    context: PVOID,
) -> IO_ALLOCATION_ACTION {
    // SAFETY: `context` is the extension we passed to AllocateAdapterChannelEx.
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    if let Delivery::ToEngine(base) = ext.grant.deliver(map_register_base as usize) {
        // The allocating call already returned `Queued`. One channel request
        // is outstanding at a time, so this DPC is never still queued with
        // an older grant: SystemArgument1 carries the base.
        // SAFETY: the DPC object was initialized in AddDevice and lives in
        // the nonpaged extension.
        unsafe {
            KeInsertQueueDpc(ext.grant_dpc.get(), base as PVOID, ptr::null_mut());
        }
    }
    // Step 9 frees channel and map registers with FreeAdapterChannel.
    _IO_ALLOCATION_ACTION::KeepObject
}

/// The `AdapterControl` routine (`DRIVER_CONTROL`) of every version-1
/// `AllocateAdapterChannel`: the grant goes to the engine exactly as the
/// execution routine's does. It returns `DeallocateObjectKeepRegisters`, the
/// bus-master ending Learn documents (IO_ALLOCATION_ACTION, "Adapter
/// Control routine"): the adapter object is released at once, the map
/// registers stay held until the transfer's `FreeMapRegisters`.
unsafe extern "C" fn adapter_control(
    device: *mut DEVICE_OBJECT,
    irp: *mut IRP,
    map_register_base: PVOID,
    context: PVOID,
) -> IO_ALLOCATION_ACTION {
    // SAFETY: forwarded; `context` is our extension.
    let _ = unsafe { execution_routine(device, irp, map_register_base, context) };
    _IO_ALLOCATION_ACTION::DeallocateObjectKeepRegisters
}

/// The list routine (`DRIVER_LIST_CONTROL`) of every `BuildScatterGatherList`
/// and `GetScatterGatherList`: at DISPATCH_LEVEL, possibly inside the call;
/// the list goes to the engine exactly as the execution routine's grant
/// does, and stays the driver's until `PutScatterGatherList`.
unsafe extern "C" fn adapter_list_control(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    scatter_gather: *mut SCATTER_GATHER_LIST,
    context: PVOID,
) {
    // SAFETY: `context` is the extension we passed with the request.
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    if let Delivery::ToEngine(list) = ext.grant.deliver(scatter_gather as usize) {
        // SAFETY: as in the execution routine: one request outstanding.
        unsafe {
            KeInsertQueueDpc(ext.grant_dpc.get(), list as PVOID, ptr::null_mut());
        }
    }
}

/// Delivers a late grant to the engine at DISPATCH_LEVEL (`KDEFERRED_ROUTINE`);
/// `base` (SystemArgument1) is the map-register base.
pub unsafe extern "C" fn grant_dpc(_dpc: *mut KDPC, context: PVOID, base: PVOID, _a2: PVOID) {
    // SAFETY: the DPC's context is the extension (KeInitializeDpc in AddDevice).
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    let completion = {
        let mut shared = ext.lock();
        let mut regs = shared.regs();
        shared.engine.channel_granted(MapBase(base), &mut regs)
    };
    match completion {
        Some(c) => deliver(ext, c),
        // A grant that came back to a power-down held its request: no
        // completion, but the drain may be over.
        None => crate::power::wake_drain(ext),
    }
}

/// The MDL of the chain that holds `offset` and the byte's `CurrentVa`
/// (`MmGetMdlVirtualAddress` plus its offset in that MDL).
fn current_va(mdl: MdlRef, offset: u64) -> Result<(*mut MDL, PVOID), NtStatus> {
    // SAFETY: the caller's live chain.
    let (held_by, in_mdl) =
        unsafe { ffi::mdl_at(mdl.0, offset) }.ok_or(NtStatus::INVALID_PARAMETER)?;
    // SAFETY: a live MDL of that chain.
    let va = unsafe { ffi::mdl_virtual_address(held_by) } + in_mdl as usize;
    Ok((held_by, va as PVOID))
}

/// After a call that may run our execution, `AdapterControl` or list
/// routine (the slot armed before it): its failure disarms the slot, else the
/// grant is the caller's if the routine ran inside, or arrives by the grant
/// DPC.
fn granted_or_queued(
    ext: &DeviceExtension,
    result: i32,
) -> Result<AllocateOutcome<MapBase>, NtStatus> {
    if let Err(e) = status(result) {
        ext.grant.disarm();
        return Err(e);
    }
    Ok(match ext.grant.settle() {
        Settled::GrantedNow(grant) => AllocateOutcome::Granted(MapBase(grant as PVOID)),
        Settled::Queued => AllocateOutcome::Queued,
    })
}

fn status(s: i32) -> Result<(), NtStatus> {
    if s >= 0 { Ok(()) } else { Err(NtStatus(s)) }
}

impl DmaOps for WinDma {
    type Mdl = MdlRef;
    type MapRegisterBase = MapBase;

    fn get_dma_alignment(&mut self) -> u32 {
        self.alignment
    }

    fn get_dma_transfer_info(
        &mut self,
        mdl: MdlRef,
        offset: u64,
        length: u32,
        write_only: bool,
    ) -> Result<DmaTransferInfo, NtStatus> {
        let f = self
            .ops()
            .GetDmaTransferInfo
            .ok_or(NtStatus::NOT_SUPPORTED)?;
        // SAFETY: all-zero is a valid DMA_TRANSFER_INFO; Version is set below.
        let mut info: DMA_TRANSFER_INFO = unsafe { core::mem::zeroed() };
        info.Version = ffi::DMA_TRANSFER_INFO_VERSION1;
        // SAFETY: a live adapter, the caller's locked MDL, a valid out pointer.
        status(unsafe {
            f(
                self.adapter,
                mdl.0,
                offset,
                length,
                u8::from(write_only),
                &mut info,
            )
        })?;
        let (map_register_count, scatter_gather_element_count, scatter_gather_list_size) =
            ffi::transfer_info_v1(&info);
        if scatter_gather_list_size as usize > SG_BUFFER_WORDS * size_of::<u64>() {
            // The buffer allocated at start cannot hold this mapping.
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        Ok(DmaTransferInfo {
            map_register_count,
            scatter_gather_element_count,
            scatter_gather_list_size,
        })
    }

    fn initialize_dma_transfer_context(&mut self) -> Result<(), NtStatus> {
        let f = self
            .ops()
            .InitializeDmaTransferContext
            .ok_or(NtStatus::NOT_SUPPORTED)?;
        // SAFETY: the context is DMA_TRANSFER_CONTEXT_SIZE_V1 pointer-aligned
        // bytes owned by this adapter; no request uses it now.
        status(unsafe { f(self.adapter, self.context()) })
    }

    fn allocate_adapter_channel_ex(
        &mut self,
        map_register_count: u32,
        mode: AllocationMode,
    ) -> Result<AllocateOutcome<MapBase>, NtStatus> {
        let f = self
            .ops()
            .AllocateAdapterChannelEx
            .ok_or(NtStatus::NOT_SUPPORTED)?;
        let flags = match mode {
            AllocationMode::Synchronous => ffi::DMA_SYNCHRONOUS_CALLBACK,
            AllocationMode::Asynchronous => 0,
        };
        let ext = self.ext();
        ext.grant.arm();
        // SAFETY: DISPATCH_LEVEL (engine lock held), a live adapter, the PDO
        // (Learn: "the physical device object (PDO) that represents the
        // target device"), the initialized context; with an execution
        // routine MapRegisterBase must be NULL. The routine takes no lock,
        // so it may run inside.
        let result = unsafe {
            f(
                self.adapter,
                ext.pdo,
                self.context(),
                map_register_count,
                flags,
                Some(execution_routine),
                ext.as_context(),
                ptr::null_mut(),
            )
        };
        granted_or_queued(ext, result)
    }

    fn cancel_adapter_channel(&mut self) -> bool {
        let Some(f) = self.ops().CancelAdapterChannel else {
            return false;
        };
        let ext = self.ext();
        // SAFETY: a live adapter, the PDO the allocation named and the
        // context of the queued request. TRUE: the routine never runs;
        // FALSE: its grant still arrives through the grant DPC.
        unsafe { f(self.adapter, ext.pdo, self.context()) != 0 }
    }

    fn map_transfer_ex(
        &mut self,
        mdl: MdlRef,
        map_register_base: MapBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        let f = self.ops().MapTransferEx.ok_or(NtStatus::NOT_SUPPORTED)?;
        let buffer = self.ext().sg_buffer.get().cast::<SCATTER_GATHER_LIST>();
        let buffer_length = (SG_BUFFER_WORDS * size_of::<u64>()) as u32;
        // Contiguous ranges never outnumber pages: asking for at most
        // (MAX_SG_ELEMENTS - 1) pages keeps every element in `sg`.
        let cap = ((edudma_core::dma::MAX_SG_ELEMENTS - 1) * PAGE) as u32;
        let mut mapped = length.min(cap);
        // SAFETY: a live adapter and granted map registers, the caller's MDL,
        // the SG buffer owned by this adapter (no other mapping outstanding),
        // DeviceOffset 0 and no completion routine for a bus master.
        status(unsafe {
            f(
                self.adapter,
                mdl.0,
                map_register_base.0,
                offset,
                0,
                &mut mapped,
                u8::from(write_to_device),
                buffer,
                buffer_length,
                None,
                ptr::null_mut(),
            )
        })?;
        // SAFETY: MapTransferEx succeeded and filled the list in our buffer.
        let elements = unsafe { ffi::sg_elements(buffer) };
        for e in elements {
            // SAFETY: QuadPart is the 64-bit view of PHYSICAL_ADDRESS.
            let address = unsafe { e.Address.QuadPart } as u64;
            if !sg.push(SgElement {
                address,
                length: e.Length,
            }) {
                // Unreachable with the cap above. Report only what fits;
                // the engine flushes that and maps the rest again.
                let kept = sg.total_length() as u32;
                return Ok(kept.min(mapped));
            }
        }
        Ok(mapped)
    }

    fn flush_adapter_buffers_ex(
        &mut self,
        mdl: MdlRef,
        map_register_base: MapBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        let f = self
            .ops()
            .FlushAdapterBuffersEx
            .ok_or(NtStatus::NOT_SUPPORTED)?;
        // SAFETY: the parameters of the MapTransferEx this flush ends.
        status(unsafe {
            f(
                self.adapter,
                mdl.0,
                map_register_base.0,
                offset,
                length,
                u8::from(write_to_device),
            )
        })
    }

    fn free_adapter_channel(&mut self) {
        if let Some(f) = self.ops().FreeAdapterChannel {
            // SAFETY: DISPATCH_LEVEL under the engine lock; a KeepObject grant.
            unsafe { f(self.adapter) }
        }
    }

    fn free_map_registers(&mut self, map_register_base: MapBase, map_register_count: u32) {
        if let Some(f) = self.ops().FreeMapRegisters {
            // SAFETY: DISPATCH_LEVEL under the engine lock; the base and
            // count of a DeallocateObjectKeepRegisters grant.
            unsafe { f(self.adapter, map_register_base.0, map_register_count) }
        }
    }

    fn flush_io_buffers(&mut self, mdl: MdlRef, read_operation: bool) {
        // SAFETY: the caller's locked MDL.
        unsafe { ffi::flush_io_buffers(mdl.0, read_operation) }
    }

    fn locate(&mut self, mdl: MdlRef, offset: u64) -> Option<MdlSpot> {
        // SAFETY: the caller's live chain.
        let (held_by, in_mdl) = unsafe { ffi::mdl_at(mdl.0, offset) }?;
        // SAFETY: a live MDL of that chain.
        let (va, bytes) = unsafe {
            (
                ffi::mdl_virtual_address(held_by),
                ffi::mdl_byte_count(held_by),
            )
        };
        Some(MdlSpot {
            page_offset: ((va + in_mdl as usize) % PAGE) as u32,
            bytes_to_mdl_end: bytes - in_mdl,
        })
    }

    fn allocate_adapter_channel(
        &mut self,
        map_register_count: u32,
    ) -> Result<AllocateOutcome<MapBase>, NtStatus> {
        let f = self
            .ops()
            .AllocateAdapterChannel
            .ok_or(NtStatus::NOT_SUPPORTED)?;
        let ext = self.ext();
        ext.grant.arm();
        // SAFETY: DISPATCH_LEVEL (engine lock held, from StartIo), a live
        // adapter and our FDO, whose CurrentIrp the routine is given (Learn,
        // AdapterControl: "Irp ... DeviceObject->CurrentIrp"). The routine
        // takes no lock, so it may run inside.
        let result = unsafe {
            f(
                self.adapter,
                ext.fdo,
                map_register_count,
                Some(adapter_control),
                ext.as_context(),
            )
        };
        granted_or_queued(ext, result)
    }

    fn map_transfer(
        &mut self,
        mdl: MdlRef,
        map_register_base: MapBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<SgElement, NtStatus> {
        let f = self.ops().MapTransfer.ok_or(NtStatus::NOT_SUPPORTED)?;
        let (held_by, current_va) = current_va(mdl, offset)?;
        let mut mapped = length;
        // SAFETY: granted map registers, the MDL that holds the range and a
        // CurrentVa inside it (the engine never asks across MDLs).
        let address = unsafe {
            f(
                self.adapter,
                held_by,
                map_register_base.0,
                current_va,
                &mut mapped,
                u8::from(write_to_device),
            )
        };
        // SAFETY: QuadPart is the 64-bit view of PHYSICAL_ADDRESS.
        let address = unsafe { address.QuadPart } as u64;
        Ok(SgElement {
            address,
            length: mapped,
        })
    }

    fn calculate_scatter_gather_list(
        &mut self,
        mdl: MdlRef,
        offset: u64,
        length: u32,
    ) -> Result<u32, NtStatus> {
        let f = self
            .ops()
            .CalculateScatterGatherList
            .ok_or(NtStatus::NOT_SUPPORTED)?;
        let (held_by, current_va) = current_va(mdl, offset)?;
        let mut bytes = 0u32;
        // SAFETY: a live adapter, the MDL that holds the range and a
        // CurrentVa in it; the map-register count is optional (NULL).
        status(unsafe {
            f(
                self.adapter,
                held_by,
                current_va,
                length,
                &mut bytes,
                ptr::null_mut(),
            )
        })?;
        Ok(bytes)
    }

    fn scatter_gather_buffer_bytes(&self) -> u32 {
        (SG_BUFFER_WORDS * size_of::<u64>()) as u32
    }

    fn get_scatter_gather_list(
        &mut self,
        buffer: ListBuffer,
        mdl: MdlRef,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<AllocateOutcome<MapBase>, NtStatus> {
        let (held_by, current_va) = current_va(mdl, offset)?;
        let write = u8::from(write_to_device);
        let ext = self.ext();
        let result = match buffer {
            ListBuffer::Driver => {
                let f = self
                    .ops()
                    .BuildScatterGatherList
                    .ok_or(NtStatus::NOT_SUPPORTED)?;
                ext.grant.arm();
                // SAFETY: DISPATCH_LEVEL (engine lock), our FDO, the MDL and
                // CurrentVa of the range, the SG buffer owned by this
                // adapter (the strategy maps nothing else with it); the
                // routine takes no lock, so it may run inside.
                unsafe {
                    f(
                        self.adapter,
                        ext.fdo,
                        held_by,
                        current_va,
                        length,
                        Some(adapter_list_control),
                        ext.as_context(),
                        write,
                        ext.sg_buffer.get().cast(),
                        self.scatter_gather_buffer_bytes(),
                    )
                }
            }
            ListBuffer::Hal => {
                let f = self
                    .ops()
                    .GetScatterGatherList
                    .ok_or(NtStatus::NOT_SUPPORTED)?;
                ext.grant.arm();
                // SAFETY: as above, the HAL allocating the list.
                unsafe {
                    f(
                        self.adapter,
                        ext.fdo,
                        held_by,
                        current_va,
                        length,
                        Some(adapter_list_control),
                        ext.as_context(),
                        write,
                    )
                }
            }
        };
        granted_or_queued(ext, result)
    }

    fn scatter_gather_elements(&mut self, list: MapBase, sg: &mut SgList) -> bool {
        // SAFETY: the list the list routine was given; it stays valid until
        // PutScatterGatherList.
        let elements = unsafe { ffi::sg_elements(list.0.cast::<SCATTER_GATHER_LIST>()) };
        elements.iter().all(|e| {
            sg.push(SgElement {
                // SAFETY: QuadPart is the 64-bit view of PHYSICAL_ADDRESS.
                address: unsafe { e.Address.QuadPart } as u64,
                length: e.Length,
            })
        })
    }

    fn copy_to_common_buffer(
        &mut self,
        mdl: MdlRef,
        offset: u64,
        length: u32,
    ) -> Result<(), NtStatus> {
        self.copy_common(mdl, offset, length, true)
    }

    fn copy_from_common_buffer(
        &mut self,
        mdl: MdlRef,
        offset: u64,
        length: u32,
    ) -> Result<(), NtStatus> {
        self.copy_common(mdl, offset, length, false)
    }

    fn free_common_buffer(&mut self) {
        let (Some(common), Some(f)) = (self.common.take(), self.ops().FreeCommonBuffer) else {
            return;
        };
        // SAFETY: PASSIVE_LEVEL (QuietAdapter::release, from the glue's stop
        // or failed start); the very arguments of the allocation.
        unsafe {
            f(
                self.adapter,
                common.length,
                PHYSICAL_ADDRESS {
                    QuadPart: common.logical,
                },
                common.virtual_address.cast(),
                COMMON_BUFFER_CACHED,
            )
        }
    }

    fn adapter_quiet(&mut self) {
        // SAFETY: as in put_dma_adapter: the stop path waits for this event,
        // then releases the quiet adapter at PASSIVE_LEVEL.
        unsafe {
            let _ = KeSetEvent((*self.ext).adapter_put.get(), IO_NO_INCREMENT as i32, 0);
        }
    }

    fn put_scatter_gather_list(&mut self, list: MapBase, write_to_device: bool) {
        if let Some(f) = self.ops().PutScatterGatherList {
            // SAFETY: DISPATCH_LEVEL under the engine lock; the list the
            // routine was given, in the direction it was asked for, once.
            unsafe {
                f(
                    self.adapter,
                    list.0.cast::<SCATTER_GATHER_LIST>(),
                    u8::from(write_to_device),
                )
            }
        }
    }

    fn flush_adapter_buffers(
        &mut self,
        mdl: MdlRef,
        map_register_base: MapBase,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        let f = self
            .ops()
            .FlushAdapterBuffers
            .ok_or(NtStatus::NOT_SUPPORTED)?;
        let (held_by, current_va) = current_va(mdl, offset)?;
        // SAFETY: the MDL, CurrentVa, length and direction of the
        // MapTransfer this flush ends.
        let flushed = unsafe {
            f(
                self.adapter,
                held_by,
                map_register_base.0,
                current_va,
                length,
                u8::from(write_to_device),
            )
        };
        if flushed != 0 {
            Ok(())
        } else {
            Err(NtStatus::DEVICE_HARDWARE_ERROR)
        }
    }

    fn put_dma_adapter(&mut self) {
        if let Some(f) = self.ops().PutDmaAdapter {
            // SAFETY: nothing outstanding (the engine's tokens guarantee it);
            // the adapter is not used afterwards.
            unsafe { f(self.adapter) }
        }
        // SAFETY: the extension outlives its adapter; the event was
        // initialized in AddDevice; KeSetEvent with Wait FALSE is callable at
        // DISPATCH_LEVEL.
        unsafe {
            let _ = KeSetEvent((*self.ext).adapter_put.get(), IO_NO_INCREMENT as i32, 0);
        }
    }

    fn disable_bus_master(&mut self) {
        // SAFETY: the extension outlives its adapter; its bus interface is
        // referenced from start until after the adapter is put.
        unsafe { crate::pnp::clear_bus_master(&*self.ext) };
    }

    fn bus_master_enabled(&mut self) -> bool {
        // SAFETY: as for disable_bus_master.
        unsafe { crate::pnp::bus_master_enabled(&*self.ext) }
    }

    fn enable_bus_master(&mut self) -> bool {
        // SAFETY: as for disable_bus_master; called at start.
        unsafe { crate::pnp::restore_bus_master(&*self.ext) }.is_ok()
    }
}
