//! The engine: one state machine per device, fed events by the glue and
//! answering with decisions.
//!
//! The glue calls one method per Windows event — [`Engine::start_io`] from
//! StartIo, [`Engine::channel_granted`] from a late execution routine,
//! [`Engine::dpc`] from DpcForIsr, [`Engine::cancel`] from the cancel
//! routine, [`Engine::watchdog_tick`] from the watchdog timer,
//! [`Engine::stop`] from PnP — always under the one engine lock. The engine
//! performs the DMA and register calls itself through its two seams and
//! returns at most one [`Completion`], always of the current StartIo packet.
//!
//! **Glue rule for a completion:** release the engine lock, call
//! `IoStartNextPacket`, copy [`Completion::selftest`] to the output buffer if
//! present, then `IoCompleteRequest`.
//!
//! A request's life (the names of [`State`]'s variants):
//!
//! ```text
//! Idle ─start_io─▶ [GetDmaTransferInfo, AllocateAdapterChannelEx]
//!   ├─ granted now ───────────────┐
//!   └─ queued ─▶ AwaitingChannel ─┤ channel_granted
//!        └─ cancel: TRUE ─▶ Idle  │   (FALSE ─▶ CancellingChannel ─grant─▶ free ─▶ Idle)
//!                                 ▼
//!        ┌──────────────▶ [MapTransferEx] ─▶ Transferring(element i of n) ─dpc/lost irq─▶ i+1 …
//!        │                                        │ last element
//!        └── bytes remain ◀── [FlushAdapterBuffersEx] ◀┘
//!                                   │ done, cancelled, failed or timed out
//!                                   ▼
//!                       [FreeAdapterChannel] ─▶ Idle ─stop─▶ [PutDmaAdapter] ─▶ Stopped
//! ```

mod config;
mod power;
mod selftest;
mod transfer;

#[cfg(test)]
mod tests;

use core::fmt::Debug;
use core::mem;

pub use config::{
    AdapterFacts, AdapterRequest, AllocationPolicy, DEFAULT_WINDOW, DEVICE_DESCRIPTION_VERSION1,
    DEVICE_DESCRIPTION_VERSION2, DEVICE_DESCRIPTION_VERSION3, DmaStrategy, EngineConfig,
    MIN_DMA_ADDRESS_WIDTH, dma_address_width_from_registry,
};
pub use power::{
    POWER_DEVICE_D0, POWER_DEVICE_D3, POWER_SYSTEM_WORKING, PowerDown, PowerUp, device_state_for,
    system_power_status,
};
use selftest::SelfTest;

use crate::dma::{DmaOps, SgList};
use crate::ioctl::{self, DeviceInfo, Direction, DmaRequest, SelfTestReport, Stats};
use crate::protocol::{
    Adapter, CommonUse, GrantAwaited, ListGrant, Mapping, PendingChannel, PendingList,
    QuietAdapter, Routines,
};
use crate::regs::{self, DEVICE_BUFFER_SIZE, DmaCommand, IrqBits, RegisterFile};
use crate::status::NtStatus;

/// The driver's version, reported in [`DeviceInfo::driver_version`].
pub const DRIVER_VERSION: u32 = driver_version(0, 1, 0);

/// Pack a driver version as [`DeviceInfo::driver_version`] carries it.
pub const fn driver_version(major: u8, minor: u8, patch: u8) -> u32 {
    ((major as u32) << 16) | ((minor as u32) << 8) | patch as u32
}

/// What StartIo hands the engine: a validated request and its data buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartRequest<M> {
    /// A DMA transfer over the MDL chain `mdl`, which describes exactly
    /// `request.length` bytes of the caller's buffer.
    Dma {
        /// The validated transfer.
        request: DmaRequest,
        /// The caller's locked buffer.
        mdl: M,
    },
    /// The no-DMA self-test.
    SelfTest,
}

/// A decision to complete the current StartIo packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion<R> {
    /// The request to complete.
    pub request: R,
    /// Its `IoStatus.Status`.
    pub status: NtStatus,
    /// Its `IoStatus.Information` (bytes transferred or returned).
    pub information: usize,
    /// The self-test's answer, to copy to the output buffer first.
    pub selftest: Option<SelfTestReport>,
}

/// Why the device stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// `IRP_MN_STOP_DEVICE`: the device is still there; a transfer in
    /// flight finishes first. A later [`Engine::start_device`] restarts.
    Stop,
    /// `IRP_MN_SURPRISE_REMOVAL`: the device is gone; nothing it was doing
    /// will finish.
    SurpriseRemoval,
    /// `IRP_MN_REMOVE_DEVICE`.
    Remove,
}

impl StopReason {
    /// The status of requests that meet a stopped device.
    fn status(self) -> NtStatus {
        match self {
            StopReason::Stop => NtStatus::DEVICE_NOT_READY,
            StopReason::SurpriseRemoval => NtStatus::DEVICE_REMOVED,
            StopReason::Remove => NtStatus::DELETE_PENDING,
        }
    }
}

/// The request being transferred.
#[derive(Clone, Copy, Debug)]
struct Job<R, M> {
    request: R,
    mdl: M,
    dma: DmaRequest,
    /// Bytes already moved and flushed.
    done: u32,
    /// A cancel arrived while the device was busy.
    cancelled: bool,
}

/// The device's state, holding the DMA protocol token of the moment: an
/// impossible order of steps has no representation here.
enum State<D: DmaOps, R> {
    /// No adapter yet (before start, or after a failed start).
    Unstarted,
    /// The adapter, nothing outstanding.
    Idle(Adapter<D>),
    /// Step 3 (or a list) queued; the grant will come as
    /// [`Engine::channel_granted`].
    AwaitingChannel {
        job: Job<R, D::Mdl>,
        pending: Pending<D>,
    },
    /// Taken back (step 4 returned FALSE, or there is no step 4): the grant
    /// will come and must be released.
    CancellingChannel {
        job: Job<R, D::Mdl>,
        awaited: Awaited<D>,
    },
    /// Steps 5–7: a range is mapped and the device works on one element.
    Transferring(Transfer<D, R>),
    /// The self-test holds the device (and the idle adapter).
    SelfTest {
        adapter: Adapter<D>,
        test: SelfTest<R>,
    },
    /// Stopping with a common buffer, nothing outstanding: the glue
    /// releases it at PASSIVE_LEVEL ([`Engine::take_quiet_adapter`]).
    Quiet(QuietAdapter<D>),
    /// Step 10 done.
    Stopped,
    /// Only between taking the state and putting the next one back.
    Transient,
}

/// A grant asked for and not delivered yet.
enum Pending<D: DmaOps> {
    /// `AllocateAdapterChannel[Ex]` queued.
    Channel(PendingChannel<D>),
    /// `Build`/`GetScatterGatherList`'s routine has not run.
    List(PendingList<D>),
}

/// A grant taken back before it was delivered: released when it comes.
enum Awaited<D: DmaOps> {
    /// `CancelAdapterChannel` returned FALSE (or version 1 has none).
    Channel(GrantAwaited<D>),
    /// A list cannot be cancelled.
    List(PendingList<D>),
}

/// What the device's elements come from.
enum Mapped<D: DmaOps> {
    /// A `MapTransfer[Ex]` mapping, ended by its flush.
    Packet(Mapping<D>),
    /// A scatter/gather list, ended by its put.
    List(ListGrant<D>),
    /// The common buffer, ended by copying a read out of it.
    Common(CommonUse<D>),
}

impl<D: DmaOps> Mapped<D> {
    /// The device is still a bus master ([`DmaOps::bus_master_enabled`]).
    fn device_on_bus(&mut self) -> bool {
        match self {
            Mapped::Packet(mapping) => mapping.device_on_bus(),
            Mapped::List(list) => list.device_on_bus(),
            Mapped::Common(used) => used.device_on_bus(),
        }
    }

    /// Off the bus while the device may still own a command
    /// ([`DmaOps::disable_bus_master`]).
    fn cut_off_device(&mut self) {
        match self {
            Mapped::Packet(mapping) => mapping.cut_off_device(),
            Mapped::List(list) => list.cut_off_device(),
            Mapped::Common(used) => used.cut_off_device(),
        }
    }

    /// Bytes mapped.
    fn length(&self) -> u32 {
        match self {
            Mapped::Packet(mapping) => mapping.length(),
            Mapped::List(list) => list.length(),
            Mapped::Common(used) => used.length(),
        }
    }
}

/// A mapped range in progress on the device.
struct Transfer<D: DmaOps, R> {
    job: Job<R, D::Mdl>,
    mapping: Mapped<D>,
    /// Index of the scatter/gather element the device works on.
    element: usize,
    /// Offset in the device window of that element.
    device_offset: u32,
    /// Whether its command was written (false while the device was busy).
    programmed: bool,
    /// Watchdog ticks since it was programmed.
    ticks: u32,
}

/// One edu DMA engine driven through the version-3 DMA routines.
pub struct Engine<D: DmaOps, R: Copy + Eq + Debug> {
    config: EngineConfig,
    state: State<D, R>,
    facts: Option<AdapterFacts>,
    device_id: u32,
    alignment: u32,
    stopping: Option<StopReason>,
    /// A command was abandoned with the device still owning it: the device
    /// is off the bus and failed until the next start.
    failed: bool,
    /// The packet StartIo handed over while the device was stopped: held
    /// (not failed) until the device starts again or goes away.
    held: Option<(R, StartRequest<D::Mdl>)>,
    /// The device is leaving or out of D0: StartIo's packet is held.
    powered_down: bool,
    stats: Stats,
    /// The current mapping's elements, owned here so nothing allocates.
    sg: SgList,
    /// The last synchronous `AllocateAdapterChannelEx` was refused and no
    /// allocation has been granted inside its call since
    /// ([`transfer::first_mode`]).
    sync_refused: bool,
}

impl<D: DmaOps, R: Copy + Eq + Debug> Engine<D, R> {
    /// A device with no adapter yet.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            state: State::Unstarted,
            facts: None,
            device_id: 0,
            alignment: 0,
            stopping: None,
            failed: false,
            held: None,
            powered_down: false,
            stats: Stats::default(),
            sg: SgList::new(),
            sync_refused: false,
        }
    }

    /// The settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The window requests are validated against.
    pub fn window(&self) -> u32 {
        self.config.effective_window()
    }

    /// The strategy in force: the adapter's, or the one asked for before
    /// there is one.
    pub fn strategy(&self) -> DmaStrategy {
        self.facts.map_or(self.config.strategy, |f| f.strategy)
    }

    /// `IRP_MN_START_DEVICE`, after `IoGetDmaAdapter` succeeded (step 1): the
    /// engine takes the adapter, checks the device (and the common buffer of
    /// `common-buffer`) and quiesces it. On error the adapter has already
    /// been put (step 10) and the device stays unstarted — or, holding a
    /// common buffer, the adapter is left for [`Engine::take_quiet_adapter`].
    pub fn start_device(
        &mut self,
        ops: D,
        facts: AdapterFacts,
        regs: &mut impl RegisterFile,
    ) -> Result<(), NtStatus> {
        let mut adapter = Adapter::new(ops, routines_of(facts.strategy));
        if !matches!(self.state, State::Unstarted | State::Stopped) {
            // The glue must stop the device before starting it again.
            adapter.put();
            return Err(NtStatus::INVALID_DEVICE_STATE);
        }
        let id = regs.read32(regs::REG_ID);
        if regs::decode_id(id).is_none() || !device_idle(regs) {
            // Not the edu device, or one still running a command from
            // before (it cannot be aborted): it stays off the bus.
            self.give_back(adapter, &facts);
            return Err(NtStatus::DEVICE_HARDWARE_ERROR);
        }
        if facts.strategy == DmaStrategy::CommonBuffer
            && !facts.common_buffer.is_some_and(|c| {
                u64::from(c.length) >= u64::from(self.window())
                    && c.logical
                        .checked_add(u64::from(c.length))
                        .is_some_and(|end| end <= facts.address_limit())
            })
        {
            // No common buffer, or one the device cannot reach or that
            // cannot hold the window: no DMA through it.
            self.give_back(adapter, &facts);
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        // Registers survive a VM reset: disable the factorial interrupt and
        // drop any stale interrupt bits.
        regs.write32(regs::REG_STATUS, 0);
        regs.write32(regs::REG_IRQ_ACK, u32::MAX);
        if !adapter.enable_bus_master() {
            self.give_back(adapter, &facts);
            return Err(NtStatus::DEVICE_CONFIGURATION_ERROR);
        }
        self.alignment = adapter.alignment();
        self.device_id = id;
        self.facts = Some(facts);
        self.stopping = None;
        self.failed = false;
        self.sync_refused = false;
        // A start finds the device in D0 (the PnP manager powers it up).
        self.powered_down = false;
        self.state = State::Idle(adapter);
        Ok(())
    }

    /// A start that failed: the adapter is put, or, holding a common
    /// buffer, left quiet for the glue to release at PASSIVE_LEVEL.
    fn give_back(&mut self, adapter: Adapter<D>, facts: &AdapterFacts) {
        self.state = if facts.common_buffer.is_some() {
            State::Quiet(adapter.quiet())
        } else {
            adapter.put();
            State::Unstarted
        };
    }

    /// The quiet adapter of a stop (or of a failed start) with a common
    /// buffer, for the glue to release at PASSIVE_LEVEL; `None` otherwise.
    pub fn take_quiet_adapter(&mut self) -> Option<QuietAdapter<D>> {
        match mem::replace(&mut self.state, State::Transient) {
            State::Quiet(quiet) => {
                self.state = State::Stopped;
                Some(quiet)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// After [`Engine::start_device`]: start the packet held while the device
    /// was stopped, if any (its completion, if it ends at once).
    pub fn resume(&mut self, regs: &mut impl RegisterFile) -> Option<Completion<R>> {
        let (request, what) = self.held.take()?;
        self.start_io(request, what, regs)
    }

    /// StartIo: begin `what` for `request`.
    pub fn start_io(
        &mut self,
        request: R,
        what: StartRequest<D::Mdl>,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        match mem::replace(&mut self.state, State::Transient) {
            State::Idle(adapter) if self.failed => {
                // Off the bus since a command was abandoned: no DMA until the
                // PnP manager restarts the device it was told failed.
                self.state = State::Idle(adapter);
                self.fail(request, NtStatus::DEVICE_HARDWARE_ERROR)
            }
            State::Idle(adapter) if self.powered_down && self.stopping.is_none() => {
                self.state = State::Idle(adapter);
                if self.held.is_some() {
                    // StartIo is serialized and the held packet is current.
                    return self.fail(request, NtStatus::INVALID_DEVICE_STATE);
                }
                // Out of D0: held like a stopped device's packet, started by
                // power_up.
                self.held = Some((request, what));
                None
            }
            State::Idle(adapter) if self.stopping.is_none() => {
                self.stats.requests += 1;
                match what {
                    StartRequest::SelfTest => {
                        let (test, done) = SelfTest::begin(request, regs);
                        self.continue_selftest(adapter, test, done)
                    }
                    StartRequest::Dma { request: dma, mdl } => {
                        let job = Job {
                            request,
                            mdl,
                            dma,
                            done: 0,
                            cancelled: false,
                        };
                        self.begin_dma(adapter, job, regs)
                    }
                }
            }
            state @ (State::Stopped | State::Quiet(_))
                if self.stopping == Some(StopReason::Stop) && self.held.is_none() =>
            {
                // Learn: "While the device is in the stopped state, a driver
                // must hold IRPs that require access to the device." The
                // packet stays current (the device queue holds the rest)
                // until the next start resumes it.
                self.state = state;
                self.held = Some((request, what));
                None
            }
            state @ (State::Unstarted | State::Stopped | State::Quiet(_) | State::Idle(_)) => {
                self.state = state;
                let status = self
                    .stopping
                    .map_or(NtStatus::DEVICE_NOT_READY, StopReason::status);
                self.fail(request, status)
            }
            busy => {
                // StartIo is serialized by the I/O manager: a second packet
                // while one is current is a glue bug. Refuse it, keep going.
                self.state = busy;
                self.fail(request, NtStatus::INVALID_DEVICE_STATE)
            }
        }
    }

    /// The execution routine of a queued `AllocateAdapterChannelEx` ran.
    pub fn channel_granted(
        &mut self,
        base: D::MapRegisterBase,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        match mem::replace(&mut self.state, State::Transient) {
            State::AwaitingChannel {
                job,
                pending: Pending::Channel(pending),
            } => {
                let channel = pending.granted(base);
                self.map_next(job, channel, regs)
            }
            State::AwaitingChannel {
                job,
                pending: Pending::List(pending),
            } => self.start_list(job, pending.granted(base), regs),
            State::CancellingChannel { job, awaited } => {
                let adapter = self.release_awaited(awaited, base);
                self.settle(adapter);
                if !job.cancelled && self.holding() {
                    // Asked back for a stop or a power-down, not a cancel:
                    // the channel goes, the request is held for the restart
                    // or the return to D0.
                    return self.hold_or_fail(job, StopReason::Stop.status());
                }
                let status = if job.cancelled {
                    NtStatus::CANCELLED
                } else {
                    self.stopping
                        .map_or(NtStatus::CANCELLED, StopReason::status)
                };
                self.fail(job.request, status)
            }
            other => {
                // A grant nobody asked for cannot be released without its
                // token; count it so it shows in the statistics.
                self.state = other;
                self.stats.errors += 1;
                None
            }
        }
    }

    /// DpcForIsr: `irq` are the interrupt bits the ISR acknowledged since
    /// the last DPC, `interrupts` how many interrupts it claimed.
    pub fn dpc(
        &mut self,
        irq: IrqBits,
        interrupts: u32,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        self.stats.dpcs += 1;
        self.stats.interrupts += u64::from(interrupts);
        match mem::replace(&mut self.state, State::Transient) {
            State::Transferring(transfer) if transfer.programmed => {
                // The command register is the truth: a stale or foreign
                // interrupt while our command runs changes nothing.
                if device_idle(regs) {
                    self.element_done(transfer, regs)
                } else {
                    self.state = State::Transferring(transfer);
                    None
                }
            }
            State::Transferring(transfer) => self.program(transfer, regs),
            State::SelfTest { adapter, mut test } => {
                let done = test.on_interrupt(irq, regs);
                self.continue_selftest(adapter, test, done)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The cancel routine ran for `request`. A request that is not current
    /// (already completed, or never started) is ignored.
    pub fn cancel(&mut self, request: R, regs: &mut impl RegisterFile) -> Option<Completion<R>> {
        if self.held.is_some_and(|(held, _)| held == request) {
            self.held = None;
            self.stats.cancels += 1;
            return self.finish(request, NtStatus::CANCELLED, 0, None);
        }
        match mem::replace(&mut self.state, State::Transient) {
            State::AwaitingChannel { mut job, pending } if job.request == request => {
                self.stats.cancels += 1;
                job.cancelled = true;
                match self.cancel_pending(pending) {
                    Ok(adapter) => {
                        self.settle(adapter);
                        self.finish(job.request, NtStatus::CANCELLED, 0, None)
                    }
                    Err(awaited) => {
                        self.state = State::CancellingChannel { job, awaited };
                        None
                    }
                }
            }
            State::CancellingChannel { mut job, awaited } if job.request == request => {
                // Asked back for a stop, then cancelled: its grant ends it.
                self.stats.cancels += 1;
                job.cancelled = true;
                self.state = State::CancellingChannel { job, awaited };
                None
            }
            State::Transferring(mut transfer)
                if transfer.job.request == request && !transfer.job.cancelled =>
            {
                self.stats.cancels += 1;
                transfer.job.cancelled = true;
                if transfer.programmed {
                    // The device cannot abandon a command: let it finish,
                    // then flush, free and complete as cancelled.
                    self.state = State::Transferring(transfer);
                    None
                } else {
                    self.flush_and_end(transfer, NtStatus::CANCELLED)
                }
            }
            State::SelfTest { adapter, test } if test.request() == request => {
                self.stats.cancels += 1;
                test.abandon(regs);
                self.settle(adapter);
                self.finish(request, NtStatus::CANCELLED, 0, None)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// The periodic watchdog: finds lost interrupts and stuck commands.
    pub fn watchdog_tick(&mut self, regs: &mut impl RegisterFile) -> Option<Completion<R>> {
        match mem::replace(&mut self.state, State::Transient) {
            State::Transferring(mut transfer) => {
                transfer.ticks += 1;
                if !transfer.programmed {
                    if transfer.ticks >= self.config.timeout_ticks {
                        self.stats.timeouts += 1;
                        return self.flush_and_end(transfer, NtStatus::IO_TIMEOUT);
                    }
                    return self.program(transfer, regs);
                }
                if transfer.ticks >= self.config.lost_interrupt_ticks && device_idle(regs) {
                    self.stats.lost_interrupts += 1;
                    return self.element_done(transfer, regs);
                }
                if transfer.ticks >= self.config.timeout_ticks {
                    self.stats.timeouts += 1;
                    return self.abandon(transfer, NtStatus::IO_TIMEOUT);
                }
                self.state = State::Transferring(transfer);
                None
            }
            State::SelfTest { adapter, mut test } => {
                let done = test.on_tick(self.config.timeout_ticks, regs);
                self.continue_selftest(adapter, test, done)
            }
            other => {
                self.state = other;
                None
            }
        }
    }

    /// PnP stop, surprise removal or removal. The adapter is put (step 10)
    /// as soon as nothing is outstanding — now, or when the request in
    /// flight ends; [`Engine::adapter_released`] tells which. Requests that
    /// start afterwards are failed.
    pub fn stop(
        &mut self,
        reason: StopReason,
        regs: &mut impl RegisterFile,
    ) -> Option<Completion<R>> {
        // A removal after a surprise removal keeps the surprise's status.
        if self.stopping != Some(StopReason::SurpriseRemoval) {
            self.stopping = Some(reason);
        }
        let status = self.stopping.map_or(reason.status(), StopReason::status);
        if reason != StopReason::Stop
            && let Some((request, _)) = self.held.take()
        {
            // The device will not come back for it.
            return self.fail(request, status);
        }
        match mem::replace(&mut self.state, State::Transient) {
            State::Idle(adapter) => {
                if !self.powered_down {
                    // Out of D0 the registers do not decode: quiesced already.
                    quiesce(regs);
                }
                self.settle(adapter);
                None
            }
            State::AwaitingChannel {
                job,
                pending: Pending::List(pending),
            } if job.done > 0 && reason != StopReason::SurpriseRemoval => {
                // Part of the request moved already and its next list is
                // on the way: it finishes, as a transfer in flight does.
                self.state = State::AwaitingChannel {
                    job,
                    pending: Pending::List(pending),
                };
                None
            }
            State::AwaitingChannel { job, pending } => match self.cancel_pending(pending) {
                Ok(adapter) => {
                    self.settle(adapter);
                    self.hold_or_fail(job, status)
                }
                Err(awaited) => {
                    self.state = State::CancellingChannel { job, awaited };
                    None
                }
            },
            State::Transferring(transfer) if !transfer.programmed => {
                self.flush_and_end(transfer, status)
            }
            State::Transferring(transfer) if reason == StopReason::SurpriseRemoval => {
                // Nothing will finish on a removed device; if it is in fact
                // still there, its command must not reach memory.
                self.abandon(transfer, status)
            }
            State::SelfTest { adapter, test } => {
                test.abandon(regs);
                self.settle(adapter);
                self.finish(test.request(), status, 0, None)
            }
            other => {
                // Unstarted, Stopped, a grant awaited, or a transfer that
                // will finish: its end puts the adapter.
                self.state = other;
                None
            }
        }
    }

    /// True once a command was abandoned with the device owning it: the
    /// device is off the bus until the next start, and the glue reports it
    /// failed to the PnP manager (`IoInvalidateDeviceState`).
    pub fn device_failed(&self) -> bool {
        self.failed
    }

    /// True when no adapter is held: never started, or put after a stop.
    pub fn adapter_released(&self) -> bool {
        matches!(self.state, State::Unstarted | State::Stopped)
    }

    /// True while the device works on something the watchdog must watch: a
    /// mapped transfer (lost interrupts, stuck commands) or the self-test.
    /// The glue keeps its timer armed only then.
    pub fn needs_watchdog(&self) -> bool {
        matches!(self.state, State::Transferring(_) | State::SelfTest { .. })
    }

    /// True when no request is current.
    pub fn is_idle(&self) -> bool {
        matches!(
            self.state,
            State::Unstarted | State::Stopped | State::Quiet(_) | State::Idle(_)
        )
    }

    /// The current StartIo request, if any.
    pub fn current_request(&self) -> Option<R> {
        if let Some((request, _)) = self.held {
            return Some(request);
        }
        match &self.state {
            State::AwaitingChannel { job, .. } | State::CancellingChannel { job, .. } => {
                Some(job.request)
            }
            State::Transferring(transfer) => Some(transfer.job.request),
            State::SelfTest { test, .. } => Some(test.request()),
            _ => None,
        }
    }

    /// The answer to `IOCTL_EDUDMA_GET_INFO`.
    pub fn device_info(&self) -> DeviceInfo {
        let facts = self.facts;
        DeviceInfo {
            size: size_of::<DeviceInfo>() as u32,
            contract_version: ioctl::CONTRACT_VERSION,
            driver_version: DRIVER_VERSION,
            device_id: self.device_id,
            dma_interface_version: facts.map_or(0, |f| f.dma_interface_version),
            map_registers: facts.map_or(0, |f| f.map_registers),
            dma_alignment: self.alignment,
            dma_address_width: facts.map_or(0, |f| f.dma_address_width),
            scatter_gather: facts.is_some_and(|f| f.scatter_gather) as u32,
            interrupt_kind: facts.map_or(0, |f| f.interrupt_kind as u32),
            device_buffer_size: DEVICE_BUFFER_SIZE,
            dma_window: self.window(),
            allocation_policy: self.config.allocation.code() as u32,
            dma_strategy: facts.map_or(self.config.strategy, |f| f.strategy).code() as u32,
            requested_dma_strategy: self.config.strategy.code() as u32,
            reserved: 0,
        }
    }

    /// The answer to `IOCTL_EDUDMA_GET_STATS`.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// `IOCTL_EDUDMA_RESET_STATS`.
    pub fn reset_stats(&mut self) {
        self.stats = Stats::default();
    }

    /// A request failed validation in dispatch and never reached StartIo.
    pub fn record_rejected(&mut self) {
        self.stats.errors += 1;
    }

    /// StartIo got a packet it cannot start (its parameters no longer
    /// validate): complete it with `status` and start the next packet.
    pub fn reject(&mut self, request: R, status: NtStatus) -> Completion<R> {
        self.stats.requests += 1;
        let status = if status.is_success() {
            NtStatus::INVALID_DEVICE_REQUEST
        } else {
            status
        };
        Completion {
            request,
            status,
            information: 0,
            selftest: None,
        }
        .counted(&mut self.stats)
    }

    // ---- the self-test ----------------------------------------------------

    fn continue_selftest(
        &mut self,
        adapter: Adapter<D>,
        test: SelfTest<R>,
        report: Option<SelfTestReport>,
    ) -> Option<Completion<R>> {
        match report {
            None => {
                self.state = State::SelfTest { adapter, test };
                None
            }
            Some(report) => {
                self.settle(adapter);
                self.finish(
                    test.request(),
                    NtStatus::SUCCESS,
                    size_of::<SelfTestReport>(),
                    Some(report),
                )
            }
        }
    }

    // ---- bookkeeping ------------------------------------------------------

    /// The adapter is free again: keep it, or put it when stopping (step 10).
    fn settle(&mut self, adapter: Adapter<D>) {
        if self.stopping.is_some() {
            if self.facts.is_some_and(|f| f.common_buffer.is_some()) {
                // FreeCommonBuffer first, at PASSIVE_LEVEL: the glue's.
                self.state = State::Quiet(adapter.quiet());
                return;
            }
            adapter.put();
            self.state = State::Stopped;
        } else {
            self.state = State::Idle(adapter);
        }
    }

    fn count_bytes(&mut self, direction: Direction, bytes: u32) {
        match direction {
            Direction::ToDevice => self.stats.bytes_to_device += u64::from(bytes),
            Direction::FromDevice => self.stats.bytes_from_device += u64::from(bytes),
        }
    }

    /// A request taken back now is held, not failed: the device is stopped
    /// (a rebalance) or leaving D0, and nothing removes it.
    fn holding(&self) -> bool {
        match self.stopping {
            Some(reason) => reason == StopReason::Stop,
            None => self.powered_down,
        }
    }

    /// A request that never moved a byte, taken back before its channel was
    /// granted: held for the restart or D0 (see `holding`), failed otherwise.
    fn hold_or_fail(&mut self, job: Job<R, D::Mdl>, status: NtStatus) -> Option<Completion<R>> {
        if self.holding() && job.done == 0 && !job.cancelled && self.held.is_none() {
            self.held = Some((
                job.request,
                StartRequest::Dma {
                    request: job.dma,
                    mdl: job.mdl,
                },
            ));
            return None;
        }
        self.fail(job.request, status)
    }

    fn fail(&mut self, request: R, status: NtStatus) -> Option<Completion<R>> {
        self.finish(request, status, 0, None)
    }

    fn finish(
        &mut self,
        request: R,
        status: NtStatus,
        information: usize,
        selftest: Option<SelfTestReport>,
    ) -> Option<Completion<R>> {
        Some(
            Completion {
                request,
                status,
                information,
                selftest,
            }
            .counted(&mut self.stats),
        )
    }
}

impl<R> Completion<R> {
    /// Count this completion in `stats`.
    fn counted(self, stats: &mut Stats) -> Self {
        if self.status.is_success() {
            stats.completed += 1;
        } else if self.status != NtStatus::CANCELLED {
            stats.errors += 1;
        }
        self
    }
}

/// The routines a strategy's adapter is driven through (sg-list asks for
/// a version-3 adapter; its list routines are the same in every version).
fn routines_of(strategy: DmaStrategy) -> Routines {
    match strategy {
        DmaStrategy::V3Packet | DmaStrategy::SgList | DmaStrategy::CommonBuffer => {
            Routines::Version3
        }
        DmaStrategy::V1Packet => Routines::Version1,
    }
}

/// The device is not running a DMA command (and is still there: a removed
/// device reads all-ones).
fn device_idle(regs: &mut impl RegisterFile) -> bool {
    let command = regs.read32(regs::REG_DMA_CMD);
    command != u32::MAX && command & DmaCommand::START.bits() == 0
}

/// Leave the device quiet: no factorial interrupt, no pending bits.
fn quiesce(regs: &mut impl RegisterFile) {
    regs.write32(regs::REG_STATUS, 0);
    regs.write32(regs::REG_IRQ_ACK, u32::MAX);
}
