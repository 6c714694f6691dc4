//! `bench`: DMA throughput, both directions; on the simulator also in virtual
//! time against the device's limit, and the DMA calls each request cost.

use std::time::Instant;

use edudma_core::ioctl::Stats;
use serde::Serialize;

use super::Outcome;
use crate::cli::BenchArgs;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::output::{Output, human_bytes};
use crate::patterns::random_bytes;
use crate::progress::Progress;

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
    len: u32,
    iterations: u32,
    write: Direction,
    read: Direction,
    device_limit_bytes_per_sec: f64,
    dma_calls_per_request: PerRequest,
}

/// Run `bench`.
pub fn run(device: &mut Device, args: &BenchArgs, output: &Output) -> Result<Outcome> {
    if args.iterations == 0 {
        return Err(Error::Usage("--iterations must be at least 1".into()));
    }
    let window = device.window()?;
    let len = args.len.unwrap_or(window);
    device.check_range(0, len as usize)?;
    let data = random_bytes(len as usize, 0xBE7C);
    let before = device.stats()?;

    let progress = Progress::new(output, 2 * u64::from(args.iterations), "write");
    let write = measure(device, args.iterations, len, &progress, |device| {
        device.dma_write(0, &data).map(|_| ())
    })?;
    progress.label("read");
    let read = measure(device, args.iterations, len, &progress, |device| {
        device.dma_read(0, len as usize).map(|_| ())
    })?;
    progress.finish();

    let after = device.stats()?;
    let report = Report {
        command: "bench",
        len,
        iterations: args.iterations,
        write,
        read,
        device_limit_bytes_per_sec: DEVICE_LIMIT_BYTES_PER_SEC,
        dma_calls_per_request: PerRequest::between(&before, &after),
    };
    output.emit(&report, || text(&report))?;
    Ok(Outcome::Success)
}

/// Run `iterations` requests of `len` bytes and time them, on the wall clock
/// and on the simulator's virtual clock.
fn measure(
    device: &mut Device,
    iterations: u32,
    len: u32,
    progress: &Progress,
    mut request: impl FnMut(&mut Device) -> Result<()>,
) -> Result<Direction> {
    let virtual_start = device.virtual_clock();
    let wall_start = Instant::now();
    for _ in 0..iterations {
        request(device)?;
        progress.step();
    }
    let wall_seconds = wall_start.elapsed().as_secs_f64();
    let bytes = u64::from(len) * u64::from(iterations);
    let virtual_seconds = match (virtual_start, device.virtual_clock()) {
        (Some(start), Some(end)) => Some(end.now_ns.saturating_sub(start.now_ns) as f64 / 1e9),
        _ => None,
    };
    let rate = |seconds: f64| {
        if seconds > 0.0 {
            bytes as f64 / seconds
        } else {
            0.0
        }
    };
    let virtual_bytes_per_sec = virtual_seconds.map(rate);
    Ok(Direction {
        requests: iterations,
        bytes,
        wall_seconds,
        wall_bytes_per_sec: rate(wall_seconds),
        virtual_seconds,
        virtual_bytes_per_sec,
        percent_of_device_limit: virtual_bytes_per_sec
            .map(|rate| 100.0 * rate / DEVICE_LIMIT_BYTES_PER_SEC),
    })
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
        "bench: {} requests of {} bytes each way (device limit {}/s: 4096 bytes per 100 ms)\n",
        report.iterations,
        report.len,
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
    out
}
