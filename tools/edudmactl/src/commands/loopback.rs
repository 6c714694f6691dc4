//! `loopback`: write a pattern, read it back, compare — K times.

use serde::Serialize;

use super::Outcome;
use crate::cli::LoopbackArgs;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::output::{Output, count_of};
use crate::progress::Progress;
use crate::verify::Comparison;

#[derive(Serialize)]
struct Report {
    command: &'static str,
    ok: bool,
    offset: u32,
    len: u32,
    pattern: &'static str,
    iterations: u32,
    failed_iterations: u32,
    bytes_verified: u64,
    mismatched_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_failure: Option<Failure>,
    /// The driver's counters after the run (since its last reset; with
    /// --sim, of this run alone): each DMA routine's calls.
    driver_stats: serde_json::Value,
}

#[derive(Serialize)]
struct Failure {
    iteration: u32,
    #[serde(flatten)]
    comparison: Comparison,
}

/// Run `loopback`.
pub fn run(device: &mut Device, args: &LoopbackArgs, output: &Output) -> Result<Outcome> {
    if args.iterations == 0 {
        return Err(Error::Usage("--iterations must be at least 1".into()));
    }
    let window = device.window()?;
    if args.len.is_none() && args.offset >= window {
        // The default length (the rest of the window) is nothing here.
        return Err(Error::Usage(format!(
            "--offset {} leaves no room in the {window}-byte window: use an offset below \
             {window}, or give --len",
            args.offset
        )));
    }
    let len = args.len.unwrap_or(window - args.offset);
    device.check_range(args.offset, len as usize)?;

    let progress = Progress::new(output, u64::from(args.iterations), "loopback");
    let mut failed_iterations = 0;
    let mut bytes_verified = 0;
    let mut mismatched_bytes = 0;
    let mut first_failure = None;
    for iteration in 0..args.iterations {
        let data = args
            .pattern
            .generate(len as usize, u64::from(iteration) + 1);
        device.dma_write(args.offset, &data)?;
        let back = device.dma_read(args.offset, len as usize)?;
        let comparison = Comparison::of(&data, &back, args.offset);
        bytes_verified += comparison.compared;
        mismatched_bytes += comparison.mismatched;
        if !comparison.ok() {
            failed_iterations += 1;
            first_failure.get_or_insert(Failure {
                iteration: iteration + 1,
                comparison,
            });
        }
        progress.step();
    }
    progress.finish();
    let driver_stats = super::stats::to_json(&device.stats()?);

    let report = Report {
        command: "loopback",
        ok: failed_iterations == 0,
        offset: args.offset,
        len,
        pattern: args.pattern.name(),
        iterations: args.iterations,
        failed_iterations,
        bytes_verified,
        mismatched_bytes,
        first_failure,
        driver_stats,
    };
    output.emit(&report, || {
        let mut text = format!(
            "loopback {}: {} of {} at offset {} ({}), {} verified, {} failed\n",
            if report.ok { "passed" } else { "FAILED" },
            count_of(u64::from(report.iterations), "iteration"),
            count_of(u64::from(report.len), "byte"),
            report.offset,
            report.pattern,
            count_of(report.bytes_verified, "byte"),
            report.failed_iterations
        );
        if let Some(failure) = &report.first_failure {
            text.push_str(&format!(
                "  iteration {}: {}\n",
                failure.iteration,
                failure.comparison.describe()
            ));
        }
        text
    })?;
    match &report.first_failure {
        Some(failure) => Ok(Outcome::Mismatch(format!(
            "loopback: {} of {} read back wrong (iteration {}: {})",
            failed_iterations,
            count_of(u64::from(args.iterations), "iteration"),
            failure.iteration,
            failure.comparison.describe()
        ))),
        None => Ok(Outcome::Success),
    }
}
