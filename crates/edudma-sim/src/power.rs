//! What power does to the edu device and its PCI function, and what the
//! power manager and the PCI bus driver do around the driver's power IRPs.
//!
//! The facts the model rests on:
//! - QEMU's edu registers no reset handler and no PCI power-management
//!   capability (`hw/misc/edu.c`: `edu_class_init` sets only `realize` and
//!   `exit`; the only capability is MSI, `msi_init`). A D-state changes
//!   nothing inside the device.
//! - An S3 wake of a QEMU x86 VM resets every device (`hw/i386/pc.c`
//!   `pc_machine_wakeup` → `pc_machine_reset` → `qemu_devices_reset`), which
//!   for a PCI function is `pci_do_device_reset` (`hw/pci/pci.c`): every
//!   writable bit of the command register cleared (memory decode and Bus
//!   Master Enable off), BARs cleared, `msi_reset`, INTx deasserted. edu's
//!   own registers (`status`, `irq_status`, the DMA registers) and a DMA
//!   timer in flight survive. See [`crate::edu::EduDevice::vm_reset`].
//! - pci.sys (not documented on Learn for a function without a PM
//!   capability; ReactOS's `PciPdoSetPowerState` is the public reference):
//!   a D-state other than D0 turns the function's decodes off, D0 turns them
//!   on again, and the bus driver restores what it owns — BARs and the MSI
//!   configuration. Bus Master Enable is the function driver's (it set it
//!   at start); the model leaves it to the driver, which Learn makes
//!   responsible anyway ("Device Sleeping States", D3hot: "The device
//!   driver is solely responsible for restoring device context").
//!
//! The checks (each a [`Violation`]): registers touched while the function
//! does not decode them, D3 entered while a DMA command runs, and D3
//! entered without the driver's `PoSetPowerState` first ("If the device is
//! powering down, the driver must call PoSetPowerState before leaving the
//! D0 state").

use edudma_core::ioctl::InterruptKind;

use crate::kernel::Sys;
use crate::verifier::Violation;

/// A device power state, as far as this device tells them apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DevicePower {
    /// `PowerDeviceD0`.
    #[default]
    D0,
    /// `PowerDeviceD1`..`PowerDeviceD3`: the function does not decode.
    Off,
}

/// A system power state the machine can enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemPower {
    /// `PowerSystemWorking` (S0).
    Working,
    /// `PowerSystemSleeping3` (S3, suspend to RAM).
    Sleeping3,
}

/// `IRP_MN_*` of `IRP_MJ_POWER` that the power manager sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PowerMinor {
    /// `IRP_MN_QUERY_POWER`.
    Query,
    /// `IRP_MN_SET_POWER`.
    Set,
}

/// The power state of the machine and of the device's PCI function.
#[derive(Clone, Debug)]
pub struct PowerModel {
    /// The D-state the bus driver last put the function in.
    pub function: DevicePower,
    /// The D-state the function driver last reported (`PoSetPowerState`).
    pub reported: DevicePower,
    /// Memory decode (PCI command register bit 1): BAR0 answers.
    pub decodes: bool,
    /// System sleeps the machine went through.
    pub sleeps: u64,
    /// Device set-power IRPs the bus driver completed.
    pub device_irps: u64,
    /// Fault injection: the bus driver fails D0 IRPs (the function did not
    /// come back from the wake); it stays out of D0.
    pub fail_d0: bool,
}

impl Default for PowerModel {
    fn default() -> Self {
        Self {
            function: DevicePower::D0,
            reported: DevicePower::D0,
            decodes: true,
            sleeps: 0,
            device_irps: 0,
            fail_d0: false,
        }
    }
}

impl Sys {
    /// The function driver's `PoSetPowerState` for a device power state:
    /// the state it reported before.
    pub fn po_set_device_power(&self, state: DevicePower) -> DevicePower {
        self.with(|k| std::mem::replace(&mut k.power.reported, state))
    }

    /// The PCI bus driver completes a device set-power IRP at the PDO; false
    /// when it fails it ([`PowerModel::fail_d0`]).
    pub fn pci_set_device_power(&self, state: DevicePower) -> bool {
        self.with(|k| {
            k.power.device_irps += 1;
            if state == DevicePower::D0 && k.power.fail_d0 {
                return false;
            }
            match state {
                DevicePower::Off => {
                    // A command the device still owns with Bus Master Enable
                    // off (abandoned by a watchdog) cannot reach memory.
                    if k.device.busy() && k.device.bus_master() {
                        k.verifier.report(Violation::PoweredDownWithDmaInFlight);
                    }
                    if k.power.reported != DevicePower::Off {
                        k.verifier.report(Violation::PowerDownNotReported);
                    }
                    k.power.decodes = false;
                    k.device.set_bus_master(false);
                }
                DevicePower::D0 => Self::restore_function(k),
            }
            k.power.function = state;
            true
        })
    }

    /// The PCI bus driver starts the function: it is in D0 for the start
    /// (the PnP manager powers a device up to start it).
    pub fn pci_start_device(&self) {
        self.with(|k| {
            k.power.function = DevicePower::D0;
            Self::restore_function(k);
        });
    }

    /// The PCI bus driver passes a system set-power IRP to S0 at the PDO:
    /// a function left in D0 (its driver requested no D-IRP) gets the
    /// configuration the bus driver owns back after a wake.
    pub fn pci_system_working(&self) {
        self.with(|k| {
            if k.power.function == DevicePower::D0 {
                Self::restore_function(k);
            }
        });
    }

    /// What pci.sys restores in D0: BARs (decodes) and the MSI capability.
    fn restore_function(k: &mut crate::kernel::Kernel) {
        k.power.decodes = true;
        if k.interrupt == Some(InterruptKind::MessageSignaled) {
            k.device.set_msi_enabled(true);
        }
    }

    /// The machine sleeps in S3 and wakes: the VM reset of the wake (see
    /// the module docs). No driver code runs meanwhile.
    pub fn sleep_and_wake(&self) {
        self.with(|k| {
            k.power.sleeps += 1;
            k.device.vm_reset();
            k.power.decodes = false;
        });
    }

    /// Memory decode is on: a register access reaches the device. Off, the
    /// access is a violation (the driver touched a device it powered down,
    /// or one the wake left unconfigured).
    pub(crate) fn check_decode(&self, offset: u32) -> bool {
        self.with(|k| {
            if !k.power.decodes {
                k.verifier
                    .report(Violation::RegisterAccessWithoutDecode { offset });
            }
            k.power.decodes
        })
    }
}
