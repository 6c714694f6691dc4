//! Driver Verifier's DMA rules (bug check 0xE6): one deliberately wrong call
//! sequence per rule, each asserting the exact violation; plus the clean
//! sequence that must raise none.
//!
//! The calls are a test driver's, written against the kernel exports: it
//! gets its version-3 adapter with `IoGetDmaAdapter` at start, pends the
//! writes it is sent (their MDLs are the buffers), and each test runs a
//! routine of it on a simulated CPU that calls the adapter's
//! `DMA_OPERATIONS` with those MDLs, an `extern "C"` execution routine and
//! a scatter/gather buffer of its own.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::testdriver::{self as kit, Bar0, DMA_ADAPTER_AT_START, Probe, TestDriver};
use common::{bugcheck, edu_description, quiet_config};
use edudma_core::regs::*;
use edudma_sim::hal::DeviceDescription;
use edudma_sim::irql::Irql;
use edudma_sim::machine::{IrpSpec, Machine, MachineConfig};
use edudma_sim::mdl::BufferLayout;
use edudma_sim::native::NativeDriver;
use edudma_sim::phys::Placement;
use edudma_sim::sched::MS;
use edudma_sim::verifier::{Rule, Violation};
use wdk_sys::ntddk::IoGetDmaAdapter;
use wdk_sys::{
    _IO_ALLOCATION_ACTION, DEVICE_OBJECT, DMA_ADAPTER, DMA_OPERATIONS, DMA_TRANSFER_INFO,
    IO_ALLOCATION_ACTION, IRP, MDL, NTSTATUS, PVOID, SCATTER_GATHER_ELEMENT, SCATTER_GATHER_LIST,
};

/// `DMA_SYNCHRONOUS_CALLBACK` (wdm.h).
const DMA_SYNCHRONOUS_CALLBACK: u32 = 0x01;
/// `DMA_TRANSFER_INFO_VERSION1` (wdm.h).
const DMA_TRANSFER_INFO_VERSION1: u32 = 1;
/// Bytes of the driver's scatter/gather buffer (enough for any mapping here).
const SG_BUFFER_BYTES: u32 = 1024;

// ---- the test driver --------------------------------------------------------------

/// Every request is pended and kept: its MDL chain is a buffer for the
/// DMA routines the test calls.
unsafe extern "C" fn dispatch(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: our FDO and a request we own at PASSIVE_LEVEL.
    unsafe {
        kit::mark_irp_pending(irp);
        kit::ext(device).probe.keep(irp);
    }
    kit::STATUS_PENDING
}

/// The driver whose DMA calls the tests make.
struct DmaDriver;

impl TestDriver for DmaDriver {
    const DISPATCH: kit::DispatchRoutine = dispatch;
}

/// What an execution routine is to do, and what it saw.
#[derive(Debug)]
struct Grant {
    /// Call FreeAdapterChannel before returning.
    free_channel_first: bool,
    /// The action to return.
    action: IO_ALLOCATION_ACTION,
    /// The map-register base it was given.
    base: AtomicUsize,
    /// FreeAdapterChannel returned (the machine did not bug-check in it).
    freed: AtomicBool,
    /// The routine ran to its return.
    ran: AtomicBool,
    /// The device extension of the allocating driver (the allocation names
    /// the PDO, so the routine cannot find it from its DeviceObject).
    ext: AtomicUsize,
}

impl Grant {
    fn new(action: IO_ALLOCATION_ACTION) -> Arc<Self> {
        Self::with(action, false)
    }

    fn with(action: IO_ALLOCATION_ACTION, free_channel_first: bool) -> Arc<Self> {
        Arc::new(Self {
            free_channel_first,
            action,
            base: AtomicUsize::new(0),
            freed: AtomicBool::new(false),
            ran: AtomicBool::new(false),
            ext: AtomicUsize::new(0),
        })
    }

    fn ran(&self) -> bool {
        self.ran.load(Ordering::Acquire)
    }

    fn base(&self) -> Base {
        Base(self.base.load(Ordering::Acquire))
    }
}

/// The execution routine (`DRIVER_CONTROL`) of every AllocateAdapterChannelEx.
unsafe extern "C" fn execution_routine(
    device: *mut DEVICE_OBJECT,
    _irp: *mut IRP,
    map_register_base: PVOID,
    context: PVOID,
) -> IO_ALLOCATION_ACTION {
    // SAFETY: the context is the test's Grant, which outlives the channel.
    let grant = unsafe { &*context.cast::<Grant>() };
    grant
        .base
        .store(map_register_base as usize, Ordering::Release);
    if grant.free_channel_first {
        let _ = device; // the PDO the allocation named
        Dma(grant.ext.load(Ordering::Acquire)).free_adapter_channel();
        grant.freed.store(true, Ordering::Release);
    }
    grant.ran.store(true, Ordering::Release);
    grant.action
}

fn ptr_of(ext: &kit::Ext) -> usize {
    std::ptr::from_ref(ext) as usize
}

/// An MDL chain (`*mut MDL`) of a pended request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mdl(usize);

/// A map-register base (`PVOID`) as the HAL handed it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Base(usize);

/// One element of a scatter/gather list: `(Address, Length)`.
type Element = (u64, u32);

/// The version-3 DMA operations of the driver's adapter, called the way
/// `src/dma_ops.rs` calls them: `(*(*adapter).DmaOperations).Member`.
/// Only ever handed to code running as a routine of the driver (`Rig::at`)
/// of a started device that is never removed.
#[derive(Clone, Copy, Debug)]
struct Dma(usize);

impl Dma {
    fn ext(self) -> &'static kit::Ext {
        // SAFETY: the extension of a started device that stays (see above).
        unsafe { kit::ext_at(self.0) }
    }

    fn adapter(self) -> *mut DMA_ADAPTER {
        self.ext().adapter.load(Ordering::Acquire)
    }

    fn ops(self) -> &'static DMA_OPERATIONS {
        // SAFETY: the adapter IoGetDmaAdapter returned at start; its table
        // lives as long as the machine (even after PutDmaAdapter).
        unsafe { &*(*self.adapter()).DmaOperations }
    }

    fn context(self) -> PVOID {
        self.ext().dma_context.get().cast()
    }

    fn put_dma_adapter(self) {
        if let Some(f) = self.ops().PutDmaAdapter {
            // SAFETY: the driver's adapter, on a simulated CPU.
            unsafe { f(self.adapter()) }
        }
    }

    fn free_adapter_channel(self) {
        if let Some(f) = self.ops().FreeAdapterChannel {
            // SAFETY: as above.
            unsafe { f(self.adapter()) }
        }
    }

    fn free_map_registers(self, base: Base, count: u32) {
        if let Some(f) = self.ops().FreeMapRegisters {
            // SAFETY: as above; the base as the HAL handed it out.
            unsafe { f(self.adapter(), base.0 as PVOID, count) }
        }
    }

    fn get_dma_alignment(self) -> u32 {
        match self.ops().GetDmaAlignment {
            // SAFETY: as above.
            Some(f) => unsafe { f(self.adapter()) },
            None => 0,
        }
    }

    /// `(MapRegisterCount, ScatterGatherElementCount, ScatterGatherListSize)`.
    fn get_dma_transfer_info(
        self,
        mdl: Mdl,
        offset: u64,
        length: u32,
        write_only: bool,
    ) -> Result<(u32, u32, u32), NTSTATUS> {
        let Some(f) = self.ops().GetDmaTransferInfo else {
            return Err(wdk_sys::STATUS_NOT_SUPPORTED);
        };
        // SAFETY: all-zero is a valid DMA_TRANSFER_INFO; Version selects V1.
        let mut info: DMA_TRANSFER_INFO = unsafe { std::mem::zeroed() };
        info.Version = DMA_TRANSFER_INFO_VERSION1;
        // SAFETY: as above; a live MDL chain of a pended request.
        let status = unsafe {
            f(
                self.adapter(),
                mdl.0 as *mut MDL,
                offset,
                length,
                u8::from(write_only),
                &mut info,
            )
        };
        if status < 0 {
            return Err(status);
        }
        // SAFETY: Version 1 was asked for: the V1 arm was written.
        let v1 = unsafe { info.__bindgen_anon_1.V1 };
        Ok((
            v1.MapRegisterCount,
            v1.ScatterGatherElementCount,
            v1.ScatterGatherListSize,
        ))
    }

    fn initialize_dma_transfer_context(self) -> NTSTATUS {
        match self.ops().InitializeDmaTransferContext {
            // SAFETY: as above; the context lives in the nonpaged extension.
            Some(f) => unsafe { f(self.adapter(), self.context()) },
            None => wdk_sys::STATUS_NOT_SUPPORTED,
        }
    }

    /// `AllocateAdapterChannelEx` with [`execution_routine`] and `grant`.
    fn allocate_adapter_channel_ex(self, count: u32, flags: u32, grant: &Grant) -> NTSTATUS {
        let Some(f) = self.ops().AllocateAdapterChannelEx else {
            return wdk_sys::STATUS_NOT_SUPPORTED;
        };
        grant.ext.store(ptr_of(self.ext()), Ordering::Release);
        // SAFETY: as above; the routine's context outlives the channel
        // (the test holds the Grant until the machine is dropped).
        unsafe {
            f(
                self.adapter(),
                self.ext().pdo,
                self.context(),
                count,
                flags,
                Some(execution_routine),
                std::ptr::from_ref(grant).cast_mut().cast(),
                std::ptr::null_mut(),
            )
        }
    }

    /// MapTransferEx into a scatter/gather buffer of `sg_bytes` bytes:
    /// the bytes mapped and the list's elements.
    #[allow(clippy::too_many_arguments)]
    fn map_transfer_ex_into(
        self,
        mdl: Mdl,
        base: Base,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg_bytes: u32,
    ) -> Result<(u32, Vec<Element>), NTSTATUS> {
        let Some(f) = self.ops().MapTransferEx else {
            return Err(wdk_sys::STATUS_NOT_SUPPORTED);
        };
        let mut buffer = vec![0u64; SG_BUFFER_BYTES as usize / 8];
        let list = buffer.as_mut_ptr().cast::<SCATTER_GATHER_LIST>();
        let mut mapped = length;
        // SAFETY: as above; the buffer holds `sg_bytes` (<= its size) bytes,
        // 8-aligned.
        let status = unsafe {
            f(
                self.adapter(),
                mdl.0 as *mut MDL,
                base.0 as PVOID,
                offset,
                0,
                &mut mapped,
                u8::from(write_to_device),
                list,
                sg_bytes.min(SG_BUFFER_BYTES),
                None,
                std::ptr::null_mut(),
            )
        };
        if status < 0 {
            return Err(status);
        }
        // SAFETY: the HAL wrote NumberOfElements contiguous elements.
        let elements = unsafe {
            let first = (&raw const (*list).Elements).cast::<SCATTER_GATHER_ELEMENT>();
            (0..(*list).NumberOfElements as usize)
                .map(|i| {
                    let e = first.add(i);
                    ((*e).Address.QuadPart as u64, (*e).Length)
                })
                .collect()
        };
        Ok((mapped, elements))
    }

    fn map_transfer_ex(
        self,
        mdl: Mdl,
        base: Base,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(u32, Vec<Element>), NTSTATUS> {
        self.map_transfer_ex_into(mdl, base, offset, length, write_to_device, SG_BUFFER_BYTES)
    }

    fn flush_adapter_buffers_ex(
        self,
        mdl: Mdl,
        base: Base,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> NTSTATUS {
        match self.ops().FlushAdapterBuffersEx {
            // SAFETY: as above.
            Some(f) => unsafe {
                f(
                    self.adapter(),
                    mdl.0 as *mut MDL,
                    base.0 as PVOID,
                    offset,
                    length,
                    u8::from(write_to_device),
                )
            },
            None => wdk_sys::STATUS_NOT_SUPPORTED,
        }
    }

    /// A synchronous grant (`DMA_SYNCHRONOUS_CALLBACK`) kept with
    /// `KeepObject`: the base, if the routine ran inside the call.
    fn grant(self, count: u32) -> Option<Base> {
        let grant = Grant::new(_IO_ALLOCATION_ACTION::KeepObject);
        let status = self.allocate_adapter_channel_ex(count, DMA_SYNCHRONOUS_CALLBACK, &grant);
        (status >= 0 && grant.ran()).then(|| grant.base())
    }
}

// ---- the harness ------------------------------------------------------------------

/// A machine with the driver started.
struct Rig {
    m: Machine<NativeDriver>,
    probe: Arc<Probe>,
}

impl Rig {
    /// Started, with its adapter.
    fn new(config: &MachineConfig) -> Self {
        let (m, probe) = kit::boot::<DmaDriver>(config, &[(DMA_ADAPTER_AT_START, 1)]);
        Self { m, probe }
    }

    /// Started, without an adapter.
    fn bare(config: &MachineConfig) -> Self {
        let (m, probe) = kit::boot::<DmaDriver>(config, &[]);
        Self { m, probe }
    }

    /// Map registers IoGetDmaAdapter granted.
    fn granted(&self) -> u32 {
        let ext = self.probe.ext();
        // SAFETY: the extension of the started device.
        unsafe { kit::ext_at(ext) }
            .map_registers
            .load(Ordering::Acquire)
    }

    /// Run `f` as a routine of the driver at `irql`; `None` if the machine
    /// bug-checked in it.
    fn at<R: Send + 'static>(
        &mut self,
        irql: Irql,
        f: impl FnOnce(Dma) -> R + Send + 'static,
    ) -> Option<R> {
        let dma = Dma(self.probe.ext());
        kit::at(&mut self.m, irql, move || f(dma))
    }

    /// [`Rig::at`] DISPATCH_LEVEL, where the DMA routines run.
    fn dispatch<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(Dma) -> R + Send + 'static,
    ) -> Option<R> {
        self.at(Irql::Dispatch, f)
    }

    /// A buffer of `len` bytes laid out as `layout`, filled with `fill(i)`:
    /// the MDL chain of a write the driver pended.
    fn buffer(&mut self, len: u32, layout: &BufferLayout, fill: impl Fn(usize) -> u8) -> Mdl {
        let data = (0..len as usize).map(fill).collect();
        self.m
            .send(IrpSpec::Write { offset: 0, data }, layout)
            .expect("send");
        let kept = self.probe.pended().last().copied().expect("pended");
        assert_ne!(kept.mdl, 0, "a write has an MDL");
        Mdl(kept.mdl)
    }

    fn bugcheck(&self) -> Option<Violation> {
        bugcheck(&self.m)
    }

    /// `IoGetDmaAdapter` at PASSIVE_LEVEL with `desc`: the adapter was returned.
    fn io_get_dma_adapter(&mut self, desc: &DeviceDescription) -> bool {
        let ext = self.probe.ext();
        let mut d = kit::device_description(desc);
        kit::at(&mut self.m, Irql::Passive, move || {
            // SAFETY: the extension of the started device.
            let pdo = unsafe { kit::ext_at(ext) }.pdo;
            let mut map_registers = 0u32;
            // SAFETY: PASSIVE_LEVEL with our PDO and a filled description.
            let adapter = unsafe { IoGetDmaAdapter(pdo, &mut d, &mut map_registers) };
            !adapter.is_null()
        })
        .unwrap_or(false)
    }
}

fn ready(seed: u64) -> Rig {
    Rig::new(&quiet_config(seed))
}

/// A synchronous KeepObject grant of 2 map registers.
fn channel(seed: u64) -> (Rig, Base) {
    let mut rig = ready(seed);
    let (init, base) = rig
        .dispatch(|dma| (dma.initialize_dma_transfer_context(), dma.grant(2)))
        .expect("no bug check");
    assert_eq!(init, 0, "InitializeDmaTransferContext");
    (rig, base.expect("granted inside the call"))
}

#[test]
fn verifier_clean_ten_steps_raise_nothing_and_bounce_high_pages() {
    let mut rig = ready(1);
    assert_eq!(rig.granted(), 2, "MaximumLength 4096 -> 2 map registers");
    let layout = BufferLayout {
        placement: Placement::Mixed,
        byte_offset: Some(3000),
        ..BufferLayout::default()
    };
    let mdl = rig.buffer(4000, &layout, |i| (i * 7) as u8);
    let (info, base, mapped) = rig
        .dispatch(move |dma| {
            let info = dma.get_dma_transfer_info(mdl, 0, 4000, true);
            let _ = dma.initialize_dma_transfer_context();
            let base = dma.grant(2)?;
            Some((info, base, dma.map_transfer_ex(mdl, base, 0, 4000, true)))
        })
        .flatten()
        .expect("granted, no bug check");
    assert_eq!(info.map(|i| i.0), Ok(2), "two map registers");
    let (length, sg) = mapped.expect("mapped");
    assert_eq!(length, 4000);
    assert!(sg.iter().all(|(a, l)| a + u64::from(*l) <= 1 << 28));
    // The device may read exactly these ranges: they hold the data.
    let mut seen = Vec::new();
    rig.m.sys().with(|k| {
        for (address, length) in &sg {
            let mut b = vec![0u8; *length as usize];
            k.mem.read(*address, &mut b);
            seen.extend(b);
        }
    });
    assert_eq!(seen, (0..4000).map(|i| (i * 7) as u8).collect::<Vec<_>>());
    assert!(rig.m.sys().with(|k| k.hal.stats().bounced_pages) >= 1);
    let flushed = rig.dispatch(move |dma| {
        let flushed = dma.flush_adapter_buffers_ex(mdl, base, 0, 4000, true);
        dma.free_adapter_channel();
        flushed
    });
    assert_eq!(flushed, Some(0));
    rig.at(Irql::Passive, |dma| dma.put_dma_adapter());
    assert_eq!(rig.bugcheck(), None);
}

#[test]
fn verifier_0x04_adapter_channel_freed_twice() {
    let (mut rig, _) = channel(2);
    rig.dispatch(|dma| dma.free_adapter_channel());
    assert_eq!(rig.bugcheck(), None);
    rig.dispatch(|dma| dma.free_adapter_channel());
    assert_eq!(rig.bugcheck(), Some(Violation::AdapterChannelFreedTooOften));
    assert_eq!(rig.bugcheck().unwrap().rule(), Rule::Dma(0x04));
}

#[test]
fn verifier_0x05_map_registers_freed_that_were_not_kept() {
    let (mut rig, base) = channel(3);
    // KeepObject grant: FreeMapRegisters is the wrong call.
    rig.dispatch(move |dma| dma.free_map_registers(base, 2));
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::MapRegistersFreedTooOften { count: 2, held: 0 })
    );
}

#[test]
fn verifier_0x08_adapter_put_with_channel_held() {
    let (mut rig, _) = channel(4);
    rig.dispatch(|dma| dma.put_dma_adapter());
    assert_eq!(rig.bugcheck(), Some(Violation::AdapterPutWithChannel));
}

/// An asynchronous grant of 2 map registers whose execution routine does
/// what `grant` says: the call returns before the routine runs (the grant
/// is committed, not inline), then the machine runs it.
fn committed_grant(seed: u64, grant: &Arc<Grant>) -> Rig {
    let mut c = quiet_config(seed);
    c.hal.inline_grant_percent = 0;
    let mut rig = Rig::new(&c);
    let g = Arc::clone(grant);
    let (status, ran_inside) = rig
        .dispatch(move |dma| {
            let _ = dma.initialize_dma_transfer_context();
            let status = dma.allocate_adapter_channel_ex(2, 0, &g);
            (status, g.ran())
        })
        .expect("no bug check");
    assert_eq!((status, ran_inside), (0, false), "queued");
    let g = Arc::clone(grant);
    let _ = rig.m.run_until(move |_| g.ran(), MS);
    assert!(grant.ran(), "the execution routine ran");
    rig
}

fn keep_registers_only(seed: u64) -> (Rig, Base) {
    // An execution routine that returns DeallocateObjectKeepRegisters.
    let grant = Grant::new(_IO_ALLOCATION_ACTION::DeallocateObjectKeepRegisters);
    let rig = committed_grant(seed, &grant);
    assert_eq!(rig.bugcheck(), None);
    (rig, grant.base())
}

/// An execution routine that frees the channel itself and then returns
/// `DeallocateObject` makes the HAL free it a second time.
#[test]
fn verifier_0x04_deallocate_object_after_free_adapter_channel() {
    for (action, fires) in [
        (_IO_ALLOCATION_ACTION::DeallocateObject, true),
        (_IO_ALLOCATION_ACTION::DeallocateObjectKeepRegisters, true),
        (_IO_ALLOCATION_ACTION::KeepObject, false),
    ] {
        // Inside the execution routine: FreeAdapterChannel, then the return.
        let grant = Grant::with(action, true);
        let rig = committed_grant(12, &grant);
        assert!(
            grant.freed.load(Ordering::Acquire),
            "FreeAdapterChannel itself raised nothing ({action})"
        );
        assert_eq!(
            rig.bugcheck() == Some(Violation::AdapterChannelFreedTooOften),
            fires,
            "{action}"
        );
    }
}

#[test]
fn verifier_0x09_adapter_put_with_map_registers_kept() {
    let (mut rig, _) = keep_registers_only(5);
    rig.dispatch(|dma| dma.put_dma_adapter());
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::AdapterPutWithMapRegisters { outstanding: 2 })
    );
}

#[test]
fn verifier_keep_registers_pattern_is_clean_when_freed_right() {
    let (mut rig, base) = keep_registers_only(6);
    rig.dispatch(move |dma| {
        dma.free_map_registers(base, 2);
        dma.put_dma_adapter();
    });
    assert_eq!(rig.bugcheck(), None);
}

#[test]
fn verifier_0x0b_two_channels_at_once() {
    let mut rig = ready(8);
    rig.dispatch(|dma| {
        let _ = dma.initialize_dma_transfer_context();
        let _ = dma.grant(1);
        let _ = dma.grant(1);
    });
    assert_eq!(rig.bugcheck(), Some(Violation::TooManyAdapterChannels));
}

#[test]
fn verifier_0x0c_more_map_registers_than_granted() {
    let mut rig = ready(9);
    let granted = rig.granted();
    rig.dispatch(move |dma| {
        let _ = dma.initialize_dma_transfer_context();
        let _ = dma.grant(granted + 1);
    });
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::TooManyMapRegisters {
            requested: granted + 1,
            granted
        })
    );
}

#[test]
fn verifier_0x15_more_map_registers_than_the_hal_has() {
    let mut rig = ready(10);
    rig.dispatch(|dma| {
        let _ = dma.initialize_dma_transfer_context();
        let _ = dma.grant(100_000);
    });
    assert!(matches!(
        rig.bugcheck(),
        Some(Violation::MapRegistersAboveMaximum {
            requested: 100_000,
            ..
        })
    ));
    assert_eq!(rig.bugcheck().unwrap().dma_subcode(), Some(0x15));
}

#[test]
fn verifier_0x0d_second_map_before_flush() {
    let (mut rig, base) = channel(11);
    let mdl = rig.buffer(8192, &BufferLayout::default(), |i| i as u8);
    let first = rig.dispatch(move |dma| {
        let first = dma.map_transfer_ex(mdl, base, 0, 100, true);
        let _ = dma.map_transfer_ex(mdl, base, 4096, 100, true);
        first
    });
    assert_eq!(first, None, "the second map bug-checked");
    assert_eq!(rig.bugcheck(), Some(Violation::AdapterBuffersNotFlushed));
}

#[test]
fn verifier_0x0d_irp_completed_before_its_flush() {
    let (mut rig, base) = channel(21);
    let mdl = rig.buffer(100, &BufferLayout::default(), |i| i as u8);
    let irp = rig.probe.pended().last().copied().expect("pended").irp;
    rig.dispatch(move |dma| {
        let _ = dma.map_transfer_ex(mdl, base, 0, 100, true);
        // SAFETY: the write the driver pended, completed once, at DISPATCH_LEVEL.
        unsafe { kit::complete(irp as *mut IRP, 0, 100) };
    });
    assert_eq!(rig.bugcheck(), Some(Violation::AdapterBuffersNotFlushed));
}

#[test]
fn verifier_irp_completed_after_its_flush_is_clean() {
    let (mut rig, base) = channel(22);
    let mdl = rig.buffer(100, &BufferLayout::default(), |i| i as u8);
    let irp = rig.probe.pended().last().copied().expect("pended").irp;
    rig.dispatch(move |dma| {
        let _ = dma.map_transfer_ex(mdl, base, 0, 100, true);
        dma.flush_adapter_buffers_ex(mdl, base, 0, 100, true);
        // SAFETY: as above.
        unsafe { kit::complete(irp as *mut IRP, 0, 100) };
    });
    assert_eq!(rig.bugcheck(), None);
}

#[test]
fn verifier_0x0e_dma_on_an_unlocked_buffer() {
    let (mut rig, base) = channel(12);
    let layout = BufferLayout {
        unlocked: true,
        ..BufferLayout::default()
    };
    let mdl = rig.buffer(100, &layout, |_| 1);
    let mapped = rig.dispatch(move |dma| dma.map_transfer_ex(mdl, base, 0, 100, true));
    assert_eq!(mapped, None, "the bug check parks the routine");
    assert_eq!(rig.bugcheck(), Some(Violation::UnlockedBuffer));
}

/// Map 200 bytes of a high buffer (bounced), let `stray` pick one byte
/// from the mapped range `(address, length)`, overwrite it as a device
/// would, flush, and return the bug check with the byte's address.
fn flush_after_a_stray_write(stray: impl Fn(u64, u64) -> u64) -> (Option<Violation>, u64) {
    let (mut rig, base) = channel(13);
    let layout = BufferLayout {
        placement: Placement::High,
        byte_offset: Some(100),
        ..BufferLayout::default()
    };
    let mdl = rig.buffer(200, &layout, |_| 0);
    let (_, sg) = rig
        .dispatch(move |dma| dma.map_transfer_ex(mdl, base, 0, 200, false))
        .expect("no bug check")
        .expect("mapped");
    let (address, length) = sg[0];
    let byte = stray(address, u64::from(length));
    rig.m.sys().with(|k| k.mem.write(byte, &[0x00]));
    rig.dispatch(move |dma| dma.flush_adapter_buffers_ex(mdl, base, 0, 200, false));
    (rig.bugcheck(), byte)
}

#[test]
fn verifier_0x0f_write_outside_the_bounce_buffer() {
    // One byte past the mapped range.
    let (bugcheck, byte) = flush_after_a_stray_write(|address, length| address + length);
    assert_eq!(
        bugcheck,
        Some(Violation::GuardBytesOverwritten { bus_address: byte })
    );
}

#[test]
fn verifier_0x0f_write_before_the_bounce_buffer() {
    // The guard range before the data is checked as well as the one after.
    let (bugcheck, byte) = flush_after_a_stray_write(|address, _| address - 1);
    assert_eq!(
        bugcheck,
        Some(Violation::GuardBytesOverwritten { bus_address: byte })
    );
}

#[test]
fn verifier_0x10_channel_freed_while_mapped() {
    let (mut rig, base) = channel(14);
    let mdl = rig.buffer(100, &BufferLayout::default(), |_| 1);
    rig.dispatch(move |dma| {
        let _ = dma.map_transfer_ex(mdl, base, 0, 100, true);
        dma.free_adapter_channel();
    });
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::MapRegistersFreedWhileMapped)
    );
}

#[test]
fn verifier_0x13_dma_routine_above_dispatch() {
    let (mut rig, base) = channel(15);
    let mdl = rig.buffer(100, &BufferLayout::default(), |_| 1);
    // MapTransferEx from a routine at DIRQL (an ISR's).
    rig.at(Irql::Device, move |dma| {
        let _ = dma.map_transfer_ex(mdl, base, 0, 100, true);
    });
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::DmaIrqlTooHigh {
            routine: "MapTransferEx",
            irql: Irql::Device
        })
    );
}

#[test]
fn verifier_0x13_get_dma_alignment_is_passive_only() {
    let mut rig = ready(16);
    rig.dispatch(|dma| dma.get_dma_alignment());
    assert_eq!(rig.bugcheck().unwrap().dma_subcode(), Some(0x13));
}

#[test]
fn verifier_0x14_allocate_below_dispatch() {
    let mut rig = ready(17);
    rig.dispatch(|dma| dma.initialize_dma_transfer_context());
    rig.at(Irql::Passive, |dma| dma.grant(1));
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::DmaIrqlTooLow {
            routine: "AllocateAdapterChannelEx",
            irql: Irql::Passive
        })
    );
}

#[test]
fn verifier_0x16_flush_with_other_parameters_than_the_map() {
    let (mut rig, base) = channel(18);
    let mdl = rig.buffer(100, &BufferLayout::default(), |_| 1);
    rig.dispatch(move |dma| {
        let _ = dma.map_transfer_ex(mdl, base, 0, 100, true);
        dma.flush_adapter_buffers_ex(mdl, base, 0, 99, true)
    });
    assert_eq!(rig.bugcheck(), Some(Violation::FlushedUnmappedBuffer));
}

#[test]
fn verifier_0x18_adapter_used_after_put() {
    let mut rig = ready(19);
    rig.at(Irql::Passive, |dma| dma.put_dma_adapter());
    assert_eq!(rig.bugcheck(), None);
    rig.dispatch(|dma| dma.initialize_dma_transfer_context());
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::AdapterUsedAfterRelease {
            routine: "InitializeDmaTransferContext"
        })
    );
}

#[test]
fn verifier_0x1b_range_not_inside_the_mdl() {
    let mut rig = ready(20);
    let mdl = rig.buffer(100, &BufferLayout::default(), |_| 1);
    let info = rig.dispatch(move |dma| dma.get_dma_transfer_info(mdl, 50, 51, true));
    // The bug check parks the routine: it never returns its status.
    assert_eq!(info, None);
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::AddressNotInMdl {
            offset: 50,
            length: 51,
            chain_length: 100
        })
    );
}

#[test]
fn verifier_0x1d_range_mapped_twice() {
    let (mut rig, base) = channel(21);
    let mdl = rig.buffer(100, &BufferLayout::default(), |_| 1);
    rig.dispatch(move |dma| {
        let _ = dma.map_transfer_ex(mdl, base, 0, 100, true);
        let _ = dma.map_transfer_ex(mdl, base, 50, 50, true);
    });
    assert_eq!(rig.bugcheck(), Some(Violation::RangeAlreadyMapped));
}

#[test]
fn verifier_0x21_zero_length_transfer() {
    let mut rig = ready(22);
    let mdl = rig.buffer(100, &BufferLayout::default(), |_| 1);
    rig.dispatch(move |dma| dma.get_dma_transfer_info(mdl, 0, 0, true));
    assert_eq!(rig.bugcheck(), Some(Violation::ZeroLengthMapping));
}

#[test]
fn verifier_0x23_flush_while_the_device_still_transfers() {
    let (mut rig, base) = channel(23);
    let mdl = rig.buffer(64, &BufferLayout::default(), |_| 1);
    // Bus mastering on (config space, as firmware may leave it).
    rig.m.sys().set_pci_command(0x6);
    rig.dispatch(move |dma| {
        let Ok((_, sg)) = dma.map_transfer_ex(mdl, base, 0, 64, false) else {
            return;
        };
        let (address, length) = sg[0];
        // Device -> RAM into the mapped range, then a flush too early.
        let mut regs = Bar0(dma.ext());
        regs.write32(REG_DMA_SRC, 0x40000);
        regs.write32(REG_DMA_DST, address as u32);
        regs.write32(REG_DMA_COUNT, length);
        regs.write32(REG_DMA_CMD, (DmaCommand::START | DmaCommand::TO_RAM).bits());
        let _ = dma.flush_adapter_buffers_ex(mdl, base, 0, 64, false);
    });
    assert_eq!(rig.bugcheck(), Some(Violation::FlushedChannelNotCompleted));
}

#[test]
fn verifier_0x24_scatter_gather_buffer_too_small() {
    let (mut rig, base) = channel(24);
    let mdl = rig.buffer(64, &BufferLayout::default(), |_| 1);
    let mapped = rig.dispatch(move |dma| dma.map_transfer_ex_into(mdl, base, 0, 64, true, 32));
    assert_eq!(mapped, None, "the bug check parks the routine");
    assert!(matches!(
        rig.bugcheck(),
        Some(Violation::ScatterGatherBufferTooSmall { given: 32, .. })
    ));
}

#[test]
fn verifier_0x25_unknown_device_description_version() {
    let mut rig = Rig::bare(&quiet_config(25));
    let desc = DeviceDescription {
        version: 4,
        ..edu_description()
    };
    assert!(!rig.io_get_dma_adapter(&desc));
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::UnknownDeviceDescriptionVersion { version: 4 })
    );
}

#[test]
fn verifier_off_io_get_dma_adapter_returns_no_adapter_for_unknown_version() {
    let mut c = quiet_config(26);
    c.dma_verification = false;
    let mut rig = Rig::bare(&c);
    let desc = DeviceDescription {
        version: 7,
        ..edu_description()
    };
    assert!(!rig.io_get_dma_adapter(&desc));
    assert_eq!(rig.bugcheck(), None);
    // Versions 1 and 2 give an adapter (32-bit for PCI), 3 honours the width.
    for v in 0..=3 {
        let d = DeviceDescription {
            version: v,
            ..edu_description()
        };
        assert!(rig.io_get_dma_adapter(&d), "version {v}");
    }
}

#[test]
fn verifier_uninitialized_transfer_context() {
    let mut rig = ready(27);
    rig.dispatch(|dma| dma.grant(1));
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::TransferContextNotInitialized)
    );
}

/// Learn names the PDO as `AllocateAdapterChannelEx`'s device object; the
/// FDO (what edudma passed before) is refused by the simulator's own check.
#[test]
fn verifier_own_allocate_adapter_channel_with_the_fdo() {
    let mut rig = ready(41);
    let _ = rig.dispatch(|dma| {
        dma.initialize_dma_transfer_context();
        let Some(f) = dma.ops().AllocateAdapterChannelEx else {
            return wdk_sys::STATUS_NOT_SUPPORTED;
        };
        // SAFETY: the test driver's live adapter and context; the FDO is
        // the mistake under test.
        unsafe {
            f(
                dma.adapter(),
                dma.ext().fdo,
                dma.context(),
                1,
                ffi_sync(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        }
    });
    assert_eq!(
        rig.bugcheck(),
        Some(Violation::DmaDeviceObjectNotPdo {
            routine: "AllocateAdapterChannelEx"
        })
    );
    assert_eq!(
        rig.bugcheck().unwrap().rule(),
        Rule::Own("DmaDeviceObjectNotPdo")
    );
}

/// `DMA_SYNCHRONOUS_CALLBACK` (wdm.h).
fn ffi_sync() -> u32 {
    0x1
}
