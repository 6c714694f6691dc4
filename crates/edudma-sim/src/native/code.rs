//! Whose code the calling thread runs: the driver's (`src/` and the engine
//! it calls) or the simulator's (the kernel exports, the HAL, the model).
//!
//! Every place the simulated kernel calls a routine of the driver (dispatch,
//! StartIo, the ISR, a DPC, an execution or completion routine...) marks the
//! thread as in driver code for the call, and every export the driver calls
//! ([`super::exports::Call`]) marks it as out of it until it returns. The
//! mark is one thread-local `bool`, so a counting allocator can read it on
//! every allocation ([`in_driver_code`]).

use std::cell::Cell;

thread_local! {
    static IN_DRIVER: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread runs driver code now: inside a routine of the
/// driver the simulated kernel called, and not inside a kernel export that
/// routine called. Cheap (one thread-local read, no allocation), so a
/// `#[global_allocator]` may call it.
#[inline]
pub fn in_driver_code() -> bool {
    // During thread teardown the slot may be gone: not driver code.
    IN_DRIVER.try_with(Cell::get).unwrap_or(false)
}

/// The mark of the calling thread, restored when dropped.
pub(crate) struct Mark {
    previous: bool,
}

impl Mark {
    fn set(value: bool) -> Self {
        let previous = IN_DRIVER.try_with(|c| c.replace(value)).unwrap_or(false);
        Mark { previous }
    }

    /// The simulated kernel calls a routine of the driver.
    pub(crate) fn driver() -> Self {
        Self::set(true)
    }

    /// The driver calls into the simulated kernel.
    pub(crate) fn kernel() -> Self {
        Self::set(false)
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        let previous = self.previous;
        let _ = IN_DRIVER.try_with(|c| c.set(previous));
    }
}

/// Run `f`, a call of a routine of the driver, marked as driver code.
#[inline]
pub(crate) fn as_driver<R>(f: impl FnOnce() -> R) -> R {
    let _mark = Mark::driver();
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_nest_and_restore() {
        assert!(!in_driver_code());
        {
            let _driver = Mark::driver();
            assert!(in_driver_code());
            {
                let _kernel = Mark::kernel();
                assert!(!in_driver_code());
                assert!(as_driver(in_driver_code));
                assert!(!in_driver_code());
            }
            assert!(in_driver_code());
        }
        assert!(!in_driver_code());
    }

    #[test]
    fn the_mark_is_per_thread() {
        let _driver = Mark::driver();
        assert!(in_driver_code());
        assert!(!std::thread::spawn(in_driver_code).join().unwrap());
    }
}
