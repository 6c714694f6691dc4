//! The PCI bus driver under the driver's FDO: it owns the PDO, completes
//! the PnP IRPs passed down to it, and answers `IRP_MN_QUERY_INTERFACE`
//! for `BUS_INTERFACE_STANDARD` (config-space reads and writes of the
//! command register).

use std::sync::Arc;

use edudma_core::NtStatus;
use wdk_sys::{
    BUS_INTERFACE_STANDARD, GUID, IRP, IRP_MJ_PNP, IRP_MJ_POWER, IRP_MN_QUERY_INTERFACE, NTSTATUS,
    PVOID, ULONG,
};

use super::Native;
use super::exports::{self, Call};

/// `GUID_BUS_INTERFACE_STANDARD` (wdmguid.h).
const GUID_BUS_INTERFACE_STANDARD: GUID = GUID {
    Data1: 0x496B_8280,
    Data2: 0x6F25,
    Data3: 0x11D0,
    Data4: [0xBE, 0xAF, 0x08, 0x00, 0x2B, 0xE2, 0x09, 0x2F],
};

fn same_guid(a: &GUID, b: &GUID) -> bool {
    a.Data1 == b.Data1 && a.Data2 == b.Data2 && a.Data3 == b.Data3 && a.Data4 == b.Data4
}

/// The bus driver's dispatch routine for an IRP sent to the PDO.
///
/// # Safety
/// `irp` must be a live IRP block whose current location is the PDO's.
pub(crate) unsafe fn dispatch(n: &Arc<Native>, irp: *mut IRP) -> NTSTATUS {
    // SAFETY: forwarded.
    let stack = unsafe {
        (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation
    };
    // SAFETY: the PDO's location.
    let (major, minor) = unsafe {
        (
            u32::from((*stack).MajorFunction),
            u32::from((*stack).MinorFunction),
        )
    };
    // SAFETY: as above.
    let mut status = unsafe { (*irp).IoStatus.__bindgen_anon_1.Status };
    if major == IRP_MJ_PNP {
        if minor == IRP_MN_QUERY_INTERFACE {
            // SAFETY: the QueryInterface arm for this minor code.
            let q = unsafe { &(*stack).Parameters.QueryInterface };
            // SAFETY: the caller's GUID.
            let wanted = !q.InterfaceType.is_null()
                && same_guid(unsafe { &*q.InterfaceType }, &GUID_BUS_INTERFACE_STANDARD);
            if wanted
                && usize::from(q.Size) >= size_of::<BUS_INTERFACE_STANDARD>()
                && !q.Interface.is_null()
            {
                let bus = q.Interface.cast::<BUS_INTERFACE_STANDARD>();
                // SAFETY: the caller's interface of the size it gave.
                unsafe {
                    (*bus).Size = size_of::<BUS_INTERFACE_STANDARD>() as u16;
                    (*bus).Version = 1;
                    (*bus).Context = Arc::as_ptr(n) as PVOID;
                    (*bus).InterfaceReference = Some(interface_reference);
                    (*bus).InterfaceDereference = Some(interface_dereference);
                    (*bus).GetBusData = Some(get_bus_data);
                    (*bus).SetBusData = Some(set_bus_data);
                }
                // The interface comes referenced.
                n.objects().bus_references += 1;
                status = NtStatus::SUCCESS.0;
            }
        } else {
            if minor == wdk_sys::IRP_MN_START_DEVICE {
                n.sys.pci_start_device();
            }
            // Start, stop, removal and the queries: the bus agrees.
            status = NtStatus::SUCCESS.0;
        }
    } else if major == IRP_MJ_POWER {
        // SAFETY: the PDO's location of this power IRP.
        status = unsafe { super::power::at_pdo(&n.sys, minor, stack) }.0;
    }
    // SAFETY: as above.
    unsafe { (*irp).IoStatus.__bindgen_anon_1.Status = status };
    exports::complete(n, irp);
    status
}

unsafe extern "C" fn interface_reference(_context: PVOID) {
    let c = Call::enter();
    c.n.objects().bus_references += 1;
}

unsafe extern "C" fn interface_dereference(_context: PVOID) {
    let c = Call::enter();
    let mut o = c.n.objects();
    o.bus_references -= 1;
    if o.bus_references < 0 {
        drop(o);
        c.n.sys
            .report_fault("BUS_INTERFACE_STANDARD dereferenced once too often");
    }
}

/// `PCI_WHICHSPACE_CONFIG` and the command register's offset.
const PCI_WHICHSPACE_CONFIG: ULONG = 0;
const PCI_COMMAND: ULONG = 4;

unsafe extern "C" fn get_bus_data(
    _context: PVOID,
    data_type: ULONG,
    buffer: PVOID,
    offset: ULONG,
    length: ULONG,
) -> ULONG {
    let c = Call::enter();
    if data_type != PCI_WHICHSPACE_CONFIG || offset != PCI_COMMAND || length != 2 {
        return 0;
    }
    let command = c.n.sys.pci_command();
    // SAFETY: the caller's buffer of `length` bytes.
    unsafe { buffer.cast::<u16>().write_unaligned(command) };
    2
}

unsafe extern "C" fn set_bus_data(
    _context: PVOID,
    data_type: ULONG,
    buffer: PVOID,
    offset: ULONG,
    length: ULONG,
) -> ULONG {
    let c = Call::enter();
    if data_type != PCI_WHICHSPACE_CONFIG || offset != PCI_COMMAND || length != 2 {
        return 0;
    }
    // SAFETY: the caller's buffer of `length` bytes.
    let value = unsafe { buffer.cast::<u16>().read_unaligned() };
    c.n.sys.set_pci_command(value);
    2
}
