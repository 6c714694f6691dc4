//! `selftest`: the driver's register/interrupt self-test, then DMA round trips
//! of several lengths and offsets through both DMA paths, every byte compared.

use edudma_core::ioctl::{SelfTestReport, selftest_steps};
use edudma_core::regs::factorial_u32;
use serde::Serialize;

use super::Outcome;
use crate::backend::BackendDescription;
use crate::cli::SelftestArgs;
use crate::device::Device;
use crate::error::Result;
use crate::output::Output;
use crate::patterns::random_bytes;
use crate::verify::Comparison;

/// The driver's self-test steps, with their names.
const STEPS: [(u32, &str); 5] = [
    (selftest_steps::IDENTIFICATION, "identification"),
    (selftest_steps::LIVENESS, "liveness"),
    (selftest_steps::FACTORIAL_POLLED, "factorial (polled)"),
    (selftest_steps::FACTORIAL_INTERRUPT, "factorial (interrupt)"),
    (
        selftest_steps::RAISE_ACKNOWLEDGE,
        "interrupt raise/acknowledge",
    ),
];

/// One step of the driver's self-test, as reported.
#[derive(Debug, Serialize)]
struct Step {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// The driver's self-test, decoded and double-checked.
fn driver_steps(report: &SelfTestReport) -> Vec<Step> {
    STEPS
        .iter()
        .map(|&(bit, name)| {
            let mut ok = report.passed & bit != 0 && report.failed & bit == 0;
            let detail = match bit {
                selftest_steps::IDENTIFICATION => {
                    ok &= report.device_id & 0xFF == 0xED;
                    format!("device id 0x{:08X}", report.device_id)
                }
                selftest_steps::LIVENESS => {
                    ok &= report.liveness_read == !report.liveness_written;
                    format!(
                        "wrote 0x{:08X}, read 0x{:08X}",
                        report.liveness_written, report.liveness_read
                    )
                }
                selftest_steps::FACTORIAL_POLLED => {
                    // `factorial_input` is the polled step's argument: check the device's answer.
                    ok &= report.factorial_polled == factorial_u32(report.factorial_input);
                    format!("{}! = {}", report.factorial_input, report.factorial_polled)
                }
                selftest_steps::FACTORIAL_INTERRUPT => {
                    let input = report.factorial_interrupt_input;
                    ok &= report.factorial_interrupt == factorial_u32(input);
                    format!("{input}! = {}", report.factorial_interrupt)
                }
                _ => format!("interrupt bits seen 0x{:08X}", report.irq_bits_seen),
            };
            Step { name, ok, detail }
        })
        .collect()
}

/// Which user-mode path a round trip takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Path {
    /// `IOCTL_EDUDMA_DMA_WRITE` then `IOCTL_EDUDMA_DMA_READ`.
    Ioctl,
    /// `WriteFile` then `ReadFile`.
    File,
}

/// One DMA round trip.
#[derive(Debug, Serialize)]
struct RoundTrip {
    path: Path,
    offset: u32,
    len: u32,
    #[serde(flatten)]
    comparison: Comparison,
}

/// The round trips for a window of `window` bytes: small, odd, page-crossing,
/// at both ends, and the whole window.
fn cases(window: u32) -> Vec<(Path, u32, u32)> {
    let w = window;
    let mut cases = vec![
        (Path::Ioctl, 0, 1),
        (Path::Ioctl, 1, 7),
        (Path::Ioctl, 3, 64),
        (Path::Ioctl, 100, 256),
        (Path::Ioctl, 511, 513),
        (Path::Ioctl, 1000, 2000),
        (Path::Ioctl, w - 1, 1),
        (Path::Ioctl, w - 64, 64),
        (Path::Ioctl, 0, w),
        (Path::File, 17, 100),
        (Path::File, 2048, w - 2048),
        (Path::File, 0, w),
    ];
    cases.retain(|&(_, offset, len)| len > 0 && offset + len <= w);
    cases
}

#[derive(Serialize)]
struct Report<'a> {
    command: &'static str,
    ok: bool,
    backend: &'a BackendDescription,
    driver_selftest: Vec<Step>,
    round_trips: Vec<RoundTrip>,
    /// The whole window read back once more at the end, against everything written.
    #[serde(skip_serializing_if = "Option::is_none")]
    final_window_check: Option<Comparison>,
    bytes_verified: u64,
    mismatched_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_time_ms: Option<f64>,
    /// The driver's counters after the run.
    driver_stats: serde_json::Value,
}

/// Run `selftest`.
pub fn run(device: &mut Device, args: &SelftestArgs, output: &Output) -> Result<Outcome> {
    let backend = device.describe();
    let start = device.virtual_clock();
    let report = device.selftest()?;
    let steps = driver_steps(&report);

    let mut round_trips = Vec::new();
    let mut final_window_check = None;
    if !args.no_dma {
        let window = device.window()?;
        // What the window should hold, as far as this run has written it.
        let mut shadow: Vec<Option<u8>> = vec![None; window as usize];
        for (index, (path, offset, len)) in cases(window).into_iter().enumerate() {
            let data = random_bytes(len as usize, 0x5E1F_7E57 + index as u64);
            let back = match path {
                Path::Ioctl => {
                    device.dma_write(offset, &data)?;
                    device.dma_read(offset, len as usize)?
                }
                Path::File => {
                    device.file_write(offset, &data)?;
                    device.file_read(offset, len as usize)?
                }
            };
            for (slot, &byte) in shadow[offset as usize..].iter_mut().zip(&data) {
                *slot = Some(byte);
            }
            round_trips.push(RoundTrip {
                path,
                offset,
                len,
                comparison: Comparison::of(&data, &back, offset),
            });
        }
        // Nothing outside a transfer's range may have changed: read it all back.
        let whole = device.dma_read(0, window as usize)?;
        let (expected, actual): (Vec<u8>, Vec<u8>) = shadow
            .iter()
            .zip(&whole)
            .filter_map(|(want, &got)| want.map(|want| (want, got)))
            .unzip();
        if expected.len() == window as usize {
            final_window_check = Some(Comparison::of(&expected, &actual, 0));
        }
    }

    let final_ok = final_window_check.as_ref().is_none_or(Comparison::ok);
    let bytes_verified = round_trips
        .iter()
        .map(|trip| trip.comparison.compared)
        .chain(final_window_check.iter().map(|check| check.compared))
        .sum();
    let mismatched_bytes = round_trips
        .iter()
        .map(|trip| trip.comparison.mismatched)
        .chain(final_window_check.iter().map(|check| check.mismatched))
        .sum();
    let steps_ok = steps.iter().all(|step| step.ok) && report.all_passed();
    let virtual_time_ms = match (start, device.virtual_clock()) {
        (Some(start), Some(end)) => Some(end.now_ns.saturating_sub(start.now_ns) as f64 / 1e6),
        _ => None,
    };
    let driver_stats = super::stats::to_json(&device.stats()?);
    let result = Report {
        command: "selftest",
        ok: steps_ok && mismatched_bytes == 0,
        backend: &backend,
        driver_selftest: steps,
        round_trips,
        final_window_check,
        bytes_verified,
        mismatched_bytes,
        virtual_time_ms,
        driver_stats,
    };

    output.emit(&result, || text(&result, final_ok))?;

    let failed_steps: Vec<&str> = result
        .driver_selftest
        .iter()
        .filter(|step| !step.ok)
        .map(|step| step.name)
        .collect();
    if mismatched_bytes > 0 {
        let first = result
            .round_trips
            .iter()
            .map(|trip| &trip.comparison)
            .chain(result.final_window_check.iter())
            .find(|comparison| !comparison.ok())
            .map(Comparison::describe)
            .unwrap_or_default();
        return Ok(Outcome::Mismatch(format!(
            "selftest: {mismatched_bytes} of {bytes_verified} bytes read back wrong ({first})"
        )));
    }
    if !steps_ok {
        return Ok(Outcome::DeviceFailure(format!(
            "selftest: the device failed {}",
            if failed_steps.is_empty() {
                "a step the tool does not know".to_owned()
            } else {
                failed_steps.join(", ")
            }
        )));
    }
    Ok(Outcome::Success)
}

fn mark(ok: bool) -> &'static str {
    if ok { "ok  " } else { "FAIL" }
}

fn text(report: &Report<'_>, final_ok: bool) -> String {
    let mut out = format!("selftest on {}\n", report.backend);
    for step in &report.driver_selftest {
        out.push_str(&format!(
            "  [{}] {:<28} {}\n",
            mark(step.ok),
            step.name,
            step.detail
        ));
    }
    for trip in &report.round_trips {
        let path = match trip.path {
            Path::Ioctl => "DMA ioctl",
            Path::File => "DMA file ",
        };
        let detail = if trip.comparison.ok() {
            String::new()
        } else {
            format!("  {}", trip.comparison.describe())
        };
        let noun = if trip.len == 1 { "byte " } else { "bytes" };
        let line = format!(
            "  [{}] {path} {:>5} {noun} at offset {:<5}{detail}",
            mark(trip.comparison.ok()),
            trip.len,
            trip.offset,
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(check) = &report.final_window_check {
        let detail = if final_ok {
            String::new()
        } else {
            format!("  {}", check.describe())
        };
        out.push_str(&format!(
            "  [{}] whole window read back, nothing outside a transfer changed{detail}\n",
            mark(final_ok)
        ));
    }
    let steps_passed = report.driver_selftest.iter().filter(|s| s.ok).count();
    let time = report
        .virtual_time_ms
        .map(|ms| {
            if ms >= 1000.0 {
                format!(", {:.1} s of virtual time", ms / 1000.0)
            } else {
                format!(", {ms:.1} ms of virtual time")
            }
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "selftest {}: {steps_passed}/{} device checks, {} DMA round trips, {} bytes verified, \
         {} mismatched{time}\n",
        if report.ok { "PASSED" } else { "FAILED" },
        report.driver_selftest.len(),
        report.round_trips.len(),
        report.bytes_verified,
        report.mismatched_bytes,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_fit_both_windows() {
        for window in [4095, 4096] {
            let cases = cases(window);
            assert!(cases.len() >= 10);
            assert!(cases.iter().all(|&(_, o, l)| l > 0 && o + l <= window));
            assert!(cases.iter().any(|&(_, o, l)| o + l == window && o > 0));
            assert!(cases.iter().any(|&(p, _, _)| p == Path::File));
        }
    }

    #[test]
    fn steps_are_checked_not_trusted() {
        let report = SelfTestReport {
            passed: selftest_steps::ALL,
            failed: 0,
            device_id: 0x0100_00ED,
            liveness_written: 0x1234_5678,
            liveness_read: !0x1234_5678,
            factorial_input: 5,
            factorial_polled: 121,
            factorial_interrupt: 720,
            irq_bits_seen: 1,
            factorial_interrupt_input: 6,
        };
        let steps = driver_steps(&report);
        assert!(steps[0].ok && steps[1].ok && steps[3].ok && steps[4].ok);
        assert!(
            !steps[2].ok,
            "a wrong factorial must fail even when the driver says pass"
        );
        let wrong_interrupt_factorial = SelfTestReport {
            factorial_polled: 120,
            factorial_interrupt: 719,
            ..report
        };
        let steps = driver_steps(&wrong_interrupt_factorial);
        assert!(steps[2].ok);
        assert!(!steps[3].ok, "the interrupt factorial is checked too");
    }
}
