//! The MSI phase set: the device moved from `uio_pci_generic` to
//! `vfio-pci`, its one MSI vector on an eventfd, then the MSI conformance
//! sequences and the interrupt-driven engine phases again (self-test with
//! the factorial by interrupt and raise/ack, DMA round trips completed by
//! their MSI, cancels and a stop, the scatter/gather-list strategy).

use edudma_core::engine::{DmaStrategy, EngineConfig};
use edudma_core::regs::RegisterFile;

use super::{Mode, Rig, cancel_and_stop, edge_cases, main_phase, say};
use crate::conform_msi;
use crate::hal::{HalConfig, PAGE_SIZE};
use crate::irq::Interrupts;
use crate::linux::command;
use crate::vfio::{self, Vfio};

/// PCI capability id of MSI.
const CAP_MSI: u8 = 0x05;

/// Passed and failed verdicts of the MSI phase set.
pub(super) struct SetCounts {
    pub passed: u32,
    pub failed: u32,
}

/// Run the MSI phase set (after the INTx phases: the device stays on vfio-pci).
pub(super) fn run(rig: &mut Rig, mode: Mode, window: u32) -> SetCounts {
    rig.set = "MSI";
    let (passed, failed) = (rig.totals.passed, rig.totals.failed);
    match switch_to_vfio(rig) {
        Ok(vfio) => {
            rig.check(
                true,
                &format!(
                    "interrupts through vfio-pci: MSI on an eventfd (IOMMU group {}, type{} backend, \
                     every pool page mapped at its physical address)",
                    vfio.group,
                    if vfio.iommu_type == 3 { "1v2" } else { "1" }
                ),
            );
            msi_capability(rig);
            phases(rig, mode, window);
            drop(vfio);
        }
        Err(e) => {
            rig.check(false, &format!("interrupts through vfio-pci (MSI): {e}"));
        }
    }
    SetCounts {
        passed: rig.totals.passed - passed,
        failed: rig.totals.failed - failed,
    }
}

/// Close `/dev/uio0`, bind vfio-pci, map BAR0 and the pool through vfio,
/// bus mastering on, MSI vector 0 on an eventfd.
fn switch_to_vfio(rig: &mut Rig) -> Result<Vfio, String> {
    rig.irq = None;
    vfio::bind_vfio_pci(&rig.pci).map_err(|e| format!("binding vfio-pci: {e}"))?;
    let vfio = Vfio::open(&rig.pci).map_err(|e| e.to_string())?;
    rig.bar = vfio
        .map_bar0()
        .map_err(|e| format!("BAR0 through vfio: {e}"))?;
    let frames = rig.pool.frames();
    for &(va, phys) in &frames {
        vfio.map_dma(va, phys, PAGE_SIZE as u64)
            .map_err(|e| e.to_string())?;
    }
    // Pinning for the IOMMU must not have moved a page.
    let moved = (0..frames.len())
        .filter(|&p| rig.pool.phys_now(p) != Some(frames[p].1))
        .count();
    if moved > 0 {
        return Err(format!("{moved} pages moved when vfio pinned them"));
    }
    let cmd = rig
        .pci
        .update_command(command::MEMORY | command::BUS_MASTER, 0)
        .map_err(|e| format!("config space: {e}"))?;
    let vectors = vfio.msi_vectors().map_err(|e| e.to_string())?;
    let msi = vfio.enable_msi().map_err(|e| e.to_string())?;
    rig.irq = Some(Interrupts::Msi(msi));
    say(&format!(
        "HIL INFO vfio-pci: {} pages mapped for DMA (IOVA = physical address), PCI command 0x{cmd:04x}, \
         {vectors} MSI vector(s), vector 0 enabled",
        frames.len()
    ));
    Ok(vfio)
}

/// Find the MSI capability and check the kernel enabled it.
fn msi_capability(rig: &mut Rig) {
    let read8 = |off: u64| rig.pci.config_read::<1>(off).map(|b| b[0]).unwrap_or(0);
    let mut pos = read8(0x34) & !3;
    let mut found = None;
    for _ in 0..48 {
        if pos < 0x40 {
            break;
        }
        if read8(u64::from(pos)) == CAP_MSI {
            found = Some(pos);
            break;
        }
        pos = read8(u64::from(pos) + 1) & !3;
    }
    let Some(cap) = found else {
        rig.check(false, "MSI capability: not found in config space");
        return;
    };
    let cap = u64::from(cap);
    let control = rig
        .pci
        .config_read::<2>(cap + 2)
        .map(u16::from_le_bytes)
        .unwrap_or(0);
    let is64 = control & (1 << 7) != 0;
    let lo = rig
        .pci
        .config_read::<4>(cap + 4)
        .map(u32::from_le_bytes)
        .unwrap_or(0);
    let hi = if is64 {
        rig.pci
            .config_read::<4>(cap + 8)
            .map(u32::from_le_bytes)
            .unwrap_or(0)
    } else {
        0
    };
    let data = rig
        .pci
        .config_read::<2>(cap + if is64 { 12 } else { 8 })
        .map(u16::from_le_bytes)
        .unwrap_or(0);
    // vfio-pci restores the command register around enabling MSI, so INTx
    // Disable stays as it was; edu never drives INTx while MSI is enabled.
    let cmd = rig.pci.command().unwrap_or(0);
    rig.check(
        control & 1 != 0 && control & (1 << 8) == 0,
        &format!(
            "MSI capability at 0x{cap:02x}: control 0x{control:04x} (enabled {}, 64-bit {is64}, \
             per-vector mask {}: nothing can be pended), address 0x{hi:08x}_{lo:08x}, data 0x{data:04x}; \
             PCI command 0x{cmd:04x}",
            control & 1 != 0,
            control & (1 << 8) != 0,
        ),
    );
}

fn phases(rig: &mut Rig, mode: Mode, window: u32) {
    // The register-level sequences with MSI, while the device is quiet.
    let (sequences, failed) = conform_msi::run_all(rig);
    rig.check(
        failed == 0,
        &format!(
            "MSI conformance: {sequences} register sequences, {failed} steps off their expectation"
        ),
    );

    match rig.start_driver(
        "msi-main",
        HalConfig::default(),
        EngineConfig::default(),
        true,
    ) {
        Ok(mut drv) => {
            let id = rig.bar.read32(edudma_core::regs::REG_ID);
            let kind = drv.engine.device_info().interrupt_kind;
            rig.check(
                kind == edudma_core::ioctl::InterruptKind::MessageSignaled as u32,
                &format!("msi-main: the engine was started with a message-signalled interrupt (kind {kind}, id 0x{id:08x})"),
            );
            main_phase(rig, &mut drv, mode, window);
            let stats = rig.stop_driver(drv);
            rig.check(
                stats.interrupts == stats.device_commands + 2,
                &format!(
                    "msi-main interrupts: {} MSIs claimed by the ISR for {} device commands and the self-test's 2",
                    stats.interrupts, stats.device_commands
                ),
            );
        }
        Err(e) => {
            rig.check(false, &format!("start msi-main: {e}"));
        }
    }
    if mode == Mode::Quick {
        return;
    }
    cancel_and_stop(rig, window);
    let config = HalConfig {
        strategy: DmaStrategy::SgList,
        ..HalConfig::default()
    };
    match rig.start_driver("msi-sg-list", config, EngineConfig::default(), true) {
        Ok(mut drv) => {
            for (i, case) in edge_cases(window).into_iter().enumerate() {
                rig.round_trip(&mut drv, case, &format!("#{i}"));
            }
            let stats = rig.stop_driver(drv);
            rig.check(
                stats.interrupts == stats.device_commands && stats.build_scatter_gather_list > 0,
                &format!(
                    "msi-sg-list: {} MSIs for {} device commands, {} lists built",
                    stats.interrupts, stats.device_commands, stats.build_scatter_gather_list
                ),
            );
        }
        Err(e) => {
            rig.check(false, &format!("start msi-sg-list: {e}"));
        }
    }
}
