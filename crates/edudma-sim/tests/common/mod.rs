//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod testdriver;

use edudma_core::NtStatus;
use edudma_sim::hal::{
    DEVICE_DESCRIPTION_VERSION3, DeviceDescription, IoAllocationAction, MapRegisterBase,
};
use edudma_sim::io::{CancelRoutine, IrpId};
use edudma_sim::irql::Irql;
use edudma_sim::kernel::Sys;
use edudma_sim::machine::{Machine, MachineConfig};
use edudma_sim::mdl::{BufferLayout, MdlId};
use edudma_sim::native::{NativeConfig, NativeDriver};
use edudma_sim::verifier::Violation;
use edudma_sim::wdm::{PnpMinor, PnpOutcome, SimDma, WdmDriver};

/// A model driver that does nothing, for the HAL model's own tests
/// (`tests/hal.rs`), which call the model's DMA routines by hand. Driver
/// behaviour is tested with the native test drivers of [`testdriver`].
pub struct Null;

impl WdmDriver for Null {
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
    fn isr(&mut self, _: &Sys) -> bool {
        false
    }
    fn dpc_for_isr(&mut self, _: &Sys, _: Option<IrpId>) {}
    fn timer_dpc(&mut self, _: &Sys) {}
    fn execution_routine(&mut self, _: &Sys, _: MapRegisterBase) -> IoAllocationAction {
        IoAllocationAction::KeepObject
    }
}

/// A machine running the driver that ships (`src/` itself): loaded
/// (DriverEntry, AddDevice) and started, its scheduler preempting at
/// `preempt_percent` of the switch points, `registry` its Device Parameters
/// over `DmaStrategy` 0: the ten version-3 steps, which these tests stress
/// (as `SimConfig::default` does; the INF's default is the common buffer).
pub fn boot_native(
    config: &MachineConfig,
    preempt_percent: u32,
    registry: &[(&str, u32)],
) -> Machine<NativeDriver> {
    // Later entries win: the caller's values override the strategy.
    let registry = [("DmaStrategy", 0)]
        .iter()
        .chain(registry)
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    let native = NativeConfig {
        seed: config.seed,
        preempt_percent,
        registry,
        ..NativeConfig::default()
    };
    let mut m = Machine::new_with(config, |sys| NativeDriver::new(sys, &native));
    let loaded = m.run(0, Irql::Passive, |d, sys| d.load(sys));
    assert_eq!(loaded, Some(NtStatus::SUCCESS));
    assert_eq!(
        m.pnp(PnpMinor::StartDevice, edudma_sim::sched::MS),
        Ok(NtStatus::SUCCESS)
    );
    m
}

/// A quiet machine: no contention, grants inline.
pub fn quiet_config(seed: u64) -> MachineConfig {
    let mut c = MachineConfig {
        seed,
        ..MachineConfig::default()
    };
    c.hal.contention_percent = 0;
    c.hal.inline_grant_percent = 100;
    c
}

/// The edu device's description.
pub fn edu_description() -> DeviceDescription {
    DeviceDescription {
        version: DEVICE_DESCRIPTION_VERSION3,
        master: true,
        scatter_gather: true,
        dma32_bit_addresses: true,
        maximum_length: 4096,
        dma_address_width: 28,
        ..DeviceDescription::default()
    }
}

/// A machine with an adapter, at DISPATCH_LEVEL.
pub fn adapter(config: &MachineConfig, desc: &DeviceDescription) -> (Machine<Null>, SimDma, u32) {
    let m = Machine::new(config, Null);
    let (dma, granted) = m.sys().io_get_dma_adapter(desc).expect("adapter");
    m.sys().ke_raise_irql(Irql::Dispatch);
    (m, dma, granted)
}

/// A buffer of `len` bytes laid out as `layout`, filled with `fill(i)`.
pub fn buffer(
    m: &Machine<Null>,
    len: u32,
    layout: &BufferLayout,
    fill: impl Fn(usize) -> u8,
) -> MdlId {
    m.sys().with(|k| {
        let mdl = edudma_sim::mdl::build(&mut k.mdls, &mut k.mem, &mut k.rng, len, layout)
            .expect("memory");
        let data: Vec<u8> = (0..len as usize).map(fill).collect();
        k.mdls.write(&mut k.mem, mdl, 0, &data).expect("write");
        mdl
    })
}

/// Read a buffer back.
pub fn contents(m: &Machine<Null>, mdl: MdlId, len: usize) -> Vec<u8> {
    m.sys().with(|k| {
        let mut out = vec![0u8; len];
        k.mdls.read(&k.mem, mdl, 0, &mut out).expect("read");
        out
    })
}

/// The bug check.
pub fn bugcheck<D: WdmDriver>(m: &Machine<D>) -> Option<Violation> {
    m.sys().with(|k| k.verifier.bugcheck().cloned())
}
