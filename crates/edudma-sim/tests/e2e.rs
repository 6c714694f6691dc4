//! End to end: the edudma engine and its glue on the simulated Windows,
//! every byte checked against a shadow of the device buffer, every run
//! ending with the verifier's leak check.

use std::time::Duration;

use edudma_core::NtStatus;
use edudma_core::ioctl::{self, selftest_steps};
use edudma_sim::edu::DeviceFault;
use edudma_sim::mdl::BufferLayout;
use edudma_sim::{
    Allocation, CorruptByte, Crash, DmaStrategy, IrpSpec, Placement, SimConfig, SimError,
    SimMachine,
};

/// The device buffer as the test expects it.
struct Shadow([u8; 4096]);

impl Shadow {
    fn of(sim: &SimMachine) -> Self {
        Shadow(sim.device_buffer())
    }

    fn write(&mut self, sim: &mut SimMachine, offset: u32, data: &[u8]) {
        let n = sim.dma_write(offset, data).expect("dma write");
        assert_eq!(n, data.len());
        self.0[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        assert!(
            sim.device_buffer() == self.0,
            "device buffer differs after writing {} bytes at {offset}",
            data.len()
        );
    }

    fn read(&self, sim: &mut SimMachine, offset: u32, len: u32) {
        let got = sim.dma_read(offset, len).expect("dma read");
        assert_eq!(got.len(), len as usize);
        let want = &self.0[offset as usize..(offset + len) as usize];
        if got != want {
            let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
            panic!("read of {len} bytes at {offset}: first difference at byte {at}");
        }
    }
}

fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7 + 1) % 251) as u8)
        .collect()
}

fn quiet(seed: u64, run: Run) -> SimConfig {
    SimConfig { seed, ..run.base() }
}

/// How the driver moves the bytes in a run: every end-to-end test runs
/// under each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// The default: the ten version-3 steps.
    V3Packet,
    /// `DmaStrategy` = `v1-packet`: the version-1 packet-based sequence.
    V1Packet,
    /// `v3-packet` asked for on a HAL without version 3: the fallback.
    NoDmaV3,
    /// `DmaStrategy` = `sg-list`: scatter/gather lists.
    SgList,
    /// `DmaStrategy` = `common-buffer`: every byte through one page.
    CommonBuffer,
}

const RUNS: [Run; 5] = [
    Run::V3Packet,
    Run::V1Packet,
    Run::NoDmaV3,
    Run::SgList,
    Run::CommonBuffer,
];

impl Run {
    fn base(self) -> SimConfig {
        match self {
            Run::V3Packet => SimConfig::default(),
            Run::V1Packet => SimConfig {
                dma_strategy: DmaStrategy::V1Packet,
                ..SimConfig::default()
            },
            Run::NoDmaV3 => SimConfig {
                dma_v3: false,
                ..SimConfig::default()
            },
            Run::SgList => SimConfig {
                dma_strategy: DmaStrategy::SgList,
                ..SimConfig::default()
            },
            Run::CommonBuffer => SimConfig {
                dma_strategy: DmaStrategy::CommonBuffer,
                ..SimConfig::default()
            },
        }
    }

    /// Requests go through map registers (all but the common buffer, which
    /// the HAL never maps per request).
    fn maps(self) -> bool {
        self != Run::CommonBuffer
    }

    /// The version-1 routines run (asked for, or the fallback).
    fn version1(self) -> bool {
        matches!(self, Run::V1Packet | Run::NoDmaV3)
    }
}

fn round_trips(config: SimConfig, layout: BufferLayout, lengths: &[(u32, u32)]) -> SimMachine {
    let mut sim = SimMachine::new(config).expect("start");
    sim.set_buffer_layout(layout);
    let mut shadow = Shadow::of(&sim);
    for (i, &(offset, len)) in lengths.iter().enumerate() {
        shadow.write(&mut sim, offset, &pattern(i as u32, len as usize));
        shadow.read(&mut sim, offset, len);
    }
    sim
}

#[test]
fn every_length_at_both_edges_of_both_windows() {
    for run in RUNS {
        every_length_at_both_edges_of_both_windows_on(run);
    }
}

fn every_length_at_both_edges_of_both_windows_on(run: Run) {
    for (window, fixed) in [(4095u32, false), (4096, true)] {
        let config = SimConfig {
            window,
            qemu_fixed_range_check: fixed,
            seed: u64::from(window),
            ..run.base()
        };
        let mut sim = SimMachine::new(config).expect("start");
        let mut shadow = Shadow::of(&sim);
        for len in 1..=window {
            let offset = if len % 2 == 0 { 0 } else { window - len };
            shadow.write(&mut sim, offset, &pattern(len, len as usize));
            shadow.read(&mut sim, offset, len);
            if len % 97 == 0 {
                // The other edge too, now and then.
                let other = window - len - offset;
                shadow.read(&mut sim, other, len);
            }
        }
        assert_eq!(sim.verifier_report().violations, vec![]);
        let stats = sim.finish().expect("leak check");
        assert_eq!(
            stats.driver.completed,
            2 * u64::from(window) + u64::from(window / 97)
        );
    }
}

#[test]
fn window_4096_on_an_old_qemu_takes_the_vm_down() {
    let config = SimConfig {
        window: 4096,
        qemu_fixed_range_check: false,
        ..SimConfig::default()
    };
    let mut sim = SimMachine::new(config).expect("start");
    let r = sim.dma_write(0, &[1u8; 4096]);
    assert!(
        matches!(
            r,
            Err(SimError::Crash(Crash::Device(
                DeviceFault::RangeOutOfBounds {
                    off_by_one: true,
                    ..
                }
            )))
        ),
        "{r:?}"
    );
}

#[test]
fn buffers_below_and_above_256_mib() {
    for run in RUNS {
        buffers_below_and_above_256_mib_on(run);
    }
}

fn buffers_below_and_above_256_mib_on(run: Run) {
    for (i, placement) in [
        Placement::Low,
        Placement::High,
        Placement::Mixed,
        Placement::Any,
    ]
    .into_iter()
    .enumerate()
    {
        let layout = BufferLayout {
            placement,
            ..BufferLayout::default()
        };
        // Bounce only what the device cannot reach (Driver Verifier's
        // double buffering off), then as DMA verification does by default.
        for (double_buffer_all, every_page) in [(Some(false), false), (None, true)] {
            let config = SimConfig {
                double_buffer_all,
                ..quiet(100 + i as u64, run)
            };
            let mut sim = round_trips(
                config,
                layout.clone(),
                &[(0, 4095), (1, 3000), (2000, 2095), (7, 1)],
            );
            let stats = sim.stats();
            let (bounced, direct) = (stats.bounced_pages, stats.direct_pages);
            match placement {
                // The common buffer is below 256 MiB: nothing to bounce.
                _ if !run.maps() => assert_eq!((bounced, direct), (0, 0)),
                // Without scatter/gather (version 1) every page goes
                // through a map register.
                _ if every_page || run.version1() => {
                    assert!(bounced > 0 && direct == 0, "{bounced} {direct}")
                }
                Placement::Low => assert_eq!(bounced, 0),
                Placement::High | Placement::Mixed => assert!(bounced > 0),
                Placement::Any => {}
            }
            sim.finish().expect("leak check");
        }
    }
}

#[test]
fn unaligned_and_chained_mdls() {
    for run in RUNS {
        unaligned_and_chained_mdls_on(run);
    }
}

fn unaligned_and_chained_mdls_on(run: Run) {
    for (seed, byte_offset, chain) in [
        (1u64, 4095u32, vec![]),
        (2, 1, vec![1, 1, 1]),
        (3, 2048, vec![100, 4000, 7]),
        (4, 0, vec![4096]),
        (5, 4000, vec![96, 3999]),
    ] {
        let layout = BufferLayout {
            placement: Placement::Mixed,
            byte_offset: Some(byte_offset),
            chain,
            unlocked: false,
        };
        let sim = round_trips(
            quiet(seed, run),
            layout,
            &[(0, 4095), (3, 4092), (4000, 95)],
        );
        sim.finish().expect("leak check");
    }
}

#[test]
fn one_two_and_many_map_registers_with_and_without_scatter_gather() {
    for run in RUNS {
        one_two_and_many_map_registers_with_and_without_scatter_gather_on(run);
    }
}

fn one_two_and_many_map_registers_with_and_without_scatter_gather_on(run: Run) {
    for map_registers in [1u32, 2, 3, 16] {
        for scatter_gather in [true, false] {
            let config = SimConfig {
                map_registers,
                scatter_gather,
                seed: u64::from(map_registers) * 2 + u64::from(scatter_gather),
                ..run.base()
            };
            let layout = BufferLayout {
                placement: Placement::Mixed,
                byte_offset: Some(333),
                ..BufferLayout::default()
            };
            let mut sim = round_trips(config, layout, &[(0, 4095), (100, 3000), (4094, 1)]);
            let stats = sim.stats();
            if map_registers == 1 && run.maps() {
                assert!(stats.driver.partial_maps > 0, "one register forces splits");
            }
            sim.finish().expect("leak check");
        }
    }
}

#[test]
fn both_allocation_modes_under_contention() {
    for run in RUNS {
        both_allocation_modes_under_contention_on(run);
    }
}

fn both_allocation_modes_under_contention_on(run: Run) {
    for allocation in [Allocation::Sync, Allocation::Async] {
        for inline in [0u32, 100] {
            let config = SimConfig {
                allocation,
                contention_percent: 50,
                inline_grant_percent: inline,
                seed: 7 + u64::from(inline),
                ..run.base()
            };
            let mut sim = round_trips(
                config,
                BufferLayout::default(),
                &(0..12).map(|i| (i * 300, 200 + i * 10)).collect::<Vec<_>>(),
            );
            let s = sim.stats();
            assert!(
                s.hal.queued + s.hal.sync_refusals > 0 || !run.maps(),
                "contention happened: {s:?}"
            );
            if allocation == Allocation::Async && inline == 0 && run.maps() {
                assert!(s.kernel.late_grants > 0);
            }
            sim.finish().expect("leak check");
        }
    }
}

#[test]
fn many_concurrent_requests_from_several_threads() {
    for run in RUNS {
        many_concurrent_requests_from_several_threads_on(run);
    }
}

fn many_concurrent_requests_from_several_threads_on(run: Run) {
    let config = SimConfig {
        cpus: 4,
        seed: 99,
        ..run.base()
    };
    let mut sim = SimMachine::new(config).expect("start");
    let chunks: Vec<(u32, Vec<u8>)> = (0..16u32).map(|i| (i * 255, pattern(i, 255))).collect();
    let irps: Vec<_> = chunks
        .iter()
        .map(|(off, data)| {
            sim.submit(IrpSpec::Write {
                offset: i64::from(*off),
                data: data.clone(),
            })
            .expect("submit")
        })
        .collect();
    for irp in irps {
        let r = sim.wait(irp).expect("wait");
        assert_eq!(r.status, NtStatus::SUCCESS);
        assert_eq!(r.information, 255);
    }
    let reads: Vec<_> = chunks
        .iter()
        .map(|(off, _)| {
            sim.submit(IrpSpec::Read {
                offset: i64::from(*off),
                length: 255,
            })
            .expect("submit")
        })
        .collect();
    for (irp, (_, data)) in reads.into_iter().zip(&chunks) {
        let r = sim.wait(irp).expect("wait");
        assert_eq!(r.status, NtStatus::SUCCESS);
        assert_eq!(&r.output, data);
    }
    sim.finish().expect("leak check");
}

#[test]
fn cancel_at_every_step() {
    for run in RUNS {
        cancel_at_every_step_on(run);
    }
}

fn cancel_at_every_step_on(run: Run) {
    // Delays that land before StartIo, while the channel is awaited, while
    // each element runs, between elements, after completion.
    let delays_us = [
        0u64, 1, 5, 20, 50, 100, 1_000, 30_000, 99_990, 100_050, 150_000, 250_000, 400_000,
    ];
    for (i, d) in delays_us.into_iter().enumerate() {
        for allocation in [Allocation::Sync, Allocation::Async] {
            let config = SimConfig {
                seed: i as u64,
                allocation,
                map_registers: 1,
                contention_percent: 30,
                inline_grant_percent: 0,
                ..run.base()
            };
            let mut sim = SimMachine::new(config).expect("start");
            let before = sim.device_buffer();
            let data = pattern(i as u32, 3000);
            let irp = sim
                .submit(IrpSpec::Write {
                    offset: 10,
                    data: data.clone(),
                })
                .expect("submit");
            sim.cancel_after(irp, Duration::from_micros(d));
            let r = sim.wait(irp).expect("the cancelled request completes");
            let after = sim.device_buffer();
            match r.status {
                NtStatus::SUCCESS => assert_eq!(&after[10..3010], &data[..]),
                NtStatus::CANCELLED => {
                    // Whole pages may have landed before the cancel; nothing else changed.
                    assert_eq!(&after[..10], &before[..10]);
                    assert_eq!(&after[3010..], &before[3010..]);
                }
                other => panic!("unexpected {other}"),
            }
            // The device still works afterwards.
            let mut shadow = Shadow(after);
            shadow.write(&mut sim, 0, &[9; 100]);
            shadow.read(&mut sim, 0, 100);
            sim.finish().expect("leak check");
        }
    }
}

#[test]
fn surprise_removal_mid_transfer() {
    for run in RUNS {
        surprise_removal_mid_transfer_on(run);
    }
}

fn surprise_removal_mid_transfer_on(run: Run) {
    for (seed, at_ms) in [(1u64, 0u64), (2, 50), (3, 150), (4, 320)] {
        let config = SimConfig {
            seed,
            map_registers: 1,
            ..run.base()
        };
        let mut sim = SimMachine::new(config).expect("start");
        let a = sim
            .submit(IrpSpec::Read {
                offset: 0,
                length: 4000,
            })
            .expect("submit");
        let b = sim
            .submit(IrpSpec::Read {
                offset: 0,
                length: 10,
            })
            .expect("submit");
        sim.run_for(Duration::from_millis(at_ms)).expect("run");
        sim.surprise_remove().expect("surprise removal");
        for irp in [a, b] {
            let r = sim.wait(irp).expect("completed");
            assert!(
                r.status == NtStatus::DEVICE_REMOVED || r.status == NtStatus::SUCCESS,
                "{}",
                r.status
            );
        }
        assert_eq!(
            sim.dma_read(0, 1).unwrap_err().status(),
            Some(NtStatus::DEVICE_REMOVED)
        );
        sim.finish().expect("leak check");
    }
}

#[test]
fn stop_waits_for_the_transfer_then_restarts() {
    for run in RUNS {
        stop_waits_for_the_transfer_then_restarts_on(run);
    }
}

fn stop_waits_for_the_transfer_then_restarts_on(run: Run) {
    let mut sim = SimMachine::new(quiet(5, run)).expect("start");
    let data = pattern(5, 2000);
    let irp = sim
        .submit(IrpSpec::Write {
            offset: 0,
            data: data.clone(),
        })
        .expect("submit");
    sim.run_for(Duration::from_millis(30)).unwrap();
    assert_eq!(sim.stop_device().unwrap(), NtStatus::SUCCESS);
    let r = sim.wait(irp).unwrap();
    assert!(
        r.status == NtStatus::SUCCESS || r.status == NtStatus::DEVICE_NOT_READY,
        "{}",
        r.status
    );
    assert_eq!(sim.start_device().unwrap(), NtStatus::SUCCESS);
    let mut shadow = Shadow::of(&sim);
    shadow.write(&mut sim, 5, &data);
    shadow.read(&mut sim, 5, 2000);
    sim.finish().expect("leak check");
}

#[test]
fn a_lost_interrupt_is_recovered_by_the_watchdog() {
    for run in RUNS {
        a_lost_interrupt_is_recovered_by_the_watchdog_on(run);
    }
}

fn a_lost_interrupt_is_recovered_by_the_watchdog_on(run: Run) {
    for msi in [false, true] {
        let config = SimConfig {
            lose_interrupts: vec![1],
            msi,
            ..run.base()
        };
        let mut sim = round_trips(config, BufferLayout::default(), &[(0, 100), (200, 3000)]);
        assert!(sim.stats().driver.lost_interrupts >= 1);
        sim.finish().expect("leak check");
    }
}

#[test]
fn selftest_passes_with_intx_and_msi() {
    for msi in [false, true] {
        let mut sim = SimMachine::new(SimConfig {
            msi,
            ..SimConfig::default()
        })
        .expect("start");
        let report = sim.selftest().expect("selftest");
        assert_eq!(report.passed, selftest_steps::ALL, "{report:?}");
        assert!(report.all_passed());
        assert_eq!(report.factorial_polled, 120);
        let info = sim.device_info().unwrap();
        assert_eq!(info.interrupt_kind, if msi { 2 } else { 1 });
        assert_eq!(info.dma_address_width, 28);
        assert_eq!(info.dma_interface_version, 3);
        sim.finish().expect("leak check");
    }
}

#[test]
fn a_corrupted_byte_is_seen_by_the_data_check() {
    for run in RUNS {
        a_corrupted_byte_is_seen_by_the_data_check_on(run);
    }
}

fn a_corrupted_byte_is_seen_by_the_data_check_on(run: Run) {
    let config = SimConfig {
        corrupt_byte_injection: Some(CorruptByte {
            transfer: 2,
            byte: 17,
        }),
        ..run.base()
    };
    let mut sim = SimMachine::new(config).expect("start");
    let data = pattern(1, 64);
    sim.dma_write(0, &data).unwrap();
    let back = sim.dma_read(0, 64).unwrap();
    assert_ne!(back, data);
    assert_eq!(back.iter().zip(&data).filter(|(a, b)| a != b).count(), 1);
    assert_eq!(back[17], data[17] ^ 0x5A);
    sim.finish().expect("a corruption is not a leak");
}

#[test]
fn bad_requests_get_clear_statuses_and_count_as_errors() {
    let mut sim = SimMachine::new(SimConfig::default()).expect("start");
    let header = |off: u32| [off.to_le_bytes(), 0u32.to_le_bytes()].concat();
    let e = sim
        .device_control(ioctl::IOCTL_EDUDMA_DMA_READ, &header(4000), 200)
        .unwrap_err();
    assert_eq!(e.status(), Some(NtStatus::INVALID_BUFFER_SIZE));
    let e = sim
        .device_control(ioctl::IOCTL_EDUDMA_DMA_READ, &header(0), 0)
        .unwrap_err();
    assert_eq!(e.status(), Some(NtStatus::INVALID_PARAMETER));
    let e = sim.device_control(0x1234, &[], 0).unwrap_err();
    assert_eq!(e.status(), Some(NtStatus::INVALID_DEVICE_REQUEST));
    assert_eq!(
        sim.read(4095, 10).unwrap_err().status(),
        Some(NtStatus::END_OF_FILE)
    );
    assert_eq!(sim.read(4000, 200).unwrap().len(), 95);
    assert_eq!(sim.write(5, &[]).unwrap(), 0);
    assert_eq!(sim.stats().driver.errors, 3);
    sim.finish().expect("leak check");
}

#[test]
fn surprise_removal_with_queued_packets_fails_them_without_recursing_into_start_io() {
    for run in RUNS {
        surprise_removal_with_queued_packets_fails_them_without_recursing_into_start_io_on(run);
    }
}

fn surprise_removal_with_queued_packets_fails_them_without_recursing_into_start_io_on(run: Run) {
    // src/ sets DeferredStartIo: failing the queued packets at surprise
    // removal (StartIo completes each, IoStartNextPacket starts the next)
    // never recurses. The rule itself fires in verifier_io's test driver.
    let mut sim = SimMachine::new(SimConfig {
        seed: 3,
        ..run.base()
    })
    .expect("start");
    let irps: Vec<_> = (0..3)
        .map(|_| {
            sim.submit(IrpSpec::Read {
                offset: 0,
                length: 100,
            })
            .expect("submit")
        })
        .collect();
    sim.run_for(Duration::from_millis(20)).expect("run");
    assert_eq!(sim.surprise_remove(), Ok(NtStatus::SUCCESS));
    for irp in irps {
        let status = sim.wait(irp).unwrap().status;
        assert!(
            status == NtStatus::DEVICE_REMOVED || status.is_success(),
            "{status}"
        );
    }
    sim.finish().expect("leak check");
}

#[test]
fn each_strategy_calls_its_routines_at_their_floor() {
    for run in RUNS {
        let config = SimConfig {
            contention_percent: 0,
            seed: 11,
            ..run.base()
        };
        let requests = 20u64;
        let mut sim = round_trips(
            config,
            BufferLayout::default(),
            &(0..requests / 2)
                .map(|i| (i as u32, 4000))
                .collect::<Vec<_>>(),
        );
        let info = sim.device_info().unwrap();
        let s = sim.stats().driver;
        assert_eq!(s.requests, requests);
        assert_eq!(s.completed, requests);
        if run == Run::CommonBuffer {
            // One copy (in for a write, out for a read) and one command per
            // request, no channel, map or list.
            assert_eq!(
                info.dma_strategy,
                ioctl::DmaStrategyCode::CommonBuffer as u32
            );
            assert_eq!(
                (s.common_buffer_copies, s.device_commands),
                (requests, requests)
            );
            assert_eq!(
                (
                    s.allocate_adapter_channel,
                    s.map_transfer,
                    s.build_scatter_gather_list
                ),
                (0, 0, 0)
            );
            assert_eq!(sim.stats().hal.common_buffers, 1, "one, at start");
            sim.finish().expect("leak check");
            continue;
        }
        if run == Run::SgList {
            // One list, built in the driver's buffer and put, per request.
            assert_eq!(info.dma_strategy, ioctl::DmaStrategyCode::SgList as u32);
            assert_eq!(info.dma_interface_version, 3);
            assert_eq!(
                (
                    s.calculate_scatter_gather_list,
                    s.build_scatter_gather_list,
                    s.put_scatter_gather_list
                ),
                (requests, requests, requests)
            );
            assert_eq!(s.get_scatter_gather_list, 0);
            assert_eq!((s.allocate_adapter_channel, s.map_transfer), (0, 0));
            assert_eq!(info.requested_dma_strategy, info.dma_strategy);
            let hal = sim.stats().hal;
            assert_eq!((hal.lists_built, hal.lists_put), (requests, requests));
            sim.finish().expect("leak check");
            continue;
        }
        // One channel, one map, one flush, one free per request: the whole
        // request fits the map registers granted.
        assert_eq!(s.allocate_adapter_channel, requests, "{run:?} {s:?}");
        assert_eq!(
            (s.map_transfer, s.flush_adapter_buffers),
            (requests, requests)
        );
        if run.version1() {
            assert_eq!(info.dma_strategy, ioctl::DmaStrategyCode::V1Packet as u32);
            assert_eq!(info.dma_interface_version, 2, "VERSION2 is asked for first");
            assert_eq!(info.scatter_gather, 0);
            assert_eq!(
                (s.flush_io_buffers, s.free_map_registers),
                (requests, requests)
            );
            assert_eq!((s.get_dma_transfer_info, s.free_adapter_channel), (0, 0));
            assert_eq!(s.cancel_adapter_channel, 0);
        } else {
            assert_eq!(info.dma_strategy, ioctl::DmaStrategyCode::V3Packet as u32);
            assert_eq!(info.dma_interface_version, 3);
            assert_eq!(
                (s.get_dma_transfer_info, s.free_adapter_channel),
                (requests, requests)
            );
            assert_eq!((s.flush_io_buffers, s.free_map_registers), (0, 0));
        }
        let requested = if run == Run::V1Packet {
            ioctl::DmaStrategyCode::V1Packet
        } else {
            ioctl::DmaStrategyCode::V3Packet
        };
        assert_eq!(info.requested_dma_strategy, requested as u32);
        let hal = sim.stats().hal;
        assert_eq!(hal.io_buffer_flushes, s.flush_io_buffers);
        assert_eq!(hal.map_register_frees, s.free_map_registers);
        sim.finish().expect("leak check");
    }
}
