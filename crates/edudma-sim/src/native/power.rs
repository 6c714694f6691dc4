//! The power manager's side of power IRPs: the system power IRPs the
//! machine sends, `PoRequestPowerIrp` (the device power IRP a policy owner
//! requests, sent to the top of its stack on the power manager's thread,
//! its callback run when the IRP completes) and `PoSetPowerState`.
#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

use std::sync::Arc;

use edudma_core::NtStatus;
use wdk_sys::{
    _DEVICE_POWER_STATE, _POWER_STATE_TYPE, _SYSTEM_POWER_STATE, DEVICE_OBJECT, IO_STATUS_BLOCK,
    IRP, IRP_MJ_POWER, IRP_MN_QUERY_POWER, IRP_MN_SET_POWER, NTSTATUS, POWER_STATE,
    POWER_STATE_TYPE, PREQUEST_POWER_COMPLETE, PVOID, UCHAR,
};

use super::exports::{Call, must_be_at_most_dispatch};
use super::objects::{self, PowerRequest};
use super::{Native, NativeDriver};
use crate::kernel::Sys;
use crate::power::{DevicePower, PowerMinor, SystemPower};
use crate::sched::{Event, US};

const _: () = {
    let _ = [wdk_sys::ntddk::PoRequestPowerIrp, PoRequestPowerIrp];
    let _ = [wdk_sys::ntddk::PoSetPowerState, PoSetPowerState];
};

/// The model's state of a `DEVICE_POWER_STATE`.
pub(crate) fn device_power(state: i32) -> DevicePower {
    if state == _DEVICE_POWER_STATE::PowerDeviceD0 {
        DevicePower::D0
    } else {
        DevicePower::Off
    }
}

/// `IRP_MJ_POWER` parameters of a location: (`Type`, `State` as an int).
///
/// # Safety
/// `stack` must be a live location of a power IRP.
pub(crate) unsafe fn parameters(
    stack: *const wdk_sys::IO_STACK_LOCATION,
) -> (POWER_STATE_TYPE, i32) {
    // SAFETY: the Power arm of a power IRP's parameters; both arms of the
    // POWER_STATE union are C ints.
    unsafe {
        let p = &(*stack).Parameters.Power;
        (p.Type, p.State.DeviceState)
    }
}

/// `PoRequestPowerIrp`: builds the device power IRP and has the power
/// manager send it to the top of the stack later, on its own thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PoRequestPowerIrp(
    DeviceObject: *mut DEVICE_OBJECT,
    MinorFunction: UCHAR,
    PowerState: POWER_STATE,
    CompletionFunction: PREQUEST_POWER_COMPLETE,
    Context: PVOID,
    Irp: *mut *mut IRP,
) -> NTSTATUS {
    let c = Call::enter();
    must_be_at_most_dispatch(&c, "PoRequestPowerIrp");
    let minor = u32::from(MinorFunction);
    if minor != IRP_MN_SET_POWER && minor != IRP_MN_QUERY_POWER {
        // Learn: only IRP_MN_QUERY_POWER, IRP_MN_SET_POWER and
        // IRP_MN_WAIT_WAKE; this device has no wake support.
        return NtStatus::INVALID_PARAMETER.0;
    }
    let addr = objects::build_system_irp(&c.n, &c.n.sys, IRP_MJ_POWER as u8, MinorFunction, None);
    // SAFETY: a POWER_STATE's arms are C ints.
    let state = unsafe { PowerState.DeviceState };
    let stack = objects::first_location(addr);
    // SAFETY: the IRP block and location just built.
    unsafe {
        (*stack).Parameters.Power.Type = _POWER_STATE_TYPE::DevicePowerState;
        (*stack).Parameters.Power.State = PowerState;
        if !Irp.is_null() {
            *Irp = addr as *mut IRP;
        }
    }
    if let Some(r) = c.n.objects().irps.get_mut(&addr) {
        r.power_request = Some(PowerRequest {
            callback: CompletionFunction.map_or(0, |f| f as usize),
            context: Context as usize,
            target: DeviceObject as usize,
            minor: MinorFunction,
            state,
        });
    }
    // The power manager sends it on its own thread, not inside this call.
    c.n.sys.with(|k| {
        let cpu = k.random_cpu();
        let delay = k.rng.range(US, 50 * US);
        k.sched.schedule(delay, cpu, Event::PowerIrp(addr));
    });
    NtStatus::PENDING.0
}

/// `PoSetPowerState`: records the device power state the driver reports.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn PoSetPowerState(
    _DeviceObject: *mut DEVICE_OBJECT,
    Type: POWER_STATE_TYPE,
    State: POWER_STATE,
) -> POWER_STATE {
    let c = Call::enter();
    must_be_at_most_dispatch(&c, "PoSetPowerState");
    if Type != _POWER_STATE_TYPE::DevicePowerState {
        // A system state: only the previous one is returned.
        return State;
    }
    // SAFETY: a DEVICE_POWER_STATE.
    let previous =
        c.n.sys
            .po_set_device_power(device_power(unsafe { State.DeviceState }));
    POWER_STATE {
        DeviceState: match previous {
            DevicePower::D0 => _DEVICE_POWER_STATE::PowerDeviceD0,
            DevicePower::Off => _DEVICE_POWER_STATE::PowerDeviceD3,
        },
    }
}

/// A power IRP of `PoRequestPowerIrp` completed: its callback runs (in the
/// completer's context, as the power manager's completion routine runs it)
/// and the IRP is freed.
pub(crate) fn requested_irp_completed(n: &Arc<Native>, irp: *mut IRP, request: PowerRequest) {
    // SAFETY: the completed IRP block, not yet freed.
    let mut io_status: IO_STATUS_BLOCK = unsafe { (*irp).IoStatus };
    if request.callback != 0 {
        // SAFETY: stored from a PREQUEST_POWER_COMPLETE.
        let callback: unsafe extern "C" fn(
            *mut DEVICE_OBJECT,
            UCHAR,
            POWER_STATE,
            PVOID,
            *mut IO_STATUS_BLOCK,
        ) = unsafe { objects::fn_at(request.callback) };
        objects::push(n, &n.sys);
        let driver = super::code::Mark::driver();
        // SAFETY: the callback with what the request named.
        unsafe {
            callback(
                request.target as *mut DEVICE_OBJECT,
                request.minor,
                POWER_STATE {
                    DeviceState: request.state,
                },
                request.context as PVOID,
                &mut io_status,
            )
        };
        drop(driver);
        objects::pull(n, &n.sys);
    }
    n.objects().free_irp(irp as usize);
}

impl NativeDriver {
    /// `WdmDriver::send_system_power` of the native driver.
    pub(crate) fn send_system_irp(
        &mut self,
        sys: &Sys,
        minor: PowerMinor,
        state: SystemPower,
    ) -> usize {
        let code = match minor {
            PowerMinor::Query => IRP_MN_QUERY_POWER,
            PowerMinor::Set => IRP_MN_SET_POWER,
        };
        let addr = objects::build_system_irp(&self.0, sys, IRP_MJ_POWER as u8, code as u8, None);
        let stack = objects::first_location(addr);
        // SAFETY: the IRP block and location just built.
        unsafe {
            (*stack).Parameters.Power.Type = _POWER_STATE_TYPE::SystemPowerState;
            (*stack).Parameters.Power.State = POWER_STATE {
                SystemState: match state {
                    SystemPower::Working => _SYSTEM_POWER_STATE::PowerSystemWorking,
                    SystemPower::Sleeping3 => _SYSTEM_POWER_STATE::PowerSystemSleeping3,
                },
            };
        }
        let _ = self.call_fdo(addr);
        addr
    }

    /// `WdmDriver::system_power_result` of the native driver.
    pub(crate) fn system_irp_result(&mut self, addr: usize) -> Option<NtStatus> {
        let done = self.0.objects().irps.get(&addr)?.completed?;
        self.0.objects().free_irp(addr);
        Some(NtStatus(done))
    }

    /// `WdmDriver::power_pagable` of the native driver.
    pub(crate) fn fdo_power_pagable(&self) -> bool {
        let fdo = self.0.objects().fdo as *mut DEVICE_OBJECT;
        // SAFETY: the FDO the driver created, if any.
        !fdo.is_null() && unsafe { (*fdo).Flags } & wdk_sys::DO_POWER_PAGABLE != 0
    }
}

/// The bus driver's handling of a power IRP at the PDO: a D-state changes
/// the function's decodes; S0 restores a D0 function after a wake. The
/// status it completes the IRP with.
///
/// # Safety
/// `stack` must be the PDO's location of a live power IRP.
pub(crate) unsafe fn at_pdo(
    sys: &Sys,
    minor: u32,
    stack: *const wdk_sys::IO_STACK_LOCATION,
) -> NtStatus {
    if minor != IRP_MN_SET_POWER {
        return NtStatus::SUCCESS;
    }
    // SAFETY: forwarded.
    let (kind, state) = unsafe { parameters(stack) };
    if kind == _POWER_STATE_TYPE::DevicePowerState {
        if !sys.pci_set_device_power(device_power(state)) {
            return NtStatus::DEVICE_NOT_READY;
        }
    } else if state == _SYSTEM_POWER_STATE::PowerSystemWorking {
        sys.pci_system_working();
    }
    NtStatus::SUCCESS
}
