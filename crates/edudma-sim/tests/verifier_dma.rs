//! Driver Verifier's DMA rules (bug check 0xE6): one deliberately wrong call
//! sequence per rule, each asserting the exact violation; plus the clean
//! sequence that must raise none.

mod common;

use common::*;
use edudma_core::NtStatus;
use edudma_core::dma::{AllocateOutcome, AllocationMode, DmaOps, SgList};
use edudma_core::regs::*;
use edudma_sim::hal::{DeviceDescription, IoAllocationAction, MapRegisterBase};
use edudma_sim::irql::Irql;
use edudma_sim::mdl::BufferLayout;
use edudma_sim::phys::Placement;
use edudma_sim::verifier::{Rule, Violation};

fn grant(dma: &mut SimDma, count: u32) -> MapRegisterBase {
    match dma.allocate_adapter_channel_ex(count, AllocationMode::Synchronous) {
        Ok(AllocateOutcome::Granted(b)) => b,
        other => panic!("no grant: {other:?}"),
    }
}

use edudma_sim::wdm::SimDma;

fn ready(seed: u64) -> (edudma_sim::machine::Machine<Null>, SimDma, u32) {
    adapter(&quiet_config(seed), &edu_description())
}

fn channel(seed: u64) -> (edudma_sim::machine::Machine<Null>, SimDma, MapRegisterBase) {
    let (m, mut dma, _) = ready(seed);
    dma.initialize_dma_transfer_context().unwrap();
    let base = grant(&mut dma, 2);
    (m, dma, base)
}

#[test]
fn verifier_clean_ten_steps_raise_nothing_and_bounce_high_pages() {
    let (m, mut dma, granted) = ready(1);
    assert_eq!(granted, 2, "MaximumLength 4096 -> 2 map registers");
    let layout = BufferLayout {
        placement: Placement::Mixed,
        byte_offset: Some(3000),
        ..BufferLayout::default()
    };
    let mdl = buffer(&m, 4000, &layout, |i| (i * 7) as u8);
    let info = dma.get_dma_transfer_info(mdl, 0, 4000, true).unwrap();
    assert_eq!(info.map_register_count, 2);
    dma.initialize_dma_transfer_context().unwrap();
    let base = grant(&mut dma, 2);
    let mut sg = SgList::new();
    let mapped = dma
        .map_transfer_ex(mdl, base, 0, 4000, true, &mut sg)
        .unwrap();
    assert_eq!(mapped, 4000);
    assert!(
        sg.as_slice()
            .iter()
            .all(|e| e.address + u64::from(e.length) <= 1 << 28)
    );
    // The device may read exactly these ranges: they hold the data.
    let mut seen = Vec::new();
    m.sys().with(|k| {
        for e in sg.as_slice() {
            let mut b = vec![0u8; e.length as usize];
            k.mem.read(e.address, &mut b);
            seen.extend(b);
        }
    });
    assert_eq!(seen, (0..4000).map(|i| (i * 7) as u8).collect::<Vec<_>>());
    assert!(m.sys().with(|k| k.hal.stats().bounced_pages) >= 1);
    dma.flush_adapter_buffers_ex(mdl, base, 0, 4000, true)
        .unwrap();
    dma.free_adapter_channel();
    dma.put_dma_adapter();
    assert_eq!(bugcheck(&m), None);
}

#[test]
fn verifier_0x04_adapter_channel_freed_twice() {
    let (m, mut dma, _) = channel(2);
    dma.free_adapter_channel();
    assert_eq!(bugcheck(&m), None);
    dma.free_adapter_channel();
    assert_eq!(bugcheck(&m), Some(Violation::AdapterChannelFreedTooOften));
    assert_eq!(bugcheck(&m).unwrap().rule(), Rule::Dma(0x04));
}

#[test]
fn verifier_0x05_map_registers_freed_that_were_not_kept() {
    let (m, mut dma, base) = channel(3);
    // KeepObject grant: FreeMapRegisters is the wrong call.
    dma.free_map_registers(base, 2);
    assert_eq!(
        bugcheck(&m),
        Some(Violation::MapRegistersFreedTooOften { count: 2, held: 0 })
    );
}

#[test]
fn verifier_0x08_adapter_put_with_channel_held() {
    let (m, mut dma, _) = channel(4);
    dma.put_dma_adapter();
    assert_eq!(bugcheck(&m), Some(Violation::AdapterPutWithChannel));
}

/// An asynchronous grant of 2 map registers, committed and about to run its
/// execution routine (whose return the caller reports).
fn committed_grant(seed: u64) -> (edudma_sim::machine::Machine<Null>, SimDma, MapRegisterBase) {
    let mut c = quiet_config(seed);
    c.hal.inline_grant_percent = 0;
    let (m, mut dma, _) = adapter(&c, &edu_description());
    dma.initialize_dma_transfer_context().unwrap();
    assert_eq!(
        dma.allocate_adapter_channel_ex(2, AllocationMode::Asynchronous),
        Ok(AllocateOutcome::Queued)
    );
    let base = m
        .sys()
        .with(|k| k.hal.granting(dma.adapter()))
        .expect("committed");
    (m, dma, base)
}

fn keep_registers_only(seed: u64) -> (edudma_sim::machine::Machine<Null>, SimDma, MapRegisterBase) {
    let (m, dma, base) = committed_grant(seed);
    // An execution routine that returns DeallocateObjectKeepRegisters.
    m.sys().hal_routine_returned(
        dma.adapter(),
        base,
        IoAllocationAction::DeallocateObjectKeepRegisters,
    );
    (m, dma, base)
}

/// An execution routine that frees the channel itself and then returns
/// `DeallocateObject` makes the HAL free it a second time.
#[test]
fn verifier_0x04_deallocate_object_after_free_adapter_channel() {
    for (action, fires) in [
        (IoAllocationAction::DeallocateObject, true),
        (IoAllocationAction::DeallocateObjectKeepRegisters, true),
        (IoAllocationAction::KeepObject, false),
    ] {
        let (m, mut dma, base) = committed_grant(12);
        // Inside the execution routine: FreeAdapterChannel, then the return.
        dma.free_adapter_channel();
        assert_eq!(bugcheck(&m), None);
        m.sys().hal_routine_returned(dma.adapter(), base, action);
        assert_eq!(
            bugcheck(&m) == Some(Violation::AdapterChannelFreedTooOften),
            fires,
            "{action:?}"
        );
    }
}

#[test]
fn verifier_0x09_adapter_put_with_map_registers_kept() {
    let (m, mut dma, _) = keep_registers_only(5);
    dma.put_dma_adapter();
    assert_eq!(
        bugcheck(&m),
        Some(Violation::AdapterPutWithMapRegisters { outstanding: 2 })
    );
}

#[test]
fn verifier_keep_registers_pattern_is_clean_when_freed_right() {
    let (m, mut dma, base) = keep_registers_only(6);
    dma.free_map_registers(base, 2);
    dma.put_dma_adapter();
    assert_eq!(bugcheck(&m), None);
}

#[test]
fn verifier_0x0b_two_channels_at_once() {
    let (m, mut dma, _) = ready(8);
    dma.initialize_dma_transfer_context().unwrap();
    let _ = grant(&mut dma, 1);
    let _ = dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous);
    assert_eq!(bugcheck(&m), Some(Violation::TooManyAdapterChannels));
}

#[test]
fn verifier_0x0c_more_map_registers_than_granted() {
    let (m, mut dma, granted) = ready(9);
    dma.initialize_dma_transfer_context().unwrap();
    let _ = dma.allocate_adapter_channel_ex(granted + 1, AllocationMode::Synchronous);
    assert_eq!(
        bugcheck(&m),
        Some(Violation::TooManyMapRegisters {
            requested: granted + 1,
            granted
        })
    );
}

#[test]
fn verifier_0x15_more_map_registers_than_the_hal_has() {
    let (m, mut dma, _) = ready(10);
    dma.initialize_dma_transfer_context().unwrap();
    let _ = dma.allocate_adapter_channel_ex(100_000, AllocationMode::Synchronous);
    assert!(matches!(
        bugcheck(&m),
        Some(Violation::MapRegistersAboveMaximum {
            requested: 100_000,
            ..
        })
    ));
    assert_eq!(bugcheck(&m).unwrap().dma_subcode(), Some(0x15));
}

#[test]
fn verifier_0x0d_second_map_before_flush() {
    let (m, mut dma, base) = channel(11);
    let mdl = buffer(&m, 8192, &BufferLayout::default(), |i| i as u8);
    let mut sg = SgList::new();
    dma.map_transfer_ex(mdl, base, 0, 100, true, &mut sg)
        .unwrap();
    let _ = dma.map_transfer_ex(mdl, base, 4096, 100, true, &mut sg);
    assert_eq!(bugcheck(&m), Some(Violation::AdapterBuffersNotFlushed));
}

#[test]
fn verifier_0x0e_dma_on_an_unlocked_buffer() {
    let (m, mut dma, base) = channel(12);
    let layout = BufferLayout {
        unlocked: true,
        ..BufferLayout::default()
    };
    let mdl = buffer(&m, 100, &layout, |_| 1);
    let mut sg = SgList::new();
    assert!(
        dma.map_transfer_ex(mdl, base, 0, 100, true, &mut sg)
            .is_err()
    );
    assert_eq!(bugcheck(&m), Some(Violation::UnlockedBuffer));
}

#[test]
fn verifier_0x0f_write_outside_the_bounce_buffer() {
    let (m, mut dma, base) = channel(13);
    let layout = BufferLayout {
        placement: Placement::High,
        byte_offset: Some(100),
        ..BufferLayout::default()
    };
    let mdl = buffer(&m, 200, &layout, |_| 0);
    let mut sg = SgList::new();
    dma.map_transfer_ex(mdl, base, 0, 200, false, &mut sg)
        .unwrap();
    let e = sg.as_slice()[0];
    // A device (or driver) writing one byte past the mapped range.
    m.sys()
        .with(|k| k.mem.write(e.address + u64::from(e.length), &[0x00]));
    let _ = dma.flush_adapter_buffers_ex(mdl, base, 0, 200, false);
    assert_eq!(
        bugcheck(&m),
        Some(Violation::GuardBytesOverwritten {
            bus_address: e.address + u64::from(e.length)
        })
    );
}

#[test]
fn verifier_0x10_channel_freed_while_mapped() {
    let (m, mut dma, base) = channel(14);
    let mdl = buffer(&m, 100, &BufferLayout::default(), |_| 1);
    let mut sg = SgList::new();
    dma.map_transfer_ex(mdl, base, 0, 100, true, &mut sg)
        .unwrap();
    dma.free_adapter_channel();
    assert_eq!(bugcheck(&m), Some(Violation::MapRegistersFreedWhileMapped));
}

#[test]
fn verifier_0x13_dma_routine_above_dispatch() {
    let (m, mut dma, base) = channel(15);
    let mdl = buffer(&m, 100, &BufferLayout::default(), |_| 1);
    m.sys().ke_raise_irql(Irql::Device);
    let mut sg = SgList::new();
    let _ = dma.map_transfer_ex(mdl, base, 0, 100, true, &mut sg);
    assert_eq!(
        bugcheck(&m),
        Some(Violation::DmaIrqlTooHigh {
            routine: "MapTransferEx",
            irql: Irql::Device
        })
    );
}

#[test]
fn verifier_0x13_get_dma_alignment_is_passive_only() {
    let (m, mut dma, _) = ready(16);
    dma.get_dma_alignment();
    assert_eq!(bugcheck(&m).unwrap().dma_subcode(), Some(0x13));
}

#[test]
fn verifier_0x14_allocate_below_dispatch() {
    let (m, mut dma, _) = ready(17);
    dma.initialize_dma_transfer_context().unwrap();
    m.sys().ke_lower_irql(Irql::Passive);
    let _ = dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous);
    assert_eq!(
        bugcheck(&m),
        Some(Violation::DmaIrqlTooLow {
            routine: "AllocateAdapterChannelEx",
            irql: Irql::Passive
        })
    );
}

#[test]
fn verifier_0x16_flush_with_other_parameters_than_the_map() {
    let (m, mut dma, base) = channel(18);
    let mdl = buffer(&m, 100, &BufferLayout::default(), |_| 1);
    let mut sg = SgList::new();
    dma.map_transfer_ex(mdl, base, 0, 100, true, &mut sg)
        .unwrap();
    let _ = dma.flush_adapter_buffers_ex(mdl, base, 0, 99, true);
    assert_eq!(bugcheck(&m), Some(Violation::FlushedUnmappedBuffer));
}

#[test]
fn verifier_0x18_adapter_used_after_put() {
    let (m, mut dma, _) = ready(19);
    dma.put_dma_adapter();
    assert_eq!(bugcheck(&m), None);
    let _ = dma.initialize_dma_transfer_context();
    assert_eq!(
        bugcheck(&m),
        Some(Violation::AdapterUsedAfterRelease {
            routine: "InitializeDmaTransferContext"
        })
    );
}

#[test]
fn verifier_0x1b_range_not_inside_the_mdl() {
    let (m, mut dma, _) = ready(20);
    let mdl = buffer(&m, 100, &BufferLayout::default(), |_| 1);
    assert_eq!(
        dma.get_dma_transfer_info(mdl, 50, 51, true),
        Err(NtStatus::INVALID_PARAMETER)
    );
    assert_eq!(
        bugcheck(&m),
        Some(Violation::AddressNotInMdl {
            offset: 50,
            length: 51,
            chain_length: 100
        })
    );
}

#[test]
fn verifier_0x1d_range_mapped_twice() {
    let (m, mut dma, base) = channel(21);
    let mdl = buffer(&m, 100, &BufferLayout::default(), |_| 1);
    let mut sg = SgList::new();
    dma.map_transfer_ex(mdl, base, 0, 100, true, &mut sg)
        .unwrap();
    let _ = dma.map_transfer_ex(mdl, base, 50, 50, true, &mut sg);
    assert_eq!(bugcheck(&m), Some(Violation::RangeAlreadyMapped));
}

#[test]
fn verifier_0x21_zero_length_transfer() {
    let (m, mut dma, _) = ready(22);
    let mdl = buffer(&m, 100, &BufferLayout::default(), |_| 1);
    let _ = dma.get_dma_transfer_info(mdl, 0, 0, true);
    assert_eq!(bugcheck(&m), Some(Violation::ZeroLengthMapping));
}

#[test]
fn verifier_0x23_flush_while_the_device_still_transfers() {
    let (m, mut dma, base) = channel(23);
    let mdl = buffer(&m, 64, &BufferLayout::default(), |_| 1);
    let mut sg = SgList::new();
    dma.map_transfer_ex(mdl, base, 0, 64, false, &mut sg)
        .unwrap();
    let e = sg.as_slice()[0];
    let s = m.sys();
    s.set_pci_command(0x6);
    s.write_register(REG_DMA_SRC, 0x40000);
    s.write_register(REG_DMA_DST, e.address as u32);
    s.write_register(REG_DMA_COUNT, e.length);
    s.write_register(REG_DMA_CMD, (DmaCommand::START | DmaCommand::TO_RAM).bits());
    let _ = dma.flush_adapter_buffers_ex(mdl, base, 0, 64, false);
    assert_eq!(bugcheck(&m), Some(Violation::FlushedChannelNotCompleted));
}

#[test]
fn verifier_0x24_scatter_gather_buffer_too_small() {
    let (m, mut dma, base) = channel(24);
    dma.set_sg_buffer_bytes(32);
    let mdl = buffer(&m, 64, &BufferLayout::default(), |_| 1);
    let mut sg = SgList::new();
    assert_eq!(
        dma.map_transfer_ex(mdl, base, 0, 64, true, &mut sg),
        Err(NtStatus::BUFFER_TOO_SMALL)
    );
    assert!(matches!(
        bugcheck(&m),
        Some(Violation::ScatterGatherBufferTooSmall { given: 32, .. })
    ));
}

#[test]
fn verifier_0x25_unknown_device_description_version() {
    let m = edudma_sim::machine::Machine::new(&quiet_config(25), Null);
    let desc = DeviceDescription {
        version: 4,
        ..edu_description()
    };
    assert!(m.sys().io_get_dma_adapter(&desc).is_none());
    assert_eq!(
        bugcheck(&m),
        Some(Violation::UnknownDeviceDescriptionVersion { version: 4 })
    );
}

#[test]
fn verifier_off_io_get_dma_adapter_returns_no_adapter_for_unknown_version() {
    let mut c = quiet_config(26);
    c.dma_verification = false;
    let m = edudma_sim::machine::Machine::new(&c, Null);
    let desc = DeviceDescription {
        version: 7,
        ..edu_description()
    };
    assert!(m.sys().io_get_dma_adapter(&desc).is_none());
    assert_eq!(bugcheck(&m), None);
    // Versions 1 and 2 give an adapter (32-bit for PCI), 3 honours the width.
    for v in 0..=3 {
        let d = DeviceDescription {
            version: v,
            ..edu_description()
        };
        assert!(m.sys().io_get_dma_adapter(&d).is_some(), "version {v}");
    }
}

#[test]
fn verifier_uninitialized_transfer_context() {
    let (m, mut dma, _) = ready(27);
    let _ = dma.allocate_adapter_channel_ex(1, AllocationMode::Synchronous);
    assert_eq!(bugcheck(&m), Some(Violation::TransferContextNotInitialized));
}
