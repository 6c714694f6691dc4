//! The driver that ships (`src/`) against the real device: the simulated
//! kernel runs it, the edu model is mirrored onto QEMU's device
//! (`edudma_sim::lockstep`, `edudma_sim::edu::mirror`). This module turns
//! the run into the harness's `[SRC]` checks and, in the guest, gives the
//! mirror the device: a second mapping of BAR0 and one locked page below
//! 256 MiB as its DMA window.

use edudma_sim::lockstep::{self, LockstepReport};

/// Seed of the lockstep run (patterns, schedules); `HIL_SEED` varies it.
pub const SEED: u64 = 0x005E_C00D;

/// Report `report` through `check` (the rig's PASS/FAIL counter), one line
/// per check and per divergence, and a summary. Returns the verdict.
pub fn report(report: &LockstepReport, check: &mut dyn FnMut(bool, &str)) -> bool {
    for c in &report.checks {
        check(c.passed, &format!("[SRC] {}: {}", c.name, c.detail));
    }
    for d in &report.divergences {
        check(false, &format!("[SRC] model and device diverged: {d}"));
    }
    let s = report.stats;
    let mirrored = s.dma_commands > 0 && s.reads_compared > 0;
    check(
        mirrored && report.passed(),
        &format!(
            "[SRC] src/ on the real device: {} checks, {} divergences; {} register reads compared \
             ({} transient), {} writes forwarded, {} DMA commands and {} factorials on the device",
            report.checks.len(),
            report.divergences.len(),
            s.reads_compared,
            s.reads_transient,
            s.writes_forwarded,
            s.dma_commands,
            s.factorials
        ),
    );
    mirrored && report.passed()
}

/// Run `src/` against `mirror`'s device and report it.
pub fn run(
    mirror: &edudma_sim::edu::mirror::EduMirror,
    seed: u64,
    check: &mut dyn FnMut(bool, &str),
) -> bool {
    report(&lockstep::run(mirror, seed), check)
}

#[cfg(target_os = "linux")]
pub use guest::GuestEdu;

#[cfg(target_os = "linux")]
mod guest {
    use std::io;
    use std::time::Duration;

    use edudma_sim::edu::mirror::RealEdu;

    use crate::hal::{PAGE_SIZE, PageId};
    use crate::linux::{Bar, PagePool, PciDevice};

    /// QEMU's edu device as the mirror's real device.
    pub struct GuestEdu {
        bar: Bar,
        pool: PagePool,
        page: PageId,
        window: u64,
    }

    impl GuestEdu {
        /// Map BAR0 again and lock a page below the device's 28-bit mask.
        pub fn new(pci: &PciDevice) -> io::Result<Self> {
            let bar = pci.map_bar0()?;
            let mut pool = PagePool::new()?;
            for _ in 0..8 {
                pool.grow(64)?;
                let low = pool.pages_where(|p| {
                    p + PAGE_SIZE as u64 <= 1 << edudma_core::regs::DMA_ADDRESS_BITS
                });
                if let Some(&page) = low.first() {
                    let window = pool
                        .locked_phys(page)
                        .ok_or_else(|| io::Error::other("window page has no frame"))?;
                    return Ok(Self {
                        bar,
                        pool,
                        page,
                        window,
                    });
                }
            }
            Err(io::Error::other("no page below 256 MiB for the DMA window"))
        }
    }

    impl RealEdu for GuestEdu {
        fn read(&mut self, offset: u64, size: u32) -> u64 {
            let Ok(offset) = u32::try_from(offset) else {
                return u64::MAX;
            };
            match size {
                8 => self.bar.read::<u64>(offset),
                4 => u64::from(self.bar.read::<u32>(offset)),
                2 => u64::from(self.bar.read::<u16>(offset)),
                _ => u64::from(self.bar.read::<u8>(offset)),
            }
        }
        fn write(&mut self, offset: u64, size: u32, value: u64) {
            let Ok(offset) = u32::try_from(offset) else {
                return;
            };
            match size {
                8 => self.bar.write::<u64>(offset, value),
                4 => self.bar.write::<u32>(offset, value as u32),
                2 => self.bar.write::<u16>(offset, value as u16),
                _ => self.bar.write::<u8>(offset, value as u8),
            }
        }
        fn window_bus_address(&self) -> u64 {
            self.window
        }
        fn read_window(&mut self, out: &mut [u8]) {
            let n = out.len().min(PAGE_SIZE);
            self.pool.read_bytes(self.page, 0, &mut out[..n]);
        }
        fn write_window(&mut self, data: &[u8]) {
            let n = data.len().min(PAGE_SIZE);
            self.pool.write_bytes(self.page, 0, &data[..n]);
        }
        fn pause(&mut self) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
