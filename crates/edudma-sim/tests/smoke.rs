//! Smoke test: the whole driver writes and reads back through the simulator.

use edudma_sim::{SimConfig, SimMachine};

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

#[test]
fn the_driver_that_ships_runs_and_is_preempted() {
    let mut sim = SimMachine::new(SimConfig {
        cpus: 4,
        preempt_percent: 50,
        ..SimConfig::default()
    })
    .expect("start");
    for i in 0..20u32 {
        let data: Vec<u8> = (0..100u32).map(|b| (b + i) as u8).collect();
        sim.dma_write(i * 100, &data).unwrap();
        assert_eq!(sim.dma_read(i * 100, 100).unwrap(), data);
    }
    let report = sim.selftest().expect("selftest");
    let stats = sim.stats();
    eprintln!("{report:?}\n{stats:#?}");
    assert!(stats.sched.activities > 40, "{:?}", stats.sched);
    assert!(stats.sched.preemptions > 0);
    assert!(
        stats.sched.max_cpus_in_driver >= 2,
        "two CPUs held driver code at once: {:?}",
        stats.sched
    );
    assert!(
        stats.sched.stacked > 0,
        "a routine (an ISR or a DPC) ran above one that had not returned: {:?}",
        stats.sched
    );
    assert!(stats.driver.requests >= 40, "{:?}", stats.driver);
    sim.finish().expect("finish");
}
