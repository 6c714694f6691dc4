//! The dispatch fuzzer's one interpretation of an input: a [`Scenario`]
//! (from any bytes, through `arbitrary`) run on a [`SimMachine`] — `src/`
//! itself — with every invariant checked. The `cargo fuzz` target
//! (`fuzz/fuzz_targets/dispatch.rs`) and the stable proptest version
//! (`tests/fuzz_dispatch.rs`) both call [`run_bytes`], so they cannot drift.
//!
//! Invariants, after every operation and at the end:
//! - every call ends in a status of its request kind's documented set
//!   ([`allowed`]); a request the core's validation refuses gets exactly the
//!   core's status, with `Information` 0;
//! - an accepted request returns exactly its bytes: `Information` is the
//!   contract's, a read returns what the device holds (a shadow of the
//!   device buffer follows every accepted write), `DeviceInfo` and `Stats`
//!   are field values, never pool content ([`crate::machine::iomgr::POOL_CANARY`]);
//! - the verifier stays silent, nothing crashes or hangs, and
//!   [`SimMachine::finish`]'s leak check passes.

mod check;
mod input;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use edudma_core::NtStatus;
use edudma_core::ioctl::{self, ControlRequest, Direction};

use crate::io::{FileId, IrpId};
use crate::irql::Irql;
use crate::machine::iomgr::{Submitted, UserBuffer, UserCall};
use crate::mdl::BufferLayout;
use crate::sched::MS;
use crate::sim::{DmaStrategy, SimConfig, SimMachine};
use crate::wdm::PnpMinor;

pub use check::allowed;
pub use input::{
    Buf, Code, Event, Input, Len, MAX_COMMIT, MAX_OPS, MachineChoice, Offset, Op, Scenario,
    scenario_of,
};

use check::{InFlight, Life, Predicted, Shadow, predict_file, prefix};
use input::{CODES, input_as_driver_sees, offset_value, user_buffer};

/// What a run did, for the fuzzer's and the test's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Operations run.
    pub ops: usize,
    /// Requests the driver got.
    pub sent: usize,
    /// Calls the I/O manager refused itself.
    pub refused: usize,
    /// Requests completed with success.
    pub succeeded: usize,
    /// Requests the core's validation refused.
    pub rejected: usize,
    /// Requests completed as cancelled.
    pub cancelled: usize,
    /// Requests sent on a handle after a surprise removal.
    pub after_removal: usize,
}

/// Decode `data` into a scenario and run it. `Err` names the broken invariant.
pub fn run_bytes(data: &[u8]) -> Result<Outcome, String> {
    run(&scenario_of(data))
}

struct Run {
    sim: SimMachine,
    window: u32,
    strategy: DmaStrategy,
    msi: bool,
    map_registers: u32,
    shadow: Shadow,
    in_flight: BTreeMap<IrpId, InFlight>,
    /// Generation of each handle: a closed handle's next use is a new file object.
    generation: [u64; 4],
    opened: Vec<u64>,
    stopped: bool,
    removed: bool,
    outcome: Outcome,
    log: String,
}

/// Run a scenario. `Err` names the broken invariant and the operations run.
pub fn run(scenario: &Scenario) -> Result<Outcome, String> {
    run_with(scenario, |_| {})
}

/// [`run`] on a machine `tweak` changed (the tests that show the checks
/// catch a misbehaving device use it).
pub fn run_with(
    scenario: &Scenario,
    tweak: impl FnOnce(&mut SimConfig),
) -> Result<Outcome, String> {
    let m = &scenario.machine;
    let strategy = match m.strategy % 4 {
        0 => DmaStrategy::V3Packet,
        1 => DmaStrategy::V1Packet,
        2 => DmaStrategy::SgList,
        _ => DmaStrategy::CommonBuffer,
    };
    let config = SimConfig {
        seed: u64::from(m.seed),
        window: if m.full_window { 4096 } else { 4095 },
        qemu_fixed_range_check: m.full_window,
        dma_strategy: strategy,
        msi: m.msi,
        allocation: if m.async_only {
            crate::sim::Allocation::Async
        } else {
            crate::sim::Allocation::Sync
        },
        map_registers: if m.one_map_register { 1 } else { 16 },
        cpus: if m.two_cpus { 2 } else { 1 },
        preempt_percent: u32::from(m.preempt % 32),
        timeout: Duration::from_secs(20),
        ..SimConfig::default()
    };
    let mut config = config;
    tweak(&mut config);
    let sim = SimMachine::new(config.clone()).map_err(|e| format!("boot: {e}"))?;
    let shadow = Shadow::new(&sim.device_buffer());
    let mut run = Run {
        sim,
        window: config.window,
        strategy,
        msi: config.msi,
        map_registers: config.map_registers,
        shadow,
        in_flight: BTreeMap::new(),
        generation: [0; 4],
        opened: Vec::new(),
        stopped: false,
        removed: false,
        outcome: Outcome::default(),
        log: String::new(),
    };
    let fail = |e: String, log: &str| format!("{e}\n{config:?}\noperations:\n{log}");
    if let Err(e) = run.all(&scenario.ops) {
        return Err(fail(e, &run.log));
    }
    let Run {
        sim, log, outcome, ..
    } = run;
    match sim.finish() {
        Ok(_) => Ok(outcome),
        Err(e) => Err(fail(format!("finish (removal, leak check): {e}"), &log)),
    }
}

impl Run {
    fn all(&mut self, ops: &[Op]) -> Result<(), String> {
        for (i, op) in ops.iter().take(MAX_OPS).enumerate() {
            let _ = writeln!(self.log, "  {i}: {op:?}");
            self.op(i, *op).map_err(|e| format!("op {i}: {e}"))?;
            self.quiet().map_err(|e| format!("op {i}: {e}"))?;
            self.outcome.ops += 1;
        }
        if self.stopped {
            self.event(Event::Start)?;
        }
        self.settle()?;
        self.check_device_buffer()
    }

    fn quiet(&self) -> Result<(), String> {
        if let Some(c) = self.sim.crash() {
            return Err(format!("crash: {c}"));
        }
        let report = self.sim.verifier_report();
        if let Some(v) = report.violations.first() {
            return Err(format!("verifier: {v:?}"));
        }
        Ok(())
    }

    /// The file object of `handle`, opened first if it is new; `None` once
    /// the device is gone and the handle was never opened (its interface
    /// is disabled: no new open reaches the driver).
    fn file(&mut self, handle: u8) -> Result<Option<FileId>, String> {
        let h = usize::from(handle % 4);
        let id = 1 + h as u64 * 1000 + self.generation[h];
        if !self.opened.contains(&id) {
            if self.removed {
                return Ok(None);
            }
            self.opened.push(id);
            let status = self.sim.machine().run(0, Irql::Passive, move |d, sys| {
                d.create(sys, FileId(id), "")
            });
            if status != Some(NtStatus::SUCCESS) {
                return Err(format!("open of the device: {status:?}"));
            }
        }
        Ok(Some(FileId(id)))
    }

    fn op(&mut self, index: usize, op: Op) -> Result<(), String> {
        let w = self.window;
        match op {
            Op::Control {
                file,
                code,
                input,
                output,
            } => {
                let code = match code {
                    Code::Known(n) => CODES[usize::from(n) % CODES.len()],
                    Code::OtherMethod(n, m) => {
                        let c = CODES[usize::from(n) % CODES.len()];
                        let other = (ioctl::method_of(c) + 1 + u32::from(m % 3)) % 4;
                        (c & !3) | other
                    }
                    Code::Any(c) => c,
                };
                let input = match input {
                    Input::None => UserBuffer::null(0),
                    Input::Header(offset, bad_flags) => {
                        let mut h = Vec::with_capacity(8);
                        h.extend_from_slice(&(offset_value(offset, w) as u32).to_le_bytes());
                        h.extend_from_slice(&u32::from(bad_flags).to_le_bytes());
                        UserBuffer::of(&h)
                    }
                    Input::Raw(b) => user_buffer(b, w),
                };
                let output = user_buffer(output, w);
                let seen = input_as_driver_sees(code, &input);
                let method = ioctl::method_of(code);
                let has_mdl = (method == ioctl::METHOD_IN_DIRECT
                    || method == ioctl::METHOD_OUT_DIRECT)
                    && output.present
                    && output.length > 0;
                let predicted =
                    match ioctl::validate_control(code, &seen, output.length, has_mdl, w) {
                        Ok(ControlRequest::GetInfo) => Predicted::Info,
                        Ok(ControlRequest::GetStats) => Predicted::Stats,
                        Ok(ControlRequest::ResetStats) => Predicted::Reset,
                        Ok(ControlRequest::SelfTest) => Predicted::SelfTest,
                        Ok(ControlRequest::Dma(d)) => Predicted::Dma {
                            direction: d.direction,
                            offset: d.device_offset,
                            length: d.length,
                            data: if d.direction == Direction::ToDevice {
                                prefix(&output.contents, d.length)
                            } else {
                                Vec::new()
                            },
                        },
                        Err(e) => Predicted::Rejected(e.status()),
                    };
                let call = UserCall::DeviceIoControl {
                    code,
                    input,
                    output,
                };
                self.send(index, file, call, predicted)
            }
            Op::Read {
                file,
                offset,
                buffer,
            } => {
                let offset = offset_value(offset, w);
                let buffer = user_buffer(buffer, w);
                let predicted = predict_file(
                    ioctl::validate_read(offset, buffer.length, buffer.length > 0, w),
                    &[],
                );
                self.send(
                    index,
                    file,
                    UserCall::ReadFile { offset, buffer },
                    predicted,
                )
            }
            Op::Write {
                file,
                offset,
                buffer,
            } => {
                let offset = offset_value(offset, w);
                let buffer = user_buffer(buffer, w);
                let predicted = predict_file(
                    ioctl::validate_write(offset, buffer.length, buffer.length > 0, w),
                    &buffer.contents,
                );
                self.send(
                    index,
                    file,
                    UserCall::WriteFile { offset, buffer },
                    predicted,
                )
            }
            Op::Transfer {
                file,
                write,
                ioctl,
                offset,
                length,
                fill,
            } => {
                let offset = u32::from(offset) % w;
                let length = 1 + u32::from(length) % (w - offset);
                let (at, len) = (Offset::Near(offset as u16), Len::Small(length as u16));
                let buffer = Buf::Valid(len, fill);
                let op = match (ioctl, write) {
                    (true, _) => Op::Control {
                        file,
                        code: Code::Known(if write { 4 } else { 5 }),
                        input: Input::Header(at, false),
                        output: buffer,
                    },
                    (false, true) => Op::Write {
                        file,
                        offset: at,
                        buffer,
                    },
                    (false, false) => Op::Read {
                        file,
                        offset: at,
                        buffer,
                    },
                };
                self.op(index, op)
            }
            Op::Cancel(n) => {
                if let Some(irp) = self.nth_incomplete(n) {
                    self.mark(irp);
                    self.sim
                        .machine()
                        .cancel(irp)
                        .map_err(|c| format!("cancel: {c}"))?;
                }
                self.reap()
            }
            Op::CancelLater(n, ms) => {
                if let Some(irp) = self.nth_incomplete(n) {
                    self.mark(irp);
                    self.sim
                        .cancel_after(irp, Duration::from_millis(u64::from(ms)));
                }
                Ok(())
            }
            Op::Close(handle) => {
                let h = usize::from(handle % 4);
                let id = 1 + h as u64 * 1000 + self.generation[h];
                if self.opened.contains(&id) {
                    for f in self.in_flight.values_mut() {
                        if f.file == id {
                            f.life.cancel_asked = true;
                        }
                    }
                    let status = self
                        .sim
                        .machine()
                        .cleanup(FileId(id))
                        .map_err(|c| format!("cleanup: {c}"))?;
                    if status != NtStatus::SUCCESS {
                        return Err(format!("IRP_MJ_CLEANUP: {status}"));
                    }
                    self.generation[h] += 1;
                }
                self.reap()
            }
            Op::OpenBelow => {
                let id = 900_000 + index as u64;
                let status = self.sim.machine().run(0, Irql::Passive, move |d, sys| {
                    d.create(sys, FileId(id), "\\x")
                });
                if !self.removed && status != Some(NtStatus::ACCESS_DENIED) {
                    return Err(format!("a namespace open got {status:?}"));
                }
                Ok(())
            }
            Op::Settle => {
                if !self.stopped {
                    self.settle()?;
                    self.check_device_buffer()?;
                }
                Ok(())
            }
            Op::RunFor(ms) => {
                self.sim
                    .run_for(Duration::from_millis(u64::from(ms) * 4))
                    .map_err(|e| format!("run: {e}"))?;
                self.reap()
            }
            Op::Pnp(event) => {
                for f in self.in_flight.values_mut() {
                    f.life.power_or_pnp = true;
                }
                self.event(event)?;
                self.reap()
            }
        }
    }

    fn event(&mut self, event: Event) -> Result<(), String> {
        let _ = writeln!(self.log, "     (event {event:?})");
        let expect_success = |what: &str, r: Result<NtStatus, crate::SimError>| match r {
            Ok(s) if s == NtStatus::SUCCESS => Ok(()),
            other => Err(format!("{what}: {other:?}")),
        };
        match event {
            _ if self.removed => Ok(()),
            Event::Stop if !self.stopped => {
                let query = self
                    .sim
                    .pnp_irp(PnpMinor::QueryStopDevice)
                    .map_err(|e| format!("query stop: {e}"))?;
                if query.is_success() {
                    expect_success("stop", self.sim.stop_device())?;
                    self.stopped = true;
                    Ok(())
                } else {
                    expect_success("cancel stop", self.sim.pnp_irp(PnpMinor::CancelStopDevice))
                }
            }
            Event::Start if self.stopped => {
                expect_success("start", self.sim.start_device())?;
                self.stopped = false;
                Ok(())
            }
            Event::QueryStopCancelled | Event::QueryRemoveCancelled if !self.stopped => {
                let (query, cancel) = if matches!(event, Event::QueryStopCancelled) {
                    (PnpMinor::QueryStopDevice, PnpMinor::CancelStopDevice)
                } else {
                    (PnpMinor::QueryRemoveDevice, PnpMinor::CancelRemoveDevice)
                };
                let _ = self
                    .sim
                    .pnp_irp(query)
                    .map_err(|e| format!("{query:?}: {e}"))?;
                expect_success("cancel", self.sim.pnp_irp(cancel))
            }
            Event::Sleep if !self.stopped => {
                let s = self.sim.sleep().map_err(|e| format!("sleep: {e}"))?;
                if !s.is_success() {
                    return Err(format!("sleep: {s}"));
                }
                Ok(())
            }
            Event::SurpriseRemoval => {
                expect_success("surprise removal", self.sim.surprise_remove())?;
                self.removed = true;
                for f in self.in_flight.values_mut() {
                    f.life.removed = true;
                }
                Ok(())
            }
            // Not what the PnP manager sends in this state.
            _ => Ok(()),
        }
    }

    fn nth_incomplete(&mut self, n: u8) -> Option<IrpId> {
        let live: Vec<IrpId> = self
            .in_flight
            .keys()
            .copied()
            .filter(|id| !self.sim.machine().is_complete(*id))
            .collect();
        (!live.is_empty()).then(|| live[usize::from(n) % live.len()])
    }

    fn mark(&mut self, irp: IrpId) {
        if let Some(f) = self.in_flight.get_mut(&irp) {
            f.life.cancel_asked = true;
        }
    }

    fn send(
        &mut self,
        index: usize,
        handle: u8,
        call: UserCall,
        predicted: Predicted,
    ) -> Result<(), String> {
        // A handle opened before a surprise removal still sends requests.
        let Some(file) = self.file(handle)? else {
            return Ok(());
        };
        let layout = BufferLayout {
            byte_offset: Some(u32::from(handle) * 1237 + index as u32 * 509),
            ..BufferLayout::default()
        };
        let submitted = self
            .sim
            .machine()
            .send_user(file, &call, &layout)
            .map_err(|c| format!("send: {c}"))?;
        match submitted {
            Submitted::Refused(_) => self.outcome.refused += 1,
            Submitted::Sent(irp) => {
                self.outcome.sent += 1;
                self.outcome.after_removal += usize::from(self.removed);
                let _ = writeln!(self.log, "     -> {irp:?}, predicted {predicted:?}");
                self.in_flight.insert(
                    irp,
                    InFlight {
                        op: index,
                        file: file.0,
                        predicted,
                        life: Life {
                            removed: self.removed,
                            ..Life::default()
                        },
                    },
                );
            }
        }
        self.reap()
    }

    /// Wait for every request in flight.
    fn settle(&mut self) -> Result<(), String> {
        let ids: Vec<IrpId> = self.in_flight.keys().copied().collect();
        self.sim
            .machine()
            .run_until(|m| ids.iter().all(|id| m.is_complete(*id)), 60_000 * MS)
            .map_err(|c| format!("settle: {c}"))?;
        self.reap()
    }

    /// Check and collect every completed request, in completion order (the
    /// order the device ran them: StartIo runs one at a time).
    fn reap(&mut self) -> Result<(), String> {
        let mut done: Vec<(u64, IrpId)> = self.sim.machine().sys().with(|k| {
            self.in_flight
                .keys()
                .filter_map(|id| {
                    let i = k.irps.get(*id)?;
                    i.completed.then(|| (i.completed_at.unwrap_or(0), *id))
                })
                .collect()
        });
        done.sort();
        for (_, id) in done {
            let Some(f) = self.in_flight.remove(&id) else {
                continue;
            };
            let major = self
                .sim
                .machine()
                .sys()
                .with(|k| k.irps.get(id).map(|i| i.major));
            let Some(result) = self.sim.machine().collect(id) else {
                return Err(format!("{id:?} completed but not collectable"));
            };
            let major = major.ok_or("no major")?;
            self.check(&f, &major, result)
                .map_err(|e| format!("request of op {} ({id:?}): {e}", f.op))?;
        }
        Ok(())
    }
}
