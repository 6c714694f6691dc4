//! How fast each DMA strategy moves bytes on QEMU's device (`rate-*` lines).

use std::time::Instant;

use super::{Case, EngineConfig, HalConfig, Layout, Rig, say};

/// Round trips of each measured buffer in [`throughput_phase`].
const THROUGHPUT_ROUND_TRIPS: usize = 6;

/// What each strategy gets out of the real device: round trips of a full
/// window (two requests each, one at a time, every byte checked) from a
/// user buffer that crosses a page boundary — the pages where the kernel
/// put them, then a low page and a high one — timed on the wall clock and
/// set against the device's limit (4096 bytes per 100 ms). Reported, not
/// asserted: it is a measurement (`docs/performance.md`).
pub(super) fn throughput_phase(rig: &mut Rig, window: u32) {
    use edudma_core::engine::DmaStrategy;
    const LIMIT: f64 = 40_960.0;
    for (name, strategy) in [
        ("rate-v3-packet", DmaStrategy::V3Packet),
        ("rate-v1-packet", DmaStrategy::V1Packet),
        ("rate-sg-list", DmaStrategy::SgList),
        ("rate-common-buffer", DmaStrategy::CommonBuffer),
    ] {
        let config = HalConfig {
            strategy,
            common_page: Some(rig.common),
            ..HalConfig::default()
        };
        let mut drv = match rig.start_driver(name, config, EngineConfig::default(), true) {
            Ok(drv) => drv,
            Err(e) => {
                rig.check(false, &format!("start {name}: {e}"));
                continue;
            }
        };
        let mut figures = Vec::new();
        for layout in [Layout::Real, Layout::LowHigh] {
            let case = Case {
                len: window,
                dev: 0,
                a_off: 2048,
                a: layout,
                b_off: 2048,
                b: layout,
            };
            let before = drv.engine.stats();
            let started = Instant::now();
            for i in 0..THROUGHPUT_ROUND_TRIPS {
                rig.round_trip(&mut drv, case, &format!("{layout:?} #{i}"));
            }
            let seconds = started.elapsed().as_secs_f64();
            let after = drv.engine.stats();
            let requests = after.requests - before.requests;
            let bytes = requests as f64 * f64::from(window);
            figures.push(format!(
                "{layout:?} pages: {:.1} % of the device limit ({:.0} B/s over {requests} requests, \
                 {:.2} device commands per request)",
                100.0 * bytes / seconds / LIMIT,
                bytes / seconds,
                (after.device_commands - before.device_commands) as f64 / requests.max(1) as f64
            ));
        }
        let _ = rig.stop_driver(drv);
        say(&format!("HIL INFO {name}: {}", figures.join("; ")));
    }
}
