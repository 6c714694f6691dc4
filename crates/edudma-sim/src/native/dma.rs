//! `IoGetDmaAdapter` and the `DMA_OPERATIONS` of the adapters it returns:
#![allow(missing_docs)] // each export is the DDI of the same name on Microsoft Learn
#![allow(clippy::missing_safety_doc)] // the DDIs' own contracts
//! each member translates the driver's pointers to the model's handles and
//! calls the HAL model, which checks Driver Verifier's DMA rules.
#![allow(non_snake_case)]

use std::sync::Arc;

use edudma_core::NtStatus;
use edudma_core::dma::SgList;
use wdk_sys::{
    BOOLEAN, DEVICE_DESCRIPTION, DEVICE_OBJECT, DMA_ADAPTER, DMA_OPERATIONS, DMA_TRANSFER_INFO,
    MDL, NTSTATUS, PDMA_COMPLETION_ROUTINE, PDRIVER_CONTROL, PHYSICAL_ADDRESS, PULONG, PVOID,
    SCATTER_GATHER_ELEMENT, SCATTER_GATHER_LIST, ULONG, ULONGLONG,
};

use super::exports::Call;
use super::objects::ExecRoutine;
use super::{Native, action_of};
use crate::hal::{self, AdapterId, AllocateResult, DeviceDescription, InterfaceType};
use crate::mdl::MdlId;
use crate::sched::{Event, US};
use crate::verifier::Violation;

/// `CONNECT_MESSAGE_BASED` (wdm.h).
pub const CONNECT_MESSAGE_BASED: u32 = 3;
/// `CONNECT_LINE_BASED` (wdm.h).
pub const CONNECT_LINE_BASED: u32 = 2;
/// `DMA_SYNCHRONOUS_CALLBACK` (wdm.h).
const DMA_SYNCHRONOUS_CALLBACK: u32 = 1;

/// Map-register bases as the driver sees them: never NULL, recognisable.
const BASE_TAG: u64 = 0x0000_6d61_7000_0000;

/// The `PVOID` the driver gets for a model base.
pub fn base_ptr(base: hal::MapRegisterBase) -> PVOID {
    (BASE_TAG | base.0) as PVOID
}

fn base_of(p: PVOID) -> hal::MapRegisterBase {
    hal::MapRegisterBase((p as u64) & !BASE_TAG)
}

/// An adapter as the HAL allocates it: the public part, then its table.
#[repr(C)]
struct AdapterBlock {
    adapter: DMA_ADAPTER,
    operations: DMA_OPERATIONS,
}

/// The table of an adapter made from a `DEVICE_DESCRIPTION` of `version`:
/// the version-1 members always, the version-3 members only for version 3
/// (NULL otherwise, as on Windows).
fn operations(version: u32) -> DMA_OPERATIONS {
    let version1 = DMA_OPERATIONS {
        Size: size_of::<DMA_OPERATIONS>() as u32,
        PutDmaAdapter: Some(PutDmaAdapter),
        AllocateAdapterChannel: Some(AllocateAdapterChannel),
        FlushAdapterBuffers: Some(FlushAdapterBuffers),
        FreeAdapterChannel: Some(FreeAdapterChannel),
        FreeMapRegisters: Some(FreeMapRegisters),
        MapTransfer: Some(MapTransfer),
        GetDmaAlignment: Some(GetDmaAlignment),
        GetScatterGatherList: Some(GetScatterGatherList),
        PutScatterGatherList: Some(PutScatterGatherList),
        CalculateScatterGatherList: Some(CalculateScatterGatherList),
        BuildScatterGatherList: Some(BuildScatterGatherList),
        AllocateCommonBuffer: Some(AllocateCommonBuffer),
        FreeCommonBuffer: Some(FreeCommonBuffer),
        ..Default::default()
    };
    if version < hal::DEVICE_DESCRIPTION_VERSION3 {
        return version1;
    }
    DMA_OPERATIONS {
        GetDmaTransferInfo: Some(GetDmaTransferInfo),
        InitializeDmaTransferContext: Some(InitializeDmaTransferContext),
        AllocateAdapterChannelEx: Some(AllocateAdapterChannelEx),
        CancelAdapterChannel: Some(CancelAdapterChannel),
        MapTransferEx: Some(MapTransferEx),
        FlushAdapterBuffersEx: Some(FlushAdapterBuffersEx),
        FreeAdapterObject: Some(FreeAdapterObject),
        ..version1
    }
}

fn adapter_id(c: &Call, adapter: *mut DMA_ADAPTER) -> AdapterId {
    // An unknown adapter maps to one the HAL never created: it reports it.
    c.n.objects()
        .adapters
        .get(&(adapter as usize))
        .copied()
        .unwrap_or(AdapterId(u32::MAX))
}

fn mdl_id(c: &Call, mdl: *mut MDL) -> MdlId {
    c.n.objects()
        .mdls
        .get(&(mdl as usize))
        .copied()
        .unwrap_or(MdlId(u32::MAX))
}

fn st(r: Result<(), NtStatus>) -> NTSTATUS {
    match r {
        Ok(()) => 0,
        Err(s) => s.0,
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn IoGetDmaAdapter(
    _PhysicalDeviceObject: *mut DEVICE_OBJECT,
    DeviceDescription: *mut DEVICE_DESCRIPTION,
    NumberOfMapRegisters: *mut ULONG,
) -> *mut DMA_ADAPTER {
    let c = Call::enter();
    // SAFETY: the caller's description.
    let d = unsafe { &*DeviceDescription };
    let desc = DeviceDescription {
        version: d.Version,
        master: d.Master != 0,
        scatter_gather: d.ScatterGather != 0,
        dma32_bit_addresses: d.Dma32BitAddresses != 0,
        dma64_bit_addresses: d.Dma64BitAddresses != 0,
        interface_type: if d.InterfaceType == wdk_sys::_INTERFACE_TYPE::PCIBus {
            InterfaceType::Pci
        } else {
            InterfaceType::Isa
        },
        maximum_length: d.MaximumLength,
        dma_address_width: d.DmaAddressWidth,
    };
    let got =
        c.n.sys
            .with(|k| k.hal_call(|hal, ctx| hal.io_get_dma_adapter(ctx, &desc)));
    let Some((id, granted)) = got else {
        return std::ptr::null_mut();
    };
    let block = Box::new(AdapterBlock {
        adapter: DMA_ADAPTER {
            Version: 1,
            Size: size_of::<DMA_ADAPTER>() as u16,
            DmaOperations: std::ptr::null_mut(),
        },
        operations: operations(desc.version),
    });
    let block = Box::into_raw(block);
    // SAFETY: the block just allocated; it lives as long as the machine.
    unsafe {
        (*block).adapter.DmaOperations = &raw mut (*block).operations;
        *NumberOfMapRegisters = granted;
    }
    let adapter = block.cast::<DMA_ADAPTER>();
    c.n.objects().adapters.insert(adapter as usize, id);
    c.n.objects().adapter_blocks.push(block as usize);
    adapter
}

/// Free the adapter blocks of a machine.
pub(crate) fn free_adapter_block(addr: usize) {
    // SAFETY: allocated by IoGetDmaAdapter with Box::into_raw, freed once.
    unsafe { drop(Box::from_raw(addr as *mut AdapterBlock)) };
}

unsafe extern "C" fn PutDmaAdapter(DmaAdapter: *mut DMA_ADAPTER) {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    c.n.sys
        .with(|k| k.hal_call(|h, ctx| h.put_dma_adapter(ctx, id)));
    c.n.objects().adapters_put.insert(DmaAdapter as usize);
}

unsafe extern "C" fn GetDmaAlignment(DmaAdapter: *mut DMA_ADAPTER) -> ULONG {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    c.n.sys
        .with(|k| k.hal_call(|h, ctx| h.get_dma_alignment(ctx, id)))
}

unsafe extern "C" fn GetDmaTransferInfo(
    DmaAdapter: *mut DMA_ADAPTER,
    Mdl: *mut MDL,
    Offset: ULONGLONG,
    Length: ULONG,
    WriteOnly: BOOLEAN,
    TransferInfo: *mut DMA_TRANSFER_INFO,
) -> NTSTATUS {
    let c = Call::enter();
    let (id, mdl) = (adapter_id(&c, DmaAdapter), mdl_id(&c, Mdl));
    // SAFETY: the caller's info; Version selects the arm.
    if unsafe { (*TransferInfo).Version } != 1 {
        return NtStatus::INVALID_PARAMETER.0;
    }
    let r = c.n.sys.with(|k| {
        k.hal_call(|h, ctx| h.get_dma_transfer_info(ctx, id, mdl, Offset, Length, WriteOnly != 0))
    });
    match r {
        Ok(info) => {
            // SAFETY: the V1 arm of the caller's info.
            unsafe {
                let v1 = &mut (*TransferInfo).__bindgen_anon_1.V1;
                v1.MapRegisterCount = info.map_register_count;
                v1.ScatterGatherElementCount = info.scatter_gather_element_count;
                v1.ScatterGatherListSize = info.scatter_gather_list_size;
            }
            0
        }
        Err(s) => s.0,
    }
}

unsafe extern "C" fn InitializeDmaTransferContext(
    DmaAdapter: *mut DMA_ADAPTER,
    _DmaTransferContext: PVOID,
) -> NTSTATUS {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    st(c.n
        .sys
        .with(|k| k.hal_call(|h, ctx| h.initialize_dma_transfer_context(ctx, id))))
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn AllocateAdapterChannelEx(
    DmaAdapter: *mut DMA_ADAPTER,
    DeviceObject: *mut DEVICE_OBJECT,
    _DmaTransferContext: PVOID,
    NumberOfMapRegisters: ULONG,
    Flags: ULONG,
    ExecutionRoutine: PDRIVER_CONTROL,
    ExecutionContext: PVOID,
    MapRegisterBase: *mut PVOID,
) -> NTSTATUS {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    if DeviceObject as usize != c.n.objects().pdo {
        c.n.sys.report_violation(Violation::DmaDeviceObjectNotPdo {
            routine: "AllocateAdapterChannelEx",
        });
        return NtStatus::INVALID_PARAMETER.0;
    }
    let sync = Flags & DMA_SYNCHRONOUS_CALLBACK != 0;
    let result = c.n.sys.with(|k| {
        let r =
            k.hal_call(|h, ctx| h.allocate_adapter_channel_ex(ctx, id, NumberOfMapRegisters, sync));
        k.schedule_contention_end(id);
        r
    });
    let routine = ExecutionRoutine.map(|f| ExecRoutine {
        adapter: id,
        routine: f as usize,
        context: ExecutionContext as usize,
        device: DeviceObject as usize,
        list: None,
    });
    match result {
        Err(s) => s.0,
        Ok(AllocateResult::RunNow(base)) => {
            match routine {
                Some(r) => {
                    // The HAL calls the execution routine inside the call,
                    // and records the action it actually returns.
                    objects_push(&c.n);
                    // SAFETY: the driver's routine with its context.
                    let action = unsafe { r.call(base) };
                    objects_pull(&c.n);
                    c.n.sys.hal_routine_returned(id, base, action_of(action));
                }
                None => {
                    // No routine (sync only): the base comes back in the
                    // out parameter and the channel stays allocated.
                    if !MapRegisterBase.is_null() {
                        // SAFETY: the caller's output.
                        unsafe { *MapRegisterBase = base_ptr(base) };
                    }
                    c.n.sys
                        .hal_routine_returned(id, base, hal::IoAllocationAction::KeepObject);
                }
            }
            0
        }
        Ok(AllocateResult::Committed(base)) => {
            if let Some(r) = routine {
                c.n.objects().routines.push(r);
            }
            schedule_late_grant(&c, id, base);
            0
        }
        Ok(AllocateResult::Waiting) => {
            if let Some(r) = routine {
                c.n.objects().routines.push(r);
            }
            0
        }
    }
}

/// A grant committed for later: its routine runs on some CPU after the
/// HAL's latency (1–60 µs unless configured; Windows gives no bound).
fn schedule_late_grant(c: &Call, id: AdapterId, base: hal::MapRegisterBase) {
    c.n.sys.with(|k| {
        let cpu = k.random_cpu();
        let delay = match k.hal.config().grant_latency_ns {
            Some(d) => d,
            None => k.rng.range(US, 60 * US),
        };
        k.sched
            .schedule(delay, cpu, Event::ExecutionRoutine(id, base));
    });
}

fn objects_push(n: &Arc<Native>) {
    super::objects::push(n, &n.sys);
}

fn objects_pull(n: &Arc<Native>) {
    super::objects::pull(n, &n.sys);
}

unsafe extern "C" fn CancelAdapterChannel(
    DmaAdapter: *mut DMA_ADAPTER,
    DeviceObject: *mut DEVICE_OBJECT,
    _DmaTransferContext: PVOID,
) -> BOOLEAN {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    if DeviceObject as usize != c.n.objects().pdo {
        c.n.sys.report_violation(Violation::DmaDeviceObjectNotPdo {
            routine: "CancelAdapterChannel",
        });
        return 0;
    }
    let cancelled =
        c.n.sys
            .with(|k| k.hal_call(|h, ctx| h.cancel_adapter_channel(ctx, id)));
    if cancelled {
        c.n.objects().routines.retain(|r| r.adapter != id);
    }
    u8::from(cancelled)
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn MapTransferEx(
    DmaAdapter: *mut DMA_ADAPTER,
    Mdl: *mut MDL,
    MapRegisterBase: PVOID,
    Offset: ULONGLONG,
    _DeviceOffset: ULONG,
    Length: *mut ULONG,
    WriteToDevice: BOOLEAN,
    ScatterGatherBuffer: *mut SCATTER_GATHER_LIST,
    ScatterGatherBufferLength: ULONG,
    _DmaCompletionRoutine: PDMA_COMPLETION_ROUTINE,
    _CompletionContext: PVOID,
) -> NTSTATUS {
    let c = Call::enter();
    let (id, mdl) = (adapter_id(&c, DmaAdapter), mdl_id(&c, Mdl));
    let base = base_of(MapRegisterBase);
    // SAFETY: the caller's in/out length.
    let length = unsafe { *Length };
    let mut sg = SgList::new();
    let r = c.n.sys.with(|k| {
        k.hal_call(|h, ctx| {
            h.map_transfer_ex(
                ctx,
                id,
                mdl,
                base,
                Offset,
                length,
                WriteToDevice != 0,
                ScatterGatherBufferLength,
                &mut sg,
            )
        })
    });
    match r {
        Ok(mapped) => {
            let elements = sg.as_slice();
            let need = size_of::<SCATTER_GATHER_LIST>()
                + elements.len().saturating_sub(1) * size_of::<SCATTER_GATHER_ELEMENT>();
            if need > ScatterGatherBufferLength as usize {
                // The model already judged the buffer; never write past it.
                return NtStatus::BUFFER_TOO_SMALL.0;
            }
            // SAFETY: the caller's buffer of ScatterGatherBufferLength bytes,
            // enough for the list (checked above).
            unsafe {
                (*ScatterGatherBuffer).NumberOfElements = elements.len() as u32;
                (*ScatterGatherBuffer).Reserved = 0;
                let first =
                    (&raw mut (*ScatterGatherBuffer).Elements).cast::<SCATTER_GATHER_ELEMENT>();
                for (i, e) in elements.iter().enumerate() {
                    let slot = first.add(i);
                    (*slot).Address.QuadPart = e.address as i64;
                    (*slot).Length = e.length;
                    (*slot).Reserved = 0;
                }
                *Length = mapped;
            }
            0
        }
        Err(s) => s.0,
    }
}

unsafe extern "C" fn FlushAdapterBuffersEx(
    DmaAdapter: *mut DMA_ADAPTER,
    Mdl: *mut MDL,
    MapRegisterBase: PVOID,
    Offset: ULONGLONG,
    Length: ULONG,
    WriteToDevice: BOOLEAN,
) -> NTSTATUS {
    let c = Call::enter();
    let (id, mdl) = (adapter_id(&c, DmaAdapter), mdl_id(&c, Mdl));
    let base = base_of(MapRegisterBase);
    st(c.n.sys.with(|k| {
        k.hal_call(|h, ctx| {
            h.flush_adapter_buffers_ex(ctx, id, mdl, base, Offset, Length, WriteToDevice != 0)
        })
    }))
}

unsafe extern "C" fn FreeAdapterChannel(DmaAdapter: *mut DMA_ADAPTER) {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    c.n.sys
        .with(|k| k.hal_call(|h, ctx| h.free_adapter_channel(ctx, id)));
}

unsafe extern "C" fn FreeAdapterObject(
    DmaAdapter: *mut DMA_ADAPTER,
    AllocationAction: wdk_sys::IO_ALLOCATION_ACTION,
) {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    let action = action_of(AllocationAction);
    c.n.sys
        .with(|k| k.hal_call(|h, ctx| h.free_adapter_object(ctx, id, action)));
}

unsafe extern "C" fn FreeMapRegisters(
    DmaAdapter: *mut DMA_ADAPTER,
    MapRegisterBase: PVOID,
    NumberOfMapRegisters: ULONG,
) {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    let base = base_of(MapRegisterBase);
    c.n.sys
        .with(|k| k.hal_call(|h, ctx| h.free_map_registers(ctx, id, base, NumberOfMapRegisters)));
}

// ---- version 1: the packet-based routines ----------------------------------------

/// `KeFlushIoBuffers`: a wdm.h macro that is empty on x64; the driver's
/// host build calls it here so that the call is counted and its IRQL checked.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn KeFlushIoBuffers(
    _Mdl: *mut MDL,
    _ReadOperation: BOOLEAN,
    _DmaOperation: BOOLEAN,
) {
    let c = Call::enter();
    c.n.sys
        .with(|k| k.hal_call(|h, ctx| h.ke_flush_io_buffers(ctx)));
}

/// The offset of `CurrentVa` in `mdl` (`CurrentVa - MmGetMdlVirtualAddress`),
/// `None` before its start.
fn offset_in_mdl(mdl: *mut MDL, current_va: PVOID) -> Option<u64> {
    if mdl.is_null() {
        return None;
    }
    // SAFETY: the driver's live MDL.
    let va = unsafe { (*mdl).StartVa as u64 + u64::from((*mdl).ByteOffset) };
    (current_va as u64).checked_sub(va)
}

unsafe extern "C" fn AllocateAdapterChannel(
    DmaAdapter: *mut DMA_ADAPTER,
    DeviceObject: *mut DEVICE_OBJECT,
    NumberOfMapRegisters: ULONG,
    ExecutionRoutine: PDRIVER_CONTROL,
    Context: PVOID,
) -> NTSTATUS {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    let result = c.n.sys.with(|k| {
        let r = k.hal_call(|h, ctx| h.allocate_adapter_channel(ctx, id, NumberOfMapRegisters));
        k.schedule_contention_end(id);
        r
    });
    let Some(routine) = ExecutionRoutine.map(|f| ExecRoutine {
        adapter: id,
        routine: f as usize,
        context: Context as usize,
        device: DeviceObject as usize,
        list: None,
    }) else {
        // AllocateAdapterChannel has no synchronous form: no routine, no grant.
        return NtStatus::INVALID_PARAMETER.0;
    };
    match result {
        Err(s) => s.0,
        Ok(AllocateResult::RunNow(base)) => {
            objects_push(&c.n);
            // SAFETY: the driver's AdapterControl with its context.
            let action = unsafe { routine.call(base) };
            objects_pull(&c.n);
            c.n.sys.hal_routine_returned(id, base, action_of(action));
            0
        }
        Ok(AllocateResult::Committed(base)) => {
            c.n.objects().routines.push(routine);
            schedule_late_grant(&c, id, base);
            0
        }
        Ok(AllocateResult::Waiting) => {
            c.n.objects().routines.push(routine);
            0
        }
    }
}

unsafe extern "C" fn MapTransfer(
    DmaAdapter: *mut DMA_ADAPTER,
    Mdl: *mut MDL,
    MapRegisterBase: PVOID,
    CurrentVa: PVOID,
    Length: PULONG,
    WriteToDevice: BOOLEAN,
) -> PHYSICAL_ADDRESS {
    let c = Call::enter();
    let (id, mdl) = (adapter_id(&c, DmaAdapter), mdl_id(&c, Mdl));
    let base = base_of(MapRegisterBase);
    // SAFETY: the caller's in/out length.
    let length = unsafe { *Length };
    // Before the MDL's start: an offset no MDL has, which the model reports.
    let offset = offset_in_mdl(Mdl, CurrentVa).unwrap_or(u64::MAX / 2);
    let r = c.n.sys.with(|k| {
        k.hal_call(|h, ctx| h.map_transfer(ctx, id, mdl, base, offset, length, WriteToDevice != 0))
    });
    let (address, mapped) = match r {
        Ok(e) => (e.address as i64, e.length),
        Err(_) => (0, 0),
    };
    // SAFETY: as above.
    unsafe { *Length = mapped };
    PHYSICAL_ADDRESS { QuadPart: address }
}

unsafe extern "C" fn FlushAdapterBuffers(
    DmaAdapter: *mut DMA_ADAPTER,
    Mdl: *mut MDL,
    MapRegisterBase: PVOID,
    CurrentVa: PVOID,
    Length: ULONG,
    WriteToDevice: BOOLEAN,
) -> BOOLEAN {
    let c = Call::enter();
    let (id, mdl) = (adapter_id(&c, DmaAdapter), mdl_id(&c, Mdl));
    let base = base_of(MapRegisterBase);
    let offset = offset_in_mdl(Mdl, CurrentVa).unwrap_or(u64::MAX / 2);
    let r = c.n.sys.with(|k| {
        k.hal_call(|h, ctx| {
            h.flush_adapter_buffers(ctx, id, mdl, base, offset, Length, WriteToDevice != 0)
        })
    });
    u8::from(r.is_ok())
}

// ---- scatter/gather lists -----------------------------------------------------------

/// Build the list of the grant `base` and run its list routine: the list is
/// laid out in the driver's buffer (`BuildScatterGatherList`) or in one the
/// HAL allocates (`GetScatterGatherList`), and stays until it is put.
pub(super) fn deliver_list(n: &Arc<Native>, routine: &ExecRoutine, base: hal::MapRegisterBase) {
    let id = routine.adapter;
    let built = n
        .sys
        .with(|k| k.hal_call(|h, ctx| h.build_list(ctx, id, base)));
    let Ok(elements) = built else {
        // The model could not map what it committed: a model limit, which
        // the run reports as a leak (the routine never ran).
        return;
    };
    let need = size_of::<SCATTER_GATHER_LIST>()
        + elements.len().saturating_sub(1) * size_of::<SCATTER_GATHER_ELEMENT>();
    let (address, owned) = match routine.list.flatten() {
        Some((buffer, bytes)) if need <= bytes as usize => (buffer, None),
        // The HAL checked the driver's buffer at the call; a list it
        // allocates holds whatever it needs.
        _ => {
            let words = need.div_ceil(8);
            (super::objects::alloc_list(words), Some(words))
        }
    };
    let list = address as *mut SCATTER_GATHER_LIST;
    // SAFETY: `need` bytes at `address`, 8-byte aligned (the driver's buffer
    // is a u64 array; ours is words).
    unsafe {
        (*list).NumberOfElements = elements.len() as u32;
        (*list).Reserved = 0;
        let first = (&raw mut (*list).Elements).cast::<SCATTER_GATHER_ELEMENT>();
        for (i, e) in elements.iter().enumerate() {
            let slot = first.add(i);
            (*slot).Address.QuadPart = e.address as i64;
            (*slot).Length = e.length;
            (*slot).Reserved = 0;
        }
    }
    n.objects().sg_lists.insert(address, (id, base, owned));
    objects_push(n);
    // SAFETY: the driver's list routine with its context and the list.
    unsafe { routine.call_list(list) };
    objects_pull(n);
}

#[allow(clippy::too_many_arguments)]
fn request_list(
    c: &Call,
    adapter: *mut DMA_ADAPTER,
    device: *mut DEVICE_OBJECT,
    mdl: *mut MDL,
    current_va: PVOID,
    length: ULONG,
    routine: wdk_sys::PDRIVER_LIST_CONTROL,
    context: PVOID,
    write_to_device: BOOLEAN,
    driver_buffer: Option<(usize, u32)>,
) -> NTSTATUS {
    let (id, model_mdl) = (adapter_id(c, adapter), mdl_id(c, mdl));
    let Some(routine) = routine.map(|f| ExecRoutine {
        adapter: id,
        routine: f as usize,
        context: context as usize,
        device: device as usize,
        list: Some(driver_buffer),
    }) else {
        return NtStatus::INVALID_PARAMETER.0;
    };
    let offset = offset_in_mdl(mdl, current_va).unwrap_or(u64::MAX / 2);
    let result = c.n.sys.with(|k| {
        let r = k.hal_call(|h, ctx| {
            h.get_scatter_gather_list(
                ctx,
                id,
                model_mdl,
                offset,
                length,
                write_to_device != 0,
                driver_buffer.map(|(_, bytes)| bytes),
            )
        });
        k.schedule_contention_end(id);
        r
    });
    match result {
        Err(s) => s.0,
        Ok(AllocateResult::RunNow(base)) => {
            deliver_list(&c.n, &routine, base);
            c.n.sys
                .hal_routine_returned(id, base, hal::IoAllocationAction::KeepObject);
            0
        }
        Ok(AllocateResult::Committed(base)) => {
            c.n.objects().routines.push(routine);
            schedule_late_grant(c, id, base);
            0
        }
        Ok(AllocateResult::Waiting) => {
            c.n.objects().routines.push(routine);
            0
        }
    }
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn GetScatterGatherList(
    DmaAdapter: *mut DMA_ADAPTER,
    DeviceObject: *mut DEVICE_OBJECT,
    Mdl: *mut MDL,
    CurrentVa: PVOID,
    Length: ULONG,
    ExecutionRoutine: wdk_sys::PDRIVER_LIST_CONTROL,
    Context: PVOID,
    WriteToDevice: BOOLEAN,
) -> NTSTATUS {
    let c = Call::enter();
    request_list(
        &c,
        DmaAdapter,
        DeviceObject,
        Mdl,
        CurrentVa,
        Length,
        ExecutionRoutine,
        Context,
        WriteToDevice,
        None,
    )
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn BuildScatterGatherList(
    DmaAdapter: *mut DMA_ADAPTER,
    DeviceObject: *mut DEVICE_OBJECT,
    Mdl: *mut MDL,
    CurrentVa: PVOID,
    Length: ULONG,
    ExecutionRoutine: wdk_sys::PDRIVER_LIST_CONTROL,
    Context: PVOID,
    WriteToDevice: BOOLEAN,
    ScatterGatherBuffer: PVOID,
    ScatterGatherLength: ULONG,
) -> NTSTATUS {
    let c = Call::enter();
    request_list(
        &c,
        DmaAdapter,
        DeviceObject,
        Mdl,
        CurrentVa,
        Length,
        ExecutionRoutine,
        Context,
        WriteToDevice,
        Some((ScatterGatherBuffer as usize, ScatterGatherLength)),
    )
}

unsafe extern "C" fn CalculateScatterGatherList(
    DmaAdapter: *mut DMA_ADAPTER,
    Mdl: *mut MDL,
    CurrentVa: PVOID,
    Length: ULONG,
    ScatterGatherListSize: PULONG,
    pNumberOfMapRegisters: PULONG,
) -> NTSTATUS {
    let c = Call::enter();
    let (id, mdl) = (adapter_id(&c, DmaAdapter), mdl_id(&c, Mdl));
    let offset = offset_in_mdl(Mdl, CurrentVa).unwrap_or(u64::MAX / 2);
    let r = c.n.sys.with(|k| {
        k.hal_call(|h, ctx| h.calculate_scatter_gather_list(ctx, id, mdl, offset, Length))
    });
    match r {
        Ok((bytes, registers)) => {
            // SAFETY: the caller's outputs (the second is optional).
            unsafe {
                *ScatterGatherListSize = bytes;
                if !pNumberOfMapRegisters.is_null() {
                    *pNumberOfMapRegisters = registers;
                }
            }
            0
        }
        Err(s) => s.0,
    }
}

unsafe extern "C" fn PutScatterGatherList(
    DmaAdapter: *mut DMA_ADAPTER,
    ScatterGather: *mut SCATTER_GATHER_LIST,
    WriteToDevice: BOOLEAN,
) {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    let known =
        c.n.objects()
            .sg_lists
            .get(&(ScatterGather as usize))
            .copied();
    // A list never handed out (or put already) has a grant no channel holds.
    let base = known.map_or(hal::MapRegisterBase(u64::MAX), |(_, base, _)| base);
    let outstanding_before = c.n.sys.with(|k| k.hal.list_outstanding(id));
    c.n.sys.with(|k| {
        k.hal_call(|h, ctx| h.put_scatter_gather_list(ctx, id, base, WriteToDevice != 0))
    });
    let put = outstanding_before && !c.n.sys.with(|k| k.hal.list_outstanding(id));
    if put && let Some((_, _, owned)) = c.n.objects().sg_lists.remove(&(ScatterGather as usize)) {
        if let Some(words) = owned {
            // SAFETY: allocated by `alloc_list` for this list, freed once.
            unsafe { super::objects::free_list(ScatterGather as usize, words) };
        }
    }
}

// ---- common buffers and system views of MDLs --------------------------------------
//
// The driver sees a common buffer (and an MDL mapped into system space)
// through host memory of its own; the device sees simulated physical
// memory. The two meet at the driver's register accesses: before each one,
// what the device wrote into a common buffer reaches the driver's view, and
// before each register write the driver's view reaches the device's memory
// (a command starts with a register write). An MDL's view is written back
// when its IRP completes, as the I/O manager unmaps it.

unsafe extern "C" fn AllocateCommonBuffer(
    DmaAdapter: *mut DMA_ADAPTER,
    Length: ULONG,
    LogicalAddress: *mut PHYSICAL_ADDRESS,
    CacheEnabled: BOOLEAN,
) -> PVOID {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    let logical = c.n.sys.with(|k| {
        k.hal_call(|h, ctx| h.allocate_common_buffer(ctx, id, Length, CacheEnabled != 0))
    });
    let Some(logical) = logical else {
        return std::ptr::null_mut();
    };
    let words = (Length as usize).div_ceil(8);
    let view = super::objects::alloc_list(words);
    c.n.objects()
        .common_buffers
        .insert(view, (id, logical, Length, words));
    // SAFETY: the caller's output.
    unsafe { (*LogicalAddress).QuadPart = logical as i64 };
    view as PVOID
}

unsafe extern "C" fn FreeCommonBuffer(
    DmaAdapter: *mut DMA_ADAPTER,
    Length: ULONG,
    LogicalAddress: PHYSICAL_ADDRESS,
    VirtualAddress: PVOID,
    CacheEnabled: BOOLEAN,
) {
    let c = Call::enter();
    let id = adapter_id(&c, DmaAdapter);
    // SAFETY: QuadPart is the 64-bit view of PHYSICAL_ADDRESS.
    let logical = unsafe { LogicalAddress.QuadPart } as u64;
    let view =
        c.n.objects()
            .common_buffers
            .get(&(VirtualAddress as usize))
            .copied();
    let other_view =
        c.n.objects()
            .common_buffers
            .values()
            .any(|&(a, l, _, _)| a == id && l == logical);
    if view.is_none_or(|(_, l, _, _)| l != logical) && other_view {
        // The buffer exists, but not at this virtual address.
        c.n.sys
            .report_violation(Violation::CommonBufferFreedWithOtherArguments);
        return;
    }
    let freed = c.n.sys.with(|k| {
        k.hal_call(|h, ctx| h.free_common_buffer(ctx, id, Length, logical, CacheEnabled != 0))
    });
    if freed
        && let Some((_, _, _, words)) =
            c.n.objects()
                .common_buffers
                .remove(&(VirtualAddress as usize))
    {
        // SAFETY: allocated by `alloc_list` for this buffer, freed once.
        unsafe { super::objects::free_list(VirtualAddress as usize, words) };
    }
}

/// Before a register access: the device's writes into common buffers reach
/// the driver's view; before a write (`push`), the driver's view reaches
/// the device's memory.
pub(super) fn sync_common_buffers(n: &Arc<Native>, push: bool) {
    let buffers: Vec<(usize, u64, u32)> = n
        .objects()
        .common_buffers
        .iter()
        .map(|(&view, &(_, logical, length, _))| (view, logical, length))
        .collect();
    if buffers.is_empty() {
        return;
    }
    n.sys.with(|k| {
        let pull = std::mem::take(&mut k.common_written);
        for &(view, logical, length) in &buffers {
            // SAFETY: the view of `length` bytes allocated for it; nothing
            // else touches it during this call.
            let bytes = unsafe { std::slice::from_raw_parts_mut(view as *mut u8, length as usize) };
            // Straight between the view and the pages: read gives every byte.
            if pull {
                k.mem.read(logical, bytes);
            }
            if push {
                k.mem.write(logical, bytes);
            }
        }
    });
}

/// `MDL_MAPPED_TO_SYSTEM_VA` (wdm.h).
const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;

#[unsafe(no_mangle)]
pub unsafe extern "C" fn MmMapLockedPagesSpecifyCache(
    MemoryDescriptorList: *mut MDL,
    _AccessMode: wdk_sys::KPROCESSOR_MODE,
    _CacheType: wdk_sys::MEMORY_CACHING_TYPE,
    _BaseAddress: PVOID,
    _BugCheckOnFailure: ULONG,
    _Priority: wdk_sys::MM_PAGE_PRIORITY,
) -> PVOID {
    let c = Call::enter();
    super::exports::must_be_at_most_dispatch(&c, "MmMapLockedPagesSpecifyCache");
    let mdl = MemoryDescriptorList;
    let id = mdl_id(&c, mdl);
    // SAFETY: the driver's live MDL.
    let length = unsafe { (*mdl).ByteCount };
    let words = (length as usize).div_ceil(8);
    let view = super::objects::alloc_list(words);
    // SAFETY: the view of `length` bytes just allocated, no one else's yet.
    let bytes = unsafe { std::slice::from_raw_parts_mut(view as *mut u8, length as usize) };
    // The pages straight into the view.
    let read = c.n.sys.with(|k| {
        // One MDL, not its chain: its own bytes.
        let one = k.mdls.get(id).map(|m| m.byte_count);
        (one == Some(length) && k.mdls.read(&k.mem, id, 0, bytes).is_ok()).then_some(())
    });
    if read.is_none() {
        // SAFETY: allocated above, never handed out.
        unsafe { super::objects::free_list(view, words) };
        return std::ptr::null_mut();
    }
    // SAFETY: the driver's MDL.
    unsafe {
        (*mdl).MappedSystemVa = view as PVOID;
        (*mdl).MdlFlags |= MDL_MAPPED_TO_SYSTEM_VA;
    }
    c.n.objects()
        .mdl_views
        .insert(mdl as usize, (id, view, words, length));
    view as PVOID
}

/// An IRP completes: the system views of its MDLs are written back into
/// the pages they describe and unmapped, as the I/O manager does.
pub(super) fn unmap_system_views(n: &Arc<Native>, irp: *mut wdk_sys::IRP) {
    let mdls: Vec<usize> = n
        .objects()
        .irps
        .get(&(irp as usize))
        .map(|r| r.mdls.iter().map(|&(a, _)| a).collect())
        .unwrap_or_default();
    for mdl in mdls {
        let Some((id, view, words, length)) = n.objects().mdl_views.remove(&mdl) else {
            continue;
        };
        // SAFETY: the view allocated for this MDL, still allocated.
        let bytes = unsafe { std::slice::from_raw_parts(view as *const u8, length as usize) };
        // The view straight into the pages, before it is freed.
        n.sys.with(|k| {
            let _ = k.mdls.write(&mut k.mem, id, 0, bytes);
        });
        // SAFETY: the IRP's live MDL; the view is freed once, here.
        unsafe {
            let m = mdl as *mut MDL;
            (*m).MdlFlags &= !MDL_MAPPED_TO_SYSTEM_VA;
            (*m).MappedSystemVa = std::ptr::null_mut();
            super::objects::free_list(view, words);
        }
    }
}
