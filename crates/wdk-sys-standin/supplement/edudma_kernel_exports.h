/*
 * edudma's supplement to Debian's mingw-w64 DDK headers, part 3 of 3:
 * kernel exports mingw-w64 lacks, included after ntifs.h/ntddk.h.
 *
 * Written by the edudma project from Microsoft Learn: "MmMapIoSpaceEx
 * function (wdm.h)", "KeGetCurrentIrql function (wdm.h)" (an export of the
 * HAL/kernel; mingw only has an inline CR8 read on x64, which the build
 * script turns into this declaration) and "ExAllocatePool2 function
 * (wdm.h)" with its POOL_FLAGS type (the POOL_FLAG_* values use the MSVC
 * ui64 suffix, which bindgen cannot read; wdk-sys spells them out by hand,
 * and so does the stand-in's lib.rs).
 */
#pragma once

typedef ULONG64 POOL_FLAGS;

NTKERNELAPI PVOID NTAPI MmMapIoSpaceEx(
  PHYSICAL_ADDRESS PhysicalAddress, SIZE_T NumberOfBytes, ULONG Protect);

NTKERNELAPI PVOID NTAPI ExAllocatePool2(
  POOL_FLAGS Flags, SIZE_T NumberOfBytes, ULONG Tag);
