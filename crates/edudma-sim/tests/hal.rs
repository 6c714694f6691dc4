//! The HAL model's documented behaviours: CancelAdapterChannel by timing,
//! execution routines inside and after the allocating call, partial maps
//! under a small map-register budget, scatter/gather off, double buffering
//! on map (writes) and on flush (reads), synchronous refusal; plus the
//! determinism of the scheduler and the 28-bit clamp caught end to end.

mod common;

use common::*;
use edudma_core::NtStatus;
use edudma_core::dma::{AllocateOutcome, AllocationMode, DmaOps, SgList};
use edudma_sim::edu::DeviceFault;
use edudma_sim::machine::{IrpSpec, Machine};
use edudma_sim::mdl::BufferLayout;
use edudma_sim::phys::{LOW_LIMIT, Placement};
use edudma_sim::{Crash, SimConfig, SimMachine};

#[test]
fn cancel_adapter_channel_is_true_while_queued_and_false_once_granted() {
    let mut c = quiet_config(1);
    c.hal.contention_percent = 100;
    let (m, mut dma, _) = adapter(&c, &edu_description());
    dma.initialize_dma_transfer_context().unwrap();
    assert_eq!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous),
        Ok(AllocateOutcome::Queued)
    );
    assert!(m.sys().with(|k| k.hal.is_waiting(dma.adapter())));
    assert!(dma.cancel_adapter_channel(), "still queued: TRUE");
    // The context is free again: a new request may be made.
    dma.initialize_dma_transfer_context().unwrap();

    let mut c = quiet_config(2);
    c.hal.inline_grant_percent = 0;
    let (m, mut dma, _) = adapter(&c, &edu_description());
    dma.initialize_dma_transfer_context().unwrap();
    assert_eq!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous),
        Ok(AllocateOutcome::Queued)
    );
    assert!(m.sys().with(|k| k.hal.granting(dma.adapter())).is_some());
    assert!(
        !dma.cancel_adapter_channel(),
        "already granted: FALSE, the routine still runs"
    );
    assert_eq!(bugcheck(&m), None);
}

#[test]
fn synchronous_allocation_is_refused_when_busy() {
    let mut c = quiet_config(3);
    c.hal.contention_percent = 100;
    let (m, mut dma, _) = adapter(&c, &edu_description());
    dma.initialize_dma_transfer_context().unwrap();
    assert_eq!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous),
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    );
    assert_eq!(bugcheck(&m), None);
}

/// The engine's fallback: a refused synchronous call consumed the transfer
/// context, so the asynchronous retry starts from a fresh one; without it
/// the retry is a verifier stop.
#[test]
fn a_refused_synchronous_allocation_consumes_the_transfer_context() {
    let mut c = quiet_config(3);
    c.hal.contention_percent = 100;
    let (m, mut dma, _) = adapter(&c, &edu_description());
    dma.initialize_dma_transfer_context().unwrap();
    assert_eq!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous),
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    );
    dma.initialize_dma_transfer_context().unwrap();
    assert_eq!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous),
        Ok(AllocateOutcome::Queued)
    );
    assert_eq!(bugcheck(&m), None);

    let (m, mut dma, _) = adapter(&c, &edu_description());
    dma.initialize_dma_transfer_context().unwrap();
    assert_eq!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous),
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    );
    let _ = dma.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous);
    assert_eq!(
        bugcheck(&m),
        Some(edudma_sim::verifier::Violation::TransferContextNotInitialized)
    );
}

#[test]
fn the_execution_routine_sometimes_runs_inside_the_call() {
    let mut c = quiet_config(4);
    c.hal.inline_grant_percent = 50;
    let (m, mut dma, _) = adapter(&c, &edu_description());
    let (mut inside, mut later) = (0, 0);
    for _ in 0..64 {
        dma.initialize_dma_transfer_context().unwrap();
        match dma.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous) {
            Ok(AllocateOutcome::Granted(_)) => inside += 1,
            Ok(AllocateOutcome::Queued) => {
                later += 1;
                let base = m.sys().with(|k| k.hal.granting(dma.adapter())).unwrap();
                m.sys().hal_routine_returned(
                    dma.adapter(),
                    base,
                    edudma_sim::hal::IoAllocationAction::KeepObject,
                );
            }
            other => panic!("{other:?}"),
        }
        dma.free_adapter_channel();
    }
    assert!(inside > 10 && later > 10, "inside {inside}, later {later}");
    assert_eq!(bugcheck(&m), None);
}

fn map_all(
    m: &Machine<Null>,
    dma: &mut edudma_sim::wdm::SimDma,
    len: u32,
    write: bool,
    layout: &BufferLayout,
) -> (Vec<u32>, Vec<usize>) {
    let mdl = buffer(m, len, layout, |i| i as u8);
    dma.initialize_dma_transfer_context().unwrap();
    let granted = m.sys().with(|k| k.hal.config().map_registers);
    let base = match dma.allocate_adapter_channel_ex(granted.min(2), AllocationMode::Synchronous) {
        Ok(AllocateOutcome::Granted(b)) => b,
        other => panic!("{other:?}"),
    };
    let (mut sizes, mut elements, mut off) = (Vec::new(), Vec::new(), 0u32);
    while off < len {
        let mut sg = SgList::new();
        let n = dma
            .map_transfer_ex(mdl, base, u64::from(off), len - off, write, &mut sg)
            .unwrap();
        assert_eq!(sg.total_length(), u64::from(n));
        dma.flush_adapter_buffers_ex(mdl, base, u64::from(off), n, write)
            .unwrap();
        sizes.push(n);
        elements.push(sg.len());
        off += n;
    }
    dma.free_adapter_channel();
    (sizes, elements)
}

#[test]
fn one_map_register_maps_one_page_at_a_time() {
    let mut c = quiet_config(5);
    c.hal.map_registers = 1;
    let (m, mut dma, granted) = adapter(&c, &edu_description());
    assert_eq!(granted, 1);
    let layout = BufferLayout {
        byte_offset: Some(4000),
        ..BufferLayout::default()
    };
    let (sizes, _) = map_all(&m, &mut dma, 5000, true, &layout);
    assert_eq!(sizes, vec![96, 4096, 808]);
    assert_eq!(bugcheck(&m), None);
}

#[test]
fn without_scatter_gather_each_map_is_one_contiguous_element() {
    let desc = edudma_sim::hal::DeviceDescription {
        scatter_gather: false,
        ..edu_description()
    };
    let (m, mut dma, _) = adapter(&quiet_config(6), &desc);
    let layout = BufferLayout {
        placement: Placement::Low,
        byte_offset: Some(100),
        ..BufferLayout::default()
    };
    let (sizes, elements) = map_all(&m, &mut dma, 6000, false, &layout);
    assert!(elements.iter().all(|e| *e == 1), "{elements:?}");
    assert_eq!(sizes.iter().sum::<u32>(), 6000);
}

#[test]
fn reads_are_copied_back_from_bounce_pages_at_flush() {
    let (m, mut dma, _) = adapter(&quiet_config(7), &edu_description());
    let layout = BufferLayout {
        placement: Placement::High,
        byte_offset: Some(10),
        ..BufferLayout::default()
    };
    let mdl = buffer(&m, 300, &layout, |_| 0);
    dma.initialize_dma_transfer_context().unwrap();
    let base = match dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous) {
        Ok(AllocateOutcome::Granted(b)) => b,
        other => panic!("{other:?}"),
    };
    let mut sg = SgList::new();
    assert_eq!(
        dma.map_transfer_ex(mdl, base, 0, 300, false, &mut sg),
        Ok(300)
    );
    let e = sg.as_slice()[0];
    assert!(e.address < LOW_LIMIT, "bounced below 256 MiB");
    // The device writes the bounce page.
    m.sys().with(|k| k.mem.write(e.address, &[0xCD; 300]));
    assert_eq!(contents(&m, mdl, 300), vec![0; 300], "not before the flush");
    dma.flush_adapter_buffers_ex(mdl, base, 0, 300, false)
        .unwrap();
    assert_eq!(contents(&m, mdl, 300), vec![0xCD; 300]);
    dma.free_adapter_channel();
    assert_eq!(bugcheck(&m), None);
}

#[test]
fn one_seed_one_run_and_seeds_differ() {
    let run = |seed: u64| {
        let mut sim = SimMachine::new(SimConfig {
            seed,
            cpus: 3,
            contention_percent: 40,
            ..SimConfig::default()
        })
        .unwrap();
        let a = sim
            .submit(IrpSpec::Write {
                offset: 0,
                data: vec![1; 3000],
            })
            .unwrap();
        let b = sim
            .submit(IrpSpec::Read {
                offset: 7,
                length: 2000,
            })
            .unwrap();
        sim.cancel_after(b, std::time::Duration::from_micros(100_030));
        let ra = sim.wait(a).unwrap();
        let rb = sim.wait(b).unwrap();
        (ra, rb, sim.stats())
    };
    assert_eq!(run(11), run(11));
    let times: std::collections::BTreeSet<_> =
        (0..8).map(|s| format!("{:?}", run(s).2.kernel)).collect();
    assert!(times.len() > 1, "different seeds, different schedules");
}

#[test]
fn a_device_narrower_than_the_drivers_28_bits_has_its_addresses_clamped() {
    // The driver (src/) describes a 28-bit bus master; a device that really
    // decodes 20 bits truncates every address above 1 MiB: the model
    // catches the DMA landing elsewhere.
    let mut sim = SimMachine::new(SimConfig {
        seed: 8,
        dma_mask_bits: 20,
        contention_percent: 0,
        placement: Placement::Low,
        ..SimConfig::default()
    })
    .expect("start");
    assert!(
        sim.machine().sys().with(|k| k.device.bus_master()),
        "the driver turned bus mastering on"
    );
    let r = sim.dma_write(0, &[5; 100]);
    assert!(
        matches!(
            r,
            Err(edudma_sim::SimError::Crash(Crash::Device(
                DeviceFault::AddressClamped { .. }
            )))
        ),
        "{r:?}"
    );
}

/// The HAL's own calls on the machine of `m` (at its current IRQL).
fn hal<T>(
    m: &Machine<Null>,
    f: impl FnOnce(&mut edudma_sim::hal::Hal, &mut edudma_sim::hal::HalCtx<'_>) -> T,
) -> T {
    m.sys().with(|k| k.hal_call(f))
}

/// `DeallocateObjectKeepRegisters` gives the channel back and keeps only
/// the map registers: the adapter may allocate again before they are freed.
#[test]
fn a_new_allocation_after_deallocate_object_keep_registers_is_legal() {
    let mut c = quiet_config(31);
    c.hal.inline_grant_percent = 0;
    let (m, mut dma, _) = adapter(&c, &edu_description());
    let id = dma.adapter();
    dma.initialize_dma_transfer_context().unwrap();
    assert_eq!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous),
        Ok(AllocateOutcome::Queued)
    );
    let kept = m.sys().with(|k| k.hal.granting(id)).expect("committed");
    m.sys().hal_routine_returned(
        id,
        kept,
        edudma_sim::hal::IoAllocationAction::DeallocateObjectKeepRegisters,
    );
    dma.initialize_dma_transfer_context().unwrap();
    let second = match dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous) {
        Ok(AllocateOutcome::Granted(b)) => b,
        other => panic!("a second channel while registers are kept: {other:?}"),
    };
    assert_ne!(second, kept);
    dma.free_adapter_channel();
    dma.free_map_registers(kept, 1);
    dma.put_dma_adapter();
    assert_eq!(bugcheck(&m), None);
}

/// A `CancelAdapterChannel` that finds no request pending on an initialized
/// context returns TRUE and cancels the allocation that follows.
#[test]
fn a_cancel_before_the_allocation_cancels_the_allocation() {
    let (m, mut dma, _) = adapter(&quiet_config(32), &edu_description());
    dma.initialize_dma_transfer_context().unwrap();
    assert!(dma.cancel_adapter_channel(), "nothing pending yet: TRUE");
    assert_eq!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Asynchronous),
        Err(NtStatus::CANCELLED)
    );
    assert_eq!(m.sys().with(|k| k.hal.stats().pre_cancelled), 1);
    // Re-initialized, the context allocates normally.
    dma.initialize_dma_transfer_context().unwrap();
    assert!(matches!(
        dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous),
        Ok(AllocateOutcome::Granted(_))
    ));
    dma.free_adapter_channel();
    dma.put_dma_adapter();
    assert_eq!(bugcheck(&m), None);
}

/// A synchronous `AllocateAdapterChannelEx` with no execution routine hands
/// the base back and keeps the channel (as KeepObject) until
/// `FreeAdapterObject`; freeing it twice is the double free 0x04.
#[test]
fn a_synchronous_grant_without_a_routine_ends_with_free_adapter_object() {
    use edudma_sim::hal::{AllocateResult, IoAllocationAction};
    let (m, mut dma, _) = adapter(&quiet_config(33), &edu_description());
    let id = dma.adapter();
    dma.initialize_dma_transfer_context().unwrap();
    let base = match hal(&m, |h, ctx| h.allocate_adapter_channel_ex(ctx, id, 2, true)) {
        Ok(AllocateResult::RunNow(b)) => b,
        other => panic!("no synchronous grant: {other:?}"),
    };
    // What the export does when ExecutionRoutine is NULL.
    m.sys()
        .hal_routine_returned(id, base, IoAllocationAction::KeepObject);
    let layout = BufferLayout::default();
    let mdl = buffer(&m, 600, &layout, |i| i as u8);
    let mut sg = SgList::new();
    assert_eq!(
        dma.map_transfer_ex(mdl, base, 0, 600, true, &mut sg),
        Ok(600)
    );
    dma.flush_adapter_buffers_ex(mdl, base, 0, 600, true)
        .unwrap();
    hal(&m, |h, ctx| {
        h.free_adapter_object(ctx, id, IoAllocationAction::DeallocateObject)
    });
    assert_eq!(bugcheck(&m), None);
    assert!(
        m.sys().with(|k| k.hal.idle(id)),
        "channel and registers freed"
    );
    hal(&m, |h, ctx| {
        h.free_adapter_object(ctx, id, IoAllocationAction::DeallocateObject)
    });
    assert_eq!(
        bugcheck(&m),
        Some(edudma_sim::verifier::Violation::AdapterChannelFreedTooOften)
    );
}
