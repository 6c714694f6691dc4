//! The operations of a scenario and the invariants checked after each.

use std::time::Duration;

use edudma_core::NtStatus;
use edudma_core::ioctl::{self, DmaHeader, selftest_steps};
use zerocopy::IntoBytes;

use super::Coverage;
use super::draw::Plan;
use crate::io::{FileId, IrpId};
use crate::machine::{IrpResult, IrpSpec};
use crate::mdl::BufferLayout;
use crate::rng::SimRng;
use crate::sim::{Placement, SimConfig, SimMachine};
use crate::wdm::PnpMinor;

/// A transfer the scenario asked for.
#[derive(Clone, Debug)]
enum Transfer {
    Write {
        offset: u32,
        data: Vec<u8>,
    },
    Read {
        offset: u32,
        length: u32,
    },
    /// `IOCTL_EDUDMA_SELFTEST`, queued with the transfers.
    SelfTest,
}

impl Transfer {
    fn range(&self) -> (usize, usize) {
        match self {
            Transfer::Write { offset, data } => (*offset as usize, data.len()),
            Transfer::Read { offset, length } => (*offset as usize, *length as usize),
            Transfer::SelfTest => (0, 0),
        }
    }
}

/// A request in flight and what may end it besides success.
struct Pending {
    irp: IrpId,
    transfer: Transfer,
    /// Cancelled (by `IoCancelIrp` or its handle's cleanup) at some moment.
    cancellable: bool,
}

/// Statuses a request may end with beyond `SUCCESS` in this operation.
#[derive(Clone, Copy, Default)]
struct Allowed {
    cancelled: bool,
    delete_pending: bool,
    device_removed: bool,
    device_error: bool,
}

struct World {
    sim: SimMachine,
    r: SimRng,
    window: u32,
    /// What the device buffer holds where `known` says it is known.
    shadow: [u8; 4096],
    /// Bytes whose content is known: a failed or cancelled write leaves its
    /// range undefined (old bytes, new bytes, or what a DMA without bus
    /// mastering left) until a write that succeeds covers it again.
    known: [bool; 4096],
    cov: Coverage,
    /// The seed's faults may fail requests with a device error.
    device_may_fail: bool,
    /// `MapTransferEx` may fail: requests may end with its status.
    maps_may_fail: bool,
    lossy_interrupts: bool,
    msi: bool,
    files: u64,
}

/// Run one scenario of `plan` on the machine `cfg`; with `cfg.trace`, its
/// timeline goes to `trace` (up to the failure, if it fails).
pub fn run(
    seed: u64,
    cfg: SimConfig,
    plan: Plan,
    trace: &mut Option<String>,
) -> Result<Coverage, String> {
    let mut r = SimRng::new(seed ^ 0x0B5E_55ED_0000);
    let sim = SimMachine::new(cfg.clone()).map_err(|e| format!("start: {e}"))?;
    let mut world = World {
        shadow: sim.device_buffer(),
        known: [true; 4096],
        window: cfg.window,
        device_may_fail: Plan::device_may_fail(&cfg),
        maps_may_fail: cfg.map_failure_percent > 0,
        lossy_interrupts: !cfg.lose_interrupts.is_empty(),
        msi: cfg.msi,
        cov: Coverage::default(),
        files: 1,
        r: SimRng::new(r.next_u64()),
        sim,
    };
    let layout = random_layout(&mut r, cfg.placement);
    world.sim.set_buffer_layout(layout);
    let cfg_mask_bits = cfg.dma_mask_bits;
    let ran = world.operations(plan.ops);
    *trace = world.sim.trace_json();
    ran?;
    let World {
        mut sim, mut cov, ..
    } = world;
    let without_bus_master = sim
        .machine()
        .sys()
        .with(|k| k.device.transfers_without_bus_master());
    let stats = sim.finish().map_err(|e| format!("leak check: {e}"))?;
    cov.add("scenario");
    let mut count = |what: &str, n: u64| cov.add_many(what, n);
    count("device:dma-transfers", stats.device_transfers);
    count(
        match cfg_mask_bits {
            0..=27 => "device:mask-24-27-bits",
            28 => "device:mask-28-bits",
            _ => "device:mask-29-64-bits",
        },
        1,
    );
    count("device:dma-without-bus-master", without_bus_master);
    count("hal:pages-bounced", stats.bounced_pages);
    count("hal:pages-direct", stats.direct_pages);
    count("hal:short-maps", stats.hal.partial_maps);
    count("hal:failed-maps", stats.hal.failed_maps);
    count(
        "driver:lost-interrupts-recovered",
        stats.driver.lost_interrupts,
    );
    count("driver:timeouts", stats.driver.timeouts);
    count("kernel:interrupts", stats.kernel.interrupts);
    count("kernel:interrupts-claimed", stats.kernel.interrupts_claimed);
    Ok(cov)
}

fn random_layout(r: &mut SimRng, placement: Placement) -> BufferLayout {
    BufferLayout {
        placement,
        byte_offset: r.chance(50).then(|| r.below(4096) as u32),
        chain: (0..r.below(3)).map(|_| r.range(1, 2000) as u32).collect(),
        unlocked: false,
    }
}

fn wait_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl World {
    /// `ops` operations (fewer if one removes the device), each checked,
    /// then the verifier's verdict.
    fn operations(&mut self, ops: u64) -> Result<(), String> {
        for _ in 0..ops {
            let ended = self.step()?;
            self.check_buffer("after an operation")?;
            if ended {
                break;
            }
        }
        let report = self.sim.verifier_report();
        if !report.violations.is_empty() {
            return Err(format!("verifier: {:?}", report.violations));
        }
        Ok(())
    }

    /// One operation; true when it ended the device (removal).
    fn step(&mut self) -> Result<bool, String> {
        match self.r.below(16) {
            0..=1 => {
                self.cov.add("op:write");
                let t = self.write_transfer();
                self.batch(vec![(t, None)], Allowed::default())?;
            }
            2..=3 => {
                self.cov.add("op:read");
                let t = self.read_transfer();
                self.batch(vec![(t, None)], Allowed::default())?;
            }
            4..=5 => {
                // Concurrent requests, any of them (running or queued)
                // cancelled at a random moment.
                self.cov.add("op:batch");
                let mut batch = Vec::new();
                for _ in 0..self.r.range(2, 6) {
                    let t = if self.r.chance(10) {
                        Transfer::SelfTest
                    } else {
                        self.any_transfer()
                    };
                    let cancel = self
                        .r
                        .chance(25)
                        .then(|| Duration::from_micros(self.r.below(400_000)));
                    batch.push((t, cancel));
                }
                let allowed = Allowed {
                    cancelled: true,
                    ..Allowed::default()
                };
                self.batch(batch, allowed)?;
            }
            6 => self.selftest()?,
            7 => return self.rebalance(),
            8 => self.sleep()?,
            9 => return self.orderly_removal(),
            10 => return self.surprise_removal(),
            11 => self.cleanup_with_requests_queued()?,
            12 => self.interrupt_noise()?,
            13 => return self.bus_master_cleared(),
            14 => return self.wrong_id_at_restart(),
            _ => {
                // A write and a read of the same range, back to back.
                self.cov.add("op:write-read");
                let t = self.write_transfer();
                let (offset, length) = t.range();
                let read = Transfer::Read {
                    offset: offset as u32,
                    length: length as u32,
                };
                self.batch(vec![(t, None), (read, None)], Allowed::default())?;
            }
        }
        Ok(false)
    }

    // ---- requests ----------------------------------------------------------

    fn range(&mut self) -> (u32, u32) {
        let w = self.window;
        let len = match self.r.below(4) {
            0 => self.r.range(1, 16) as u32,
            1 => w - self.r.below(3) as u32,
            _ => self.r.range(1, u64::from(w)) as u32,
        };
        let offset = self.r.range(0, u64::from(w - len)) as u32;
        (offset, len)
    }

    fn write_transfer(&mut self) -> Transfer {
        let (offset, len) = self.range();
        let mut data = vec![0u8; len as usize];
        self.r.fill(&mut data);
        Transfer::Write { offset, data }
    }

    fn read_transfer(&mut self) -> Transfer {
        let (offset, length) = self.range();
        Transfer::Read { offset, length }
    }

    fn any_transfer(&mut self) -> Transfer {
        if self.r.chance(50) {
            self.write_transfer()
        } else {
            self.read_transfer()
        }
    }

    /// The IRP of a transfer: `ReadFile`/`WriteFile` or the DMA IOCTLs.
    fn spec(&mut self, t: &Transfer) -> IrpSpec {
        let ioctl = self.r.chance(40);
        match (t, ioctl) {
            (Transfer::Write { offset, data }, false) => IrpSpec::Write {
                offset: i64::from(*offset),
                data: data.clone(),
            },
            (Transfer::Read { offset, length }, false) => IrpSpec::Read {
                offset: i64::from(*offset),
                length: *length,
            },
            (Transfer::Write { offset, data }, true) => IrpSpec::Control {
                code: ioctl::IOCTL_EDUDMA_DMA_WRITE,
                input: header(*offset),
                output_length: data.len() as u32,
                data: data.clone(),
            },
            (Transfer::Read { offset, length }, true) => IrpSpec::Control {
                code: ioctl::IOCTL_EDUDMA_DMA_READ,
                input: header(*offset),
                output_length: *length,
                data: Vec::new(),
            },
            (Transfer::SelfTest, _) => IrpSpec::Control {
                code: ioctl::IOCTL_EDUDMA_SELFTEST,
                input: Vec::new(),
                output_length: size_of::<ioctl::SelfTestReport>() as u32,
                data: Vec::new(),
            },
        }
    }

    fn submit_on(
        &mut self,
        file: FileId,
        t: Transfer,
        cancellable: bool,
    ) -> Result<Pending, String> {
        let spec = self.spec(&t);
        let irp = self
            .sim
            .submit_on(file, spec)
            .map_err(|e| wait_err("submit", e))?;
        self.cov.add(match &t {
            Transfer::Write { .. } => "request:write",
            Transfer::Read { .. } => "request:read",
            Transfer::SelfTest => "request:selftest",
        });
        Ok(Pending {
            irp,
            transfer: t,
            cancellable,
        })
    }

    /// Submit every transfer (each cancelled after its delay, if any), wait
    /// for all, and settle them in submission order (StartIo's).
    fn batch(
        &mut self,
        transfers: Vec<(Transfer, Option<Duration>)>,
        allowed: Allowed,
    ) -> Result<(), String> {
        let mut pending = Vec::new();
        for (t, cancel) in transfers {
            let p = self.submit_on(FileId::default(), t, cancel.is_some())?;
            if let Some(d) = cancel {
                self.cov.add("cancel");
                self.sim.cancel_after(p.irp, d);
            }
            pending.push(p);
        }
        self.settle_all(pending, allowed)
    }

    fn settle_all(&mut self, pending: Vec<Pending>, allowed: Allowed) -> Result<(), String> {
        let mut results = Vec::new();
        for p in &pending {
            results.push(self.sim.wait(p.irp).map_err(|e| wait_err("wait", e))?);
        }
        for (p, res) in pending.iter().zip(results) {
            self.settle(p, &res, allowed)?;
        }
        Ok(())
    }

    /// Check one ended request against what was allowed and the shadow.
    fn settle(&mut self, p: &Pending, res: &IrpResult, allowed: Allowed) -> Result<(), String> {
        let status = res.status;
        self.cov
            .add(format!("status:{}", status.name().unwrap_or("other")));
        let fine = status == NtStatus::SUCCESS
            || (status == NtStatus::CANCELLED && p.cancellable && allowed.cancelled)
            || (status == NtStatus::DELETE_PENDING && allowed.delete_pending)
            || (status == NtStatus::DEVICE_REMOVED && allowed.device_removed)
            || ((status == NtStatus::IO_TIMEOUT || status == NtStatus::DEVICE_HARDWARE_ERROR)
                && (self.device_may_fail || allowed.device_error))
            || (status == NtStatus::INSUFFICIENT_RESOURCES && self.maps_may_fail);
        let (offset, length) = p.transfer.range();
        if !fine {
            return Err(format!(
                "a {} of {length} at {offset} ended {status}",
                match p.transfer {
                    Transfer::Write { .. } => "write",
                    Transfer::Read { .. } => "read",
                    Transfer::SelfTest => "self-test",
                }
            ));
        }
        match &p.transfer {
            Transfer::Write { data, .. } => {
                let range = offset..offset + length;
                if status == NtStatus::SUCCESS {
                    if res.information != length {
                        return Err(format!("a write of {length} reported {}", res.information));
                    }
                    self.shadow[range.clone()].copy_from_slice(data);
                    self.known[range].fill(true);
                } else {
                    self.known[range].fill(false);
                }
            }
            Transfer::Read { .. } if status == NtStatus::SUCCESS => {
                if res.information != length || res.output.len() < length {
                    return Err(format!("a read of {length} returned {}", res.information));
                }
                for i in 0..length {
                    let at = offset + i;
                    if self.known[at] && res.output[i] != self.shadow[at] {
                        return Err(format!(
                            "a read of {length} at {offset} differs at byte {i}"
                        ));
                    }
                }
            }
            Transfer::Read { .. } => {}
            Transfer::SelfTest if status == NtStatus::SUCCESS => {
                if res.information != size_of::<ioctl::SelfTestReport>() {
                    return Err(format!("a self-test returned {} bytes", res.information));
                }
            }
            Transfer::SelfTest => {}
        }
        Ok(())
    }

    /// The device buffer holds what the accepted writes put there.
    fn check_buffer(&mut self, what: &str) -> Result<(), String> {
        if self.sim.crash().is_some() {
            return Ok(()); // the next call reports it
        }
        let now = self.sim.device_buffer();
        let wrong = (0..now.len()).find(|&i| self.known[i] && now[i] != self.shadow[i]);
        match wrong {
            Some(i) => Err(format!("device buffer byte {i} wrong {what}")),
            None => Ok(()),
        }
    }

    fn submit_some(&mut self, lo: u64, hi: u64) -> Result<Vec<Pending>, String> {
        let mut pending = Vec::new();
        for _ in 0..self.r.range(lo, hi) {
            let t = self.any_transfer();
            pending.push(self.submit_on(FileId::default(), t, false)?);
        }
        Ok(pending)
    }

    fn run_for_us(&mut self, max_us: u64) -> Result<(), String> {
        let d = Duration::from_micros(self.r.below(max_us));
        self.sim.run_for(d).map_err(|e| wait_err("run", e))
    }

    fn pnp(&mut self, minor: PnpMinor) -> Result<NtStatus, String> {
        self.sim
            .pnp_irp(minor)
            .map_err(|e| wait_err(&format!("{minor:?}"), e))
    }

    fn expect_pnp(&mut self, minor: PnpMinor) -> Result<(), String> {
        match self.pnp(minor)? {
            NtStatus::SUCCESS => Ok(()),
            other => Err(format!("{minor:?} ended {other}")),
        }
    }

    // ---- the other operations ------------------------------------------------

    fn selftest(&mut self) -> Result<(), String> {
        self.cov.add("op:selftest");
        let tolerant = self.device_may_fail || self.maps_may_fail;
        match self.sim.selftest() {
            Ok(report) => {
                let must = selftest_steps::IDENTIFICATION
                    | selftest_steps::LIVENESS
                    | selftest_steps::FACTORIAL_POLLED;
                if report.all_passed()
                    || tolerant
                    || (self.lossy_interrupts && report.passed & must == must)
                {
                    Ok(())
                } else {
                    Err(format!("selftest failed: {report:?}"))
                }
            }
            Err(e) if tolerant && e.status().is_some() => Ok(()),
            Err(e) => Err(wait_err("selftest", e)),
        }
    }

    /// The device's DMA hung for good: no start may put it back on the bus.
    fn wedged(&mut self) -> bool {
        self.sim.machine().sys().with(|k| {
            k.device_faults
                .hang_dma
                .is_some_and(|n| k.device_faults.dma_commands >= n)
        })
    }

    /// `IRP_MN_START_DEVICE` after a stop: it succeeds, or — the device
    /// wedged by a DMA that never completes — fails with a device error,
    /// and the removal follows with `pending` failed, never lost. True when
    /// the device is gone.
    fn restart(&mut self, pending: Vec<Pending>) -> Result<bool, String> {
        match self.pnp(PnpMinor::StartDevice)? {
            NtStatus::SUCCESS => {
                self.settle_all(pending, Allowed::default())?;
                Ok(false)
            }
            NtStatus::DEVICE_HARDWARE_ERROR if self.wedged() => {
                self.cov.add("start:refused-wedged-device");
                self.sim
                    .remove()
                    .map_err(|e| wait_err("removal after a failed start", e))?;
                let allowed = Allowed {
                    delete_pending: true,
                    device_error: true,
                    ..Allowed::default()
                };
                self.settle_all(pending, allowed)?;
                Ok(true)
            }
            other => Err(format!("a restart ended {other}")),
        }
    }

    /// Query-stop, then stop and restart (or the stop cancelled), with I/O
    /// in flight and more sent while stopped: nothing fails.
    fn rebalance(&mut self) -> Result<bool, String> {
        self.cov.add("op:rebalance");
        let mut pending = self.submit_some(1, 3)?;
        self.run_for_us(250_000)?;
        self.expect_pnp(PnpMinor::QueryStopDevice)?;
        if self.r.chance(25) {
            self.cov.add("pnp:cancel-stop");
            self.expect_pnp(PnpMinor::CancelStopDevice)?;
        } else {
            self.expect_pnp(PnpMinor::StopDevice)?;
            if self.r.chance(50) {
                pending.extend(self.submit_some(1, 2)?);
            }
            self.run_for_us(50_000)?;
            return self.restart(pending);
        }
        self.settle_all(pending, Allowed::default())?;
        Ok(false)
    }

    /// A system sleep and wake with I/O in flight and queued.
    fn sleep(&mut self) -> Result<(), String> {
        self.cov.add("op:sleep");
        let pending = self.submit_some(0, 4)?;
        self.run_for_us(200_000)?;
        match self.sim.sleep().map_err(|e| wait_err("sleep", e))? {
            NtStatus::SUCCESS => {}
            other => return Err(format!("sleep ended {other}")),
        }
        self.settle_all(pending, Allowed::default())
    }

    /// Query-remove, then the removal or its cancel, with I/O pending.
    fn orderly_removal(&mut self) -> Result<bool, String> {
        self.cov.add("op:remove");
        let pending = self.submit_some(1, 4)?;
        self.run_for_us(200_000)?;
        self.expect_pnp(PnpMinor::QueryRemoveDevice)?;
        let removing = !self.r.chance(30);
        if removing {
            self.sim.remove().map_err(|e| wait_err("removal", e))?;
        } else {
            self.cov.add("pnp:cancel-remove");
            self.expect_pnp(PnpMinor::CancelRemoveDevice)?;
        }
        let allowed = Allowed {
            delete_pending: removing,
            ..Allowed::default()
        };
        self.settle_all(pending, allowed)?;
        Ok(removing)
    }

    /// The device disappears with a read in flight.
    fn surprise_removal(&mut self) -> Result<bool, String> {
        self.cov.add("op:surprise-removal");
        let pending = self.submit_some(1, 3)?;
        self.run_for_us(250_000)?;
        self.sim
            .surprise_remove()
            .map_err(|e| wait_err("surprise removal", e))?;
        let allowed = Allowed {
            device_removed: true,
            delete_pending: true,
            ..Allowed::default()
        };
        self.settle_all(pending, allowed)?;
        Ok(true)
    }

    /// A handle closed with requests of it queued: those may be cancelled,
    /// the requests of another handle never are.
    fn cleanup_with_requests_queued(&mut self) -> Result<(), String> {
        self.cov.add("op:cleanup");
        self.files += 1;
        let file = FileId(self.files);
        let mut pending = Vec::new();
        for _ in 0..self.r.range(2, 6) {
            let t = self.any_transfer();
            // Requests of the default handle are not cancellable here.
            let mine = self.r.chance(70);
            let on = if mine { file } else { FileId::default() };
            pending.push(self.submit_on(on, t, mine)?);
        }
        self.run_for_us(250_000)?;
        match self.sim.cleanup(file).map_err(|e| wait_err("cleanup", e))? {
            NtStatus::SUCCESS => {}
            other => return Err(format!("cleanup ended {other}")),
        }
        let allowed = Allowed {
            cancelled: true,
            ..Allowed::default()
        };
        self.settle_all(pending, allowed)
    }

    /// Spurious interrupts and (INTx) another device's on the shared line
    /// while transfers run: the ISR claims none of them, nothing changes.
    fn interrupt_noise(&mut self) -> Result<(), String> {
        self.cov.add("op:interrupt-noise");
        for _ in 0..self.r.range(1, 5) {
            self.cov.add("interrupt:spurious");
            let d = Duration::from_micros(self.r.below(300_000));
            self.sim.spurious_interrupt_after(d);
        }
        if !self.msi {
            for _ in 0..self.r.range(1, 5) {
                self.cov.add("interrupt:shared-line");
                let d = Duration::from_micros(self.r.below(300_000));
                self.sim.foreign_interrupt_after(d);
            }
        }
        let transfers = vec![(self.write_transfer(), None), (self.read_transfer(), None)];
        self.batch(transfers, Allowed::default())
    }

    /// Bus Master Enable cleared behind the driver with writes in flight:
    /// each succeeded (it finished before) or failed with a device error —
    /// never a success with bytes that did not move. A restart brings the
    /// device back.
    fn bus_master_cleared(&mut self) -> Result<bool, String> {
        self.cov.add("op:bus-master-cleared");
        let mut pending = Vec::new();
        for _ in 0..self.r.range(1, 3) {
            let t = self.write_transfer();
            pending.push(self.submit_on(FileId::default(), t, false)?);
        }
        self.run_for_us(250_000)?;
        self.sim.clear_bus_master_behind_the_driver();
        // One more that starts with the device off the bus.
        let t = self.any_transfer();
        pending.push(self.submit_on(FileId::default(), t, false)?);
        let allowed = Allowed {
            device_error: true,
            ..Allowed::default()
        };
        self.settle_all(pending, allowed)?;
        self.check_buffer("after bus mastering was cleared")?;
        // The PnP manager restarts the device the driver reported failed.
        self.expect_pnp(PnpMinor::QueryStopDevice)?;
        self.expect_pnp(PnpMinor::StopDevice)?;
        if self.restart(Vec::new())? {
            return Ok(true);
        }
        let t = self.write_transfer();
        self.batch(vec![(t, None)], Allowed::default())?;
        Ok(false)
    }

    /// A restart finds a wrong ID register: the start fails with a device
    /// error, and the removal that follows leaves nothing behind.
    fn wrong_id_at_restart(&mut self) -> Result<bool, String> {
        self.cov.add("op:wrong-id-at-restart");
        self.expect_pnp(PnpMinor::QueryStopDevice)?;
        self.expect_pnp(PnpMinor::StopDevice)?;
        self.sim.corrupt_id_register_reads(1);
        match self.pnp(PnpMinor::StartDevice)? {
            NtStatus::DEVICE_HARDWARE_ERROR => {}
            other => return Err(format!("a start with a wrong ID register ended {other}")),
        }
        self.sim
            .remove()
            .map_err(|e| wait_err("removal after a failed start", e))?;
        Ok(true)
    }
}

fn header(device_offset: u32) -> Vec<u8> {
    DmaHeader {
        device_offset,
        flags: 0,
    }
    .as_bytes()
    .to_vec()
}
