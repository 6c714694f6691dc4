//! The edudma driver's glue on the simulated Windows — the same shape as
//! the Windows glue in `src/`: dispatch validates through the core and
//! calls `IoStartPacket`; StartIo, the execution routine, the cancel
//! routine, DpcForIsr and the watchdog DPC feed the engine under one lock;
//! the ISR only acknowledges and queues the DPC. Completions follow the
//! engine's glue rule: release the lock, `IoStartNextPacket`, copy the
//! payload, `IoCompleteRequest`.

use std::collections::BTreeMap;
use std::rc::Rc;

use edudma_core::NtStatus;
use edudma_core::engine::{
    AdapterFacts, Completion, Engine, EngineConfig, StartRequest, StopReason,
};
use edudma_core::grant::GrantSlot;
use edudma_core::ioctl::{self, ControlRequest, FileRequest};
use edudma_core::regs::{self, IrqBits};
use zerocopy::IntoBytes;

use crate::hal::{
    DEVICE_DESCRIPTION_VERSION3, DeviceDescription, InterfaceType, IoAllocationAction,
    MapRegisterBase,
};
use crate::io::{IrpId, Major};
use crate::irql::{Irql, SpinLock};
use crate::kernel::Sys;
use crate::mdl::MdlId;
use crate::sched::MS;
use crate::wdm::{PnpMinor, PnpOutcome, SimDma, SimRegs, WdmDriver, execution_routine};

/// The engine lock.
pub const ENGINE_LOCK: SpinLock = SpinLock::Driver("edudma engine lock");
/// Watchdog period (the engine's tick).
pub const WATCHDOG_PERIOD: u64 = 100 * MS;

/// How the glue sets the device up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverConfig {
    /// The engine's settings.
    pub engine: EngineConfig,
    /// `DEVICE_DESCRIPTION.Version` to ask for (3; others to test the HAL).
    pub description_version: u32,
    /// `ScatterGather` in the device description.
    pub scatter_gather: bool,
    /// `DmaAddressWidth` (28 for edu).
    pub dma_address_width: u32,
    /// `IoSetStartIoAttributes(DeferredStartIo = TRUE)` (turn off only to
    /// show the verifier's StartIoRecursion rule).
    pub deferred_start_io: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            description_version: DEVICE_DESCRIPTION_VERSION3,
            scatter_gather: true,
            dma_address_width: regs::DMA_ADDRESS_BITS,
            deferred_start_io: true,
        }
    }
}

/// The driver's device extension.
pub struct EdudmaDriver {
    config: DriverConfig,
    engine: Engine<SimDma, IrpId>,
    slot: Option<Rc<GrantSlot>>,
    /// What StartIo is to do with each queued IRP (`DriverContext`).
    pending: BTreeMap<IrpId, StartRequest<MdlId>>,
    /// Interrupt bits the ISR acknowledged since the last DPC (an atomic on Windows).
    isr_bits: u32,
    /// Interrupts the ISR claimed since the last DPC.
    isr_count: u32,
    started: bool,
    /// Set at surprise removal or removal: new requests are refused.
    gone: Option<StopReason>,
    /// A stop, surprise removal or removal waiting for the adapter to be put.
    stopping: Option<PnpMinor>,
}

impl EdudmaDriver {
    /// `AddDevice`.
    pub fn new(config: DriverConfig) -> Self {
        Self {
            config,
            engine: Engine::new(config.engine),
            slot: None,
            pending: BTreeMap::new(),
            isr_bits: 0,
            isr_count: 0,
            started: false,
            gone: None,
            stopping: None,
        }
    }

    /// The engine (for statistics and tests).
    pub fn engine(&self) -> &Engine<SimDma, IrpId> {
        &self.engine
    }

    /// Run `f` on the engine under the engine lock.
    fn locked<T>(
        &mut self,
        sys: &Sys,
        f: impl FnOnce(&mut Engine<SimDma, IrpId>, &mut SimRegs) -> T,
    ) -> T {
        let old = sys.ke_acquire_spin_lock(ENGINE_LOCK);
        let mut regs = SimRegs(sys.clone());
        let r = f(&mut self.engine, &mut regs);
        sys.ke_release_spin_lock(ENGINE_LOCK, old);
        r
    }

    /// The glue rule for a completion (engine lock already released).
    fn finish(&mut self, sys: &Sys, c: Completion<IrpId>) {
        let old = sys.irql();
        if old < Irql::Dispatch {
            sys.ke_raise_irql(Irql::Dispatch);
        }
        sys.io_set_cancel_routine(c.request, false);
        sys.io_start_next_packet(self, true);
        if let Some(report) = c.selftest {
            sys.irp_write_system_buffer(c.request, report.as_bytes());
        }
        sys.io_complete_request(c.request, c.status, c.information);
        if old < Irql::Dispatch {
            sys.ke_lower_irql(old);
        }
    }

    fn complete_now(sys: &Sys, irp: IrpId, status: NtStatus, information: usize) -> NtStatus {
        sys.io_complete_request(irp, status, information);
        status
    }

    fn reject(&mut self, sys: &Sys, irp: IrpId, status: NtStatus) -> NtStatus {
        self.locked(sys, |e, _| e.record_rejected());
        Self::complete_now(sys, irp, status, 0)
    }

    fn queue(&mut self, sys: &Sys, irp: IrpId, what: StartRequest<MdlId>) -> NtStatus {
        self.pending.insert(irp, what);
        sys.io_mark_irp_pending(irp);
        sys.io_start_packet(self, irp, true);
        NtStatus::PENDING
    }

    fn start_device(&mut self, sys: &Sys) -> NtStatus {
        sys.io_set_start_io_attributes(self.config.deferred_start_io, false);
        // BUS_INTERFACE_STANDARD: make sure Bus Master Enable is on.
        let command = sys.pci_command();
        if command & 0x4 == 0 {
            sys.set_pci_command(command | 0x4);
        }
        let desc = DeviceDescription {
            version: self.config.description_version,
            master: true,
            scatter_gather: self.config.scatter_gather,
            dma32_bit_addresses: true,
            dma64_bit_addresses: false,
            interface_type: InterfaceType::Pci,
            maximum_length: regs::DEVICE_BUFFER_SIZE,
            dma_address_width: self.config.dma_address_width,
        };
        let Some((ops, granted)) = sys.io_get_dma_adapter(&desc) else {
            return NtStatus::NOT_SUPPORTED;
        };
        self.slot = Some(ops.slot());
        let interrupt_kind = sys.io_connect_interrupt_ex();
        let facts = AdapterFacts {
            dma_interface_version: 3,
            map_registers: granted,
            dma_address_width: self.config.dma_address_width,
            scatter_gather: self.config.scatter_gather,
            interrupt_kind,
        };
        // At PASSIVE_LEVEL without the engine spin lock: start_device calls
        // GetDmaAlignment (PASSIVE only), and nothing else can reach the
        // engine before the start completes (no timer yet, no StartIo).
        let started = self
            .engine
            .start_device(ops, facts, &mut SimRegs(sys.clone()));
        if let Err(status) = started {
            sys.io_disconnect_interrupt_ex();
            return status;
        }
        sys.ke_set_timer_periodic(WATCHDOG_PERIOD);
        self.started = true;
        self.gone = None;
        NtStatus::SUCCESS
    }

    fn stop(&mut self, sys: &Sys, minor: PnpMinor) -> PnpOutcome {
        if self.stopping.is_none() {
            let reason = match minor {
                PnpMinor::StopDevice => StopReason::Stop,
                PnpMinor::SurpriseRemoval => StopReason::SurpriseRemoval,
                _ => StopReason::Remove,
            };
            if reason != StopReason::Stop && self.gone.is_none() {
                self.gone = Some(reason);
            }
            self.stopping = Some(minor);
            let old = sys.ke_raise_irql(Irql::Dispatch);
            let c = self.locked(sys, |e, r| e.stop(reason, r));
            if let Some(c) = c {
                self.finish(sys, c);
            }
            sys.ke_lower_irql(old);
        }
        // KeWaitForSingleObject on "adapter put": the transfer in flight ends first.
        if !self.engine.adapter_released() {
            return PnpOutcome::Wait;
        }
        self.stopping = None;
        if self.started {
            sys.ke_cancel_timer();
            sys.io_disconnect_interrupt_ex();
            self.started = false;
        }
        PnpOutcome::Done(NtStatus::SUCCESS)
    }
}

impl WdmDriver for EdudmaDriver {
    fn dispatch(&mut self, sys: &Sys, irp: IrpId) -> NtStatus {
        let Some(i) = sys.irp(irp) else {
            return NtStatus::INVALID_PARAMETER;
        };
        if let Some(reason) = self.gone {
            let status = match reason {
                StopReason::SurpriseRemoval => NtStatus::DEVICE_REMOVED,
                _ => NtStatus::DELETE_PENDING,
            };
            return Self::complete_now(sys, irp, status, 0);
        }
        let window = self.engine.window();
        let has_mdl = i.mdl.is_some();
        let file = |r: Result<FileRequest, ioctl::RequestError>| r;
        match i.major {
            Major::DeviceControl {
                code,
                input_length,
                output_length,
            } => {
                let n = (input_length as usize).min(i.system_buffer.len());
                let input = &i.system_buffer[..n];
                match ioctl::validate_control(code, input, output_length, has_mdl, window) {
                    Err(e) => self.reject(sys, irp, e.status()),
                    Ok(ControlRequest::GetInfo) => {
                        let info = self.locked(sys, |e, _| e.device_info());
                        sys.irp_write_system_buffer(irp, info.as_bytes());
                        Self::complete_now(sys, irp, NtStatus::SUCCESS, size_of_val(&info))
                    }
                    Ok(ControlRequest::GetStats) => {
                        let stats = self.locked(sys, |e, _| e.stats());
                        sys.irp_write_system_buffer(irp, stats.as_bytes());
                        Self::complete_now(sys, irp, NtStatus::SUCCESS, size_of_val(&stats))
                    }
                    Ok(ControlRequest::ResetStats) => {
                        self.locked(sys, |e, _| e.reset_stats());
                        Self::complete_now(sys, irp, NtStatus::SUCCESS, 0)
                    }
                    Ok(ControlRequest::SelfTest) => self.queue(sys, irp, StartRequest::SelfTest),
                    Ok(ControlRequest::Dma(request)) => match i.mdl {
                        Some(mdl) => self.queue(sys, irp, StartRequest::Dma { request, mdl }),
                        None => self.reject(sys, irp, NtStatus::INVALID_PARAMETER),
                    },
                }
            }
            Major::Read {
                byte_offset,
                length,
            }
            | Major::Write {
                byte_offset,
                length,
            } => {
                let result = if matches!(i.major, Major::Read { .. }) {
                    file(ioctl::validate_read(byte_offset, length, has_mdl, window))
                } else {
                    file(ioctl::validate_write(byte_offset, length, has_mdl, window))
                };
                match (result, i.mdl) {
                    (Err(e), _) => self.reject(sys, irp, e.status()),
                    (Ok(FileRequest::Empty), _) => {
                        Self::complete_now(sys, irp, NtStatus::SUCCESS, 0)
                    }
                    (Ok(FileRequest::EndOfFile), _) => {
                        Self::complete_now(sys, irp, NtStatus::END_OF_FILE, 0)
                    }
                    (Ok(FileRequest::Dma(request)), Some(mdl)) => {
                        self.queue(sys, irp, StartRequest::Dma { request, mdl })
                    }
                    (Ok(FileRequest::Dma(_)), None) => {
                        self.reject(sys, irp, NtStatus::INVALID_PARAMETER)
                    }
                }
            }
        }
    }

    fn pnp(&mut self, sys: &Sys, minor: PnpMinor) -> PnpOutcome {
        match minor {
            PnpMinor::StartDevice => PnpOutcome::Done(self.start_device(sys)),
            PnpMinor::StopDevice | PnpMinor::SurpriseRemoval | PnpMinor::RemoveDevice => {
                self.stop(sys, minor)
            }
        }
    }

    fn start_io(&mut self, sys: &Sys, irp: IrpId) {
        let what = self.pending.remove(&irp);
        // Re-check Irp->Cancel under the cancel spin lock: a cancel that
        // landed between IoStartNextPacket and here found no engine request.
        let old = sys.io_acquire_cancel_spin_lock();
        let cancelled = sys.irp_cancel_flag(irp);
        sys.io_release_cancel_spin_lock(old);
        let c = match (cancelled, what) {
            (true, _) => Some(Completion {
                request: irp,
                status: NtStatus::CANCELLED,
                information: 0,
                selftest: None,
            }),
            (false, None) => {
                Some(self.locked(sys, |e, _| e.reject(irp, NtStatus::INVALID_DEVICE_STATE)))
            }
            (false, Some(what)) => self.locked(sys, |e, r| e.start_io(irp, what, r)),
        };
        if let Some(c) = c {
            self.finish(sys, c);
        }
    }

    fn cancel(&mut self, sys: &Sys, irp: IrpId, cancel_irql: Irql) {
        if sys.ke_remove_entry_device_queue(irp) {
            // Still queued: it never reached StartIo.
            self.pending.remove(&irp);
            sys.io_release_cancel_spin_lock(cancel_irql);
            sys.io_complete_request(irp, NtStatus::CANCELLED, 0);
            return;
        }
        sys.io_release_cancel_spin_lock(cancel_irql);
        let old = sys.ke_raise_irql(Irql::Dispatch);
        let c = self.locked(sys, |e, r| e.cancel(irp, r));
        if let Some(c) = c {
            self.finish(sys, c);
        }
        sys.ke_lower_irql(old);
    }

    fn isr(&mut self, sys: &Sys) -> bool {
        let mut regs = SimRegs(sys.clone());
        match regs::isr_acknowledge(&mut regs) {
            None => false,
            Some(bits) => {
                self.isr_bits |= bits.bits();
                self.isr_count += 1;
                sys.io_request_dpc(sys.current_irp());
                true
            }
        }
    }

    fn dpc_for_isr(&mut self, sys: &Sys, _irp: Option<IrpId>) {
        let bits = IrqBits::from_bits_retain(std::mem::take(&mut self.isr_bits));
        let count = std::mem::take(&mut self.isr_count);
        let c = self.locked(sys, |e, r| e.dpc(bits, count, r));
        if let Some(c) = c {
            self.finish(sys, c);
        }
    }

    fn timer_dpc(&mut self, sys: &Sys) {
        let c = self.locked(sys, |e, r| e.watchdog_tick(r));
        if let Some(c) = c {
            self.finish(sys, c);
        }
    }

    fn execution_routine(&mut self, sys: &Sys, base: MapRegisterBase) -> IoAllocationAction {
        let Some(slot) = self.slot.clone() else {
            return IoAllocationAction::KeepObject;
        };
        if let Some(base) = execution_routine(&slot, base) {
            let c = self.locked(sys, |e, r| e.channel_granted(base, r));
            if let Some(c) = c {
                self.finish(sys, c);
            }
        }
        IoAllocationAction::KeepObject
    }
}
