//! The I/O manager's user-mode front end: what `NtDeviceIoControlFile`,
//! `NtReadFile` and `NtWriteFile` make of a caller's buffers — an IRP built
//! as the I/O manager builds it, or a refusal the driver never sees.
//!
//! The model (the stricter reading where Learn leaves it open):
//! - `METHOD_BUFFERED`: one pool buffer of max(input, output) bytes when
//!   either is non-zero (`SystemBuffer` NULL otherwise), the input copied to
//!   its start; a NULL input pointer with a non-zero length leaves the pool
//!   bytes as they were (the driver must not trust them). Past the input the
//!   buffer holds old pool content, [`POOL_CANARY`] here, so that a driver
//!   returning bytes it did not write is seen.
//! - `METHOD_IN_DIRECT` / `METHOD_OUT_DIRECT`: the input in `SystemBuffer`
//!   as above (sized to the input alone); the output buffer described by an
//!   MDL, probed and locked, only when its pointer is non-NULL and its
//!   length non-zero — otherwise `MdlAddress` is NULL with
//!   `OutputBufferLength` as given.
//! - `METHOD_NEITHER`: nothing copied, probed or locked: the driver gets the
//!   caller's addresses in `Type3InputBuffer` and `UserBuffer`.
//! - `ReadFile` / `WriteFile` on a `DO_DIRECT_IO` device: an MDL of the
//!   buffer when the length is non-zero, none otherwise; `ByteOffset` is
//!   passed as given (negative values included).
//! - A probe or copy that runs past the caller's committed bytes raises
//!   `STATUS_ACCESS_VIOLATION`, and a system buffer above [`POOL_QUOTA`]
//!   fails with `STATUS_INSUFFICIENT_RESOURCES`: both before any IRP exists.

use edudma_core::NtStatus;
use edudma_core::ioctl::{METHOD_BUFFERED, METHOD_IN_DIRECT, METHOD_NEITHER, method_of};

use super::Machine;
use crate::io::{FileId, Irp, IrpId, Major};
use crate::kernel::Crash;
use crate::mdl::BufferLayout;
use crate::wdm::WdmDriver;

/// `STATUS_ACCESS_VIOLATION`: a probe or copy of the caller's buffer faulted.
pub const STATUS_ACCESS_VIOLATION: NtStatus = NtStatus(0xC000_0005u32 as i32);

/// The pool content a fresh system buffer holds past the caller's input.
pub const POOL_CANARY: u8 = 0xC5;

/// The largest system buffer the caller's pool quota allows here.
pub const POOL_QUOTA: u32 = 1 << 20;

/// Where the model puts a caller's buffers in its address space (never
/// mapped on the host: a driver that dereferences one crashes the run).
const USER_BUFFERS: u64 = 0x0000_7FE0_0000_0000;

/// The user address of the caller's buffer `which` (0 or 1), or 0 (NULL)
/// for a buffer of no bytes.
pub fn user_address(length: u32, which: u64) -> u64 {
    if length == 0 {
        0
    } else {
        USER_BUFFERS + which * 0x1_0000_0000
    }
}

/// One buffer argument of a call, as the caller has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserBuffer {
    /// The pointer is non-NULL.
    pub present: bool,
    /// The length argument.
    pub length: u32,
    /// Bytes really committed at the pointer (a length past them makes the
    /// probe fault).
    pub committed: u32,
    /// The contents (input data, or the data a write sends).
    pub contents: Vec<u8>,
}

impl UserBuffer {
    /// A valid buffer of these bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            present: true,
            length: bytes.len() as u32,
            committed: bytes.len() as u32,
            contents: bytes.to_vec(),
        }
    }

    /// A valid buffer of `length` bytes to be written.
    pub fn out(length: u32) -> Self {
        Self {
            present: true,
            length,
            committed: length,
            contents: Vec::new(),
        }
    }

    /// A NULL pointer with this length.
    pub fn null(length: u32) -> Self {
        Self {
            present: false,
            length,
            committed: 0,
            contents: Vec::new(),
        }
    }

    /// Probing (or copying) all of it faults.
    fn faults(&self) -> bool {
        self.length > 0 && (!self.present || self.length > self.committed)
    }
}

/// A system service call of the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCall {
    /// `DeviceIoControl`.
    DeviceIoControl {
        /// Control code.
        code: u32,
        /// `lpInBuffer` / `nInBufferSize`.
        input: UserBuffer,
        /// `lpOutBuffer` / `nOutBufferSize`.
        output: UserBuffer,
    },
    /// `ReadFile` with an `OVERLAPPED` offset.
    ReadFile {
        /// `ByteOffset.QuadPart`.
        offset: i64,
        /// The buffer.
        buffer: UserBuffer,
    },
    /// `WriteFile` with an `OVERLAPPED` offset.
    WriteFile {
        /// `ByteOffset.QuadPart`.
        offset: i64,
        /// The buffer (its contents are the data written).
        buffer: UserBuffer,
    },
}

/// What became of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The IRP was built and the driver's dispatch routine called.
    Sent(IrpId),
    /// The I/O manager failed the call itself; the driver saw nothing.
    Refused(NtStatus),
}

/// What the I/O manager would build: the IRP's major and buffers, before
/// any memory is allocated.
struct Plan {
    major: Major,
    /// `SystemBuffer` bytes (empty: NULL).
    system_buffer: Option<Vec<u8>>,
    /// An MDL of this many bytes with these contents (for the driver to read).
    mdl: Option<(u32, Option<Vec<u8>>)>,
    type3: u64,
    user: u64,
}

fn pool(bytes: u32, input: &UserBuffer) -> Result<Option<Vec<u8>>, NtStatus> {
    if bytes == 0 {
        return Ok(None);
    }
    if bytes > POOL_QUOTA {
        return Err(NtStatus::INSUFFICIENT_RESOURCES);
    }
    let mut b = vec![POOL_CANARY; bytes as usize];
    if input.present {
        let n = input.contents.len().min(input.length as usize);
        b[..n].copy_from_slice(&input.contents[..n]);
    }
    Ok(Some(b))
}

fn plan(call: &UserCall) -> Result<Plan, NtStatus> {
    match call {
        UserCall::DeviceIoControl {
            code,
            input,
            output,
        } => {
            let major = Major::DeviceControl {
                code: *code,
                input_length: input.length,
                output_length: output.length,
            };
            let method = method_of(*code);
            if method == METHOD_NEITHER {
                return Ok(Plan {
                    major,
                    system_buffer: None,
                    mdl: None,
                    type3: if input.present { user_address(1, 0) } else { 0 },
                    user: if output.present {
                        user_address(1, 1)
                    } else {
                        0
                    },
                });
            }
            // The input is copied in (a NULL pointer is not copied from).
            if input.present && input.faults() {
                return Err(STATUS_ACCESS_VIOLATION);
            }
            if method == METHOD_BUFFERED {
                // ProbeForWrite of the output the completion copies into.
                if output.present && output.faults() {
                    return Err(STATUS_ACCESS_VIOLATION);
                }
                let bytes = input.length.max(output.length);
                return Ok(Plan {
                    major,
                    system_buffer: pool(bytes, input)?,
                    mdl: None,
                    type3: 0,
                    user: 0,
                });
            }
            let system_buffer = pool(input.length, input)?;
            let mdl = if output.present && output.length > 0 {
                if output.faults() {
                    return Err(STATUS_ACCESS_VIOLATION);
                }
                let data = (method == METHOD_IN_DIRECT).then(|| output.contents.clone());
                Some((output.length, data))
            } else {
                None
            };
            Ok(Plan {
                major,
                system_buffer,
                mdl,
                type3: 0,
                user: 0,
            })
        }
        UserCall::ReadFile { offset, buffer } | UserCall::WriteFile { offset, buffer } => {
            let write = matches!(call, UserCall::WriteFile { .. });
            // MmProbeAndLockPages of the whole buffer.
            if buffer.faults() {
                return Err(STATUS_ACCESS_VIOLATION);
            }
            let major = if write {
                Major::Write {
                    byte_offset: *offset,
                    length: buffer.length,
                }
            } else {
                Major::Read {
                    byte_offset: *offset,
                    length: buffer.length,
                }
            };
            let mdl = (buffer.length > 0)
                .then(|| (buffer.length, write.then(|| buffer.contents.clone())));
            Ok(Plan {
                major,
                system_buffer: None,
                mdl,
                type3: 0,
                user: 0,
            })
        }
    }
}

impl<D: WdmDriver> Machine<D> {
    /// A caller's system service on the handle `file`: the I/O manager
    /// builds the IRP from the caller's buffers (see the module docs) and
    /// calls the dispatch routine, or fails the call itself.
    pub fn send_user(
        &mut self,
        file: FileId,
        call: &UserCall,
        layout: &BufferLayout,
    ) -> Result<Submitted, Crash> {
        let plan = match plan(call) {
            Ok(p) => p,
            Err(status) => return Ok(Submitted::Refused(status)),
        };
        let irp = self.sys.with(|k| {
            let mdl = match &plan.mdl {
                Some((length, data)) => {
                    let Some(mdl) =
                        crate::mdl::build(&mut k.mdls, &mut k.mem, &mut k.rng, *length, layout)
                    else {
                        return Err(NtStatus::INSUFFICIENT_RESOURCES);
                    };
                    let mut contents = vec![0u8; *length as usize];
                    match data {
                        Some(d) => {
                            let n = d.len().min(contents.len());
                            contents[..n].copy_from_slice(&d[..n]);
                        }
                        // The caller's buffer before the driver writes it.
                        None => k.rng.fill(&mut contents),
                    }
                    let _ = k.mdls.write(&mut k.mem, mdl, 0, &contents);
                    Some(mdl)
                }
                None => None,
            };
            let now = k.sched.now();
            let mut irp = Irp::new(plan.major, plan.system_buffer.unwrap_or_default(), mdl, now);
            irp.file = file;
            irp.type3_input_buffer = plan.type3;
            irp.user_buffer = plan.user;
            let id = k.irps.insert(irp);
            k.trace(|t, now| t.irp_sent(now, id.0, format!("user request (IRP {})", id.0)));
            Ok(id)
        });
        let irp = match irp {
            Ok(irp) => irp,
            Err(status) => return Ok(Submitted::Refused(status)),
        };
        self.dispatch_built(irp)?;
        Ok(Submitted::Sent(irp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUFFERED: u32 = 0x8ED0_0000 | METHOD_BUFFERED;
    const OUT_DIRECT: u32 = 0x8ED0_0000 | 2;
    const NEITHER: u32 = 0x8ED0_0000 | METHOD_NEITHER;

    fn control(code: u32, input: UserBuffer, output: UserBuffer) -> UserCall {
        UserCall::DeviceIoControl {
            code,
            input,
            output,
        }
    }

    #[test]
    fn buffered_calls_get_one_pool_buffer_with_old_content_past_the_input() {
        let p = plan(&control(
            BUFFERED,
            UserBuffer::of(&[1, 2]),
            UserBuffer::out(4),
        ))
        .unwrap();
        assert_eq!(p.system_buffer, Some(vec![1, 2, POOL_CANARY, POOL_CANARY]));
        assert!(p.mdl.is_none());
        let none = plan(&control(BUFFERED, UserBuffer::null(0), UserBuffer::null(0))).unwrap();
        assert_eq!(none.system_buffer, None, "SystemBuffer NULL");
        let null_input = plan(&control(BUFFERED, UserBuffer::null(3), UserBuffer::null(0)));
        assert_eq!(
            null_input.unwrap().system_buffer,
            Some(vec![POOL_CANARY; 3])
        );
    }

    #[test]
    fn faulting_probes_and_huge_pool_buffers_never_reach_the_driver() {
        let short = UserBuffer {
            committed: 1,
            ..UserBuffer::of(&[0; 8])
        };
        let refused = plan(&control(BUFFERED, short.clone(), UserBuffer::out(0)));
        assert_eq!(refused.err(), Some(STATUS_ACCESS_VIOLATION));
        let huge = plan(&control(
            BUFFERED,
            UserBuffer::null(0),
            UserBuffer::null(u32::MAX),
        ));
        assert_eq!(huge.err(), Some(NtStatus::INSUFFICIENT_RESOURCES));
        let read = plan(&UserCall::ReadFile {
            offset: 0,
            buffer: UserBuffer::null(5),
        });
        assert_eq!(read.err(), Some(STATUS_ACCESS_VIOLATION));
        // METHOD_NEITHER probes nothing: even a short buffer reaches the driver.
        let neither = plan(&control(NEITHER, short, UserBuffer::null(u32::MAX))).unwrap();
        assert_ne!(neither.type3, 0);
        assert_eq!(neither.user, 0, "a NULL output stays NULL");
        assert!(neither.system_buffer.is_none() && neither.mdl.is_none());
    }

    #[test]
    fn a_direct_call_with_a_null_output_has_no_mdl() {
        let p = plan(&control(
            OUT_DIRECT,
            UserBuffer::of(&[0; 8]),
            UserBuffer::null(100),
        ))
        .unwrap();
        assert!(p.mdl.is_none());
        assert_eq!(p.system_buffer.map(|b| b.len()), Some(8));
        let with = plan(&control(
            OUT_DIRECT,
            UserBuffer::of(&[0; 8]),
            UserBuffer::out(100),
        ))
        .unwrap();
        assert_eq!(with.mdl, Some((100, None)));
        let empty = plan(&UserCall::WriteFile {
            offset: -7,
            buffer: UserBuffer::null(0),
        })
        .unwrap();
        assert!(empty.mdl.is_none());
    }
}
