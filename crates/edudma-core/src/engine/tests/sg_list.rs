//! The `sg-list` strategy: scatter/gather lists asked for per part of a
//! request, one edu command per element, each list put with its direction.

use super::*;
use crate::dma::ListBuffer;

fn sg_started(map_registers: u32, hal: &Hal, edu: &mut Edu) -> TestEngine {
    let mut engine = TestEngine::new(EngineConfig::default());
    let facts = AdapterFacts {
        strategy: DmaStrategy::SgList,
        map_registers,
        ..FACTS
    };
    engine.start_device(hal.clone(), facts, edu).unwrap();
    engine
}

fn transfer_calls(hal: &Hal) -> Vec<Call> {
    hal.calls()[1..].to_vec()
}

#[test]
fn one_read_builds_a_list_programs_each_element_and_puts_it() {
    let hal = Hal::default();
    hal.set(|h| {
        h.async_grants_now = true;
        h.element_size = 1000;
    });
    let mut edu = Edu::default();
    let mut engine = sg_started(16, &hal, &mut edu);
    engine.start_io(1, dma(Direction::FromDevice, 8, 2500), &mut edu);
    assert_eq!(edu.commands.len(), 1, "the first element is programmed");
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 2500));
    assert_eq!(
        transfer_calls(&hal),
        vec![
            Call::Calculate {
                offset: 0,
                length: 2500
            },
            Call::GetList {
                buffer: ListBuffer::Driver,
                offset: 0,
                length: 2500,
                write: false
            },
            Call::PutList { write: false },
        ]
    );
    // One command per element, device offsets advancing.
    let dsts: Vec<(u32, u32)> = edu.commands.iter().map(|c| (c.0, c.2)).collect();
    assert_eq!(
        dsts,
        vec![
            (0x40008, 1000),
            (0x40008 + 1000, 1000),
            (0x40008 + 2000, 500)
        ]
    );
    let s = engine.stats();
    assert_eq!(
        (
            s.calculate_scatter_gather_list,
            s.build_scatter_gather_list,
            s.get_scatter_gather_list,
            s.put_scatter_gather_list
        ),
        (1, 1, 0, 1)
    );
    assert_eq!((s.map_transfer, s.allocate_adapter_channel), (0, 0));
    assert_eq!(
        engine.device_info().dma_strategy,
        ioctl::DmaStrategyCode::SgList as u32
    );
}

#[test]
fn a_list_too_big_for_the_driver_buffer_is_the_hals() {
    let hal = Hal::default();
    hal.set(|h| {
        h.async_grants_now = true;
        h.list_buffer_bytes = 64;
    });
    let mut edu = Edu::default();
    let mut engine = sg_started(16, &hal, &mut edu);
    engine.start_io(2, dma(Direction::ToDevice, 0, 100), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(2, 100));
    assert!(hal.calls().contains(&Call::GetList {
        buffer: ListBuffer::Hal,
        offset: 0,
        length: 100,
        write: true
    }));
    assert_eq!(engine.stats().get_scatter_gather_list, 1);
}

#[test]
fn short_map_registers_take_one_list_per_part() {
    let hal = Hal::default();
    hal.set(|h| {
        h.async_grants_now = true;
        h.page_offset = 100;
    });
    let mut edu = Edu::default();
    let mut engine = sg_started(1, &hal, &mut edu);
    engine.start_io(3, dma(Direction::ToDevice, 0, 4095), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(3, 4095));
    let lists: Vec<(u64, u32)> = hal
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::GetList { offset, length, .. } => Some((offset, length)),
            _ => None,
        })
        .collect();
    assert_eq!(lists, vec![(0, 3996), (3996, 99)]);
    assert_eq!(hal.count(|c| matches!(c, Call::PutList { .. })), 2);
    assert_eq!(engine.stats().partial_maps, 1);
}

#[test]
fn a_queued_list_cannot_be_cancelled_so_it_is_put_when_it_comes() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = sg_started(16, &hal, &mut edu);
    engine.start_io(4, dma(Direction::ToDevice, 0, 64), &mut edu);
    assert_eq!(engine.cancel(4, &mut edu), None);
    assert!(!hal.calls().contains(&Call::Cancel));
    assert_eq!(
        engine.channel_granted(BASE, &mut edu),
        Some(failed(4, NtStatus::CANCELLED))
    );
    assert_eq!(
        transfer_calls(&hal).last(),
        Some(&Call::PutList { write: true })
    );
    assert!(edu.commands.is_empty());
    assert!(engine.is_idle());
}

#[test]
fn a_cancel_while_the_device_works_puts_the_list_after_the_element() {
    let hal = Hal::default();
    hal.set(|h| {
        h.async_grants_now = true;
        h.element_size = 1000;
    });
    let mut edu = Edu::default();
    let mut engine = sg_started(16, &hal, &mut edu);
    engine.start_io(5, dma(Direction::FromDevice, 0, 3000), &mut edu);
    assert_eq!(
        engine.cancel(5, &mut edu),
        None,
        "the device owns a command"
    );
    edu.finish_dma();
    assert_eq!(
        interrupt(&mut engine, &mut edu),
        Some(failed(5, NtStatus::CANCELLED))
    );
    assert_eq!(edu.commands.len(), 1);
    assert_eq!(
        transfer_calls(&hal).last(),
        Some(&Call::PutList { write: false })
    );
}

#[test]
fn a_stop_while_a_list_is_queued_holds_the_request() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = sg_started(16, &hal, &mut edu);
    engine.start_io(6, dma(Direction::ToDevice, 0, 64), &mut edu);
    assert_eq!(engine.stop(StopReason::Stop, &mut edu), None);
    assert_eq!(engine.channel_granted(BASE, &mut edu), None);
    assert!(engine.adapter_released());
    assert_eq!(engine.current_request(), Some(6));
    let calls = transfer_calls(&hal);
    assert_eq!(
        &calls[calls.len() - 2..],
        &[Call::PutList { write: true }, Call::Put]
    );
}

#[test]
fn a_failed_list_request_completes_with_its_status() {
    let hal = Hal::default();
    hal.set(|h| h.map_error = Some(NtStatus::INSUFFICIENT_RESOURCES));
    let mut edu = Edu::default();
    let mut engine = sg_started(16, &hal, &mut edu);
    assert_eq!(
        engine.start_io(7, dma(Direction::ToDevice, 0, 64), &mut edu),
        Some(failed(7, NtStatus::INSUFFICIENT_RESOURCES))
    );
    assert!(engine.is_idle());
    assert_eq!(hal.count(|c| matches!(c, Call::PutList { .. })), 0);
}

/// A request whose first list moved and whose second list is queued.
fn mid_request(hal: &Hal, edu: &mut Edu) -> TestEngine {
    hal.set(|h| {
        h.async_grants_now = true;
        h.page_offset = 100;
    });
    let mut engine = sg_started(1, hal, edu);
    engine.start_io(9, dma(Direction::ToDevice, 0, 4095), edu);
    hal.set(|h| h.async_grants_now = false);
    edu.finish_dma();
    assert_eq!(
        interrupt(&mut engine, edu),
        None,
        "the second list is queued"
    );
    assert_eq!(engine.stats().bytes_to_device, 3996);
    engine
}

#[test]
fn a_stop_while_the_next_list_is_queued_lets_the_request_finish() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = mid_request(&hal, &mut edu);
    assert_eq!(engine.stop(StopReason::Stop, &mut edu), None);
    assert!(!engine.adapter_released());
    // Not taken back: the list comes, the rest moves, then the adapter goes.
    assert_eq!(engine.channel_granted(BASE, &mut edu), None);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(9, 4095));
    assert!(engine.adapter_released());
    assert_eq!(hal.count(|c| matches!(c, Call::PutList { .. })), 2);
}

#[test]
fn a_power_down_while_the_next_list_is_queued_waits_for_the_request() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = mid_request(&hal, &mut edu);
    let down = engine.power_down(&mut edu);
    assert!(!down.drained && down.completion.is_none());
    assert_eq!(engine.channel_granted(BASE, &mut edu), None);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(9, 4095));
    assert!(engine.is_idle());
}

#[test]
fn a_surprise_removal_while_the_next_list_is_queued_ends_it() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = mid_request(&hal, &mut edu);
    assert_eq!(engine.stop(StopReason::SurpriseRemoval, &mut edu), None);
    assert_eq!(
        engine.channel_granted(BASE, &mut edu),
        Some(failed(9, NtStatus::DEVICE_REMOVED))
    );
    assert!(engine.adapter_released());
}
