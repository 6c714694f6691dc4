//! Virtual time and the event queue of the deterministic scheduler.

use std::collections::BTreeMap;

use crate::hal::{AdapterId, MapRegisterBase};
use crate::io::IrpId;

/// Nanoseconds of virtual time.
pub type Nanos = u64;

/// One millisecond of virtual time.
pub const MS: Nanos = 1_000_000;
/// One microsecond of virtual time.
pub const US: Nanos = 1_000;

/// The DPC objects of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DpcId {
    /// The device's DpcForIsr (`IoInitializeDpcRequest`).
    ForIsr,
    /// The watchdog timer's DPC.
    Timer,
    /// A DPC object of the driver's own (`KeInitializeDpc`), by number.
    Driver(u32),
}

/// Something that happens at a moment of virtual time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The edu device's 100 ms DMA timer.
    DmaTimer,
    /// The edu factorial thread finishes.
    FactorialDone,
    /// The interrupt controller delivers the device's interrupt.
    Interrupt,
    /// A queued DPC runs.
    Dpc(DpcId),
    /// The periodic timer expires (queues its DPC).
    TimerExpired,
    /// The HAL runs an execution routine.
    ExecutionRoutine(AdapterId, MapRegisterBase),
    /// Another device releases the map registers it held.
    ContentionEnds(AdapterId),
    /// A deferred StartIo call.
    StartIo(IrpId),
    /// A user thread calls `IoCancelIrp`.
    Cancel(IrpId),
    /// A thread's wait times out (`KeDelayExecutionThread`): time reaches it.
    Wake,
    /// Another device on the shared INTx line asserts it.
    ForeignInterrupt,
    /// The interrupt controller delivers our vector with nothing raised.
    SpuriousInterrupt,
    /// The power manager sends a power IRP a driver requested
    /// (`PoRequestPowerIrp`): the IRP block's address.
    PowerIrp(usize),
}

impl Event {
    /// Lower runs first among events due at the same time: interrupts
    /// preempt DPCs, DPCs run before threads.
    fn priority(&self) -> u8 {
        match self {
            Event::DmaTimer
            | Event::FactorialDone
            | Event::ForeignInterrupt
            | Event::SpuriousInterrupt => 0,
            Event::Interrupt => 1,
            Event::TimerExpired => 2,
            Event::Dpc(_) | Event::ExecutionRoutine(..) | Event::StartIo(_) => 3,
            Event::ContentionEnds(_) => 4,
            Event::Cancel(_) | Event::Wake | Event::PowerIrp(_) => 5,
        }
    }

    /// True for events the device model handles alone (no driver code).
    pub fn device_only(&self) -> bool {
        matches!(self, Event::DmaTimer | Event::FactorialDone)
    }
}

/// An event with the CPU it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scheduled {
    /// When.
    pub at: Nanos,
    /// Which processor.
    pub cpu: usize,
    /// What.
    pub event: Event,
}

/// The event queue.
#[derive(Debug, Default)]
pub struct Scheduler {
    now: Nanos,
    seq: u64,
    queue: BTreeMap<(Nanos, u8, u64), (usize, Event)>,
}

impl Scheduler {
    /// An empty queue at time 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Current virtual time.
    pub fn now(&self) -> Nanos {
        self.now
    }

    /// Move time forward (never back).
    pub fn advance_to(&mut self, t: Nanos) {
        self.now = self.now.max(t);
    }

    /// Schedule `event` on `cpu` after `delay`.
    pub fn schedule(&mut self, delay: Nanos, cpu: usize, event: Event) {
        self.seq += 1;
        let key = (self.now.saturating_add(delay), event.priority(), self.seq);
        self.queue.insert(key, (cpu, event));
    }

    /// Take the next event.
    pub fn pop(&mut self) -> Option<Scheduled> {
        let ((at, _, _), (cpu, event)) = self.queue.pop_first()?;
        Some(Scheduled { at, cpu, event })
    }

    /// Take the next device-only event due by `until`.
    pub fn pop_device_due(&mut self, until: Nanos) -> Option<Scheduled> {
        let key = *self
            .queue
            .iter()
            .find(|((at, _, _), (_, e))| *at <= until && e.device_only())?
            .0;
        let (cpu, event) = self.queue.remove(&key)?;
        Some(Scheduled {
            at: key.0,
            cpu,
            event,
        })
    }

    /// Time of the next event.
    pub fn next_time(&self) -> Option<Nanos> {
        self.queue.keys().next().map(|k| k.0)
    }

    /// True when an equal event is queued.
    pub fn contains(&self, event: &Event) -> bool {
        self.queue.values().any(|(_, e)| e == event)
    }

    /// Remove every queued event matching `pred`; returns how many.
    pub fn remove_where(&mut self, pred: impl Fn(&Event) -> bool) -> usize {
        let keys: Vec<_> = self
            .queue
            .iter()
            .filter(|(_, (_, e))| pred(e))
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            self.queue.remove(k);
        }
        keys.len()
    }

    /// Number of queued events.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// True when only the periodic timer (and nothing else) is queued.
    pub fn only_timer_left(&self) -> bool {
        self.queue
            .values()
            .all(|(_, e)| matches!(e, Event::TimerExpired | Event::Dpc(DpcId::Timer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_by_time_then_priority_then_fifo() {
        let mut s = Scheduler::new();
        s.schedule(10, 0, Event::Dpc(DpcId::ForIsr));
        s.schedule(10, 1, Event::Interrupt);
        s.schedule(5, 0, Event::Cancel(IrpId(1)));
        s.schedule(10, 0, Event::Dpc(DpcId::Timer));
        assert_eq!(s.pop().unwrap().event, Event::Cancel(IrpId(1)));
        assert_eq!(s.pop().unwrap().event, Event::Interrupt);
        assert_eq!(s.pop().unwrap().event, Event::Dpc(DpcId::ForIsr));
        assert_eq!(s.pop().unwrap().event, Event::Dpc(DpcId::Timer));
        assert!(s.pop().is_none());
    }
}
