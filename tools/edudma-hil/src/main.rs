//! edudma-hil: the unchanged edudma-core engine against QEMU's real `edu`
//! device, from a Linux guest (see `scripts/hil.sh`).
//!
//! Run as root inside a QEMU guest with `-device edu`, a virtual IOMMU, and
//! `uio_pci_generic` and `vfio-pci` loaded: `edudma-hil --mode
//! quick|standard|sweep`. The INTx phases run through `uio_pci_generic`, then
//! the MSI phase set through `vfio-pci`; after the conformance sequences,
//! `src/` runs on the simulated kernel with the edu model mirrored onto the
//! device (`[SRC]` checks, [`src_lockstep`]). It prints `HIL PASS` / `HIL FAIL`
//! lines, `TRACE` lines of the model-conformance sequences, the counts of each
//! set and of all, and `HIL RESULT: PASS` or `FAIL`; the exit status says the same.
//!
//! On other systems it builds (it is part of the workspace) but only says
//! that it needs the guest.

#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::process::ExitCode;

mod conform;
mod conform_msi;
mod hal;
#[cfg(target_os = "linux")]
mod irq;
#[cfg(target_os = "linux")]
mod linux;
mod rng;
#[cfg(test)]
mod sim_conformance;
mod src_lockstep;
#[cfg(target_os = "linux")]
mod suite;
#[cfg(target_os = "linux")]
mod vfio;

const USAGE: &str = "usage: edudma-hil [--mode quick|standard|sweep|probe-count0]\n\
       edudma-hil compare EXPECTED.txt OBSERVED.txt\n\
The first form runs inside the QEMU guest that scripts/hil.sh boots (root, -device edu,\n\
intel-iommu, uio_pci_generic and vfio-pci). The second compares two conformance traces (TRACE lines) step by step.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("compare") {
        return compare(&args[1..]);
    }
    let mut mode = "standard".to_string();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--mode" => {
                let Some(m) = args.get(i + 1) else {
                    eprintln!("{USAGE}");
                    return ExitCode::from(2);
                };
                mode = m.clone();
                i += 2;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    run(&mode)
}

/// Compare a conformance trace with the expected one (racy steps excluded).
fn compare(args: &[String]) -> ExitCode {
    let [expected, observed] = args else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let read = |path: &String| {
        std::fs::read_to_string(path).map_err(|e| eprintln!("edudma-hil: {path}: {e}"))
    };
    let (Ok(expected_text), Ok(observed_text)) = (read(expected), read(observed)) else {
        return ExitCode::from(2);
    };
    let expected_trace = conform::parse_trace(&expected_text);
    let observed_trace = conform::parse_trace(&observed_text);
    let diff = conform::diff_traces(&expected_trace, &observed_trace);
    for line in &diff {
        println!("trace difference: {line}");
    }
    println!(
        "compared {} trace steps: {} differences",
        expected_trace.len(),
        diff.len()
    );
    if diff.is_empty() && !expected_trace.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(target_os = "linux")]
fn run(mode: &str) -> ExitCode {
    let mode = match mode {
        "quick" => suite::Mode::Quick,
        "standard" => suite::Mode::Standard,
        "sweep" => suite::Mode::Sweep,
        "probe-count0" => suite::Mode::ProbeCount0,
        other => {
            eprintln!("unknown mode {other}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if suite::run(mode) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(not(target_os = "linux"))]
fn run(_mode: &str) -> ExitCode {
    eprintln!("edudma-hil runs only inside the Linux guest of scripts/hil.sh");
    ExitCode::from(2)
}
