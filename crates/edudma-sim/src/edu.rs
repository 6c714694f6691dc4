//! QEMU's `edu` PCI device (`hw/misc/edu.c`), register for register.
//!
//! The model is plain data: it never schedules anything itself. A register
//! write answers with [`DeviceTimer`]s for the machine to arm; when one
//! fires, the machine calls [`EduDevice::dma_timer`] or
//! [`EduDevice::factorial_done`]. DMA goes through a [`DmaBus`], which the
//! machine implements over physical memory and the HAL's mappings.

use edudma_core::regs;

use crate::sched::MS;

pub mod mirror;

use mirror::{EduMirror, ModelState};

/// Identification register value of the edu device (version 1.0).
pub const EDU_ID: u32 = 0x0100_00ED;
/// Virtual time a DMA transfer takes, as in QEMU (100 ms).
pub const DMA_LATENCY_NS: u64 = 100_000_000;

/// The delay from `now_ns` until QEMU's DMA timer fires: edu arms it with
/// `timer_mod(&dma_timer, qemu_clock_get_ms(QEMU_CLOCK_VIRTUAL) + 100)`, a
/// millisecond clock truncated before 100 is added, so the copy lands more
/// than 99 and at most 100 ms after START. (A loaded host delays it
/// further; the machine adds that.)
pub fn dma_timer_delay(now_ns: u64) -> u64 {
    DMA_LATENCY_NS - now_ns % MS
}

/// Virtual time the factorial thread takes.
pub const FACTORIAL_LATENCY_NS: u64 = 20_000;

const DMA_START: u64 = regs::DEVICE_BUFFER_ADDR;
const DMA_SIZE: u64 = regs::DEVICE_BUFFER_SIZE as u64;

/// Settings of the device (QEMU properties and version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EduConfig {
    /// The `dma_mask` property (default `0x0FFF_FFFF`, 28 bits).
    pub dma_mask: u64,
    /// QEMU 8.2.1 or newer: a DMA ending exactly at 0x41000 is allowed.
    /// Older QEMU (Debian 12's 7.2) aborts the VM on it.
    pub fixed_range_check: bool,
    /// Flip one byte of the `n`th DMA transfer (1-based) at this index of
    /// the transfer: fault injection that a data check must catch.
    pub corrupt: Option<CorruptByte>,
    /// A stalled device (fault injection: a hung host thread, a wedged
    /// bus): every DMA lands this much later than QEMU's 100 ms.
    pub dma_stall_ns: u64,
}

impl Default for EduConfig {
    fn default() -> Self {
        Self {
            dma_mask: (1 << regs::DMA_ADDRESS_BITS) - 1,
            fixed_range_check: false,
            corrupt: None,
            dma_stall_ns: 0,
        }
    }
}

/// A byte to corrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CorruptByte {
    /// Which DMA transfer (1 = the first the device performs).
    pub transfer: u64,
    /// Index of the byte inside that transfer (taken modulo its count).
    pub byte: u32,
}

/// Something the device did that would crash or corrupt a real VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceFault {
    /// The device-side range check failed: QEMU aborts the VM.
    RangeOutOfBounds {
        /// Device address.
        start: u64,
        /// Count.
        count: u64,
        /// The pre-8.2.1 off-by-one is what rejected it.
        off_by_one: bool,
    },
    /// The bus address had bits above `dma_mask`: the data went to the
    /// aliased low page (QEMU prints "EDU: clamping DMA").
    AddressClamped {
        /// Address programmed.
        address: u64,
        /// Address used.
        clamped: u64,
    },
    /// The device touched bus addresses that no mapping gave it.
    StrayDma {
        /// Bus address.
        address: u64,
        /// Bytes.
        length: u64,
        /// True for a device → memory write.
        write: bool,
    },
}

/// A timer the device wants armed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceTimer {
    /// Call [`EduDevice::dma_timer`] after this many ns.
    Dma(u64),
    /// Call [`EduDevice::factorial_done`] after this many ns.
    Factorial(u64),
}

/// The PCI bus as the device's DMA engine sees it.
pub trait DmaBus {
    /// Read `buf.len()` bytes at a bus address (memory → device).
    fn dma_read(&mut self, address: u64, buf: &mut [u8]) -> Result<(), DeviceFault>;
    /// Write bytes at a bus address (device → memory).
    fn dma_write(&mut self, address: u64, data: &[u8]) -> Result<(), DeviceFault>;
}

/// The device.
#[derive(Clone, Debug)]
pub struct EduDevice {
    config: EduConfig,
    addr4: u32,
    fact: u32,
    status: u32,
    irq_status: u32,
    dma_src: u64,
    dma_dst: u64,
    dma_cnt: u64,
    dma_cmd: u64,
    buffer: Box<[u8; 4096]>,
    /// PCI command register bit 2.
    bus_master: bool,
    /// MSI capability enabled (the OS connected a message-signaled interrupt).
    msi_enabled: bool,
    /// INTx level.
    intx: bool,
    /// MSI messages sent and not yet taken by the interrupt controller.
    msi_pending: bool,
    present: bool,
    transfers: u64,
    transfers_without_bus_master: u64,
    /// MSI messages dropped because Bus Master Enable was clear.
    msis_lost: u64,
    faults: Vec<DeviceFault>,
    /// A real device in lockstep ([`mirror`]), in the hardware-in-the-loop run.
    mirror: Option<EduMirror>,
}

impl EduDevice {
    /// A device as QEMU creates it. Registers hold `junk` (they have no reset
    /// handler and keep their values across VM resets).
    pub fn new(config: EduConfig, junk: u64) -> Self {
        Self {
            config,
            addr4: junk as u32,
            fact: (junk >> 32) as u32,
            status: 0,
            irq_status: 0,
            dma_src: junk & 0xFFFF_F000,
            dma_dst: junk.rotate_left(17) & 0xFFFF,
            dma_cnt: junk & 0xFFF,
            dma_cmd: 0,
            buffer: Box::new([0u8; 4096]),
            bus_master: false,
            msi_enabled: false,
            intx: false,
            msi_pending: false,
            present: true,
            transfers: 0,
            transfers_without_bus_master: 0,
            msis_lost: 0,
            faults: Vec::new(),
            mirror: None,
        }
    }

    /// Run in lockstep with a real device from now on: the model takes its
    /// registers and buffer, and every access goes to both ([`mirror`]).
    pub fn attach_mirror(&mut self, mirror: EduMirror) {
        mirror.seed(self);
        self.mirror = Some(mirror);
    }

    fn state(&self) -> ModelState {
        ModelState {
            dma_running: self.dma_running(),
            computing: self.status & regs::Status::COMPUTING.bits() != 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EduConfig {
        &self.config
    }

    /// The settings, for change (fault injection during a run).
    pub fn config_mut(&mut self) -> &mut EduConfig {
        &mut self.config
    }

    /// MMIO read of `size` bytes at `offset` (QEMU `edu_mmio_read`).
    pub fn read(&mut self, offset: u64, size: u32) -> u64 {
        if !self.present {
            return u64::MAX >> (64 - 8 * size.clamp(1, 8));
        }
        let value = self.model_read(offset, size);
        match &self.mirror {
            Some(mirror) => {
                let state = self.state();
                // Transients of virtual time the real device is not in: a
                // START not given to it yet, a factorial the model computes.
                let transient = (offset == u64::from(regs::REG_DMA_CMD) && state.dma_running)
                    || (matches!(offset, 0x08 | 0x20) && state.computing);
                mirror.read(offset, size, value, !transient)
            }
            None => value,
        }
    }

    fn model_read(&self, offset: u64, size: u32) -> u64 {
        if size < 4 {
            // QEMU's memory core refuses accesses below min_access_size
            // before edu_mmio_read runs and returns 0 (measured on 7.2).
            return 0;
        }
        let all_ones = if size == 8 {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        if offset < 0x80 && size != 4 {
            return all_ones;
        }
        if offset >= 0x80 && size != 4 && size != 8 {
            return all_ones;
        }
        let value = match offset {
            0x00 => u64::from(EDU_ID),
            0x04 => u64::from(self.addr4),
            0x08 => u64::from(self.fact),
            0x20 => u64::from(self.status),
            0x24 => u64::from(self.irq_status),
            0x80 => self.dma_src,
            0x88 => self.dma_dst,
            0x90 => self.dma_cnt,
            0x98 => self.dma_cmd,
            _ => u64::MAX,
        };
        if size == 4 {
            value & 0xFFFF_FFFF
        } else {
            value
        }
    }

    fn dma_running(&self) -> bool {
        self.dma_cmd & 1 != 0
    }

    /// MMIO write (QEMU `edu_mmio_write`). Returns a timer to arm, if any.
    pub fn write(&mut self, offset: u64, size: u32, value: u64) -> Option<DeviceTimer> {
        if !self.present {
            return None;
        }
        let before = self.state();
        let timer = self.model_write(offset, size, value);
        if let Some(mirror) = &self.mirror {
            let started = matches!(timer, Some(DeviceTimer::Dma(_)));
            mirror.write(offset, size, value, before, started);
        }
        timer
    }

    fn model_write(&mut self, offset: u64, size: u32, value: u64) -> Option<DeviceTimer> {
        if offset < 0x80 && size != 4 {
            return None;
        }
        if offset >= 0x80 && size != 4 && size != 8 {
            return None;
        }
        let value = if size == 4 {
            value & 0xFFFF_FFFF
        } else {
            value
        };
        match offset {
            0x04 => self.addr4 = !(value as u32),
            0x08 if self.status & regs::Status::COMPUTING.bits() == 0 => {
                self.fact = value as u32;
                self.status |= regs::Status::COMPUTING.bits();
                return Some(DeviceTimer::Factorial(FACTORIAL_LATENCY_NS));
            }
            0x20 => {
                if value as u32 & regs::Status::IRQ_ON_FACTORIAL.bits() != 0 {
                    self.status |= regs::Status::IRQ_ON_FACTORIAL.bits();
                } else {
                    self.status &= !regs::Status::IRQ_ON_FACTORIAL.bits();
                }
            }
            0x60 => self.raise_irq(value as u32),
            0x64 => self.lower_irq(value as u32),
            0x80 if !self.dma_running() => self.dma_src = value,
            0x88 if !self.dma_running() => self.dma_dst = value,
            0x90 if !self.dma_running() => self.dma_cnt = value,
            0x98 if value & 1 != 0 && !self.dma_running() => {
                self.dma_cmd = value;
                return Some(DeviceTimer::Dma(DMA_LATENCY_NS));
            }
            _ => {}
        }
        None
    }

    fn raise_irq(&mut self, bits: u32) {
        self.irq_status |= bits;
        if self.irq_status != 0 {
            if self.msi_enabled {
                // An MSI is a memory write by the device, through the same
                // bus-master address space as its DMA (QEMU's
                // `msi_send_message` writes to `bus_master_as`, which PCI
                // disables while Bus Master Enable is clear): without bus
                // mastering the message is lost; irq_status keeps the bits.
                if self.bus_master {
                    self.msi_pending = true;
                } else {
                    self.msis_lost += 1;
                }
            } else {
                self.intx = true;
            }
        }
    }

    fn lower_irq(&mut self, bits: u32) {
        self.irq_status &= !bits;
        if self.irq_status == 0 && !self.msi_enabled {
            self.intx = false;
        }
    }

    /// The factorial thread finished (QEMU `edu_fact_thread`).
    pub fn factorial_done(&mut self) {
        if !self.present || self.status & regs::Status::COMPUTING.bits() == 0 {
            return;
        }
        self.fact = regs::factorial_u32(self.fact);
        if let Some(mirror) = &self.mirror {
            mirror.factorial_done();
        }
        self.status &= !regs::Status::COMPUTING.bits();
        if self.status & regs::Status::IRQ_ON_FACTORIAL.bits() != 0 {
            self.raise_irq(regs::IrqBits::FACTORIAL.bits());
        }
    }

    fn range_ok(&self, start: u64, count: u64) -> Result<(), DeviceFault> {
        let end = start.checked_add(count);
        // QEMU 8.2.1 to 9.x fixed the upper bound but keep `end1 > addr`
        // with `hw_error`: an empty DMA still aborts the VM (only the newest
        // QEMU merely logs). The fixed mode models that strictest fixed QEMU.
        let ok_fixed =
            start >= DMA_START && count > 0 && end.is_some_and(|e| e <= DMA_START + DMA_SIZE);
        let ok = if self.config.fixed_range_check {
            ok_fixed
        } else {
            // QEMU < 8.2.1: `within(end1)` is exclusive and `end1 > addr`
            // rejects an empty range (measured on 7.2: count 0 aborts too).
            start >= DMA_START && count > 0 && end.is_some_and(|e| e < DMA_START + DMA_SIZE)
        };
        if ok {
            Ok(())
        } else {
            Err(DeviceFault::RangeOutOfBounds {
                start,
                count,
                off_by_one: ok_fixed,
            })
        }
    }

    fn clamp(&self, address: u64) -> Result<u64, DeviceFault> {
        let clamped = address & self.config.dma_mask;
        if clamped == address {
            Ok(address)
        } else {
            Err(DeviceFault::AddressClamped { address, clamped })
        }
    }

    /// The 100 ms DMA timer fired (QEMU `edu_dma_timer`): the whole copy
    /// happens now, then the run bit clears and the interrupt is raised.
    /// A fault is recorded (and returned) instead of corrupting memory.
    pub fn dma_timer(&mut self, bus: &mut dyn DmaBus) -> Result<(), DeviceFault> {
        if !self.present || !self.dma_running() {
            return Ok(());
        }
        let result = self.do_dma(bus);
        if let Err(fault) = &result {
            self.faults.push(fault.clone());
        }
        if let Some(mirror) = self.mirror.clone() {
            mirror.complete_dma(self, bus, &result);
        }
        self.dma_cmd &= !1;
        if self.dma_cmd & regs::DmaCommand::IRQ.bits() as u64 != 0 {
            self.raise_irq(regs::IrqBits::DMA.bits());
        }
        result
    }

    fn do_dma(&mut self, bus: &mut dyn DmaBus) -> Result<(), DeviceFault> {
        let to_ram = self.dma_cmd & regs::DmaCommand::TO_RAM.bits() as u64 != 0;
        let count = self.dma_cnt;
        let device_addr = if to_ram { self.dma_src } else { self.dma_dst };
        self.range_ok(device_addr, count)?;
        self.transfers += 1;
        let start = (device_addr - DMA_START) as usize;
        let n = count as usize;
        let corrupt_at = self
            .config
            .corrupt
            .filter(|c| c.transfer == self.transfers && n > 0)
            .map(|c| c.byte as usize % n);
        if !self.bus_master {
            // QEMU: with Bus Master Enable clear, writes to RAM go nowhere
            // and reads from RAM return zeros, which land in the device
            // buffer (measured on 7.2).
            self.transfers_without_bus_master += 1;
            if !to_ram {
                self.buffer[start..start + n].fill(0);
            }
            return Ok(());
        }
        if to_ram {
            let address = self.clamp(self.dma_dst)?;
            let mut data = self.buffer[start..start + n].to_vec();
            if let Some(i) = corrupt_at {
                data[i] ^= 0x5A;
            }
            bus.dma_write(address, &data)
        } else {
            let address = self.clamp(self.dma_src)?;
            let mut data = vec![0u8; n];
            bus.dma_read(address, &mut data)?;
            if let Some(i) = corrupt_at {
                data[i] ^= 0x5A;
            }
            self.buffer[start..start + n].copy_from_slice(&data);
            Ok(())
        }
    }

    /// True while a DMA command runs.
    pub fn busy(&self) -> bool {
        self.present && self.dma_running()
    }

    /// The bus range a running transfer will touch: (address, count, to_ram).
    pub fn active_bus_range(&self) -> Option<(u64, u64, bool)> {
        // Without Bus Master Enable the device starts no bus transaction:
        // a command it still owns can no longer touch memory.
        if !self.busy() || !self.bus_master {
            return None;
        }
        let to_ram = self.dma_cmd & regs::DmaCommand::TO_RAM.bits() as u64 != 0;
        let address = if to_ram { self.dma_dst } else { self.dma_src };
        Some((address, self.dma_cnt, to_ram))
    }

    /// INTx is asserted.
    pub fn intx_asserted(&self) -> bool {
        self.present && self.intx && !self.msi_enabled
    }

    /// Take the pending MSI message, if any.
    pub fn take_msi(&mut self) -> bool {
        self.present && std::mem::take(&mut self.msi_pending)
    }

    /// Set or clear PCI Bus Master Enable.
    pub fn set_bus_master(&mut self, on: bool) {
        self.bus_master = on;
    }

    /// PCI Bus Master Enable.
    pub fn bus_master(&self) -> bool {
        self.bus_master
    }

    /// Enable or disable the MSI capability.
    pub fn set_msi_enabled(&mut self, on: bool) {
        self.msi_enabled = on;
        if on {
            self.intx = false;
        }
    }

    /// A VM reset (reboot without power-off): the PCI core resets the
    /// function's config space (QEMU `pci_device_reset`: command register
    /// cleared, so Bus Master Enable is off; MSI disabled; INTx deasserted),
    /// but edu registers no reset handler, so its registers — `status` and
    /// `irq_status` included — and a DMA in flight keep going.
    pub fn vm_reset(&mut self) {
        self.bus_master = false;
        self.msi_enabled = false;
        self.msi_pending = false;
        self.intx = false;
    }

    /// MSI messages lost because Bus Master Enable was clear.
    pub fn msis_lost(&self) -> u64 {
        self.msis_lost
    }

    /// The device left the bus (surprise removal): reads all-ones, no DMA,
    /// no interrupts.
    pub fn remove(&mut self) {
        self.present = false;
        self.intx = false;
        self.msi_pending = false;
    }

    /// Still on the bus.
    pub fn present(&self) -> bool {
        self.present
    }

    /// The device's 4 KiB DMA buffer.
    pub fn buffer(&self) -> &[u8; 4096] {
        &self.buffer
    }

    /// Fill the device buffer (test setup).
    pub fn buffer_mut(&mut self) -> &mut [u8; 4096] {
        &mut self.buffer
    }

    /// DMA transfers performed (range check passed).
    pub fn transfers(&self) -> u64 {
        self.transfers
    }

    /// Transfers that moved nothing because Bus Master Enable was clear.
    pub fn transfers_without_bus_master(&self) -> u64 {
        self.transfers_without_bus_master
    }

    /// Faults recorded.
    pub fn faults(&self) -> &[DeviceFault] {
        &self.faults
    }

    /// Interrupt status register.
    pub fn irq_status(&self) -> u32 {
        self.irq_status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edudma_core::regs::*;

    struct FlatBus(Vec<u8>);
    impl DmaBus for FlatBus {
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

    fn dev() -> EduDevice {
        let mut d = EduDevice::new(EduConfig::default(), 0xDEAD_BEEF_1234_5678);
        d.set_bus_master(true);
        d
    }

    #[test]
    fn identity_liveness_and_access_sizes() {
        let mut d = dev();
        assert_eq!(d.read(0, 4), 0x0100_00ED);
        assert_eq!(d.read(0, 2), 0, "measured on QEMU 7.2: narrow reads give 0");
        d.write(0x04, 4, 0x1234_5678);
        assert_eq!(d.read(0x04, 4), !0x1234_5678u32 as u64);
        d.write(0x04, 2, 0);
        assert_eq!(d.read(0x04, 4), !0x1234_5678u32 as u64);
        assert_eq!(d.read(0x44, 4), 0xFFFF_FFFF);
        d.write(0x80, 8, 0x1_0000_1000);
        assert_eq!(d.read(0x80, 8), 0x1_0000_1000);
        d.write(0x80, 4, 0xFFFF_FFFF_0000_2000);
        assert_eq!(d.read(0x80, 8), 0x2000);
        assert_eq!(d.read(0x80, 1), 0);
    }

    #[test]
    fn factorial_with_and_without_interrupt() {
        let mut d = dev();
        assert_eq!(
            d.write(REG_FACTORIAL as u64, 4, 5),
            Some(DeviceTimer::Factorial(FACTORIAL_LATENCY_NS))
        );
        assert_eq!(d.read(REG_STATUS as u64, 4) & 1, 1);
        assert_eq!(
            d.write(REG_FACTORIAL as u64, 4, 7),
            None,
            "ignored while computing"
        );
        d.factorial_done();
        assert_eq!(d.read(REG_FACTORIAL as u64, 4), 120);
        assert!(!d.intx_asserted());
        d.write(REG_STATUS as u64, 4, 0x80);
        d.write(REG_FACTORIAL as u64, 4, 13);
        d.factorial_done();
        assert_eq!(d.read(REG_FACTORIAL as u64, 4), factorial_u32(13) as u64);
        assert!(d.intx_asserted());
        assert_eq!(d.read(REG_IRQ_STATUS as u64, 4), 1);
        d.write(REG_IRQ_ACK as u64, 4, 1);
        assert!(!d.intx_asserted());
    }

    #[test]
    fn dma_round_trip_and_dropped_writes_while_busy() {
        let mut d = dev();
        let mut bus = FlatBus((0..0x10000u32).map(|i| i as u8).collect());
        d.write(REG_DMA_SRC as u64, 4, 0x1000);
        d.write(REG_DMA_DST as u64, 4, 0x40010);
        d.write(REG_DMA_COUNT as u64, 4, 100);
        assert_eq!(
            d.write(REG_DMA_CMD as u64, 4, 0x5),
            Some(DeviceTimer::Dma(DMA_LATENCY_NS))
        );
        assert!(d.busy());
        d.write(REG_DMA_COUNT as u64, 4, 7);
        assert_eq!(d.write(REG_DMA_CMD as u64, 4, 0x7), None);
        assert_eq!(d.read(REG_DMA_COUNT as u64, 4), 100);
        d.dma_timer(&mut bus).unwrap();
        assert!(!d.busy());
        assert_eq!(&d.buffer()[0x10..0x10 + 100], &bus.0[0x1000..0x1000 + 100]);
        assert_eq!(d.irq_status(), 0x100);
        // Back to RAM.
        d.write(REG_DMA_SRC as u64, 4, 0x40010);
        d.write(REG_DMA_DST as u64, 4, 0x8000);
        d.write(REG_DMA_CMD as u64, 4, 0x3);
        d.dma_timer(&mut bus).unwrap();
        assert_eq!(
            &bus.0[0x8000..0x8000 + 100],
            &bus.0[0x1000..0x1000 + 100].to_vec()[..]
        );
    }

    #[test]
    fn range_check_both_qemu_behaviours() {
        let mut bus = FlatBus(vec![0; 0x10000]);
        for fixed in [false, true] {
            let mut d = EduDevice::new(
                EduConfig {
                    fixed_range_check: fixed,
                    ..EduConfig::default()
                },
                0,
            );
            d.set_bus_master(true);
            d.write(REG_DMA_SRC as u64, 4, 0x1000);
            d.write(REG_DMA_DST as u64, 4, 0x40000);
            d.write(REG_DMA_COUNT as u64, 4, 4096);
            d.write(REG_DMA_CMD as u64, 4, 1);
            let r = d.dma_timer(&mut bus);
            assert_eq!(r.is_ok(), fixed);
            d.write(REG_DMA_COUNT as u64, 4, 4095);
            d.write(REG_DMA_CMD as u64, 4, 1);
            assert!(d.dma_timer(&mut bus).is_ok());
            d.write(REG_DMA_DST as u64, 4, 0x40001);
            d.write(REG_DMA_COUNT as u64, 4, 4096);
            d.write(REG_DMA_CMD as u64, 4, 1);
            assert!(matches!(
                d.dma_timer(&mut bus),
                Err(DeviceFault::RangeOutOfBounds {
                    off_by_one: false,
                    ..
                })
            ));
        }
    }

    #[test]
    fn clamping_is_a_fault_and_bus_master_is_required() {
        let mut bus = FlatBus(vec![0; 0x10000]);
        let mut d = dev();
        d.write(REG_DMA_SRC as u64, 4, 0x1000_1000);
        d.write(REG_DMA_DST as u64, 4, 0x40000);
        d.write(REG_DMA_COUNT as u64, 4, 4);
        d.write(REG_DMA_CMD as u64, 4, 1);
        assert!(matches!(
            d.dma_timer(&mut bus),
            Err(DeviceFault::AddressClamped {
                clamped: 0x1000,
                ..
            })
        ));
        let mut d = EduDevice::new(EduConfig::default(), 0);
        d.buffer_mut()[0] = 9;
        d.write(REG_DMA_SRC as u64, 4, 0x40000);
        d.write(REG_DMA_DST as u64, 4, 0x100);
        d.write(REG_DMA_COUNT as u64, 4, 1);
        d.write(REG_DMA_CMD as u64, 4, 0x7);
        d.dma_timer(&mut bus).unwrap();
        assert_eq!(bus.0[0x100], 0, "no bus master: nothing moved");
        assert_eq!(d.irq_status(), 0x100, "but it still interrupts");
        assert_eq!(d.transfers_without_bus_master(), 1);
        // RAM -> device without bus mastering reads zeros into the buffer.
        d.buffer_mut()[0x10..0x14].copy_from_slice(&[1, 2, 3, 4]);
        d.write(REG_DMA_SRC as u64, 4, 0x100);
        d.write(REG_DMA_DST as u64, 4, 0x40010);
        d.write(REG_DMA_COUNT as u64, 4, 4);
        d.write(REG_DMA_CMD as u64, 4, 0x5);
        d.dma_timer(&mut bus).unwrap();
        assert_eq!(&d.buffer_mut()[0x0F..0x15], &[0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn narrow_reads_return_zero_like_qemus_memory_core() {
        let mut d = dev();
        assert_eq!(d.read(0x00, 2), 0);
        assert_eq!(d.read(0x80, 1), 0);
        assert_eq!(
            d.read(0x00, 8),
            u64::MAX,
            "edu.c refuses 8 bytes below 0x80"
        );
        assert_eq!(d.read(0x00, 4), 0x0100_00ED);
    }

    #[test]
    fn an_empty_dma_is_fatal_in_both_range_modes() {
        let mut bus = FlatBus(vec![0; 0x10000]);
        for fixed in [false, true] {
            let config = EduConfig {
                fixed_range_check: fixed,
                ..EduConfig::default()
            };
            let mut d = EduDevice::new(config, 0);
            d.set_bus_master(true);
            d.write(REG_DMA_SRC as u64, 4, 0x100);
            d.write(REG_DMA_DST as u64, 4, 0x40000);
            d.write(REG_DMA_COUNT as u64, 4, 0);
            d.write(REG_DMA_CMD as u64, 4, 1);
            let result = d.dma_timer(&mut bus);
            assert!(
                matches!(
                    result,
                    Err(DeviceFault::RangeOutOfBounds {
                        count: 0,
                        off_by_one: false,
                        ..
                    })
                ),
                "fixed range check: {fixed}: {result:?}"
            );
        }
    }

    #[test]
    fn the_dma_timer_has_millisecond_resolution() {
        assert_eq!(dma_timer_delay(0), DMA_LATENCY_NS);
        assert_eq!(dma_timer_delay(5 * MS), DMA_LATENCY_NS);
        assert_eq!(dma_timer_delay(5 * MS + 1), DMA_LATENCY_NS - 1);
        assert_eq!(dma_timer_delay(6 * MS - 1), 99 * MS + 1);
        for now in (0..10 * MS).step_by(7_919) {
            let delay = dma_timer_delay(now);
            assert!(delay > 99 * MS && delay <= 100 * MS, "{now}: {delay}");
            assert_eq!((now + delay) % MS, 0, "fires on a millisecond tick");
        }
    }

    #[test]
    fn an_msi_needs_bus_mastering_and_irq_status_keeps_the_bits() {
        let mut d = dev();
        d.set_msi_enabled(true);
        d.set_bus_master(false);
        d.write(REG_IRQ_RAISE as u64, 4, 0x10000);
        assert!(!d.take_msi(), "no bus mastering: the MSI write is lost");
        assert_eq!(d.msis_lost(), 1);
        assert_eq!(d.irq_status(), 0x10000);
        d.set_bus_master(true);
        d.write(REG_IRQ_RAISE as u64, 4, 0x1);
        assert!(d.take_msi());
        assert_eq!(d.msis_lost(), 1);
    }

    #[test]
    fn a_vm_reset_keeps_the_registers_and_resets_only_pci_state() {
        let mut d = dev();
        d.set_msi_enabled(true);
        d.write(REG_STATUS as u64, 4, 0x80);
        d.write(REG_IRQ_RAISE as u64, 4, 0x100);
        d.vm_reset();
        assert!(!d.bus_master(), "the command register is cleared");
        assert!(!d.take_msi(), "MSI is disabled and nothing is pending");
        assert!(!d.intx_asserted(), "INTx is deasserted by the reset");
        assert_eq!(d.irq_status(), 0x100, "no reset handler: the bits stay");
        assert_eq!(d.read(REG_STATUS as u64, 4) & 0x80, 0x80);
        // The next raise (MSI now off) asserts INTx again.
        d.write(REG_IRQ_RAISE as u64, 4, 0x1);
        assert!(d.intx_asserted());
    }

    #[test]
    fn msi_and_removal() {
        let mut d = dev();
        d.set_msi_enabled(true);
        d.write(REG_IRQ_RAISE as u64, 4, 0x10000);
        assert!(!d.intx_asserted());
        assert!(d.take_msi());
        assert!(!d.take_msi());
        d.remove();
        assert_eq!(d.read(0, 4), 0xFFFF_FFFF);
        assert_eq!(d.write(REG_DMA_CMD as u64, 4, 1), None);
    }
}
