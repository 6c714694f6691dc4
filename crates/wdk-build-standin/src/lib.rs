//! Linux stand-in for `wdk-build` 0.6.0, for type-checking only.
//!
//! The real crate reads the `metadata.wdk` tables of the build graph, finds
//! the installed WDK and configures bindgen and the linker. Off Windows it
//! stops with `compile_error!`. The registry crates `wdk`, `wdk-alloc` and
//! `wdk-panic` call [`configure_wdk_library_build`] from their build scripts
//! only to receive the `driver_model__driver_type` cfg, so that is all this
//! stand-in does. edudma's workspace declares
//! `[workspace.metadata.wdk.driver-model] driver-type = "WDM"`, and WDM is
//! what is reported.

use std::fmt;

/// The cfg key wdk-build 0.6.0 exports (`DRIVER_MODEL-DRIVER_TYPE`, lowered
/// and with `-` replaced by `__`) and the values it allows.
const DRIVER_TYPE_CFG: &str = "driver_model__driver_type";
const DRIVER_TYPES: [&str; 3] = ["WDM", "KMDF", "UMDF"];
/// The driver model of edudma's workspace metadata.
const DRIVER_TYPE: &str = "WDM";

/// Errors of the stand-in: none can happen, but the real signatures return
/// `Result<(), ConfigError>` and build scripts propagate it with `?`.
#[derive(Debug)]
pub enum ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}

impl std::error::Error for ConfigError {}

fn emit_cfg_settings() {
    let allowed = DRIVER_TYPES.map(|t| format!("\"{t}\"")).join(",");
    println!("cargo::rustc-check-cfg=cfg({DRIVER_TYPE_CFG}, values({allowed}))");
    println!("cargo::rustc-cfg={DRIVER_TYPE_CFG}=\"{DRIVER_TYPE}\"");
}

/// What the real `configure_wdk_library_build` emits for a WDM build graph:
/// the driver-model cfg and its check-cfg declaration.
///
/// # Errors
/// Never; the type matches the real function's.
pub fn configure_wdk_library_build() -> Result<(), ConfigError> {
    emit_cfg_settings();
    Ok(())
}

/// The real `configure_wdk_binary_build` also configures the kernel link;
/// a type-check never links, so only the cfg settings are emitted.
///
/// # Errors
/// Never; the type matches the real function's.
pub fn configure_wdk_binary_build() -> Result<(), ConfigError> {
    emit_cfg_settings();
    Ok(())
}
