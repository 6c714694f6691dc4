//! The version-1 routines of the shared HAL model and the verifier rules
//! that guard them: each rule is broken once here and must fire.

mod common;

use common::{Flat, POOL_FRAME, World};
use edudma_core::NtStatus;
use edudma_hal::hal::{
    AdapterId, BouncePool, DeviceDescription, Hal, HalConfig, HalCtx, MapRegisterBase,
};
use edudma_hal::mdl::{MdlId, MdlTable};
use edudma_hal::rng::SimRng;
use edudma_hal::{Irql, PAGE_SIZE, PhysMemory, Rule, Verifier, Violation};

#[test]
fn a_bus_master_without_scatter_gather_gets_one_range_through_map_registers() {
    let mut w = World::new(4);
    let mdl = w.buffer(100, 5000);
    // Its pages are two frames apart: physically discontiguous.
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    w.mdls.write(&mut w.mem, mdl, 0, &data).unwrap();
    let base = w.allocate(2);
    let id = w.adapter;
    let element = w
        .call(Irql::Dispatch, |h, c| {
            h.map_transfer(c, id, mdl, base, 0, 5000, true)
        })
        .expect("mapped");
    // MapTransfer: "Otherwise, the input and output values of Length are identical".
    assert_eq!(element.length, 5000);
    assert_eq!(element.address, POOL_FRAME * PAGE_SIZE + 100);
    let mut bounced = vec![0u8; 5000];
    w.mem.read(element.address, &mut bounced);
    assert_eq!(bounced, data);
    w.call(Irql::Dispatch, |h, c| {
        h.flush_adapter_buffers(c, id, mdl, base, 0, 5000, true)
    })
    .expect("flushed");
    w.call(Irql::Dispatch, |h, c| h.free_map_registers(c, id, base, 2));
    w.call(Irql::Passive, |h, c| h.put_dma_adapter(c, id));
    assert!(w.violations().is_empty(), "{:?}", w.verifier.violations());
    assert!(w.hal.leaks(id).is_empty());
    let stats = w.hal.stats();
    assert_eq!(
        (stats.maps, stats.flushes, stats.map_register_frees),
        (1, 1, 1)
    );
    assert_eq!(stats.bounced_pages, 2);
}

#[test]
fn map_transfer_beyond_the_map_registers_held_is_0x00() {
    let mut w = World::new(4);
    let mdl = w.buffer(100, 4096);
    let base = w.allocate(1);
    let id = w.adapter;
    // 4096 bytes at page offset 100 need two map registers; one is held.
    let mapped = w.call(Irql::Dispatch, |h, c| {
        h.map_transfer(c, id, mdl, base, 0, 4096, false)
    });
    assert_eq!(mapped, Err(NtStatus::INSUFFICIENT_RESOURCES));
    assert_eq!(
        w.verifier.violations(),
        &[Violation::MapBeyondMapRegisters { needed: 2, held: 1 }]
    );
    assert_eq!(w.violations(), vec![Rule::Dma(0x00)]);
}

#[test]
fn map_transfer_past_its_mdl_is_0x1b() {
    let mut w = World::new(4);
    let mdl = w.buffer(0, 1000);
    let base = w.allocate(1);
    let id = w.adapter;
    let mapped = w.call(Irql::Dispatch, |h, c| {
        h.map_transfer(c, id, mdl, base, 500, 501, true)
    });
    assert!(mapped.is_err());
    assert_eq!(w.violations(), vec![Rule::Dma(0x1B)]);
}

/// Map 3000 bytes at 0 and return what the flush tests need.
fn mapped_3000(w: &mut World) -> (AdapterId, MdlId, MapRegisterBase) {
    let mdl = w.buffer(0, 3000);
    let base = w.allocate(1);
    let id = w.adapter;
    w.call(Irql::Dispatch, |h, c| {
        h.map_transfer(c, id, mdl, base, 0, 3000, true)
    })
    .expect("mapped");
    (id, mdl, base)
}

#[test]
fn flush_with_another_current_va_than_the_map_is_0x16() {
    let mut w = World::new(4);
    let (id, mdl, base) = mapped_3000(&mut w);
    let flushed = w.call(Irql::Dispatch, |h, c| {
        h.flush_adapter_buffers(c, id, mdl, base, 8, 2992, true)
    });
    assert!(flushed.is_err());
    assert_eq!(w.violations(), vec![Rule::Dma(0x16)]);
}

#[test]
fn flush_of_more_bytes_than_the_map_is_0x00() {
    let mut w = World::new(4);
    let (id, mdl, base) = mapped_3000(&mut w);
    let flushed = w.call(Irql::Dispatch, |h, c| {
        h.flush_adapter_buffers(c, id, mdl, base, 0, 3001, true)
    });
    assert!(flushed.is_err());
    assert_eq!(
        w.verifier.violations(),
        &[Violation::FlushedPastMapping {
            mapped: 3000,
            flushed: 3001
        }]
    );
    assert_eq!(w.violations(), vec![Rule::Dma(0x00)]);
}

#[test]
fn flush_of_fewer_bytes_or_the_other_direction_is_0x16() {
    for (length, write) in [(2999, true), (3000, false)] {
        let mut w = World::new(4);
        let (id, mdl, base) = mapped_3000(&mut w);
        let flushed = w.call(Irql::Dispatch, |h, c| {
            h.flush_adapter_buffers(c, id, mdl, base, 0, length, write)
        });
        assert!(flushed.is_err());
        assert_eq!(w.violations(), vec![Rule::Dma(0x16)], "{length} {write}");
    }
}

#[test]
fn free_map_registers_before_the_flush_is_0x10() {
    let mut w = World::new(4);
    let (id, _, base) = mapped_3000(&mut w);
    w.call(Irql::Dispatch, |h, c| h.free_map_registers(c, id, base, 1));
    assert_eq!(w.violations(), vec![Rule::Dma(0x10)]);
}

#[test]
fn free_map_registers_with_another_count_or_base_is_0x05() {
    for (count, other_base) in [(2, false), (1, true)] {
        let mut w = World::new(4);
        let mdl = w.buffer(0, 100);
        let base = w.allocate(1);
        let id = w.adapter;
        let _ = mdl;
        let base = if other_base {
            MapRegisterBase(base.0 + 8)
        } else {
            base
        };
        w.call(Irql::Dispatch, |h, c| {
            h.free_map_registers(c, id, base, count)
        });
        assert_eq!(
            w.violations(),
            vec![Rule::Dma(0x05)],
            "{count} {other_base}"
        );
    }
}

#[test]
fn free_map_registers_twice_is_0x05() {
    let mut w = World::new(4);
    let base = w.allocate(1);
    let id = w.adapter;
    w.call(Irql::Dispatch, |h, c| h.free_map_registers(c, id, base, 1));
    assert!(w.violations().is_empty());
    w.call(Irql::Dispatch, |h, c| h.free_map_registers(c, id, base, 1));
    assert_eq!(w.violations(), vec![Rule::Dma(0x05)]);
}

#[test]
fn put_with_map_registers_kept_is_0x09() {
    let mut w = World::new(4);
    w.allocate(1);
    let id = w.adapter;
    w.call(Irql::Passive, |h, c| h.put_dma_adapter(c, id));
    assert_eq!(w.violations(), vec![Rule::Dma(0x09)]);
}

#[test]
fn a_second_allocation_while_the_registers_are_kept_is_legal() {
    // DeallocateObjectKeepRegisters gave the adapter object back.
    let mut w = World::new(4);
    let first = w.allocate(1);
    let second = w.allocate(1);
    assert_ne!(first, second);
    assert!(w.violations().is_empty());
}

#[test]
fn allocate_adapter_channel_below_dispatch_is_0x14() {
    let mut w = World::new(4);
    let id = w.adapter;
    let result = w.call(Irql::Passive, |h, c| h.allocate_adapter_channel(c, id, 1));
    assert!(result.is_err());
    assert_eq!(w.violations(), vec![Rule::Dma(0x14)]);
}

#[test]
fn ke_flush_io_buffers_above_dispatch_is_an_irql_violation() {
    let mut w = World::new(4);
    w.call(Irql::Dispatch, |h, c| h.ke_flush_io_buffers(c));
    assert!(w.violations().is_empty());
    w.call(Irql::Device, |h, c| h.ke_flush_io_buffers(c));
    assert_eq!(w.violations(), vec![Rule::Irql("IrqlCheck")]);
    assert_eq!(w.hal.stats().io_buffer_flushes, 1);
}

#[test]
fn without_version3_io_get_dma_adapter_returns_null_for_version3_only() {
    let mut mem = Flat(vec![0; 8 << 20]);
    let pool = BouncePool {
        frames: vec![POOL_FRAME],
        guards: Vec::new(),
        common: Vec::new(),
    };
    let config = HalConfig {
        dma_v3: false,
        ..HalConfig::default()
    };
    let mut hal = Hal::new(config, pool, &mut mem);
    let mdls = MdlTable::new();
    let mut verifier = Verifier::new();
    let mut rng = SimRng::new(2);
    let mut ctx = HalCtx {
        mem: &mut mem,
        mdls: &mdls,
        verifier: &mut verifier,
        irql: Irql::Passive,
        rng: &mut rng,
        device_busy: None,
    };
    let v3 = DeviceDescription {
        version: 3,
        master: true,
        scatter_gather: true,
        dma_address_width: 28,
        maximum_length: 4096,
        ..DeviceDescription::default()
    };
    assert!(hal.io_get_dma_adapter(&mut ctx, &v3).is_none());
    let v2 = DeviceDescription {
        version: 2,
        dma_address_width: 0,
        ..v3
    };
    let (id, _) = hal.io_get_dma_adapter(&mut ctx, &v2).expect("version 2");
    assert_eq!(hal.adapter_version(id), Some(2));
    assert!(verifier.violations().is_empty());
}
