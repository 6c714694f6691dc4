//! The scatter/gather-list routines of the shared HAL model and the
//! verifier rules that guard them: each rule is broken once here and must
//! fire.

mod common;

use common::{VERSION3, World};
use edudma_core::NtStatus;
use edudma_hal::hal::{AllocateResult, IoAllocationAction, MapRegisterBase, sg_list_size};
use edudma_hal::mdl::MdlId;
use edudma_hal::{Irql, PAGE_SIZE, PhysMemory, Rule, Violation};

/// A version-3 28-bit adapter and a buffer of `len` bytes at page offset 100.
fn world_with_buffer(map_registers: u32, len: u32) -> (World, MdlId) {
    let mut w = World::with(map_registers, &VERSION3);
    let mdl = w.buffer(100, len);
    (w, mdl)
}

/// `BuildScatterGatherList` into a buffer of `bytes`, its routine run at
/// once (the grant inline) and the list built for it.
fn build(
    w: &mut World,
    mdl: MdlId,
    length: u32,
    write: bool,
    bytes: Option<u32>,
) -> Result<(MapRegisterBase, Vec<edudma_core::dma::SgElement>), NtStatus> {
    let id = w.adapter;
    let result = w.call(Irql::Dispatch, |h, c| {
        h.get_scatter_gather_list(c, id, mdl, 0, length, write, bytes)
    })?;
    let AllocateResult::RunNow(base) = result else {
        panic!("an inline grant, got {result:?}");
    };
    let elements = w.call(Irql::Dispatch, |h, c| h.build_list(c, id, base))?;
    w.hal
        .routine_returned(&mut w.verifier, id, base, IoAllocationAction::KeepObject);
    Ok((base, elements))
}

#[test]
fn a_list_maps_each_page_and_its_put_copies_a_read_back() {
    let (mut w, mdl) = world_with_buffer(4, 5000);
    let id = w.adapter;
    let (bytes, registers) = w
        .call(Irql::Dispatch, |h, c| {
            h.calculate_scatter_gather_list(c, id, mdl, 0, 5000)
        })
        .unwrap();
    assert_eq!((bytes, registers), (sg_list_size(2), 2));
    let (base, elements) = build(&mut w, mdl, 5000, false, Some(bytes)).unwrap();
    // The buffer's pages are two frames apart and below 256 MiB: one
    // element each, not bounced.
    assert_eq!(elements.len(), 2);
    assert_eq!(elements.iter().map(|e| e.length).sum::<u32>(), 5000);
    assert_eq!(elements[0].address, 0x2000 * PAGE_SIZE + 100);
    // The device writes into the pages; the put leaves them as written.
    w.mem.write(elements[0].address, &[7; 10]);
    assert!(w.hal.list_outstanding(id));
    w.call(Irql::Dispatch, |h, c| {
        h.put_scatter_gather_list(c, id, base, false)
    });
    assert!(!w.hal.list_outstanding(id));
    let mut back = [0u8; 10];
    w.mdls.read(&w.mem, mdl, 0, &mut back).unwrap();
    assert_eq!(back, [7; 10]);
    w.call(Irql::Passive, |h, c| h.put_dma_adapter(c, id));
    assert!(w.violations().is_empty(), "{:?}", w.verifier.violations());
    assert!(w.hal.leaks(id).is_empty());
    let stats = w.hal.stats();
    assert_eq!((stats.lists_built, stats.lists_put), (1, 1));
}

#[test]
fn put_scatter_gather_list_twice_is_0x06() {
    let (mut w, mdl) = world_with_buffer(4, 100);
    let id = w.adapter;
    let (base, _) = build(&mut w, mdl, 100, true, None).unwrap();
    w.call(Irql::Dispatch, |h, c| {
        h.put_scatter_gather_list(c, id, base, true)
    });
    assert!(w.violations().is_empty());
    w.call(Irql::Dispatch, |h, c| {
        h.put_scatter_gather_list(c, id, base, true)
    });
    assert_eq!(w.violations(), vec![Rule::Dma(0x06)]);
}

#[test]
fn put_scatter_gather_list_of_a_list_never_given_is_0x06() {
    let (mut w, _) = world_with_buffer(4, 100);
    let id = w.adapter;
    w.call(Irql::Dispatch, |h, c| {
        h.put_scatter_gather_list(c, id, MapRegisterBase(0x77), true)
    });
    assert_eq!(
        w.verifier.violations(),
        &[Violation::ScatterGatherListFreedTooOften]
    );
}

#[test]
fn put_scatter_gather_list_with_the_other_direction_is_refused() {
    let (mut w, mdl) = world_with_buffer(4, 100);
    let id = w.adapter;
    let (base, _) = build(&mut w, mdl, 100, true, None).unwrap();
    w.call(Irql::Dispatch, |h, c| {
        h.put_scatter_gather_list(c, id, base, false)
    });
    assert_eq!(
        w.violations(),
        vec![Rule::Own("PutScatterGatherListDirection")]
    );
    assert!(w.hal.list_outstanding(id), "the list is still the driver's");
}

#[test]
fn put_dma_adapter_with_a_list_outstanding_is_0x0a() {
    let (mut w, mdl) = world_with_buffer(4, 100);
    let id = w.adapter;
    build(&mut w, mdl, 100, true, None).unwrap();
    w.call(Irql::Passive, |h, c| h.put_dma_adapter(c, id));
    assert_eq!(
        w.verifier.violations(),
        &[Violation::AdapterPutWithScatterGatherLists { outstanding: 1 }]
    );
    assert_eq!(w.violations(), vec![Rule::Dma(0x0A)]);
}

#[test]
fn a_list_leaked_at_the_end_is_found() {
    let (mut w, mdl) = world_with_buffer(4, 100);
    let id = w.adapter;
    build(&mut w, mdl, 100, true, None).unwrap();
    assert!(w.hal.leaks(id).contains(&Violation::ChannelLeaked));
}

#[test]
fn a_driver_buffer_too_small_or_too_few_map_registers_fail_with_a_status() {
    let (mut w, mdl) = world_with_buffer(4, 5000);
    assert_eq!(
        build(&mut w, mdl, 5000, true, Some(sg_list_size(2) - 1)).unwrap_err(),
        NtStatus::BUFFER_TOO_SMALL
    );
    let (mut w, mdl) = world_with_buffer(1, 5000);
    assert_eq!(
        build(&mut w, mdl, 5000, true, None).unwrap_err(),
        NtStatus::INSUFFICIENT_RESOURCES
    );
    assert!(w.violations().is_empty(), "statuses, not bug checks");
}

#[test]
fn put_scatter_gather_list_below_dispatch_is_0x14() {
    let (mut w, mdl) = world_with_buffer(4, 100);
    let id = w.adapter;
    let (base, _) = build(&mut w, mdl, 100, true, None).unwrap();
    w.call(Irql::Passive, |h, c| {
        h.put_scatter_gather_list(c, id, base, true)
    });
    assert_eq!(w.violations(), vec![Rule::Dma(0x14)]);
}
