//! The suite inside the guest: the unchanged engine, fed by this glue, drives
//! QEMU's edu device; every byte that moves is compared.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use edudma_core::NtStatus;
use edudma_core::engine::{
    AdapterFacts, AllocationPolicy, Completion, Engine, EngineConfig, StartRequest, StopReason,
};
use edudma_core::ioctl::{Direction, DmaRequest, InterruptKind, Stats};
use edudma_core::regs::{self, RegisterFile};

use crate::conform;
use edudma_hal::hal::HalStats;

use crate::hal::{GuestPages, HalConfig, HalDma, HalHandle, MdlId, PAGE_SIZE, PageId};
use crate::irq::Interrupts;
use crate::linux::{Bar, PagePool, PciDevice, Wait, command};
use crate::rng::Rng;

mod msi_phases;
mod rate;
mod src_run;

/// How much to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Self-test, conformance and a handful of transfers.
    Quick,
    /// The standard suite (about a minute of guest time).
    Standard,
    /// Standard plus every length 1..=window.
    Sweep,
    /// A deliberate fidelity probe, not a test: program a DMA of count 0 at
    /// 0x40000 and see whether QEMU survives it (7.2's range check rejects
    /// an empty range and aborts the VM).
    ProbeCount0,
}

/// The glue's watchdog period, as on Windows.
const TICK: Duration = Duration::from_millis(100);
/// A request that takes longer than this is a failure (the engine's own
/// timeout is ten ticks per command).
const REQUEST_LIMIT: Duration = Duration::from_secs(10);
/// Byte the pages around a buffer are filled with, to catch stray writes.
const GUARD: u8 = 0xC3;
/// 256 MiB: the edu device's default `dma_mask` reaches below this.
const LIMIT_28: u64 = 1 << 28;

type Mem = Rc<PagePool>;

impl GuestPages for Rc<PagePool> {
    fn phys(&self, page: PageId) -> Option<u64> {
        PagePool::phys_now(self, page)
    }
    fn read(&self, page: PageId, offset: usize, out: &mut [u8]) {
        PagePool::read_bytes(self, page, offset, out);
    }
    fn write(&mut self, page: PageId, offset: usize, data: &[u8]) {
        PagePool::write_bytes(self, page, offset, data);
    }
}

/// Which physical pages a buffer is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Pages below 256 MiB.
    Low,
    /// Pages at or above 256 MiB: every one is bounced.
    High,
    /// Low first page, high second.
    LowHigh,
    /// High first page, low second.
    HighLow,
    /// Consecutive pages of one locked mapping, wherever the kernel put them.
    Real,
}

const LAYOUTS: [Layout; 5] = [
    Layout::Low,
    Layout::High,
    Layout::LowHigh,
    Layout::HighLow,
    Layout::Real,
];

/// One round trip: write `len` bytes at `dev` from buffer A, read them back
/// into buffer B, compare.
#[derive(Clone, Copy, Debug)]
struct Case {
    len: u32,
    dev: u32,
    /// Byte offset of buffer A in its first page.
    a_off: usize,
    a: Layout,
    b_off: usize,
    b: Layout,
}

/// Something the glue does to a request in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Intervention {
    /// Nothing.
    None,
    /// The cancel routine runs right after StartIo.
    CancelNow,
    /// The cancel routine runs after the execution routine ran but before
    /// its grant reached the engine.
    CancelAtGrant,
    /// PnP stop right after StartIo.
    StopNow,
}

/// Totals over the whole run.
#[derive(Default)]
struct Totals {
    passed: u32,
    failed: u32,
    round_trips: u64,
    requests: u64,
    device_commands: u64,
    bytes: u64,
    interrupts: u64,
    spurious: u64,
    lost_interrupts: u64,
    hal: HalStats,
}

/// One engine with its adapter: what START_DEVICE created.
struct Driver {
    engine: Engine<HalDma<Mem>, u32>,
    hal: HalHandle<Mem>,
    interrupts: bool,
    next_request: u32,
    name: &'static str,
}

/// Everything of the guest the suite uses.
pub struct Rig {
    pci: PciDevice,
    bar: Bar,
    /// INTx (`uio_pci_generic`) until the MSI phase set moves the device to vfio-pci.
    irq: Option<Interrupts>,
    pool: Mem,
    low: Vec<PageId>,
    high: Vec<PageId>,
    bounce: Vec<PageId>,
    /// The page `AllocateCommonBuffer` gives (`common-buffer`).
    common: PageId,
    scratch: PageId,
    epoch: Instant,
    cursor: [usize; 3],
    rng: Rng,
    totals: Totals,
    /// The phase set running ("INTx" or "MSI"), in front of each verdict of the MSI set.
    set: &'static str,
}

fn say(line: &str) {
    println!("{line}");
}

impl Rig {
    fn check(&mut self, ok: bool, what: &str) -> bool {
        let set = if self.set == "MSI" { "[MSI] " } else { "" };
        if ok {
            self.totals.passed += 1;
            say(&format!("HIL PASS {set}{what}"));
        } else {
            self.totals.failed += 1;
            say(&format!("HIL FAIL {set}{what}"));
        }
        ok
    }

    /// Find the device, bind uio, enable bus mastering, map BAR0, lock pages.
    fn setup() -> Result<Self, String> {
        let pci = PciDevice::find().map_err(|e| e.to_string())?;
        say(&format!("HIL INFO device at {}", pci.dir().display()));
        if let Err(e) = pci.enable() {
            say(&format!(
                "HIL INFO enable: {e} (uio_pci_generic enables it too)"
            ));
        }
        // uio_pci_generic clears bus master when /dev/uio0 is closed: open it
        // first, keep it open, then set bus master.
        let uio = match pci.bind_uio() {
            Ok(uio) => Some(Interrupts::Intx(uio)),
            Err(e) => {
                say(&format!("HIL INFO uio_pci_generic unavailable: {e}"));
                None
            }
        };
        let cmd = pci
            .update_command(command::MEMORY | command::BUS_MASTER, command::INTX_DISABLE)
            .map_err(|e| format!("config space: {e}"))?;
        let readback = pci.command().map_err(|e| e.to_string())?;
        say(&format!(
            "HIL INFO PCI command 0x{cmd:04x} (read back 0x{readback:04x})"
        ));
        if readback & command::BUS_MASTER == 0 {
            return Err("bus master enable did not stick".into());
        }
        let bar = pci.map_bar0().map_err(|e| format!("mapping BAR0: {e}"))?;

        let mut pool = PagePool::new().map_err(|e| e.to_string())?;
        // 7–13 % of locked pages land above 256 MiB with -m 512: grow until
        // there are enough of both kinds.
        let mut rounds = 0;
        loop {
            pool.grow(1024).map_err(|e| format!("locking pages: {e}"))?;
            rounds += 1;
            let high = pool.pages_where(|p| p >= LIMIT_28).len();
            let low = pool.len() - high;
            if (high >= 48 && low >= 256) || rounds >= 48 {
                break;
            }
        }
        let mut low = pool.pages_where(|p| p + PAGE_SIZE as u64 <= LIMIT_28);
        let high = pool.pages_where(|p| p >= LIMIT_28);
        say(&format!(
            "HIL INFO locked {} pages: {} below 256 MiB, {} above (highest 0x{:x})",
            pool.len(),
            low.len(),
            high.len(),
            (0..pool.len())
                .filter_map(|p| pool.locked_phys(p))
                .max()
                .unwrap_or(0)
        ));
        if pool.is_empty() || low.len() < 64 {
            return Err("not enough pages below 256 MiB".into());
        }
        // The HAL's bounce pages: the first few low pages, reserved.
        let bounce: Vec<PageId> = low.drain(..2).collect();
        let scratch = low.remove(0);
        let common = low.remove(0);
        let seed = std::env::var("HIL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x0ED0_D4A5_u64);
        say(&format!("HIL INFO seed {seed}"));
        Ok(Self {
            pci,
            bar,
            irq: uio,
            pool: Rc::new(pool),
            low,
            high,
            bounce,
            scratch,
            common,
            epoch: Instant::now(),
            cursor: [0; 3],
            rng: Rng::new(seed),
            totals: Totals::default(),
            set: "INTx",
        })
    }

    /// START_DEVICE: an adapter (`IoGetDmaAdapter`) and an engine over it.
    fn start_driver(
        &mut self,
        name: &'static str,
        hal_config: HalConfig,
        engine_config: EngineConfig,
        interrupts: bool,
    ) -> Result<Driver, String> {
        let hal = HalHandle::new(Rc::clone(&self.pool), hal_config, &self.bounce)
            .map_err(|e| e.to_string())?;
        // As PnP start does: bus mastering on (the engine may have taken the
        // device off the bus after a timeout), and the engine's way to take
        // it off again: the command register through config space.
        self.pci
            .update_command(command::BUS_MASTER, 0)
            .map_err(|e| format!("bus master enable: {e}"))?;
        let pci = Rc::new(PciDevice::find().map_err(|e| format!("config space: {e}"))?);
        let probe = Rc::clone(&pci);
        hal.set_bus_master_control(
            Box::new(move || {
                let _ = pci.update_command(0, command::BUS_MASTER);
            }),
            Box::new(move || probe.command().is_ok_and(|c| c & command::BUS_MASTER != 0)),
        );
        let mut engine = Engine::new(EngineConfig {
            strategy: hal_config.strategy,
            ..engine_config
        });
        let request = hal.request();
        let common_buffer = match request.strategy {
            edudma_core::engine::DmaStrategy::CommonBuffer => hal.allocate_common_buffer(),
            _ => None,
        };
        let facts = AdapterFacts {
            dma_interface_version: request.version,
            strategy: request.strategy,
            map_registers: hal_config.map_registers,
            dma_address_width: hal_config.address_bits,
            scatter_gather: request.scatter_gather,
            common_buffer,
            interrupt_kind: self
                .irq
                .as_ref()
                .map_or(InterruptKind::None, Interrupts::kind),
        };
        engine
            .start_device(hal.dma_ops(), facts, &mut self.bar)
            .map_err(|s| format!("start_device: {s}"))?;
        say(&format!(
            "HIL INFO phase {name}: {:?} (DEVICE_DESCRIPTION version {}), {} map registers, busy (sync refused, async queued) {}, interrupts {}",
            request.strategy,
            request.version,
            hal_config.map_registers,
            hal_config.busy,
            if interrupts {
                "on"
            } else {
                "off (watchdog polling)"
            }
        ));
        Ok(Driver {
            engine,
            hal,
            interrupts: interrupts && self.irq.is_some(),
            next_request: 1,
            name,
        })
    }

    /// The ISR, then the DPC: acknowledge the device first, then unmask
    /// INTx (an MSI has nothing to unmask).
    fn isr_dpc(&mut self, drv: &mut Driver) -> Option<Completion<u32>> {
        let bits = regs::isr_acknowledge(&mut self.bar);
        if self.irq.as_ref().is_some_and(Interrupts::is_intx) {
            if let Err(e) = self.pci.update_command(0, command::INTX_DISABLE) {
                say(&format!("HIL INFO unmasking INTx: {e}"));
            }
        }
        match bits {
            Some(bits) => {
                self.totals.interrupts += 1;
                drv.engine.dpc(bits, 1, &mut self.bar)
            }
            None => {
                self.totals.spurious += 1;
                None
            }
        }
    }

    /// Interrupts that arrived while nobody listened: run the ISR for them.
    fn drain_interrupts(&mut self, drv: &mut Driver) -> Option<Completion<u32>> {
        let mut done = None;
        while let Some(irq) = self.irq.as_mut() {
            match irq.wait(Duration::ZERO) {
                Ok(Wait::Interrupt(_)) => {
                    if let Some(c) = self.isr_dpc(drv) {
                        done = Some(c);
                    }
                }
                _ => break,
            }
        }
        done
    }

    /// StartIo for one request, then events until it completes.
    fn run_request(
        &mut self,
        drv: &mut Driver,
        what: StartRequest<MdlId>,
    ) -> Result<Completion<u32>, String> {
        self.run_request_with(drv, what, Intervention::None)
    }

    /// [`Rig::run_request`] with a cancel or a stop at a chosen moment.
    fn run_request_with(
        &mut self,
        drv: &mut Driver,
        what: StartRequest<MdlId>,
        intervention: Intervention,
    ) -> Result<Completion<u32>, String> {
        let id = drv.next_request;
        drv.next_request += 1;
        self.totals.requests += 1;
        let start = Instant::now();
        let mut next_tick = start + TICK;
        let mut done = drv.engine.start_io(id, what, &mut self.bar);
        if done.is_none() {
            match intervention {
                Intervention::CancelNow => done = drv.engine.cancel(id, &mut self.bar),
                Intervention::StopNow => done = drv.engine.stop(StopReason::Stop, &mut self.bar),
                Intervention::None | Intervention::CancelAtGrant => {}
            }
        }
        loop {
            if let Some(c) = done.take() {
                if c.request != id {
                    return Err(format!(
                        "completion of request {} while {id} was current",
                        c.request
                    ));
                }
                return Ok(c);
            }
            // A queued execution routine runs "later": now, outside StartIo.
            if let Some(base) = drv.hal.take_queued_grant() {
                if intervention == Intervention::CancelAtGrant {
                    // The routine ran but its grant has not reached the
                    // engine: CancelAdapterChannel must say FALSE.
                    done = drv.engine.cancel(id, &mut self.bar);
                    if done.is_some() {
                        return Err("the cancel completed before the grant arrived".into());
                    }
                }
                done = drv.engine.channel_granted(base, &mut self.bar);
                continue;
            }
            let now = Instant::now();
            if now.duration_since(start) > REQUEST_LIMIT {
                let _ = drv.engine.cancel(id, &mut self.bar);
                return Err(format!(
                    "request {id} did not complete in {REQUEST_LIMIT:?}"
                ));
            }
            if now >= next_tick {
                next_tick += TICK;
                done = drv.engine.watchdog_tick(&mut self.bar);
                continue;
            }
            let timeout = next_tick - now;
            match (drv.interrupts, self.irq.as_mut()) {
                (true, Some(irq)) => match irq.wait(timeout) {
                    Ok(Wait::Interrupt(_)) => done = self.isr_dpc(drv),
                    Ok(Wait::Timeout) => {}
                    Err(e) => return Err(format!("waiting for the interrupt: {e}")),
                },
                _ => std::thread::sleep(timeout),
            }
        }
    }

    /// Pages for a buffer of `count` pages laid out as `layout`, none of `avoid`.
    fn pick_pages(&mut self, layout: Layout, count: usize, avoid: &[PageId]) -> Vec<PageId> {
        let mut pages = Vec::with_capacity(count);
        for i in 0..count {
            let high = match layout {
                Layout::Low | Layout::Real => false,
                Layout::High => true,
                Layout::LowHigh => i % 2 == 1,
                Layout::HighLow => i % 2 == 0,
            };
            let (list, slot) = if high && !self.high.is_empty() {
                (&self.high, 1)
            } else {
                (&self.low, 0)
            };
            // The lists hold hundreds of pages; a buffer and its partner use
            // at most four, so a free one is always near.
            for _ in 0..list.len() {
                let page = list[self.cursor[slot] % list.len()];
                self.cursor[slot] += 1;
                if !avoid.contains(&page) && !pages.contains(&page) {
                    pages.push(page);
                    break;
                }
            }
        }
        if layout == Layout::Real {
            // A run of consecutive pages of the pool (one locked mapping).
            let n = self.pool.len();
            for _ in 0..n {
                let start = self.cursor[2] % n.saturating_sub(count).max(1);
                self.cursor[2] += 7;
                let run: Vec<PageId> = (start..start + count).collect();
                if run
                    .iter()
                    .all(|p| !avoid.contains(p) && !self.bounce.contains(p) && *p != self.scratch)
                {
                    return run;
                }
            }
        }
        pages
    }

    fn fill_pages(&self, pages: &[PageId], byte: u8) {
        let fill = [byte; PAGE_SIZE];
        for &p in pages {
            self.pool.write_bytes(p, 0, &fill);
        }
    }

    /// Bytes of `pages` outside `[off, off + len)` that are not the guard byte.
    fn guard_damage(&self, pages: &[PageId], off: usize, len: usize) -> usize {
        let mut bad = 0;
        let mut page = [0u8; PAGE_SIZE];
        for (i, &p) in pages.iter().enumerate() {
            self.pool.read_bytes(p, 0, &mut page);
            for (j, &b) in page.iter().enumerate() {
                let pos = i * PAGE_SIZE + j;
                if (pos < off || pos >= off + len) && b != GUARD {
                    bad += 1;
                }
            }
        }
        bad
    }

    /// One write + read-back round trip through the engine.
    fn round_trip(&mut self, drv: &mut Driver, case: Case, label: &str) -> bool {
        let len = case.len as usize;
        let a_pages = self.pick_pages(case.a, (case.a_off + len).div_ceil(PAGE_SIZE), &[]);
        let b_pages = self.pick_pages(case.b, (case.b_off + len).div_ceil(PAGE_SIZE), &a_pages);
        let data: Vec<u8> = (0..len).map(|_| self.rng.byte()).collect();
        self.fill_pages(&a_pages, GUARD);
        self.fill_pages(&b_pages, GUARD);
        let describe = |pages: &[PageId], pool: &PagePool| -> String {
            pages
                .iter()
                .map(|&p| format!("{:x}", pool.locked_phys(p).unwrap_or(0)))
                .collect::<Vec<_>>()
                .join("+")
        };
        let mut what = format!(
            "{} {label} len={} dev={} A={:?}@{}[{}] B={:?}@{}[{}]",
            drv.name,
            case.len,
            case.dev,
            case.a,
            case.a_off,
            describe(&a_pages, &self.pool),
            case.b,
            case.b_off,
            describe(&b_pages, &self.pool),
        );
        let (Some(mdl_a), Some(mdl_b)) = (
            drv.hal.lock_pages(&a_pages, case.a_off, len),
            drv.hal.lock_pages(&b_pages, case.b_off, len),
        ) else {
            return self.check(false, &format!("{what}: could not lock the buffers"));
        };
        drv.hal.write_mdl(mdl_a, &data);
        // B's range starts as the inverse of the data: every byte must change.
        let inverse: Vec<u8> = data.iter().map(|b| !b).collect();
        drv.hal.write_mdl(mdl_b, &inverse);

        let before = drv.engine.stats();
        let mut ok = true;
        for (direction, mdl) in [(Direction::ToDevice, mdl_a), (Direction::FromDevice, mdl_b)] {
            let request = DmaRequest {
                direction,
                device_offset: case.dev,
                length: case.len,
            };
            match self.run_request(drv, StartRequest::Dma { request, mdl }) {
                Ok(c) if c.status == NtStatus::SUCCESS && c.information == len => {}
                Ok(c) => {
                    let _ = write!(what, " {direction:?}: {} info {}", c.status, c.information);
                    ok = false;
                }
                Err(e) => {
                    let _ = write!(what, " {direction:?}: {e}");
                    ok = false;
                }
            }
            if !ok {
                break;
            }
        }
        if ok {
            let mut got = vec![0u8; len];
            drv.hal.read_mdl(mdl_b, &mut got);
            let wrong: Vec<usize> = (0..len).filter(|&i| got[i] != data[i]).collect();
            if let Some(&first) = wrong.first() {
                let _ = write!(
                    what,
                    " {} bytes differ, first at {first}: got 0x{:02x} want 0x{:02x}",
                    wrong.len(),
                    got[first],
                    data[first]
                );
                ok = false;
            }
            let mut sent = vec![0u8; len];
            drv.hal.read_mdl(mdl_a, &mut sent);
            if sent != data {
                let _ = write!(what, " the source buffer changed");
                ok = false;
            }
            let damage = self.guard_damage(&a_pages, case.a_off, len)
                + self.guard_damage(&b_pages, case.b_off, len);
            if damage > 0 {
                let _ = write!(what, " {damage} guard bytes around the buffers changed");
                ok = false;
            }
        }
        drv.hal.unlock(mdl_a);
        drv.hal.unlock(mdl_b);
        let after = drv.engine.stats();
        let _ = write!(
            what,
            " cmds={} maps={}",
            after.device_commands - before.device_commands,
            after.map_transfer - before.map_transfer
        );
        self.totals.round_trips += 1;
        self.check(ok, &what)
    }

    /// PnP remove: stop, make sure the adapter is put, then the leak check.
    fn stop_driver(&mut self, mut drv: Driver) -> Stats {
        if let Some(c) = drv.engine.stop(StopReason::Remove, &mut self.bar) {
            self.check(
                false,
                &format!("{} stop completed request {}", drv.name, c.request),
            );
        }
        let _ = self.drain_interrupts(&mut drv);
        // As the glue's stop path: a quiet adapter's common buffer is freed,
        // then the adapter put (PASSIVE_LEVEL).
        if let Some(quiet) = drv.engine.take_quiet_adapter() {
            quiet.release();
        }
        let stats = drv.engine.stats();
        let mut violations = drv.hal.violations();
        violations.extend(drv.hal.leak_check());
        self.check(
            drv.engine.adapter_released(),
            &format!("{} the adapter was put at stop", drv.name),
        );
        let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
        self.check(
            violations.is_empty(),
            &format!(
                "{} verifier: no violation, no leak{}{}",
                drv.name,
                if list.is_empty() { "" } else { ": " },
                list.join("; ")
            ),
        );
        let hal = drv.hal.counters().model;
        say(&format!(
            "HIL INFO {} engine: requests={} completed={} commands={} maps={} partial={} flushes={} \
             interrupts={} dpcs={} lost={} timeouts={} errors={} fallbacks={} | hal: bounced={} direct={} \
             sg={} max_sg={} partial={} queued_grants={} sync_refusals={}",
            drv.name,
            stats.requests,
            stats.completed,
            stats.device_commands,
            stats.map_transfer,
            stats.partial_maps,
            stats.flush_adapter_buffers,
            stats.interrupts,
            stats.dpcs,
            stats.lost_interrupts,
            stats.timeouts,
            stats.errors,
            stats.sync_allocation_fallbacks,
            hal.bounced_pages,
            hal.direct_pages,
            hal.sg_elements,
            hal.max_sg_elements,
            hal.partial_maps,
            hal.queued,
            hal.sync_refusals,
        ));
        let t = &mut self.totals;
        t.device_commands += stats.device_commands;
        t.bytes += stats.bytes_to_device + stats.bytes_from_device;
        t.lost_interrupts += stats.lost_interrupts;
        t.hal.bounced_pages += hal.bounced_pages;
        t.hal.direct_pages += hal.direct_pages;
        t.hal.partial_maps += hal.partial_maps;
        t.hal.maps += hal.maps;
        t.hal.sg_elements += hal.sg_elements;
        t.hal.max_sg_elements = t.hal.max_sg_elements.max(hal.max_sg_elements);
        t.hal.queued += hal.queued;
        stats
    }

    fn random_case(&mut self, window: u32) -> Case {
        // Lengths spread over the decades: 1..=window, log-uniform.
        let bits = self.rng.below(12) + 1;
        let len = (self.rng.below(1 << bits) + 1).min(window);
        let dev = match self.rng.below(4) {
            0 => 0,
            1 => window - len,
            _ => self.rng.below(window - len + 1),
        };
        let off = |rng: &mut Rng| match rng.below(5) {
            0 => 0,
            1 => PAGE_SIZE - 1,
            2 => PAGE_SIZE - (len as usize / 2).max(1),
            _ => rng.below(PAGE_SIZE as u32) as usize,
        };
        let a_off = off(&mut self.rng);
        let b_off = off(&mut self.rng);
        let a = LAYOUTS[self.rng.below(5) as usize];
        let b = LAYOUTS[self.rng.below(5) as usize];
        Case {
            len,
            dev,
            a_off,
            a,
            b_off,
            b,
        }
    }
}

/// The edge cases every run covers (window 4095).
fn edge_cases(window: u32) -> Vec<Case> {
    use Layout::*;
    let w = window;
    let c = |len, dev, a_off, a, b_off, b| Case {
        len,
        dev,
        a_off,
        a,
        b_off,
        b,
    };
    vec![
        c(1, 0, 0, Low, 0, Low),
        c(1, w - 1, 4095, High, 4095, High),
        c(2, w - 2, 4095, LowHigh, 4095, HighLow),
        c(w, 0, 0, Low, 0, Low),
        c(w, 0, 1, LowHigh, 1, HighLow),
        c(w, 0, 4095, HighLow, 4095, LowHigh),
        c(w, 0, 0, High, 2048, High),
        c(w - 1, 1, 2, Real, 4000, Real),
        c(4094, 0, 4094, High, 2, Low),
        c(2048, w - 2048, 2048, HighLow, 2049, LowHigh),
        c(2049, 0, 2048, LowHigh, 2047, Real),
        c(3, 2046, 4094, Real, 4094, High),
        c(511, 3584, 3585, Low, 3584, High),
        c(512, 0, 3584, High, 3583, Low),
        c(100, w - 100, 4050, HighLow, 4090, HighLow),
        c(4000, 95, 96, Real, 95, Real),
    ]
}

/// Run the suite; the process exit code is the verdict.
pub fn run(mode: Mode) -> bool {
    let started = Instant::now();
    let mut rig = match Rig::setup() {
        Ok(rig) => rig,
        Err(e) => {
            say(&format!("HIL FAIL setup: {e}"));
            say("HIL RESULT: FAIL (setup)");
            return false;
        }
    };
    if mode == Mode::ProbeCount0 {
        return probe_count0(&mut rig);
    }
    let id = rig.bar.read32(regs::REG_ID);
    rig.check(
        regs::decode_id(id).is_some(),
        &format!("identification: 0x{id:08x}"),
    );
    rig.check(rig.irq.is_some(), "interrupts through uio_pci_generic");

    // Register-level conformance first, while the device is fresh.
    conformance(&mut rig);
    // Then the driver that ships, on the simulated kernel, against it.
    src_run::src_conformance(&mut rig);

    let window = EngineConfig::default().effective_window();
    match rig.start_driver("main", HalConfig::default(), EngineConfig::default(), true) {
        Ok(mut drv) => {
            main_phase(&mut rig, &mut drv, mode, window);
            let stats = rig.stop_driver(drv);
            // Every command raised its interrupt, and the ISR claimed it
            // (the self-test adds two: the factorial and the raised bit).
            rig.check(
                stats.interrupts == stats.device_commands + 2,
                &format!(
                    "interrupts: {} claimed by the ISR for {} device commands and the self-test's 2",
                    stats.interrupts, stats.device_commands
                ),
            );
        }
        Err(e) => {
            rig.check(false, &format!("start main: {e}"));
        }
    }
    if mode != Mode::Quick {
        extra_phases(&mut rig, window);
        strategy_phases(&mut rig, window);
        rate::throughput_phase(&mut rig, window);
    }
    if mode == Mode::Sweep {
        sweep(&mut rig, window);
    }
    // Then the interrupt-driven phases again with MSI, through vfio-pci
    // (the device stays there; the bounce/sg/partial totals below count both sets).
    let msi = msi_phases::run(&mut rig, mode, window);
    rig.set = "INTx";
    let t = &rig.totals;
    let (bounced, max_sg, partial) = (
        t.hal.bounced_pages,
        t.hal.max_sg_elements,
        t.hal.partial_maps,
    );
    rig.check(
        bounced > 0,
        &format!("bounce path: {bounced} pages above 256 MiB went through bounce pages below it"),
    );
    rig.check(
        max_sg >= 2,
        &format!("scatter/gather: lists of up to {max_sg} elements from the real page layout"),
    );
    if mode != Mode::Quick {
        rig.check(
            partial > 0,
            &format!("partial maps: {partial} (map-register budget of 1)"),
        );
    }
    let t = &rig.totals;
    say(&format!(
        "HIL INTx phases: {} passed, {} failed",
        t.passed - msi.passed,
        t.failed - msi.failed
    ));
    say(&format!(
        "HIL MSI phases: {} passed, {} failed",
        msi.passed, msi.failed
    ));
    report(&rig, started.elapsed())
}

fn probe_count0(rig: &mut Rig) -> bool {
    let page = rig.pool.locked_phys(rig.scratch).unwrap_or(0) as u32;
    say("HIL PROBE programming a DMA of count 0 (RAM -> device at 0x40000)");
    rig.bar.write32(regs::REG_DMA_SRC, page);
    rig.bar
        .write32(regs::REG_DMA_DST, regs::DEVICE_BUFFER_ADDR as u32);
    rig.bar.write32(regs::REG_DMA_COUNT, 0);
    rig.bar.write32(regs::REG_DMA_CMD, 1);
    std::thread::sleep(Duration::from_millis(300));
    let cmd = rig.bar.read32(regs::REG_DMA_CMD);
    say(&format!("HIL PROBE survived: command register 0x{cmd:x}"));
    say("HIL RESULT: PASS");
    true
}

fn main_phase(rig: &mut Rig, drv: &mut Driver, mode: Mode, window: u32) {
    let info = drv.engine.device_info();
    let id = rig.bar.read32(regs::REG_ID);
    rig.check(
        info.device_id == id && info.dma_window == window,
        &format!(
            "device info: id 0x{:08x}, window {}, map registers {}, width {}",
            info.device_id, info.dma_window, info.map_registers, info.dma_address_width
        ),
    );
    match rig.run_request(drv, StartRequest::SelfTest) {
        Ok(c) => {
            let report = c.selftest.unwrap_or_default();
            rig.check(
                c.status == NtStatus::SUCCESS && report.all_passed(),
                &format!(
                    "engine self-test (identification, liveness, factorial polled and by interrupt, raise/ack): \
                     status {} passed 0x{:02x} failed 0x{:02x} id 0x{:08x} live 0x{:08x}->0x{:08x} \
                     {}!={} {}!={} irq bits 0x{:x}",
                    c.status,
                    report.passed,
                    report.failed,
                    report.device_id,
                    report.liveness_written,
                    report.liveness_read,
                    report.factorial_input,
                    report.factorial_polled,
                    report.factorial_input + 1,
                    report.factorial_interrupt,
                    report.irq_bits_seen
                ),
            );
        }
        Err(e) => {
            rig.check(false, &format!("engine self-test: {e}"));
        }
    }
    let mut cases = edge_cases(window);
    if mode == Mode::Quick {
        cases.truncate(6);
    } else {
        for _ in 0..56 {
            let case = rig.random_case(window);
            cases.push(case);
        }
    }
    for (i, case) in cases.into_iter().enumerate() {
        rig.round_trip(drv, case, &format!("#{i}"));
    }
}

/// Every other strategy against the real device, and the fallback of a HAL
/// without version 3: the edge cases with two map registers and with one
/// (splits), each run checked for its own routines.
fn strategy_phases(rig: &mut Rig, window: u32) {
    use edudma_core::engine::DmaStrategy;
    let runs: [(&'static str, DmaStrategy, bool, u32); 6] = [
        ("v1-packet", DmaStrategy::V1Packet, true, 2),
        ("v1-packet-budget1", DmaStrategy::V1Packet, true, 1),
        ("sg-list", DmaStrategy::SgList, true, 2),
        ("sg-list-budget1", DmaStrategy::SgList, true, 1),
        ("no-dma-v3", DmaStrategy::V3Packet, false, 2),
        ("common-buffer", DmaStrategy::CommonBuffer, true, 2),
    ];
    for (name, strategy, dma_v3, map_registers) in runs {
        let config = HalConfig {
            map_registers,
            strategy,
            dma_v3,
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
        let in_force = if dma_v3 {
            strategy
        } else {
            DmaStrategy::V1Packet
        };
        let info = drv.engine.device_info();
        rig.check(
            info.dma_strategy == in_force.code() as u32,
            &format!(
                "{name}: strategy in force {:?} (DEVICE_DESCRIPTION version {})",
                in_force, info.dma_interface_version
            ),
        );
        for (i, case) in edge_cases(window).into_iter().enumerate() {
            rig.round_trip(&mut drv, case, &format!("#{i}"));
        }
        let s = rig.stop_driver(drv);
        let (routines_ok, routines) = match in_force {
            DmaStrategy::V1Packet => (
                s.allocate_adapter_channel > 0
                    && s.flush_io_buffers == s.allocate_adapter_channel
                    && s.free_map_registers == s.allocate_adapter_channel
                    && s.map_transfer == s.flush_adapter_buffers
                    && s.get_dma_transfer_info == 0
                    && s.free_adapter_channel == 0,
                format!(
                    "KeFlushIoBuffers {}, AllocateAdapterChannel {}, MapTransfer {}, \
                     FlushAdapterBuffers {}, FreeMapRegisters {}",
                    s.flush_io_buffers,
                    s.allocate_adapter_channel,
                    s.map_transfer,
                    s.flush_adapter_buffers,
                    s.free_map_registers
                ),
            ),
            DmaStrategy::SgList => (
                s.build_scatter_gather_list > 0
                    && s.put_scatter_gather_list
                        == s.build_scatter_gather_list + s.get_scatter_gather_list
                    && s.allocate_adapter_channel == 0
                    && s.map_transfer == 0,
                format!(
                    "CalculateScatterGatherList {}, BuildScatterGatherList {}, \
                     GetScatterGatherList {}, PutScatterGatherList {}",
                    s.calculate_scatter_gather_list,
                    s.build_scatter_gather_list,
                    s.get_scatter_gather_list,
                    s.put_scatter_gather_list
                ),
            ),
            DmaStrategy::CommonBuffer => (
                s.common_buffer_copies == s.requests
                    && s.device_commands == s.requests
                    && s.allocate_adapter_channel == 0
                    && s.map_transfer == 0
                    && s.build_scatter_gather_list == 0,
                format!(
                    "copies through the common buffer {}, device commands {}, requests {}",
                    s.common_buffer_copies, s.device_commands, s.requests
                ),
            ),
            DmaStrategy::V3Packet => (false, "v3-packet is not a fallback".into()),
        };
        rig.check(routines_ok, &format!("{name} routines: {routines}"));
        if map_registers == 1 {
            rig.check(
                s.partial_maps > 0,
                &format!("{name}: {} requests split", s.partial_maps),
            );
        }
    }
}

fn extra_phases(rig: &mut Rig, window: u32) {
    // One map register: every two-page transfer is mapped in two parts.
    let budget1 = HalConfig {
        map_registers: 1,
        ..HalConfig::default()
    };
    if let Ok(mut drv) = rig.start_driver("budget1", budget1, EngineConfig::default(), true) {
        let cases = [
            (window, 0, 1, Layout::LowHigh, 1, Layout::HighLow),
            (2, window - 2, 4095, Layout::HighLow, 4095, Layout::Low),
            (3000, 7, 2000, Layout::High, 3000, Layout::LowHigh),
            (1000, 3000, 3500, Layout::Real, 3600, Layout::Real),
            (4000, 0, 0, Layout::Low, 100, Layout::High),
            (500, 100, 10, Layout::High, 3900, Layout::HighLow),
        ];
        for (i, (len, dev, a_off, a, b_off, b)) in cases.into_iter().enumerate() {
            let case = Case {
                len,
                dev,
                a_off,
                a,
                b_off,
                b,
            };
            rig.round_trip(&mut drv, case, &format!("#{i}"));
        }
        let stats = rig.stop_driver(drv);
        rig.check(
            stats.partial_maps >= 8,
            &format!("budget1: partial maps happened ({})", stats.partial_maps),
        );
    } else {
        rig.check(false, "start budget1");
    }

    // A busy adapter: the map registers are held by another device, so the
    // grant arrives later (the execution routine runs outside StartIo). A
    // transfer that needs map registers goes straight to the asynchronous
    // form: one AllocateAdapterChannelEx per request, no refused try.
    let busy = HalConfig {
        busy: true,
        ..HalConfig::default()
    };
    if let Ok(mut drv) = rig.start_driver("queued", busy, EngineConfig::default(), true) {
        for i in 0..3 {
            let case = rig.random_case(window);
            rig.round_trip(&mut drv, case, &format!("#{i}"));
        }
        let queued = drv.hal.counters().model.queued;
        let stats = rig.stop_driver(drv);
        rig.check(
            stats.allocate_adapter_channel == 6 && stats.sync_allocation_fallbacks == 0 && queued == 6,
            &format!(
                "queued: one AllocateAdapterChannelEx per request ({} for 6), each grant queued ({}), \
                 no refused synchronous try ({})",
                stats.allocate_adapter_channel, queued, stats.sync_allocation_fallbacks
            ),
        );
    } else {
        rig.check(false, "start queued");
    }

    no_bounce_control(rig);
    cancel_and_stop(rig, window);

    // Asynchronous-only policy, granted at once.
    let async_only = EngineConfig {
        allocation: AllocationPolicy::AsyncOnly,
        ..EngineConfig::default()
    };
    if let Ok(mut drv) = rig.start_driver("async", HalConfig::default(), async_only, true) {
        for i in 0..2 {
            let case = rig.random_case(window);
            rig.round_trip(&mut drv, case, &format!("#{i}"));
        }
        rig.stop_driver(drv);
    } else {
        rig.check(false, "start async");
    }

    // Interrupts never serviced: the watchdog's lost-interrupt path carries
    // every command.
    if let Ok(mut drv) = rig.start_driver(
        "polled",
        HalConfig::default(),
        EngineConfig::default(),
        false,
    ) {
        for i in 0..3 {
            let case = rig.random_case(window);
            rig.round_trip(&mut drv, case, &format!("#{i}"));
        }
        let stats = rig.stop_driver(drv);
        rig.check(
            stats.lost_interrupts == stats.device_commands && stats.device_commands > 0,
            &format!(
                "polled: the watchdog completed every command ({} of {})",
                stats.lost_interrupts, stats.device_commands
            ),
        );
    } else {
        rig.check(false, "start polled");
    }
}

/// The negative control of the bounce path: an adapter that claims the
/// device reaches 64 bits hands it a page above 256 MiB directly. The edu
/// device masks the address to 28 bits (QEMU logs "EDU: clamping DMA") and
/// reads the aliased low page instead. Only a memory → device transfer is
/// done this way (it reads the wrong page, it writes nothing); the bytes
/// read back through a correct low buffer must then differ from those sent.
fn no_bounce_control(rig: &mut Rig) {
    let Some(&high) = rig.high.first() else {
        rig.check(false, "no-bounce control: no page above 256 MiB");
        return;
    };
    let unbounced = HalConfig {
        address_bits: 64,
        ..HalConfig::default()
    };
    let Ok(mut drv) = rig.start_driver("nobounce", unbounced, EngineConfig::default(), true) else {
        rig.check(false, "start nobounce");
        return;
    };
    let len = 256usize;
    let low = rig.pick_pages(Layout::Low, 1, &[high]);
    let data: Vec<u8> = (0..len).map(|_| rig.rng.byte()).collect();
    rig.fill_pages(&[high], GUARD);
    rig.fill_pages(&low, GUARD);
    let (Some(mdl_a), Some(mdl_b)) = (
        drv.hal.lock_pages(&[high], 0, len),
        drv.hal.lock_pages(&low, 0, len),
    ) else {
        rig.check(false, "no-bounce control: could not lock the buffers");
        return;
    };
    drv.hal.write_mdl(mdl_a, &data);
    drv.hal.write_mdl(mdl_b, &vec![0u8; len]);
    say("HIL EXPECT-CLAMPS 1");
    let mut statuses = Vec::new();
    for (direction, mdl) in [(Direction::ToDevice, mdl_a), (Direction::FromDevice, mdl_b)] {
        let request = DmaRequest {
            direction,
            device_offset: 0,
            length: len as u32,
        };
        match rig.run_request(&mut drv, StartRequest::Dma { request, mdl }) {
            Ok(c) => statuses.push(c.status),
            Err(e) => {
                rig.check(false, &format!("no-bounce control: {e}"));
                statuses.push(NtStatus::IO_TIMEOUT);
            }
        }
    }
    let mut got = vec![0u8; len];
    drv.hal.read_mdl(mdl_b, &mut got);
    let differ = (0..len).filter(|&i| got[i] != data[i]).count();
    drv.hal.unlock(mdl_a);
    drv.hal.unlock(mdl_b);
    let phys = rig.pool.locked_phys(high).unwrap_or(0);
    rig.check(
        statuses.iter().all(|s| *s == NtStatus::SUCCESS) && differ > 0,
        &format!(
            "no-bounce control: page 0x{phys:x} handed to the device unbounced was read at 0x{:x} \
             (28-bit clamp): {differ} of {len} bytes came back wrong; the bounce path is what prevents it",
            phys & ((1 << 28) - 1)
        ),
    );
    rig.stop_driver(drv);
}

/// Lock a fresh buffer of `len` bytes laid out as `layout`, filled with `data`.
fn buffer(rig: &mut Rig, drv: &Driver, layout: Layout, off: usize, data: &[u8]) -> Option<MdlId> {
    let pages = rig.pick_pages(layout, (off + data.len()).div_ceil(PAGE_SIZE), &[]);
    let mdl = drv.hal.lock_pages(&pages, off, data.len())?;
    drv.hal.write_mdl(mdl, data);
    Some(mdl)
}

/// Cancels and a PnP stop with a transfer in flight, on the real device.
fn cancel_and_stop(rig: &mut Rig, window: u32) {
    let len = window as usize;
    let dma = |direction| DmaRequest {
        direction,
        device_offset: 0,
        length: window,
    };

    // (a) Cancel while the device runs the first of two elements: the
    // command finishes, the range is flushed, the request ends CANCELLED.
    if let Ok(mut drv) = rig.start_driver(
        "cancel",
        HalConfig::default(),
        EngineConfig::default(),
        true,
    ) {
        let data: Vec<u8> = (0..len).map(|_| rig.rng.byte()).collect();
        if let Some(mdl) = buffer(rig, &drv, Layout::LowHigh, 1000, &data) {
            let what = StartRequest::Dma {
                request: dma(Direction::ToDevice),
                mdl,
            };
            let r = rig.run_request_with(&mut drv, what, Intervention::CancelNow);
            let busy = rig.bar.read32(regs::REG_DMA_CMD) & 1;
            rig.check(
                matches!(r, Ok(ref c) if c.status == NtStatus::CANCELLED && c.information == 0) && busy == 0,
                &format!("cancel: a two-element write cancelled while the device ran ends CANCELLED with the device idle ({r:?})"),
            );
            drv.hal.unlock(mdl);
        }
        // The device and the engine go on normally after it.
        let case = rig.random_case(window);
        rig.round_trip(&mut drv, case, "after-cancel");
        rig.stop_driver(drv);
    } else {
        rig.check(false, "start cancel");
    }

    // (b) and (c) Cancel while waiting for the channel: TRUE (the routine
    // never runs) and FALSE (it ran; the grant is awaited, then freed).
    let busy = HalConfig {
        busy: true,
        ..HalConfig::default()
    };
    if let Ok(mut drv) = rig.start_driver("cancelq", busy, EngineConfig::default(), true) {
        for (intervention, what) in [
            (Intervention::CancelNow, "CancelAdapterChannel TRUE"),
            (
                Intervention::CancelAtGrant,
                "CancelAdapterChannel FALSE, grant awaited and freed",
            ),
        ] {
            let data: Vec<u8> = (0..64).map(|_| rig.rng.byte()).collect();
            let Some(mdl) = buffer(rig, &drv, Layout::Low, 0, &data) else {
                rig.check(false, "cancelq: could not lock a buffer");
                continue;
            };
            let request = DmaRequest {
                direction: Direction::ToDevice,
                device_offset: 0,
                length: 64,
            };
            let commands = drv.engine.stats().device_commands;
            let r =
                rig.run_request_with(&mut drv, StartRequest::Dma { request, mdl }, intervention);
            let untouched = drv.engine.stats().device_commands == commands;
            rig.check(
                matches!(r, Ok(ref c) if c.status == NtStatus::CANCELLED) && untouched,
                &format!("cancelq: {what}: CANCELLED before any device command ({r:?})"),
            );
            drv.hal.unlock(mdl);
        }
        rig.stop_driver(drv);
    } else {
        rig.check(false, "start cancelq");
    }

    // (d) PnP stop with a write in flight: it finishes, then the adapter is
    // put; a restarted device reads back exactly what was written.
    let Ok(mut drv) = rig.start_driver("stop", HalConfig::default(), EngineConfig::default(), true)
    else {
        rig.check(false, "start stop");
        return;
    };
    let data: Vec<u8> = (0..len).map(|_| rig.rng.byte()).collect();
    let Some(mdl) = buffer(rig, &drv, Layout::HighLow, 3000, &data) else {
        rig.check(false, "stop: could not lock a buffer");
        return;
    };
    let what = StartRequest::Dma {
        request: dma(Direction::ToDevice),
        mdl,
    };
    let r = rig.run_request_with(&mut drv, what, Intervention::StopNow);
    let released = drv.engine.adapter_released();
    drv.hal.unlock(mdl);
    // A request StartIo hands over while stopped is held (not failed) until
    // the restart; a removal instead fails it.
    let held_id = drv.next_request;
    drv.next_request += 1;
    let held = drv
        .engine
        .start_io(held_id, StartRequest::SelfTest, &mut rig.bar);
    let kept = drv.engine.current_request() == Some(held_id);
    let removed = drv.engine.stop(StopReason::Remove, &mut rig.bar);
    rig.check(
        matches!(r, Ok(ref c) if c.status == NtStatus::SUCCESS && c.information == len)
            && released
            && held.is_none()
            && kept
            && matches!(removed, Some(ref c) if c.request == held_id && c.status == NtStatus::DELETE_PENDING),
        &format!(
            "stop: the write in flight finished ({r:?}), the adapter was put ({released}), a later request is held ({held:?}, current {kept}) and a removal fails it ({removed:?})"
        ),
    );
    let mut violations = drv.hal.violations();
    violations.extend(drv.hal.leak_check());
    rig.check(
        violations.is_empty(),
        &format!("stop verifier: no violation, no leak {violations:?}"),
    );
    let Ok(mut drv) = rig.start_driver(
        "restart",
        HalConfig::default(),
        EngineConfig::default(),
        true,
    ) else {
        rig.check(false, "start restart");
        return;
    };
    if let Some(mdl) = buffer(rig, &drv, Layout::Low, 0, &vec![0u8; len]) {
        let what = StartRequest::Dma {
            request: dma(Direction::FromDevice),
            mdl,
        };
        let r = rig.run_request(&mut drv, what);
        let mut got = vec![0u8; len];
        drv.hal.read_mdl(mdl, &mut got);
        rig.check(
            matches!(r, Ok(ref c) if c.status == NtStatus::SUCCESS) && got == data,
            "restart: the device holds every byte of the write that was in flight at the stop",
        );
        drv.hal.unlock(mdl);
    }
    rig.stop_driver(drv);
}

fn sweep(rig: &mut Rig, window: u32) {
    let Ok(mut drv) =
        rig.start_driver("sweep", HalConfig::default(), EngineConfig::default(), true)
    else {
        rig.check(false, "start sweep");
        return;
    };
    for len in 1..=window {
        let span = window - len + 1;
        let case = Case {
            len,
            dev: (len.wrapping_mul(7919)) % span,
            a_off: (len as usize * 31) % PAGE_SIZE,
            a: LAYOUTS[len as usize % 5],
            b_off: (len as usize * 97) % PAGE_SIZE,
            b: LAYOUTS[(len as usize / 5) % 5],
        };
        rig.round_trip(&mut drv, case, "sweep");
    }
    rig.stop_driver(drv);
}

fn report(rig: &Rig, elapsed: Duration) -> bool {
    let t = &rig.totals;
    let bounced = t.hal.bounced_pages;
    let ok = t.failed == 0 && t.passed > 0;
    say(&format!(
        "HIL COUNTS round_trips={} requests={} transfers={} bytes={} bounced_pages={} direct_pages={} \
         partial_maps={} sg_elements={} max_sg_elements={} queued_grants={} interrupts={} spurious={} \
         lost_interrupts={} elapsed={:.1}s",
        t.round_trips,
        t.requests,
        t.device_commands,
        t.bytes,
        bounced,
        t.hal.direct_pages,
        t.hal.partial_maps,
        t.hal.sg_elements,
        t.hal.max_sg_elements,
        t.hal.queued,
        t.interrupts,
        t.spurious,
        t.lost_interrupts,
        elapsed.as_secs_f64()
    ));
    say(&format!("HIL {} passed, {} failed", t.passed, t.failed));
    say(&format!("HIL RESULT: {}", if ok { "PASS" } else { "FAIL" }));
    ok
}

/// What the conformance runner needs from the rig.
impl conform::Device for Rig {
    fn read32(&mut self, offset: u32) -> u32 {
        self.bar.read::<u32>(offset)
    }
    fn write32(&mut self, offset: u32, value: u32) {
        self.bar.write::<u32>(offset, value);
    }
    fn read64(&mut self, offset: u32) -> u64 {
        self.bar.read::<u64>(offset)
    }
    fn write64(&mut self, offset: u32, value: u64) {
        self.bar.write::<u64>(offset, value);
    }
    fn read16(&mut self, offset: u32) -> u16 {
        self.bar.read::<u16>(offset)
    }
    fn write16(&mut self, offset: u32, value: u16) {
        self.bar.write::<u16>(offset, value);
    }
    fn wait_us(&mut self, micros: u64) {
        std::thread::sleep(Duration::from_micros(micros));
    }
    fn irq_pending(&mut self, timeout_us: u64) -> bool {
        let Some(irq) = self.irq.as_mut() else {
            return false;
        };
        let seen = matches!(
            irq.wait(Duration::from_micros(timeout_us)),
            Ok(Wait::Interrupt(_))
        );
        seen
    }
    fn irq_count(&mut self, timeout_us: u64) -> u32 {
        let deadline = Instant::now() + Duration::from_micros(timeout_us);
        let mut count = 0u32;
        while let Some(irq) = self.irq.as_mut() {
            let left = deadline.saturating_duration_since(Instant::now());
            match irq.wait(left) {
                Ok(Wait::Interrupt(n)) => count = count.saturating_add(n),
                _ if left.is_zero() => break,
                Ok(Wait::Timeout) => {}
                Err(_) => break,
            }
        }
        count
    }
    fn irq_unmask(&mut self) {
        // Only INTx is masked by the kernel; an MSI has nothing to unmask.
        if self.irq.as_ref().is_some_and(Interrupts::is_intx) {
            let _ = self.pci.update_command(0, command::INTX_DISABLE);
        }
    }
    fn now_us(&mut self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }
    fn bus_master(&mut self, on: bool) {
        let (set, clear) = if on {
            (command::BUS_MASTER, 0)
        } else {
            (0, command::BUS_MASTER)
        };
        if let Err(e) = self.pci.update_command(set, clear) {
            say(&format!("HIL INFO bus master: {e}"));
        }
    }
    fn dma_page(&mut self) -> u64 {
        self.pool.locked_phys(self.scratch).unwrap_or(0)
    }
    fn mem_write(&mut self, addr: u64, data: &[u8]) {
        let off = addr.wrapping_sub(self.dma_page()) as usize;
        self.pool.write_bytes(self.scratch, off, data);
    }
    fn mem_read(&mut self, addr: u64, out: &mut [u8]) {
        let off = addr.wrapping_sub(self.dma_page()) as usize;
        self.pool.read_bytes(self.scratch, off, out);
    }
    fn record(&mut self, line: &str, ok: bool) {
        say(&format!("TRACE {line}"));
        if !ok {
            self.totals.failed += 1;
            say(&format!("HIL FAIL conformance {line}"));
        }
    }
}

/// The register-level sequences of [`conform`] on the real device. Each
/// step that misses its expectation was already counted as a failure by
/// [`conform::Device::record`]; this adds the one summary check.
fn conformance(rig: &mut Rig) {
    let (sequences, failed) = conform::run_all(rig);
    rig.check(
        failed == 0,
        &format!(
            "conformance: {sequences} register sequences, {failed} steps off their expectation"
        ),
    );
}
