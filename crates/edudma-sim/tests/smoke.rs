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
