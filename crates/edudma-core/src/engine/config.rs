//! What the engine is told at creation and at device start.

use crate::ioctl::{AllocationPolicyCode, DmaStrategyCode, InterruptKind};
use crate::regs::{DEVICE_BUFFER_SIZE, DMA_ADDRESS_BITS};

/// The default DMA window: 4095 bytes, because QEMU before 8.2.1 aborts the
/// VM on a DMA that reaches the device buffer's last byte.
pub const DEFAULT_WINDOW: u32 = DEVICE_BUFFER_SIZE - 1;

/// How `AllocateAdapterChannelEx` is used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AllocationPolicy {
    /// `DMA_SYNCHRONOUS_CALLBACK` where it cannot cost a second call from
    /// what the engine knows — the transfer needs no map registers and the
    /// adapter has not just refused one — and on `STATUS_INSUFFICIENT_RESOURCES`
    /// the asynchronous form; otherwise straight to the asynchronous form,
    /// whose grant may arrive later.
    #[default]
    SyncThenAsync,
    /// The asynchronous form only.
    AsyncOnly,
}

impl AllocationPolicy {
    /// The policy a `AsyncChannelAllocation` registry value selects: 1 is
    /// asynchronous only; missing or anything else, the default.
    pub fn from_registry(value: Option<u32>) -> Self {
        match value {
            Some(1) => AllocationPolicy::AsyncOnly,
            _ => AllocationPolicy::SyncThenAsync,
        }
    }

    /// The code reported in [`DeviceInfo`](crate::ioctl::DeviceInfo).
    pub fn code(self) -> AllocationPolicyCode {
        match self {
            AllocationPolicy::SyncThenAsync => AllocationPolicyCode::SyncThenAsync,
            AllocationPolicy::AsyncOnly => AllocationPolicyCode::AsyncOnly,
        }
    }
}

/// How a request's bytes reach the device: each strategy is the documented
/// calling pattern of its DMA routines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DmaStrategy {
    /// The ten version-3 steps: `GetDmaTransferInfo`,
    /// `AllocateAdapterChannelEx`, `MapTransferEx`, `FlushAdapterBuffersEx`,
    /// `FreeAdapterChannel`.
    V3Packet,
    /// The version-1 packet-based sequence: `KeFlushIoBuffers`,
    /// `AllocateAdapterChannel` and its `AdapterControl`, `MapTransfer` per
    /// split, `FlushAdapterBuffers` after each, `FreeMapRegisters`.
    V1Packet,
    /// Scatter/gather lists: `CalculateScatterGatherList`, then
    /// `BuildScatterGatherList` into the driver's buffer (or
    /// `GetScatterGatherList` when it is too small), one edu command per
    /// element, `PutScatterGatherList`.
    SgList,
    /// The default, by measurement (issue 14, `docs/performance.md`):
    /// one page of common buffer (`AllocateCommonBuffer` at start,
    /// `FreeCommonBuffer` at stop): each request's bytes copied through it
    /// (`MmGetSystemAddressForMdlSafe`), one edu command per request.
    #[default]
    CommonBuffer,
}

/// What the glue asks `IoGetDmaAdapter` for: one `DEVICE_DESCRIPTION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterRequest {
    /// `Version`.
    pub version: u32,
    /// `ScatterGather`.
    pub scatter_gather: bool,
    /// `Dma32BitAddresses` (versions 0–2: the only way to state a limit).
    pub dma32_bit_addresses: bool,
    /// `DmaAddressWidth` (version 3 only; 0 otherwise).
    pub dma_address_width: u32,
    /// The strategy an adapter obtained this way runs.
    pub strategy: DmaStrategy,
}

/// `DEVICE_DESCRIPTION_VERSION1` (wdm.h; held to Microsoft's metadata by
/// `crates/wdk-layout-check`).
pub const DEVICE_DESCRIPTION_VERSION1: u32 = 1;
/// `DEVICE_DESCRIPTION_VERSION2` (wdm.h).
pub const DEVICE_DESCRIPTION_VERSION2: u32 = 2;
/// `DEVICE_DESCRIPTION_VERSION3` (wdm.h).
pub const DEVICE_DESCRIPTION_VERSION3: u32 = 3;

/// `DEVICE_DESCRIPTION_VERSION3`: the 28-bit width tells the HAL what to
/// bounce; scatter/gather, so each page is mapped where it is.
const VERSION3_REQUEST: AdapterRequest = AdapterRequest {
    version: DEVICE_DESCRIPTION_VERSION3,
    scatter_gather: true,
    dma32_bit_addresses: false,
    dma_address_width: DMA_ADDRESS_BITS,
    strategy: DmaStrategy::V3Packet,
};

/// Versions 2 and 1 cannot state a 28-bit width (only `Dma32BitAddresses`):
/// without scatter/gather, `MapTransfer` gives one logically contiguous
/// range through the map registers, and the engine still checks every
/// address against the device's reach before it programs it.
const fn version1_request(version: u32) -> AdapterRequest {
    AdapterRequest {
        version,
        scatter_gather: false,
        dma32_bit_addresses: true,
        dma_address_width: 0,
        strategy: DmaStrategy::V1Packet,
    }
}

const V3_THEN_FALLBACK: [AdapterRequest; 3] = [
    VERSION3_REQUEST,
    version1_request(DEVICE_DESCRIPTION_VERSION2),
    version1_request(DEVICE_DESCRIPTION_VERSION1),
];
/// The common buffer must be below the 28-bit width too: version 3, or
/// `v1-packet` without it.
const COMMON_BUFFER_THEN_FALLBACK: [AdapterRequest; 3] = [
    AdapterRequest {
        strategy: DmaStrategy::CommonBuffer,
        ..VERSION3_REQUEST
    },
    version1_request(DEVICE_DESCRIPTION_VERSION2),
    version1_request(DEVICE_DESCRIPTION_VERSION1),
];

/// Lists need the 28-bit width too: version 3, or `v1-packet` without it.
const SG_LIST_THEN_FALLBACK: [AdapterRequest; 3] = [
    AdapterRequest {
        strategy: DmaStrategy::SgList,
        ..VERSION3_REQUEST
    },
    version1_request(DEVICE_DESCRIPTION_VERSION2),
    version1_request(DEVICE_DESCRIPTION_VERSION1),
];
const V1_ONLY: [AdapterRequest; 2] = [
    version1_request(DEVICE_DESCRIPTION_VERSION2),
    version1_request(DEVICE_DESCRIPTION_VERSION1),
];

impl DmaStrategy {
    /// The strategy a `DmaStrategy` registry value selects: 0 is
    /// `v3-packet`, 1 `v1-packet`, 2 `sg-list`, 3 `common-buffer`; missing
    /// or anything else, the default ([`DmaStrategy::CommonBuffer`]).
    pub fn from_registry(value: Option<u32>) -> Self {
        match value {
            Some(0) => DmaStrategy::V3Packet,
            Some(1) => DmaStrategy::V1Packet,
            Some(2) => DmaStrategy::SgList,
            _ => DmaStrategy::default(),
        }
    }

    /// The code reported in [`DeviceInfo`](crate::ioctl::DeviceInfo).
    pub fn code(self) -> DmaStrategyCode {
        match self {
            DmaStrategy::V3Packet => DmaStrategyCode::V3Packet,
            DmaStrategy::V1Packet => DmaStrategyCode::V1Packet,
            DmaStrategy::SgList => DmaStrategyCode::SgList,
            DmaStrategy::CommonBuffer => DmaStrategyCode::CommonBuffer,
        }
    }

    /// The adapters to ask for, in order, until `IoGetDmaAdapter` returns
    /// one: Learn (FlushAdapterBuffersEx) says "If IoGetDmaAdapter returns
    /// NULL, the routine is not available on your platform", so a missing
    /// version 3 falls back to version 2, then 1, and `v1-packet`.
    pub fn adapter_requests(self) -> &'static [AdapterRequest] {
        match self {
            DmaStrategy::V3Packet => &V3_THEN_FALLBACK,
            DmaStrategy::V1Packet => &V1_ONLY,
            DmaStrategy::SgList => &SG_LIST_THEN_FALLBACK,
            DmaStrategy::CommonBuffer => &COMMON_BUFFER_THEN_FALLBACK,
        }
    }
}

/// Engine settings, fixed for the life of the device object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Bytes of the device buffer requests may use: [`DEFAULT_WINDOW`], or
    /// 4096 on a QEMU with the fixed range check. Clamped to 1..=4096.
    pub window: u32,
    /// How channels are allocated (`AllocateAdapterChannelEx` only:
    /// version 1 has no synchronous form).
    pub allocation: AllocationPolicy,
    /// The strategy asked for (the registry's `DmaStrategy`); the one in
    /// force is [`AdapterFacts::strategy`].
    pub strategy: DmaStrategy,
    /// Watchdog ticks without an interrupt after which the command register
    /// is read to detect a lost interrupt. The first tick can come at any
    /// moment after the command starts, so `n` ticks mean at least `n - 1`
    /// periods: 3 ticks of 100 ms leave the 100 ms edu DMA time a margin
    /// (2 raced real interrupts on QEMU).
    pub lost_interrupt_ticks: u32,
    /// Watchdog ticks after which a device command that is still running
    /// fails its request with `STATUS_IO_TIMEOUT`.
    pub timeout_ticks: u32,
    /// The device's reach in address bits, as the registry's
    /// `DmaAddressWidth` states it ([`dma_address_width_from_registry`]):
    /// the version-3 description's `DmaAddressWidth` and the limit every
    /// programmed address is checked against.
    pub dma_address_width: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            window: DEFAULT_WINDOW,
            allocation: AllocationPolicy::SyncThenAsync,
            strategy: DmaStrategy::default(),
            lost_interrupt_ticks: 3,
            timeout_ticks: 10,
            dma_address_width: DMA_ADDRESS_BITS,
        }
    }
}

impl EngineConfig {
    /// The window actually used: at least 1 byte, at most the device buffer.
    pub fn effective_window(&self) -> u32 {
        self.window.clamp(1, DEVICE_BUFFER_SIZE)
    }

    /// The device's reach in address bits: [`dma_address_width`](Self::dma_address_width)
    /// held to the rule of [`dma_address_width_from_registry`] (what
    /// [`AdapterFacts::dma_address_width`] is to be).
    pub fn device_reach(&self) -> u32 {
        dma_address_width_from_registry(Some(self.dma_address_width))
    }

    /// The adapters to ask for, in order ([`DmaStrategy::adapter_requests`]),
    /// each version-3 description stating this configuration's
    /// [`dma_address_width`](Self::dma_address_width).
    pub fn adapter_requests(&self) -> impl Iterator<Item = AdapterRequest> + use<> {
        let width = self.device_reach();
        self.strategy
            .adapter_requests()
            .iter()
            .map(move |request| AdapterRequest {
                dma_address_width: if request.version == DEVICE_DESCRIPTION_VERSION3 {
                    width
                } else {
                    request.dma_address_width
                },
                ..*request
            })
    }
}

/// The narrowest `DmaAddressWidth` the driver accepts: 24 bits (16 MiB), the
/// ISA-era floor every HAL keeps map registers below.
pub const MIN_DMA_ADDRESS_WIDTH: u32 = 24;

/// The device's reach a `DmaAddressWidth` registry value states: 24 to 28
/// for an edu device whose `dma_mask` property is narrower than QEMU's
/// default; missing or anything else, [`DMA_ADDRESS_BITS`].
///
/// Never wider than 28: the default edu device drives 28 bits, and a
/// description wider than the device would let the HAL hand it addresses
/// it silently masks. A device with a wider mask is served correctly by
/// the 28-bit description (the HAL bounces what lies above 256 MiB).
pub fn dma_address_width_from_registry(value: Option<u32>) -> u32 {
    match value {
        Some(bits) if (MIN_DMA_ADDRESS_WIDTH..=DMA_ADDRESS_BITS).contains(&bits) => bits,
        _ => DMA_ADDRESS_BITS,
    }
}

/// Facts about the adapter and interrupt the glue obtained at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterFacts {
    /// The `DEVICE_DESCRIPTION` version of the adapter obtained.
    pub dma_interface_version: u32,
    /// The strategy that adapter runs ([`AdapterRequest::strategy`]).
    pub strategy: DmaStrategy,
    /// `NumberOfMapRegisters` returned by `IoGetDmaAdapter`.
    pub map_registers: u32,
    /// The device's reach in address bits (28 for edu), whatever the
    /// description could state.
    pub dma_address_width: u32,
    /// Whether the device description asked for scatter/gather.
    pub scatter_gather: bool,
    /// The interrupt connected.
    pub interrupt_kind: InterruptKind,
    /// The common buffer the glue allocated at start (`common-buffer`).
    pub common_buffer: Option<crate::protocol::CommonBuffer>,
}

impl AdapterFacts {
    /// The first bus address the device cannot reach. The engine writes
    /// addresses as 32-bit register values, so never more than 2^32.
    pub fn address_limit(&self) -> u64 {
        1u64 << self.dma_address_width.clamp(1, 32)
    }
}

#[cfg(test)]
mod registry_tests {
    extern crate std;

    use super::{AllocationPolicy, DmaStrategy};

    #[test]
    fn dma_strategy_values() {
        assert_eq!(DmaStrategy::from_registry(Some(1)), DmaStrategy::V1Packet);
        assert_eq!(DmaStrategy::from_registry(Some(2)), DmaStrategy::SgList);
        assert_eq!(
            DmaStrategy::from_registry(Some(3)),
            DmaStrategy::CommonBuffer
        );
        assert_eq!(DmaStrategy::from_registry(Some(0)), DmaStrategy::V3Packet);
        for v in [None, Some(4), Some(u32::MAX)] {
            assert_eq!(DmaStrategy::from_registry(v), DmaStrategy::CommonBuffer);
        }
    }

    #[test]
    fn version3_falls_back_to_version1_packet() {
        let plan = DmaStrategy::V3Packet.adapter_requests();
        assert_eq!(
            plan.iter().map(|r| r.version).collect::<std::vec::Vec<_>>(),
            [3, 2, 1]
        );
        assert_eq!(plan[0].dma_address_width, 28);
        assert!(plan[0].scatter_gather);
        for r in &plan[1..] {
            assert_eq!(r.strategy, DmaStrategy::V1Packet);
            assert!(!r.scatter_gather && r.dma32_bit_addresses);
            assert_eq!(r.dma_address_width, 0);
        }
        assert!(
            DmaStrategy::V1Packet
                .adapter_requests()
                .iter()
                .all(|r| r.version < 3)
        );
    }

    #[test]
    fn dma_address_width_narrows_only() {
        use super::{DMA_ADDRESS_BITS, EngineConfig, dma_address_width_from_registry};
        for bits in 24..=28 {
            assert_eq!(dma_address_width_from_registry(Some(bits)), bits);
        }
        for value in [
            None,
            Some(0),
            Some(23),
            Some(29),
            Some(32),
            Some(64),
            Some(u32::MAX),
        ] {
            assert_eq!(dma_address_width_from_registry(value), DMA_ADDRESS_BITS);
        }
        for strategy in [
            DmaStrategy::V3Packet,
            DmaStrategy::V1Packet,
            DmaStrategy::SgList,
            DmaStrategy::CommonBuffer,
        ] {
            let config = EngineConfig {
                strategy,
                dma_address_width: 25,
                ..EngineConfig::default()
            };
            let requests: std::vec::Vec<_> = config.adapter_requests().collect();
            assert_eq!(requests.len(), strategy.adapter_requests().len());
            for (asked, planned) in requests.iter().zip(strategy.adapter_requests()) {
                let width = if planned.version == 3 { 25 } else { 0 };
                assert_eq!(asked.dma_address_width, width);
                assert_eq!(asked.strategy, planned.strategy);
            }
        }
        // An out-of-range width set in code is held to the same rule.
        let wide = EngineConfig {
            dma_address_width: 40,
            ..EngineConfig::default()
        };
        assert!(
            wide.adapter_requests()
                .all(|r| r.dma_address_width == 28 || r.version < 3)
        );
    }

    #[test]
    fn only_one_selects_asynchronous_allocation() {
        assert_eq!(
            AllocationPolicy::from_registry(Some(1)),
            AllocationPolicy::AsyncOnly
        );
        for v in [None, Some(0), Some(2), Some(u32::MAX)] {
            assert_eq!(
                AllocationPolicy::from_registry(v),
                AllocationPolicy::SyncThenAsync
            );
        }
    }
}
