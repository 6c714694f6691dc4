//! The model in lockstep with a real edu device: the simulator's
//! [`EduDevice`] keeps deciding time, interrupts and faults, and every
//! register access the driver makes is also made on the real device, whose
//! answer the driver gets and the model's is compared with.
//!
//! This is how the hardware-in-the-loop harness runs the driver that ships
//! (`src/`, on the simulated kernel) against QEMU's device in a Linux guest:
//! the kernel, HAL and I/O manager stay simulated, the device is real.
//!
//! - **Reads** are made on both. Where the two may differ for a moment only
//!   because virtual time and the real device's clock are not the same
//!   instant (a START the real device has not been given yet, a factorial
//!   the model still computes), the model answers; everywhere else the
//!   real value is returned and a difference is a [`Divergence`].
//! - **Writes** are forwarded, except what the model drops (DMA registers
//!   while a command runs, the factorial while one computes), so that both
//!   hold the same state. DMA addresses in RAM — bus addresses the
//!   simulated HAL handed out, meaningless in the guest — are translated to
//!   one page of guest RAM the harness locked (the *window*); reads of
//!   those registers translate back.
//! - **START** is deferred to the model's DMA timer (100 ms of virtual
//!   time later). There, after the model copied, the real device is given
//!   the same command over the window and waited for: memory → device, the
//!   model's bytes are put in the window first; device → memory, the real
//!   device's bytes are compared with the model's and, if they differ, are
//!   what lands in simulated memory. A command the model refuses (a range
//!   fault QEMU 7.2 would abort the VM on, no bus mastering) is not given
//!   to the real device; the interrupt it raises is raised there too.
//!
//! At attach the model takes the real device's state: the registers, and
//! the device buffer (read through the window; byte 4095 only on a QEMU
//! with the fixed range check, which 7.2 is not, so it is left alone).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use edudma_core::regs;

use super::{DMA_SIZE, DMA_START, DeviceFault, DmaBus, EduDevice};

/// Polls of a real register before waiting for it is a [`Divergence`].
const MAX_POLLS: u32 = 5_000;

/// What the mirror needs of the real device.
pub trait RealEdu: Send {
    /// MMIO read of `size` bytes at `offset` of BAR0.
    fn read(&mut self, offset: u64, size: u32) -> u64;
    /// MMIO write.
    fn write(&mut self, offset: u64, size: u32, value: u64);
    /// Bus address of the window: one page of RAM the device may DMA to,
    /// below its `dma_mask`.
    fn window_bus_address(&self) -> u64;
    /// Read the window's first `out.len()` bytes.
    fn read_window(&mut self, out: &mut [u8]);
    /// Write the window's first `data.len()` bytes.
    fn write_window(&mut self, data: &[u8]);
    /// Let the real device's time pass between two polls (a millisecond
    /// of sleep on hardware).
    fn pause(&mut self);
}

/// A difference between the model and the real device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Divergence {
    /// A register read gave different values.
    Register {
        /// BAR0 offset.
        offset: u64,
        /// The model's value.
        model: u64,
        /// The real device's (translated back to the simulated address).
        real: u64,
    },
    /// A device → memory DMA moved different bytes.
    Data {
        /// Which mirrored DMA (1-based).
        transfer: u64,
        /// Index of the first differing byte.
        byte: usize,
        /// The model's byte there.
        model: u8,
        /// The real device's.
        real: u8,
    },
    /// The real device did not finish a command or a factorial.
    Stuck(&'static str),
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Register {
                offset,
                model,
                real,
            } => write!(
                f,
                "register 0x{offset:02x}: model 0x{model:x}, real 0x{real:x}"
            ),
            Self::Data {
                transfer,
                byte,
                model,
                real,
            } => write!(
                f,
                "DMA {transfer}: byte {byte} model 0x{model:02x}, real 0x{real:02x}"
            ),
            Self::Stuck(what) => write!(f, "the real device never finished {what}"),
        }
    }
}

/// What the mirror did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MirrorStats {
    /// Register reads compared with the real device.
    pub reads_compared: u64,
    /// Reads the model answered (a transient the real device is not in yet).
    pub reads_transient: u64,
    /// Writes forwarded.
    pub writes_forwarded: u64,
    /// Writes dropped as the model dropped them.
    pub writes_dropped: u64,
    /// DMA commands the real device performed (the attach's included).
    pub dma_commands: u64,
    /// Commands the model refused and the real device was not given.
    pub dma_commands_withheld: u64,
    /// Factorials waited for.
    pub factorials: u64,
}

/// A shared handle on the mirror; [`EduDevice::attach_mirror`] takes one,
/// the harness keeps another to read the verdict.
#[derive(Clone)]
pub struct EduMirror(Arc<Mutex<Mirror>>);

impl fmt::Debug for EduMirror {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `try_lock`: formatting must not wait on (or deadlock with) a
        // mirror busy with the device.
        let stats = self.0.try_lock().ok().map(|m| m.stats);
        f.debug_struct("EduMirror")
            .field("stats", &stats)
            .finish_non_exhaustive()
    }
}

struct Mirror {
    real: Box<dyn RealEdu>,
    /// (simulated address, address the real device was given) of the last
    /// write to DMA source and destination.
    translated: [Option<(u64, u64)>; 2],
    /// The START the model accepted and the real device awaits.
    deferred_start: Option<u64>,
    divergences: Vec<Divergence>,
    stats: MirrorStats,
}

/// The model's state a forwarded access depends on, taken before it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ModelState {
    pub dma_running: bool,
    pub computing: bool,
}

fn is_device_buffer(address: u64) -> bool {
    (DMA_START..DMA_START + DMA_SIZE).contains(&address)
}

fn width(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    }
}

impl EduMirror {
    /// A mirror over `real`.
    pub fn new(real: Box<dyn RealEdu>) -> Self {
        Self(Arc::new(Mutex::new(Mirror {
            real,
            translated: [None; 2],
            deferred_start: None,
            divergences: Vec::new(),
            stats: MirrorStats::default(),
        })))
    }

    fn lock(&self) -> MutexGuard<'_, Mirror> {
        // A panic elsewhere while holding it leaves plain data behind.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every difference found so far.
    pub fn divergences(&self) -> Vec<Divergence> {
        self.lock().divergences.clone()
    }

    /// What the mirror did so far.
    pub fn stats(&self) -> MirrorStats {
        self.lock().stats
    }

    /// Take the real device's state into the model (see the module docs).
    pub(super) fn seed(&self, dev: &mut EduDevice) {
        let mut m = self.lock();
        // A machine dropped mid-command leaves nothing for the next one.
        m.deferred_start = None;
        m.translated = [None; 2];
        m.wait_until_idle();
        let pending = m.real.read(u64::from(regs::REG_IRQ_STATUS), 4);
        if pending != 0 {
            m.real.write(u64::from(regs::REG_IRQ_ACK), 4, pending);
        }
        // The buffer, through the window, in one command QEMU 7.2 accepts.
        let count = DMA_SIZE - 1;
        let window = m.real.window_bus_address();
        m.real.write(u64::from(regs::REG_DMA_SRC), 4, DMA_START);
        m.real.write(u64::from(regs::REG_DMA_DST), 4, window);
        m.real.write(u64::from(regs::REG_DMA_COUNT), 4, count);
        m.real.write(
            u64::from(regs::REG_DMA_CMD),
            4,
            u64::from((regs::DmaCommand::START | regs::DmaCommand::TO_RAM).bits()),
        );
        m.stats.dma_commands += 1;
        m.wait_for("the attach's DMA", |r| {
            r.read(u64::from(regs::REG_DMA_CMD), 4) & 1 == 0
        });
        m.real.read_window(&mut dev.buffer[..count as usize]);
        dev.addr4 = m.real.read(u64::from(regs::REG_LIVENESS), 4) as u32;
        dev.fact = m.real.read(u64::from(regs::REG_FACTORIAL), 4) as u32;
        dev.status = m.real.read(u64::from(regs::REG_STATUS), 4) as u32;
        dev.irq_status = m.real.read(u64::from(regs::REG_IRQ_STATUS), 4) as u32;
        dev.dma_src = m.real.read(u64::from(regs::REG_DMA_SRC), 8);
        dev.dma_dst = m.real.read(u64::from(regs::REG_DMA_DST), 8);
        dev.dma_cnt = m.real.read(u64::from(regs::REG_DMA_COUNT), 8);
        dev.dma_cmd = m.real.read(u64::from(regs::REG_DMA_CMD), 8);
        dev.intx = false;
        dev.msi_pending = false;
    }

    /// A register read: `model` is the model's answer; `settled` is false
    /// while the register is in a transient the real device is not in.
    pub(super) fn read(&self, offset: u64, size: u32, model: u64, settled: bool) -> u64 {
        let mut m = self.lock();
        let mut real = m.real.read(offset, size);
        if let Some(slot) = dma_address_slot(offset) {
            if let Some((simulated, given)) = m.translated[slot] {
                if real == given & width(size) {
                    real = simulated & width(size);
                }
            }
        }
        if !settled {
            m.stats.reads_transient += 1;
            return model;
        }
        m.stats.reads_compared += 1;
        if real != model {
            m.divergences.push(Divergence::Register {
                offset,
                model,
                real,
            });
        }
        real
    }

    /// A register write the model took; `accepted_start` is true when the
    /// model began a DMA with it.
    pub(super) fn write(
        &self,
        offset: u64,
        size: u32,
        value: u64,
        before: ModelState,
        accepted_start: bool,
    ) {
        let mut m = self.lock();
        let dma_register = (0x80..=0x98).contains(&offset);
        let dropped = (dma_register && before.dma_running)
            || (offset == u64::from(regs::REG_FACTORIAL) && before.computing);
        if dropped {
            m.stats.writes_dropped += 1;
            return;
        }
        if accepted_start {
            m.deferred_start = Some(value & width(size));
            return;
        }
        let mut value = value;
        if let Some(slot) = dma_address_slot(offset) {
            let simulated = value & width(size);
            m.translated[slot] = None;
            if !is_device_buffer(simulated) {
                value = m.real.window_bus_address();
                m.translated[slot] = Some((simulated, value));
            }
        }
        m.stats.writes_forwarded += 1;
        m.real.write(offset, size, value);
    }

    /// The model's DMA timer ran its copy (`outcome`): run the deferred
    /// command on the real device.
    pub(super) fn complete_dma(
        &self,
        dev: &EduDevice,
        bus: &mut dyn DmaBus,
        outcome: &Result<(), DeviceFault>,
    ) {
        let mut m = self.lock();
        let Some(command) = m.deferred_start.take() else {
            return;
        };
        let to_ram = command & u64::from(regs::DmaCommand::TO_RAM.bits()) != 0;
        let interrupt = command & u64::from(regs::DmaCommand::IRQ.bits()) != 0;
        if outcome.is_err() || !dev.bus_master {
            m.stats.dma_commands_withheld += 1;
            if interrupt {
                m.real.write(
                    u64::from(regs::REG_IRQ_RAISE),
                    4,
                    u64::from(regs::IrqBits::DMA.bits()),
                );
            }
            return;
        }
        let device_address = if to_ram { dev.dma_src } else { dev.dma_dst };
        let start = (device_address - DMA_START) as usize;
        let data = &dev.buffer[start..start + dev.dma_cnt as usize];
        if !to_ram {
            m.real.write_window(data);
        }
        m.real.write(u64::from(regs::REG_DMA_CMD), 4, command);
        m.stats.dma_commands += 1;
        let transfer = m.stats.dma_commands;
        m.wait_for("a DMA command", |r| {
            r.read(u64::from(regs::REG_DMA_CMD), 4) & 1 == 0
        });
        if to_ram {
            let mut landed = vec![0u8; data.len()];
            m.real.read_window(&mut landed);
            if let Some(byte) = (0..data.len()).find(|&i| data[i] != landed[i]) {
                m.divergences.push(Divergence::Data {
                    transfer,
                    byte,
                    model: data[byte],
                    real: landed[byte],
                });
                // The driver gets what the real device wrote.
                let _ = bus.dma_write(dev.dma_dst, &landed);
            }
        }
    }

    /// The model's factorial finished: wait for the real one.
    pub(super) fn factorial_done(&self) {
        let mut m = self.lock();
        m.stats.factorials += 1;
        m.wait_for("a factorial", |r| {
            r.read(u64::from(regs::REG_STATUS), 4) & u64::from(regs::Status::COMPUTING.bits()) == 0
        });
    }
}

/// 0 for the DMA source register, 1 for the destination.
fn dma_address_slot(offset: u64) -> Option<usize> {
    match offset {
        o if o == u64::from(regs::REG_DMA_SRC) => Some(0),
        o if o == u64::from(regs::REG_DMA_DST) => Some(1),
        _ => None,
    }
}

impl Mirror {
    fn wait_for(&mut self, what: &'static str, done: impl Fn(&mut dyn RealEdu) -> bool) {
        for _ in 0..MAX_POLLS {
            if done(&mut *self.real) {
                return;
            }
            self.real.pause();
        }
        self.divergences.push(Divergence::Stuck(what));
    }

    fn wait_until_idle(&mut self) {
        self.wait_for("the command in flight at attach", |r| {
            r.read(u64::from(regs::REG_DMA_CMD), 4) & 1 == 0
        });
        self.wait_for("the factorial in flight at attach", |r| {
            r.read(u64::from(regs::REG_STATUS), 4) & u64::from(regs::Status::COMPUTING.bits()) == 0
        });
    }
}

/// A second model standing in for the real device: what the host tests
/// mirror onto, so that the mirror and the lockstep run are exercised
/// without hardware. Its DMA happens on [`RealEdu::pause`], through a
/// window page of its own.
#[derive(Debug)]
pub struct ModelDevice {
    device: EduDevice,
    window: Box<[u8; 4096]>,
    window_bus_address: u64,
    timers: Vec<super::DeviceTimer>,
}

impl ModelDevice {
    /// A device with bus mastering on (as the harness sets it), registers
    /// holding `junk`, its window at `window_bus_address`.
    pub fn new(config: super::EduConfig, junk: u64, window_bus_address: u64) -> Self {
        let mut device = EduDevice::new(config, junk);
        device.set_bus_master(true);
        Self {
            device,
            window: Box::new([0; 4096]),
            window_bus_address,
            timers: Vec::new(),
        }
    }

    /// The model inside.
    pub fn device(&self) -> &EduDevice {
        &self.device
    }
}

/// The stand-in's bus: only its window page exists.
struct WindowBus<'a> {
    window: &'a mut [u8; 4096],
    base: u64,
}

impl WindowBus<'_> {
    fn range(
        &self,
        address: u64,
        len: usize,
        write: bool,
    ) -> Result<std::ops::Range<usize>, DeviceFault> {
        let start = address.wrapping_sub(self.base) as usize;
        match start.checked_add(len) {
            Some(end) if address >= self.base && end <= self.window.len() => Ok(start..end),
            _ => Err(DeviceFault::StrayDma {
                address,
                length: len as u64,
                write,
            }),
        }
    }
}

impl DmaBus for WindowBus<'_> {
    fn dma_read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), DeviceFault> {
        let range = self.range(address, buf.len(), false)?;
        buf.copy_from_slice(&self.window[range]);
        Ok(())
    }
    fn dma_write(&mut self, address: u64, data: &[u8]) -> Result<(), DeviceFault> {
        let range = self.range(address, data.len(), true)?;
        self.window[range].copy_from_slice(data);
        Ok(())
    }
}

impl RealEdu for ModelDevice {
    fn read(&mut self, offset: u64, size: u32) -> u64 {
        self.device.read(offset, size)
    }
    fn write(&mut self, offset: u64, size: u32, value: u64) {
        if let Some(timer) = self.device.write(offset, size, value) {
            self.timers.push(timer);
        }
    }
    fn window_bus_address(&self) -> u64 {
        self.window_bus_address
    }
    fn read_window(&mut self, out: &mut [u8]) {
        let n = out.len().min(self.window.len());
        out[..n].copy_from_slice(&self.window[..n]);
    }
    fn write_window(&mut self, data: &[u8]) {
        let n = data.len().min(self.window.len());
        self.window[..n].copy_from_slice(&data[..n]);
    }
    fn pause(&mut self) {
        for timer in std::mem::take(&mut self.timers) {
            match timer {
                super::DeviceTimer::Dma(_) => {
                    let mut bus = WindowBus {
                        window: &mut self.window,
                        base: self.window_bus_address,
                    };
                    let _ = self.device.dma_timer(&mut bus);
                }
                super::DeviceTimer::Factorial(_) => self.device.factorial_done(),
            }
        }
    }
}

/// A stand-in shared with whoever checks it afterwards (a test keeps one
/// handle and gives the mirror the other).
impl RealEdu for Arc<Mutex<ModelDevice>> {
    fn read(&mut self, offset: u64, size: u32) -> u64 {
        stand_in(self).read(offset, size)
    }
    fn write(&mut self, offset: u64, size: u32, value: u64) {
        stand_in(self).write(offset, size, value)
    }
    fn window_bus_address(&self) -> u64 {
        stand_in(self).window_bus_address()
    }
    fn read_window(&mut self, out: &mut [u8]) {
        stand_in(self).read_window(out)
    }
    fn write_window(&mut self, data: &[u8]) {
        stand_in(self).write_window(data)
    }
    fn pause(&mut self) {
        stand_in(self).pause()
    }
}

fn stand_in(shared: &Mutex<ModelDevice>) -> MutexGuard<'_, ModelDevice> {
    // A test that panicked while holding it left plain data behind.
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::super::{DeviceTimer, EduConfig};
    use super::*;
    use regs::*;

    const WINDOW: u64 = 0x0020_0000;

    /// Memory of the simulated machine: 64 KiB at 0.
    struct Ram(Vec<u8>);
    impl DmaBus for Ram {
        fn dma_read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), DeviceFault> {
            let a = address as usize;
            buf.copy_from_slice(&self.0[a..a + buf.len()]);
            Ok(())
        }
        fn dma_write(&mut self, address: u64, data: &[u8]) -> Result<(), DeviceFault> {
            let a = address as usize;
            self.0[a..a + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    /// A mirrored model and a handle on the stand-in behind it.
    fn mirrored(real: ModelDevice) -> (EduDevice, EduMirror, Arc<Mutex<ModelDevice>>) {
        let shared = Arc::new(Mutex::new(real));
        let mirror = EduMirror::new(Box::new(shared.clone()));
        let mut model = EduDevice::new(EduConfig::default(), 0x5555_5555_5555_5555);
        model.set_bus_master(true);
        model.attach_mirror(mirror.clone());
        (model, mirror, shared)
    }

    fn real_with_buffer(fill: u8) -> ModelDevice {
        let mut real = ModelDevice::new(EduConfig::default(), 0x1234_5678_9ABC_DEF0, WINDOW);
        real.device.buffer_mut().fill(fill);
        real
    }

    #[test]
    fn attach_takes_the_real_registers_and_buffer() {
        let (mut model, mirror, _real) = mirrored(real_with_buffer(0x3C));
        assert_eq!(&model.buffer()[..4095], &[0x3C; 4095][..]);
        assert_eq!(model.read(u64::from(REG_LIVENESS), 4), 0x9ABC_DEF0);
        assert_eq!(
            model.read(u64::from(REG_DMA_COUNT), 4),
            4095,
            "the attach's DMA"
        );
        assert!(
            mirror.divergences().is_empty(),
            "{:?}",
            mirror.divergences()
        );
    }

    #[test]
    fn ram_addresses_go_through_the_window_and_read_back_untranslated() {
        let (mut model, mirror, real) = mirrored(real_with_buffer(0));
        model.write(u64::from(REG_DMA_SRC), 4, 0x1000);
        model.write(u64::from(REG_DMA_DST), 4, 0x40010);
        assert_eq!(
            real.lock().unwrap().device.read(u64::from(REG_DMA_SRC), 4),
            WINDOW
        );
        assert_eq!(
            real.lock().unwrap().device.read(u64::from(REG_DMA_DST), 4),
            0x40010
        );
        assert_eq!(model.read(u64::from(REG_DMA_SRC), 4), 0x1000);
        assert!(
            mirror.divergences().is_empty(),
            "{:?}",
            mirror.divergences()
        );
    }

    #[test]
    fn start_waits_for_the_models_timer_and_the_data_is_compared() {
        let (mut model, mirror, real) = mirrored(real_with_buffer(0));
        let mut ram = Ram((0..0x10000u32).map(|i| (i * 7) as u8).collect());
        model.write(u64::from(REG_DMA_SRC), 4, 0x1000);
        model.write(u64::from(REG_DMA_DST), 4, 0x40010);
        model.write(u64::from(REG_DMA_COUNT), 4, 100);
        let started = mirror.stats().dma_commands;
        assert_eq!(
            model.write(u64::from(REG_DMA_CMD), 4, 0x5),
            Some(DeviceTimer::Dma(super::super::DMA_LATENCY_NS))
        );
        assert!(!real.lock().unwrap().device.busy(), "START is deferred");
        assert_eq!(
            model.read(u64::from(REG_DMA_CMD), 4),
            0x5,
            "the model answers"
        );
        // A write the model drops while busy is not forwarded either.
        model.write(u64::from(REG_DMA_COUNT), 4, 7);
        assert_eq!(
            real.lock()
                .unwrap()
                .device
                .read(u64::from(REG_DMA_COUNT), 4),
            100
        );
        model.dma_timer(&mut ram).unwrap();
        assert_eq!(mirror.stats().dma_commands, started + 1);
        assert_eq!(
            &real.lock().unwrap().device.buffer()[0x10..0x10 + 100],
            &ram.0[0x1000..0x1000 + 100],
            "the model's bytes reached the real buffer"
        );
        assert_eq!(model.read(u64::from(REG_IRQ_STATUS), 4), 0x100);
        model.write(u64::from(REG_IRQ_ACK), 4, 0x100);
        // Back to RAM: equal data, no divergence.
        model.write(u64::from(REG_DMA_SRC), 4, 0x40010);
        model.write(u64::from(REG_DMA_DST), 4, 0x8000);
        model.write(u64::from(REG_DMA_CMD), 4, 0x3);
        model.dma_timer(&mut ram).unwrap();
        assert_eq!(ram.0[0x8000..0x8000 + 100], ram.0[0x1000..0x1000 + 100]);
        assert!(
            mirror.divergences().is_empty(),
            "{:?}",
            mirror.divergences()
        );
    }

    #[test]
    fn different_bytes_from_the_real_device_are_a_divergence_and_land_in_memory() {
        let (mut model, mirror, real) = mirrored(real_with_buffer(0));
        real.lock().unwrap().device.buffer_mut()[0x20] = 0xEE;
        let mut ram = Ram(vec![0; 0x10000]);
        model.write(u64::from(REG_DMA_SRC), 4, 0x40000);
        model.write(u64::from(REG_DMA_DST), 4, 0x3000);
        model.write(u64::from(REG_DMA_COUNT), 4, 64);
        model.write(u64::from(REG_DMA_CMD), 4, 0x3);
        model.dma_timer(&mut ram).unwrap();
        assert!(matches!(
            mirror.divergences()[..],
            [Divergence::Data {
                byte: 0x20,
                model: 0,
                real: 0xEE,
                ..
            }]
        ));
        assert_eq!(ram.0[0x3020], 0xEE, "the driver gets the real bytes");
    }

    #[test]
    fn a_refused_command_is_withheld_but_its_interrupt_is_raised() {
        let (mut model, mirror, real) = mirrored(real_with_buffer(0));
        let mut ram = Ram(vec![0; 0x10000]);
        model.write(u64::from(REG_DMA_SRC), 4, 0x1000);
        model.write(u64::from(REG_DMA_DST), 4, 0x40800);
        model.write(u64::from(REG_DMA_COUNT), 4, 4096);
        model.write(u64::from(REG_DMA_CMD), 4, 0x5);
        assert!(model.dma_timer(&mut ram).is_err(), "out of range");
        assert_eq!(mirror.stats().dma_commands_withheld, 1);
        assert_eq!(
            real.lock().unwrap().device.transfers(),
            1,
            "only the attach's"
        );
        assert_eq!(model.read(u64::from(REG_IRQ_STATUS), 4), 0x100);
        assert!(
            mirror.divergences().is_empty(),
            "{:?}",
            mirror.divergences()
        );
    }

    #[test]
    fn a_register_that_differs_is_a_divergence_and_the_real_value_is_read() {
        let (mut model, mirror, real) = mirrored(real_with_buffer(0));
        real.lock().unwrap().write(u64::from(REG_LIVENESS), 4, 0);
        assert_eq!(model.read(u64::from(REG_LIVENESS), 4), 0xFFFF_FFFF);
        assert!(matches!(
            mirror.divergences()[..],
            [Divergence::Register {
                offset: 4,
                real: 0xFFFF_FFFF,
                ..
            }]
        ));
    }

    #[test]
    fn a_factorial_waits_for_the_real_one() {
        let (mut model, mirror, _real) = mirrored(real_with_buffer(0));
        model.write(u64::from(REG_FACTORIAL), 4, 10);
        assert_eq!(
            model.read(u64::from(REG_STATUS), 4) & 1,
            1,
            "the model computes"
        );
        model.write(u64::from(REG_FACTORIAL), 4, 3);
        assert_eq!(mirror.stats().writes_dropped, 1, "dropped while computing");
        model.factorial_done();
        assert_eq!(model.read(u64::from(REG_FACTORIAL), 4), 3_628_800);
        assert_eq!(mirror.stats().factorials, 1);
        assert!(
            mirror.divergences().is_empty(),
            "{:?}",
            mirror.divergences()
        );
    }

    #[test]
    fn a_device_that_never_finishes_is_stuck_not_a_hang() {
        struct Wedged;
        impl RealEdu for Wedged {
            fn read(&mut self, offset: u64, _size: u32) -> u64 {
                if offset == u64::from(REG_DMA_CMD) {
                    1
                } else {
                    0
                }
            }
            fn write(&mut self, _offset: u64, _size: u32, _value: u64) {}
            fn window_bus_address(&self) -> u64 {
                WINDOW
            }
            fn read_window(&mut self, _out: &mut [u8]) {}
            fn write_window(&mut self, _data: &[u8]) {}
            fn pause(&mut self) {}
        }
        let mirror = EduMirror::new(Box::new(Wedged));
        let mut model = EduDevice::new(EduConfig::default(), 0);
        model.attach_mirror(mirror.clone());
        assert!(
            mirror
                .divergences()
                .contains(&Divergence::Stuck("the command in flight at attach"))
        );
    }
}
