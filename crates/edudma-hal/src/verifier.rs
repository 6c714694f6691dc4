//! Driver Verifier, strict: every rule this driver can break, each a named
//! [`Violation`] with its bug check 0xE6 subcode or its SDV / IRQL rule name.
//! The first violation is the bug check: it ends the run.

use std::fmt;

use crate::irql::Irql;

/// How a violation is identified by Windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Bug check 0xE6 `DRIVER_VERIFIER_DMA_VIOLATION`, parameter 1.
    Dma(u32),
    /// A Static Driver Verifier / DDI compliance rule (bug check 0xC4 family).
    Sdv(&'static str),
    /// An IRQL rule (bug check 0xA / 0xC4 IRQL checking).
    Irql(&'static str),
    /// A leak found when the driver is unloaded (0xC4 / 0xE6 at PutDmaAdapter time).
    Leak(&'static str),
    /// A check of the simulator's own, for misuse Driver Verifier's
    /// documented table has no subcode for: named, never a borrowed 0xE6 code.
    Own(&'static str),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Dma(code) => write!(f, "0xE6/0x{code:02X}"),
            Rule::Sdv(name) => write!(f, "SDV {name}"),
            Rule::Irql(name) => write!(f, "IRQL {name}"),
            Rule::Leak(name) => write!(f, "leak {name}"),
            Rule::Own(name) => write!(f, "edudma-sim {name}"),
        }
    }
}

/// One rule broken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// 0x03: `FreeCommonBuffer` of a buffer that is not allocated (freed
    /// twice, or never allocated).
    CommonBufferFreedTooOften,
    /// Our own (Learn: "Arguments must match those passed in an earlier call
    /// to AllocateCommonBuffer"): `FreeCommonBuffer` of an allocated buffer
    /// with another length, virtual address or cache setting.
    CommonBufferFreedWithOtherArguments,
    /// 0x07: `PutDmaAdapter` with common buffers allocated.
    AdapterPutWithCommonBuffers {
        /// Buffers outstanding.
        outstanding: usize,
    },
    /// 0x04: `FreeAdapterChannel` with no channel held (freed twice).
    AdapterChannelFreedTooOften,
    /// 0x05: `FreeMapRegisters` with no map registers held, or a wrong count.
    MapRegistersFreedTooOften {
        /// Registers the call said to free.
        count: u32,
        /// Registers held as registers-only.
        held: u32,
    },
    /// 0x06: `PutScatterGatherList` of a list that is not outstanding (put
    /// twice, or never given).
    ScatterGatherListFreedTooOften,
    /// 0x08: `PutDmaAdapter` with a channel allocated or requested.
    AdapterPutWithChannel,
    /// 0x0A: `PutDmaAdapter` with scatter/gather lists outstanding.
    AdapterPutWithScatterGatherLists {
        /// Lists outstanding.
        outstanding: usize,
    },
    /// Our own (Learn lists no subcode): `PutScatterGatherList` with the
    /// other direction than the list was asked for.
    ScatterGatherListPutWithOtherDirection,
    /// 0x09: `PutDmaAdapter` with map registers still allocated.
    AdapterPutWithMapRegisters {
        /// Registers outstanding.
        outstanding: u32,
    },
    /// 0x0B: a second `AllocateAdapterChannelEx` while one is held or pending.
    TooManyAdapterChannels,
    /// 0x0C: more map registers asked than `IoGetDmaAdapter` granted.
    TooManyMapRegisters {
        /// Registers asked.
        requested: u32,
        /// Registers granted at `IoGetDmaAdapter`.
        granted: u32,
    },
    /// 0x0D: a new map, an IRP completion or a channel free left a mapped
    /// range unflushed.
    AdapterBuffersNotFlushed,
    /// 0x0E: DMA on a buffer whose pages are not locked.
    UnlockedBuffer,
    /// 0x0F: bytes outside the mapped range of a bounce page changed: a
    /// write outside the DMA buffer.
    GuardBytesOverwritten {
        /// Bus address of the first changed guard byte.
        bus_address: u64,
    },
    /// 0x10: map registers (the channel) freed while a range is still mapped.
    MapRegistersFreedWhileMapped,
    /// 0x13: a DMA routine called above its maximum IRQL.
    DmaIrqlTooHigh {
        /// The routine.
        routine: &'static str,
        /// IRQL at the call.
        irql: Irql,
    },
    /// 0x14: a DMA routine called below the IRQL it requires.
    DmaIrqlTooLow {
        /// The routine.
        routine: &'static str,
        /// IRQL at the call.
        irql: Irql,
    },
    /// 0x15: more map registers asked than the HAL can ever give.
    MapRegistersAboveMaximum {
        /// Registers asked.
        requested: u32,
        /// The HAL's maximum.
        maximum: u32,
    },
    /// 0x16: `FlushAdapterBuffersEx` or `FlushAdapterBuffers` of a range
    /// that is not mapped (or with an offset or `CurrentVa`, length, MDL or
    /// direction other than the map's).
    FlushedUnmappedBuffer,
    /// 0x00, parameter 2 = 0x1: `FlushAdapterBuffers` of more bytes from a
    /// mapping's `CurrentVa` than its `MapTransfer` mapped.
    FlushedPastMapping {
        /// Bytes the map covered.
        mapped: u32,
        /// Bytes the flush asked for.
        flushed: u32,
    },
    /// 0x00, parameter 2 = 0x2: `MapTransfer` of a range that needs more map
    /// registers than the adapter channel holds (a bus master without
    /// scatter/gather maps all of `Length` or nothing).
    MapBeyondMapRegisters {
        /// Map registers the range needs.
        needed: u32,
        /// Map registers held.
        held: u32,
    },
    /// 0x18: a DMA routine called after `PutDmaAdapter`.
    AdapterUsedAfterRelease {
        /// The routine.
        routine: &'static str,
    },
    /// 0x1B: a range that is not inside the MDL chain.
    AddressNotInMdl {
        /// Offset asked.
        offset: u64,
        /// Length asked.
        length: u64,
        /// Bytes in the chain.
        chain_length: u64,
    },
    /// 0x1D: `MapTransferEx` of a range that is already mapped.
    RangeAlreadyMapped,
    /// 0x21: a zero-length transfer given to `GetDmaTransferInfo` or `MapTransferEx`.
    ZeroLengthMapping,
    /// 0x23: `FlushAdapterBuffersEx` while the device is still transferring
    /// into the range (neither completed nor cancelled).
    FlushedChannelNotCompleted,
    /// 0x24: the scatter/gather buffer cannot hold the mapping asked for.
    ScatterGatherBufferTooSmall {
        /// Bytes needed for one element.
        needed: u32,
        /// Bytes given.
        given: u32,
    },
    /// 0x25: `IoGetDmaAdapter` with a `DEVICE_DESCRIPTION` version it does not know.
    UnknownDeviceDescriptionVersion {
        /// The version given.
        version: u32,
    },
    /// Our own (no documented subcode): `AllocateAdapterChannelEx` without `InitializeDmaTransferContext`
    /// first (or with a context already in use).
    TransferContextNotInitialized,
    /// Our own (no documented subcode): `AllocateAdapterChannelEx` or
    /// `CancelAdapterChannel` given another device object than the PDO
    /// the adapter is for (Learn names the PDO).
    DmaDeviceObjectNotPdo {
        /// The routine.
        routine: &'static str,
    },
    /// Our own (no documented subcode): a map-register base that this adapter did not hand out, or
    /// used after its channel was freed.
    InvalidMapRegisterBase,
    /// SDV DoubleCompletion: an IRP completed twice.
    DoubleCompletion {
        /// The IRP.
        irp: u64,
    },
    /// SDV SpinLockSafe: `IoCompleteRequest` while holding a spin lock.
    CompletedUnderSpinLock {
        /// The lock held.
        lock: &'static str,
    },
    /// SDV SpinLockSafe: `IoStartNextPacket` while holding a spin lock.
    StartNextPacketUnderSpinLock {
        /// The lock held.
        lock: &'static str,
    },
    /// SDV MarkIrpPending: STATUS_PENDING returned without `IoMarkIrpPending`.
    PendingWithoutMark {
        /// The IRP.
        irp: u64,
    },
    /// SDV PendedCompletedRequest: marked pending but another status returned.
    MarkedPendingReturnedOther {
        /// The IRP.
        irp: u64,
    },
    /// SDV CompletePending: `IoCompleteRequest` with STATUS_PENDING.
    CompletedWithPending {
        /// The IRP.
        irp: u64,
    },
    /// SDV CancelRoutine: an IRP completed while its cancel routine is still set.
    CompletedWithCancelRoutine {
        /// The IRP.
        irp: u64,
    },
    /// SDV IrpProcessingComplete: the dispatch routine returned a status other
    /// than STATUS_PENDING without completing the IRP.
    ReturnedWithoutCompleting {
        /// The IRP.
        irp: u64,
    },
    /// SDV StartIoRecursion: StartIo entered again on the same stack
    /// without `IoSetStartIoAttributes(DeferredStartIo = TRUE)`.
    StartIoRecursion,
    /// SDV IrpCancelField / CancelRoutine: a cancelled IRP that was never completed.
    CancelledIrpNeverCompleted {
        /// The IRP.
        irp: u64,
    },
    /// SDV PnpRemove / RemoveLock: a request still incomplete when the
    /// device was removed.
    RequestIncompleteAtRemoval {
        /// The IRP.
        irp: u64,
    },
    /// SDV CancelSpinLock: a cancel routine returned without releasing the
    /// cancel spin lock, or it was released when not held.
    CancelSpinLockMisuse,
    /// SDV SpinLock: a routine returned holding a spin lock.
    SpinLockHeldAtReturn {
        /// The lock.
        lock: &'static str,
    },
    /// SDV SpinLock: a spin lock acquired twice on one CPU (a deadlock), or
    /// released when not held.
    SpinLockDeadlock {
        /// The lock.
        lock: &'static str,
    },
    /// An IRP used after it was completed (use after free).
    IrpUsedAfterCompletion {
        /// The IRP.
        irp: u64,
    },
    /// IRQL checking: a kernel routine called at the wrong IRQL.
    WrongIrql {
        /// The routine.
        routine: &'static str,
        /// IRQL at the call.
        irql: Irql,
    },
    /// `IoReleaseRemoveLockAndWait` before the remove IRP was passed down
    /// (Learn: after).
    RemoveLockWaitBeforeRemovePassedDown,
    /// Power: a BAR0 register accessed while the function does not decode
    /// it (after the driver let the device leave D0, or after a wake left it
    /// unconfigured).
    RegisterAccessWithoutDecode {
        /// The register.
        offset: u32,
    },
    /// Power: the device was sent to D3 while it still ran a DMA command.
    PoweredDownWithDmaInFlight,
    /// Power: the device left D0 before its driver called `PoSetPowerState`.
    PowerDownNotReported,
    /// Leak check: the adapter was not put when the driver was removed.
    AdapterLeaked,
    /// Leak check: a channel or map registers outstanding at the end of a run.
    ChannelLeaked,
    /// Leak check: an MDL the driver built was not freed.
    MdlLeaked {
        /// MDLs left.
        count: usize,
    },
}

impl Violation {
    /// The rule broken.
    pub fn rule(&self) -> Rule {
        use Violation::*;
        match self {
            AdapterChannelFreedTooOften => Rule::Dma(0x04),
            MapRegistersFreedTooOften { .. } => Rule::Dma(0x05),
            CommonBufferFreedTooOften => Rule::Dma(0x03),
            CommonBufferFreedWithOtherArguments => Rule::Own("FreeCommonBufferArguments"),
            AdapterPutWithCommonBuffers { .. } => Rule::Dma(0x07),
            ScatterGatherListFreedTooOften => Rule::Dma(0x06),
            AdapterPutWithChannel => Rule::Dma(0x08),
            AdapterPutWithScatterGatherLists { .. } => Rule::Dma(0x0A),
            ScatterGatherListPutWithOtherDirection => Rule::Own("PutScatterGatherListDirection"),
            AdapterPutWithMapRegisters { .. } => Rule::Dma(0x09),
            TooManyAdapterChannels => Rule::Dma(0x0B),
            TooManyMapRegisters { .. } => Rule::Dma(0x0C),
            AdapterBuffersNotFlushed => Rule::Dma(0x0D),
            UnlockedBuffer => Rule::Dma(0x0E),
            GuardBytesOverwritten { .. } => Rule::Dma(0x0F),
            MapRegistersFreedWhileMapped => Rule::Dma(0x10),
            DmaIrqlTooHigh { .. } => Rule::Dma(0x13),
            DmaIrqlTooLow { .. } => Rule::Dma(0x14),
            MapRegistersAboveMaximum { .. } => Rule::Dma(0x15),
            FlushedUnmappedBuffer => Rule::Dma(0x16),
            FlushedPastMapping { .. } | MapBeyondMapRegisters { .. } => Rule::Dma(0x00),
            AdapterUsedAfterRelease { .. } => Rule::Dma(0x18),
            AddressNotInMdl { .. } => Rule::Dma(0x1B),
            RangeAlreadyMapped => Rule::Dma(0x1D),
            ZeroLengthMapping => Rule::Dma(0x21),
            FlushedChannelNotCompleted => Rule::Dma(0x23),
            ScatterGatherBufferTooSmall { .. } => Rule::Dma(0x24),
            UnknownDeviceDescriptionVersion { .. } => Rule::Dma(0x25),
            TransferContextNotInitialized => Rule::Own("DmaTransferContextNotInitialized"),
            InvalidMapRegisterBase => Rule::Own("UnknownMapRegisterBase"),
            DmaDeviceObjectNotPdo { .. } => Rule::Own("DmaDeviceObjectNotPdo"),
            DoubleCompletion { .. } => Rule::Sdv("DoubleCompletion"),
            CompletedUnderSpinLock { .. } | StartNextPacketUnderSpinLock { .. } => {
                Rule::Sdv("SpinLockSafe")
            }
            PendingWithoutMark { .. } => Rule::Sdv("MarkIrpPending"),
            MarkedPendingReturnedOther { .. } => Rule::Sdv("PendedCompletedRequest"),
            CompletedWithPending { .. } => Rule::Sdv("CompletePending"),
            StartIoRecursion => Rule::Sdv("StartIoRecursion"),
            CompletedWithCancelRoutine { .. } => Rule::Sdv("CancelRoutine"),
            ReturnedWithoutCompleting { .. } => Rule::Sdv("IrpProcessingComplete"),
            CancelledIrpNeverCompleted { .. } => Rule::Sdv("IrpCancelField"),
            RequestIncompleteAtRemoval { .. } => Rule::Sdv("PnpRemove"),
            CancelSpinLockMisuse => Rule::Sdv("CancelSpinLock"),
            SpinLockHeldAtReturn { .. } | SpinLockDeadlock { .. } => Rule::Sdv("SpinLock"),
            IrpUsedAfterCompletion { .. } => Rule::Sdv("IrpUse"),
            WrongIrql { .. } => Rule::Irql("IrqlCheck"),
            RemoveLockWaitBeforeRemovePassedDown => {
                Rule::Own("ReleaseRemoveLockAndWaitAfterPassingRemove")
            }
            RegisterAccessWithoutDecode { .. } => Rule::Own("RegisterAccessWithoutDecode"),
            PoweredDownWithDmaInFlight => Rule::Own("PoweredDownWithDmaInFlight"),
            PowerDownNotReported => Rule::Own("PoSetPowerStateBeforeD3"),
            AdapterLeaked => Rule::Leak("PutDmaAdapter"),
            ChannelLeaked => Rule::Leak("FreeAdapterChannel"),
            MdlLeaked { .. } => Rule::Leak("IoFreeMdl"),
        }
    }

    /// The 0xE6 parameter 1, for DMA rules.
    pub fn dma_subcode(&self) -> Option<u32> {
        match self.rule() {
            Rule::Dma(code) => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {:?}", self.rule(), self)
    }
}

/// Records violations; the first one is the bug check.
#[derive(Clone, Debug, Default)]
pub struct Verifier {
    /// DMA verification enabled (`verifier /flags 0x80`). With it off, the
    /// HAL returns errors where it can instead of bug checking.
    pub dma_checks: bool,
    violations: Vec<Violation>,
}

impl Verifier {
    /// A verifier with DMA checks on.
    pub fn new() -> Self {
        Self {
            dma_checks: true,
            violations: Vec::new(),
        }
    }

    /// Record a violation.
    pub fn report(&mut self, v: Violation) {
        self.violations.push(v);
    }

    /// The bug check, if any: the first violation.
    pub fn bugcheck(&self) -> Option<&Violation> {
        self.violations.first()
    }

    /// Every violation recorded (the first one stopped the machine; the
    /// rest were found while it was being torn down).
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_codes_are_the_documented_ones() {
        assert_eq!(
            Violation::AdapterChannelFreedTooOften.dma_subcode(),
            Some(4)
        );
        assert_eq!(
            Violation::UnknownDeviceDescriptionVersion { version: 9 }.dma_subcode(),
            Some(0x25)
        );
        assert_eq!(
            Violation::StartIoRecursion.rule(),
            Rule::Sdv("StartIoRecursion")
        );
        assert_eq!(format!("{}", Rule::Dma(0x1d)), "0xE6/0x1D");
        // One subcode per direction of a wrong IRQL, whatever the routine.
        let high = Violation::DmaIrqlTooHigh {
            routine: "GetDmaAlignment",
            irql: Irql::Dispatch,
        };
        let low = Violation::DmaIrqlTooLow {
            routine: "MapTransferEx",
            irql: Irql::Passive,
        };
        assert_eq!(
            (high.dma_subcode(), low.dma_subcode()),
            (Some(0x13), Some(0x14))
        );
    }

    #[test]
    fn verifier_checks_of_our_own_borrow_no_0xe6_subcode() {
        for v in [
            Violation::TransferContextNotInitialized,
            Violation::InvalidMapRegisterBase,
        ] {
            assert_eq!(v.dma_subcode(), None, "{v}");
            assert!(matches!(v.rule(), Rule::Own(_)), "{v}");
        }
    }

    #[test]
    fn verifier_first_violation_is_the_bugcheck() {
        let mut v = Verifier::new();
        assert!(v.bugcheck().is_none());
        v.report(Violation::ZeroLengthMapping);
        v.report(Violation::RangeAlreadyMapped);
        assert_eq!(v.bugcheck(), Some(&Violation::ZeroLengthMapping));
        assert_eq!(v.violations().len(), 2);
    }
}
