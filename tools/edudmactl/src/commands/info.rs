//! `info`: the device and its DMA adapter.

use edudma_core::ioctl::{
    AllocationPolicyCode, CONTRACT_VERSION, DeviceInfo, DmaStrategyCode, InterruptKind,
};
use serde::Serialize;

use super::Outcome;
use crate::backend::BackendDescription;
use crate::device::Device;
use crate::error::Result;
use crate::output::Output;

/// `DeviceInfo`, decoded for people and JSON.
#[derive(Debug, Serialize)]
pub struct InfoView {
    /// Contract version the driver speaks.
    pub contract_version: u32,
    /// Contract version this tool speaks.
    pub tool_contract_version: u32,
    /// Driver version, `major.minor.patch`.
    pub driver_version: String,
    /// The edu identification register.
    pub device_id: String,
    /// DMA operations interface version (3 for `DEVICE_DESCRIPTION_VERSION3`).
    pub dma_interface_version: u32,
    /// Map registers granted.
    pub map_registers: u32,
    /// DMA alignment requirement.
    pub dma_alignment: u32,
    /// DMA address width asked for.
    pub dma_address_width: u32,
    /// Whether the adapter does scatter/gather.
    pub scatter_gather: bool,
    /// `none`, `line-based`, `message-signaled` or `unknown(N)`.
    pub interrupt: String,
    /// The device's buffer size.
    pub device_buffer_size: u32,
    /// The part of it the driver uses.
    pub dma_window: u32,
    /// `sync-then-async`, `async-only` or `unknown(N)`.
    pub allocation_policy: String,
    /// The DMA strategy in force: `v3-packet`, `v1-packet` or `unknown(N)`.
    pub dma_strategy: String,
    /// The strategy the driver was configured with.
    pub requested_dma_strategy: String,
    /// The platform had no DMA version 3 and the driver fell back.
    pub dma_v3_fallback: bool,
}

fn strategy_name(code: u32) -> String {
    DmaStrategyCode::from_code(code).map_or_else(|| format!("unknown({code})"), |s| s.name().into())
}

impl InfoView {
    /// Decode a `DeviceInfo`.
    pub fn new(info: &DeviceInfo) -> Self {
        let v = info.driver_version;
        Self {
            contract_version: info.contract_version,
            tool_contract_version: CONTRACT_VERSION,
            driver_version: format!("{}.{}.{}", v >> 16, (v >> 8) & 0xFF, v & 0xFF),
            device_id: format!("0x{:08X}", info.device_id),
            dma_interface_version: info.dma_interface_version,
            map_registers: info.map_registers,
            dma_alignment: info.dma_alignment,
            dma_address_width: info.dma_address_width,
            scatter_gather: info.scatter_gather != 0,
            interrupt: match InterruptKind::from_code(info.interrupt_kind) {
                Some(InterruptKind::None) => "none".into(),
                Some(InterruptKind::LineBased) => "line-based".into(),
                Some(InterruptKind::MessageSignaled) => "message-signaled".into(),
                None => format!("unknown({})", info.interrupt_kind),
            },
            device_buffer_size: info.device_buffer_size,
            dma_window: info.dma_window,
            allocation_policy: match info.allocation_policy {
                c if c == AllocationPolicyCode::SyncThenAsync as u32 => "sync-then-async".into(),
                c if c == AllocationPolicyCode::AsyncOnly as u32 => "async-only".into(),
                c => format!("unknown({c})"),
            },
            dma_strategy: strategy_name(info.dma_strategy),
            requested_dma_strategy: strategy_name(info.requested_dma_strategy),
            // Every strategy but v1-packet needs DMA version 3: a strategy in
            // force other than the one asked for is always that fallback.
            dma_v3_fallback: info.dma_strategy != info.requested_dma_strategy,
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    command: &'static str,
    ok: bool,
    backend: &'a BackendDescription,
    device: &'a InfoView,
}

/// Run `info`.
pub fn run(device: &mut Device, output: &Output) -> Result<Outcome> {
    let info = device.info()?;
    let view = InfoView::new(&info);
    let backend = device.describe();
    let report = Report {
        command: "info",
        ok: true,
        backend: &backend,
        device: &view,
    };
    output.emit(&report, || {
        let mut text = String::new();
        let mut line = |name: &str, value: String| {
            text.push_str(&format!("{name:<22}{value}\n"));
        };
        line("backend", backend.to_string());
        let contract = if view.contract_version == CONTRACT_VERSION {
            format!("{}", view.contract_version)
        } else {
            format!(
                "{} (this tool speaks {}: install matching versions)",
                view.contract_version, CONTRACT_VERSION
            )
        };
        line("contract version", contract);
        line("driver version", view.driver_version.clone());
        line("device id", view.device_id.clone());
        let v3 = if view.dma_interface_version == 3 {
            " (DEVICE_DESCRIPTION_VERSION3)"
        } else {
            ""
        };
        line(
            "DMA interface",
            format!("version {}{v3}", view.dma_interface_version),
        );
        line("map registers", view.map_registers.to_string());
        line("DMA alignment", view.dma_alignment.to_string());
        line(
            "DMA address width",
            format!("{} bits", view.dma_address_width),
        );
        line(
            "scatter/gather",
            if view.scatter_gather { "yes" } else { "no" }.into(),
        );
        line("interrupt", view.interrupt.clone());
        line(
            "device buffer",
            format!("{} bytes", view.device_buffer_size),
        );
        line("DMA window", format!("{} bytes", view.dma_window));
        line("channel allocation", view.allocation_policy.clone());
        let strategy = if view.dma_v3_fallback {
            format!(
                "{} (fallback: {} asked for, the HAL has no DMA version 3)",
                view.dma_strategy, view.requested_dma_strategy
            )
        } else {
            view.dma_strategy.clone()
        };
        line("DMA strategy", strategy);
        text
    })?;
    Ok(Outcome::Success)
}
