//! The kernel model: interrupts preempt queued DPCs, DPC requests collapse,
//! INTx is level-triggered (bits raised after the ISR's read fire again).

mod common;

use common::quiet_config;
use edudma_core::NtStatus;
use edudma_core::regs::{
    self, REG_DMA_CMD, REG_DMA_COUNT, REG_DMA_DST, REG_DMA_SRC, REG_IRQ_RAISE,
};
use edudma_sim::hal::{IoAllocationAction, MapRegisterBase};
use edudma_sim::io::{CancelRoutine, IrpId};
use edudma_sim::irql::Irql;
use edudma_sim::kernel::Sys;
use edudma_sim::machine::Machine;
use edudma_sim::sched::{MS, US};
use edudma_sim::wdm::{PnpMinor, PnpOutcome, SimRegs, WdmDriver};

#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    bits: u32,
}

impl WdmDriver for Recorder {
    fn dispatch(&mut self, _: &Sys, _: IrpId) -> NtStatus {
        NtStatus::PENDING
    }
    fn pnp(&mut self, _: &Sys, _: PnpMinor) -> PnpOutcome {
        PnpOutcome::Done(NtStatus::SUCCESS)
    }
    fn start_io(&mut self, _: &Sys, _: IrpId) {}
    fn cancel(&mut self, sys: &Sys, _: CancelRoutine, _: IrpId, irql: Irql) {
        sys.io_release_cancel_spin_lock(irql);
    }
    fn isr(&mut self, sys: &Sys) -> bool {
        assert_eq!(sys.irql(), Irql::Device);
        match regs::isr_acknowledge(&mut SimRegs(sys.clone())) {
            Some(bits) => {
                self.bits |= bits.bits();
                let queued = sys.io_request_dpc(None);
                self.log
                    .push(format!("isr {:#x} queued={queued}", bits.bits()));
                true
            }
            None => false,
        }
    }
    fn dpc_for_isr(&mut self, sys: &Sys, _: Option<IrpId>) {
        assert_eq!(sys.irql(), Irql::Dispatch);
        self.log
            .push(format!("dpc {:#x}", std::mem::take(&mut self.bits)));
    }
    fn timer_dpc(&mut self, _: &Sys) {}
    fn execution_routine(&mut self, _: &Sys, _: MapRegisterBase) -> IoAllocationAction {
        IoAllocationAction::KeepObject
    }
}

#[test]
fn interrupts_preempt_queued_dpcs_and_dpc_requests_collapse() {
    for msi in [false, true] {
        let mut c = quiet_config(1);
        c.msi = msi;
        let mut m = Machine::new(&c, Recorder::default());
        let sys = m.sys().clone();
        // An MSI is a bus-master write: without Bus Master Enable it is lost.
        sys.set_pci_command(0x0006);
        sys.io_connect_interrupt_ex();
        sys.write_register(REG_IRQ_RAISE, 0x1);
        // Run the first interrupt only: its DPC is queued, not run yet.
        m.run_until(|m| !m.driver().log.is_empty(), 10 * US)
            .unwrap();
        sys.write_register(REG_IRQ_RAISE, 0x2);
        m.run_for(1000 * US).unwrap();
        assert_eq!(
            m.driver().log,
            vec!["isr 0x1 queued=true", "isr 0x2 queued=false", "dpc 0x3"],
            "msi={msi}"
        );
        assert_eq!(sys.with(|k| k.stats.dpcs_collapsed), 1);
    }
}

#[test]
fn an_msi_without_bus_mastering_never_reaches_the_isr() {
    let mut c = quiet_config(1);
    c.msi = true;
    let mut m = Machine::new(&c, Recorder::default());
    let sys = m.sys().clone();
    sys.set_pci_command(0x0002);
    sys.io_connect_interrupt_ex();
    sys.write_register(REG_IRQ_RAISE, 0x1);
    m.run_for(1000 * US).unwrap();
    assert!(m.driver().log.is_empty(), "{:?}", m.driver().log);
    assert_eq!(sys.with(|k| k.device.msis_lost()), 1);
    assert_eq!(sys.with(|k| k.device.irq_status()), 0x1);
}

#[test]
fn a_shared_line_not_ours_is_not_claimed() {
    let mut m = Machine::new(&quiet_config(2), Recorder::default());
    let sys = m.sys().clone();
    sys.io_connect_interrupt_ex();
    m.run_for(1000 * US).unwrap();
    assert!(m.driver().log.is_empty());
    assert_eq!(sys.with(|k| k.stats.interrupts), 0);
}

/// QEMU arms the DMA timer at `now_ms + 100` (a truncated millisecond
/// clock), and a loaded host runs it late now and then: the interrupt comes
/// more than 99 ms after START, never before, and at most a few ms late.
#[test]
fn a_dma_completes_99_to_100_ms_after_start_later_under_load() {
    let mut late = 0;
    for seed in 1..=40 {
        let mut m = Machine::new(&quiet_config(seed), Recorder::default());
        let sys = m.sys().clone();
        sys.io_connect_interrupt_ex();
        // Start at an arbitrary phase of the millisecond.
        m.run_for(seed * 37 * US).unwrap();
        // Bus mastering off: the command completes and interrupts, moving nothing.
        sys.write_register(REG_DMA_SRC, 0x1000);
        sys.write_register(REG_DMA_DST, 0x40000);
        sys.write_register(REG_DMA_COUNT, 16);
        let start = sys.now();
        sys.write_register(REG_DMA_CMD, 0x1 | 0x4);
        m.run_until(|m| !m.driver().log.is_empty(), 200 * MS)
            .unwrap();
        let took = sys.now() - start;
        assert!(
            took > 99 * MS && took <= 103 * MS + 100 * US,
            "seed {seed}: {took} ns"
        );
        if took > 100 * MS + 100 * US {
            late += 1;
        }
    }
    assert!(
        late > 0 && late < 40,
        "some, not all, commands run late: {late}"
    );
}
