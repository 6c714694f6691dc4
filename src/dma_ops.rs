//! `DmaOps` over the `DMA_OPERATIONS` function pointers of one adapter, the
//! execution routine, and the grant slot that makes the execution routine
//! safe to run inside `AllocateAdapterChannelEx`.
//!
//! `DMA_ADAPTER.DmaOperations` and the `DMA_OPERATIONS` members are named C
//! members (H); each is an `Option<unsafe extern "C" fn>` in wdk-sys, called
//! as the project reference shows: `(*(*adapter).DmaOperations).MapTransferEx`.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

use edudma_core::NtStatus;
use edudma_core::dma::{
    AllocateOutcome, AllocationMode, DmaOps, DmaTransferInfo, SgElement, SgList,
};
use wdk_sys::ntddk::KeInsertQueueDpc;
use wdk_sys::{
    _IO_ALLOCATION_ACTION, DEVICE_OBJECT, DMA_ADAPTER, DMA_OPERATIONS, DMA_TRANSFER_INFO,
    IO_ALLOCATION_ACTION, IRP, KDPC, MDL, PVOID, SCATTER_GATHER_LIST,
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

/// Grant slot states.
mod slot {
    /// No allocation outstanding.
    pub const IDLE: u32 = 0;
    /// `AllocateAdapterChannelEx` is running on some CPU.
    pub const ALLOCATING: u32 = 1;
    /// The execution routine ran before the allocating call looked: the
    /// call reports `Granted`.
    pub const GRANTED: u32 = 2;
    /// The call returned without a grant: the routine will run later.
    pub const QUEUED: u32 = 3;
    /// The routine ran after the call returned; the grant DPC delivers it.
    pub const LATE: u32 = 4;
}

/// Where the execution routine leaves the map-register base. The routine
/// may run inside `AllocateAdapterChannelEx` on the calling CPU — which
/// holds the engine lock — so it never takes that lock: it only stores and
/// flips this state. A late grant is delivered by a DPC, which runs only
/// once the CPU has left the lock.
pub struct GrantSlot {
    state: AtomicU32,
    base: AtomicPtr<c_void>,
}

impl GrantSlot {
    /// Idle.
    pub const fn new() -> Self {
        Self {
            state: AtomicU32::new(slot::IDLE),
            base: AtomicPtr::new(ptr::null_mut()),
        }
    }
}

impl Default for GrantSlot {
    fn default() -> Self {
        Self::new()
    }
}

/// The version-3 DMA operations of our adapter.
#[derive(Debug)]
pub struct WinDma {
    adapter: *mut DMA_ADAPTER,
    ext: *const DeviceExtension,
    /// `GetDmaAlignment`, asked at PASSIVE_LEVEL (its documented IRQL) when
    /// the adapter is obtained: the engine asks for it under its spin lock.
    alignment: u32,
}

impl WinDma {
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
        }
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
/// CPU: it takes no lock.
unsafe extern "C" fn execution_routine(
    _device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    map_register_base: PVOID,
    context: PVOID,
) -> IO_ALLOCATION_ACTION {
    // SAFETY: `context` is the extension we passed to AllocateAdapterChannelEx.
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    ext.grant.base.store(map_register_base, Ordering::Release);
    let won = ext.grant.state.compare_exchange(
        slot::ALLOCATING,
        slot::GRANTED,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    if won.is_err() {
        // The allocating call already returned `Queued`: hand over to the DPC.
        ext.grant.state.store(slot::LATE, Ordering::Release);
        // SAFETY: the DPC object was initialized in AddDevice and lives in
        // the nonpaged extension.
        unsafe {
            KeInsertQueueDpc(ext.grant_dpc.get(), ptr::null_mut(), ptr::null_mut());
        }
    }
    // Step 9 frees channel and map registers with FreeAdapterChannel.
    _IO_ALLOCATION_ACTION::KeepObject
}

/// Delivers a late grant to the engine at DISPATCH_LEVEL (`KDEFERRED_ROUTINE`).
pub unsafe extern "C" fn grant_dpc(_dpc: *mut KDPC, context: PVOID, _a1: PVOID, _a2: PVOID) {
    // SAFETY: the DPC's context is the extension (KeInitializeDpc in AddDevice).
    let ext = unsafe { &*context.cast::<DeviceExtension>() };
    if ext
        .grant
        .state
        .compare_exchange(slot::LATE, slot::IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let base = ext.grant.base.swap(ptr::null_mut(), Ordering::AcqRel);
    let completion = {
        let mut regs = ext.regs();
        let mut shared = ext.lock();
        shared.engine.channel_granted(MapBase(base), &mut regs)
    };
    if let Some(c) = completion {
        deliver(ext, c);
    }
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
        ext.grant.base.store(ptr::null_mut(), Ordering::Relaxed);
        ext.grant.state.store(slot::ALLOCATING, Ordering::Release);
        // SAFETY: DISPATCH_LEVEL (engine lock held), a live adapter and FDO,
        // the initialized context; with an execution routine MapRegisterBase
        // must be NULL. The routine takes no lock, so it may run inside.
        let result = unsafe {
            f(
                self.adapter,
                ext.fdo,
                self.context(),
                map_register_count,
                flags,
                Some(execution_routine),
                ext.as_context(),
                ptr::null_mut(),
            )
        };
        if let Err(e) = status(result) {
            ext.grant.state.store(slot::IDLE, Ordering::Release);
            return Err(e);
        }
        match ext.grant.state.compare_exchange(
            slot::ALLOCATING,
            slot::QUEUED,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Ok(AllocateOutcome::Queued),
            Err(_) => {
                // GRANTED: the routine ran inside the call or on another CPU.
                let base = ext.grant.base.swap(ptr::null_mut(), Ordering::AcqRel);
                ext.grant.state.store(slot::IDLE, Ordering::Release);
                Ok(AllocateOutcome::Granted(MapBase(base)))
            }
        }
    }

    fn cancel_adapter_channel(&mut self) -> bool {
        let Some(f) = self.ops().CancelAdapterChannel else {
            return false;
        };
        let ext = self.ext();
        // SAFETY: a live adapter, our FDO and the context of the queued request.
        let cancelled = unsafe { f(self.adapter, ext.fdo, self.context()) } != 0;
        if cancelled {
            // TRUE: the routine will never run.
            let _ = ext.grant.state.compare_exchange(
                slot::QUEUED,
                slot::IDLE,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        cancelled
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
            // SAFETY: forwarded as the DDI takes it (the engine never calls it).
            unsafe { f(self.adapter, map_register_base.0, map_register_count) }
        }
    }

    fn put_dma_adapter(&mut self) {
        if let Some(f) = self.ops().PutDmaAdapter {
            // SAFETY: nothing outstanding (the engine's tokens guarantee it);
            // the adapter is not used afterwards.
            unsafe { f(self.adapter) }
        }
    }
}
