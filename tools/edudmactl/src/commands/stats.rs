//! `stats`: the driver's counters, and `--reset` to zero them.

use edudma_core::ioctl::Stats;
use serde::Serialize;
use serde_json::{Map, Value};

use super::Outcome;
use crate::cli::StatsArgs;
use crate::device::Device;
use crate::error::Result;
use crate::output::Output;

/// Every counter with its name, in the order of the `Stats` struct.
pub fn fields(stats: &Stats) -> [(&'static str, u64); 26] {
    [
        ("requests", stats.requests),
        ("completed", stats.completed),
        ("bytes_to_device", stats.bytes_to_device),
        ("bytes_from_device", stats.bytes_from_device),
        ("get_dma_transfer_info", stats.get_dma_transfer_info),
        ("allocate_adapter_channel", stats.allocate_adapter_channel),
        ("sync_allocation_fallbacks", stats.sync_allocation_fallbacks),
        ("cancel_adapter_channel", stats.cancel_adapter_channel),
        ("map_transfer", stats.map_transfer),
        ("partial_maps", stats.partial_maps),
        ("flush_adapter_buffers", stats.flush_adapter_buffers),
        ("free_adapter_channel", stats.free_adapter_channel),
        ("device_commands", stats.device_commands),
        ("interrupts", stats.interrupts),
        ("dpcs", stats.dpcs),
        ("cancels", stats.cancels),
        ("lost_interrupts", stats.lost_interrupts),
        ("timeouts", stats.timeouts),
        ("errors", stats.errors),
        ("flush_io_buffers", stats.flush_io_buffers),
        ("free_map_registers", stats.free_map_registers),
        (
            "calculate_scatter_gather_list",
            stats.calculate_scatter_gather_list,
        ),
        ("build_scatter_gather_list", stats.build_scatter_gather_list),
        ("get_scatter_gather_list", stats.get_scatter_gather_list),
        ("put_scatter_gather_list", stats.put_scatter_gather_list),
        ("common_buffer_copies", stats.common_buffer_copies),
    ]
}

/// The counters as a JSON object.
pub fn to_json(stats: &Stats) -> Value {
    let map: Map<String, Value> = fields(stats)
        .into_iter()
        .map(|(name, value)| (name.to_owned(), Value::from(value)))
        .collect();
    Value::Object(map)
}

#[derive(Serialize)]
struct Report {
    command: &'static str,
    ok: bool,
    stats: Value,
    reset: bool,
}

/// Run `stats`.
pub fn run(device: &mut Device, args: &StatsArgs, output: &Output) -> Result<Outcome> {
    let stats = device.stats()?;
    if args.reset {
        device.reset_stats()?;
    }
    let report = Report {
        command: "stats",
        ok: true,
        stats: to_json(&stats),
        reset: args.reset,
    };
    output.emit(&report, || {
        let mut text = String::new();
        for (name, value) in fields(&stats) {
            text.push_str(&format!("{name:<28}{value}\n"));
        }
        if args.reset {
            text.push_str("(counters reset)\n");
        }
        text
    })?;
    Ok(Outcome::Success)
}
