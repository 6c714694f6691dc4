//! The device extension: everything one edu device needs, with the one
//! spin lock around the engine.

use core::cell::UnsafeCell;
use core::ffi::c_void;
use core::ops::{Deref, DerefMut};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use edudma_core::engine::{Completion, Engine};
use wdk_sys::ntddk::{KeAcquireSpinLockRaiseToDpc, KeReleaseSpinLock};
use wdk_sys::{
    BUS_INTERFACE_STANDARD, DEVICE_OBJECT, IO_REMOVE_LOCK, IRP, KDPC, KEVENT, KIRQL, KSPIN_LOCK,
    KTIMER, PVOID, UNICODE_STRING,
};

use edudma_core::grant::GrantSlot;

use crate::dma_ops::WinDma;
use crate::registers::Bar0;

/// The engine's handle of a request: the IRP and the StartIo sequence
/// number it got, so that a stale cancel cannot hit a reused IRP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReqId {
    /// The IRP.
    pub irp: *mut IRP,
    /// Its StartIo sequence number (kept in `DriverContext[0]`).
    pub seq: u32,
}

/// The engine as this driver instantiates it.
pub type DriverEngine = Engine<WinDma, ReqId>;

/// What lives under the engine lock.
pub struct Shared {
    /// The decisions.
    pub engine: DriverEngine,
    /// A completion decided below DISPATCH_LEVEL, waiting for the mailbox DPC
    /// (IoStartNextPacket needs DISPATCH_LEVEL). There is at most one: a new
    /// packet starts only after the previous one's `IoStartNextPacket`.
    pub mailbox: Option<Completion<ReqId>>,
    /// A cancel that arrived before the engine knew the request.
    pub pending_cancel: Option<ReqId>,
    /// The watchdog's one-shot timer is set (or its DPC is queued).
    pub watchdog_armed: bool,
}

/// PnP state of the device, in [`DeviceExtension::pnp`].
pub mod pnp_state {
    /// Added, never started (or start failed).
    pub const ADDED: u32 = 0;
    /// Started.
    pub const STARTED: u32 = 1;
    /// Stopped (resources released, may start again).
    pub const STOPPED: u32 = 2;
    /// Surprise-removed or removed: resources released for good.
    pub const GONE: u32 = 3;
}

/// How the interrupt is connected.
pub struct InterruptConnection {
    /// `ConnectionContext` output of `IoConnectInterruptEx` (the interrupt
    /// object or the message table).
    pub context: UnsafeCell<PVOID>,
    /// The `Version` to disconnect with; 0 when not connected.
    pub version: AtomicU32,
}

/// The device extension, placed in `DEVICE_OBJECT.DeviceExtension` by
/// AddDevice. It lives in nonpaged pool as long as the device object.
pub struct DeviceExtension {
    /// Our FDO.
    pub fdo: *mut DEVICE_OBJECT,
    /// The PCI bus driver's PDO.
    pub pdo: *mut DEVICE_OBJECT,
    /// The device we attached to.
    pub lower: *mut DEVICE_OBJECT,
    /// The PnP remove lock, held for every IRP worked on.
    pub remove_lock: UnsafeCell<IO_REMOVE_LOCK>,
    /// The engine lock.
    lock: UnsafeCell<KSPIN_LOCK>,
    /// Under `lock`.
    shared: UnsafeCell<Shared>,
    /// The mapped BAR0, null when unmapped (read by the ISR).
    pub bar0: AtomicPtr<u8>,
    /// Bytes mapped at `bar0`.
    pub bar0_length: AtomicU32,
    /// Interrupt bits the ISR acknowledged since the last DPC.
    pub irq_bits: AtomicU32,
    /// Interrupts the ISR claimed since the last DPC.
    pub irq_count: AtomicU32,
    /// The interrupt connection.
    pub interrupt: InterruptConnection,
    /// The PCI bus driver's `BUS_INTERFACE_STANDARD`, referenced from start
    /// to the release of the hardware (config space at DISPATCH_LEVEL: the
    /// engine takes the device off the bus through it).
    pub bus: UnsafeCell<BUS_INTERFACE_STANDARD>,
    /// Whether `bus` holds a reference to give back.
    pub bus_referenced: AtomicBool,
    /// Signalled when the engine puts the adapter (`PutDmaAdapter`): what a
    /// stop waits for before it frees anything the HAL may still use.
    pub adapter_put: UnsafeCell<KEVENT>,
    /// `IoInvalidateDeviceState` was called for the current start.
    pub failure_reported: AtomicBool,
    /// Signalled by every completion while a D3 IRP waits for the request
    /// in flight to end.
    pub power_drained: UnsafeCell<KEVENT>,
    /// A D3 IRP is waiting on `power_drained`.
    pub draining: AtomicBool,
    /// The device left D0: its registers do not decode, so the ISR (a
    /// shared line) must not touch them.
    pub device_off: AtomicBool,
    /// Where the execution routine leaves its grant (the core decides who
    /// hands it to the engine).
    pub grant: GrantSlot,
    /// Delivers a late grant (`channel_granted`) at DISPATCH_LEVEL.
    pub grant_dpc: UnsafeCell<KDPC>,
    /// Delivers a completion decided below DISPATCH_LEVEL.
    pub mailbox_dpc: UnsafeCell<KDPC>,
    /// The 100 ms watchdog.
    pub watchdog_timer: UnsafeCell<KTIMER>,
    /// Its DPC.
    pub watchdog_dpc: UnsafeCell<KDPC>,
    /// The DMA transfer context (`DMA_TRANSFER_CONTEXT_SIZE_V1` bytes,
    /// pointer-aligned, one per adapter since one request is in flight).
    pub dma_context: UnsafeCell<[usize; crate::dma_ops::CONTEXT_WORDS]>,
    /// The scatter/gather buffer `MapTransferEx` fills, allocated with the
    /// device (never per request).
    pub sg_buffer: UnsafeCell<[u64; crate::dma_ops::SG_BUFFER_WORDS]>,
    /// Device interface symbolic link name from `IoRegisterDeviceInterface`.
    pub interface_name: UnsafeCell<UNICODE_STRING>,
    /// See [`pnp_state`].
    pub pnp: AtomicU32,
    /// StartIo sequence numbers.
    pub next_seq: AtomicU32,
    /// The effective DMA window (validation in dispatch and StartIo).
    pub window: u32,
}

impl DeviceExtension {
    /// Build the extension in place at `slot` for `fdo`, not yet attached.
    /// It is ~5.5 KiB (the scatter/gather buffer alone is 4 KiB), which does
    /// not belong on AddDevice's kernel stack: the memory is zeroed — the
    /// documented "not yet initialized" state of each kernel object in it
    /// (each is initialized by its Ke*/Io* routine in AddDevice before use)
    /// and a valid value of every atomic, pointer, array and empty
    /// `UNICODE_STRING` — then only the fields that are not zero are written
    /// (the engine's state, a few hundred bytes, is the largest).
    ///
    /// # Safety
    /// `slot` must be the device extension IoCreateDevice allocated for
    /// `fdo`: `size_of::<DeviceExtension>()` writable, suitably aligned bytes
    /// nothing else uses yet.
    pub unsafe fn init_in_place<'a>(
        slot: *mut DeviceExtension,
        fdo: *mut DEVICE_OBJECT,
        pdo: *mut DEVICE_OBJECT,
        engine: DriverEngine,
    ) -> &'a mut DeviceExtension {
        let window = engine.window();
        // SAFETY: see above; every field not written below is valid zeroed
        // (raw pointers, atomics, integer arrays, KSPIN_LOCK 0 is what
        // KeInitializeSpinLock does, the kernel objects before their init).
        unsafe {
            slot.cast::<u8>()
                .write_bytes(0, size_of::<DeviceExtension>());
            (&raw mut (*slot).fdo).write(fdo);
            (&raw mut (*slot).pdo).write(pdo);
            (&raw mut (*slot).shared).write(UnsafeCell::new(Shared {
                engine,
                mailbox: None,
                pending_cancel: None,
                watchdog_armed: false,
            }));
            (&raw mut (*slot).grant).write(GrantSlot::new());
            (&raw mut (*slot).pnp).write(AtomicU32::new(pnp_state::ADDED));
            (&raw mut (*slot).next_seq).write(AtomicU32::new(1));
            (&raw mut (*slot).window).write(window);
            &mut *slot
        }
    }

    /// The extension of one of our device objects.
    ///
    /// # Safety
    /// `device` must be an FDO created by this driver's AddDevice and not
    /// yet deleted.
    pub unsafe fn from_device<'a>(device: *mut DEVICE_OBJECT) -> &'a DeviceExtension {
        // SAFETY: AddDevice wrote a DeviceExtension there; it lives as long
        // as the device object.
        unsafe { &*(*device).DeviceExtension.cast::<DeviceExtension>() }
    }

    /// `self` as the context pointer of DPCs, ISRs and the execution routine.
    pub fn as_context(&self) -> PVOID {
        ptr::from_ref(self).cast_mut().cast::<c_void>()
    }

    /// The registers for the ISR, which runs holding the interrupt object's
    /// lock: `IoDisconnectInterruptEx` takes that lock before BAR0 is
    /// unmapped, so the mapping read here outlives the ISR. Everyone else
    /// reads it under the engine lock ([`EngineGuard::regs`]).
    pub fn regs_in_isr(&self) -> Bar0 {
        Bar0::new(self.bar0.load(Ordering::Acquire))
    }

    /// The remove lock's address.
    pub fn remove_lock(&self) -> *mut IO_REMOVE_LOCK {
        self.remove_lock.get()
    }

    /// Take the engine lock (raises to DISPATCH_LEVEL). Never complete an IRP,
    /// call `IoStartNextPacket` or wait while holding the guard.
    pub fn lock(&self) -> EngineGuard<'_> {
        // SAFETY: the spin lock was initialized (zeroed, which is what
        // KeInitializeSpinLock does) and lives in the nonpaged extension;
        // callers are at IRQL <= DISPATCH_LEVEL.
        let irql = unsafe { KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        EngineGuard { ext: self, irql }
    }
}

/// The engine lock held.
pub struct EngineGuard<'a> {
    ext: &'a DeviceExtension,
    irql: KIRQL,
}

impl EngineGuard<'_> {
    /// The registers as they are under the lock: the mapping, or none once
    /// a stop cleared it. BAR0 is cleared under this lock and unmapped only
    /// after, so a pointer read here is never a stale mapping (a caller
    /// preempted before the lock across a stop and start reads the new one).
    pub fn regs(&self) -> Bar0 {
        Bar0::new(self.ext.bar0.load(Ordering::Acquire))
    }
}

impl Deref for EngineGuard<'_> {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        // SAFETY: the spin lock is held for the guard's life, so this is the
        // only access to `shared`.
        unsafe { &*self.ext.shared.get() }
    }
}

impl DerefMut for EngineGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shared {
        // SAFETY: as in `deref`; `&mut self` makes the borrow unique.
        unsafe { &mut *self.ext.shared.get() }
    }
}

impl Drop for EngineGuard<'_> {
    fn drop(&mut self) {
        // Every engine event goes through this guard: the watchdog is armed
        // exactly while the engine needs it, decided under the lock (its DPC
        // clears `watchdog_armed` under the same lock).
        let shared = self.deref_mut();
        if !shared.watchdog_armed && shared.engine.needs_watchdog() {
            shared.watchdog_armed = true;
            crate::isr::arm_watchdog(self.ext);
        }
        // SAFETY: acquired in `DeviceExtension::lock` with this IRQL.
        unsafe { KeReleaseSpinLock(self.ext.lock.get(), self.irql) }
    }
}
