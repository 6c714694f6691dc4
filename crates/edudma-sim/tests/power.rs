//! Power on the code that ships: `src/` as its device's power policy owner
//! through system sleep and wake, on the simulated Windows whose power
//! model (`edudma_sim::power`) does to the device what a QEMU wake and
//! pci.sys do: decodes off in D3, the PCI function reset by the wake (Bus
//! Master Enable and MSI off) while edu's own registers keep stale values.

mod common;

use common::*;
use edudma_core::NtStatus;
use edudma_core::regs::{REG_IRQ_RAISE, REG_IRQ_STATUS, REG_STATUS};
use edudma_sim::io::IrpId;
use edudma_sim::irql::Irql;
use edudma_sim::machine::{IrpSpec, Machine, MachineConfig};
use edudma_sim::mdl::BufferLayout;
use edudma_sim::native::NativeDriver;
use edudma_sim::power::{DevicePower, PowerMinor, SystemPower};
use edudma_sim::sched::MS;
use edudma_sim::verifier::Violation;
use edudma_sim::wdm::PnpMinor;

fn started(config: &MachineConfig, preempt_percent: u32) -> Machine<NativeDriver> {
    boot_native(config, preempt_percent, &[])
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ salt)
        .collect()
}

fn write(m: &mut Machine<NativeDriver>, offset: i64, data: Vec<u8>) -> IrpId {
    m.send(IrpSpec::Write { offset, data }, &BufferLayout::default())
        .expect("send")
}

fn read(m: &mut Machine<NativeDriver>, offset: i64, length: u32) -> Vec<u8> {
    let irp = m
        .send(IrpSpec::Read { offset, length }, &BufferLayout::default())
        .expect("send");
    let r = m.wait(irp, 2_000 * MS).expect("read");
    assert_eq!(r.status, NtStatus::SUCCESS);
    r.output
}

fn violations(m: &Machine<NativeDriver>) -> Vec<Violation> {
    m.sys().with(|k| k.verifier.violations().to_vec())
}

/// A sleep with one write in flight and three queued: the one in flight
/// finishes before D3, the queued ones are held across the sleep and run
/// after the wake, and every byte lands; a read after the wake (bus
/// mastering restored) brings them back.
#[test]
fn a_sleep_with_requests_in_flight_and_queued_loses_no_byte() {
    for seed in 1..=6 {
        let mut m = started(
            &MachineConfig {
                seed,
                ..MachineConfig::default()
            },
            30,
        );
        let chunks: Vec<(i64, Vec<u8>)> = (0..4)
            .map(|i| (i * 700, pattern(700, i as u8 + seed as u8)))
            .collect();
        let irps: Vec<IrpId> = chunks
            .iter()
            .map(|(offset, data)| write(&mut m, *offset, data.clone()))
            .collect();
        assert_eq!(m.sleep(2_000 * MS), Ok(NtStatus::SUCCESS), "seed {seed}");
        for irp in &irps {
            let r = m.wait(*irp, 2_000 * MS).expect("write");
            assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 700));
        }
        let expected: Vec<u8> = chunks.iter().flat_map(|(_, d)| d.clone()).collect();
        assert_eq!(
            m.sys().with(|k| k.device.buffer()[..2800].to_vec()),
            expected,
            "seed {seed}: the device buffer"
        );
        assert_eq!(read(&mut m, 0, 2800), expected, "seed {seed}: read back");
        assert_eq!(m.sys().with(|k| k.power.sleeps), 1);
        assert!(violations(&m).is_empty(), "{:?}", violations(&m));
        assert_eq!(
            m.pnp(PnpMinor::RemoveDevice, 1_000 * MS),
            Ok(NtStatus::SUCCESS)
        );
        m.leak_check().unwrap();
    }
}

/// The policy owner's order: the system IRP brings a D3 IRP, the driver
/// reports D3 before the device leaves D0 and no command runs then; the S0
/// IRP brings D0 back and Bus Master Enable with it.
#[test]
fn sx_brings_d3_reported_first_and_s0_brings_d0_and_bus_mastering_back() {
    let mut m = started(&quiet_config(7), 0);
    let q = m.system_power(PowerMinor::Query, SystemPower::Sleeping3, MS);
    assert_eq!(q, Ok(NtStatus::SUCCESS), "sleep is never refused");
    assert_eq!(
        m.sys().with(|k| k.power.device_irps),
        0,
        "a query changes nothing"
    );
    let set = m.system_power(PowerMinor::Set, SystemPower::Sleeping3, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS));
    m.sys().with(|k| {
        assert_eq!(k.power.function, DevicePower::Off);
        assert_eq!(k.power.reported, DevicePower::Off);
        assert!(!k.power.decodes);
    });
    m.sys().sleep_and_wake();
    assert_eq!(
        m.sys().pci_command() & 0x4,
        0,
        "the wake cleared Bus Master Enable"
    );
    let set = m.system_power(PowerMinor::Set, SystemPower::Working, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS));
    m.sys().with(|k| {
        assert_eq!(k.power.function, DevicePower::D0);
        assert_eq!(k.power.reported, DevicePower::D0);
        assert_eq!(k.power.device_irps, 2);
    });
    assert_eq!(
        m.sys().pci_command() & 0x6,
        0x6,
        "decoding and bus master again"
    );
    assert!(violations(&m).is_empty(), "{:?}", violations(&m));
}

/// edu has no reset handler: the wake leaves its interrupt bits and the
/// factorial-interrupt enable set. The driver quiesces them in D0 as at
/// start, so no stale interrupt reaches the engine.
#[test]
fn stale_registers_the_wake_left_behind_are_quiesced_in_d0() {
    let mut m = started(&quiet_config(8), 0);
    let set = m.system_power(PowerMinor::Set, SystemPower::Sleeping3, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS));
    m.sys().sleep_and_wake();
    m.sys().with(|k| {
        let _ = k.device.write(u64::from(REG_STATUS), 4, 0x80);
        let _ = k.device.write(u64::from(REG_IRQ_RAISE), 4, 0x100);
    });
    let set = m.system_power(PowerMinor::Set, SystemPower::Working, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS));
    m.sys().with(|k| {
        assert_eq!(k.device.read(u64::from(REG_STATUS), 4) & 0x80, 0);
        assert_eq!(k.device.read(u64::from(REG_IRQ_STATUS), 4), 0);
    });
    let data = pattern(64, 9);
    let irp = write(&mut m, 0, data.clone());
    assert_eq!(m.wait(irp, 1_000 * MS).unwrap().status, NtStatus::SUCCESS);
    assert_eq!(read(&mut m, 0, 64), data);
    assert!(violations(&m).is_empty(), "{:?}", violations(&m));
}

/// In D3 the function does not decode BAR0; an interrupt another device
/// raises on the shared line must not make our ISR read it.
#[test]
fn the_isr_does_not_touch_a_device_in_d3_on_a_shared_line() {
    let mut config = quiet_config(9);
    config.msi = false;
    let mut m = started(&config, 0);
    let set = m.system_power(PowerMinor::Set, SystemPower::Sleeping3, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS));
    m.sys().assert_foreign_interrupt();
    m.run_for(10 * MS).unwrap();
    assert!(
        m.sys().with(|k| k.stats.interrupts) > 0,
        "the ISR was called"
    );
    assert!(violations(&m).is_empty(), "{:?}", violations(&m));
}

/// A request sent while the device is in D3 (an application does not know)
/// is held, not failed, and a cancel of it still works.
#[test]
fn a_request_sent_in_d3_is_held_and_can_be_cancelled() {
    let mut m = started(&quiet_config(10), 0);
    let set = m.system_power(PowerMinor::Set, SystemPower::Sleeping3, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS));
    let held = write(&mut m, 0, pattern(32, 1));
    let cancelled = write(&mut m, 100, pattern(32, 2));
    m.run_for(300 * MS).unwrap();
    assert!(!m.is_complete(held) && !m.is_complete(cancelled));
    m.cancel(cancelled).unwrap();
    assert_eq!(m.wait(cancelled, MS).unwrap().status, NtStatus::CANCELLED);
    m.sys().sleep_and_wake();
    let set = m.system_power(PowerMinor::Set, SystemPower::Working, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS));
    assert_eq!(m.wait(held, 1_000 * MS).unwrap().status, NtStatus::SUCCESS);
    assert_eq!(read(&mut m, 0, 32), pattern(32, 1));
    assert!(violations(&m).is_empty(), "{:?}", violations(&m));
}

/// The function does not come back from the wake (the bus driver fails
/// the D0 IRP): the system set-power IRP still succeeds (a set cannot be
/// failed), the request held across the sleep fails instead of hanging, the
/// device is reported failed, and the PnP manager's restart brings it back
/// in D0, reported and taking interrupts again.
#[test]
fn a_device_that_does_not_come_back_fails_its_held_request_and_restarts() {
    let mut m = started(&quiet_config(14), 0);
    let set = m.system_power(PowerMinor::Set, SystemPower::Sleeping3, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS));
    let held = write(&mut m, 0, pattern(32, 3));
    m.sys().with(|k| k.power.fail_d0 = true);
    m.sys().sleep_and_wake();
    let set = m.system_power(PowerMinor::Set, SystemPower::Working, 1_000 * MS);
    assert_eq!(set, Ok(NtStatus::SUCCESS), "S0 cannot fail");
    let r = m.wait(held, 1_000 * MS).expect("the held write ends");
    assert_eq!(r.status, NtStatus::DEVICE_HARDWARE_ERROR);
    let (status, state) = m
        .run(0, Irql::Passive, |d, sys| d.query_pnp_device_state(sys))
        .unwrap();
    assert_eq!(status, NtStatus::SUCCESS);
    assert_ne!(state & wdk_sys::PNP_DEVICE_FAILED as usize, 0, "{state:#x}");
    // The PnP manager restarts it.
    m.sys().with(|k| k.power.fail_d0 = false);
    assert_eq!(
        m.pnp(PnpMinor::StopDevice, 1_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    assert_eq!(m.pnp(PnpMinor::StartDevice, MS), Ok(NtStatus::SUCCESS));
    assert_eq!(
        m.sys().with(|k| k.power.reported),
        DevicePower::D0,
        "the start reports D0"
    );
    let data = pattern(48, 4);
    let irp = write(&mut m, 0, data.clone());
    assert_eq!(m.wait(irp, 1_000 * MS).unwrap().status, NtStatus::SUCCESS);
    assert_eq!(read(&mut m, 0, 48), data);
    assert!(violations(&m).is_empty(), "{:?}", violations(&m));
}

/// A device the watchdog cut off the bus (it may still own the abandoned
/// command) stays off the bus across a sleep: D0 does not turn bus
/// mastering back on; only the PnP restart does.
#[test]
fn a_device_cut_off_the_bus_stays_off_it_across_a_sleep() {
    let mut c = quiet_config(15);
    c.edu.dma_stall_ns = 1_500 * MS;
    let mut m = started(&c, 0);
    let irp = m
        .send(
            IrpSpec::Read {
                offset: 0,
                length: 64,
            },
            &BufferLayout::default(),
        )
        .expect("send");
    assert_eq!(
        m.wait(irp, 3_000 * MS).unwrap().status,
        NtStatus::IO_TIMEOUT
    );
    assert_eq!(m.sys().pci_command() & 0x4, 0, "cut off");
    assert_eq!(m.sleep(2_000 * MS), Ok(NtStatus::SUCCESS));
    assert_eq!(
        m.sys().pci_command() & 0x4,
        0,
        "still off the bus after the wake"
    );
    assert!(violations(&m).is_empty(), "{:?}", violations(&m));
}

/// A sleep while a write waits for a channel the HAL committed but has not
/// delivered yet (6 s late): D3 waits for the grant, which frees the
/// channel and holds the write (no completion comes, the grant itself ends
/// the drain); after the wake the write goes through.
#[test]
fn a_sleep_while_a_grant_is_still_to_come_waits_for_it_and_holds_the_request() {
    let mut c = quiet_config(16);
    c.hal.inline_grant_percent = 0;
    c.hal.grant_latency_ns = Some(6_000 * MS);
    let mut m = boot_native(&c, 0, &[("AsyncChannelAllocation", 1)]);
    let data = pattern(64, 5);
    let irp = write(&mut m, 0, data.clone());
    m.run_for(MS).unwrap();
    assert!(!m.is_complete(irp), "the grant is committed, not delivered");
    assert_eq!(m.sleep(10_000 * MS), Ok(NtStatus::SUCCESS));
    // The restarted write waits for its own late grant.
    assert_eq!(m.wait(irp, 10_000 * MS).unwrap().status, NtStatus::SUCCESS);
    assert_eq!(m.sys().with(|k| k.device.buffer()[..64].to_vec()), data);
    assert!(violations(&m).is_empty(), "{:?}", violations(&m));
}

// ---- the model's power checks can fire ---------------------------------------

#[test]
fn touching_registers_that_do_not_decode_is_reported() {
    let m = started(&quiet_config(11), 0);
    m.sys().po_set_device_power(DevicePower::Off);
    m.sys().pci_set_device_power(DevicePower::Off);
    assert_eq!(m.sys().read_register(0), u32::MAX);
    assert!(
        violations(&m).contains(&Violation::RegisterAccessWithoutDecode { offset: 0 }),
        "{:?}",
        violations(&m)
    );
}

#[test]
fn d3_with_a_dma_command_running_is_reported() {
    let m = started(&quiet_config(12), 0);
    m.sys().write_register(0x80, 0x1000);
    m.sys().write_register(0x88, 0x4_0000);
    m.sys().write_register(0x90, 8);
    m.sys().write_register(0x98, 1);
    assert!(m.sys().with(|k| k.device.busy()));
    m.sys().po_set_device_power(DevicePower::Off);
    m.sys().pci_set_device_power(DevicePower::Off);
    assert_eq!(violations(&m), vec![Violation::PoweredDownWithDmaInFlight]);
}

#[test]
fn d3_before_po_set_power_state_is_reported() {
    let m = started(&quiet_config(13), 0);
    m.sys().pci_set_device_power(DevicePower::Off);
    assert_eq!(violations(&m), vec![Violation::PowerDownNotReported]);
}
