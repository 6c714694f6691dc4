//! The driver that ships (`src/`) end to end against a real edu device:
//! the simulated kernel, HAL and I/O manager, with the edu model mirrored
//! onto real hardware ([`crate::edu::mirror`]).
//!
//! The hardware-in-the-loop harness runs [`run`] in a Linux guest with the
//! mirror over QEMU's device (its `[SRC]` checks); the host test runs it
//! over a second model, so the mirror itself is tested on every CI run.
//! Each phase boots a machine — `DriverEntry`, `AddDevice`, start — and
//! ends with removal, `DriverUnload` and the leak check; the DMA strategies
//! each get one. Every register value the driver reads (but the transients
//! of virtual time the model answers) and every byte the device writes to
//! memory come from the real device.

use std::time::Duration;

use edudma_core::engine::DmaStrategy;
use edudma_core::ioctl::{self, DmaHeader};
use edudma_core::regs;
use zerocopy::IntoBytes;

use crate::edu::mirror::{Divergence, EduMirror, MirrorStats};
use crate::machine::IrpSpec;
use crate::rng::SimRng;
use crate::sim::{SimConfig, SimMachine};

/// One check of the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked (phase and step).
    pub name: String,
    /// It held.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// The outcome of [`run`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockstepReport {
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Differences between the model and the real device.
    pub divergences: Vec<Divergence>,
    /// What the mirror did.
    pub stats: MirrorStats,
}

impl LockstepReport {
    /// Every check held and the model never diverged from the device.
    pub fn passed(&self) -> bool {
        self.divergences.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

/// Transfers of the main phase: (device offset, length), inside the
/// 4095-byte window QEMU 7.2 allows.
const TRANSFERS: &[(u32, usize)] = &[(0, 4095), (123, 1000), (4000, 95), (2047, 1)];

struct Run<'a> {
    mirror: &'a EduMirror,
    rng: SimRng,
    report: LockstepReport,
}

impl Run<'_> {
    fn check(&mut self, name: String, passed: bool, detail: String) {
        self.report.checks.push(Check {
            name,
            passed,
            detail,
        });
    }

    fn boot(&mut self, phase: &str, strategy: DmaStrategy) -> Option<SimMachine> {
        let config = SimConfig {
            seed: self.rng.next_u64(),
            dma_strategy: strategy,
            edu_mirror: Some(self.mirror.clone()),
            ..SimConfig::default()
        };
        match SimMachine::new(config) {
            Ok(sim) => {
                self.check(format!("{phase}: start"), true, "started".into());
                Some(sim)
            }
            Err(e) => {
                self.check(format!("{phase}: start"), false, format!("{e:?}"));
                None
            }
        }
    }

    /// DMA `len` bytes to the device at `offset` and back; compare.
    fn loopback(&mut self, phase: &str, sim: &mut SimMachine, offset: u32, len: usize) {
        let mut data = vec![0u8; len];
        self.rng.fill(&mut data);
        let name = format!("{phase}: loopback {len} bytes at {offset}");
        let result = sim
            .dma_write(offset, &data)
            .and_then(|_| sim.dma_read(offset, len as u32));
        match result {
            Ok(back) => {
                let same = back == data;
                let detail = match (0..len).find(|&i| back.get(i) != data.get(i)) {
                    None => "the bytes came back".to_string(),
                    Some(i) => format!("{} bytes back, first difference at {i}", back.len()),
                };
                self.check(name, same, detail);
            }
            Err(e) => self.check(name, false, format!("{e:?}")),
        }
    }

    fn finish(&mut self, phase: &str, sim: SimMachine) {
        let verifier = sim.verifier_report();
        let clean = verifier.violations.is_empty();
        self.check(
            format!("{phase}: Driver Verifier"),
            clean,
            format!("{} violation(s)", verifier.violations.len()),
        );
        match sim.finish() {
            Ok(_) => self.check(
                format!("{phase}: remove, unload, leak check"),
                true,
                "clean".into(),
            ),
            Err(e) => self.check(
                format!("{phase}: remove, unload, leak check"),
                false,
                format!("{e:?}"),
            ),
        }
    }

    /// The whole driver: self-test, every transfer shape, `ReadFile` and
    /// `WriteFile`, a cancel, stop and restart.
    fn main_phase(&mut self) {
        let phase = "v3 packet";
        let Some(mut sim) = self.boot(phase, DmaStrategy::V3Packet) else {
            return;
        };
        match sim.selftest() {
            Ok(report) => self.check(
                format!("{phase}: self-test"),
                report.all_passed(),
                format!(
                    "{} passed, {} failed, id 0x{:08x}, {}! = {}",
                    report.passed,
                    report.failed,
                    report.device_id,
                    report.factorial_interrupt_input,
                    report.factorial_interrupt
                ),
            ),
            Err(e) => self.check(format!("{phase}: self-test"), false, format!("{e:?}")),
        }
        match sim.device_info() {
            Ok(info) => self.check(
                format!("{phase}: device info"),
                regs::decode_id(info.device_id).is_some() && info.dma_interface_version == 3,
                format!(
                    "id 0x{:08x}, DMA interface {}",
                    info.device_id, info.dma_interface_version
                ),
            ),
            Err(e) => self.check(format!("{phase}: device info"), false, format!("{e:?}")),
        }
        for &(offset, len) in TRANSFERS {
            self.loopback(phase, &mut sim, offset, len);
        }
        self.file_io(phase, &mut sim);
        self.cancel(phase, &mut sim);
        let restarted = sim.stop_device().and_then(|_| sim.start_device());
        let detail = format!("{restarted:?}");
        self.check(
            format!("{phase}: stop and start"),
            restarted.is_ok_and(|s| !s.is_error()),
            detail,
        );
        self.loopback(phase, &mut sim, 0, 4095);
        self.finish(phase, sim);
    }

    fn file_io(&mut self, phase: &str, sim: &mut SimMachine) {
        let mut data = vec![0u8; 3000];
        self.rng.fill(&mut data);
        let result = sim
            .write(500, &data)
            .and_then(|_| sim.read(500, data.len() as u32));
        let detail = match &result {
            Ok(back) => format!("{} bytes back", back.len()),
            Err(e) => format!("{e:?}"),
        };
        self.check(
            format!("{phase}: WriteFile then ReadFile"),
            result.is_ok_and(|back| back == data),
            detail,
        );
    }

    /// Cancel a transfer in flight: it ends cancelled or complete, and the
    /// next one works.
    fn cancel(&mut self, phase: &str, sim: &mut SimMachine) {
        let header = DmaHeader {
            device_offset: 0,
            flags: 0,
        };
        let spec = IrpSpec::Control {
            code: ioctl::IOCTL_EDUDMA_DMA_WRITE,
            input: header.as_bytes().to_vec(),
            output_length: 4095,
            data: vec![0xA5; 4095],
        };
        let outcome = sim.submit(spec).and_then(|irp| {
            sim.cancel_after(irp, Duration::from_millis(30));
            sim.wait(irp)
        });
        let ok = outcome.as_ref().is_ok_and(|r| {
            r.status == edudma_core::NtStatus::CANCELLED
                || r.status == edudma_core::NtStatus::SUCCESS
        });
        self.check(
            format!("{phase}: cancel in flight"),
            ok,
            format!("{:?}", outcome.map(|r| r.status)),
        );
        self.loopback(&format!("{phase} after cancel"), sim, 64, 2000);
    }

    fn strategy_phase(&mut self, phase: &str, strategy: DmaStrategy) {
        let Some(mut sim) = self.boot(phase, strategy) else {
            return;
        };
        self.loopback(phase, &mut sim, 0, 4095);
        self.loopback(phase, &mut sim, 300, 700);
        self.finish(phase, sim);
    }
}

/// Run the driver against `mirror`'s device (see the module docs). The
/// checks and the mirror's verdict are in the report; nothing panics on a
/// device that misbehaves.
pub fn run(mirror: &EduMirror, seed: u64) -> LockstepReport {
    let mut run = Run {
        mirror,
        rng: SimRng::new(seed),
        report: LockstepReport::default(),
    };
    run.main_phase();
    run.strategy_phase("v1 packet", DmaStrategy::V1Packet);
    run.strategy_phase("scatter/gather list", DmaStrategy::SgList);
    run.strategy_phase("common buffer", DmaStrategy::CommonBuffer);
    run.report.divergences = mirror.divergences();
    run.report.stats = mirror.stats();
    run.report
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::edu::mirror::ModelDevice;
    use crate::edu::{CorruptByte, EduConfig};

    fn stand_in(config: EduConfig) -> (EduMirror, Arc<Mutex<ModelDevice>>) {
        let real = Arc::new(Mutex::new(ModelDevice::new(
            config,
            0xC0FF_EE00_1234_5678,
            0x7F000,
        )));
        (EduMirror::new(Box::new(real.clone())), real)
    }

    #[test]
    fn src_runs_in_lockstep_with_a_second_model() {
        let (mirror, real) = stand_in(EduConfig::default());
        let report = run(&mirror, 7);
        let failed: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
        assert!(report.passed(), "{failed:#?}\n{:#?}", report.divergences);
        // Four phases, each with start, loopbacks and its teardown.
        assert!(report.checks.len() >= 4 * 4, "{}", report.checks.len());
        let real = real.lock().unwrap();
        assert_eq!(
            real.device().transfers(),
            report.stats.dma_commands,
            "every mirrored command ran on the stand-in"
        );
        // The attach's four, plus at least two per loopback.
        assert!(
            report.stats.dma_commands >= 4 + 2 * 12,
            "{:?}",
            report.stats
        );
        assert!(report.stats.reads_compared > 20, "{:?}", report.stats);
        assert!(report.stats.factorials >= 1, "the self-test's factorials");
    }

    #[test]
    fn a_real_device_that_corrupts_a_transfer_fails_the_run() {
        let config = EduConfig {
            corrupt: Some(CorruptByte {
                transfer: 6,
                byte: 17,
            }),
            ..EduConfig::default()
        };
        let (mirror, _real) = stand_in(config);
        let report = run(&mirror, 7);
        assert!(!report.passed());
        assert!(
            report
                .divergences
                .iter()
                .any(|d| matches!(d, Divergence::Data { .. })),
            "{:?}",
            report.divergences
        );
    }
}
