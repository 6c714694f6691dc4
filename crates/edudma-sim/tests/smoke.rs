//! Smoke test: the whole driver writes and reads back through the simulator.

use edudma_sim::{DmaStrategy, SimConfig, SimMachine};

#[test]
fn write_then_read_back() {
    let mut sim = SimMachine::new(SimConfig::default()).expect("start");
    let data: Vec<u8> = (0..300u32).map(|i| (i * 13 + 1) as u8).collect();
    assert_eq!(sim.dma_write(100, &data).expect("write"), 300);
    assert_eq!(&sim.device_buffer()[100..400], &data[..]);
    let back = sim.dma_read(100, 300).expect("read");
    assert_eq!(back, data);
    let st = sim.selftest().expect("selftest");
    assert!(st.all_passed(), "{st:?}");
    let stats = sim.finish().expect("finish");
    println!("{stats:#?}");
}

/// The same through the version-1 routines (asked for, and as the fallback
/// of a HAL without version 3), through scatter/gather lists and through the
/// common buffer: the glue's MDL walk, `MapTransfer`/`FlushAdapterBuffers`,
/// the lists the HAL lays out in memory, the copies through the common
/// buffer and the MDLs' system views (`scripts/miri.sh` runs it too).
#[test]
fn write_then_read_back_through_every_other_strategy() {
    for (strategy, dma_v3) in [
        (DmaStrategy::V1Packet, true),
        (DmaStrategy::V3Packet, false),
        (DmaStrategy::SgList, true),
        (DmaStrategy::CommonBuffer, true),
    ] {
        let mut sim = SimMachine::new(SimConfig {
            dma_strategy: strategy,
            dma_v3,
            map_registers: 1,
            ..SimConfig::default()
        })
        .expect("start");
        // Halfway into a page: 4000 bytes span two pages, and the one map
        // register splits them.
        sim.set_buffer_layout(edudma_sim::mdl::BufferLayout {
            byte_offset: Some(2048),
            ..edudma_sim::mdl::BufferLayout::default()
        });
        let data: Vec<u8> = (0..4000u32).map(|i| (i * 7 + 3) as u8).collect();
        assert_eq!(sim.dma_write(50, &data).expect("write"), 4000);
        assert_eq!(sim.dma_read(50, 4000).expect("read"), data);
        let driver = sim.stats().driver;
        if strategy == DmaStrategy::CommonBuffer {
            assert_eq!(driver.common_buffer_copies, 2, "in, then out");
        } else {
            assert!(driver.partial_maps > 0, "{strategy:?}: split");
        }
        sim.finish().expect("finish");
    }
}

/// One run on `cpus` CPUs with heavy preemption: 20 write/read-backs and a self-test.
fn preempted_run(cpus: usize, seed: u64) -> edudma_sim::native::SchedStats {
    let mut sim = SimMachine::new(SimConfig {
        cpus,
        seed,
        preempt_percent: 50,
        ..SimConfig::default()
    })
    .expect("start");
    for i in 0..20u32 {
        let data: Vec<u8> = (0..100u32).map(|b| (b + i) as u8).collect();
        // A write and its read back in flight together (dispatch of the
        // read on one CPU while the write's StartIo, ISR or DPC runs on
        // another); StartIo keeps their order.
        let offset = i64::from(i * 100);
        let write = sim
            .submit(edudma_sim::machine::IrpSpec::Write {
                offset,
                data: data.clone(),
            })
            .unwrap();
        let read = sim
            .submit(edudma_sim::machine::IrpSpec::Read {
                offset,
                length: 100,
            })
            .unwrap();
        assert_eq!(sim.wait(write).unwrap().information, 100);
        assert_eq!(sim.wait(read).unwrap().output, data);
    }
    let report = sim.selftest().expect("selftest");
    assert!(report.all_passed(), "{report:?}");
    let stats = sim.stats();
    assert!(stats.driver.requests >= 40, "{:?}", stats.driver);
    sim.finish().expect("finish");
    stats.sched
}

#[test]
fn the_driver_that_ships_runs_and_is_preempted() {
    // Which interleavings one seed meets is chance: a few seeds together
    // must meet each kind.
    let runs: Vec<_> = (0..8)
        .map(|seed| preempted_run(2 + seed as usize % 3, seed))
        .collect();
    eprintln!("{runs:#?}");
    assert!(runs.iter().all(|s| s.activities > 40 && s.preemptions > 0));
    assert!(
        runs.iter().any(|s| s.max_cpus_in_driver >= 2),
        "two CPUs held driver code at once"
    );
    assert!(
        runs.iter().any(|s| s.stacked > 0),
        "a routine (an ISR or a DPC) ran above one that had not returned"
    );
    assert!(
        runs.iter().any(|s| s.interrupts_mid_routine > 0),
        "the ISR ran while another routine of the driver was mid-way"
    );
}

/// A run of concurrent requests on 4 CPUs: what it did and how it
/// interleaved.
fn concurrent_run(seed: u64) -> (u64, Vec<usize>, Vec<u8>, std::time::Duration, u64) {
    let mut sim = SimMachine::new(SimConfig {
        cpus: 4,
        seed,
        preempt_percent: 40,
        ..SimConfig::default()
    })
    .expect("start");
    let irps: Vec<_> = (0..6u32)
        .map(|i| {
            let data: Vec<u8> = (0..200u32).map(|b| (b * 3 + i) as u8).collect();
            sim.submit(edudma_sim::machine::IrpSpec::Write {
                offset: i64::from(i * 200),
                data,
            })
            .expect("submit")
        })
        .collect();
    let outputs = irps
        .into_iter()
        .map(|irp| sim.wait(irp).expect("write").information)
        .collect();
    let device = sim.device_buffer().to_vec();
    let elapsed = sim.elapsed();
    let stats = sim.stats();
    sim.finish().expect("finish");
    (
        stats.sched.fingerprint,
        outputs,
        device,
        elapsed,
        stats.sched.preemptions,
    )
}

#[test]
fn the_same_seed_replays_the_same_interleaving() {
    let first = concurrent_run(7);
    assert!(first.4 > 0, "the run was preempted");
    assert_eq!(first.1, vec![200; 6], "every write accepted whole");
    assert_eq!(concurrent_run(7), first, "seed 7 twice");
    let others: Vec<u64> = (8..12).map(|s| concurrent_run(s).0).collect();
    assert!(
        others.iter().any(|f| *f != first.0),
        "other seeds interleave differently: {others:x?} vs {:x}",
        first.0
    );
}
