//! Device power: what the engine does when the device leaves D0 and when it
//! comes back.
//!
//! The edu device has no PCI power-management capability and no reset
//! handler (QEMU `hw/misc/edu.c`): D3 changes nothing inside it, but a VM
//! wake from S3 resets its PCI function (`pc_machine_wakeup` →
//! `qemu_devices_reset` → `pci_do_device_reset`: command register, BARs and
//! MSI cleared) while its own registers — `status`, `irq_status`, the DMA
//! registers — keep whatever they held. Learn ("Device Sleeping States",
//! D3hot): "The device driver is solely responsible for restoring device
//! context." So the engine drains before D3 and, back in D0, checks and
//! quiesces the device as a start does.

use core::mem;

use super::{Completion, DmaOps, Engine, Pending, State, quiesce};
use crate::regs::{self, RegisterFile};
use crate::status::NtStatus;
use core::fmt::Debug;

impl<D: DmaOps, R: Copy + Eq + Debug> Engine<D, R> {
    /// A device set-power IRP to D1–D3 arrived. From now on StartIo's packet
    /// is held (not failed) until [`Engine::power_up`]; the request in
    /// flight finishes normally (the watchdog bounds it). True once nothing
    /// is in flight: the device is quiesced and the glue may report the new
    /// state and pass the IRP down. Call again after each completion until
    /// it is true.
    ///
    /// A request still waiting for its channel (the map registers may be
    /// another device's for a long while) is taken back with
    /// `CancelAdapterChannel` and held; if the HAL has already committed the
    /// grant, the grant frees the channel and holds the request
    /// ([`Engine::channel_granted`] returns no completion then: the glue
    /// asks again after it too).
    pub fn power_down(&mut self, regs: &mut impl RegisterFile) -> PowerDown<R> {
        self.powered_down = true;
        let (drained, completion) = match mem::replace(&mut self.state, State::Transient) {
            State::Idle(adapter) => {
                self.state = State::Idle(adapter);
                (true, None)
            }
            State::AwaitingChannel {
                job,
                pending: Pending::List(pending),
            } if job.done > 0 => {
                // Part of the request moved already: it finishes first.
                self.state = State::AwaitingChannel {
                    job,
                    pending: Pending::List(pending),
                };
                (false, None)
            }
            State::AwaitingChannel { job, pending } => {
                match self.cancel_pending(pending) {
                    Ok(adapter) => {
                        self.settle(adapter);
                        // Nothing moved yet and the held slot is free (this
                        // was StartIo's current packet): held, not failed.
                        (true, self.hold_or_fail(job, NtStatus::DEVICE_NOT_READY))
                    }
                    Err(awaited) => {
                        self.state = State::CancellingChannel { job, awaited };
                        (false, None)
                    }
                }
            }
            state => {
                let drained = matches!(state, State::Unstarted | State::Stopped | State::Quiet(_));
                self.state = state;
                (drained, None)
            }
        };
        if drained && matches!(self.state, State::Idle(_)) {
            quiesce(regs);
        }
        PowerDown {
            drained,
            completion,
        }
    }

    /// True from [`Engine::power_down`] to [`Engine::power_up`].
    pub fn powered_down(&self) -> bool {
        self.powered_down
    }

    /// The D0 IRP came back from the bus driver. `restored`: it succeeded
    /// (the function decodes again) and the glue set Bus Master Enable again.
    /// Then the device must still be the edu device — its registers survived
    /// the wake, so it is quiesced as at start — and the packet held while
    /// powered down starts. Otherwise (no D0, no bus mastering, or a wrong ID
    /// register) the device is failed until the next start (the glue reports
    /// it) and the held packet is failed too, never lost; without `restored`
    /// the registers stay untouched until that start (they may not decode).
    pub fn power_up(&mut self, restored: bool, regs: &mut impl RegisterFile) -> PowerUp<R> {
        self.powered_down = !restored;
        let status = if !matches!(self.state, State::Idle(_)) {
            NtStatus::SUCCESS
        } else if !restored {
            self.failed = true;
            NtStatus::DEVICE_CONFIGURATION_ERROR
        } else if regs.read32(regs::REG_ID) == self.device_id {
            quiesce(regs);
            NtStatus::SUCCESS
        } else {
            self.failed = true;
            NtStatus::DEVICE_HARDWARE_ERROR
        };
        PowerUp {
            status,
            resumed: self.resume(regs),
        }
    }
}

/// What [`Engine::power_down`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerDown<R> {
    /// Nothing is in flight: the device is quiesced, D3 may go down.
    pub drained: bool,
    /// A completion to deliver (never expected: a request taken back from
    /// its channel wait is held; carried so that nothing is ever lost).
    pub completion: Option<Completion<R>>,
}

/// What [`Engine::power_up`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerUp<R> {
    /// `SUCCESS`, or `DEVICE_HARDWARE_ERROR` when the device did not come
    /// back as the edu device (it is failed until the next start).
    pub status: NtStatus,
    /// The completion of the held packet, if it ended at once.
    pub resumed: Option<Completion<R>>,
}

/// The status a system power IRP completes with once its device IRP ended
/// with `device`: a query (`query`) takes it; a set succeeds whatever
/// happened (Learn, "Power IRPs for the System": a driver "cannot fail
/// IRP_MN_SET_POWER"; a device that did not come back is reported failed
/// through PnP instead).
pub const fn system_power_status(query: bool, device: NtStatus) -> NtStatus {
    if query { device } else { NtStatus::SUCCESS }
}

/// `PowerSystemWorking` (wdm.h `SYSTEM_POWER_STATE`).
pub const POWER_SYSTEM_WORKING: i32 = 1;
/// `PowerDeviceD0` (wdm.h `DEVICE_POWER_STATE`).
pub const POWER_DEVICE_D0: i32 = 1;
/// `PowerDeviceD3` (wdm.h `DEVICE_POWER_STATE`).
pub const POWER_DEVICE_D3: i32 = 4;

/// The device power state the policy owner requests for a system power
/// state (both as their wdm.h values): D0 in S0, D3 in every sleeping
/// state, hibernation and shutdown — edu cannot wake the system, has no
/// intermediate D-state, and keeps nothing that needs power (its context
/// is reinitialized at D0).
pub const fn device_state_for(system_state: i32) -> i32 {
    if system_state == POWER_SYSTEM_WORKING {
        POWER_DEVICE_D0
    } else {
        POWER_DEVICE_D3
    }
}
