//! Common buffers in the shared HAL model and the verifier rules that guard
//! them: each rule is broken once here and must fire.

mod common;

use common::{VERSION3, World};
use edudma_hal::{Irql, PAGE_SIZE, Rule, Violation};

fn allocated() -> (World, u64) {
    let mut w = World::with(2, &VERSION3);
    let id = w.adapter;
    let logical = w
        .call(Irql::Passive, |h, c| {
            h.allocate_common_buffer(c, id, 4096, false)
        })
        .expect("a common buffer");
    (w, logical)
}

#[test]
fn a_common_buffer_is_below_the_width_and_the_device_may_use_it_both_ways() {
    let (mut w, logical) = allocated();
    let id = w.adapter;
    assert!(logical + 4096 <= 1 << 28);
    assert_eq!(logical % PAGE_SIZE, 0);
    assert!(w.hal.bus_access_allowed(logical, 4096, true));
    assert!(w.hal.bus_access_allowed(logical, 4096, false));
    assert!(w.hal.touches_common_buffer(logical + 100, 1));
    assert!(w.call(Irql::Passive, |h, c| {
        h.free_common_buffer(c, id, 4096, logical, false)
    }));
    assert!(
        !w.hal.bus_access_allowed(logical, 4096, true),
        "gone with its free"
    );
    w.call(Irql::Passive, |h, c| h.put_dma_adapter(c, id));
    assert!(w.violations().is_empty(), "{:?}", w.verifier.violations());
    assert!(w.hal.leaks(id).is_empty());
}

#[test]
fn free_common_buffer_twice_is_0x03() {
    let (mut w, logical) = allocated();
    let id = w.adapter;
    assert!(w.call(Irql::Passive, |h, c| {
        h.free_common_buffer(c, id, 4096, logical, false)
    }));
    assert!(!w.call(Irql::Passive, |h, c| {
        h.free_common_buffer(c, id, 4096, logical, false)
    }));
    assert_eq!(w.violations(), vec![Rule::Dma(0x03)]);
}

#[test]
fn free_common_buffer_with_other_arguments_is_refused() {
    for (length, cached) in [(2048, false), (4096, true)] {
        let (mut w, logical) = allocated();
        let id = w.adapter;
        assert!(!w.call(Irql::Passive, |h, c| {
            h.free_common_buffer(c, id, length, logical, cached)
        }));
        assert_eq!(
            w.verifier.violations(),
            &[Violation::CommonBufferFreedWithOtherArguments],
            "{length} {cached}"
        );
        assert_eq!(w.hal.common_buffers(id), 1, "still allocated");
    }
}

#[test]
fn put_dma_adapter_with_a_common_buffer_is_0x07() {
    let (mut w, _) = allocated();
    let id = w.adapter;
    w.call(Irql::Passive, |h, c| h.put_dma_adapter(c, id));
    assert_eq!(
        w.verifier.violations(),
        &[Violation::AdapterPutWithCommonBuffers { outstanding: 1 }]
    );
    assert_eq!(w.violations(), vec![Rule::Dma(0x07)]);
}

#[test]
fn common_buffer_routines_above_passive_are_0x13() {
    let mut w = World::with(2, &VERSION3);
    let id = w.adapter;
    assert_eq!(
        w.call(Irql::Dispatch, |h, c| h
            .allocate_common_buffer(c, id, 4096, false)),
        None
    );
    assert_eq!(w.violations(), vec![Rule::Dma(0x13)]);
    let (mut w, logical) = allocated();
    let id = w.adapter;
    w.call(Irql::Dispatch, |h, c| {
        h.free_common_buffer(c, id, 4096, logical, false)
    });
    assert_eq!(w.violations(), vec![Rule::Dma(0x13)]);
}

#[test]
fn the_frames_run_out() {
    let (mut w, _) = allocated();
    let id = w.adapter;
    // The world has two common-buffer frames.
    assert!(
        w.call(Irql::Passive, |h, c| h
            .allocate_common_buffer(c, id, 100, false))
            .is_some()
    );
    assert_eq!(
        w.call(Irql::Passive, |h, c| h
            .allocate_common_buffer(c, id, 100, false)),
        None
    );
    assert!(w.violations().is_empty());
}
