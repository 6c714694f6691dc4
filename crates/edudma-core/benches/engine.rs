//! The engine alone: one 4095-byte DMA request (write, then read) through
//! the version-3 steps, against a HAL that grants and maps at once and an
//! edu register file that finishes a command when asked. What is measured
//! is the engine's own work per request: StartIo, the grant, the mapping,
//! the command, the ISR's acknowledgement, the DPC and the completion.
//!
//! `cargo bench -p edudma-core --bench engine`. Benchmarks only: nothing
//! here asserts a time.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edudma_core::NtStatus;
use edudma_core::dma::{
    AllocateOutcome, AllocationMode, DmaOps, DmaTransferInfo, ListBuffer, MdlSpot, SgElement,
    SgList,
};
use edudma_core::engine::{AdapterFacts, DmaStrategy, Engine, EngineConfig, StartRequest};
use edudma_core::ioctl::{Direction, DmaRequest, InterruptKind};
use edudma_core::regs::{
    self, DmaCommand, IrqBits, REG_DMA_CMD, REG_DMA_COUNT, REG_DMA_DST, REG_DMA_SRC, REG_ID,
    REG_IRQ_ACK, REG_IRQ_RAISE, REG_IRQ_STATUS, REG_LIVENESS, REG_STATUS, RegisterFile,
};

const BASE: u32 = 0xBA5E;
const LEN: u32 = 4095;

/// A version-3 HAL with free map registers: every allocation is granted
/// inside the call, every mapping is one range.
struct Hal;

impl DmaOps for Hal {
    type Mdl = u32;
    type MapRegisterBase = u32;

    fn get_dma_alignment(&mut self) -> u32 {
        1
    }

    fn get_dma_transfer_info(
        &mut self,
        _mdl: u32,
        _offset: u64,
        length: u32,
        _write_only: bool,
    ) -> Result<DmaTransferInfo, NtStatus> {
        let pages = length.div_ceil(4096) + 1;
        Ok(DmaTransferInfo {
            map_register_count: pages,
            scatter_gather_element_count: pages,
            scatter_gather_list_size: 64,
        })
    }

    fn initialize_dma_transfer_context(&mut self) -> Result<(), NtStatus> {
        Ok(())
    }

    fn allocate_adapter_channel_ex(
        &mut self,
        _count: u32,
        _mode: AllocationMode,
    ) -> Result<AllocateOutcome<u32>, NtStatus> {
        Ok(AllocateOutcome::Granted(BASE))
    }

    fn cancel_adapter_channel(&mut self) -> bool {
        true
    }

    fn map_transfer_ex(
        &mut self,
        _mdl: u32,
        _base: u32,
        offset: u64,
        length: u32,
        _write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        let pushed = sg.push(SgElement {
            address: 0x10_0000 + offset,
            length,
        });
        if pushed {
            Ok(length)
        } else {
            Err(NtStatus::INSUFFICIENT_RESOURCES)
        }
    }

    fn flush_adapter_buffers_ex(
        &mut self,
        _mdl: u32,
        _base: u32,
        _offset: u64,
        _length: u32,
        _write_to_device: bool,
    ) -> Result<(), NtStatus> {
        Ok(())
    }

    fn free_adapter_channel(&mut self) {}

    fn free_map_registers(&mut self, _base: u32, _count: u32) {}

    fn put_dma_adapter(&mut self) {}

    fn flush_io_buffers(&mut self, _mdl: u32, _read_operation: bool) {}

    fn locate(&mut self, _mdl: u32, offset: u64) -> Option<MdlSpot> {
        Some(MdlSpot {
            page_offset: (offset % 4096) as u32,
            bytes_to_mdl_end: u32::MAX,
        })
    }

    fn allocate_adapter_channel(&mut self, _count: u32) -> Result<AllocateOutcome<u32>, NtStatus> {
        Ok(AllocateOutcome::Granted(BASE))
    }

    fn map_transfer(
        &mut self,
        _mdl: u32,
        _base: u32,
        offset: u64,
        length: u32,
        _write_to_device: bool,
    ) -> Result<SgElement, NtStatus> {
        Ok(SgElement {
            address: 0x10_0000 + offset,
            length,
        })
    }

    fn calculate_scatter_gather_list(
        &mut self,
        _mdl: u32,
        _offset: u64,
        _length: u32,
    ) -> Result<u32, NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    fn scatter_gather_buffer_bytes(&self) -> u32 {
        0
    }

    fn get_scatter_gather_list(
        &mut self,
        _buffer: ListBuffer,
        _mdl: u32,
        _offset: u64,
        _length: u32,
        _write_to_device: bool,
    ) -> Result<AllocateOutcome<u32>, NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    fn scatter_gather_elements(&mut self, _list: u32, _sg: &mut SgList) -> bool {
        false
    }

    fn put_scatter_gather_list(&mut self, _list: u32, _write_to_device: bool) {}

    fn copy_to_common_buffer(
        &mut self,
        _mdl: u32,
        _offset: u64,
        _length: u32,
    ) -> Result<(), NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    fn copy_from_common_buffer(
        &mut self,
        _mdl: u32,
        _offset: u64,
        _length: u32,
    ) -> Result<(), NtStatus> {
        Err(NtStatus::NOT_SUPPORTED)
    }

    fn free_common_buffer(&mut self) {}

    fn adapter_quiet(&mut self) {}

    fn flush_adapter_buffers(
        &mut self,
        _mdl: u32,
        _base: u32,
        _offset: u64,
        _length: u32,
        _write_to_device: bool,
    ) -> Result<(), NtStatus> {
        Ok(())
    }

    fn disable_bus_master(&mut self) {}

    fn bus_master_enabled(&mut self) -> bool {
        true
    }

    fn enable_bus_master(&mut self) -> bool {
        true
    }
}

/// The edu registers the engine touches; a started command runs until
/// [`Edu::finish_dma`].
#[derive(Default)]
struct Edu {
    liveness: u32,
    status: u32,
    irq: u32,
    src: u32,
    dst: u32,
    count: u32,
    cmd: u32,
}

impl RegisterFile for Edu {
    fn read32(&mut self, offset: u32) -> u32 {
        match offset {
            REG_ID => 0x0100_00ED,
            REG_LIVENESS => self.liveness,
            REG_STATUS => self.status,
            REG_IRQ_STATUS => self.irq,
            REG_DMA_SRC => self.src,
            REG_DMA_DST => self.dst,
            REG_DMA_COUNT => self.count,
            REG_DMA_CMD => self.cmd,
            _ => 0,
        }
    }

    fn write32(&mut self, offset: u32, value: u32) {
        let busy = self.cmd & DmaCommand::START.bits() != 0;
        match offset {
            REG_LIVENESS => self.liveness = !value,
            REG_STATUS => self.status = value & 0x80,
            REG_IRQ_RAISE => self.irq |= value,
            REG_IRQ_ACK => self.irq &= !value,
            REG_DMA_SRC if !busy => self.src = value,
            REG_DMA_DST if !busy => self.dst = value,
            REG_DMA_COUNT if !busy => self.count = value,
            REG_DMA_CMD if !busy => self.cmd = value,
            _ => {}
        }
    }

    fn stall_us(&mut self, _micros: u32) {}
}

impl Edu {
    fn finish_dma(&mut self) {
        self.cmd &= !DmaCommand::START.bits();
        if self.cmd & DmaCommand::IRQ.bits() != 0 {
            self.irq |= IrqBits::DMA.bits();
        }
    }
}

const FACTS: AdapterFacts = AdapterFacts {
    dma_interface_version: 3,
    strategy: DmaStrategy::V3Packet,
    map_registers: 16,
    dma_address_width: 28,
    scatter_gather: true,
    interrupt_kind: InterruptKind::LineBased,
    common_buffer: None,
};

/// One request from StartIo to its completion: the commands finish, the
/// ISR acknowledges, the DPC continues, until the engine completes it.
fn one_request(engine: &mut Engine<Hal, u32>, edu: &mut Edu, direction: Direction) -> NtStatus {
    let what = StartRequest::Dma {
        request: DmaRequest {
            direction,
            device_offset: 0,
            length: LEN,
        },
        mdl: 0x1D1,
    };
    if let Some(done) = engine.start_io(7, what, edu) {
        return done.status;
    }
    loop {
        edu.finish_dma();
        let Some(bits) = regs::isr_acknowledge(edu) else {
            return NtStatus::IO_TIMEOUT;
        };
        if let Some(done) = engine.dpc(bits, 1, edu) {
            return done.status;
        }
    }
}

fn engine_requests(c: &mut Criterion) {
    let mut edu = Edu::default();
    let mut engine: Engine<Hal, u32> = Engine::new(EngineConfig {
        strategy: DmaStrategy::V3Packet,
        ..EngineConfig::default()
    });
    engine
        .start_device(Hal, FACTS, &mut edu)
        .expect("the engine starts");
    // Once outside the measurement, so a broken setup shows as an error.
    assert_eq!(
        one_request(&mut engine, &mut edu, Direction::ToDevice),
        NtStatus::SUCCESS
    );
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(2));
    group.bench_function("v3-packet write+read of 4095 bytes", |b| {
        b.iter(|| {
            let w = one_request(&mut engine, &mut edu, Direction::ToDevice);
            let r = one_request(&mut engine, &mut edu, Direction::FromDevice);
            black_box((w, r))
        })
    });
    group.finish();
}

criterion_group!(benches, engine_requests);
criterion_main!(benches);
