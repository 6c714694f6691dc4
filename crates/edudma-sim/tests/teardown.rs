//! A machine leaves nothing behind: once it is dropped, every thread of its
//! simulated CPUs has exited (nothing keeps the machine alive). Alone in
//! its binary, so that no other test's threads are counted.

use edudma_sim::{SimConfig, SimMachine};

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

#[test]
fn a_finished_machine_leaves_no_thread_behind() {
    let before = threads();
    {
        let mut sim = SimMachine::new(SimConfig {
            cpus: 4,
            ..SimConfig::default()
        })
        .expect("start");
        sim.dma_write(0, &[1, 2, 3]).expect("write");
        // Cancels take the cancel spin lock inside IoStartPacket too.
        assert!(sim.selftest().expect("selftest").all_passed());
        let _ = sim.finish().expect("finish");
    }
    assert_eq!(threads(), before, "every CPU thread exited");
}
