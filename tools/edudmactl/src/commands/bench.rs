//! `bench`: DMA throughput, both directions, with up to `--queue-depth`
//! requests in flight; on the simulator also in virtual time against the
//! device's limit, the DMA calls each request cost against the floor of the
//! strategy in force, and the heap allocations each request cost.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use edudma_core::ioctl::{DmaStrategyCode, Stats};
use serde::Serialize;

use super::Outcome;
use crate::alloc_count::{self, AllocationCounts};
use crate::backend::VirtualClock;
use crate::cli::BenchArgs;
use crate::device::{Device, InFlight};
use crate::error::{Error, Result};
use crate::output::{Output, count_of, human_bytes};
use crate::patterns::random_bytes;
use crate::progress::Progress;
use crate::verify::Comparison;

/// The most requests `--queue-depth` keeps in flight.
pub const MAX_QUEUE_DEPTH: u32 = 64;

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
    calculate_scatter_gather_list: f64,
    sync_allocation_fallbacks: f64,
    common_buffer_copies: f64,
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
            calculate_scatter_gather_list: per(
                after.calculate_scatter_gather_list,
                before.calculate_scatter_gather_list,
            ),
            sync_allocation_fallbacks: per(
                after.sync_allocation_fallbacks,
                before.sync_allocation_fallbacks,
            ),
            common_buffer_copies: per(after.common_buffer_copies, before.common_buffer_copies),
            device_commands: per(after.device_commands, before.device_commands),
            interrupts: per(after.interrupts, before.interrupts),
            dpcs: per(after.dpcs, before.dpcs),
        }
    }
}

/// One DMA routine of the strategy in force, per request, beside the
/// documented minimum of that strategy.
#[derive(Debug, Serialize)]
struct Floor {
    routine: &'static str,
    per_request: f64,
    /// The minimum: 1 per request, or 1 per mapped range (one range is one
    /// device command, so the measured device commands per request).
    floor: f64,
    /// `per_request` equals `floor` (to 0.001).
    at_floor: bool,
}

impl Floor {
    fn new(routine: &'static str, per_request: f64, floor: f64) -> Self {
        Self {
            routine,
            per_request,
            floor,
            at_floor: (per_request - floor).abs() < 0.0005,
        }
    }
}

/// The floor of each routine of `strategy` for requests that cost `p`.
fn floors(strategy: Option<DmaStrategyCode>, p: &PerRequest) -> Vec<Floor> {
    let ranges = p.device_commands;
    match strategy {
        Some(DmaStrategyCode::V3Packet) => vec![
            Floor::new("GetDmaTransferInfo", p.get_dma_transfer_info, 1.0),
            Floor::new("AllocateAdapterChannelEx", p.allocate_adapter_channel, 1.0),
            Floor::new("MapTransferEx", p.map_transfer, ranges),
            Floor::new("FlushAdapterBuffersEx", p.flush_adapter_buffers, ranges),
            Floor::new("FreeAdapterChannel", p.free_adapter_channel, 1.0),
        ],
        Some(DmaStrategyCode::V1Packet) => vec![
            Floor::new("KeFlushIoBuffers", p.flush_io_buffers, 1.0),
            Floor::new("AllocateAdapterChannel", p.allocate_adapter_channel, 1.0),
            Floor::new("MapTransfer", p.map_transfer, ranges),
            Floor::new("FlushAdapterBuffers", p.flush_adapter_buffers, ranges),
            Floor::new("FreeMapRegisters", p.free_map_registers, 1.0),
        ],
        Some(DmaStrategyCode::SgList) => vec![
            Floor::new(
                "CalculateScatterGatherList",
                p.calculate_scatter_gather_list,
                1.0,
            ),
            Floor::new(
                "BuildScatterGatherList + GetScatterGatherList",
                p.build_scatter_gather_list + p.get_scatter_gather_list,
                1.0,
            ),
            Floor::new("PutScatterGatherList", p.put_scatter_gather_list, 1.0),
        ],
        Some(DmaStrategyCode::CommonBuffer) => vec![Floor::new(
            "copies through the common buffer",
            p.common_buffer_copies,
            1.0,
        )],
        None => Vec::new(),
    }
}

/// Heap allocations per request, by whose code made them.
#[derive(Debug, Serialize)]
struct Allocations {
    /// In the driver's code: the engine and the glue of `src/`, between a
    /// request's dispatch and its completion (the simulator only).
    driver_code: f64,
    /// Everywhere else: the simulator's own bookkeeping and the tool's
    /// buffers (on a real device, the tool's only).
    elsewhere: f64,
    driver_code_total: u64,
    elsewhere_total: u64,
}

impl Allocations {
    fn of(counted: AllocationCounts, requests: u64) -> Self {
        let per = |n: u64| n as f64 / requests.max(1) as f64;
        Self {
            driver_code: per(counted.driver),
            elsewhere: per(counted.elsewhere),
            driver_code_total: counted.driver,
            elsewhere_total: counted.elsewhere,
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
    queue_depth: u32,
    /// The DMA strategy in force (`info`'s).
    #[serde(skip_serializing_if = "Option::is_none")]
    dma_strategy: Option<&'static str>,
    write: Direction,
    read: Direction,
    /// Both directions together: the device's view.
    total: Direction,
    /// Requests completed per second of wall-clock time, both directions.
    requests_per_wall_second: f64,
    device_limit_bytes_per_sec: f64,
    dma_calls_per_request: PerRequest,
    /// Each routine of the strategy in force against its floor.
    dma_call_floors: Vec<Floor>,
    device_commands_per_request: f64,
    /// 1 when a request can be one range: the adapter has two map
    /// registers or more (for the ≤ 4096 bytes of a request), or the bytes
    /// go through the common buffer; `None` for a packet or list strategy
    /// with one map register, where the floor is one command per page.
    #[serde(skip_serializing_if = "Option::is_none")]
    device_commands_floor: Option<f64>,
    /// `None` when the allocator does not count (a library build).
    #[serde(skip_serializing_if = "Option::is_none")]
    allocations_per_request: Option<Allocations>,
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

/// Which way a request moves bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Write,
    Read,
}

/// A request of the bench in flight.
struct Pending {
    request: InFlight,
    kind: Kind,
    iteration: u32,
}

/// Run `bench`.
pub fn run(device: &mut Device, args: &BenchArgs, output: &Output) -> Result<Outcome> {
    if args.iterations == 0 {
        return Err(Error::Usage("--iterations must be at least 1".into()));
    }
    if args.queue_depth == 0 || args.queue_depth > MAX_QUEUE_DEPTH {
        return Err(Error::Usage(format!(
            "--queue-depth {} is out of range: keep 1 to {MAX_QUEUE_DEPTH} requests in flight",
            args.queue_depth
        )));
    }
    let info = device.info()?;
    let window = info.dma_window;
    let len = args.len.unwrap_or(window);
    device.check_range(0, len as usize)?;
    let strategy = DmaStrategyCode::from_code(info.dma_strategy);
    let before = device.stats()?;

    // The sequence is write 1, read 1, write 2, read 2...: each read
    // returns the bytes of the write before it (the driver starts requests
    // in the order they came), so every byte written is checked, while up
    // to `queue_depth` requests wait behind the one the device runs.
    let progress = Progress::new(output, 2 * u64::from(args.iterations), "bench");
    let depth = args.queue_depth as usize;
    let total_requests = 2 * u64::from(args.iterations);
    let (mut write, mut read) = (Timing::default(), Timing::default());
    let (mut bytes_verified, mut mismatched_bytes) = (0u64, 0u64);
    let mut first_failure = None;
    let mut expected: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut queue: VecDeque<Pending> = VecDeque::with_capacity(depth);
    let mut next = 0u64;
    let allocations_before = alloc_count::counts();
    let mut lap = Lap::start(device);
    loop {
        while queue.len() < depth && next < total_requests {
            let iteration = u32::try_from(next / 2 + 1).unwrap_or(u32::MAX);
            let pending = if next % 2 == 0 {
                let data = random_bytes(len as usize, 0xBE7C + u64::from(iteration));
                let request = device.submit_dma_write(0, &data)?;
                expected.insert(iteration, data);
                Pending {
                    request,
                    kind: Kind::Write,
                    iteration,
                }
            } else {
                Pending {
                    request: device.submit_dma_read(0, len as usize)?,
                    kind: Kind::Read,
                    iteration,
                }
            };
            queue.push_back(pending);
            next += 1;
        }
        let Some(pending) = queue.pop_front() else {
            break;
        };
        let back = device.complete(pending.request)?;
        let (wall_seconds, virtual_ns) = lap.next(device);
        match pending.kind {
            Kind::Write => write.add(wall_seconds, virtual_ns),
            Kind::Read => {
                read.add(wall_seconds, virtual_ns);
                let data = expected.remove(&pending.iteration).unwrap_or_default();
                let comparison = Comparison::of(&data, &back, 0);
                bytes_verified += comparison.compared;
                mismatched_bytes += comparison.mismatched;
                if !comparison.ok() {
                    first_failure.get_or_insert(Failure {
                        iteration: pending.iteration,
                        comparison,
                    });
                }
            }
        }
        progress.step();
    }
    let allocations_after = alloc_count::counts();
    progress.finish();

    let after = device.stats()?;
    let calls = PerRequest::between(&before, &after);
    let total = write.plus(&read);
    let report = Report {
        command: "bench",
        ok: first_failure.is_none(),
        len,
        iterations: args.iterations,
        queue_depth: args.queue_depth,
        dma_strategy: strategy.map(DmaStrategyCode::name),
        write: write.direction(args.iterations, len),
        read: read.direction(args.iterations, len),
        total: total.direction(2 * args.iterations, len),
        requests_per_wall_second: if total.wall_seconds > 0.0 {
            total_requests as f64 / total.wall_seconds
        } else {
            0.0
        },
        device_limit_bytes_per_sec: DEVICE_LIMIT_BYTES_PER_SEC,
        dma_call_floors: floors(strategy, &calls),
        device_commands_per_request: calls.device_commands,
        device_commands_floor: (info.map_registers >= 2
            || len <= 1
            || strategy == Some(DmaStrategyCode::CommonBuffer))
        .then_some(1.0),
        dma_calls_per_request: calls,
        allocations_per_request: allocations_before
            .zip(allocations_after)
            .map(|(b, a)| Allocations::of(b.until(a), total_requests)),
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

/// The time since the last completion (or the start), on both clocks:
/// each completion is charged the time since the one before it, so the
/// charges add up to the whole run at any queue depth (at depth 1, each
/// request's own time).
struct Lap {
    wall: Instant,
    virtual_clock: Option<VirtualClock>,
}

impl Lap {
    fn start(device: &Device) -> Self {
        Self {
            wall: Instant::now(),
            virtual_clock: device.virtual_clock(),
        }
    }

    /// Seconds of wall clock and virtual nanoseconds since the last lap.
    fn next(&mut self, device: &Device) -> (f64, Option<u64>) {
        let now = Instant::now();
        let wall = now.duration_since(self.wall).as_secs_f64();
        self.wall = now;
        let clock = device.virtual_clock();
        let spent = match (self.virtual_clock, clock) {
            (Some(start), Some(end)) => Some(end.now_ns.saturating_sub(start.now_ns)),
            _ => None,
        };
        self.virtual_clock = clock;
        (wall, spent)
    }
}

/// The time requests of one direction were charged, summed.
#[derive(Default)]
struct Timing {
    wall_seconds: f64,
    virtual_ns: Option<u64>,
}

impl Timing {
    /// Charge one completion.
    fn add(&mut self, wall_seconds: f64, virtual_ns: Option<u64>) {
        self.wall_seconds += wall_seconds;
        if let Some(spent) = virtual_ns {
            self.virtual_ns = Some(self.virtual_ns.unwrap_or(0) + spent);
        }
    }

    /// Both together.
    fn plus(&self, other: &Timing) -> Timing {
        Timing {
            wall_seconds: self.wall_seconds + other.wall_seconds,
            virtual_ns: match (self.virtual_ns, other.virtual_ns) {
                (Some(a), Some(b)) => Some(a + b),
                (a, b) => a.or(b),
            },
        }
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
    out.push_str(&direction_line("total", &report.total));
    out.push_str(&format!(
        "  queue depth {}, {:.0} requests/s of wall clock\n",
        report.queue_depth, report.requests_per_wall_second
    ));
    if !report.dma_call_floors.is_empty() {
        let floors: Vec<String> = report
            .dma_call_floors
            .iter()
            .map(|f| {
                format!(
                    "{} {:.3} (floor {:.2}{})",
                    f.routine,
                    f.per_request,
                    f.floor,
                    if f.at_floor { "" } else { ", above" }
                )
            })
            .collect();
        out.push_str(&format!(
            "  {} against its floor: {}\n",
            report.dma_strategy.unwrap_or("the strategy"),
            floors.join(", ")
        ));
    }
    out.push_str(&format!(
        "  device commands per request {:.3} (floor {})\n",
        report.device_commands_per_request,
        report
            .device_commands_floor
            .map_or("one per page".to_owned(), |f| format!("{f:.0}"))
    ));
    if let Some(a) = &report.allocations_per_request {
        out.push_str(&format!(
            "  heap allocations per request: {:.2} in driver code, {:.2} elsewhere \
             (simulator and tool)\n",
            a.driver_code, a.elsewhere
        ));
    }
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
