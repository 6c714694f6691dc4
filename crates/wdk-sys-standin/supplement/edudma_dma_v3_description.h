/*
 * edudma's supplement to Debian's mingw-w64 DDK headers, part 1 of 3:
 * the version-3 members of DEVICE_DESCRIPTION.
 *
 * Written by the edudma project from the declarations published on
 * Microsoft Learn ("DEVICE_DESCRIPTION structure (wdm.h)"): after DmaPort,
 * version 3 adds DmaAddressWidth, DmaControllerInstance, DmaRequestLine and
 * DeviceAddress. mingw-w64 stops at DmaPort. The build script of the
 * stand-in inserts this header in front of mingw's DEVICE_DESCRIPTION and
 * the macro below at the end of its member list.
 */
#pragma once

/* wdm.h: the version a DEVICE_DESCRIPTION carries in Version. */
#define DEVICE_DESCRIPTION_VERSION3 0x0003

#define EDUDMA_DEVICE_DESCRIPTION_V3_MEMBERS \
  ULONG DmaAddressWidth;                     \
  ULONG DmaControllerInstance;               \
  ULONG DmaRequestLine;                      \
  PHYSICAL_ADDRESS DeviceAddress;
