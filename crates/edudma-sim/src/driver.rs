//! The edudma driver's glue on the simulated Windows — the same design as
//! the Windows glue in `src/`, routine for routine:
//!
//! - dispatch classifies through the core and calls `IoStartPacket` with
//!   [`QUEUE_CANCEL`] (`src/dispatch.rs`);
//! - StartIo takes the cancel spin lock, takes the IRP's cancel routine back
//!   (none: the queue cancel owns the IRP), stores its sequence number in
//!   `DriverContext[0]`, sets [`ENGINE_CANCEL`], then feeds the engine and
//!   replays a cancel that arrived in between (`src/startio.rs`);
//! - the execution routine never calls the engine: a late grant goes to the
//!   grant DPC ([`GRANT_DPC`], `src/dma_ops.rs`);
//! - DpcForIsr and the watchdog DPC feed the engine under one lock; the ISR
//!   only acknowledges and queues the DPC (`src/isr.rs`);
//! - completions follow the glue rule: release the lock, take the cancel
//!   routine back, `IoStartNextPacket`, copy the payload,
//!   `IoCompleteRequest`; one decided below DISPATCH_LEVEL goes through the
//!   mailbox DPC ([`MAILBOX_DPC`]).

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
use crate::io::{CancelRoutine, FileId, IrpId, Major};
use crate::irql::{Irql, SpinLock};
use crate::kernel::Sys;
use crate::mdl::MdlId;
use crate::sched::MS;
use crate::wdm::{PnpMinor, PnpOutcome, SimDma, SimRegs, WdmDriver, execution_routine};

/// The engine lock.
pub const ENGINE_LOCK: SpinLock = SpinLock::Driver("edudma engine lock");
/// Watchdog period (the engine's tick).
pub const WATCHDOG_PERIOD: u64 = 100 * MS;
/// The cancel routine of a packet in the device queue (`queue_cancel`).
pub const QUEUE_CANCEL: CancelRoutine = CancelRoutine(1);
/// The cancel routine while the engine works on the packet (`engine_cancel`).
pub const ENGINE_CANCEL: CancelRoutine = CancelRoutine(2);
/// The DPC object that hands a late grant to the engine (`grant_dpc`).
pub const GRANT_DPC: u32 = 1;
/// The DPC object that delivers a completion decided below DISPATCH_LEVEL.
pub const MAILBOX_DPC: u32 = 2;

/// The engine's handle of a request: the IRP and the StartIo sequence
/// number it got, so that a stale cancel cannot hit a reused IRP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReqId {
    /// The IRP.
    pub irp: IrpId,
    /// Its StartIo sequence number (kept in `DriverContext[0]`).
    pub seq: u32,
}

/// The engine as this driver instantiates it.
pub type DriverEngine = Engine<SimDma, ReqId>;

/// What lives under the engine lock.
pub struct Shared {
    /// The decisions.
    pub engine: DriverEngine,
    /// A completion decided below DISPATCH_LEVEL, waiting for the mailbox
    /// DPC. There is at most one: a new packet starts only after the
    /// previous one's `IoStartNextPacket`.
    pub mailbox: Option<Completion<ReqId>>,
    /// A cancel that arrived before the engine knew the request.
    pub pending_cancel: Option<ReqId>,
}

/// What a Read/Write/DeviceControl IRP turns into, by the core's validation.
enum Classified {
    /// Queue for StartIo.
    Start(StartRequest<MdlId>),
    /// A buffered control request answered now.
    Control(ControlRequest),
    /// Complete now with this status and information (not an error of the caller).
    Done(NtStatus, usize),
    /// Refused by validation.
    Rejected(NtStatus),
}

/// A cancelled completion of `irp`.
fn cancelled(irp: IrpId, seq: u32) -> Completion<ReqId> {
    Completion {
        request: ReqId { irp, seq },
        status: NtStatus::CANCELLED,
        information: 0,
        selftest: None,
    }
}

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
    /// Under [`ENGINE_LOCK`].
    shared: Shared,
    slot: Option<Rc<GrantSlot>>,
    /// StartIo sequence numbers.
    next_seq: u32,
    /// Interrupt bits the ISR acknowledged since the last DPC (an atomic on Windows).
    isr_bits: u32,
    /// Interrupts the ISR claimed since the last DPC.
    isr_count: u32,
    started: bool,
    /// Set at surprise removal or removal: new requests are refused.
    gone: Option<StopReason>,
    /// A stop, surprise removal or removal waiting for the adapter to be put.
    stopping: Option<PnpMinor>,
    /// Test hook: the next StartIo of a request meets an `IoCancelIrp` of
    /// it from "another CPU" right after releasing the cancel spin lock,
    /// before the engine knows the request. The simulator runs routines
    /// whole, so this is how that window is reached.
    cancel_inside_start_io: bool,
}

impl EdudmaDriver {
    /// `AddDevice`.
    pub fn new(config: DriverConfig) -> Self {
        Self {
            config,
            shared: Shared {
                engine: Engine::new(config.engine),
                mailbox: None,
                pending_cancel: None,
            },
            slot: None,
            next_seq: 1,
            isr_bits: 0,
            isr_count: 0,
            started: false,
            gone: None,
            stopping: None,
            cancel_inside_start_io: false,
        }
    }

    /// The engine (for statistics and tests).
    pub fn engine(&self) -> &DriverEngine {
        &self.shared.engine
    }

    /// A cancel recorded before the engine knew its request (tests).
    pub fn pending_cancel(&self) -> Option<ReqId> {
        self.shared.pending_cancel
    }

    /// Arm the test hook: the next StartIo that reaches the engine is hit
    /// by an `IoCancelIrp` between its cancel-lock step and `engine.start_io`.
    pub fn cancel_inside_next_start_io(&mut self) {
        self.cancel_inside_start_io = true;
    }

    /// Run `f` under the engine lock.
    fn locked<T>(&mut self, sys: &Sys, f: impl FnOnce(&mut Shared, &mut SimRegs) -> T) -> T {
        let old = sys.ke_acquire_spin_lock(ENGINE_LOCK);
        let mut regs = SimRegs(sys.clone());
        let r = f(&mut self.shared, &mut regs);
        sys.ke_release_spin_lock(ENGINE_LOCK, old);
        r
    }

    /// Carry out a completion of the current StartIo packet (engine lock
    /// released): at DISPATCH_LEVEL, or through the mailbox DPC.
    fn deliver(&mut self, sys: &Sys, c: Completion<ReqId>) {
        if sys.irql() < Irql::Dispatch {
            self.locked(sys, |s, _| {
                assert!(
                    s.mailbox.is_none(),
                    "mailbox already holds a completion: {:?}",
                    s.mailbox
                );
                s.mailbox = Some(c);
            });
            sys.ke_insert_queue_dpc(MAILBOX_DPC, 0, 0);
            return;
        }
        let irp = c.request.irp;
        // The completion makes us the owner. A cancel routine already taken
        // by IoCancelIrp runs under the cancel spin lock: wait for it.
        if sys.io_set_cancel_routine(irp, None).is_none() {
            let old = sys.io_acquire_cancel_spin_lock();
            sys.io_release_cancel_spin_lock(old);
        }
        sys.io_start_next_packet(self, true);
        if let Some(report) = c.selftest {
            sys.irp_write_system_buffer(irp, report.as_bytes());
        }
        sys.io_complete_request(irp, c.status, c.information);
    }

    /// Translate an IRP into the core's request types. Pure: StartIo calls
    /// it again for the same IRP and gets the same answer.
    fn classify(&self, sys: &Sys, irp: IrpId) -> Classified {
        let Some(i) = sys.irp(irp) else {
            return Classified::Rejected(NtStatus::INVALID_PARAMETER);
        };
        let window = self.shared.engine.window();
        let has_mdl = i.mdl.is_some();
        let file = |r: Result<FileRequest, ioctl::RequestError>| match (r, i.mdl) {
            (Ok(FileRequest::Dma(request)), Some(mdl)) => {
                Classified::Start(StartRequest::Dma { request, mdl })
            }
            (Ok(FileRequest::Dma(_)), None) => Classified::Rejected(NtStatus::INVALID_PARAMETER),
            (Ok(FileRequest::Empty), _) => Classified::Done(NtStatus::SUCCESS, 0),
            (Ok(FileRequest::EndOfFile), _) => Classified::Done(NtStatus::END_OF_FILE, 0),
            (Err(e), _) => Classified::Rejected(e.status()),
        };
        match i.major {
            Major::Read {
                byte_offset,
                length,
            } => file(ioctl::validate_read(byte_offset, length, has_mdl, window)),
            Major::Write {
                byte_offset,
                length,
            } => file(ioctl::validate_write(byte_offset, length, has_mdl, window)),
            Major::DeviceControl {
                code,
                input_length,
                output_length,
            } => {
                let n = (input_length as usize).min(i.system_buffer.len());
                let input = &i.system_buffer[..n];
                match ioctl::validate_control(code, input, output_length, has_mdl, window) {
                    Ok(ControlRequest::Dma(request)) => match i.mdl {
                        Some(mdl) => Classified::Start(StartRequest::Dma { request, mdl }),
                        None => Classified::Rejected(NtStatus::INVALID_PARAMETER),
                    },
                    Ok(ControlRequest::SelfTest) => Classified::Start(StartRequest::SelfTest),
                    Ok(other) => Classified::Control(other),
                    Err(e) => Classified::Rejected(e.status()),
                }
            }
        }
    }

    /// Answer a buffered control request from the engine's state (the lock
    /// released before the output buffer is written).
    fn answer_now(&mut self, sys: &Sys, irp: IrpId, request: ControlRequest) -> (NtStatus, usize) {
        match request {
            ControlRequest::GetInfo => {
                let info = self.locked(sys, |s, _| s.engine.device_info());
                sys.irp_write_system_buffer(irp, info.as_bytes());
                (NtStatus::SUCCESS, size_of_val(&info))
            }
            ControlRequest::GetStats => {
                let stats = self.locked(sys, |s, _| s.engine.stats());
                sys.irp_write_system_buffer(irp, stats.as_bytes());
                (NtStatus::SUCCESS, size_of_val(&stats))
            }
            ControlRequest::ResetStats => {
                self.locked(sys, |s, _| s.engine.reset_stats());
                (NtStatus::SUCCESS, 0)
            }
            // Classified as Start, never here.
            ControlRequest::SelfTest | ControlRequest::Dma(_) => {
                (NtStatus::INVALID_DEVICE_REQUEST, 0)
            }
        }
    }

    fn complete_now(sys: &Sys, irp: IrpId, status: NtStatus, information: usize) -> NtStatus {
        sys.io_complete_request(irp, status, information);
        status
    }

    /// Cancel routine of a packet in the device queue (set by
    /// `IoStartPacket`), called with the cancel spin lock held.
    fn queue_cancel(&mut self, sys: &Sys, irp: IrpId, cancel_irql: Irql) {
        // Under the cancel spin lock the IRP is either still queued (we
        // remove it and complete it) or has left the queue to become the
        // current packet: then its StartIo runs, finds the cancel routine
        // gone and completes it. Completing it here would free an IRP that
        // StartIo is about to touch.
        let removed = sys.ke_remove_entry_device_queue(irp);
        sys.io_release_cancel_spin_lock(cancel_irql);
        if removed {
            sys.io_complete_request(irp, NtStatus::CANCELLED, 0);
        }
    }

    /// Cancel routine while the engine works on the packet: the engine gets
    /// its cancel event; the IRP is not touched after the cancel spin lock.
    fn engine_cancel(&mut self, sys: &Sys, irp: IrpId, cancel_irql: Irql) {
        let seq = sys.irp_driver_context(irp, 0) as u32;
        sys.io_release_cancel_spin_lock(cancel_irql);
        let id = ReqId { irp, seq };
        let c = self.locked(sys, |s, r| {
            if s.engine.current_request() == Some(id) {
                s.engine.cancel(id, r)
            } else {
                // Not started yet (StartIo is between its two steps) or
                // already finished: StartIo picks this up, or it is stale.
                s.pending_cancel = Some(id);
                None
            }
        });
        if let Some(c) = c {
            self.deliver(sys, c);
        }
    }

    /// The grant DPC: hands a late grant to the engine at DISPATCH_LEVEL.
    fn grant_dpc(&mut self, sys: &Sys, base: u64) {
        let c = self.locked(sys, |s, r| {
            s.engine.channel_granted(MapRegisterBase(base), r)
        });
        if let Some(c) = c {
            self.deliver(sys, c);
        }
    }

    /// The mailbox DPC: delivers a completion decided below DISPATCH_LEVEL.
    fn mailbox_dpc(&mut self, sys: &Sys) {
        let c = self.locked(sys, |s, _| s.mailbox.take());
        if let Some(c) = c {
            self.deliver(sys, c);
        }
    }

    /// The test hook of [`Self::cancel_inside_next_start_io`]: another
    /// CPU's `IoCancelIrp` runs whole.
    fn cancel_from_another_cpu(&mut self, sys: &Sys, irp: IrpId) {
        let old = sys.io_acquire_cancel_spin_lock();
        match sys.io_cancel_irp_take_routine(irp) {
            Some(routine) => self.cancel(sys, routine, irp, old),
            None => sys.io_release_cancel_spin_lock(old),
        }
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
            .shared
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

    /// Stop, surprise removal or removal (`release_hardware`): the engine
    /// decides; the glue waits for the adapter to be put, gives back the
    /// timer and the interrupt, then flushes the queued DPCs.
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
            // PASSIVE_LEVEL: a completion goes through the mailbox DPC.
            let c = self.locked(sys, |s, r| s.engine.stop(reason, r));
            if let Some(c) = c {
                self.deliver(sys, c);
            }
        }
        // KeWaitForSingleObject on "adapter put": the transfer in flight ends first.
        if !self.shared.engine.adapter_released() {
            return PnpOutcome::Wait;
        }
        if self.started {
            sys.ke_cancel_timer();
            sys.io_disconnect_interrupt_ex();
            self.started = false;
        }
        // KeFlushQueuedDpcs: DpcForIsr, grant and mailbox DPCs finish first.
        if sys.dpcs_queued() {
            return PnpOutcome::Wait;
        }
        self.stopping = None;
        PnpOutcome::Done(NtStatus::SUCCESS)
    }
}

impl WdmDriver for EdudmaDriver {
    fn dispatch(&mut self, sys: &Sys, irp: IrpId) -> NtStatus {
        if let Some(reason) = self.gone {
            // The remove lock refuses it.
            let status = match reason {
                StopReason::SurpriseRemoval => NtStatus::DEVICE_REMOVED,
                _ => NtStatus::DELETE_PENDING,
            };
            return Self::complete_now(sys, irp, status, 0);
        }
        match self.classify(sys, irp) {
            Classified::Start(_) => {
                // Mark pending before queuing: the packet may complete
                // before IoStartPacket returns.
                sys.io_mark_irp_pending(irp);
                sys.io_start_packet(self, irp, Some(QUEUE_CANCEL));
                NtStatus::PENDING
            }
            Classified::Control(request) => {
                let (status, information) = self.answer_now(sys, irp, request);
                Self::complete_now(sys, irp, status, information)
            }
            Classified::Done(status, information) => {
                Self::complete_now(sys, irp, status, information)
            }
            Classified::Rejected(status) => {
                self.locked(sys, |s, _| s.engine.record_rejected());
                Self::complete_now(sys, irp, status, 0)
            }
        }
    }

    fn cleanup(&mut self, sys: &Sys, file: FileId) -> NtStatus {
        // The engine's request of that file object gets the cancel event.
        let c = self.locked(sys, |s, r| match s.engine.current_request() {
            Some(id) if sys.irp_file(id.irp) == file => s.engine.cancel(id, r),
            _ => None,
        });
        if let Some(c) = c {
            self.deliver(sys, c);
        }
        NtStatus::SUCCESS
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
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        // The cancel spin lock orders us against IoCancelIrp: a queue
        // cancel routine already taken left this packet to us (it was no
        // longer queued), and so does a cancel flag set before we cleared
        // the routine; otherwise we own cancellation from here on.
        let old = sys.io_acquire_cancel_spin_lock();
        let routine_taken = sys.io_set_cancel_routine(irp, None).is_none();
        if routine_taken || sys.irp_cancel_flag(irp) {
            sys.io_release_cancel_spin_lock(old);
            self.deliver(sys, cancelled(irp, seq));
            return;
        }
        sys.set_irp_driver_context(irp, 0, u64::from(seq));
        sys.io_set_cancel_routine(irp, Some(ENGINE_CANCEL));
        sys.io_release_cancel_spin_lock(old);
        let id = ReqId { irp, seq };
        let what = match self.classify(sys, irp) {
            Classified::Start(what) => what,
            // Dispatch queued only what classified as Start, and
            // classification is pure; if that ever breaks, refuse it.
            Classified::Rejected(status) | Classified::Done(status, _) => {
                let c = self.locked(sys, |s, _| s.engine.reject(id, status));
                self.deliver(sys, c);
                return;
            }
            Classified::Control(_) => {
                let c = self.locked(sys, |s, _| {
                    s.engine.reject(id, NtStatus::INVALID_DEVICE_REQUEST)
                });
                self.deliver(sys, c);
                return;
            }
        };
        if std::mem::take(&mut self.cancel_inside_start_io) {
            self.cancel_from_another_cpu(sys, irp);
        }
        let c = self.locked(sys, |s, r| match s.engine.start_io(id, what, r) {
            None if s.pending_cancel == Some(id) => {
                s.pending_cancel = None;
                s.engine.cancel(id, r)
            }
            other => other,
        });
        if let Some(c) = c {
            self.deliver(sys, c);
        }
    }

    fn cancel(&mut self, sys: &Sys, routine: CancelRoutine, irp: IrpId, cancel_irql: Irql) {
        match routine {
            QUEUE_CANCEL => self.queue_cancel(sys, irp, cancel_irql),
            ENGINE_CANCEL => self.engine_cancel(sys, irp, cancel_irql),
            _ => sys.io_release_cancel_spin_lock(cancel_irql),
        }
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
        let c = self.locked(sys, |s, r| s.engine.dpc(bits, count, r));
        if let Some(c) = c {
            self.deliver(sys, c);
        }
    }

    fn timer_dpc(&mut self, sys: &Sys) {
        let c = self.locked(sys, |s, r| s.engine.watchdog_tick(r));
        if let Some(c) = c {
            self.deliver(sys, c);
        }
    }

    fn execution_routine(&mut self, sys: &Sys, base: MapRegisterBase) -> IoAllocationAction {
        // Never the engine lock here: the GrantSlot decides whether the
        // allocating call picks the grant up, or the grant DPC hands it over.
        if let Some(slot) = &self.slot
            && let Some(base) = execution_routine(slot, base)
            && !sys.ke_insert_queue_dpc(GRANT_DPC, base.0, 0)
        {
            // One channel request is outstanding at a time: the grant DPC
            // is never still queued with an older grant. If it were, the
            // kept SystemArgument1 would lose this grant.
            sys.report_fault("grant DPC already queued: a grant would be lost");
        }
        // Step 9 frees channel and map registers with FreeAdapterChannel.
        IoAllocationAction::KeepObject
    }

    fn driver_dpc(&mut self, sys: &Sys, dpc: u32, argument1: u64, _argument2: u64) {
        match dpc {
            GRANT_DPC => self.grant_dpc(sys, argument1),
            MAILBOX_DPC => self.mailbox_dpc(sys),
            _ => {}
        }
    }
}
