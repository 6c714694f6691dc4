//! The I/O manager's data: IRPs with their buffers, and the device object
//! with its StartIo queue. The routines that act on them are DDIs of
//! [`crate::kernel::Sys`].

use std::collections::{BTreeMap, VecDeque};

use edudma_core::NtStatus;

use crate::mdl::MdlId;
use crate::sched::Nanos;

/// Handle of an IRP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IrpId(pub u64);

/// A cancel routine of the driver, as the I/O manager stores it in
/// `Irp->CancelRoutine`: the routine's address for a native driver, a
/// number of its own for a test driver of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CancelRoutine(pub u64);

/// A file object (`IO_STACK_LOCATION.FileObject`): the handle the IRP came on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId(pub u64);

/// `IRP_MJ_*` with its parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Major {
    /// `IRP_MJ_READ` (DO_DIRECT_IO): `Parameters.Read`.
    Read {
        /// `ByteOffset.QuadPart`.
        byte_offset: i64,
        /// `Length`.
        length: u32,
    },
    /// `IRP_MJ_WRITE` (DO_DIRECT_IO).
    Write {
        /// `ByteOffset.QuadPart`.
        byte_offset: i64,
        /// `Length`.
        length: u32,
    },
    /// `IRP_MJ_DEVICE_CONTROL`.
    DeviceControl {
        /// `IoControlCode`.
        code: u32,
        /// `InputBufferLength`.
        input_length: u32,
        /// `OutputBufferLength`.
        output_length: u32,
    },
}

/// One IRP.
#[derive(Clone, Debug)]
pub struct Irp {
    /// What it asks.
    pub major: Major,
    /// `AssociatedIrp.SystemBuffer` (input, then output of buffered codes).
    pub system_buffer: Vec<u8>,
    /// `MdlAddress`.
    pub mdl: Option<MdlId>,
    /// `Irp->UserBuffer`: the caller's output address as the I/O manager
    /// passes it for METHOD_NEITHER (0: NULL, or not set).
    pub user_buffer: u64,
    /// `Parameters.DeviceIoControl.Type3InputBuffer`: the caller's input
    /// address for METHOD_NEITHER (0: NULL, or not set).
    pub type3_input_buffer: u64,
    /// `IoStatus.Status` once completed.
    pub status: Option<NtStatus>,
    /// `IoStatus.Information`.
    pub information: usize,
    /// `IoMarkIrpPending` was called (`SL_PENDING_RETURNED`).
    pub pending_marked: bool,
    /// `Irp->Cancel`.
    pub cancel: bool,
    /// `Irp->CancelRoutine`.
    pub cancel_routine: Option<CancelRoutine>,
    /// `Tail.Overlay.DriverContext` (four pointer-sized words the driver owns
    /// while it owns the IRP).
    pub driver_context: [u64; 4],
    /// The file object it was sent on.
    pub file: FileId,
    /// `IoCompleteRequest` was called.
    pub completed: bool,
    /// What the dispatch routine returned.
    pub dispatch_returned: Option<NtStatus>,
    /// When it was cancelled.
    pub cancelled_at: Option<Nanos>,
    /// When it was completed.
    pub completed_at: Option<Nanos>,
    /// When it was sent.
    pub sent_at: Nanos,
}

impl Irp {
    /// A new IRP.
    pub fn new(major: Major, system_buffer: Vec<u8>, mdl: Option<MdlId>, now: Nanos) -> Self {
        Self {
            major,
            system_buffer,
            mdl,
            user_buffer: 0,
            type3_input_buffer: 0,
            status: None,
            information: 0,
            pending_marked: false,
            cancel: false,
            cancel_routine: None,
            driver_context: [0; 4],
            file: FileId::default(),
            completed: false,
            dispatch_returned: None,
            cancelled_at: None,
            completed_at: None,
            sent_at: now,
        }
    }
}

/// The device object's StartIo machinery (`DEVICE_OBJECT.DeviceQueue`,
/// `CurrentIrp`, `IoSetStartIoAttributes`).
#[derive(Clone, Debug, Default)]
pub struct DeviceQueue {
    /// `DeviceObject->CurrentIrp`.
    pub current: Option<IrpId>,
    /// The device queue is busy (an IRP is in StartIo or being processed).
    pub busy: bool,
    /// IRPs waiting for StartIo.
    pub queue: VecDeque<IrpId>,
    /// `DeferredStartIo`.
    pub deferred_start_io: bool,
    /// `NonCancelable`.
    pub non_cancelable: bool,
    /// StartIo nesting depth on the current stack.
    pub start_io_depth: u32,
    /// A StartIo call deferred until the running one returns.
    pub deferred: Option<IrpId>,
}

/// Every IRP of the machine.
#[derive(Clone, Debug, Default)]
pub struct IrpTable {
    irps: BTreeMap<u64, Irp>,
    next: u64,
    /// Hand out the lowest free id, as pool reuses a freed IRP's address
    /// (so a stale handle can name a new IRP).
    pub reuse_ids: bool,
}

impl IrpTable {
    /// Add an IRP.
    pub fn insert(&mut self, irp: Irp) -> IrpId {
        let id = if self.reuse_ids {
            (1..).find(|i| !self.irps.contains_key(i)).unwrap_or(1)
        } else {
            self.next += 1;
            self.next
        };
        self.irps.insert(id, irp);
        IrpId(id)
    }

    /// Look an IRP up.
    pub fn get(&self, id: IrpId) -> Option<&Irp> {
        self.irps.get(&id.0)
    }

    /// Look an IRP up for change.
    pub fn get_mut(&mut self, id: IrpId) -> Option<&mut Irp> {
        self.irps.get_mut(&id.0)
    }

    /// Forget an IRP (its sender collected it).
    pub fn remove(&mut self, id: IrpId) -> Option<Irp> {
        self.irps.remove(&id.0)
    }

    /// IRPs not completed yet.
    pub fn incomplete(&self) -> Vec<IrpId> {
        self.irps
            .iter()
            .filter(|(_, i)| !i.completed)
            .map(|(k, _)| IrpId(*k))
            .collect()
    }

    /// Every IRP id.
    pub fn ids(&self) -> Vec<IrpId> {
        self.irps.keys().map(|k| IrpId(*k)).collect()
    }
}
