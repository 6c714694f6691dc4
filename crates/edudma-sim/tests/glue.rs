//! The glue's design, as `src/` has it, run on the simulated Windows: late
//! grants through the grant DPC, the queue cancel routine's race with
//! StartIo, the mailbox DPC, the StartIo sequence number that makes a stale
//! cancel harmless, and IRP_MJ_CLEANUP. Every test drives `src/` itself.

mod common;

use common::*;
use edudma_core::NtStatus;
use edudma_core::ioctl::{self, Stats};
use edudma_sim::io::{FileId, IrpId};
use edudma_sim::irql::Irql;
use edudma_sim::machine::{IrpSpec, Machine, MachineConfig};
use edudma_sim::mdl::BufferLayout;
use edudma_sim::native::NativeDriver;
use edudma_sim::sched::{DpcId, Event, MS, US};
use edudma_sim::wdm::PnpMinor;
use zerocopy::FromBytes;

/// The driver's DPC objects, numbered in the order AddDevice initializes
/// them (after the FDO's own DpcForIsr).
const GRANT_DPC: u32 = 1;
const MAILBOX_DPC: u32 = 2;

fn started_with(config: &MachineConfig, preempt_percent: u32) -> Machine<NativeDriver> {
    boot_native(config, preempt_percent, &[])
}

fn started(config: &MachineConfig) -> Machine<NativeDriver> {
    started_with(config, 0)
}

fn write(m: &mut Machine<NativeDriver>, offset: i64, len: usize) -> IrpId {
    let data = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    m.send(IrpSpec::Write { offset, data }, &BufferLayout::default())
        .expect("send")
}

fn dpc_queued(m: &Machine<NativeDriver>, dpc: u32) -> bool {
    m.sys().with(|k| k.dpc_queued.contains(&DpcId::Driver(dpc)))
}

/// The driver's statistics, as `IOCTL_EDUDMA_GET_STATS` returns them.
fn driver_stats(m: &mut Machine<NativeDriver>) -> Stats {
    let irp = m
        .send(
            IrpSpec::Control {
                code: ioctl::IOCTL_EDUDMA_GET_STATS,
                input: Vec::new(),
                output_length: size_of::<Stats>() as u32,
                data: Vec::new(),
            },
            &BufferLayout::default(),
        )
        .expect("send");
    let r = m.wait(irp, MS).expect("stats");
    Stats::read_from_bytes(&r.output).expect("a Stats")
}

#[test]
fn ke_insert_queue_dpc_does_not_queue_twice_and_keeps_the_first_arguments() {
    let m = started(&quiet_config(1));
    let sys = m.sys();
    assert!(sys.ke_insert_queue_dpc(77, 1, 2));
    assert!(!sys.ke_insert_queue_dpc(77, 3, 4), "already queued");
    assert_eq!(sys.with(|k| k.dpc_args.get(&77).copied()), Some((1, 2)));
    let events = sys.with(|k| {
        let mut n = 0;
        while let Some(e) = k.sched.pop() {
            n += usize::from(e.event == Event::Dpc(DpcId::Driver(77)));
        }
        n
    });
    assert_eq!(events, 1, "one DPC run for two inserts");
}

#[test]
fn a_late_grant_reaches_the_engine_through_the_grant_dpc() {
    let mut c = quiet_config(2);
    // The map registers are busy with another device: the asynchronous
    // allocation is queued until the contention ends.
    c.hal.contention_percent = 100;
    c.hal.inline_grant_percent = 0;
    let mut m = started(&c);
    let irp = write(&mut m, 0, 300);
    // The allocating call returned Queued; the execution routine runs later
    // and queues the grant DPC with the base as SystemArgument1.
    let mut grant_dpc_seen = false;
    m.run_until(
        |m| {
            grant_dpc_seen |= dpc_queued(m, GRANT_DPC);
            m.is_complete(irp)
        },
        1000 * MS,
    )
    .unwrap();
    assert!(grant_dpc_seen, "the grant went through the grant DPC");
    assert!(m.sys().with(|k| k.stats.late_grants) >= 1);
    let r = m.collect(irp).unwrap();
    assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 300));
    assert!(driver_stats(&mut m).errors == 0);
    m.leak_check().unwrap();
}

/// Send two writes and run until IoStartNextPacket has dequeued the second
/// and deferred its StartIo to another CPU. Returns the machine and the
/// second IRP, or None when this seed's schedule never defers it.
fn second_packet_dequeued_before_its_start_io(
    seed: u64,
) -> Option<(Machine<NativeDriver>, IrpId, IrpId)> {
    let mut m = started(&quiet_config(seed));
    let a = write(&mut m, 0, 64);
    let b = write(&mut m, 64, 64);
    loop {
        if m.sys().with(|k| k.sched.contains(&Event::StartIo(b))) {
            assert_eq!(m.sys().current_irp(), Some(b), "dequeued: current packet");
            return Some((m, a, b));
        }
        if m.is_complete(a) || !m.step() {
            return None;
        }
        assert!(m.crash().is_none(), "{:?}", m.crash());
    }
}

/// A cancel that lands after `IoStartNextPacket` took B off the device
/// queue but before B's StartIo ran: `queue_cancel` cannot remove B (it is
/// current) and must leave it alone; StartIo finds its cancel routine gone
/// and completes B as cancelled. (This suite found the earlier design, in
/// which `queue_cancel` completed B itself, letting StartIo touch a freed IRP.)
fn cancel_between_dequeue_and_start_io(at_dispatch: bool) {
    // The machine may as well run B's due StartIo before the cancelling
    // thread gets a CPU: take the first seed where the cancel lands first.
    let (mut m, a, b, routines) = (0..400)
        .filter_map(second_packet_dequeued_before_its_start_io)
        .find_map(|(mut m, a, b)| {
            let (routines, starts) = m
                .sys()
                .with(|k| (k.stats.cancel_routines, k.stats.start_io_calls));
            if at_dispatch {
                // IoCancelIrp from a DPC or a driver above us under a spin lock.
                m.cancel_at_dispatch(b).unwrap();
            } else {
                m.cancel(b).unwrap();
            }
            let landed_first = m.sys().with(|k| k.stats.start_io_calls) == starts;
            landed_first.then_some((m, a, b, routines))
        })
        .expect("some seed cancels B between its dequeue and its StartIo");
    assert_eq!(m.sys().with(|k| k.stats.cancel_routines), routines + 1);
    assert!(
        !m.is_complete(b),
        "queue_cancel leaves the current packet to StartIo"
    );
    assert!(!dpc_queued(&m, MAILBOX_DPC), "nothing was delivered yet");
    let rb = m.wait(b, 1000 * MS).unwrap();
    assert_eq!(rb.status, NtStatus::CANCELLED);
    let ra = m.wait(a, 1000 * MS).unwrap();
    assert_eq!(ra.status, NtStatus::SUCCESS);
    assert_eq!(
        driver_stats(&mut m).requests,
        1,
        "B never reached the engine"
    );
    // The device queue moved on: a new request is served.
    let c = write(&mut m, 0, 32);
    assert_eq!(m.wait(c, 1000 * MS).unwrap().status, NtStatus::SUCCESS);
    assert!(m.crash().is_none(), "{:?}", m.crash());
    m.leak_check().unwrap();
}

#[test]
fn a_cancel_between_the_dequeue_and_start_io_is_completed_by_start_io() {
    cancel_between_dequeue_and_start_io(false);
}

#[test]
fn a_dispatch_level_cancel_between_the_dequeue_and_start_io_touches_no_freed_irp() {
    cancel_between_dequeue_and_start_io(true);
}

#[test]
fn cleanup_cancels_the_request_of_its_file_object_only() {
    let mut c = quiet_config(4);
    c.hal.contention_percent = 100;
    let mut m = started(&c);
    let irp = m
        .send_on(
            FileId(7),
            IrpSpec::Read {
                offset: 0,
                length: 200,
            },
            &BufferLayout::default(),
        )
        .unwrap();
    assert_eq!(m.cleanup(FileId(8)), Ok(NtStatus::SUCCESS));
    assert_eq!(driver_stats(&mut m).cancels, 0, "another handle");
    assert_eq!(m.cleanup(FileId(7)), Ok(NtStatus::SUCCESS));
    // Decided at PASSIVE_LEVEL: delivered by the mailbox DPC (asked before
    // anything else runs the machine on).
    assert!(dpc_queued(&m, MAILBOX_DPC));
    assert_eq!(driver_stats(&mut m).cancels, 1);
    assert_eq!(m.wait(irp, 1000 * MS).unwrap().status, NtStatus::CANCELLED);
    m.leak_check().unwrap();
}

#[test]
fn a_stale_cancel_of_a_reused_irp_is_ignored() {
    let mut c = quiet_config(5);
    c.hal.contention_percent = 100;
    let mut m = started(&c);
    m.set_reuse_irp_ids(true);
    let file = FileId(1);
    let a = m
        .send_on(
            file,
            IrpSpec::Read {
                offset: 0,
                length: 100,
            },
            &BufferLayout::default(),
        )
        .unwrap();
    // Cleanup completes A below DISPATCH_LEVEL: the completion waits in the
    // mailbox and A's cancel routine is still engine_cancel.
    m.cleanup(file).unwrap();
    assert!(dpc_queued(&m, MAILBOX_DPC));
    // An IoCancelIrp now reaches engine_cancel for a request the engine no
    // longer has: it is recorded, and stale.
    m.cancel(a).unwrap();
    assert_eq!(m.wait(a, 1000 * MS).unwrap().status, NtStatus::CANCELLED);
    // The IRP id comes back for the next request; its StartIo sequence
    // number differs, so the stale cancel does not hit it.
    let b = m
        .send_on(
            file,
            IrpSpec::Read {
                offset: 0,
                length: 100,
            },
            &BufferLayout::default(),
        )
        .unwrap();
    assert_eq!(b, a, "the IRP id was reused");
    let r = m.wait(b, 1000 * MS).unwrap();
    assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 100));
    assert_eq!(driver_stats(&mut m).cancels, 1);
    m.leak_check().unwrap();
}

/// `IoStartPacket` of an IRP cancelled before it was queued calls the
/// cancel routine at once (nobody else ever will); one that starts at once
/// reaches StartIo with `Irp->Cancel` set, which `src/` completes cancelled.
#[test]
fn an_irp_cancelled_before_io_start_packet_is_cancelled_at_once() {
    let mut m = started(&quiet_config(21));
    let data = vec![5u8; 64];
    let idle = m
        .send_cancelled(
            IrpSpec::Write {
                offset: 0,
                data: data.clone(),
            },
            &BufferLayout::default(),
        )
        .expect("send");
    let r = m.wait(idle, 10 * MS).expect("cancelled");
    assert_eq!(r.status, NtStatus::CANCELLED, "started at once");

    let busy = write(&mut m, 0, 64);
    let before = m.sys().with(|k| k.device.buffer()[64..128].to_vec());
    let queued = m
        .send_cancelled(
            IrpSpec::Write { offset: 64, data },
            &BufferLayout::default(),
        )
        .expect("send");
    assert!(
        m.is_complete(queued),
        "the queue's cancel routine ran inside IoStartPacket"
    );
    assert!(
        !m.is_complete(busy),
        "the first write is still on the device"
    );
    assert_eq!(m.collect(queued).unwrap().status, NtStatus::CANCELLED);
    let r = m.wait(busy, 1000 * MS).expect("write");
    assert_eq!(r.status, NtStatus::SUCCESS);
    assert_eq!(
        m.sys().with(|k| k.device.buffer()[64..128].to_vec()),
        before,
        "nothing of the cancelled write reached the device"
    );
    m.leak_check().unwrap();
}

/// `KeCancelTimer` does not remove a timer DPC already queued: a stop that
/// cancels the watchdog just after it expired still sees its DPC run, and
/// `src/` flushes queued DPCs before it unmaps anything the DPC uses. (The
/// watchdog is armed only while the device works: the tick armed during a
/// slow command is still set after it ends, and expires at the stop.)
#[test]
fn a_watchdog_dpc_queued_before_the_stop_still_runs_and_finds_nothing_freed() {
    // Whether the queued DPC runs before the stop reaches KeCancelTimer is
    // the scheduler's choice: over several seeds both happen, and every run
    // is clean.
    let mut outlived_cancel = 0;
    for seed in 0..12 {
        let mut m = started(&quiet_config(22 + seed));
        m.sys()
            .with(|k| k.device.config_mut().dma_stall_ns = 250 * MS);
        let slow = write(&mut m, 0, 32);
        assert_eq!(m.wait(slow, 1000 * MS).unwrap().status, NtStatus::SUCCESS);
        m.sys().with(|k| k.device.config_mut().dma_stall_ns = 0);
        m.run_until(
            |m| m.sys().with(|k| k.dpc_queued.contains(&DpcId::Timer)),
            1000 * MS,
        )
        .expect("the tick armed during the command expires");
        let ran_before = m.sys().with(|k| k.stats.timer_dpcs);
        assert_eq!(m.pnp(PnpMinor::StopDevice, 100 * MS), Ok(NtStatus::SUCCESS));
        let (outlived, ran) = m
            .sys()
            .with(|k| (k.stats.timer_dpcs_outliving_cancel, k.stats.timer_dpcs));
        outlived_cancel += outlived;
        assert_eq!(ran, ran_before + 1, "the queued DPC ran, once");
        assert!(m.crash().is_none(), "{:?}", m.crash());
        m.run_for(500 * MS).unwrap();
        assert_eq!(
            m.sys().with(|k| k.stats.timer_dpcs),
            ran,
            "the timer stays cancelled"
        );
        assert_eq!(m.pnp(PnpMinor::StartDevice, MS), Ok(NtStatus::SUCCESS));
        let irp = write(&mut m, 0, 32);
        assert_eq!(m.wait(irp, 1000 * MS).unwrap().status, NtStatus::SUCCESS);
        m.leak_check().unwrap();
    }
    assert!(
        outlived_cancel > 0,
        "no seed had KeCancelTimer find the DPC queued"
    );
}

/// Another device asserting the shared INTx line calls our ISR too: `src/`
/// reads `irq_status`, finds nothing of ours and returns FALSE, queues no
/// DPC, and the transfer in flight completes when its own interrupt comes.
#[test]
fn an_interrupt_of_another_device_on_the_shared_line_is_not_claimed() {
    let mut m = started(&quiet_config(23));
    let before = m
        .sys()
        .with(|k| (k.stats.interrupts, k.stats.interrupts_claimed, k.stats.dpcs));
    m.sys().assert_foreign_interrupt();
    m.run_for(MS).unwrap();
    let after = m
        .sys()
        .with(|k| (k.stats.interrupts, k.stats.interrupts_claimed, k.stats.dpcs));
    assert_eq!(after.0, before.0 + 1, "our ISR was called");
    assert_eq!(after.1, before.1, "and did not claim it");
    assert_eq!(
        after.2, before.2,
        "no DPC for an interrupt that is not ours"
    );

    let irp = write(&mut m, 0, 128);
    m.run_for(10 * MS).unwrap();
    m.sys().assert_foreign_interrupt();
    m.run_for(MS).unwrap();
    assert!(
        !m.is_complete(irp),
        "the foreign interrupt completed nothing"
    );
    let r = m.wait(irp, 1000 * MS).unwrap();
    assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 128));
    let expected: Vec<u8> = (0..128).map(|i| (i * 7 + 3) as u8).collect();
    assert_eq!(
        m.sys().with(|k| k.device.buffer()[..128].to_vec()),
        expected
    );
    assert!(m.crash().is_none(), "{:?}", m.crash());
}

/// `IoDisconnectInterruptEx` takes the interrupt's spin lock at its IRQL:
/// an ISR mid-way on another CPU finishes first, one delivered later finds
/// nothing connected. So the stop that disconnects and then unmaps BAR0
/// never has the ISR read a register of an unmapped BAR.
#[test]
fn a_stop_waits_for_an_isr_running_on_another_cpu() {
    let mut isr_mid_stop = 0;
    for seed in 0..40 {
        let mut c = quiet_config(300 + seed);
        c.cpus = 4;
        let mut m = started_with(&c, 70);
        // Another device on the shared line interrupts all through the stop.
        for us in 0..200 {
            m.sys().schedule_foreign_interrupt(us * US);
        }
        let before = m.driver().sched_stats().interrupts_mid_routine;
        let stopped = m.pnp(PnpMinor::StopDevice, 100 * MS);
        assert_eq!(
            stopped,
            Ok(NtStatus::SUCCESS),
            "seed {seed}: {:?}",
            m.crash()
        );
        isr_mid_stop += u64::from(m.driver().sched_stats().interrupts_mid_routine > before);
    }
    assert!(
        isr_mid_stop > 0,
        "some seed ran the ISR while the stop was mid-way"
    );
}

/// A stop waits for the proof that the adapter is put, however long the
/// HAL takes to deliver a grant it already committed (Windows gives no
/// bound): nothing is freed under an execution routine still to come, and
/// PutDmaAdapter is never skipped.
#[test]
fn a_stop_waits_for_a_late_grant_and_puts_the_adapter() {
    let mut c = quiet_config(24);
    c.hal.inline_grant_percent = 0;
    c.hal.grant_latency_ns = Some(6_000 * MS);
    let mut m = boot_native(&c, 0, &[("AsyncChannelAllocation", 1)]);
    let irp = write(&mut m, 0, 64);
    m.run_for(MS).unwrap();
    assert!(
        !m.is_complete(irp),
        "the grant is committed, not yet delivered"
    );
    let before = m.sys().now();
    assert_eq!(
        m.pnp(PnpMinor::StopDevice, 10_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    let waited = m.sys().now() - before;
    assert!(
        waited >= 5_999 * MS,
        "the stop waited for the grant: {waited} ns"
    );
    assert_eq!(
        m.sys().with(|k| k.hal.live_adapters()),
        0,
        "put before the stop returned"
    );
    assert!(!m.is_complete(irp), "held for the restart, not failed");
    assert!(m.crash().is_none(), "{:?}", m.crash());
    // Restarted, the held write goes through and the device works.
    assert_eq!(m.pnp(PnpMinor::StartDevice, MS), Ok(NtStatus::SUCCESS));
    assert_eq!(m.wait(irp, 10_000 * MS).unwrap().status, NtStatus::SUCCESS);
    let again = write(&mut m, 0, 64);
    assert_eq!(
        m.wait(again, 10_000 * MS).unwrap().status,
        NtStatus::SUCCESS
    );
}

/// A command the device still owns when the engine times it out: the
/// device goes off the bus before the mapping is flushed and freed, so its
/// late DMA reaches no memory; the device is reported failed, refuses DMA
/// until it is restarted, and works again after the restart.
#[test]
fn a_timed_out_command_cannot_write_into_freed_memory() {
    let mut c = quiet_config(25);
    // The device stalls: the DMA lands 1.5 s late, after the engine's
    // 1 s timeout.
    c.edu.dma_stall_ns = 1_500 * MS;
    let mut m = started(&c);
    let read = m
        .send(
            IrpSpec::Read {
                offset: 0,
                length: 512,
            },
            &BufferLayout::default(),
        )
        .expect("send");
    let r = m.wait(read, 3_000 * MS).expect("timed out");
    assert_eq!(r.status, NtStatus::IO_TIMEOUT);
    // The stalled DMA lands now, with the mapping gone.
    m.run_for(1_000 * MS).unwrap();
    assert!(m.crash().is_none(), "{:?}", m.crash());
    assert!(!m.sys().with(|k| k.device.bus_master()), "off the bus");
    assert_eq!(m.sys().with(|k| k.stats.device_state_invalidated), 1);
    let (status, state) = m
        .run(0, Irql::Passive, |d, sys| d.query_pnp_device_state(sys))
        .unwrap();
    assert_eq!(status, NtStatus::SUCCESS);
    assert_ne!(state & wdk_sys::PNP_DEVICE_FAILED as usize, 0, "{state:#x}");
    let refused = write(&mut m, 0, 16);
    assert_eq!(
        m.wait(refused, MS).unwrap().status,
        NtStatus::DEVICE_HARDWARE_ERROR
    );
    // The PnP manager stops and restarts a failed device: bus mastering is
    // back and requests work again.
    assert_eq!(
        m.pnp(PnpMinor::StopDevice, 1_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    assert_eq!(m.pnp(PnpMinor::StartDevice, MS), Ok(NtStatus::SUCCESS));
    m.sys().with(|k| k.device.config_mut().dma_stall_ns = 0);
    let ok = write(&mut m, 0, 16);
    assert_eq!(m.wait(ok, 1_000 * MS).unwrap().status, NtStatus::SUCCESS);
    assert!(m.crash().is_none(), "{:?}", m.crash());
}

/// Stop means hold: requests sent while the device is stopped (a resource
/// rebalance) are held, not failed, and served after the restart; the
/// device interface stays enabled throughout, so applications notice
/// nothing but the delay.
#[test]
fn requests_sent_while_stopped_are_held_and_served_after_the_restart() {
    let mut m = started(&quiet_config(26));
    assert_eq!(
        m.pnp(PnpMinor::StopDevice, 1_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    assert!(m.driver().interface_enabled(), "a stop keeps the interface");
    let first = write(&mut m, 0, 100);
    let second = write(&mut m, 100, 100);
    m.run_for(500 * MS).unwrap();
    assert!(
        !m.is_complete(first) && !m.is_complete(second),
        "held while stopped"
    );
    assert_eq!(m.pnp(PnpMinor::StartDevice, MS), Ok(NtStatus::SUCCESS));
    for irp in [first, second] {
        let r = m.wait(irp, 1_000 * MS).unwrap();
        assert_eq!((r.status, r.information), (NtStatus::SUCCESS, 100));
    }
    let expected: Vec<u8> = (0..200).map(|i| ((i % 100) * 7 + 3) as u8).collect();
    assert_eq!(
        m.sys().with(|k| k.device.buffer()[..200].to_vec()),
        expected
    );
    // Held, then removed: failed, and the interface goes with the device.
    assert_eq!(
        m.pnp(PnpMinor::StopDevice, 1_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    let third = write(&mut m, 0, 10);
    assert_eq!(
        m.pnp(PnpMinor::RemoveDevice, 1_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    assert_eq!(m.collect(third).unwrap().status, NtStatus::DELETE_PENDING);
    assert!(!m.driver().interface_enabled());
    m.leak_check().unwrap();
}

/// The FDO is not named (only the PDO of a stack may be), so nothing but
/// the device interface reaches it; an open of a name below the device
/// (`<interface path>\anything`) is refused.
#[test]
fn the_device_has_no_name_and_no_namespace() {
    let mut m = started(&quiet_config(27));
    assert_eq!(m.driver().device_name(), None, "an unnamed FDO");
    let opened = m.run(0, Irql::Passive, |d, sys| d.create(sys, FileId(1), ""));
    assert_eq!(opened, Some(NtStatus::SUCCESS), "the device itself");
    let below = m.run(0, Irql::Passive, |d, sys| d.create(sys, FileId(2), "\\x"));
    assert_eq!(below, Some(NtStatus::ACCESS_DENIED), "a namespace open");
    m.leak_check().unwrap();
}

/// IRP_MJ_CLEANUP completes every queued request of the closing handle as
/// cancelled (Learn, DispatchCleanup Routines), not only the engine's
/// current one; another handle's queued request is served as usual.
#[test]
fn cleanup_cancels_the_queued_requests_of_its_file_object() {
    let mut m = started(&quiet_config(28));
    let send = |m: &mut Machine<NativeDriver>, file: u64, offset: i64, fill: u8| {
        m.send_on(
            FileId(file),
            IrpSpec::Write {
                offset,
                data: vec![fill; 64],
            },
            &BufferLayout::default(),
        )
        .expect("send")
    };
    let before = m.sys().with(|k| k.device.buffer()[..256].to_vec());
    let current = send(&mut m, 7, 0, 0xA1);
    let queued_7 = send(&mut m, 7, 64, 0xB2);
    let other = send(&mut m, 8, 128, 0xC3);
    let queued_7_too = send(&mut m, 7, 192, 0xD4);
    assert_eq!(m.cleanup(FileId(7)), Ok(NtStatus::SUCCESS));
    for irp in [queued_7, queued_7_too] {
        assert!(m.is_complete(irp), "completed by the cleanup itself");
        assert_eq!(m.collect(irp).unwrap().status, NtStatus::CANCELLED);
    }
    assert_eq!(
        m.wait(current, 1_000 * MS).unwrap().status,
        NtStatus::CANCELLED
    );
    assert_eq!(m.wait(other, 1_000 * MS).unwrap().status, NtStatus::SUCCESS);
    let after = m.sys().with(|k| k.device.buffer()[..256].to_vec());
    assert_eq!(
        &after[64..128],
        &before[64..128],
        "nothing of a cancelled write"
    );
    assert_eq!(
        &after[192..256],
        &before[192..256],
        "nothing of a cancelled write"
    );
    assert_eq!(
        &after[128..192],
        &[0xC3; 64][..],
        "the other handle's write"
    );
    m.leak_check().unwrap();
}

/// The FDO's `AlignmentRequirement` follows `GetDmaAlignment` (as a
/// FILE_*_ALIGNMENT mask), as Learn asks.
#[test]
fn the_device_object_takes_the_dma_alignment() {
    let mut c = quiet_config(29);
    c.hal.dma_alignment = 8;
    let m = started(&c);
    let fdo = m.driver().fdo_address();
    // SAFETY: the started driver's live FDO, read between routines.
    let mask = unsafe { (*(fdo as *const wdk_sys::DEVICE_OBJECT)).AlignmentRequirement };
    assert_eq!(mask, 7, "FILE_QUAD_ALIGNMENT for 8-byte DMA alignment");
}

/// A START on a device that is already started (the PnP manager restarting
/// it) gives the first start's resources back before taking new ones:
/// nothing leaks and the device keeps working.
#[test]
fn a_second_start_releases_the_first_ones_resources() {
    let mut m = started(&quiet_config(30));
    assert_eq!(
        m.pnp(PnpMinor::StartDevice, 1_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    assert_eq!(m.sys().with(|k| k.hal.live_adapters()), 1, "one adapter");
    let irp = write(&mut m, 0, 64);
    assert_eq!(m.wait(irp, 1_000 * MS).unwrap().status, NtStatus::SUCCESS);
    assert_eq!(
        m.pnp(PnpMinor::RemoveDevice, 1_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    m.leak_check().unwrap();
    m.run(0, Irql::Passive, |d, sys| d.unload(sys));
    assert_eq!(m.driver().leaks(), Vec::<String>::new());
}

/// The watchdog watches only while the device works (a mapped transfer or
/// the self-test): an idle device takes no timer DPC at all, a slow command
/// is ticked until it ends, and the ticks stop after it.
#[test]
fn the_watchdog_runs_only_while_the_device_works() {
    let mut m = started(&quiet_config(31));
    let ticks = |m: &Machine<NativeDriver>| m.sys().with(|k| k.stats.timer_dpcs);
    m.run_for(1_000 * MS).unwrap();
    assert_eq!(ticks(&m), 0, "an idle device is not polled");
    m.sys()
        .with(|k| k.device.config_mut().dma_stall_ns = 350 * MS);
    let w = write(&mut m, 0, 64);
    assert_eq!(m.wait(w, 2_000 * MS).unwrap().status, NtStatus::SUCCESS);
    let during = ticks(&m);
    assert!(during >= 3, "a 450 ms command was ticked {during} times");
    m.run_for(1_000 * MS).unwrap();
    assert!(ticks(&m) <= during + 1, "at most the tick already armed");
    m.leak_check().unwrap();
}

/// A device going away disables its interface (no new opens) before it
/// releases its resources; a stop keeps it.
#[test]
fn removal_disables_the_interface_before_releasing_the_resources() {
    for minor in [PnpMinor::SurpriseRemoval, PnpMinor::RemoveDevice] {
        let mut m = started(&quiet_config(32));
        assert_eq!(m.pnp(minor, 1_000 * MS), Ok(NtStatus::SUCCESS));
        assert!(!m.driver().interface_enabled(), "{minor:?}");
        assert_eq!(
            m.driver().interface_disabled_holding_bar0(),
            Some(true),
            "{minor:?}: disabled while BAR0 was still mapped"
        );
    }
}

/// BAR0 is read under the engine lock (#11 item 5): a thread held just
/// before it takes the lock, while a start maps BAR0 again, must not use the
/// mapping it could have seen before (none: the device was stopped). Here
/// the cleanup of a handle cancels a self-test that the restart resumed;
/// its abandon must reach the device and quiesce it.
#[test]
fn a_thread_preempted_before_the_engine_lock_across_a_start_uses_the_new_mapping() {
    let mut m = started(&quiet_config(33));
    assert_eq!(
        m.pnp(PnpMinor::StopDevice, 1_000 * MS),
        Ok(NtStatus::SUCCESS)
    );
    let test = m
        .send_on(
            FileId(7),
            IrpSpec::Control {
                code: ioctl::IOCTL_EDUDMA_SELFTEST,
                input: Vec::new(),
                output_length: size_of::<ioctl::SelfTestReport>() as u32,
                data: Vec::new(),
            },
            &BufferLayout::default(),
        )
        .expect("send");
    m.run_for(10 * MS).unwrap();
    assert!(!m.is_complete(test), "held while stopped");
    m.driver().preempt_at_next_spin_lock(|d, sys| {
        // Another CPU restarts the device meanwhile; the held self-test
        // resumes and enables the factorial interrupt.
        assert_eq!(
            edudma_sim::wdm::WdmDriver::pnp(d, sys, PnpMinor::StartDevice),
            edudma_sim::wdm::PnpOutcome::Done(NtStatus::SUCCESS),
        );
    });
    assert_eq!(m.cleanup(FileId(7)), Ok(NtStatus::SUCCESS));
    assert_eq!(
        m.wait(test, 1_000 * MS).unwrap().status,
        NtStatus::CANCELLED
    );
    let status = m.sys().with(|k| k.device.read(0x20, 4));
    assert_eq!(
        status & 0x80,
        0,
        "the abandoned self-test quiesced the device"
    );
    assert!(m.crash().is_none(), "{:?}", m.crash());
    m.leak_check().unwrap();
}
