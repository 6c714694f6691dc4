//! Heap allocations in driver code, counted by a global allocator that asks
//! `edudma_sim::native::in_driver_code` on every allocation.
//!
//! First the mark itself: a test driver that allocates in its dispatch
//! routine and in its StartIo (called from inside `IoStartPacket`) is
//! counted, the kernel exports it calls are not, and its DPC runs marked. Then the
//! driver that ships (`src/` and the engine): zero allocations per DMA
//! request, in every strategy and with requests queued.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::quiet_config;
use common::testdriver::{self as kit, TestDriver};
use edudma_core::ioctl::{DmaHeader, IOCTL_EDUDMA_DMA_READ, IOCTL_EDUDMA_DMA_WRITE};
use edudma_core::regs::REG_IRQ_RAISE;
use edudma_sim::machine::IrpSpec;
use edudma_sim::mdl::BufferLayout;
use edudma_sim::native::in_driver_code;
use edudma_sim::sched::MS;
use edudma_sim::{DmaStrategy, SimConfig, SimMachine};
use wdk_sys::ntddk::{IoStartNextPacket, IoStartPacket};
use wdk_sys::{DEVICE_OBJECT, IRP, KDPC, NTSTATUS, PVOID};
use zerocopy::IntoBytes;

/// [`System`], counting the allocations made in driver code.
struct Counting;

static IN_DRIVER: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to `System` unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if in_driver_code() {
            IN_DRIVER.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if in_driver_code() {
            IN_DRIVER.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time: the count is the process's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn in_driver() -> u64 {
    IN_DRIVER.load(Ordering::Relaxed)
}

/// Allocations the test driver makes in its dispatch routine, and in its
/// StartIo (which `IoStartPacket`, a kernel export, calls).
const DISPATCH_ALLOCATIONS: u64 = 3;
const START_IO_ALLOCATIONS: u64 = 2;

/// Whether the test driver's StartIo and DpcForIsr ran marked as driver code.
static START_IO_IN_DRIVER: AtomicBool = AtomicBool::new(false);
static DPC_IN_DRIVER: AtomicBool = AtomicBool::new(false);

fn allocate(times: u64) {
    for i in 0..times {
        drop(std::hint::black_box(Box::new(i)));
    }
}

/// Allocate three times, then queue the request for StartIo.
unsafe extern "C" fn allocating_dispatch(device: *mut DEVICE_OBJECT, irp: *mut IRP) -> NTSTATUS {
    allocate(DISPATCH_ALLOCATIONS);
    // SAFETY: a request we own at PASSIVE_LEVEL, queued as a StartIo driver does.
    unsafe {
        kit::mark_irp_pending(irp);
        IoStartPacket(device, irp, std::ptr::null_mut(), None);
    }
    wdk_sys::STATUS_PENDING
}

/// Allocate twice, complete the request (an export, whose own allocations
/// are the kernel's) and start the next.
unsafe extern "C" fn allocating_start_io(device: *mut DEVICE_OBJECT, irp: *mut IRP) {
    START_IO_IN_DRIVER.store(in_driver_code(), Ordering::Relaxed);
    allocate(START_IO_ALLOCATIONS);
    // SAFETY: the current IRP, ours to complete; then the next packet.
    unsafe {
        kit::complete(irp, wdk_sys::STATUS_SUCCESS, 0);
        IoStartNextPacket(device, 0);
    }
}

/// The kit's logging DpcForIsr, telling whether it ran as driver code.
unsafe extern "C" fn marking_dpc(dpc: *mut KDPC, context: PVOID, a1: PVOID, a2: PVOID) {
    DPC_IN_DRIVER.store(in_driver_code(), Ordering::Relaxed);
    // SAFETY: forwarded as the kernel called it.
    unsafe { kit::log_dpc(dpc, context, a1, a2) };
}

struct Allocating;

impl TestDriver for Allocating {
    const DISPATCH: kit::DispatchRoutine = allocating_dispatch;
    const START_IO: Option<kit::StartIoRoutine> = Some(allocating_start_io);
    const DPC_FOR_ISR: kit::DeferredRoutine = marking_dpc;
}

#[test]
fn allocations_in_driver_routines_are_the_drivers_and_the_kernels_are_not() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        !in_driver_code(),
        "the test's own thread runs no driver code"
    );
    let (mut m, probe) = kit::boot::<Allocating>(&quiet_config(1), &[]);
    let spec = || IrpSpec::Control {
        code: 0x0022_2000,
        input: vec![0; 8],
        output_length: 0,
        data: Vec::new(),
    };
    // Once to warm up whatever the first request sets up, then measured.
    let irp = m.send(spec(), &BufferLayout::default()).unwrap();
    m.wait(irp, 10 * MS).unwrap();
    START_IO_IN_DRIVER.store(false, Ordering::Relaxed);
    let before = in_driver();
    let irp = m.send(spec(), &BufferLayout::default()).unwrap();
    let result = m.wait(irp, 10 * MS).unwrap();
    let counted = in_driver() - before;
    assert!(result.status.is_success(), "{:?}", result.status);
    // Building the IRP, queueing it and completing it allocate (the
    // kernel's bookkeeping); only the routines' own are the driver's.
    assert_eq!(counted, DISPATCH_ALLOCATIONS + START_IO_ALLOCATIONS);
    assert!(START_IO_IN_DRIVER.load(Ordering::Relaxed));
    // An interrupt: the ISR requests the DPC, which runs as driver code.
    kit::write_register(&mut m, &probe, REG_IRQ_RAISE, 0x1);
    m.run_for(MS).unwrap();
    assert!(
        probe.log().iter().any(|line| line.starts_with("dpc")),
        "{:?}",
        probe.log()
    );
    assert!(DPC_IN_DRIVER.load(Ordering::Relaxed));
}

/// Write and read back `rounds` times, `depth` requests in flight.
fn run_requests(sim: &mut SimMachine, rounds: u32, depth: usize) {
    let header = DmaHeader {
        device_offset: 0,
        flags: 0,
    };
    let mut in_flight = std::collections::VecDeque::new();
    for round in 0..rounds {
        let data = vec![round as u8; 4095];
        for spec in [
            IrpSpec::Control {
                code: IOCTL_EDUDMA_DMA_WRITE,
                input: header.as_bytes().to_vec(),
                output_length: 4095,
                data,
            },
            IrpSpec::Control {
                code: IOCTL_EDUDMA_DMA_READ,
                input: header.as_bytes().to_vec(),
                output_length: 4095,
                data: Vec::new(),
            },
        ] {
            in_flight.push_back(sim.submit(spec).unwrap());
            if in_flight.len() == depth {
                let irp = in_flight.pop_front().unwrap();
                assert!(sim.wait(irp).unwrap().status.is_success());
            }
        }
    }
    while let Some(irp) = in_flight.pop_front() {
        assert!(sim.wait(irp).unwrap().status.is_success());
    }
}

#[test]
fn the_shipped_driver_allocates_nothing_per_request() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let configs = [
        SimConfig::default(),
        SimConfig {
            map_registers: 1,
            ..SimConfig::default()
        },
        SimConfig {
            memory_mib: 512,
            cpus: 4,
            allocation: edudma_sim::Allocation::Async,
            ..SimConfig::default()
        },
        SimConfig {
            dma_strategy: DmaStrategy::V1Packet,
            ..SimConfig::default()
        },
        SimConfig {
            dma_strategy: DmaStrategy::SgList,
            ..SimConfig::default()
        },
        SimConfig {
            dma_strategy: DmaStrategy::CommonBuffer,
            ..SimConfig::default()
        },
    ];
    for config in configs {
        let name = format!(
            "{:?}, {} map registers, {} CPUs",
            config.dma_strategy, config.map_registers, config.cpus
        );
        let mut sim = SimMachine::new(config).unwrap();
        // The first requests may set up what later ones reuse.
        run_requests(&mut sim, 2, 1);
        for depth in [1, 4] {
            let before = in_driver();
            run_requests(&mut sim, 20, depth);
            assert_eq!(
                in_driver() - before,
                0,
                "{name}, queue depth {depth}: allocations in driver code"
            );
        }
        sim.finish().unwrap();
    }
}
