//! A counting allocator: the `edudmactl` binary installs [`CountingAllocator`]
//! as its `#[global_allocator]`, and `bench` reads [`counts`] around its
//! requests to report heap allocations per request.
//!
//! Allocations are counted apart by whose code asked for them: the driver's
//! (`src/` and the engine, on the simulator: while a simulated CPU runs a
//! routine of the driver and not a kernel export it called, as
//! `edudma_sim::native::in_driver_code` tells), or anyone else's (the
//! simulator's own bookkeeping and the tool's buffers). On a real device
//! the driver allocates in the kernel: nothing here sees it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// [`System`], counting every allocation (`alloc`, `alloc_zeroed`,
/// `realloc`) by whose code made it.
#[derive(Debug, Default)]
pub struct CountingAllocator;

static IN_DRIVER: AtomicU64 = AtomicU64::new(0);
static ELSEWHERE: AtomicU64 = AtomicU64::new(0);

/// Whether the calling thread runs the driver's code now.
#[inline]
fn in_driver_code() -> bool {
    #[cfg(not(windows))]
    return edudma_sim::native::in_driver_code();
    #[cfg(windows)]
    return false;
}

#[inline]
fn count() {
    let counter = if in_driver_code() {
        &IN_DRIVER
    } else {
        &ELSEWHERE
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; counting touches
// only two atomics and a thread-local `bool` (no allocation).
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations counted since the process started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocationCounts {
    /// Made by the driver's code.
    pub driver: u64,
    /// Made by anything else (the simulator, the tool).
    pub elsewhere: u64,
}

impl AllocationCounts {
    /// The allocations between `self` (earlier) and `later`.
    pub fn until(self, later: AllocationCounts) -> AllocationCounts {
        AllocationCounts {
            driver: later.driver.saturating_sub(self.driver),
            elsewhere: later.elsewhere.saturating_sub(self.elsewhere),
        }
    }
}

/// The counts so far, or `None` when [`CountingAllocator`] is not this
/// process's global allocator (then nothing is ever counted).
pub fn counts() -> Option<AllocationCounts> {
    let read = || AllocationCounts {
        driver: IN_DRIVER.load(Ordering::Relaxed),
        elsewhere: ELSEWHERE.load(Ordering::Relaxed),
    };
    let counted = |c: AllocationCounts| c.driver + c.elsewhere > 0;
    let first = read();
    if counted(first) {
        return Some(first);
    }
    // Nothing yet: allocate once to tell "not installed" from "not used".
    drop(std::hint::black_box(Box::new(0u8)));
    let second = read();
    counted(second).then_some(second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_library_alone_counts_nothing() {
        // The test harness has the system allocator, not ours.
        assert_eq!(counts(), None);
    }

    #[test]
    fn until_is_the_difference() {
        let earlier = AllocationCounts {
            driver: 2,
            elsewhere: 10,
        };
        let later = AllocationCounts {
            driver: 5,
            elsewhere: 11,
        };
        assert_eq!(
            earlier.until(later),
            AllocationCounts {
                driver: 3,
                elsewhere: 1
            }
        );
    }
}
