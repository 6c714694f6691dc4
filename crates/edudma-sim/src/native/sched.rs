//! Truly concurrent CPUs, reproducibly: every routine of a native driver
//! (an *activity*) runs on an OS thread of its own, and a baton lets exactly
//! one of them — or the controller, the thread that called the machine —
//! run at a time. Who gets the baton is decided by a seeded RNG, at the
//! points where the driver calls into the kernel, the HAL or a register
//! (`yield_point`), so one seed replays one interleaving exactly.
//!
//! Each simulated CPU has a stack of activities (a thread, a DPC that
//! preempted it, the ISR that preempted that): only the top one can run, and
//! a new activity is placed on a CPU only when the CPU's IRQL is below the
//! activity's (an interrupt below DIRQL, a DPC below DISPATCH_LEVEL). A
//! spin lock held by another activity makes the acquirer spin: it gets no
//! baton until the holder releases the lock. A thread that waits
//! (`KeDelayExecutionThread`, `KeWaitForSingleObject`, a remove lock,
//! `KeFlushQueuedDpcs`) leaves its CPU until its condition holds.
//!
//! Why not `shuttle`: shuttle runs a whole test inside its own executor and
//! schedules only at its own synchronisation primitives, while here the
//! machine must be driven call by call from ordinary code (tests,
//! `edudmactl --sim`, the HIL's conformance run) and the switch points are
//! the kernel exports the driver calls, which no crate knows about. What is
//! needed — a seeded choice at those points between a handful of parked
//! threads — is this one small file.

use std::any::Any;
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, MutexGuard};
use std::thread;

use crate::irql::{Irql, SpinLock};
use crate::kernel::Crash;
use crate::rng::SimRng;
use crate::sched::{Event, Nanos, US};
use crate::verifier::Violation;

use super::Native;

/// An activity: one routine of the driver running on a simulated CPU.
pub type ActId = u64;

/// What a blocked thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Virtual time reaches this.
    Until(Nanos),
    /// The `LONG` at this address becomes non-zero (a `KEVENT`'s `SignalState`).
    NonZero(usize),
    /// The `LONG` at this address becomes zero (a remove lock's `IoCount`).
    Zero(usize),
    /// No DPC queued or running (`KeFlushQueuedDpcs`).
    DpcsFlushed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Created or woken, waiting for the baton.
    Ready,
    /// Has the baton.
    Running,
    /// Gave the baton up at a switch point.
    Preempted,
    /// Spins on the spin lock at this address.
    Spinning(usize),
    /// Waits, off its CPU.
    Blocked(Wait),
    /// Returned; its result waits for the controller.
    Finished,
    /// Stopped for good after a bug check (never resumed, never unwound).
    Parked,
}

struct Activity {
    cpu: usize,
    irql: Irql,
    dpc: bool,
    placed: bool,
    /// The CPU's IRQL before this activity was placed on it.
    saved_irql: Irql,
    /// Spin locks the CPU held when this activity was placed.
    locks_at_entry: usize,
    /// The CPU's IRQL floor before this activity was placed on it.
    saved_floor: Irql,
    state: State,
    result: Option<Box<dyn Any + Send>>,
    /// What the timeline calls it (only while one is recorded).
    label: Option<String>,
}

/// Counters of the scheduler.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedStats {
    /// Activities run.
    pub activities: u64,
    /// Times a routine gave the baton up at a switch point.
    pub preemptions: u64,
    /// Times a new routine was placed on a CPU above a routine of the
    /// driver that had not returned (an ISR or DPC preempting it).
    pub stacked: u64,
    /// The most CPUs that held a routine of the driver at once.
    pub max_cpus_in_driver: u64,
    /// Times an activity spun on a spin lock another one held.
    pub contended_locks: u64,
    /// Times the ISR started while another routine of the driver was
    /// mid-way on some CPU (on the same one: preempting it).
    pub interrupts_mid_routine: u64,
    /// A hash of every scheduling decision, in order: equal for two runs
    /// exactly when they interleaved the same way.
    pub fingerprint: u64,
}

impl SchedStats {
    /// Fold one decision into the fingerprint (FNV-1a over its words).
    fn record(&mut self, decision: u64) {
        if self.fingerprint == 0 {
            self.fingerprint = 0xcbf2_9ce4_8422_2325;
        }
        for byte in decision.to_le_bytes() {
            self.fingerprint = (self.fingerprint ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// A routine for a worker thread; it gets the worker's own job sender to
/// put the worker back on the idle list when it is done.
struct Job(Box<dyn FnOnce(Sender<Option<Job>>) + Send>);

pub(crate) struct Inner {
    /// Who has the baton: an activity, or the controller (`None`).
    holder: Option<ActId>,
    acts: BTreeMap<ActId, Activity>,
    next: ActId,
    stacks: Vec<Vec<ActId>>,
    rng: SimRng,
    preempt_percent: u32,
    /// Workers waiting for a routine, with the thread each one is.
    idle: Vec<(thread::ThreadId, Sender<Option<Job>>)>,
    /// The thread each party (an activity, or the controller: `None`) last
    /// waited for the baton on: a hand-over wakes that one thread only.
    waiting: BTreeMap<Option<ActId>, thread::Thread>,
    /// The routine `run_routine` left blocked.
    pub(crate) blocked_pending: Option<ActId>,
    pub(crate) stats: SchedStats,
    /// The buffers of [`Native::runnable`], kept: it runs at every turn.
    ids: Vec<ActId>,
    runnable: Vec<ActId>,
}

/// The baton and the activities.
pub struct Sched {
    m: Mutex<Inner>,
    /// Every worker thread started, to join the idle ones at the end.
    workers: Mutex<Vec<thread::JoinHandle<()>>>,
}

/// Events this close to now may start while routines are mid-way.
const HORIZON: Nanos = 20 * US;
/// Percent of controller turns that start a due event rather than resume a
/// routine.
const EVENT_PERCENT: u32 = 30;

impl Sched {
    pub(crate) fn new(cpus: usize, seed: u64, preempt_percent: u32) -> Self {
        Self {
            m: Mutex::new(Inner {
                holder: None,
                acts: BTreeMap::new(),
                next: 1,
                stacks: vec![Vec::new(); cpus.max(1)],
                rng: SimRng::new(seed ^ 0x5eed_ba70_0000_0001),
                preempt_percent: preempt_percent.min(100),
                idle: Vec::new(),
                waiting: BTreeMap::new(),
                blocked_pending: None,
                ids: Vec::new(),
                runnable: Vec::new(),
                stats: SchedStats::default(),
            }),
            workers: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until `me` holds the baton. Parking (rather than one condition
    /// variable for everyone) wakes only the party the baton goes to: with
    /// a dozen workers per machine, waking them all at every hand-over was
    /// most of a scenario's time.
    fn wait_for<'a>(
        &'a self,
        mut g: MutexGuard<'a, Inner>,
        me: Option<ActId>,
    ) -> MutexGuard<'a, Inner> {
        while g.holder != me {
            g.waiting.insert(me, thread::current());
            drop(g);
            // An unpark that came before this park makes it return at once.
            thread::park();
            g = self.lock();
        }
        g.waiting.remove(&me);
        g
    }

    /// Give the baton to `who` and wake the thread waiting for it.
    fn hand_to(g: &mut Inner, who: Option<ActId>) {
        g.holder = who;
        if let Some(t) = g.waiting.get(&who) {
            t.unpark();
        }
    }

    /// Counters.
    pub fn stats(&self) -> SchedStats {
        self.lock().stats
    }
}

impl Sched {
    /// Idle workers exit and are joined (nothing outlives the machine);
    /// parked ones (after a bug check) stay parked, never unwound. Called
    /// when the machine is dropped — a worker finishing its last activity
    /// may hold the machine a moment longer, and the machine's own drop
    /// then runs on it — and again by `Drop` for whatever came since.
    pub(crate) fn join_idle_workers(&self) {
        let idle: Vec<_> = self.lock().idle.drain(..).collect();
        for (_, s) in &idle {
            let _ = s.send(None);
        }
        let me = thread::current().id();
        let handles: Vec<_> = {
            let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
            let (joinable, rest): (Vec<_>, Vec<_>) = workers.drain(..).partition(|h| {
                let id = h.thread().id();
                id != me && idle.iter().any(|(t, _)| *t == id)
            });
            *workers = rest;
            joinable
        };
        for handle in handles {
            let _ = handle.join();
        }
    }
}

impl Drop for Sched {
    fn drop(&mut self) {
        self.join_idle_workers();
    }
}

impl Native {
    // ---- the activity's side (worker threads) ------------------------------

    /// A switch point of the running activity `me`: maybe give the baton
    /// to the controller, which may run another CPU or an interrupt first.
    pub(crate) fn yield_point(&self, me: ActId) {
        self.park_if_crashed(me);
        let mut g = self.sched.lock();
        let chance = g.preempt_percent;
        if !g.rng.chance(chance) {
            return;
        }
        g.stats.preemptions += 1;
        self.give_up(g, me, State::Preempted);
        self.park_if_crashed(me);
    }

    /// Give the baton to the controller in `state`, wait to get it back.
    fn give_up(&self, mut g: MutexGuard<'_, Inner>, me: ActId, state: State) {
        if let Some(a) = g.acts.get_mut(&me) {
            a.state = state;
        }
        Sched::hand_to(&mut g, None);
        let mut g = self.sched.wait_for(g, Some(me));
        let cpu = g.acts.get(&me).map_or(0, |a| a.cpu);
        if let Some(a) = g.acts.get_mut(&me) {
            a.state = State::Running;
        }
        drop(g);
        self.sys.with(|k| k.cpus.switch_to(cpu));
    }

    /// Block the running thread until `wait` holds.
    pub(crate) fn block(&self, me: ActId, wait: Wait) {
        if let Wait::Until(t) = wait {
            self.sys.with(|k| {
                let cpu = k.cpus.current();
                let delay = t.saturating_sub(k.sched.now());
                k.sched.schedule(delay, cpu, Event::Wake);
            });
        }
        let mut g = self.sched.lock();
        self.unplace(&mut g, me);
        self.give_up(g, me, State::Blocked(wait));
        self.park_if_crashed(me);
    }

    /// Spin until the `KSPIN_LOCK` at `lock` is free, then take it for `me`.
    /// False when `me` already holds it (a deadlock on real hardware).
    pub(crate) fn spin_acquire(&self, me: ActId, lock: usize) -> bool {
        loop {
            // SAFETY: the caller passes a live KSPIN_LOCK; only the baton
            // holder touches lock words.
            let word = unsafe { *(lock as *const usize) };
            if word == 0 {
                // SAFETY: as above.
                unsafe { *(lock as *mut usize) = me as usize };
                return true;
            }
            if word == me as usize {
                return false;
            }
            let mut g = self.sched.lock();
            g.stats.contended_locks += 1;
            self.give_up(g, me, State::Spinning(lock));
            self.park_if_crashed(me);
        }
    }

    /// After a bug check the machine is stopped: the activity never runs
    /// another instruction of the driver (and nothing unwinds through it).
    pub(crate) fn park_if_crashed(&self, me: ActId) {
        if self.sys.with(|k| k.crash().is_none()) {
            return;
        }
        let mut g = self.sched.lock();
        if let Some(a) = g.acts.get_mut(&me) {
            a.state = State::Parked;
        }
        Sched::hand_to(&mut g, None);
        drop(g);
        loop {
            thread::park();
        }
    }

    fn finish(&self, me: ActId, result: Box<dyn Any + Send>, worker: Sender<Option<Job>>) {
        let mut g = self.sched.lock();
        g.idle.push((thread::current().id(), worker));
        let (cpu, irql, saved, locks_at_entry, floor) = match g.acts.get(&me) {
            Some(a) => (a.cpu, a.irql, a.saved_irql, a.locks_at_entry, a.saved_floor),
            None => return,
        };
        self.sys.with(|k| {
            k.cpus.switch_to(cpu);
            let held: Vec<(SpinLock, Irql)> = k.cpus.cpu_mut().locks.split_off(locks_at_entry);
            if let Some((lock, _)) = held.first() {
                let v = if *lock == SpinLock::Cancel {
                    Violation::CancelSpinLockMisuse
                } else {
                    Violation::SpinLockHeldAtReturn { lock: lock.name() }
                };
                k.verifier.report(v);
            }
            let now = k.cpus.irql();
            if now != irql && held.is_empty() {
                // IrqlReturn: a routine returns at the IRQL it was called at.
                k.verifier.report(Violation::WrongIrql {
                    routine: "return of a driver routine (IrqlReturn)",
                    irql: now,
                });
            }
            k.cpus.set_irql(saved);
            k.cpus.cpu_mut().floor = floor;
        });
        g.stacks[cpu].retain(|a| *a != me);
        if g.acts.get(&me).is_some_and(|a| a.label.is_some()) {
            self.sys
                .with(|k| k.trace(|t, now| t.routine_ends(now, cpu, "returned")));
        }
        if let Some(a) = g.acts.get_mut(&me) {
            a.state = State::Finished;
            a.placed = false;
            a.result = Some(result);
        }
        Sched::hand_to(&mut g, None);
    }

    /// Take `me` off its CPU (a thread that blocks).
    fn unplace(&self, g: &mut Inner, me: ActId) {
        let Some(a) = g.acts.get_mut(&me) else { return };
        if !a.placed {
            return;
        }
        a.placed = false;
        let (cpu, saved, floor) = (a.cpu, a.saved_irql, a.saved_floor);
        if a.label.is_some() {
            self.sys
                .with(|k| k.trace(|t, now| t.routine_ends(now, cpu, "waits")));
        }
        g.stacks[cpu].retain(|x| *x != me);
        self.sys.with(|k| {
            k.cpus.switch_to(cpu);
            k.cpus.set_irql(saved);
            k.cpus.cpu_mut().floor = floor;
        });
    }

    // ---- the controller's side -----------------------------------------------

    /// Start a routine on `cpu` at `irql` (not run yet: see [`Native::drive`]).
    pub(crate) fn spawn(
        self: &std::sync::Arc<Self>,
        cpu: usize,
        irql: Irql,
        dpc: bool,
        body: Box<dyn FnOnce() -> Box<dyn Any + Send> + Send>,
    ) -> ActId {
        let label = self.sys.with(|k| {
            let t = k.trace.as_deref_mut()?;
            Some(t.next_routine.take().unwrap_or_else(|| {
                match (dpc, irql) {
                    (true, _) => "a DPC",
                    (false, Irql::Device) => "ISR",
                    (false, Irql::Passive) => "a thread",
                    _ => "a routine",
                }
                .to_string()
            }))
        });
        let mut g = self.sched.lock();
        let id = g.next;
        g.next += 1;
        let cpus = g.stacks.len();
        g.acts.insert(
            id,
            Activity {
                cpu: cpu % cpus,
                irql,
                dpc,
                placed: false,
                saved_irql: Irql::Passive,
                locks_at_entry: 0,
                saved_floor: Irql::Passive,
                state: State::Ready,
                result: None,
                label,
            },
        );
        g.stats.activities += 1;
        let native = std::sync::Arc::clone(self);
        let job = Job(Box::new(move |worker| {
            super::set_current(Some((std::sync::Arc::clone(&native), id)));
            {
                let g = native.sched.lock();
                let g = native.sched.wait_for(g, Some(id));
                drop(g);
            }
            native.park_if_crashed(id);
            let result = body();
            super::set_current(None);
            native.finish(id, result, worker);
        }));
        match g.idle.pop() {
            Some((_, worker)) => {
                if let Err(mpsc::SendError(Some(job))) = worker.send(Some(job)) {
                    drop(g);
                    self.new_worker(job);
                }
            }
            None => {
                drop(g);
                self.new_worker(job);
            }
        }
        id
    }

    fn new_worker(&self, first: Job) {
        let (tx, rx): (Sender<Option<Job>>, Receiver<Option<Job>>) = mpsc::channel();
        let spawned = thread::Builder::new()
            .name("edudma-sim cpu".into())
            .spawn(move || {
                let mut job = Some(first);
                while let Some(j) = job.take() {
                    (j.0)(tx.clone());
                    job = rx.recv().ok().flatten();
                }
            });
        if let Ok(handle) = spawned {
            self.sched
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(handle);
        } else {
            self.sys.with(|k| {
                k.faults.push(Crash::Hang(
                    "could not start a thread for a simulated CPU".into(),
                ))
            });
        }
    }

    /// Run activities and events until `target` returns (its result), is
    /// blocked with nothing else runnable, or the machine crashed (`None`).
    pub(crate) fn drive(self: &std::sync::Arc<Self>, target: ActId) -> Option<Box<dyn Any + Send>> {
        loop {
            if self.sys.with(|k| k.crash().is_some()) {
                return None;
            }
            let (now, next_event) = self.sys.with(|k| (k.sched.now(), k.sched.next_time()));
            let pick = {
                let mut g = self.sched.lock();
                self.wake_blocked(&mut g);
                match g.acts.get(&target).map(|a| a.state) {
                    Some(State::Finished) => {
                        let a = g.acts.remove(&target)?;
                        return a.result;
                    }
                    Some(State::Parked) | None => return None,
                    _ => {}
                }
                let runnable = self.runnable(&mut g);
                let target_blocked = matches!(
                    g.acts.get(&target).map(|a| a.state),
                    Some(State::Blocked(_))
                );
                if target_blocked && runnable.is_empty() {
                    g.blocked_pending = Some(target);
                    return None;
                }
                let soon = next_event.is_some_and(|t| t <= now + HORIZON);
                let pick = if runnable.is_empty() || (soon && g.rng.chance(EVENT_PERCENT)) {
                    None
                } else {
                    let i = g.rng.below(runnable.len() as u64) as usize;
                    Some(runnable[i])
                };
                g.runnable = runnable;
                pick
            };
            self.sched.lock().stats.record(match pick {
                Some(id) => id << 1,
                None => (now << 1) | 1,
            });
            match pick {
                Some(id) => self.resume(id),
                None => {
                    let mut d = super::NativeDriver(std::sync::Arc::clone(self));
                    if !crate::machine::step(&self.sys, &mut d) {
                        let what = self.describe();
                        self.sys.with(|k| {
                            k.faults.push(Crash::Hang(format!(
                                "every simulated CPU waits and nothing is scheduled: {what}"
                            )))
                        });
                        return None;
                    }
                }
            }
        }
    }

    /// What the activity `me` is, for a fault message ("a DPC at Dispatch
    /// on CPU 1").
    pub(crate) fn activity_label(&self, me: ActId) -> String {
        let g = self.sched.lock();
        match g.acts.get(&me) {
            Some(a) => {
                let kind = match (a.dpc, a.irql) {
                    (true, _) => "a DPC",
                    (false, Irql::Device) => "the ISR",
                    (false, Irql::Passive) => "a thread",
                    _ => "a routine",
                };
                format!("{kind} at {:?} on CPU {}", a.irql, a.cpu)
            }
            None => format!("activity #{me}"),
        }
    }

    fn describe(&self) -> String {
        let g = self.sched.lock();
        let v: Vec<String> = g
            .acts
            .iter()
            .map(|(id, a)| format!("#{id} on CPU {} {:?}", a.cpu, a.state))
            .collect();
        v.join(", ")
    }

    /// Blocked threads whose condition holds become ready (off-CPU).
    fn wake_blocked(&self, g: &mut Inner) {
        let (now, dpcs_queued) = self.sys.with(|k| (k.sched.now(), !k.dpc_queued.is_empty()));
        let dpc_running = g.acts.values().any(|a| {
            a.dpc && !matches!(a.state, State::Finished | State::Parked | State::Blocked(_))
        });
        for a in g.acts.values_mut() {
            let State::Blocked(w) = a.state else { continue };
            let done = match w {
                Wait::Until(t) => now >= t,
                // SAFETY: the waiting thread's object stays live while it
                // waits (on its stack or in the device extension).
                Wait::NonZero(addr) => unsafe { *(addr as *const i32) != 0 },
                // SAFETY: as above.
                Wait::Zero(addr) => unsafe { *(addr as *const i32) == 0 },
                Wait::DpcsFlushed => !dpcs_queued && !dpc_running,
            };
            if done {
                a.state = State::Ready;
            }
        }
    }

    /// Activities that can take the baton now (placing ready ones that fit),
    /// in `g.runnable`'s buffer (give it back).
    fn runnable(&self, g: &mut Inner) -> Vec<ActId> {
        let mut ids = std::mem::take(&mut g.ids);
        ids.clear();
        ids.extend(g.acts.keys().copied());
        let mut out = std::mem::take(&mut g.runnable);
        out.clear();
        for &id in &ids {
            let (state, placed, cpu) = {
                let a = &g.acts[&id];
                (a.state, a.placed, a.cpu)
            };
            match state {
                State::Ready if !placed && self.can_place(g, id) => out.push(id),
                State::Ready | State::Preempted if placed && g.stacks[cpu].last() == Some(&id) => {
                    out.push(id)
                }
                State::Spinning(lock) => {
                    // SAFETY: a live KSPIN_LOCK (the spinner holds a
                    // pointer to it); only read.
                    let free = unsafe { *(lock as *const usize) == 0 };
                    if free && g.stacks[cpu].last() == Some(&id) {
                        out.push(id);
                    }
                }
                _ => {}
            }
        }
        g.ids = ids;
        out
    }

    fn cpu_irql(&self, cpu: usize) -> Irql {
        self.sys.with(|k| {
            let cur = k.cpus.current();
            k.cpus.switch_to(cpu);
            let irql = k.cpus.irql();
            k.cpus.switch_to(cur);
            irql
        })
    }

    fn fits(&self, g: &Inner, cpu: usize, irql: Irql) -> bool {
        if g.stacks[cpu].is_empty() {
            return true;
        }
        let top = self.cpu_irql(cpu);
        top < irql || (irql == Irql::Passive && top == Irql::Passive)
    }

    fn can_place(&self, g: &Inner, id: ActId) -> bool {
        let a = &g.acts[&id];
        (0..g.stacks.len()).any(|c| self.fits(g, c, a.irql))
    }

    /// Place `id` on its CPU, or on another one where it fits.
    fn place(&self, g: &mut Inner, id: ActId) {
        let (want, irql) = (g.acts[&id].cpu, g.acts[&id].irql);
        let n = g.stacks.len();
        let cpu = if self.fits(g, want, irql) {
            want
        } else {
            let start = g.rng.below(n as u64) as usize;
            match (0..n)
                .map(|i| (start + i) % n)
                .find(|c| self.fits(g, *c, irql))
            {
                Some(c) => c,
                None => return,
            }
        };
        if g.stacks[cpu]
            .iter()
            .any(|other| g.acts[other].state != State::Finished)
        {
            g.stats.stacked += 1;
        }
        if irql == Irql::Device && g.acts.iter().any(|(other, a)| *other != id && a.placed) {
            g.stats.interrupts_mid_routine += 1;
        }
        g.stats.record((id << 8) | cpu as u64);
        g.stacks[cpu].push(id);
        if let Some(label) = g.acts[&id].label.as_deref() {
            let irql_name = format!("{irql:?}");
            self.sys
                .with(|k| k.trace(|t, now| t.routine_begins(now, cpu, label, &irql_name)));
        }
        let busy = g.stacks.iter().filter(|s| !s.is_empty()).count() as u64;
        g.stats.max_cpus_in_driver = g.stats.max_cpus_in_driver.max(busy);
        let (saved, locks, floor) = self.sys.with(|k| {
            k.cpus.switch_to(cpu);
            let saved = k.cpus.set_irql(irql);
            let floor = std::mem::replace(&mut k.cpus.cpu_mut().floor, irql);
            (saved, k.cpus.cpu().locks.len(), floor)
        });
        if let Some(a) = g.acts.get_mut(&id) {
            a.cpu = cpu;
            a.placed = true;
            a.saved_irql = saved;
            a.locks_at_entry = locks;
            a.saved_floor = floor;
        }
    }

    /// Hand the baton to `id` and wait until it comes back.
    fn resume(&self, id: ActId) {
        let mut g = self.sched.lock();
        if !g.acts[&id].placed {
            self.place(&mut g, id);
            if !g.acts[&id].placed {
                return;
            }
        }
        let cpu = g.acts[&id].cpu;
        self.sys.with(|k| k.cpus.switch_to(cpu));
        Sched::hand_to(&mut g, Some(id));
        let g = self.sched.wait_for(g, None);
        drop(g);
    }
}
