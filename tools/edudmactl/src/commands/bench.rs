//! `bench`: DMA throughput, both directions; on the simulator also in virtual
//! time against the device's limit, and the DMA calls each request cost.

use std::time::Instant;

use edudma_core::ioctl::Stats;
use serde::Serialize;

use super::Outcome;
use crate::cli::BenchArgs;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::output::{Output, count_of, human_bytes};
use crate::patterns::random_bytes;
use crate::progress::Progress;
use crate::verify::Comparison;

/// The edu device moves at most 4096 bytes per DMA command, and each command
/// takes 100 ms: 40960 bytes per second.
pub const DEVICE_LIMIT_BYTES_PER_SEC: f64 = 4096.0 / 0.1;

/// Throughput of one direction.
#[derive(Debug, Serialize)]
struct Direction {
    requests: u32,
    bytes: u64,
    wall_seconds: f64,
    wall_bytes_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    virtual_bytes_per_sec: Option<f64>,
    /// Virtual throughput as a percentage of [`DEVICE_LIMIT_BYTES_PER_SEC`].
    #[serde(skip_serializing_if = "Option::is_none")]
    percent_of_device_limit: Option<f64>,
}

/// The HAL DMA calls (and device work) one request cost, on average.
#[derive(Debug, Default, Serialize)]
struct PerRequest {
    get_dma_transfer_info: f64,
    allocate_adapter_channel: f64,
    map_transfer: f64,
    flush_adapter_buffers: f64,
    free_adapter_channel: f64,
    flush_io_buffers: f64,
    free_map_registers: f64,
    build_scatter_gather_list: f64,
    get_scatter_gather_list: f64,
    put_scatter_gather_list: f64,
    device_commands: f64,
    interrupts: f64,
    dpcs: f64,
}

impl PerRequest {
    fn between(before: &Stats, after: &Stats) -> Self {
        let requests = after.requests.saturating_sub(before.requests);
        if requests == 0 {
            return Self::default();
        }
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / requests as f64;
        Self {
            get_dma_transfer_info: per(after.get_dma_transfer_info, before.get_dma_transfer_info),
            allocate_adapter_channel: per(
                after.allocate_adapter_channel,
                before.allocate_adapter_channel,
            ),
            map_transfer: per(after.map_transfer, before.map_transfer),
            flush_adapter_buffers: per(after.flush_adapter_buffers, before.flush_adapter_buffers),
            free_adapter_channel: per(after.free_adapter_channel, before.free_adapter_channel),
            flush_io_buffers: per(after.flush_io_buffers, before.flush_io_buffers),
            free_map_registers: per(after.free_map_registers, before.free_map_registers),
            build_scatter_gather_list: per(
                after.build_scatter_gather_list,
                before.build_scatter_gather_list,
            ),
            get_scatter_gather_list: per(
                after.get_scatter_gather_list,
                before.get_scatter_gather_list,
            ),
            put_scatter_gather_list: per(
                after.put_scatter_gather_list,
                before.put_scatter_gather_list,
            ),
            device_commands: per(after.device_commands, before.device_commands),
            interrupts: per(after.interrupts, before.interrupts),
            dpcs: per(after.dpcs, before.dpcs),
        }
    }
}

#[derive(Serialize)]
struct Report {
    command: &'static str,
    /// Every byte read back matched the bytes written.
    ok: bool,
    len: u32,
    iterations: u32,
    write: Direction,
    read: Direction,
    device_limit_bytes_per_sec: f64,
    dma_calls_per_request: PerRequest,
    bytes_verified: u64,
    mismatched_bytes: u64,
    /// The first round (1-based) whose read came back wrong, with its first difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    first_failure: Option<Failure>,
}

#[derive(Serialize)]
struct Failure {
    iteration: u32,
    #[serde(flatten)]
    comparison: Comparison,
}

/// Run `bench`.
pub fn run(device: &mut Device, args: &BenchArgs, output: &Output) -> Result<Outcome> {
    if args.iterations == 0 {
        return Err(Error::Usage("--iterations must be at least 1".into()));
    }
    let window = device.window()?;
    let len = args.len.unwrap_or(window);
    device.check_range(0, len as usize)?;
    let before = device.stats()?;

    // Each write is read back at once, and each request timed on its own:
    // every byte written is checked (a corrupted write shows), and the
    // two directions are still measured apart.
    let progress = Progress::new(output, 2 * u64::from(args.iterations), "bench");
    let (mut write, mut read) = (Timing::default(), Timing::default());
    let (mut bytes_verified, mut mismatched_bytes) = (0u64, 0u64);
    let mut first_failure = None;
    for iteration in 1..=args.iterations {
        let data = random_bytes(len as usize, 0xBE7C + u64::from(iteration));
        write.time(device, |device| device.dma_write(0, &data).map(|_| ()))?;
        progress.step();
        let mut back = Vec::new();
        read.time(device, |device| {
            back = device.dma_read(0, len as usize)?;
            Ok(())
        })?;
        progress.step();
        let comparison = Comparison::of(&data, &back, 0);
        bytes_verified += comparison.compared;
        mismatched_bytes += comparison.mismatched;
        if !comparison.ok() {
            first_failure.get_or_insert(Failure {
                iteration,
                comparison,
            });
        }
    }
    progress.finish();

    let after = device.stats()?;
    let report = Report {
        command: "bench",
        ok: first_failure.is_none(),
        len,
        iterations: args.iterations,
        write: write.direction(args.iterations, len),
        read: read.direction(args.iterations, len),
        device_limit_bytes_per_sec: DEVICE_LIMIT_BYTES_PER_SEC,
        dma_calls_per_request: PerRequest::between(&before, &after),
        bytes_verified,
        mismatched_bytes,
        first_failure,
    };
    output.emit(&report, || text(&report))?;
    Ok(match &report.first_failure {
        Some(failure) => Outcome::Mismatch(format!(
            "bench: {} of {} read back wrong (iteration {}: {})",
            report.mismatched_bytes,
            count_of(report.bytes_verified, "byte"),
            failure.iteration,
            failure.comparison.describe()
        )),
        None => Outcome::Success,
    })
}

/// The time requests of one direction took, summed.
#[derive(Default)]
struct Timing {
    wall_seconds: f64,
    virtual_ns: Option<u64>,
}

impl Timing {
    /// Run one request and add its time, on the wall clock and on the
    /// simulator's virtual clock.
    fn time(
        &mut self,
        device: &mut Device,
        request: impl FnOnce(&mut Device) -> Result<()>,
    ) -> Result<()> {
        let virtual_start = device.virtual_clock();
        let wall_start = Instant::now();
        request(device)?;
        self.wall_seconds += wall_start.elapsed().as_secs_f64();
        if let (Some(start), Some(end)) = (virtual_start, device.virtual_clock()) {
            let spent = end.now_ns.saturating_sub(start.now_ns);
            self.virtual_ns = Some(self.virtual_ns.unwrap_or(0) + spent);
        }
        Ok(())
    }

    /// The throughput of `iterations` requests of `len` bytes.
    fn direction(&self, iterations: u32, len: u32) -> Direction {
        let bytes = u64::from(len) * u64::from(iterations);
        let virtual_seconds = self.virtual_ns.map(|ns| ns as f64 / 1e9);
        let rate = |seconds: f64| {
            if seconds > 0.0 {
                bytes as f64 / seconds
            } else {
                0.0
            }
        };
        let virtual_bytes_per_sec = virtual_seconds.map(rate);
        Direction {
            requests: iterations,
            bytes,
            wall_seconds: self.wall_seconds,
            wall_bytes_per_sec: rate(self.wall_seconds),
            virtual_seconds,
            virtual_bytes_per_sec,
            percent_of_device_limit: virtual_bytes_per_sec
                .map(|rate| 100.0 * rate / DEVICE_LIMIT_BYTES_PER_SEC),
        }
    }
}

fn direction_line(name: &str, d: &Direction) -> String {
    let mut line = format!(
        "  {name:<6}{:>4} x {} = {}, wall {:.3} s, {}/s",
        d.requests,
        human_bytes(d.bytes as f64 / f64::from(d.requests.max(1))),
        human_bytes(d.bytes as f64),
        d.wall_seconds,
        human_bytes(d.wall_bytes_per_sec),
    );
    if let (Some(seconds), Some(rate), Some(percent)) = (
        d.virtual_seconds,
        d.virtual_bytes_per_sec,
        d.percent_of_device_limit,
    ) {
        line.push_str(&format!(
            "; virtual {seconds:.1} s, {}/s = {percent:.1}% of the device limit",
            human_bytes(rate)
        ));
    }
    line.push('\n');
    line
}

fn text(report: &Report) -> String {
    let mut out = format!(
        "bench: {} of {} each way (device limit {}/s: 4096 bytes per 100 ms)\n",
        count_of(u64::from(report.iterations), "request"),
        count_of(u64::from(report.len), "byte"),
        human_bytes(report.device_limit_bytes_per_sec)
    );
    out.push_str(&direction_line("write", &report.write));
    out.push_str(&direction_line("read", &report.read));
    let p = &report.dma_calls_per_request;
    out.push_str(&format!(
        "  per request: GetDmaTransferInfo {:.2}, KeFlushIoBuffers {:.2}, \
         AllocateAdapterChannel[Ex] {:.2}, MapTransfer[Ex] {:.2}, FlushAdapterBuffers[Ex] {:.2}, \
         FreeAdapterChannel {:.2}, FreeMapRegisters {:.2}, \
         Build/GetScatterGatherList {:.2}/{:.2}, PutScatterGatherList {:.2}, \
         device commands {:.2}, interrupts {:.2}, DPCs {:.2}\n",
        p.get_dma_transfer_info,
        p.flush_io_buffers,
        p.allocate_adapter_channel,
        p.map_transfer,
        p.flush_adapter_buffers,
        p.free_adapter_channel,
        p.free_map_registers,
        p.build_scatter_gather_list,
        p.get_scatter_gather_list,
        p.put_scatter_gather_list,
        p.device_commands,
        p.interrupts,
        p.dpcs
    ));
    out.push_str(&format!(
        "  data: {} verified, {} mismatched\n",
        count_of(report.bytes_verified, "byte"),
        report.mismatched_bytes
    ));
    out
}
