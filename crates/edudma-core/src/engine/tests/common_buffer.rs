//! The `common-buffer` strategy: every request through one page of common
//! buffer, one edu command each; the buffer freed before the adapter is put.

use super::*;
use crate::protocol::CommonBuffer;

const COMMON: CommonBuffer = CommonBuffer {
    logical: 0x0123_4000,
    length: 4096,
};

fn cb_facts(common_buffer: Option<CommonBuffer>) -> AdapterFacts {
    AdapterFacts {
        strategy: DmaStrategy::CommonBuffer,
        common_buffer,
        ..FACTS
    }
}

fn cb_started(hal: &Hal, edu: &mut Edu) -> TestEngine {
    let mut engine = TestEngine::new(EngineConfig::default());
    engine
        .start_device(hal.clone(), cb_facts(Some(COMMON)), edu)
        .unwrap();
    engine
}

#[test]
fn a_write_is_copied_in_and_moved_by_one_command_at_the_logical_address() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = cb_started(&hal, &mut edu);
    engine.start_io(1, dma(Direction::ToDevice, 16, 3000), &mut edu);
    assert_eq!(hal.calls()[1..], [Call::CopyIn { length: 3000 }]);
    assert_eq!(
        edu.commands,
        vec![(
            0x0123_4000,
            0x40010,
            3000,
            (DmaCommand::START | DmaCommand::IRQ).bits()
        )]
    );
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 3000));
    let s = engine.stats();
    assert_eq!((s.common_buffer_copies, s.device_commands), (1, 1));
    assert_eq!((s.allocate_adapter_channel, s.map_transfer), (0, 0));
    assert_eq!(s.bytes_to_device, 3000);
}

#[test]
fn a_read_is_copied_out_after_the_command() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = cb_started(&hal, &mut edu);
    engine.start_io(2, dma(Direction::FromDevice, 0, 4095), &mut edu);
    assert_eq!(hal.calls().len(), 1, "nothing copied before the device ran");
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(2, 4095));
    assert_eq!(hal.calls()[1..], [Call::CopyOut { length: 4095 }]);
}

#[test]
fn a_cancelled_read_copies_nothing_out() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = cb_started(&hal, &mut edu);
    engine.start_io(3, dma(Direction::FromDevice, 0, 100), &mut edu);
    assert_eq!(
        engine.cancel(3, &mut edu),
        None,
        "the device owns the command"
    );
    assert_eq!(
        run_to_completion(&mut engine, &mut edu),
        failed(3, NtStatus::CANCELLED)
    );
    assert_eq!(hal.count(|c| matches!(c, Call::CopyOut { .. })), 0);
}

#[test]
fn at_stop_the_adapter_waits_quiet_for_the_glue_to_free_the_buffer_then_put() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = cb_started(&hal, &mut edu);
    assert_eq!(engine.stop(StopReason::Remove, &mut edu), None);
    assert_eq!(hal.calls().last(), Some(&Call::Quiet));
    assert!(!engine.adapter_released(), "not put under the engine lock");
    let quiet = engine.take_quiet_adapter().expect("quiet");
    assert!(engine.adapter_released());
    quiet.release();
    let calls = hal.calls();
    assert_eq!(&calls[calls.len() - 2..], &[Call::FreeCommon, Call::Put]);
    assert!(engine.take_quiet_adapter().is_none());
}

#[test]
fn a_stop_during_a_request_quiets_the_adapter_when_it_ends() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = cb_started(&hal, &mut edu);
    engine.start_io(4, dma(Direction::ToDevice, 0, 64), &mut edu);
    assert_eq!(engine.stop(StopReason::Stop, &mut edu), None);
    assert!(engine.take_quiet_adapter().is_none(), "still in flight");
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(4, 64));
    engine.take_quiet_adapter().expect("quiet").release();
    assert_eq!(hal.calls().last(), Some(&Call::Put));
    // The device restarts with a new buffer.
    engine
        .start_device(hal.clone(), cb_facts(Some(COMMON)), &mut edu)
        .unwrap();
    engine.start_io(5, dma(Direction::ToDevice, 0, 8), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(5, 8));
}

#[test]
fn a_start_without_a_usable_common_buffer_fails_and_gives_it_back() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = TestEngine::new(EngineConfig::default());
    assert_eq!(
        engine.start_device(hal.clone(), cb_facts(None), &mut edu),
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    );
    assert_eq!(hal.calls().last(), Some(&Call::Put));
    // Above the device's 28 bits, or smaller than the window.
    for common in [
        CommonBuffer {
            logical: 1 << 28,
            length: 4096,
        },
        CommonBuffer {
            logical: 0x1000,
            length: 100,
        },
    ] {
        let hal = Hal::default();
        let mut engine = TestEngine::new(EngineConfig::default());
        assert_eq!(
            engine.start_device(hal.clone(), cb_facts(Some(common)), &mut edu),
            Err(NtStatus::INSUFFICIENT_RESOURCES)
        );
        engine.take_quiet_adapter().expect("quiet").release();
        let calls = hal.calls();
        assert_eq!(&calls[calls.len() - 2..], &[Call::FreeCommon, Call::Put]);
    }
}
