//! Where an `AllocateAdapterChannelEx` grant goes: back to the allocating
//! call, or to the engine as a later event.
//!
//! The HAL may run the execution routine before `AllocateAdapterChannelEx`
//! returns — on the calling CPU, inside the call, or on another CPU — or much
//! later. The allocating code runs under the engine lock, so the routine must
//! never take that lock while the call may still be in progress (the CPU
//! would deadlock on itself). [`GrantSlot`] settles the race without a lock:
//!
//! 1. before the call, the allocating side [`arm`](GrantSlot::arm)s the slot;
//! 2. the execution routine [`deliver`](GrantSlot::deliver)s its map-register
//!    base: if the call has not returned yet, the base is parked for it
//!    ([`Delivery::Absorbed`]); otherwise the routine must hand it to the
//!    engine itself ([`Delivery::ToEngine`]), taking the engine lock — safe,
//!    because the allocating call is over;
//! 3. after a successful call, the allocating side [`settle`](GrantSlot::settle)s:
//!    a parked base means "granted now", none means "queued"; after a failed
//!    call it [`disarm`](GrantSlot::disarm)s.
//!
//! Only atomics are used, so it works at DISPATCH_LEVEL and needs no `unsafe`.
//! Map-register bases are pointers on Windows: they travel as `usize`.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

const IDLE: u8 = 0;
const ARMED: u8 = 1;
const PARKED: u8 = 2;
const QUEUED: u8 = 3;

/// What the execution routine must do with its grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The allocating call will pick it up: return `KeepObject` and nothing else.
    Absorbed,
    /// The call already returned "queued": feed this base to
    /// `Engine::channel_granted` under the engine lock.
    ToEngine(usize),
}

/// What the allocating call found after `AllocateAdapterChannelEx` succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The execution routine already ran with this base.
    GrantedNow(usize),
    /// It has not run yet; its grant will reach the engine as an event.
    Queued,
}

/// One adapter's grant hand-off (one channel request at a time).
#[derive(Debug, Default)]
pub struct GrantSlot {
    state: AtomicU8,
    base: AtomicUsize,
}

impl GrantSlot {
    /// An idle slot.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(IDLE),
            base: AtomicUsize::new(0),
        }
    }

    /// Before `AllocateAdapterChannelEx`.
    pub fn arm(&self) {
        self.state.store(ARMED, Ordering::Release);
    }

    /// From the execution routine.
    pub fn deliver(&self, base: usize) -> Delivery {
        self.base.store(base, Ordering::Relaxed);
        match self
            .state
            .compare_exchange(ARMED, PARKED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Delivery::Absorbed,
            Err(_) => {
                // QUEUED: the call returned before we ran.
                self.state.store(IDLE, Ordering::Release);
                Delivery::ToEngine(base)
            }
        }
    }

    /// After `AllocateAdapterChannelEx` returned `STATUS_SUCCESS`.
    pub fn settle(&self) -> Settled {
        match self
            .state
            .compare_exchange(ARMED, QUEUED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Settled::Queued,
            Err(_) => {
                // PARKED: the routine ran before the call returned.
                let base = self.base.load(Ordering::Relaxed);
                self.state.store(IDLE, Ordering::Release);
                Settled::GrantedNow(base)
            }
        }
    }

    /// After `AllocateAdapterChannelEx` failed: no routine will run.
    pub fn disarm(&self) {
        self.state.store(IDLE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn routine_inside_the_call_is_absorbed() {
        let slot = GrantSlot::new();
        slot.arm();
        assert_eq!(slot.deliver(0xB00), Delivery::Absorbed);
        assert_eq!(slot.settle(), Settled::GrantedNow(0xB00));
    }

    #[test]
    fn routine_after_the_call_goes_to_the_engine() {
        let slot = GrantSlot::new();
        slot.arm();
        assert_eq!(slot.settle(), Settled::Queued);
        assert_eq!(slot.deliver(0xB01), Delivery::ToEngine(0xB01));
        // The slot is reusable for the next request.
        slot.arm();
        assert_eq!(slot.deliver(0xB02), Delivery::Absorbed);
        assert_eq!(slot.settle(), Settled::GrantedNow(0xB02));
    }

    #[test]
    fn a_failed_call_leaves_the_slot_idle() {
        let slot = GrantSlot::new();
        slot.arm();
        slot.disarm();
        slot.arm();
        assert_eq!(slot.settle(), Settled::Queued);
    }

    #[test]
    fn racing_routine_and_call_deliver_exactly_once() {
        for round in 0..2000usize {
            let slot = Arc::new(GrantSlot::new());
            slot.arm();
            let routine = {
                let slot = Arc::clone(&slot);
                thread::spawn(move || slot.deliver(round + 1))
            };
            let settled = slot.settle();
            let delivered = routine.join().unwrap();
            match (settled, delivered) {
                (Settled::GrantedNow(b), Delivery::Absorbed) => assert_eq!(b, round + 1),
                (Settled::Queued, Delivery::ToEngine(b)) => assert_eq!(b, round + 1),
                other => panic!("grant lost or duplicated: {other:?}"),
            }
        }
    }
}
