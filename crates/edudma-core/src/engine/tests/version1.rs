//! The `v1-packet` strategy: the version-1 packet-based sequence through the
//! same tokens and states as version 3.

use super::*;

const V1_FACTS: AdapterFacts = AdapterFacts {
    dma_interface_version: 2,
    strategy: DmaStrategy::V1Packet,
    map_registers: 16,
    dma_address_width: 28,
    scatter_gather: false,
    interrupt_kind: InterruptKind::LineBased,
    common_buffer: None,
};

fn v1_started(map_registers: u32, hal: &Hal, edu: &mut Edu) -> TestEngine {
    let mut engine = TestEngine::new(EngineConfig::default());
    let facts = AdapterFacts {
        map_registers,
        ..V1_FACTS
    };
    engine.start_device(hal.clone(), facts, edu).unwrap();
    engine
}

/// The calls after `GetDmaAlignment` at start.
fn transfer_calls(hal: &Hal) -> Vec<Call> {
    hal.calls()[1..].to_vec()
}

#[test]
fn one_write_is_the_packet_based_sequence() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = v1_started(16, &hal, &mut edu);
    assert_eq!(
        engine.start_io(7, dma(Direction::ToDevice, 16, 100), &mut edu),
        None
    );
    // Queued: AdapterControl runs later.
    assert_eq!(
        transfer_calls(&hal),
        vec![Call::FlushIo { read: false }, Call::AllocateV1 { count: 1 }]
    );
    assert_eq!(engine.channel_granted(BASE, &mut edu), None);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(7, 100));
    assert_eq!(
        &transfer_calls(&hal)[2..],
        &[
            Call::MapV1 {
                offset: 0,
                length: 100,
                write: true
            },
            Call::FlushV1 {
                offset: 0,
                length: 100,
                write: true
            },
            Call::FreeMapRegisters { count: 1 },
        ]
    );
    let stats = engine.stats();
    assert_eq!(stats.flush_io_buffers, 1);
    assert_eq!(stats.allocate_adapter_channel, 1);
    assert_eq!((stats.map_transfer, stats.flush_adapter_buffers), (1, 1));
    assert_eq!(stats.free_map_registers, 1);
    assert_eq!(stats.free_adapter_channel, 0);
    assert_eq!(stats.get_dma_transfer_info, 0);
    assert_eq!(
        engine.device_info().dma_strategy,
        ioctl::DmaStrategyCode::V1Packet as u32
    );
}

#[test]
fn a_read_flushes_io_buffers_for_a_read_operation() {
    let hal = Hal::default();
    hal.set(|h| h.async_grants_now = true);
    let mut edu = Edu::default();
    let mut engine = v1_started(16, &hal, &mut edu);
    engine.start_io(1, dma(Direction::FromDevice, 0, 10), &mut edu);
    assert_eq!(transfer_calls(&hal)[0], Call::FlushIo { read: true });
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 10));
}

#[test]
fn short_map_registers_split_with_current_va_advanced() {
    let hal = Hal::default();
    // The buffer starts 100 bytes into a page: 4095 bytes span two pages,
    // one map register maps 3996 of them.
    hal.set(|h| {
        h.async_grants_now = true;
        h.page_offset = 100;
    });
    let mut edu = Edu::default();
    let mut engine = v1_started(1, &hal, &mut edu);
    engine.start_io(3, dma(Direction::FromDevice, 0, 4095), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(3, 4095));
    let maps_and_flushes: Vec<Call> = transfer_calls(&hal)
        .into_iter()
        .filter(|c| matches!(c, Call::MapV1 { .. } | Call::FlushV1 { .. }))
        .collect();
    assert_eq!(
        maps_and_flushes,
        vec![
            Call::MapV1 {
                offset: 0,
                length: 3996,
                write: false
            },
            Call::FlushV1 {
                offset: 0,
                length: 3996,
                write: false
            },
            Call::MapV1 {
                offset: 3996,
                length: 99,
                write: false
            },
            Call::FlushV1 {
                offset: 3996,
                length: 99,
                write: false
            },
        ]
    );
    assert_eq!(
        transfer_calls(&hal)[1],
        Call::AllocateV1 { count: 1 },
        "asks for what it spans, capped at the registers granted"
    );
    assert_eq!(edu.commands.len(), 2);
    assert_eq!(engine.stats().partial_maps, 1);
}

#[test]
fn one_map_never_crosses_an_mdl() {
    let hal = Hal::default();
    hal.set(|h| {
        h.async_grants_now = true;
        h.mdl_bytes = 1000;
    });
    let mut edu = Edu::default();
    let mut engine = v1_started(16, &hal, &mut edu);
    engine.start_io(4, dma(Direction::ToDevice, 0, 2500), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(4, 2500));
    let lengths: Vec<(u64, u32)> = transfer_calls(&hal)
        .into_iter()
        .filter_map(|c| match c {
            Call::MapV1 { offset, length, .. } => Some((offset, length)),
            _ => None,
        })
        .collect();
    assert_eq!(lengths, vec![(0, 1000), (1000, 1000), (2000, 500)]);
}

#[test]
fn a_queued_request_cannot_be_cancelled_so_its_grant_ends_it() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = v1_started(16, &hal, &mut edu);
    engine.start_io(5, dma(Direction::ToDevice, 0, 64), &mut edu);
    assert_eq!(engine.cancel(5, &mut edu), None);
    assert!(!hal.calls().contains(&Call::Cancel));
    assert_eq!(
        engine.channel_granted(BASE, &mut edu),
        Some(failed(5, NtStatus::CANCELLED))
    );
    assert_eq!(
        transfer_calls(&hal).last(),
        Some(&Call::FreeMapRegisters { count: 1 })
    );
    assert_eq!(hal.count(|c| matches!(c, Call::MapV1 { .. })), 0);
    assert_eq!(engine.stats().cancel_adapter_channel, 0);
    assert!(engine.is_idle());
}

#[test]
fn a_stop_while_queued_holds_the_request_after_the_grant() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = v1_started(16, &hal, &mut edu);
    engine.start_io(6, dma(Direction::ToDevice, 0, 64), &mut edu);
    assert_eq!(engine.stop(StopReason::Stop, &mut edu), None);
    // The grant frees the registers; the adapter is put; the request is held.
    assert_eq!(engine.channel_granted(BASE, &mut edu), None);
    assert!(engine.adapter_released());
    assert_eq!(engine.current_request(), Some(6));
    let calls = transfer_calls(&hal);
    assert_eq!(
        &calls[calls.len() - 2..],
        &[Call::FreeMapRegisters { count: 1 }, Call::Put]
    );
}

#[test]
fn the_synchronous_policy_does_not_apply_to_version1() {
    let hal = Hal::default();
    hal.set(|h| h.busy = true);
    let mut edu = Edu::default();
    let mut engine = v1_started(16, &hal, &mut edu);
    engine.start_io(8, dma(Direction::ToDevice, 0, 64), &mut edu);
    assert_eq!(hal.count(|c| matches!(c, Call::AllocateV1 { .. })), 1);
    assert_eq!(hal.count(|c| matches!(c, Call::Allocate { .. })), 0);
    assert_eq!(engine.stats().sync_allocation_fallbacks, 0);
}
