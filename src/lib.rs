//! edudma: the Windows WDM driver for QEMU's edu device (glue only; the
//! decisions live in `edudma-core`). Compiled for Windows only.
#![cfg_attr(windows, no_std)]
