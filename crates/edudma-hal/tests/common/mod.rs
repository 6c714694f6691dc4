//! The world the HAL model's tests run in: flat memory, one adapter, the
//! MDLs, the verifier.
#![allow(dead_code)] // each test file uses its part

use edudma_hal::hal::{
    AdapterId, AllocateResult, BouncePool, DeviceDescription, Hal, HalConfig, HalCtx,
    InterfaceType, IoAllocationAction, MapRegisterBase,
};
use edudma_hal::mdl::{Mdl, MdlId, MdlTable};
use edudma_hal::rng::SimRng;
use edudma_hal::{Irql, PAGE_SIZE, PhysMemory, Rule, Verifier, Violation};

/// 64 MiB of flat memory: the pool at 1 MiB, buffers anywhere above.
pub struct Flat(pub Vec<u8>);

impl PhysMemory for Flat {
    fn read(&self, addr: u64, buf: &mut [u8]) {
        let a = addr as usize;
        buf.copy_from_slice(&self.0[a..a + buf.len()]);
    }
    fn write(&mut self, addr: u64, data: &[u8]) {
        let a = addr as usize;
        self.0[a..a + data.len()].copy_from_slice(data);
    }
}

pub const POOL_FRAME: u64 = 0x100;

/// The HAL, its world, and one adapter.
pub struct World {
    pub hal: Hal,
    pub mem: Flat,
    pub mdls: MdlTable,
    pub verifier: Verifier,
    pub rng: SimRng,
    pub adapter: AdapterId,
    pub granted: u32,
}

/// A version-2 bus master without scatter/gather, as `v1-packet` asks for.
pub const VERSION2: DeviceDescription = DeviceDescription {
    version: 2,
    master: true,
    scatter_gather: false,
    dma32_bit_addresses: true,
    dma64_bit_addresses: false,
    interface_type: InterfaceType::Pci,
    maximum_length: 4096,
    dma_address_width: 0,
};

/// A version-3 28-bit bus master with scatter/gather (v3-packet, sg-list).
pub const VERSION3: DeviceDescription = DeviceDescription {
    version: 3,
    master: true,
    scatter_gather: true,
    dma32_bit_addresses: false,
    dma64_bit_addresses: false,
    interface_type: InterfaceType::Pci,
    maximum_length: 4096,
    dma_address_width: 28,
};

impl World {
    /// A version-2 adapter (see [`VERSION2`]).
    pub fn new(map_registers: u32) -> Self {
        Self::with(map_registers, &VERSION2)
    }

    /// An adapter made from `desc`.
    pub fn with(map_registers: u32, desc: &DeviceDescription) -> Self {
        let mut mem = Flat(vec![0; 64 << 20]);
        let pool = BouncePool {
            frames: (POOL_FRAME..POOL_FRAME + 8).collect(),
            guards: vec![POOL_FRAME + 8],
            common: vec![POOL_FRAME + 9, POOL_FRAME + 10],
        };
        let config = HalConfig {
            map_registers,
            inline_grant_percent: 100,
            contention_percent: 0,
            ..HalConfig::default()
        };
        let hal = Hal::new(config, pool, &mut mem);
        let mut world = Self {
            hal,
            mem,
            mdls: MdlTable::new(),
            verifier: Verifier::new(),
            rng: SimRng::new(1),
            adapter: AdapterId(u32::MAX),
            granted: 0,
        };
        let (adapter, granted) = world
            .call(Irql::Passive, |h, c| h.io_get_dma_adapter(c, desc))
            .expect("an adapter");
        world.adapter = adapter;
        world.granted = granted;
        world
    }

    pub fn call<T>(&mut self, irql: Irql, f: impl FnOnce(&mut Hal, &mut HalCtx<'_>) -> T) -> T {
        let mut ctx = HalCtx {
            mem: &mut self.mem,
            mdls: &self.mdls,
            verifier: &mut self.verifier,
            irql,
            rng: &mut self.rng,
            device_busy: None,
        };
        f(&mut self.hal, &mut ctx)
    }

    /// A locked buffer of `len` bytes at `byte_offset` into frames 0x2000.. (32 MiB).
    pub fn buffer(&mut self, byte_offset: u32, len: u32) -> MdlId {
        let pages = (u64::from(byte_offset) + u64::from(len)).div_ceil(PAGE_SIZE);
        self.mdls.insert(Mdl {
            pages: (0..pages).map(|i| 0x2000 + 2 * i).collect(),
            byte_offset,
            byte_count: len,
            locked: true,
            next: None,
            system_va_mapped: false,
        })
    }

    /// `AllocateAdapterChannel` granted inline, its `AdapterControl`
    /// returning `DeallocateObjectKeepRegisters`.
    pub fn allocate(&mut self, count: u32) -> MapRegisterBase {
        let id = self.adapter;
        let result = self.call(Irql::Dispatch, |h, c| {
            h.allocate_adapter_channel(c, id, count)
        });
        let Ok(AllocateResult::RunNow(base)) = result else {
            panic!("an inline grant, got {result:?}");
        };
        self.hal.routine_returned(
            &mut self.verifier,
            id,
            base,
            IoAllocationAction::DeallocateObjectKeepRegisters,
        );
        base
    }

    pub fn violations(&self) -> Vec<Rule> {
        self.verifier
            .violations()
            .iter()
            .map(Violation::rule)
            .collect()
    }
}
