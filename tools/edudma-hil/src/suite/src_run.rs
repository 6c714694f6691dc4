//! `src/` itself against the device: the `[SRC]` checks.

use std::time::Duration;

use edudma_core::regs::{self, RegisterFile};
use edudma_sim::edu::mirror::EduMirror;

use super::{Rig, command};
use crate::src_lockstep::{self, GuestEdu};

/// `src/` on the simulated kernel, its edu model mirrored onto the real
/// device ([`src_lockstep`]). The mirror takes the device over: INTx is kept
/// off the line meanwhile (the simulated kernel takes the model's
/// interrupts), and what it leaves pending is acknowledged before the rig's
/// interrupt handling resumes.
pub(super) fn src_conformance(rig: &mut Rig) {
    let guest = match GuestEdu::new(&rig.pci) {
        Ok(guest) => guest,
        Err(e) => {
            rig.check(false, &format!("[SRC] the mirror's device: {e}"));
            return;
        }
    };
    let before = rig.pci.command().unwrap_or(0);
    if let Err(e) = rig.pci.update_command(command::INTX_DISABLE, 0) {
        rig.check(false, &format!("[SRC] masking INTx: {e}"));
        return;
    }
    let seed = std::env::var("HIL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(src_lockstep::SEED);
    let mirror = EduMirror::new(Box::new(guest));
    src_lockstep::run(&mirror, seed, &mut |ok, what| {
        rig.check(ok, what);
    });
    drop(mirror);
    let pending = rig.bar.read32(regs::REG_IRQ_STATUS);
    if pending != 0 {
        rig.bar.write32(regs::REG_IRQ_ACK, pending);
    }
    if before & command::INTX_DISABLE == 0 {
        let _ = rig.pci.update_command(0, command::INTX_DISABLE);
    }
    if let Some(irq) = rig.irq.as_mut() {
        // An edge the device raised before the mask took: not the rig's.
        let _ = irq.wait(Duration::ZERO);
    }
}
