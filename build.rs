//! Build script of the driver package.
//!
//! On a Windows host with the WDK, wdk-build configures the link of a WDM
//! driver (kernel libraries, entry point, subsystem). On any other host it
//! does nothing: the package is then an empty cdylib, and the wdk crates
//! are never compiled (they refuse to build off Windows).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(windows)]
    wdk_build::configure_wdk_binary_build()?;
    Ok(())
}
