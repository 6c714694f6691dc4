//! edudma-hil: the unchanged edudma-core engine against QEMU's real `edu`
//! device, from a Linux guest (see `scripts/hil.sh`).
//!
//! Run as root inside a QEMU guest with `-device edu` and `uio_pci_generic`
//! loaded: `edudma-hil --mode quick|standard|sweep`. It prints `HIL PASS` /
//! `HIL FAIL` lines, `TRACE` lines of the model-conformance sequences, the
//! counts, and `HIL RESULT: PASS` or `FAIL`; the exit status says the same.
//!
//! On other systems it builds (it is part of the workspace) but only says
//! that it needs the guest.

#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::process::ExitCode;

mod conform;
mod hal;
#[cfg(target_os = "linux")]
mod linux;
mod rng;
#[cfg(target_os = "linux")]
mod suite;

const USAGE: &str = "usage: edudma-hil [--mode quick|standard|sweep]\n\
Runs inside the QEMU guest that scripts/hil.sh boots (root, -device edu, uio_pci_generic).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
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

#[cfg(target_os = "linux")]
fn run(mode: &str) -> ExitCode {
    let mode = match mode {
        "quick" => suite::Mode::Quick,
        "standard" => suite::Mode::Standard,
        "sweep" => suite::Mode::Sweep,
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
