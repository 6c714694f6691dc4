//! The machine of a seed: every knob of [`SimConfig`] the driver meets on
//! real machines, and the faults the scenario injects.

use crate::kernel::DeviceFaults;
use crate::rng::SimRng;
use crate::sim::{Allocation, DmaStrategy, Placement, SimConfig};

/// What the seed's operations may do besides the machine's own knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Operations to run (the last may end the device).
    pub ops: u64,
    /// Some interrupts are lost for good (the device's, from some delivery
    /// on): the watchdog must finish every command.
    pub interrupts_never_come: bool,
}

impl Plan {
    /// Requests may fail with a device error: a DMA that never completes.
    pub fn device_may_fail(cfg: &SimConfig) -> bool {
        cfg.faults.hang_dma.is_some()
    }
}

/// The machine and plan of `seed`.
pub fn machine_for(seed: u64) -> (SimConfig, Plan) {
    let mut r = SimRng::new(seed ^ 0x5EED_0000_0000);
    let fixed = r.chance(30);
    let mut cfg = SimConfig {
        seed,
        map_registers: [1, 2, 3, 5, 8, 16, 17, 32, 64][r.below(9) as usize],
        scatter_gather: r.chance(75),
        allocation: if r.chance(50) {
            Allocation::Sync
        } else {
            Allocation::Async
        },
        cpus: r.range(1, 8) as usize,
        preempt_percent: r.below(60) as u32,
        msi: r.chance(40),
        window: if fixed && r.chance(70) { 4096 } else { 4095 },
        qemu_fixed_range_check: fixed,
        placement: [
            Placement::Any,
            Placement::Low,
            Placement::High,
            Placement::Mixed,
        ][r.below(4) as usize],
        double_buffer_all: [None, Some(false), Some(true)][r.below(3) as usize],
        contention_percent: r.below(60) as u32,
        inline_grant_percent: r.below(101) as u32,
        bus_master_at_boot: r.chance(50),
        dma_strategy: [
            DmaStrategy::V3Packet,
            DmaStrategy::V1Packet,
            DmaStrategy::SgList,
            DmaStrategy::CommonBuffer,
        ][r.below(4) as usize],
        dma_v3: !r.chance(15),
        memory_mib: [512, 1024, 2048, 4096, 8192, 16384, 65536][r.below(7) as usize],
        ..SimConfig::default()
    };
    let mut plan = Plan {
        ops: r.range(1, 6),
        interrupts_never_come: false,
    };
    match r.below(20) {
        0 | 1 => cfg.lose_interrupts = vec![r.range(1, 4)],
        2 => {
            // Several lost, apart.
            let mut at = 0;
            for _ in 0..r.range(2, 6) {
                at += r.range(1, 3);
                cfg.lose_interrupts.push(at);
            }
        }
        3 => {
            // From some delivery on, none arrives.
            let from = r.range(1, 4);
            cfg.lose_interrupts = (from..from + 5_000).collect();
            plan.interrupts_never_come = true;
        }
        _ => {}
    }
    if r.chance(20) {
        cfg.short_map_percent = r.range(10, 60) as u32;
    }
    if r.chance(10) {
        cfg.map_failure_percent = r.range(5, 30) as u32;
    }
    // The device's reach (the driver describes the smaller of it and 28
    // bits): every width QEMU's edu can be given, 28 the most often.
    cfg.dma_mask_bits = match r.below(4) {
        0 => r.range(24, 27) as u32,
        1 => r.range(29, 64) as u32,
        _ => 28,
    };
    cfg.faults = DeviceFaults {
        hang_dma: r.chance(5).then(|| r.range(1, 6)),
        ..DeviceFaults::default()
    };
    (cfg, plan)
}

/// One line that names the machine of a failure.
pub fn label(cfg: &SimConfig, plan: &Plan) -> String {
    let mut s = format!(
        "{:?}{}, {} CPU(s), {} map register(s){}, {} MiB, {}-bit device, {}{}",
        cfg.dma_strategy,
        if cfg.dma_v3 { "" } else { " (no DMA v3)" },
        cfg.cpus,
        cfg.map_registers,
        if cfg.scatter_gather {
            ""
        } else {
            " without S/G"
        },
        cfg.memory_mib,
        cfg.dma_mask_bits,
        if cfg.msi { "MSI" } else { "INTx" },
        match cfg.window {
            4096 => ", 4096-byte window",
            _ => "",
        }
    );
    if !cfg.lose_interrupts.is_empty() {
        s += if plan.interrupts_never_come {
            ", interrupts stop coming"
        } else {
            ", lost interrupts"
        };
    }
    if cfg.short_map_percent > 0 {
        s += &format!(", {}% short maps", cfg.short_map_percent);
    }
    if cfg.map_failure_percent > 0 {
        s += &format!(", {}% failing maps", cfg.map_failure_percent);
    }
    if let Some(n) = cfg.faults.hang_dma {
        s += &format!(", DMA #{n} never completes");
    }
    s
}
