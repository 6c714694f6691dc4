//! The real objects the driver is handed, built as the I/O manager, the PnP
//! manager and the memory manager build them, and their mapping to the
//! model's handles (IRP and MDL ids, DPC ids, adapter ids).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use edudma_core::NtStatus;
use edudma_core::ioctl::{METHOD_BUFFERED, method_of};
use wdk_sys::{
    _INTERFACE_TYPE, CM_FULL_RESOURCE_DESCRIPTOR, CM_PARTIAL_RESOURCE_DESCRIPTOR, CM_RESOURCE_LIST,
    DEVICE_OBJECT, DRIVER_EXTENSION, DRIVER_OBJECT, FILE_OBJECT, IO_STACK_LOCATION, IO_TYPE_IRP,
    IRP, IRP_MJ_DEVICE_CONTROL, IRP_MJ_READ, IRP_MJ_WRITE, IRP_MN_START_DEVICE, MDL,
    MDL_PAGES_LOCKED, PDRIVER_STARTIO, PDRIVER_UNLOAD, SL_PENDING_RETURNED, UNICODE_STRING,
};

use crate::hal::{AdapterId, MapRegisterBase};
use crate::io::{CancelRoutine, FileId, IrpId, Major};
use crate::kernel::{Crash, Sys};
use crate::sched::DpcId;

use super::Native;

/// Stack locations of every IRP: our FDO over the PCI PDO.
pub const STACK_SIZE: usize = 2;
/// Physical address of BAR0 in the start's resource list.
pub const BAR0_PHYSICAL: i64 = 0xFEA0_0000;
/// BAR0's length (edu: 1 MiB).
pub const BAR0_LENGTH: u32 = 1 << 20;
/// `CmResourceTypeMemory`, `CmResourceTypeInterrupt` (wdm.h).
const CM_MEMORY: u8 = 3;
const CM_INTERRUPT: u8 = 2;
const CM_DEVICE_SPECIFIC: u8 = 5;
/// Bytes of device-specific data in the start's resource list: not a
/// multiple of 4, so the descriptors after it are not even 4-aligned and a
/// walk that does not step over the data reads garbage.
const DEVICE_SPECIFIC_BYTES: usize = 6;
/// Where MDLs pretend the user buffers live (page-aligned, user space).
const USER_VA_BASE: u64 = 0x0000_7FF0_0000_0000;

/// An IRP as Windows allocates it: the IRP, then its stack locations.
#[repr(C)]
pub struct IrpBlock {
    /// The IRP.
    pub irp: IRP,
    /// `StackCount` locations; the top driver's is the last.
    pub stack: [IO_STACK_LOCATION; STACK_SIZE],
}

/// Who an IRP belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrpKind {
    /// A user request of the model.
    User(IrpId),
    /// An IRP the PnP or I/O manager sends and waits for (PnP, cleanup).
    System,
    /// `IoBuildSynchronousFsdRequest`: completion sets its event and status block.
    Built,
}

/// One IRP handed to the driver.
pub struct IrpRec {
    /// The kind.
    pub kind: IrpKind,
    /// `(address, length)` of the system buffer, if any.
    pub system_buffer: Option<(usize, usize)>,
    /// MDL allocations `(address, words)`.
    pub mdls: Vec<(usize, usize)>,
    /// The resource list of a start (address, words).
    pub resources: Option<(usize, usize)>,
    /// The status it was completed with.
    pub completed: Option<i32>,
    /// `IoStatus.Information` at completion.
    pub information: usize,
    /// `IoForwardIrpSynchronously` is waiting for this IRP to come back.
    pub forwarding: bool,
    /// A power IRP `PoRequestPowerIrp` built: its completion callback.
    pub power_request: Option<PowerRequest>,
}

/// What `PoRequestPowerIrp` was given, for the callback at completion.
#[derive(Clone, Copy, Debug)]
pub struct PowerRequest {
    /// `PREQUEST_POWER_COMPLETE`, 0 for none.
    pub callback: usize,
    /// Its `Context`.
    pub context: usize,
    /// The `DeviceObject` the request named.
    pub target: usize,
    /// `IRP_MN_SET_POWER` or `IRP_MN_QUERY_POWER`.
    pub minor: u8,
    /// The requested `DEVICE_POWER_STATE`.
    pub state: i32,
}

/// The interrupt connection: the routine and its context.
#[derive(Clone, Copy, Debug)]
pub struct Isr {
    /// `KMESSAGE_SERVICE_ROUTINE` (true) or `KSERVICE_ROUTINE`.
    pub message: bool,
    /// The routine's address.
    pub routine: usize,
    /// `ServiceContext`.
    pub context: usize,
    /// The interrupt object handed to it.
    pub object: usize,
}

/// The function pointer at `addr`, an address taken with `f as usize` from
/// a function pointer of type `F` (which exposed its provenance): rebuilt
/// from that exposed provenance, so that it stays a valid function pointer
/// (under Miri too), unlike a transmute of the bare integer.
///
/// # Safety
/// `addr` must have come from a function pointer of type `F`.
pub unsafe fn fn_at<F: Copy>(addr: usize) -> F {
    const { assert!(size_of::<F>() == size_of::<*const ()>()) };
    let ptr = std::ptr::with_exposed_provenance::<()>(addr);
    // SAFETY: same size; a pointer to the function with its provenance.
    unsafe { std::mem::transmute_copy::<*const (), F>(&ptr) }
}

impl Isr {
    /// Call the routine.
    ///
    /// # Safety
    /// The routine must be the driver's, connected with this context.
    pub unsafe fn call(&self) -> bool {
        let object = self.object as wdk_sys::PKINTERRUPT;
        let context = self.context as wdk_sys::PVOID;
        if self.message {
            // SAFETY: stored from a KMESSAGE_SERVICE_ROUTINE.
            let f: unsafe extern "C" fn(wdk_sys::PKINTERRUPT, wdk_sys::PVOID, u32) -> u8 =
                unsafe { fn_at(self.routine) };
            // SAFETY: the routine with its context; message 0 (edu has one).
            super::code::as_driver(|| unsafe { f(object, context, 0) != 0 })
        } else {
            // SAFETY: stored from a KSERVICE_ROUTINE.
            let f: unsafe extern "C" fn(wdk_sys::PKINTERRUPT, wdk_sys::PVOID) -> u8 =
                unsafe { fn_at(self.routine) };
            // SAFETY: as above.
            super::code::as_driver(|| unsafe { f(object, context) != 0 })
        }
    }
}

/// An execution routine waiting for its grant.
#[derive(Clone, Copy, Debug)]
pub struct ExecRoutine {
    /// The adapter.
    pub adapter: AdapterId,
    /// `DRIVER_CONTROL` address.
    pub routine: usize,
    /// Its context.
    pub context: usize,
    /// The device object.
    pub device: usize,
    /// A list routine (`DRIVER_LIST_CONTROL`) of `Get`/`BuildScatterGatherList`:
    /// the driver's buffer for the list, or `None` for one the HAL allocates.
    pub list: Option<Option<(usize, u32)>>,
}

impl ExecRoutine {
    /// Call a list routine with the list built for its grant.
    ///
    /// # Safety
    /// The routine must be the driver's `DRIVER_LIST_CONTROL`, with its
    /// own context; `list` a list laid out in memory that stays valid until
    /// the driver puts it.
    pub unsafe fn call_list(&self, list: *mut wdk_sys::SCATTER_GATHER_LIST) {
        // SAFETY: stored from a DRIVER_LIST_CONTROL.
        let f: unsafe extern "C" fn(
            *mut DEVICE_OBJECT,
            *mut IRP,
            *mut wdk_sys::SCATTER_GATHER_LIST,
            wdk_sys::PVOID,
        ) = unsafe { fn_at(self.routine) };
        let device = self.device as *mut DEVICE_OBJECT;
        let irp = if device.is_null() {
            std::ptr::null_mut()
        } else {
            // SAFETY: the driver's live device object; `Irp` is its CurrentIrp.
            unsafe { (*device).CurrentIrp }
        };
        // SAFETY: the driver's routine with the list and its context.
        super::code::as_driver(|| unsafe { f(device, irp, list, self.context as wdk_sys::PVOID) })
    }

    /// Call the routine with the grant.
    ///
    /// # Safety
    /// The routine must be the driver's, with its own context.
    pub unsafe fn call(&self, base: MapRegisterBase) -> wdk_sys::IO_ALLOCATION_ACTION {
        // SAFETY: stored from a DRIVER_CONTROL.
        let f: unsafe extern "C" fn(
            *mut DEVICE_OBJECT,
            *mut IRP,
            wdk_sys::PVOID,
            wdk_sys::PVOID,
        ) -> wdk_sys::IO_ALLOCATION_ACTION = unsafe { fn_at(self.routine) };
        let device = self.device as *mut DEVICE_OBJECT;
        // SAFETY: `Irp` is DeviceObject->CurrentIrp, as for AllocateAdapterChannel.
        let irp = if device.is_null() {
            std::ptr::null_mut()
        } else {
            // SAFETY: the driver's live device object.
            unsafe { (*device).CurrentIrp }
        };
        let _driver = super::code::Mark::driver();
        // SAFETY: the driver's routine with the base and its context.
        unsafe {
            f(
                device,
                irp,
                super::dma::base_ptr(base),
                self.context as wdk_sys::PVOID,
            )
        }
    }
}

/// A UTF-16 string the kernel hands out, with its buffer.
pub struct OwnedUnicode(pub UNICODE_STRING, #[allow(dead_code)] pub Vec<u16>);

/// A `UNICODE_STRING` over a copy of `s`.
pub fn unicode_static(s: &str) -> OwnedUnicode {
    let buf: Vec<u16> = s.encode_utf16().collect();
    let mut owned = OwnedUnicode(
        UNICODE_STRING {
            Length: (buf.len() * 2) as u16,
            MaximumLength: (buf.len() * 2) as u16,
            Buffer: std::ptr::null_mut(),
        },
        buf,
    );
    owned.0.Buffer = owned.1.as_mut_ptr();
    owned
}

/// Read a `UNICODE_STRING`.
///
/// # Safety
/// `s` must be null or a valid string.
pub unsafe fn read_unicode(s: *const UNICODE_STRING) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: forwarded.
    unsafe {
        let n = usize::from((*s).Length) / 2;
        if (*s).Buffer.is_null() || n == 0 {
            return String::new();
        }
        String::from_utf16_lossy(std::slice::from_raw_parts((*s).Buffer, n))
    }
}

/// Every native object of one machine, by address.
pub struct Objects {
    /// The driver object (a `DriverBlock`).
    pub driver: usize,
    /// The PCI PDO.
    pub pdo: usize,
    /// The FDO the driver created (null until `IoCreateDevice`).
    pub fdo: usize,
    /// `(address, bytes)` of the FDO allocation.
    pub fdo_alloc: Option<(usize, usize)>,
    /// Every IRP handed out.
    pub irps: BTreeMap<usize, IrpRec>,
    /// User IRPs by model id.
    pub user: BTreeMap<IrpId, usize>,
    /// Native MDLs → model MDLs.
    pub mdls: BTreeMap<usize, crate::mdl::MdlId>,
    /// Initialized DPC objects.
    pub dpcs: BTreeMap<usize, DpcId>,
    next_dpc: u32,
    /// Adapters handed out.
    pub adapters: BTreeMap<usize, AdapterId>,
    /// Adapters given back with `PutDmaAdapter`.
    pub adapters_put: BTreeSet<usize>,
    /// Adapter allocations, freed with the machine.
    pub adapter_blocks: Vec<usize>,
    /// Execution routines waiting for their grant.
    pub routines: Vec<ExecRoutine>,
    /// Scatter/gather lists handed to list routines: address → (adapter,
    /// grant, words of a list the HAL allocated).
    pub sg_lists: BTreeMap<usize, (AdapterId, MapRegisterBase, Option<usize>)>,
    /// Common buffers: the driver's virtual address → (adapter, logical
    /// address, length, words of the driver's view).
    pub common_buffers: BTreeMap<usize, (AdapterId, u64, u32, usize)>,
    /// MDLs mapped into system space (`MmMapLockedPagesSpecifyCache`): MDL
    /// address → (model MDL, the view's address, its words, bytes).
    pub mdl_views: BTreeMap<usize, (crate::mdl::MdlId, usize, usize, u32)>,
    /// The interrupt connection.
    pub interrupt: Option<Isr>,
    /// `MmMapIoSpaceEx` mappings: address → (physical, bytes, backing).
    pub mappings: BTreeMap<usize, (i64, usize, Box<[u8]>)>,
    /// File objects by handle.
    pub files: BTreeMap<FileId, Box<FILE_OBJECT>>,
    /// Symbolic links created.
    pub links: BTreeSet<String>,
    /// Device interfaces registered → enabled.
    pub interfaces: BTreeMap<String, bool>,
    /// When an interface was last disabled: did the driver still hold its
    /// BAR0 mapping (resources not released yet)?
    pub interface_disabled_holding_bar0: Option<bool>,
    /// Strings the kernel allocated for the driver (`RtlFreeUnicodeString`).
    pub strings: BTreeMap<usize, Vec<u16>>,
    /// `Device Parameters` values.
    pub registry: BTreeMap<String, u32>,
    /// Registry keys open.
    pub open_keys: u32,
    /// References on the bus interface.
    pub bus_references: i32,
    /// References taken with `IoGetAttachedDeviceReference`.
    pub device_references: i32,
    /// The FDO was attached to the PDO.
    pub attached: bool,
    /// The FDO was deleted.
    pub fdo_deleted: bool,
    /// The name the FDO was created with (`IoCreateDevice`), if any.
    pub fdo_name: Option<String>,
    /// `FileObject->FileName` buffers of the file objects, kept alive here.
    file_names: BTreeMap<FileId, Vec<u16>>,
    /// The cancel spin lock's word.
    pub cancel_lock: Box<usize>,
    /// The interrupt object handed to the ISR.
    pub interrupt_object: Box<[u64; 16]>,
    /// The `IO_INTERRUPT_MESSAGE_INFO` a message-based connection returns
    /// (one message, whose `InterruptObject` is [`Self::interrupt_object`]).
    pub message_info: Box<wdk_sys::IO_INTERRUPT_MESSAGE_INFO>,
    /// The interrupt object's spin lock: the ISR runs holding it, and
    /// `IoDisconnectInterruptEx` takes it, so no ISR is mid-way when the
    /// connection goes.
    pub interrupt_lock: Box<usize>,
    /// Objects to free with the machine.
    owned: Vec<(usize, usize)>,
}

// SAFETY: addresses only; the objects are touched by the baton holder alone.
unsafe impl Send for Objects {}

#[repr(C)]
struct DriverBlock {
    object: DRIVER_OBJECT,
    extension: DRIVER_EXTENSION,
}

fn alloc_words(words: usize) -> usize {
    let b: Box<[u64]> = vec![0u64; words.max(1)].into_boxed_slice();
    Box::into_raw(b) as *mut u64 as usize
}

/// # Safety
/// `(addr, words)` must come from [`alloc_words`] and be freed once.
unsafe fn free_words(addr: usize, words: usize) {
    // SAFETY: forwarded.
    unsafe {
        drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
            addr as *mut u64,
            words.max(1),
        )));
    }
}

/// Words for a list the HAL allocates (`GetScatterGatherList`).
pub(crate) fn alloc_list(words: usize) -> usize {
    alloc_words(words)
}

/// Free a list from [`alloc_list`].
///
/// # Safety
/// `(addr, words)` must come from [`alloc_list`] and be freed once.
pub(crate) unsafe fn free_list(addr: usize, words: usize) {
    // SAFETY: forwarded.
    unsafe { free_words(addr, words) }
}

fn words_of<T>() -> usize {
    size_of::<T>().div_ceil(8)
}

impl Objects {
    /// The PDO exists from the start; the driver object is made at load.
    pub fn new(registry: &[(String, u32)]) -> Self {
        let pdo_words = words_of::<DEVICE_OBJECT>();
        let pdo = alloc_words(pdo_words);
        // SAFETY: zeroed, 8-aligned memory of the size of a DEVICE_OBJECT.
        unsafe {
            let d = pdo as *mut DEVICE_OBJECT;
            (*d).Type = 3; // IO_TYPE_DEVICE
            (*d).Size = size_of::<DEVICE_OBJECT>() as u16;
            (*d).StackSize = 1;
        }
        Self {
            driver: 0,
            pdo,
            fdo: 0,
            fdo_alloc: None,
            irps: BTreeMap::new(),
            user: BTreeMap::new(),
            mdls: BTreeMap::new(),
            dpcs: BTreeMap::new(),
            next_dpc: 1,
            adapters: BTreeMap::new(),
            adapters_put: BTreeSet::new(),
            adapter_blocks: Vec::new(),
            routines: Vec::new(),
            sg_lists: BTreeMap::new(),
            common_buffers: BTreeMap::new(),
            mdl_views: BTreeMap::new(),
            interrupt: None,
            mappings: BTreeMap::new(),
            files: BTreeMap::new(),
            links: BTreeSet::new(),
            interfaces: BTreeMap::new(),
            interface_disabled_holding_bar0: None,
            fdo_name: None,
            file_names: BTreeMap::new(),
            strings: BTreeMap::new(),
            registry: registry.iter().cloned().collect(),
            open_keys: 0,
            bus_references: 0,
            device_references: 0,
            attached: false,
            fdo_deleted: false,
            cancel_lock: Box::new(0),
            interrupt_object: Box::new([0; 16]),
            // SAFETY: all-zero is a valid value of this C struct.
            message_info: Box::new(unsafe { std::mem::zeroed() }),
            interrupt_lock: Box::new(0),
            owned: vec![(pdo, pdo_words)],
        }
    }

    /// A driver object with its extension, as the I/O manager makes it.
    pub fn create_driver_object(&mut self) -> *mut DRIVER_OBJECT {
        let words = words_of::<DriverBlock>();
        let addr = alloc_words(words);
        self.owned.push((addr, words));
        let block = addr as *mut DriverBlock;
        // SAFETY: zeroed memory of the block's size.
        unsafe {
            (*block).object.Type = 4; // IO_TYPE_DRIVER
            (*block).object.Size = size_of::<DRIVER_OBJECT>() as i16;
            (*block).object.DriverExtension = &raw mut (*block).extension;
            (*block).extension.DriverObject = &raw mut (*block).object;
        }
        self.driver = addr;
        addr as *mut DRIVER_OBJECT
    }

    /// The driver's StartIo.
    pub fn driver_start_io(&self) -> PDRIVER_STARTIO {
        if self.driver == 0 {
            return None;
        }
        // SAFETY: our driver object.
        unsafe { (*(self.driver as *const DRIVER_OBJECT)).DriverStartIo }
    }

    /// The driver's unload routine.
    pub fn driver_unload(&self) -> PDRIVER_UNLOAD {
        if self.driver == 0 {
            return None;
        }
        // SAFETY: our driver object.
        unsafe { (*(self.driver as *const DRIVER_OBJECT)).DriverUnload }
    }

    /// The native IRP of a user request.
    pub fn user_irp(&self, id: IrpId) -> Option<usize> {
        self.user.get(&id).copied()
    }

    /// The DPC object registered as `id`.
    pub fn dpc_of(&self, id: DpcId) -> Option<usize> {
        self.dpcs.iter().find(|(_, d)| **d == id).map(|(a, _)| *a)
    }

    /// Register an initialized DPC object: DpcForIsr when it is the FDO's.
    pub fn register_dpc(&mut self, addr: usize) {
        if self.dpcs.contains_key(&addr) {
            return;
        }
        let id = if self.fdo != 0 && addr == self.fdo + std::mem::offset_of!(DEVICE_OBJECT, Dpc) {
            DpcId::ForIsr
        } else {
            let n = self.next_dpc;
            self.next_dpc += 1;
            DpcId::Driver(n)
        };
        self.dpcs.insert(addr, id);
    }

    /// `KeSetTimerEx` with a DPC: that DPC is the timer's.
    pub fn set_timer_dpc(&mut self, addr: usize) {
        self.dpcs.retain(|_, d| *d != DpcId::Timer);
        self.dpcs.insert(addr, DpcId::Timer);
    }

    /// The execution routine waiting for `base` (any adapter: one is live).
    pub fn take_execution_routine(&mut self, _base: MapRegisterBase) -> Option<ExecRoutine> {
        if self.routines.is_empty() {
            None
        } else {
            Some(self.routines.remove(0))
        }
    }

    /// Free a user IRP the machine collected.
    pub fn free_user_irp(&mut self, id: IrpId) {
        if let Some(addr) = self.user.remove(&id) {
            self.free_irp(addr);
        }
    }

    /// Free an IRP block and everything hanging off it.
    pub fn free_irp(&mut self, addr: usize) {
        let Some(rec) = self.irps.remove(&addr) else {
            return;
        };
        for (m, words) in rec.mdls {
            self.mdls.remove(&m);
            // SAFETY: allocated by `alloc_words` for this IRP.
            unsafe { free_words(m, words) };
        }
        if let Some((b, len)) = rec.system_buffer {
            // SAFETY: allocated as a boxed slice of `len` bytes for this IRP.
            unsafe {
                drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                    b as *mut u8,
                    len,
                )))
            };
        }
        if let Some((r, words)) = rec.resources {
            // SAFETY: as above.
            unsafe { free_words(r, words) };
        }
        // SAFETY: allocated by `new_irp_block`.
        unsafe { free_words(addr, words_of::<IrpBlock>()) };
    }

    fn file_object(&mut self, file: FileId) -> *mut FILE_OBJECT {
        let f = self.files.entry(file).or_insert_with(|| {
            // SAFETY: all-zero is a valid FILE_OBJECT.
            let mut f: Box<FILE_OBJECT> = Box::new(unsafe { std::mem::zeroed() });
            f.Type = 5; // IO_TYPE_FILE
            f.Size = size_of::<FILE_OBJECT>() as i16;
            f
        });
        &raw mut **f
    }

    /// Give the file object of `file` the name `name` (what `CreateFile`
    /// opened below the device: `""` for the device itself).
    pub fn set_file_name(&mut self, file: FileId, name: &str) {
        let f = self.file_object(file);
        let buffer = self.file_names.entry(file).or_default();
        *buffer = name.encode_utf16().collect();
        let bytes = (buffer.len() * 2) as u16;
        // SAFETY: a live file object of ours; the buffer lives in
        // `file_names` as long as the machine.
        unsafe {
            (*f).FileName.Length = bytes;
            (*f).FileName.MaximumLength = bytes;
            (*f).FileName.Buffer = if bytes == 0 {
                std::ptr::null_mut()
            } else {
                buffer.as_mut_ptr()
            };
        }
    }

    /// What should have been given back after unload.
    pub fn leaks(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.fdo != 0 && !self.fdo_deleted {
            out.push("the device object was not deleted".into());
        }
        if self.attached {
            out.push("the device was not detached from the PDO".into());
        }
        for l in &self.links {
            out.push(format!("symbolic link {l} was not deleted"));
        }
        if !self.strings.is_empty() {
            out.push(format!("{} kernel string(s) not freed", self.strings.len()));
        }
        if !self.mappings.is_empty() {
            out.push("BAR0 is still mapped".into());
        }
        if self.interrupt.is_some() {
            out.push("the interrupt is still connected".into());
        }
        if self.open_keys != 0 {
            out.push(format!("{} registry key(s) still open", self.open_keys));
        }
        if self.bus_references != 0 {
            out.push("the bus interface reference was not dropped".into());
        }
        if self.device_references != 0 {
            out.push("a device object reference was not dropped".into());
        }
        if self.interfaces.values().any(|on| *on) {
            out.push("the device interface is still enabled".into());
        }
        for a in self.adapters.keys() {
            if !self.adapters_put.contains(a) {
                out.push("a DMA adapter was not put".into());
            }
        }
        out
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        let irps: Vec<usize> = self.irps.keys().copied().collect();
        for a in irps {
            self.free_irp(a);
        }
        for (a, words) in self.owned.drain(..) {
            // SAFETY: allocated by `alloc_words`, freed once here.
            unsafe { free_words(a, words) };
        }
        for (a, (_, _, _, words)) in std::mem::take(&mut self.common_buffers) {
            // SAFETY: allocated by `alloc_list`, freed once here.
            unsafe { free_words(a, words) };
        }
        for (_, (_, a, words, _)) in std::mem::take(&mut self.mdl_views) {
            // SAFETY: as above.
            unsafe { free_words(a, words) };
        }
        for (a, (_, _, words)) in std::mem::take(&mut self.sg_lists) {
            if let Some(words) = words {
                // SAFETY: allocated by `alloc_list`, freed once here.
                unsafe { free_words(a, words) };
            }
        }
        for a in self.adapter_blocks.drain(..) {
            super::dma::free_adapter_block(a);
        }
        if let Some((a, bytes)) = self.fdo_alloc.take() {
            // SAFETY: allocated by `alloc_words` in IoCreateDevice.
            unsafe { free_words(a, bytes.div_ceil(8)) };
        }
    }
}

/// A fresh IRP block as `IoAllocateIrp(STACK_SIZE)` leaves it: no location
/// current yet (`CurrentLocation = StackCount + 1`).
fn new_irp_block() -> usize {
    let addr = alloc_words(words_of::<IrpBlock>());
    let b = addr as *mut IrpBlock;
    // SAFETY: zeroed memory the size of the block.
    unsafe {
        (*b).irp.Type = IO_TYPE_IRP as i16;
        (*b).irp.Size = size_of::<IrpBlock>() as u16;
        (*b).irp.StackCount = STACK_SIZE as i8;
        (*b).irp.CurrentLocation = STACK_SIZE as i8 + 1;
        let past_end = (&raw mut (*b).stack)
            .cast::<IO_STACK_LOCATION>()
            .add(STACK_SIZE);
        (*b).irp
            .Tail
            .Overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation = past_end;
    }
    addr
}

/// The location the first `IoCallDriver` will make current.
pub(crate) fn first_location(addr: usize) -> *mut IO_STACK_LOCATION {
    // SAFETY: a block from `new_irp_block`.
    unsafe { (&raw mut (*(addr as *mut IrpBlock)).stack[STACK_SIZE - 1]).cast() }
}

/// The native IRP of a model request, built on first sight (dispatch).
pub fn build_user_irp(native: &Arc<Native>, sys: &Sys, id: IrpId) -> Option<usize> {
    if let Some(a) = native.objects().user_irp(id) {
        return Some(a);
    }
    let model = sys.with(|k| k.irps.get(id).cloned())?;
    let chain: Vec<crate::mdl::Mdl> = match model.mdl {
        Some(head) => sys.with(|k| {
            k.mdls
                .chain(head)
                .iter()
                .filter_map(|m| k.mdls.get(*m).cloned())
                .collect()
        }),
        None => Vec::new(),
    };
    let chain_ids: Vec<crate::mdl::MdlId> = match model.mdl {
        Some(head) => sys.with(|k| k.mdls.chain(head)),
        None => Vec::new(),
    };
    let mut o = native.objects();
    let addr = new_irp_block();
    let file = o.file_object(model.file);
    let mut rec = IrpRec {
        kind: IrpKind::User(id),
        system_buffer: None,
        mdls: Vec::new(),
        resources: None,
        completed: None,
        information: 0,
        forwarding: false,
        power_request: None,
    };
    // MDLs: header, then the PFN array, chained through Next.
    let mut previous: *mut MDL = std::ptr::null_mut();
    let mut head: *mut MDL = std::ptr::null_mut();
    for (m, mid) in chain.iter().zip(&chain_ids) {
        let words = words_of::<MDL>() + m.pages.len();
        let a = alloc_words(words);
        let mdl = a as *mut MDL;
        // SAFETY: zeroed memory for the header and its PFNs.
        unsafe {
            (*mdl).Size = (size_of::<MDL>() + 8 * m.pages.len()) as i16;
            (*mdl).MdlFlags = if m.locked { MDL_PAGES_LOCKED as i16 } else { 0 };
            (*mdl).StartVa = (USER_VA_BASE + u64::from(mid.0) * 0x10_0000) as wdk_sys::PVOID;
            (*mdl).ByteCount = m.byte_count;
            (*mdl).ByteOffset = m.byte_offset;
            let pfns = mdl.add(1).cast::<u64>();
            for (i, p) in m.pages.iter().enumerate() {
                *pfns.add(i) = *p;
            }
            if previous.is_null() {
                head = mdl;
            } else {
                (*previous).Next = mdl;
            }
        }
        previous = mdl;
        rec.mdls.push((a, words));
        o.mdls.insert(a, *mid);
    }
    // The system buffer: buffered input/output, or the input of a direct IOCTL.
    if !model.system_buffer.is_empty() {
        let b: Box<[u8]> = model.system_buffer.clone().into_boxed_slice();
        let len = b.len();
        rec.system_buffer = Some((Box::into_raw(b) as *mut u8 as usize, len));
    }
    let stack = first_location(addr);
    // SAFETY: the block and location just allocated.
    unsafe {
        let irp = addr as *mut IRP;
        (*irp).MdlAddress = head;
        (*irp).RequestorMode = 1; // UserMode
        (*irp).Tail.Overlay.OriginalFileObject = file;
        if let Some((b, _)) = rec.system_buffer {
            (*irp).AssociatedIrp.SystemBuffer = b as wdk_sys::PVOID;
        }
        (*stack).FileObject = file;
        match model.major {
            Major::Read {
                byte_offset,
                length,
            } => {
                (*stack).MajorFunction = IRP_MJ_READ as u8;
                (*stack).Parameters.Read.Length = length;
                (*stack).Parameters.Read.ByteOffset.QuadPart = byte_offset;
            }
            Major::Write {
                byte_offset,
                length,
            } => {
                (*stack).MajorFunction = IRP_MJ_WRITE as u8;
                (*stack).Parameters.Write.Length = length;
                (*stack).Parameters.Write.ByteOffset.QuadPart = byte_offset;
            }
            Major::DeviceControl {
                code,
                input_length,
                output_length,
            } => {
                (*stack).MajorFunction = IRP_MJ_DEVICE_CONTROL as u8;
                let p = &mut (*stack).Parameters.DeviceIoControl;
                p.IoControlCode = code;
                p.InputBufferLength = input_length;
                p.OutputBufferLength = output_length;
                // METHOD_NEITHER: the caller's own addresses, unprobed.
                p.Type3InputBuffer = model.type3_input_buffer as wdk_sys::PVOID;
                (*irp).UserBuffer = model.user_buffer as wdk_sys::PVOID;
            }
        }
    }
    o.irps.insert(addr, rec);
    o.user.insert(id, addr);
    Some(addr)
}

/// An IRP the PnP manager (or the I/O manager, for cleanup) sends: status
/// `STATUS_NOT_SUPPORTED` to start with, as every PnP IRP; a start carries
/// the translated resources.
pub fn build_system_irp(
    native: &Arc<Native>,
    _sys: &Sys,
    major: u8,
    minor: u8,
    file: Option<FileId>,
) -> usize {
    let mut o = native.objects();
    let addr = new_irp_block();
    let stack = first_location(addr);
    let mut rec = IrpRec {
        kind: IrpKind::System,
        system_buffer: None,
        mdls: Vec::new(),
        resources: None,
        completed: None,
        information: 0,
        forwarding: false,
        power_request: None,
    };
    let file = file.map(|f| o.file_object(f));
    // SAFETY: the block and location just allocated.
    unsafe {
        let irp = addr as *mut IRP;
        (*irp).IoStatus.__bindgen_anon_1.Status = if u32::from(major) == wdk_sys::IRP_MJ_PNP {
            NtStatus::NOT_SUPPORTED.0
        } else {
            0
        };
        (*stack).MajorFunction = major;
        (*stack).MinorFunction = minor;
        if let Some(f) = file {
            (*stack).FileObject = f;
        }
        if u32::from(major) == wdk_sys::IRP_MJ_PNP && u32::from(minor) == IRP_MN_START_DEVICE {
            let (list, words) = resource_list();
            rec.resources = Some((list as usize, words));
            (*stack).Parameters.StartDevice.AllocatedResources = list;
            (*stack).Parameters.StartDevice.AllocatedResourcesTranslated = list;
        }
    }
    o.irps.insert(addr, rec);
    addr
}

/// One full descriptor (PCI): device-specific data (whose bytes follow its
/// descriptor, Learn `CM_PARTIAL_RESOURCE_DESCRIPTOR`), the interrupt, then
/// BAR0 — last, so that only a walk that steps over the data finds it.
fn resource_list() -> (*mut CM_RESOURCE_LIST, usize) {
    let descriptor = size_of::<CM_PARTIAL_RESOURCE_DESCRIPTOR>();
    let bytes = size_of::<CM_RESOURCE_LIST>() + descriptor * 2 + DEVICE_SPECIFIC_BYTES;
    let words = bytes.div_ceil(8);
    let list = alloc_words(words) as *mut CM_RESOURCE_LIST;
    // SAFETY: zeroed memory large enough for the list, three descriptors and
    // the data; the structures are pack(4) and the ones after the data are
    // unaligned: every write goes through a raw pointer, unaligned.
    unsafe {
        (&raw mut (*list).Count).write_unaligned(1);
        let full = (&raw mut (*list).List).cast::<CM_FULL_RESOURCE_DESCRIPTOR>();
        (&raw mut (*full).InterfaceType).write_unaligned(_INTERFACE_TYPE::PCIBus);
        let partial = &raw mut (*full).PartialResourceList;
        (&raw mut (*partial).Version).write_unaligned(1);
        (&raw mut (*partial).Revision).write_unaligned(1);
        (&raw mut (*partial).Count).write_unaligned(3);
        let s = (&raw mut (*partial).PartialDescriptors).cast::<CM_PARTIAL_RESOURCE_DESCRIPTOR>();
        (&raw mut (*s).Type).write_unaligned(CM_DEVICE_SPECIFIC);
        (&raw mut (*s).u.DeviceSpecificData.DataSize).write_unaligned(DEVICE_SPECIFIC_BYTES as u32);
        let data = s.add(1).cast::<u8>();
        // Data that reads like a memory descriptor to a walk that does not
        // step over it.
        data.write_bytes(CM_MEMORY, DEVICE_SPECIFIC_BYTES);
        let i = data
            .add(DEVICE_SPECIFIC_BYTES)
            .cast::<CM_PARTIAL_RESOURCE_DESCRIPTOR>();
        (&raw mut (*i).Type).write_unaligned(CM_INTERRUPT);
        let d = i.add(1);
        (&raw mut (*d).Type).write_unaligned(CM_MEMORY);
        (&raw mut (*d).u.Memory.Start.QuadPart).write_unaligned(BAR0_PHYSICAL);
        (&raw mut (*d).u.Memory.Length).write_unaligned(BAR0_LENGTH);
    }
    (list, words)
}

/// The status a system IRP was completed with; the IRP is freed.
pub fn take_system_result(native: &Arc<Native>, addr: usize) -> Option<NtStatus> {
    take_system_completion(native, addr).map(|(status, _)| status)
}

/// The status and `IoStatus.Information` a system IRP was completed with;
/// the IRP is freed.
pub fn take_system_completion(native: &Arc<Native>, addr: usize) -> Option<(NtStatus, usize)> {
    let mut o = native.objects();
    let done = o
        .irps
        .get(&addr)
        .and_then(|r| r.completed.map(|s| (NtStatus(s), r.information)));
    o.free_irp(addr);
    done
}

/// The IRP's model id, if it is a user request.
pub fn user_id(native: &Native, irp: *mut IRP) -> Option<IrpId> {
    match native.objects().irps.get(&(irp as usize)).map(|r| r.kind) {
        Some(IrpKind::User(id)) => Some(id),
        _ => None,
    }
}

/// `&Irp->Tail.Overlay.DeviceQueueEntry.DeviceListEntry` of the IRP block
/// at `addr`.
fn device_list_entry(addr: usize) -> *mut wdk_sys::LIST_ENTRY {
    let irp = addr as *mut IRP;
    // SAFETY: only the address of a field of a live IRP block is formed.
    unsafe {
        &raw mut (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_1
            .DeviceQueueEntry
            .DeviceListEntry
    }
}

/// The device queue as the driver may have left it: a driver that walks
/// `DeviceObject->DeviceQueue.DeviceListHead` under its lock (a cleanup
/// routine) may unlink entries; the model's queue follows. An entry the
/// model does not know is a corrupted queue.
fn pull_device_queue(fdo: usize, live: &[(IrpId, usize)], k: &mut crate::kernel::Kernel) {
    if fdo == 0 {
        return;
    }
    let d = fdo as *mut DEVICE_OBJECT;
    // SAFETY: our FDO; its queue's links were written by `push` (or are
    // null before the first push).
    unsafe {
        let head = &raw mut (*d).DeviceQueue.DeviceListHead;
        if (*head).Flink.is_null() {
            return;
        }
        let mut linked = Vec::new();
        let mut e = (*head).Flink;
        for _ in 0..=k.dq.queue.len() {
            if e == head {
                break;
            }
            match live.iter().find(|(_, a)| device_list_entry(*a) == e) {
                Some((id, _)) => linked.push(*id),
                None => {
                    k.faults.push(Crash::Hang(
                        "the device queue links an entry that is not a queued IRP".into(),
                    ));
                    return;
                }
            }
            e = (*e).Flink;
        }
        let kept: std::collections::VecDeque<IrpId> =
            k.dq.queue
                .iter()
                .copied()
                .filter(|id| linked.contains(id))
                .collect();
        k.dq.queue = kept;
    }
}

/// Back into driver code: the device queue's links, as the I/O manager
/// keeps them, in the model's order.
fn push_device_queue(fdo: usize, live: &[(IrpId, usize)], k: &crate::kernel::Kernel) {
    if fdo == 0 {
        return;
    }
    let d = fdo as *mut DEVICE_OBJECT;
    // SAFETY: our FDO and live IRP blocks; only the baton holder touches
    // the links.
    unsafe {
        let head = &raw mut (*d).DeviceQueue.DeviceListHead;
        let mut prev = head;
        for id in &k.dq.queue {
            if let Some((_, addr)) = live.iter().find(|(i, _)| i == id) {
                let e = device_list_entry(*addr);
                (*prev).Flink = e;
                (*e).Blink = prev;
                prev = e;
            }
        }
        (*prev).Flink = head;
        (*head).Blink = prev;
    }
}

/// Into the kernel: what driver code wrote into live user IRPs becomes
/// the model's (cancel routine, pending mark, driver context, the device
/// queue's links).
pub fn pull(native: &Native, sys: &Sys) {
    let (live, fdo) = {
        let o = native.objects();
        (live_irps(&o), o.fdo)
    };
    sys.with(|k| {
        pull_device_queue(fdo, &live, k);
        for &(id, addr) in &live {
            let Some(m) = k.irps.get_mut(id) else {
                continue;
            };
            if m.completed {
                continue;
            }
            let irp = addr as *mut IRP;
            // SAFETY: a live IRP block; only the baton holder touches it.
            unsafe {
                let routine = std::ptr::read_volatile(&raw const (*irp).CancelRoutine);
                m.cancel_routine = routine.map(|f| CancelRoutine(f as usize as u64));
                let top = first_location(addr);
                m.pending_marked = (*top).Control & SL_PENDING_RETURNED as u8 != 0;
                let ctx = (*irp)
                    .Tail
                    .Overlay
                    .__bindgen_anon_1
                    .__bindgen_anon_1
                    .DriverContext;
                for (i, v) in ctx.iter().enumerate() {
                    m.driver_context[i] = *v as u64;
                }
            }
        }
    });
    LIVE.set(live);
}

thread_local! {
    /// The live user IRPs of a [`pull`] or [`push`], kept for the next one
    /// on this thread: they run at every call between driver and kernel.
    static LIVE: Cell<Vec<(IrpId, usize)>> = const { Cell::new(Vec::new()) };
}

/// The live user IRPs, copied out so the objects' lock is not held while
/// the kernel is (give the vector back to [`LIVE`]).
fn live_irps(o: &Objects) -> Vec<(IrpId, usize)> {
    let mut live = LIVE.take();
    live.clear();
    live.extend(o.user.iter().map(|(i, a)| (*i, *a)));
    live
}

/// Back into driver code: what the kernel decided becomes the real IRPs'
/// (`Cancel`, `CancelRoutine`, the device queue, `CurrentIrp`).
pub fn push(native: &Native, sys: &Sys) {
    let o = native.objects();
    let live = live_irps(&o);
    let fdo = o.fdo;
    drop(o);
    sys.with(|k| {
        for (id, addr) in &live {
            let Some(m) = k.irps.get(*id) else { continue };
            if m.completed {
                continue;
            }
            let irp = *addr as *mut IRP;
            // SAFETY: a live IRP block; only the baton holder touches it.
            unsafe {
                (*irp).Cancel = u8::from(m.cancel);
                let routine: wdk_sys::PDRIVER_CANCEL =
                    m.cancel_routine.map(|r| fn_at(r.0 as usize));
                std::ptr::write_volatile(&raw mut (*irp).CancelRoutine, routine);
                let queued = k.dq.queue.contains(id);
                (*irp)
                    .Tail
                    .Overlay
                    .__bindgen_anon_1
                    .DeviceQueueEntry
                    .Inserted = u8::from(queued);
            }
        }
        if fdo != 0 {
            let current =
                k.dq.current
                    .and_then(|c| live.iter().find(|(i, _)| *i == c))
                    .map_or(0, |(_, a)| *a);
            // SAFETY: our FDO; CurrentIrp is the I/O manager's field.
            unsafe {
                let d = fdo as *mut DEVICE_OBJECT;
                (*d).CurrentIrp = current as *mut IRP;
                (*d).DeviceQueue.__bindgen_anon_1.Busy = u8::from(k.dq.busy);
            }
        }
        push_device_queue(fdo, &live, k);
    });
    LIVE.set(live);
}

/// Copy a user IRP's system buffer back into the model (at completion).
pub fn copy_back_system_buffer(native: &Native, sys: &Sys, irp: *mut IRP, id: IrpId) {
    let buffer = native
        .objects()
        .irps
        .get(&(irp as usize))
        .and_then(|r| r.system_buffer);
    let Some((b, len)) = buffer else { return };
    sys.with(|k| {
        let Some(m) = k.irps.get_mut(id) else { return };
        let buffered = matches!(m.major, Major::DeviceControl { code, .. } if method_of(code) == METHOD_BUFFERED);
        if !buffered {
            return;
        }
        // SAFETY: the buffer allocated for this IRP, `len` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(b as *const u8, len) };
        let n = len.min(m.system_buffer.len());
        m.system_buffer[..n].copy_from_slice(&bytes[..n]);
    });
}
