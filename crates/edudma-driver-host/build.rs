//! Marks the host build of the driver's sources: `cfg(edudma_host)` turns on
//! the modules of `src/lib.rs` that are otherwise Windows-only.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(edudma_host)");
    println!("cargo::rustc-cfg=edudma_host");
}
