//! Engine tests against small fakes: a HAL that logs every DMA call and a
//! register file that behaves like the edu device where the engine looks.

extern crate std;

mod common_buffer;
mod sg_list;
mod version1;

use std::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use super::*;
use crate::dma::{AllocateOutcome, AllocationMode, DmaTransferInfo, SgElement};
use crate::ioctl::{InterruptKind, selftest_steps};
use crate::regs::{REG_DMA_CMD, REG_FACTORIAL, REG_ID, REG_IRQ_ACK, REG_IRQ_RAISE, REG_IRQ_STATUS};
use crate::regs::{REG_DMA_COUNT, REG_DMA_DST, REG_DMA_SRC, REG_LIVENESS, REG_STATUS};

// ---- a HAL that logs ------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Call {
    Alignment,
    TransferInfo {
        length: u32,
        write: bool,
    },
    InitContext,
    Allocate {
        count: u32,
        mode: AllocationMode,
    },
    Cancel,
    Map {
        offset: u64,
        length: u32,
        write: bool,
    },
    Flush {
        offset: u64,
        length: u32,
        write: bool,
    },
    FreeChannel,
    Put,
    BusMasterOff,
    // version 1
    FlushIo {
        read: bool,
    },
    AllocateV1 {
        count: u32,
    },
    MapV1 {
        offset: u64,
        length: u32,
        write: bool,
    },
    FlushV1 {
        offset: u64,
        length: u32,
        write: bool,
    },
    FreeMapRegisters {
        count: u32,
    },
    // scatter/gather lists
    Calculate {
        offset: u64,
        length: u32,
    },
    GetList {
        buffer: crate::dma::ListBuffer,
        offset: u64,
        length: u32,
        write: bool,
    },
    PutList {
        write: bool,
    },
    // the common buffer
    CopyIn {
        length: u32,
    },
    CopyOut {
        length: u32,
    },
    FreeCommon,
    Quiet,
}

struct HalState {
    calls: Vec<Call>,
    /// The map registers are busy with another device: a synchronous
    /// `AllocateAdapterChannelEx` is refused, an asynchronous one queued.
    busy: bool,
    /// Version 1's allocation and the list routines grant inside the call
    /// (re-entrant routine).
    async_grants_now: bool,
    cancel_result: bool,
    /// Bytes one MapTransferEx maps at most (map registers × page).
    map_limit: u32,
    /// Bytes per scatter/gather element.
    element_size: u32,
    /// Bus address of byte 0 of the buffer.
    bus_base: u64,
    map_error: Option<NtStatus>,
    info_error: Option<NtStatus>,
    /// `GetDmaTransferInfo`'s map-register count (`None`: one per page
    /// spanned, plus one, as when every page is bounced).
    map_registers_needed: Option<u32>,
    /// `BYTE_OFFSET` of the buffer's first byte (version 1's `CurrentVa`).
    page_offset: u32,
    /// Bytes in each MDL of the chain (version 1 maps within one).
    mdl_bytes: u32,
    /// Bytes the driver's list buffer holds.
    list_buffer_bytes: u32,
    /// The offset and length of the list asked for last.
    last_list: (u64, u32),
    /// Bus Master Enable is clear (the engine or someone else cleared it).
    bus_master_off: bool,
}

impl Default for HalState {
    fn default() -> Self {
        Self {
            calls: Vec::new(),
            busy: false,
            async_grants_now: false,
            cancel_result: true,
            map_limit: u32::MAX,
            element_size: 4096,
            bus_base: 0x10_0000,
            map_error: None,
            info_error: None,
            map_registers_needed: None,
            page_offset: 0,
            mdl_bytes: u32::MAX,
            list_buffer_bytes: 4096,
            last_list: (0, 0),
            bus_master_off: false,
        }
    }
}

#[derive(Clone, Default)]
struct Hal(Rc<RefCell<HalState>>);

const BASE: u32 = 0xBA5E;
const MDL: u32 = 0x1D1;

impl Hal {
    fn calls(&self) -> Vec<Call> {
        self.0.borrow().calls.clone()
    }
    fn count(&self, f: impl Fn(&Call) -> bool) -> usize {
        self.0.borrow().calls.iter().filter(|c| f(c)).count()
    }
    fn set(&self, f: impl FnOnce(&mut HalState)) {
        f(&mut self.0.borrow_mut());
    }
    fn log(&self, call: Call) {
        self.0.borrow_mut().calls.push(call);
    }
}

impl DmaOps for Hal {
    type Mdl = u32;
    type MapRegisterBase = u32;

    fn get_dma_alignment(&mut self) -> u32 {
        self.log(Call::Alignment);
        1
    }

    fn get_dma_transfer_info(
        &mut self,
        mdl: u32,
        _offset: u64,
        length: u32,
        write_only: bool,
    ) -> Result<DmaTransferInfo, NtStatus> {
        assert_eq!(mdl, MDL);
        self.log(Call::TransferInfo {
            length,
            write: write_only,
        });
        if let Some(status) = self.0.borrow().info_error {
            return Err(status);
        }
        let pages = length.div_ceil(4096) + 1;
        Ok(DmaTransferInfo {
            map_register_count: self.0.borrow().map_registers_needed.unwrap_or(pages),
            scatter_gather_element_count: pages,
            scatter_gather_list_size: 64,
        })
    }

    fn initialize_dma_transfer_context(&mut self) -> Result<(), NtStatus> {
        self.log(Call::InitContext);
        Ok(())
    }

    fn allocate_adapter_channel_ex(
        &mut self,
        count: u32,
        mode: AllocationMode,
    ) -> Result<AllocateOutcome<u32>, NtStatus> {
        self.log(Call::Allocate { count, mode });
        let state = self.0.borrow();
        match mode {
            AllocationMode::Synchronous if state.busy => Err(NtStatus::INSUFFICIENT_RESOURCES),
            AllocationMode::Asynchronous if state.busy => Ok(AllocateOutcome::Queued),
            // Free: the execution routine runs inside the call either way.
            AllocationMode::Synchronous | AllocationMode::Asynchronous => {
                Ok(AllocateOutcome::Granted(BASE))
            }
        }
    }

    fn cancel_adapter_channel(&mut self) -> bool {
        self.log(Call::Cancel);
        self.0.borrow().cancel_result
    }

    fn map_transfer_ex(
        &mut self,
        mdl: u32,
        base: u32,
        offset: u64,
        length: u32,
        write_to_device: bool,
        sg: &mut SgList,
    ) -> Result<u32, NtStatus> {
        assert_eq!((mdl, base), (MDL, BASE));
        self.log(Call::Map {
            offset,
            length,
            write: write_to_device,
        });
        let state = self.0.borrow();
        if let Some(status) = state.map_error {
            return Err(status);
        }
        let mapped = length.min(state.map_limit);
        let mut at = 0;
        while at < mapped {
            let chunk = state.element_size.min(mapped - at);
            assert!(sg.push(SgElement {
                address: state.bus_base + offset + u64::from(at),
                length: chunk,
            }));
            at += chunk;
        }
        Ok(mapped)
    }

    fn flush_adapter_buffers_ex(
        &mut self,
        mdl: u32,
        base: u32,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        assert_eq!((mdl, base), (MDL, BASE));
        self.log(Call::Flush {
            offset,
            length,
            write: write_to_device,
        });
        Ok(())
    }

    fn free_adapter_channel(&mut self) {
        self.log(Call::FreeChannel);
    }

    fn free_map_registers(&mut self, base: u32, count: u32) {
        assert_eq!(base, BASE);
        self.log(Call::FreeMapRegisters { count });
    }

    fn flush_io_buffers(&mut self, mdl: u32, read_operation: bool) {
        assert_eq!(mdl, MDL);
        self.log(Call::FlushIo {
            read: read_operation,
        });
    }

    fn locate(&mut self, mdl: u32, offset: u64) -> Option<crate::dma::MdlSpot> {
        assert_eq!(mdl, MDL);
        let state = self.0.borrow();
        let in_mdl = offset % u64::from(state.mdl_bytes);
        Some(crate::dma::MdlSpot {
            page_offset: ((u64::from(state.page_offset) + offset) % 4096) as u32,
            bytes_to_mdl_end: (u64::from(state.mdl_bytes) - in_mdl) as u32,
        })
    }

    fn allocate_adapter_channel(&mut self, count: u32) -> Result<AllocateOutcome<u32>, NtStatus> {
        self.log(Call::AllocateV1 { count });
        if self.0.borrow().async_grants_now {
            Ok(AllocateOutcome::Granted(BASE))
        } else {
            Ok(AllocateOutcome::Queued)
        }
    }

    fn map_transfer(
        &mut self,
        mdl: u32,
        base: u32,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<SgElement, NtStatus> {
        assert_eq!((mdl, base), (MDL, BASE));
        self.log(Call::MapV1 {
            offset,
            length,
            write: write_to_device,
        });
        let state = self.0.borrow();
        if let Some(status) = state.map_error {
            return Err(status);
        }
        Ok(SgElement {
            address: state.bus_base + offset,
            length,
        })
    }

    fn calculate_scatter_gather_list(
        &mut self,
        mdl: u32,
        offset: u64,
        length: u32,
    ) -> Result<u32, NtStatus> {
        assert_eq!(mdl, MDL);
        self.log(Call::Calculate { offset, length });
        Ok(crate::dma::span_pages(self.0.borrow().page_offset, length) * 16 + 80)
    }

    fn scatter_gather_buffer_bytes(&self) -> u32 {
        self.0.borrow().list_buffer_bytes
    }

    fn get_scatter_gather_list(
        &mut self,
        buffer: crate::dma::ListBuffer,
        mdl: u32,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<AllocateOutcome<u32>, NtStatus> {
        assert_eq!(mdl, MDL);
        self.log(Call::GetList {
            buffer,
            offset,
            length,
            write: write_to_device,
        });
        let mut state = self.0.borrow_mut();
        if let Some(status) = state.map_error {
            return Err(status);
        }
        state.last_list = (offset, length);
        if state.async_grants_now {
            Ok(AllocateOutcome::Granted(BASE))
        } else {
            Ok(AllocateOutcome::Queued)
        }
    }

    fn scatter_gather_elements(&mut self, list: u32, sg: &mut SgList) -> bool {
        assert_eq!(list, BASE);
        let state = self.0.borrow();
        let (offset, length) = state.last_list;
        let mut at = 0;
        while at < length {
            let chunk = state.element_size.min(length - at);
            if !sg.push(SgElement {
                address: state.bus_base + offset + u64::from(at),
                length: chunk,
            }) {
                return false;
            }
            at += chunk;
        }
        true
    }

    fn copy_to_common_buffer(
        &mut self,
        mdl: u32,
        offset: u64,
        length: u32,
    ) -> Result<(), NtStatus> {
        assert_eq!((mdl, offset), (MDL, 0));
        self.log(Call::CopyIn { length });
        Ok(())
    }

    fn copy_from_common_buffer(
        &mut self,
        mdl: u32,
        offset: u64,
        length: u32,
    ) -> Result<(), NtStatus> {
        assert_eq!((mdl, offset), (MDL, 0));
        self.log(Call::CopyOut { length });
        Ok(())
    }

    fn free_common_buffer(&mut self) {
        self.log(Call::FreeCommon);
    }

    fn adapter_quiet(&mut self) {
        self.log(Call::Quiet);
    }

    fn put_scatter_gather_list(&mut self, list: u32, write_to_device: bool) {
        assert_eq!(list, BASE);
        self.log(Call::PutList {
            write: write_to_device,
        });
    }

    fn flush_adapter_buffers(
        &mut self,
        mdl: u32,
        base: u32,
        offset: u64,
        length: u32,
        write_to_device: bool,
    ) -> Result<(), NtStatus> {
        assert_eq!((mdl, base), (MDL, BASE));
        self.log(Call::FlushV1 {
            offset,
            length,
            write: write_to_device,
        });
        Ok(())
    }

    fn put_dma_adapter(&mut self) {
        self.log(Call::Put);
    }

    fn disable_bus_master(&mut self) {
        self.log(Call::BusMasterOff);
        self.0.borrow_mut().bus_master_off = true;
    }

    fn bus_master_enabled(&mut self) -> bool {
        !self.0.borrow().bus_master_off
    }

    fn enable_bus_master(&mut self) -> bool {
        self.0.borrow_mut().bus_master_off = false;
        true
    }
}

// ---- an edu register file ---------------------------------------------------

#[derive(Default)]
struct Edu {
    liveness: u32,
    factorial: u32,
    status: u32,
    irq: u32,
    src: u32,
    dst: u32,
    count: u32,
    cmd: u32,
    /// (src, dst, count, cmd) of every DMA command started.
    commands: Vec<(u32, u32, u32, u32)>,
    /// A removed device reads all-ones.
    removed: bool,
    /// A factorial written meanwhile never finishes and never interrupts.
    factorial_stuck: bool,
    /// A factorial was written while stuck: the device computes (edu
    /// ignores further factorials until it is done).
    computing: bool,
    /// Microseconds the engine stalled the CPU for (KeStallExecutionProcessor).
    stalled_us: u32,
}

impl RegisterFile for Edu {
    fn read32(&mut self, offset: u32) -> u32 {
        if self.removed {
            return u32::MAX;
        }
        match offset {
            REG_ID => 0x0100_00ED,
            REG_LIVENESS => self.liveness,
            REG_FACTORIAL => self.factorial,
            REG_STATUS => self.status | u32::from(self.factorial_stuck && self.computing),
            REG_IRQ_STATUS => self.irq,
            REG_DMA_SRC => self.src,
            REG_DMA_DST => self.dst,
            REG_DMA_COUNT => self.count,
            REG_DMA_CMD => self.cmd,
            _ => u32::MAX,
        }
    }

    fn write32(&mut self, offset: u32, value: u32) {
        if self.removed {
            return;
        }
        let busy = self.cmd & DmaCommand::START.bits() != 0;
        match offset {
            REG_LIVENESS => self.liveness = !value,
            REG_FACTORIAL if self.factorial_stuck => self.computing = true,
            REG_FACTORIAL => {
                self.factorial = regs::factorial_u32(value);
                if self.status & 0x80 != 0 {
                    self.irq |= IrqBits::FACTORIAL.bits();
                }
            }
            REG_STATUS => self.status = value & 0x80,
            REG_IRQ_RAISE => self.irq |= value,
            REG_IRQ_ACK => self.irq &= !value,
            REG_DMA_SRC if !busy => self.src = value,
            REG_DMA_DST if !busy => self.dst = value,
            REG_DMA_COUNT if !busy => self.count = value,
            REG_DMA_CMD if !busy => {
                self.cmd = value;
                if value & DmaCommand::START.bits() != 0 {
                    self.commands.push((self.src, self.dst, self.count, value));
                }
            }
            _ => {}
        }
    }

    fn stall_us(&mut self, micros: u32) {
        self.stalled_us += micros;
    }
}

impl Edu {
    fn busy(&self) -> bool {
        self.cmd & DmaCommand::START.bits() != 0
    }

    /// The running command finishes; `interrupt` says whether its
    /// interrupt is delivered.
    fn finish_dma(&mut self) {
        assert!(self.busy(), "no command running");
        self.cmd &= !DmaCommand::START.bits();
        if self.cmd & DmaCommand::IRQ.bits() != 0 {
            self.irq |= IrqBits::DMA.bits();
        }
    }
}

// ---- harness ----------------------------------------------------------------

type Req = u32;
type TestEngine = Engine<Hal, Req>;

const FACTS: AdapterFacts = AdapterFacts {
    dma_interface_version: 3,
    strategy: DmaStrategy::V3Packet,
    map_registers: 16,
    dma_address_width: 28,
    scatter_gather: true,
    interrupt_kind: InterruptKind::LineBased,
    common_buffer: None,
};

fn started(config: EngineConfig, hal: &Hal, edu: &mut Edu) -> TestEngine {
    let mut engine = TestEngine::new(config);
    engine.start_device(hal.clone(), FACTS, edu).unwrap();
    engine
}

fn setup() -> (TestEngine, Hal, Edu) {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let engine = started(EngineConfig::default(), &hal, &mut edu);
    (engine, hal, edu)
}

fn dma(direction: Direction, device_offset: u32, length: u32) -> StartRequest<u32> {
    StartRequest::Dma {
        request: DmaRequest {
            direction,
            device_offset,
            length,
        },
        mdl: MDL,
    }
}

/// ISR then DPC, as the glue does them.
fn interrupt(engine: &mut TestEngine, edu: &mut Edu) -> Option<Completion<Req>> {
    let bits = regs::isr_acknowledge(edu).expect("the device raised an interrupt");
    engine.dpc(bits, 1, edu)
}

/// Let the device finish commands until the request completes.
fn run_to_completion(engine: &mut TestEngine, edu: &mut Edu) -> Completion<Req> {
    for _ in 0..1000 {
        edu.finish_dma();
        if let Some(done) = interrupt(engine, edu) {
            return done;
        }
    }
    panic!("the request never completed");
}

fn ok(request: Req, information: usize) -> Completion<Req> {
    Completion {
        request,
        status: NtStatus::SUCCESS,
        information,
        selftest: None,
    }
}

fn failed(request: Req, status: NtStatus) -> Completion<Req> {
    Completion {
        request,
        status,
        information: 0,
        selftest: None,
    }
}

// ---- the ten steps ------------------------------------------------------------

#[test]
fn ten_steps_in_order_for_one_write() {
    let (mut engine, hal, mut edu) = setup();
    assert_eq!(
        engine.start_io(7, dma(Direction::ToDevice, 16, 100), &mut edu),
        None
    );
    // Steps 2, 3 and 5 ran in StartIo; step 6 programmed the device.
    assert_eq!(
        hal.calls(),
        vec![
            Call::Alignment,
            Call::TransferInfo {
                length: 100,
                write: true
            },
            Call::InitContext,
            Call::Allocate {
                count: 2,
                mode: AllocationMode::Asynchronous
            },
            Call::Map {
                offset: 0,
                length: 100,
                write: true
            },
        ]
    );
    assert_eq!(
        edu.commands,
        vec![(
            0x10_0000,
            0x40010,
            100,
            (DmaCommand::START | DmaCommand::IRQ).bits()
        )]
    );
    assert_eq!(engine.current_request(), Some(7));
    // Step 7: the interrupt; steps 8 and 9 in the DPC.
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(7, 100));
    assert_eq!(
        &hal.calls()[5..],
        &[
            Call::Flush {
                offset: 0,
                length: 100,
                write: true
            },
            Call::FreeChannel
        ]
    );
    assert!(engine.is_idle());
    // Step 10 at stop.
    assert_eq!(engine.stop(StopReason::Remove, &mut edu), None);
    assert_eq!(hal.calls().last(), Some(&Call::Put));
    assert!(engine.adapter_released());
    let stats = engine.stats();
    assert_eq!(stats.bytes_to_device, 100);
    assert_eq!(stats.completed, 1);
    assert_eq!(stats.interrupts, 1);
    assert_eq!(stats.dpcs, 1);
}

#[test]
fn reads_program_device_to_ram() {
    let (mut engine, hal, mut edu) = setup();
    engine.start_io(1, dma(Direction::FromDevice, 0, 4095), &mut edu);
    assert_eq!(
        edu.commands,
        vec![(
            0x40000,
            0x10_0000,
            4095,
            (DmaCommand::START | DmaCommand::IRQ | DmaCommand::TO_RAM).bits()
        )]
    );
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 4095));
    assert!(hal.calls().contains(&Call::Flush {
        offset: 0,
        length: 4095,
        write: false
    }));
    assert_eq!(engine.stats().bytes_from_device, 4095);
}

#[test]
fn one_device_command_per_sg_element() {
    let (mut engine, hal, mut edu) = setup();
    hal.set(|h| h.element_size = 1000);
    engine.start_io(1, dma(Direction::ToDevice, 5, 2500), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 2500));
    let starts: Vec<_> = edu.commands.iter().map(|c| (c.0, c.1, c.2)).collect();
    assert_eq!(
        starts,
        vec![
            (0x10_0000, 0x40005, 1000),
            (0x10_0000 + 1000, 0x40005 + 1000, 1000),
            (0x10_0000 + 2000, 0x40005 + 2000, 500),
        ]
    );
    // One map, one flush for the whole list.
    assert_eq!(hal.count(|c| matches!(c, Call::Map { .. })), 1);
    assert_eq!(hal.count(|c| matches!(c, Call::Flush { .. })), 1);
    assert_eq!(engine.stats().device_commands, 3);
}

#[test]
fn partial_maps_repeat_steps_five_to_eight() {
    let (mut engine, hal, mut edu) = setup();
    hal.set(|h| h.map_limit = 1024);
    engine.start_io(1, dma(Direction::FromDevice, 0, 3000), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 3000));
    let dma_calls: Vec<_> = hal
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Map { .. } | Call::Flush { .. } | Call::FreeChannel))
        .collect();
    let (r, w) = (false, false);
    assert_eq!(
        dma_calls,
        vec![
            Call::Map {
                offset: 0,
                length: 3000,
                write: r
            },
            Call::Flush {
                offset: 0,
                length: 1024,
                write: w
            },
            Call::Map {
                offset: 1024,
                length: 1976,
                write: r
            },
            Call::Flush {
                offset: 1024,
                length: 1024,
                write: w
            },
            Call::Map {
                offset: 2048,
                length: 952,
                write: r
            },
            Call::Flush {
                offset: 2048,
                length: 952,
                write: w
            },
            Call::FreeChannel,
        ]
    );
    let device_targets: Vec<_> = edu.commands.iter().map(|c| (c.0, c.2)).collect();
    assert_eq!(
        device_targets,
        vec![(0x40000, 1024), (0x40400, 1024), (0x40800, 952)]
    );
    let stats = engine.stats();
    assert_eq!(stats.map_transfer, 3);
    assert_eq!(stats.partial_maps, 2);
    assert_eq!(stats.flush_adapter_buffers, 3);
    assert_eq!(stats.free_adapter_channel, 1);
    assert_eq!(stats.allocate_adapter_channel, 1);
}

#[test]
fn never_asks_for_more_map_registers_than_granted() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = TestEngine::new(EngineConfig::default());
    let facts = AdapterFacts {
        map_registers: 1,
        ..FACTS
    };
    engine.start_device(hal.clone(), facts, &mut edu).unwrap();
    engine.start_io(1, dma(Direction::ToDevice, 0, 4000), &mut edu);
    assert!(hal.calls().contains(&Call::Allocate {
        count: 1,
        mode: AllocationMode::Asynchronous
    }));
}

// ---- allocation modes -------------------------------------------------------

#[test]
fn a_refused_synchronous_attempt_falls_back_to_async_and_waits_for_the_grant() {
    let (mut engine, hal, mut edu) = setup();
    // No map registers needed: the synchronous form is tried first.
    hal.set(|h| {
        h.busy = true;
        h.map_registers_needed = Some(0);
    });
    assert_eq!(
        engine.start_io(3, dma(Direction::ToDevice, 0, 10), &mut edu),
        None
    );
    assert_eq!(
        hal.count(|c| matches!(c, Call::Allocate { .. })),
        2,
        "synchronous, then asynchronous"
    );
    // Each allocating call gets a freshly initialized transfer context.
    let calls = hal.calls();
    let allocations: Vec<&Call> = calls
        .iter()
        .filter(|c| matches!(c, Call::InitContext | Call::Allocate { .. }))
        .collect();
    assert!(
        matches!(
            allocations.as_slice(),
            [
                Call::InitContext,
                Call::Allocate { .. },
                Call::InitContext,
                Call::Allocate { .. }
            ]
        ),
        "{allocations:?}"
    );
    assert!(edu.commands.is_empty(), "nothing mapped before the grant");
    assert_eq!(engine.stats().sync_allocation_fallbacks, 1);
    assert_eq!(engine.channel_granted(BASE, &mut edu), None);
    assert_eq!(edu.commands.len(), 1);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(3, 10));
}

/// The allocating calls of one request: its modes, in order.
fn allocations_of(engine: &mut TestEngine, hal: &Hal, edu: &mut Edu, request: Req) -> Vec<Call> {
    let before = hal.calls().len();
    let done = match engine.start_io(request, dma(Direction::ToDevice, 0, 4000), edu) {
        Some(done) => done,
        None => {
            if hal.0.borrow().busy {
                assert_eq!(engine.channel_granted(BASE, edu), None);
            }
            run_to_completion(engine, edu)
        }
    };
    assert_eq!(done, ok(request, 4000));
    hal.calls()[before..]
        .iter()
        .filter(|c| matches!(c, Call::Allocate { .. }))
        .cloned()
        .collect()
}

#[test]
fn the_default_policy_allocates_once_per_request_when_map_registers_are_contended() {
    let (mut engine, hal, mut edu) = setup();
    // Every other request finds the map registers busy with another device,
    // as the simulated HAL's contention does; each needs map registers.
    for request in 0..10 {
        hal.set(|h| h.busy = request % 2 == 1);
        let calls = allocations_of(&mut engine, &hal, &mut edu, request);
        assert_eq!(
            calls,
            [Call::Allocate {
                count: 2,
                mode: AllocationMode::Asynchronous
            }],
            "request {request}"
        );
    }
    let stats = engine.stats();
    assert_eq!(stats.allocate_adapter_channel, stats.requests);
    assert_eq!(stats.sync_allocation_fallbacks, 0);
}

#[test]
fn after_a_refusal_the_next_request_goes_straight_to_async_until_a_grant_comes_at_once() {
    let (mut engine, hal, mut edu) = setup();
    let sync = Call::Allocate {
        count: 1,
        mode: AllocationMode::Synchronous,
    };
    let asynchronous = Call::Allocate {
        count: 1,
        mode: AllocationMode::Asynchronous,
    };
    hal.set(|h| {
        h.busy = true;
        h.map_registers_needed = Some(0);
    });
    let refused = allocations_of(&mut engine, &hal, &mut edu, 1);
    assert_eq!(refused, [sync.clone(), asynchronous.clone()]);
    // Still busy: no second refused attempt.
    let busy = allocations_of(&mut engine, &hal, &mut edu, 2);
    assert_eq!(busy, vec![asynchronous.clone()]);
    // Free again: the asynchronous grant comes inside the call, and shows it.
    hal.set(|h| h.busy = false);
    let free = allocations_of(&mut engine, &hal, &mut edu, 3);
    assert_eq!(free, [asynchronous]);
    let again = allocations_of(&mut engine, &hal, &mut edu, 4);
    assert_eq!(again, [sync]);
    assert_eq!(engine.stats().sync_allocation_fallbacks, 1);
}

#[test]
fn async_only_never_uses_the_synchronous_form() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let config = EngineConfig {
        allocation: AllocationPolicy::AsyncOnly,
        ..EngineConfig::default()
    };
    let mut engine = started(config, &hal, &mut edu);
    // The execution routine ran inside the call (re-entrant grant).
    hal.set(|h| h.async_grants_now = true);
    engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
    assert_eq!(edu.commands.len(), 1, "mapped and started without waiting");
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 10));
    assert!(hal.calls().iter().all(|c| !matches!(
        c,
        Call::Allocate {
            mode: AllocationMode::Synchronous,
            ..
        }
    )));
    assert_eq!(engine.device_info().allocation_policy, 1);
}

#[test]
fn a_failed_allocation_completes_with_its_status() {
    let (mut engine, hal, mut edu) = setup();
    hal.set(|h| h.info_error = Some(NtStatus::NOT_SUPPORTED));
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu),
        Some(failed(1, NtStatus::NOT_SUPPORTED))
    );
    assert_eq!(hal.count(|c| matches!(c, Call::Allocate { .. })), 0);
    assert!(engine.is_idle());
    assert_eq!(engine.stats().errors, 1);
}

#[test]
fn a_failed_map_frees_the_channel() {
    let (mut engine, hal, mut edu) = setup();
    hal.set(|h| h.map_error = Some(NtStatus::INSUFFICIENT_RESOURCES));
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu),
        Some(failed(1, NtStatus::INSUFFICIENT_RESOURCES))
    );
    assert_eq!(hal.calls().last(), Some(&Call::FreeChannel));
    assert_eq!(
        hal.count(|c| matches!(c, Call::Flush { .. })),
        0,
        "nothing was mapped"
    );
    assert!(edu.commands.is_empty());
}

#[test]
fn unreachable_bus_addresses_are_never_programmed() {
    let (mut engine, hal, mut edu) = setup();
    // The HAL handed out an address above the 28-bit limit.
    hal.set(|h| h.bus_base = 0x1000_0000 - 8);
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu),
        Some(failed(1, NtStatus::DEVICE_HARDWARE_ERROR))
    );
    assert!(edu.commands.is_empty());
    let tail = &hal.calls()[hal.calls().len() - 2..];
    assert!(matches!(tail[0], Call::Flush { .. }));
    assert_eq!(tail[1], Call::FreeChannel);
}

#[test]
fn requests_outside_the_window_never_reach_the_hal() {
    let (mut engine, hal, mut edu) = setup();
    let before = hal.calls().len();
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 4000, 96), &mut edu),
        Some(failed(1, NtStatus::INVALID_BUFFER_SIZE))
    );
    assert_eq!(
        engine.start_io(2, dma(Direction::ToDevice, 0, 0), &mut edu),
        Some(failed(2, NtStatus::INVALID_PARAMETER))
    );
    assert_eq!(hal.calls().len(), before);
    // A 4096-byte window allows the whole buffer.
    let hal = Hal::default();
    let config = EngineConfig {
        window: 4096,
        ..EngineConfig::default()
    };
    let mut engine = started(config, &hal, &mut edu);
    engine.start_io(3, dma(Direction::ToDevice, 0, 4096), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(3, 4096));
}

// ---- cancel -----------------------------------------------------------------

#[test]
fn cancel_while_waiting_for_the_channel_true() {
    let (mut engine, hal, mut edu) = setup();
    hal.set(|h| h.busy = true);
    engine.start_io(4, dma(Direction::ToDevice, 0, 10), &mut edu);
    assert_eq!(
        engine.cancel(4, &mut edu),
        Some(failed(4, NtStatus::CANCELLED))
    );
    assert_eq!(hal.calls().last(), Some(&Call::Cancel));
    assert_eq!(
        hal.count(|c| matches!(c, Call::FreeChannel)),
        0,
        "nothing granted"
    );
    assert!(engine.is_idle());
    let stats = engine.stats();
    assert_eq!(
        (stats.cancels, stats.cancel_adapter_channel, stats.errors),
        (1, 1, 0)
    );
}

#[test]
fn cancel_while_waiting_for_the_channel_false_waits_for_the_grant() {
    let (mut engine, hal, mut edu) = setup();
    hal.set(|h| {
        h.busy = true;
        h.cancel_result = false;
    });
    engine.start_io(4, dma(Direction::ToDevice, 0, 10), &mut edu);
    assert_eq!(
        engine.cancel(4, &mut edu),
        None,
        "the grant is still coming"
    );
    assert!(!engine.is_idle());
    // A second cancel changes nothing.
    assert_eq!(engine.cancel(4, &mut edu), None);
    assert_eq!(
        engine.channel_granted(BASE, &mut edu),
        Some(failed(4, NtStatus::CANCELLED))
    );
    assert_eq!(hal.calls().last(), Some(&Call::FreeChannel));
    assert_eq!(hal.count(|c| matches!(c, Call::Map { .. })), 0);
    assert!(edu.commands.is_empty());
}

#[test]
fn cancel_during_dma_finishes_the_element_then_flushes_and_frees() {
    let (mut engine, hal, mut edu) = setup();
    hal.set(|h| h.element_size = 100);
    engine.start_io(9, dma(Direction::FromDevice, 0, 300), &mut edu);
    assert_eq!(
        engine.cancel(9, &mut edu),
        None,
        "the device cannot abandon a command"
    );
    assert_eq!(
        hal.count(|c| matches!(c, Call::Flush { .. })),
        0,
        "no flush while the device runs"
    );
    edu.finish_dma();
    assert_eq!(
        interrupt(&mut engine, &mut edu),
        Some(failed(9, NtStatus::CANCELLED))
    );
    assert_eq!(edu.commands.len(), 1, "the other elements never started");
    let tail = &hal.calls()[hal.calls().len() - 2..];
    assert_eq!(
        tail,
        &[
            Call::Flush {
                offset: 0,
                length: 300,
                write: false
            },
            Call::FreeChannel
        ]
    );
}

#[test]
fn cancel_of_an_unknown_request_is_ignored() {
    let (mut engine, _hal, mut edu) = setup();
    engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
    assert_eq!(engine.cancel(2, &mut edu), None);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 10));
    assert_eq!(engine.cancel(1, &mut edu), None, "already completed");
    assert_eq!(engine.stats().cancels, 0);
}

// ---- interrupts and the watchdog ---------------------------------------------

#[test]
fn a_stale_interrupt_while_the_device_is_busy_changes_nothing() {
    let (mut engine, hal, mut edu) = setup();
    engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
    assert_eq!(engine.dpc(IrqBits::DMA, 1, &mut edu), None);
    assert_eq!(hal.count(|c| matches!(c, Call::Flush { .. })), 0);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 10));
}

#[test]
fn a_lost_interrupt_is_recovered_by_the_watchdog() {
    let (mut engine, hal, mut edu) = setup();
    engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
    edu.cmd &= !DmaCommand::START.bits(); // finished, but no interrupt
    let ticks = engine.config().lost_interrupt_ticks;
    assert!(ticks >= 3, "two ticks can fall within one 100 ms DMA");
    for _ in 1..ticks {
        assert_eq!(engine.watchdog_tick(&mut edu), None, "too early to tell");
    }
    assert_eq!(engine.watchdog_tick(&mut edu), Some(ok(1, 10)));
    assert_eq!(engine.stats().lost_interrupts, 1);
    assert_eq!(hal.calls().last(), Some(&Call::FreeChannel));
}

#[test]
fn a_stuck_command_times_out_after_flush_and_free() {
    let (mut engine, hal, mut edu) = setup();
    engine.start_io(1, dma(Direction::FromDevice, 0, 10), &mut edu);
    let ticks = engine.config().timeout_ticks;
    for _ in 1..ticks {
        assert_eq!(engine.watchdog_tick(&mut edu), None);
    }
    assert_eq!(
        engine.watchdog_tick(&mut edu),
        Some(failed(1, NtStatus::IO_TIMEOUT))
    );
    // The device may still own the command: off the bus, then flush, free.
    let tail = &hal.calls()[hal.calls().len() - 3..];
    assert_eq!(tail[0], Call::BusMasterOff);
    assert!(matches!(tail[1], Call::Flush { .. }));
    assert_eq!(tail[2], Call::FreeChannel);
    assert_eq!(engine.stats().timeouts, 1);
    // Failed until the next start: no request reaches the device.
    assert!(engine.device_failed());
    let before = hal.calls().len();
    assert_eq!(
        engine.start_io(2, dma(Direction::ToDevice, 0, 10), &mut edu),
        Some(failed(2, NtStatus::DEVICE_HARDWARE_ERROR))
    );
    assert_eq!(hal.calls().len(), before, "no DMA routine called");
}

#[test]
fn a_busy_device_is_programmed_when_it_becomes_idle() {
    let (mut engine, _hal, mut edu) = setup();
    edu.cmd = DmaCommand::START.bits(); // left running before the driver started
    engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
    assert!(edu.commands.is_empty(), "writes would be dropped");
    assert_eq!(engine.watchdog_tick(&mut edu), None);
    assert!(edu.commands.is_empty());
    edu.cmd = 0;
    assert_eq!(engine.watchdog_tick(&mut edu), None);
    assert_eq!(edu.commands.len(), 1);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 10));
}

// ---- stop and removal -------------------------------------------------------------

#[test]
fn stop_when_idle_puts_the_adapter_once_and_fails_later_requests() {
    let (mut engine, hal, mut edu) = setup();
    assert_eq!(engine.stop(StopReason::Stop, &mut edu), None);
    assert!(engine.adapter_released());
    assert_eq!(engine.stop(StopReason::Remove, &mut edu), None);
    assert_eq!(hal.count(|c| *c == Call::Put), 1);
    assert_eq!(
        engine.start_io(5, dma(Direction::ToDevice, 0, 1), &mut edu),
        Some(failed(5, NtStatus::DELETE_PENDING))
    );
}

#[test]
fn a_stopped_device_holds_the_packet_and_resumes_it_after_start() {
    let (mut engine, hal, mut edu) = setup();
    engine.stop(StopReason::Stop, &mut edu);
    // Held, not failed: a rebalance is invisible to the application.
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 0, 1), &mut edu),
        None
    );
    assert_eq!(engine.current_request(), Some(1));
    let before = hal.calls().len();
    engine.start_device(hal.clone(), FACTS, &mut edu).unwrap();
    assert_eq!(engine.resume(&mut edu), None, "started on the new adapter");
    assert!(hal.calls().len() > before);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 1));
    engine.start_io(2, dma(Direction::ToDevice, 0, 1), &mut edu);
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(2, 1));
}

#[test]
fn a_held_packet_is_cancelled_or_failed_by_a_removal() {
    let (mut engine, _hal, mut edu) = setup();
    engine.stop(StopReason::Stop, &mut edu);
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 0, 1), &mut edu),
        None
    );
    assert_eq!(
        engine.cancel(1, &mut edu),
        Some(Completion {
            request: 1,
            status: NtStatus::CANCELLED,
            information: 0,
            selftest: None
        })
    );
    assert_eq!(engine.current_request(), None);
    assert_eq!(
        engine.start_io(2, dma(Direction::ToDevice, 0, 1), &mut edu),
        None
    );
    assert_eq!(
        engine.stop(StopReason::SurpriseRemoval, &mut edu),
        Some(failed(2, NtStatus::DEVICE_REMOVED))
    );
    assert_eq!(
        engine.start_io(3, dma(Direction::ToDevice, 0, 1), &mut edu),
        Some(failed(3, NtStatus::DEVICE_REMOVED))
    );
}

#[test]
fn surprise_removal_mid_transfer_flushes_frees_and_puts() {
    let (mut engine, hal, mut edu) = setup();
    engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
    edu.removed = true;
    assert_eq!(
        engine.stop(StopReason::SurpriseRemoval, &mut edu),
        Some(failed(1, NtStatus::DEVICE_REMOVED))
    );
    // A device that is in fact still there must not DMA into the freed
    // mapping: off the bus first.
    let tail = &hal.calls()[hal.calls().len() - 4..];
    assert_eq!(tail[0], Call::BusMasterOff);
    assert!(matches!(tail[1], Call::Flush { .. }));
    assert_eq!(&tail[2..], &[Call::FreeChannel, Call::Put]);
    assert!(engine.adapter_released());
    // The removal that follows changes nothing and puts nothing again.
    assert_eq!(engine.stop(StopReason::Remove, &mut edu), None);
    assert_eq!(hal.count(|c| *c == Call::Put), 1);
    assert_eq!(
        engine.start_io(2, dma(Direction::ToDevice, 0, 1), &mut edu),
        Some(failed(2, NtStatus::DEVICE_REMOVED))
    );
}

#[test]
fn an_orderly_stop_lets_the_transfer_finish_first() {
    let (mut engine, hal, mut edu) = setup();
    hal.set(|h| h.map_limit = 512);
    engine.start_io(1, dma(Direction::ToDevice, 0, 1024), &mut edu);
    assert_eq!(engine.stop(StopReason::Stop, &mut edu), None);
    assert!(!engine.adapter_released(), "the device is still working");
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 1024));
    assert!(engine.adapter_released());
    assert_eq!(hal.calls().last(), Some(&Call::Put));
    assert_eq!(hal.count(|c| matches!(c, Call::Flush { .. })), 2);
}

#[test]
fn stop_while_waiting_for_the_channel() {
    for cancel_result in [true, false] {
        let (mut engine, hal, mut edu) = setup();
        hal.set(|h| {
            h.busy = true;
            h.cancel_result = cancel_result;
        });
        engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
        let stopped = engine.stop(StopReason::Remove, &mut edu);
        if cancel_result {
            assert_eq!(stopped, Some(failed(1, NtStatus::DELETE_PENDING)));
        } else {
            assert_eq!(stopped, None);
            assert!(!engine.adapter_released());
            assert_eq!(
                engine.channel_granted(BASE, &mut edu),
                Some(failed(1, NtStatus::DELETE_PENDING))
            );
            assert!(hal.calls().ends_with(&[Call::FreeChannel, Call::Put]));
        }
        assert!(engine.adapter_released());
        assert_eq!(hal.count(|c| *c == Call::Put), 1);
    }
}

#[test]
fn start_fails_cleanly_on_a_device_that_is_not_edu() {
    let hal = Hal::default();
    let mut edu = Edu {
        removed: true,
        ..Edu::default()
    };
    let mut engine = TestEngine::new(EngineConfig::default());
    assert_eq!(
        engine.start_device(hal.clone(), FACTS, &mut edu),
        Err(NtStatus::DEVICE_HARDWARE_ERROR)
    );
    assert_eq!(hal.calls(), vec![Call::Put]);
    assert!(engine.adapter_released());
}

#[test]
fn a_second_packet_while_one_is_current_is_refused() {
    let (mut engine, _hal, mut edu) = setup();
    engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
    assert_eq!(
        engine.start_io(2, dma(Direction::ToDevice, 0, 10), &mut edu),
        Some(failed(2, NtStatus::INVALID_DEVICE_STATE))
    );
    assert_eq!(engine.current_request(), Some(1));
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 10));
}

#[test]
fn an_unexpected_grant_is_counted_not_obeyed() {
    let (mut engine, hal, mut edu) = setup();
    assert_eq!(engine.channel_granted(BASE, &mut edu), None);
    assert_eq!(engine.stats().errors, 1);
    assert_eq!(hal.count(|c| matches!(c, Call::Map { .. })), 0);
}

// ---- the self-test ----------------------------------------------------------------

#[test]
fn selftest_passes_on_a_working_device() {
    let (mut engine, _hal, mut edu) = setup();
    assert_eq!(engine.start_io(1, StartRequest::SelfTest, &mut edu), None);
    // Factorial interrupt, then the raised one.
    assert_eq!(interrupt(&mut engine, &mut edu), None);
    let done = interrupt(&mut engine, &mut edu).expect("the test is over");
    let report = done.selftest.expect("a report");
    assert_eq!(done.status, NtStatus::SUCCESS);
    assert_eq!(done.information, size_of::<SelfTestReport>());
    assert!(report.all_passed(), "{report:?}");
    assert_eq!(report.liveness_read, !report.liveness_written);
    assert_eq!(report.factorial_polled, 120);
    assert_eq!(report.factorial_interrupt, 720);
    assert_eq!(report.factorial_interrupt_input, 6);
    assert_eq!(
        report.irq_bits_seen,
        (IrqBits::FACTORIAL | IrqBits::SELFTEST).bits()
    );
    assert_eq!(edu.status, 0, "factorial interrupt left disabled");
    assert!(engine.is_idle());
}

#[test]
fn selftest_reports_failures_instead_of_hanging() {
    let (mut engine, _hal, mut edu) = setup();
    edu.factorial_stuck = true;
    assert_eq!(engine.start_io(1, StartRequest::SelfTest, &mut edu), None);
    assert!(
        edu.stalled_us <= 50,
        "StartIo stalled {} µs",
        edu.stalled_us
    );
    // The polled factorial times out, then the one by interrupt.
    let ticks = 2 * engine.config().timeout_ticks;
    let mut done = None;
    for _ in 0..ticks {
        if let Some(c) = engine.watchdog_tick(&mut edu) {
            done = Some(c);
        }
    }
    assert!(done.is_none(), "still waiting for the raised interrupt");
    let done = interrupt(&mut engine, &mut edu).expect("the raised interrupt ends it");
    let report = done.selftest.unwrap();
    assert!(!report.all_passed());
    assert_eq!(
        report.failed,
        selftest_steps::FACTORIAL_POLLED | selftest_steps::FACTORIAL_INTERRUPT
    );
    assert_eq!(
        report.passed,
        selftest_steps::IDENTIFICATION
            | selftest_steps::LIVENESS
            | selftest_steps::RAISE_ACKNOWLEDGE
    );
}

#[test]
fn selftest_can_be_cancelled() {
    let (mut engine, _hal, mut edu) = setup();
    engine.start_io(1, StartRequest::SelfTest, &mut edu);
    assert_eq!(
        engine.cancel(1, &mut edu),
        Some(failed(1, NtStatus::CANCELLED))
    );
    assert_eq!(edu.irq & (IrqBits::FACTORIAL | IrqBits::SELFTEST).bits(), 0);
    assert!(engine.is_idle());
}

// ---- reporting ----------------------------------------------------------------------

#[test]
fn device_info_reports_the_adapter() {
    let (engine, _hal, _edu) = setup();
    let info = engine.device_info();
    assert_eq!(info.dma_interface_version, 3);
    assert_eq!(info.map_registers, 16);
    assert_eq!(info.dma_address_width, 28);
    assert_eq!(info.device_id, 0x0100_00ED);
    assert_eq!(info.dma_window, 4095);
    assert_eq!(info.device_buffer_size, 4096);
    assert_eq!(info.dma_alignment, 1);
    assert_eq!(info.scatter_gather, 1);
    assert_eq!(info.interrupt_kind, InterruptKind::LineBased as u32);
    assert_eq!(info.size as usize, size_of::<DeviceInfo>());
}

#[test]
fn stats_count_each_dma_call_exactly_and_reset() {
    let (mut engine, _hal, mut edu) = setup();
    for i in 0..3u32 {
        engine.start_io(i, dma(Direction::ToDevice, 0, 64), &mut edu);
        run_to_completion(&mut engine, &mut edu);
    }
    let stats = engine.stats();
    assert_eq!(
        (
            stats.requests,
            stats.get_dma_transfer_info,
            stats.allocate_adapter_channel,
            stats.map_transfer,
            stats.flush_adapter_buffers,
            stats.free_adapter_channel,
            stats.device_commands
        ),
        (3, 3, 3, 3, 3, 3, 3)
    );
    engine.record_rejected();
    assert_eq!(engine.stats().errors, 1);
    engine.reset_stats();
    assert_eq!(engine.stats(), Stats::default());
}

#[test]
fn a_packet_startio_cannot_start_is_rejected_with_an_error() {
    let (mut engine, hal, _edu) = setup();
    let done = engine.reject(4, NtStatus::INVALID_PARAMETER);
    assert_eq!(done, failed(4, NtStatus::INVALID_PARAMETER));
    // A "success" is never a rejection.
    assert_eq!(
        engine.reject(5, NtStatus::SUCCESS).status,
        NtStatus::INVALID_DEVICE_REQUEST
    );
    assert_eq!(engine.stats().errors, 2);
    assert_eq!(hal.count(|c| matches!(c, Call::TransferInfo { .. })), 0);
}

// ---- device power -------------------------------------------------------------

#[test]
fn power_down_when_idle_quiesces_and_holds_the_next_packet_until_d0() {
    let (mut engine, hal, mut edu) = setup();
    edu.status = 0x80;
    edu.irq = 0x100;
    assert!(engine.power_down(&mut edu).drained, "nothing in flight");
    assert_eq!((edu.status, edu.irq), (0, 0), "quiesced before D3");
    let before = hal.calls().len();
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 0, 8), &mut edu),
        None
    );
    assert_eq!(hal.calls().len(), before, "nothing reaches the HAL in D3");
    assert!(edu.commands.is_empty(), "nor the device");
    assert_eq!(engine.current_request(), Some(1));
    // The wake left stale bits behind (edu has no reset handler).
    edu.status = 0x80;
    let up = engine.power_up(true, &mut edu);
    assert_eq!(up.status, NtStatus::SUCCESS);
    assert_eq!(up.resumed, None, "started");
    assert_eq!(edu.status, 0, "quiesced again in D0");
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 8));
    assert!(!engine.powered_down());
}

#[test]
fn power_down_lets_the_transfer_in_flight_finish_first() {
    let (mut engine, _hal, mut edu) = setup();
    engine.start_io(1, dma(Direction::FromDevice, 0, 64), &mut edu);
    assert!(!engine.power_down(&mut edu).drained, "a command is running");
    assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 64));
    assert!(engine.power_down(&mut edu).drained, "drained");
    assert!(engine.powered_down());
}

#[test]
fn a_device_that_wakes_with_a_wrong_id_is_failed_and_its_held_packet_too() {
    let (mut engine, _hal, mut edu) = setup();
    assert!(engine.power_down(&mut edu).drained);
    engine.start_io(1, dma(Direction::ToDevice, 0, 8), &mut edu);
    edu.removed = true;
    let up = engine.power_up(true, &mut edu);
    assert_eq!(up.status, NtStatus::DEVICE_HARDWARE_ERROR);
    assert_eq!(up.resumed, Some(failed(1, NtStatus::DEVICE_HARDWARE_ERROR)));
    assert!(engine.device_failed());
}

#[test]
fn a_packet_held_in_d3_can_be_cancelled_or_failed_by_a_removal() {
    let (mut engine, _hal, mut edu) = setup();
    assert!(engine.power_down(&mut edu).drained);
    engine.start_io(1, dma(Direction::ToDevice, 0, 8), &mut edu);
    assert_eq!(
        engine.cancel(1, &mut edu),
        Some(failed(1, NtStatus::CANCELLED))
    );
    engine.start_io(2, dma(Direction::ToDevice, 0, 8), &mut edu);
    assert_eq!(
        engine.stop(StopReason::SurpriseRemoval, &mut edu),
        Some(failed(2, NtStatus::DEVICE_REMOVED))
    );
}

#[test]
fn a_system_query_takes_the_device_irps_status_and_a_set_never_fails() {
    let refused = NtStatus::DEVICE_NOT_READY;
    assert_eq!(system_power_status(true, refused), refused);
    assert_eq!(system_power_status(false, refused), NtStatus::SUCCESS);
    assert_eq!(
        system_power_status(true, NtStatus::SUCCESS),
        NtStatus::SUCCESS
    );
}

#[test]
fn every_system_state_but_working_maps_to_d3() {
    assert_eq!(device_state_for(POWER_SYSTEM_WORKING), POWER_DEVICE_D0);
    for sleeping in 2..=6 {
        assert_eq!(device_state_for(sleeping), POWER_DEVICE_D3, "S{sleeping}");
    }
}

#[test]
fn a_device_whose_bus_mastering_cannot_be_restored_is_failed() {
    let (mut engine, hal, mut edu) = setup();
    assert!(engine.power_down(&mut edu).drained);
    engine.start_io(1, dma(Direction::ToDevice, 0, 8), &mut edu);
    let maps = hal.count(|c| matches!(c, Call::Map { .. }));
    let up = engine.power_up(false, &mut edu);
    assert_eq!(up.status, NtStatus::DEVICE_CONFIGURATION_ERROR);
    assert_eq!(
        up.resumed,
        Some(failed(1, NtStatus::DEVICE_HARDWARE_ERROR)),
        "no DMA without bus mastering"
    );
    assert_eq!(hal.count(|c| matches!(c, Call::Map { .. })), maps);
}

#[test]
fn a_removal_in_d3_does_not_touch_the_registers() {
    let (mut engine, hal, mut edu) = setup();
    assert!(engine.power_down(&mut edu).drained);
    // Any write now would reach a function that does not decode.
    edu.status = 0x80;
    assert_eq!(engine.stop(StopReason::Remove, &mut edu), None);
    assert_eq!(edu.status, 0x80, "no register written");
    assert_eq!(hal.calls().last(), Some(&Call::Put));
}

#[test]
fn a_slow_polled_factorial_is_polled_from_the_watchdog_not_stalled_for() {
    let (mut engine, _hal, mut edu) = setup();
    edu.factorial_stuck = true;
    assert_eq!(engine.start_io(1, StartRequest::SelfTest, &mut edu), None);
    assert!(
        edu.stalled_us <= 50,
        "StartIo stalled {} µs",
        edu.stalled_us
    );
    // The host thread finishes the factorial a while later.
    edu.factorial_stuck = false;
    edu.factorial = regs::factorial_u32(5);
    assert_eq!(engine.watchdog_tick(&mut edu), None);
    // Now the factorial by interrupt, then the raised interrupt.
    assert_eq!(interrupt(&mut engine, &mut edu), None);
    let done = interrupt(&mut engine, &mut edu).expect("the raised interrupt ends it");
    assert!(done.selftest.unwrap().all_passed(), "{:?}", done.selftest);
    assert_eq!(edu.stalled_us, 50);
}

/// A cancelled self-test leaves its factorial computing; the next one must
/// not write its own meanwhile (edu ignores it, and the test would read the
/// old result) nor stall for it: the watchdog's tick starts it once the
/// device is free.
#[test]
fn a_self_test_waits_for_a_factorial_a_cancelled_one_left_computing() {
    let (mut engine, _hal, mut edu) = setup();
    edu.factorial_stuck = true;
    edu.computing = true;
    edu.factorial = 720;
    assert_eq!(engine.start_io(1, StartRequest::SelfTest, &mut edu), None);
    assert_eq!(
        edu.stalled_us, 0,
        "not stalled for another test's factorial"
    );
    assert_eq!(engine.watchdog_tick(&mut edu), None);
    // The old factorial finishes; the next tick starts this test's.
    edu.factorial_stuck = false;
    edu.computing = false;
    assert_eq!(engine.watchdog_tick(&mut edu), None);
    assert_eq!(interrupt(&mut engine, &mut edu), None);
    let done = interrupt(&mut engine, &mut edu).expect("the raised interrupt ends it");
    let report = done.selftest.expect("a report");
    assert!(report.all_passed(), "{report:?}");
    assert_eq!(report.factorial_polled, 120);
}

#[test]
fn the_watchdog_is_needed_only_while_the_device_works() {
    let (mut engine, _hal, mut edu) = setup();
    assert!(!engine.needs_watchdog(), "idle");
    engine.start_io(1, dma(Direction::ToDevice, 0, 8), &mut edu);
    assert!(engine.needs_watchdog(), "a command is programmed");
    run_to_completion(&mut engine, &mut edu);
    assert!(!engine.needs_watchdog(), "done");
    engine.start_io(2, StartRequest::SelfTest, &mut edu);
    assert!(
        engine.needs_watchdog(),
        "the self-test waits for interrupts"
    );
}

#[test]
fn power_down_takes_back_a_request_waiting_for_its_channel_and_holds_it() {
    for cancel_result in [true, false] {
        let (mut engine, hal, mut edu) = setup();
        hal.set(|h| {
            h.busy = true;
            h.cancel_result = cancel_result;
        });
        engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu);
        let down = engine.power_down(&mut edu);
        assert_eq!(down.completion, None, "held, not failed");
        if cancel_result {
            assert!(down.drained, "CancelAdapterChannel took it back");
        } else {
            assert!(!down.drained, "the committed grant is still to come");
            assert_eq!(engine.channel_granted(BASE, &mut edu), None);
            assert_eq!(hal.calls().last(), Some(&Call::FreeChannel));
            assert!(engine.power_down(&mut edu).drained);
        }
        assert_eq!(engine.current_request(), Some(1), "held");
        assert_eq!(hal.count(|c| *c == Call::Cancel), 1);
        hal.set(|h| h.busy = false);
        let up = engine.power_up(true, &mut edu);
        assert_eq!(up.resumed, None, "started again");
        assert_eq!(run_to_completion(&mut engine, &mut edu), ok(1, 10));
    }
}

#[test]
fn a_command_finished_after_bus_mastering_was_cleared_behind_the_driver_fails() {
    let (mut engine, hal, mut edu) = setup();
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu),
        None
    );
    // Someone else clears Bus Master Enable: the device's DMA reaches no
    // memory, yet it reports the command done.
    hal.set(|h| h.bus_master_off = true);
    edu.finish_dma();
    let done = interrupt(&mut engine, &mut edu).expect("the request ends");
    assert_eq!(done, failed(1, NtStatus::DEVICE_HARDWARE_ERROR));
    assert!(engine.device_failed(), "no DMA until a restart");
    let tail = &hal.calls()[hal.calls().len() - 3..];
    assert_eq!(tail[0], Call::BusMasterOff);
    assert!(matches!(tail[1], Call::Flush { .. }));
    assert_eq!(tail[2], Call::FreeChannel);
}

#[test]
fn a_start_finds_a_command_still_running_and_keeps_the_device_off_the_bus() {
    let hal = Hal::default();
    let mut edu = Edu::default();
    let mut engine = started(EngineConfig::default(), &hal, &mut edu);
    assert_eq!(
        engine.start_io(1, dma(Direction::ToDevice, 0, 10), &mut edu),
        None
    );
    // The command never finishes; the watchdog gives up on it.
    let mut ended = None;
    for _ in 0..EngineConfig::default().timeout_ticks {
        ended = ended.or(engine.watchdog_tick(&mut edu));
    }
    assert_eq!(ended, Some(failed(1, NtStatus::IO_TIMEOUT)));
    assert_eq!(engine.stop(StopReason::Stop, &mut edu), None);
    assert!(engine.adapter_released());
    // The PnP manager starts the device again: it still owns that command,
    // so it must not become a bus master again.
    assert!(edu.busy());
    assert_eq!(
        engine.start_device(hal.clone(), FACTS, &mut edu),
        Err(NtStatus::DEVICE_HARDWARE_ERROR)
    );
    assert!(hal.0.borrow().bus_master_off, "left off the bus");
    assert_eq!(hal.calls().last(), Some(&Call::Put));
}
