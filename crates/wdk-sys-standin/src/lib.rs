//! Stand-in for `wdk-sys` 0.5.2 with the same public shape, for
//! type-checking edudma's driver on Linux (`scripts/windows-check.sh`).
//!
//! Like the real crate, its bindings are generated at build time by bindgen
//! with wdk-build 0.6.0's settings; unlike it, they come from Debian's
//! mingw-w64 DDK headers plus edudma's supplement (`supplement/`), because
//! the WDK exists only on Windows. The layout:
//! - types and constants at the crate root, functions in [`ntddk`];
//! - `STATUS_*` as [`NTSTATUS`] (`i32`) constants, [`NT_SUCCESS`],
//!   [`PAGED_CODE!`](PAGED_CODE) and the `POOL_FLAG_*` values, which wdk-sys
//!   writes by hand because the headers spell them as casts or with MSVC
//!   suffixes (here `STATUS_*` are generated from `ntstatus.h`).
//!
//! What it proves and what it cannot: names, field paths, types and
//! signatures as mingw-w64 (plus the supplement) declares them. Layouts
//! follow mingw's headers, not the WDK's; `crates/wdk-layout-check` holds the
//! ones the driver uses to Microsoft's metadata.
//!
//! Built for a non-Windows target (the simulator's host build), the C types
//! keep Windows' widths through [`ctypes`] (`long` is 32 bits).
#![no_std]
#![allow(missing_docs)]

/// C types with the widths of `x86_64-pc-windows-msvc` (LLP64), for host
/// builds; on Windows bindgen uses `core::ffi`, which already has them.
#[allow(non_camel_case_types)]
pub mod ctypes {
    pub type c_char = i8;
    pub type c_schar = i8;
    pub type c_uchar = u8;
    pub type c_short = i16;
    pub type c_ushort = u16;
    pub type c_int = i32;
    pub type c_uint = u32;
    pub type c_long = i32;
    pub type c_ulong = u32;
    pub type c_longlong = i64;
    pub type c_ulonglong = u64;
    pub type c_float = f32;
    pub type c_double = f64;
    pub type c_void = core::ffi::c_void;
}

pub use constants::*;
pub use types::*;

#[allow(
    non_upper_case_globals,
    clippy::unreadable_literal,
    clippy::manual_c_str_literals,
    clippy::wildcard_imports
)]
mod constants {
    use crate::types::*;

    include!(concat!(env!("OUT_DIR"), "/constants.rs"));
    include!(concat!(env!("OUT_DIR"), "/status.rs"));

    // POOL_FLAG_* (wdm.h): `0x...ui64` literals that bindgen cannot read.
    pub const POOL_FLAG_USE_QUOTA: POOL_FLAGS = 0x0000_0000_0000_0001;
    pub const POOL_FLAG_UNINITIALIZED: POOL_FLAGS = 0x0000_0000_0000_0002;
    pub const POOL_FLAG_SESSION: POOL_FLAGS = 0x0000_0000_0000_0004;
    pub const POOL_FLAG_CACHE_ALIGNED: POOL_FLAGS = 0x0000_0000_0000_0008;
    pub const POOL_FLAG_RAISE_ON_FAILURE: POOL_FLAGS = 0x0000_0000_0000_0020;
    pub const POOL_FLAG_NON_PAGED: POOL_FLAGS = 0x0000_0000_0000_0040;
    pub const POOL_FLAG_NON_PAGED_EXECUTE: POOL_FLAGS = 0x0000_0000_0000_0080;
    pub const POOL_FLAG_PAGED: POOL_FLAGS = 0x0000_0000_0000_0100;
    pub const POOL_FLAG_SPECIAL_POOL: POOL_FLAGS = 0x0000_0001_0000_0000;
}

#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    unnecessary_transmutes,
    unsafe_op_in_unsafe_fn,
    clippy::all,
    clippy::pedantic,
    clippy::nursery,
    clippy::undocumented_unsafe_blocks
)]
mod types {
    include!(concat!(env!("OUT_DIR"), "/types.rs"));
}

/// The kernel's exported functions (`ntifs.h`, `ntddk.h`, `ntstrsafe.h`).
#[allow(
    non_upper_case_globals,
    non_camel_case_types,
    non_snake_case,
    improper_ctypes,
    clippy::all,
    clippy::pedantic,
    clippy::wildcard_imports
)]
pub mod ntddk {
    use crate::types::*;

    include!(concat!(env!("OUT_DIR"), "/ntddk.rs"));
}

/// `NT_SUCCESS` (ntdef.h): success and informational codes are >= 0.
#[must_use]
#[allow(non_snake_case)]
pub const fn NT_SUCCESS(nt_status: NTSTATUS) -> bool {
    nt_status >= 0
}

/// `PAGED_CODE()` (wdm.h): in debug builds, assert that the IRQL allows
/// paging (at most APC_LEVEL), as wdk-sys's macro does.
#[macro_export]
macro_rules! PAGED_CODE {
    () => {
        debug_assert!(
            // SAFETY: KeGetCurrentIrql has no preconditions.
            unsafe { $crate::ntddk::KeGetCurrentIrql() <= $crate::APC_LEVEL as u8 }
        );
    };
}
