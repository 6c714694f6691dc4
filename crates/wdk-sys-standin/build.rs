//! Generates the stand-in's bindings, the way wdk-sys 0.5.2 does on Windows.
//!
//! Inputs: Debian's mingw-w64 headers (packages `mingw-w64-common` and
//! `mingw-w64-x86-64-dev`, installed by `scripts/windows-check.sh`) and the
//! project's supplement headers in `supplement/`. Output, in `OUT_DIR`:
//! `constants.rs`, `types.rs`, `ntddk.rs` (three bindgen runs with wdk-build
//! 0.6.0's builder settings, split by codegen kind as wdk-sys splits them)
//! and `status.rs` (the `STATUS_*` values of `ntstatus.h`, which bindgen
//! drops because they are casts, as `NTSTATUS` constants).
//!
//! The mingw headers are read in place; the three files that need a fix for
//! clang in MSVC mode or the version-3 DMA declarations are copied into
//! `OUT_DIR/patched` with named, exact edits that fail loudly if the headers
//! ever change (see [`PATCHES`]).
//!
//! Environment:
//! - `WDK_STANDIN_MINGW_INCLUDE`: mingw's include directory
//!   (default `/usr/share/mingw-w64/include`);
//! - `WDK_STANDIN_CLANG_RESOURCE_DIR`: clang's resource directory (default:
//!   asked from `clang -print-resource-dir`); `LIBCLANG_PATH` should name the
//!   libclang of the same clang.

use std::collections::BTreeMap;
use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use bindgen::{Builder, CodegenConfig, EnumVariation, Formatter, RustEdition, RustTarget};

type BuildResult<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The Rust target wdk-build 0.6.0 gives bindgen: its own `rust-version`.
const WDK_BUILD_RUST_VERSION_MINOR: u64 = 91;

/// One exact edit of a mingw header: `find` must occur exactly once.
struct Patch {
    file: &'static str,
    why: &'static str,
    find: &'static str,
    replace: &'static str,
}

/// Every change made to a copy of Debian's headers, with its reason.
const PATCHES: &[Patch] = &[
    Patch {
        file: "_mingw.h",
        why: "without __GNUC__ (clang in MSVC mode) mingw defines __attribute__ away, \
              which breaks clang's own intrinsic headers",
        find: "# define __attribute__(x) /* nothing */",
        replace: "/* edudma stand-in: __attribute__ kept for clang */",
    },
    Patch {
        file: "_mingw.h",
        why: "__declspec(noreturn) cannot follow a declarator; clang accepts the GNU form",
        find: "#elif __MINGW_MSC_PREREQ(12, 0)\n#define __MINGW_ATTRIB_NORETURN __declspec(noreturn)",
        replace: "#elif __MINGW_MSC_PREREQ(12, 0)\n#define __MINGW_ATTRIB_NORETURN __attribute__ ((__noreturn__))",
    },
    Patch {
        file: "_mingw.h",
        why: "__declspec(deprecated) cannot follow a declarator; clang accepts the GNU form",
        find: "#define __MINGW_ATTRIB_DEPRECATED __declspec(deprecated)",
        replace: "#define __MINGW_ATTRIB_DEPRECATED __attribute__ ((__deprecated__))",
    },
    Patch {
        file: "ntdef.h",
        why: "the null-pointer FIELD_OFFSET is not a constant expression for clang, \
              which turns the headers' C_ASSERTs into variably modified types",
        find: "#ifndef __GNUC__\n#define FIELD_OFFSET(Type, Field) ((LONG)(LONG_PTR)&(((Type*) 0)->Field))",
        replace: "#ifndef __GNUC__\n#define FIELD_OFFSET(Type, Field) ((LONG)__builtin_offsetof(Type, Field))",
    },
    Patch {
        file: "ddk/wdm.h",
        why: "mingw's DEVICE_DESCRIPTION stops at DmaPort; version 3 adds four members",
        find: "  ULONG DmaPort;\n} DEVICE_DESCRIPTION, *PDEVICE_DESCRIPTION;",
        replace: "  ULONG DmaPort;\n  EDUDMA_DEVICE_DESCRIPTION_V3_MEMBERS\n} DEVICE_DESCRIPTION, *PDEVICE_DESCRIPTION;",
    },
    Patch {
        file: "ddk/wdm.h",
        why: "the version-3 member macro and DEVICE_DESCRIPTION_VERSION3 come first",
        find: "typedef struct _DEVICE_DESCRIPTION {",
        replace: "#include <edudma_dma_v3_description.h>\ntypedef struct _DEVICE_DESCRIPTION {",
    },
    Patch {
        file: "ddk/wdm.h",
        why: "mingw's DMA_OPERATIONS has the 15 version-1 routines only; the version-3 \
              types are declared in front of it and its members appended",
        find: "typedef struct _DMA_OPERATIONS {",
        replace: "#include <edudma_dma_v3_operations.h>\ntypedef struct _DMA_OPERATIONS {",
    },
    Patch {
        file: "ddk/wdm.h",
        why: "see the previous patch",
        find: "  PBUILD_MDL_FROM_SCATTER_GATHER_LIST BuildMdlFromScatterGatherList;\n} DMA_OPERATIONS, *PDMA_OPERATIONS;",
        replace: "  PBUILD_MDL_FROM_SCATTER_GATHER_LIST BuildMdlFromScatterGatherList;\n  EDUDMA_DMA_OPERATIONS_V2_V3_MEMBERS\n} DMA_OPERATIONS, *PDMA_OPERATIONS;",
    },
    Patch {
        file: "ddk/wdm.h",
        why: "on x64 mingw has KeGetCurrentIrql only as an inline CR8 read; the WDK \
              (and so wdk-sys) declares the export",
        find: "FORCEINLINE\nKIRQL\nKeGetCurrentIrql(VOID)\n{\n  return (KIRQL)__readcr8();\n}",
        replace: "NTHALAPI\nKIRQL\nNTAPI\nKeGetCurrentIrql(VOID);",
    },
];

fn main() -> BuildResult {
    let mingw_include = PathBuf::from(
        env::var("WDK_STANDIN_MINGW_INCLUDE")
            .unwrap_or_else(|_| "/usr/share/mingw-w64/include".into()),
    );
    println!("cargo::rerun-if-env-changed=WDK_STANDIN_MINGW_INCLUDE");
    println!("cargo::rerun-if-env-changed=WDK_STANDIN_CLANG_RESOURCE_DIR");
    println!("cargo::rerun-if-env-changed=LIBCLANG_PATH");
    if !mingw_include.join("ddk/wdm.h").is_file() {
        return Err(format!(
            "{} has no ddk/wdm.h: install Debian's mingw-w64-common and mingw-w64-x86-64-dev \
             (scripts/windows-check.sh does) or set WDK_STANDIN_MINGW_INCLUDE",
            mingw_include.display()
        )
        .into());
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let supplement = manifest_dir.join("supplement");
    println!("cargo::rerun-if-changed={}", supplement.display());
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let patched = out_dir.join("patched");
    apply_patches(&mingw_include, &patched)?;

    let include_dirs = [
        patched.clone(),
        patched.join("ddk"),
        supplement.clone(),
        mingw_include.join("ddk"),
        mingw_include.clone(),
        clang_resource_dir()?.join("include"),
    ];
    // On a non-Windows target (the simulator's host build) the C integer
    // types must keep their Windows widths: `long` is 32 bits on Windows.
    let host_build = env::var("CARGO_CFG_TARGET_OS")? != "windows";

    let base_headers = "#include \"ntifs.h\"\n#include \"ntddk.h\"\n#include \"ntstrsafe.h\"\n\
                        #include <edudma_kernel_exports.h>\n";
    let generations = [
        ("constants.rs", CodegenConfig::VARS),
        ("types.rs", CodegenConfig::TYPES),
        (
            "ntddk.rs",
            (CodegenConfig::TYPES | CodegenConfig::VARS).complement(),
        ),
    ];
    for (file, codegen) in generations {
        let mut builder = wdk_default(&include_dirs)
            .with_codegen_config(codegen)
            .header_contents(&file.replace(".rs", "-input.h"), base_headers);
        if host_build {
            builder = builder.ctypes_prefix("crate::ctypes");
        }
        builder
            .generate()
            .map_err(|e| format!("bindgen failed on {file}: {e}"))?
            .write_to_file(out_dir.join(file))?;
    }
    write_status_constants(
        &mingw_include.join("ntstatus.h"),
        &out_dir.join("status.rs"),
    )
}

/// Copy each patched header into `patched/` and apply its edits.
fn apply_patches(mingw_include: &Path, patched: &Path) -> BuildResult {
    let mut files: BTreeMap<&str, String> = BTreeMap::new();
    for patch in PATCHES {
        if !files.contains_key(patch.file) {
            let source = mingw_include.join(patch.file);
            println!("cargo::rerun-if-changed={}", source.display());
            files.insert(patch.file, fs::read_to_string(&source)?);
        }
        let text = files.get_mut(patch.file).ok_or("patched header vanished")?;
        let hits = text.matches(patch.find).count();
        if hits != 1 {
            return Err(format!(
                "patch of {} ({}) expects its text exactly once, found {hits} times: \
                 the mingw-w64 headers changed; update PATCHES in build.rs",
                patch.file, patch.why
            )
            .into());
        }
        *text = text.replacen(patch.find, patch.replace, 1);
    }
    for (file, text) in files {
        let target = patched.join(file);
        fs::create_dir_all(target.parent().ok_or("patched header has no parent")?)?;
        // Rewrite only on change: bindgen reports every included header as
        // a rerun-if-changed input, these copies included.
        if fs::read_to_string(&target).ok().as_deref() != Some(text.as_str()) {
            fs::write(target, text)?;
        }
    }
    Ok(())
}

/// wdk-build 0.6.0's `BuilderExt::wdk_default` for a WDM driver on x64,
/// restated setting by setting (the crate itself does not build off
/// Windows). The include paths are mingw's instead of the WDK's, and clang
/// targets `x86_64-pc-windows-msvc` as in a real build.
fn wdk_default(include_dirs: &[PathBuf]) -> Builder {
    let mut builder = Builder::default()
        .use_core()
        .derive_default(true)
        .generate_cstr(true)
        .detect_include_paths(false)
        .clang_arg("--target=x86_64-pc-windows-msvc")
        .clang_arg("-fno-builtin");
    for dir in include_dirs {
        builder = builder.clang_arg(format!("--include-directory={}", dir.display()));
    }
    for define in ["_WIN64", "_AMD64_", "AMD64", "_KERNEL_MODE"] {
        builder = builder.clang_arg(format!("--define-macro={define}"));
    }
    for flag in [
        "-fms-compatibility",
        "-fms-extensions",
        "-fdelayed-template-parsing",
        "--warn-=no-nonportable-include-path",
        "--warn-=no-pragma-pack",
        "--warn-=no-ignored-attributes",
        "--warn-=no-ignored-pragma-intrinsic",
        "--warn-=no-visibility",
        "--warn-=no-switch",
        "--warn-=no-comment",
        "--warn-=no-deprecated-declarations",
        "--warn-=no-invalid-token-paste",
        "--warn-=no-microsoft",
    ] {
        builder = builder.clang_arg(flag);
    }
    for item in [
        "ExAllocatePoolWithTag",
        "ExAllocatePoolWithQuotaTag",
        "ExAllocatePoolWithTagPriority",
        "ExAllocatePool",
        "USBD_CalculateUsbBandwidth",
        "USBD_CreateConfigurationRequest",
        "USBD_Debug_LogEntry",
        "USBD_GetUSBDIVersion",
        "USBD_ParseConfigurationDescriptor",
        "USBD_QueryBusTime",
        "USBD_RegisterHcFilter",
        "IOCTL_USB_DIAG_IGNORE_HUBS_OFF",
        "IOCTL_USB_DIAG_IGNORE_HUBS_ON",
        "IOCTL_USB_DIAGNOSTIC_MODE_OFF",
        "IOCTL_USB_DIAGNOSTIC_MODE_ON",
        "IOCTL_USB_GET_HUB_CAPABILITIES",
        "IOCTL_USB_HCD_DISABLE_PORT",
        "IOCTL_USB_HCD_ENABLE_PORT",
        "IOCTL_USB_HCD_GET_STATS_1",
        "IOCTL_USB_HCD_GET_STATS_2",
        "IOCTL_USB_RESET_HUB",
        ".*MCG_CAP(?:__bindgen.*)?",
        ".*WHEA_XPF_MCA_SECTION",
        ".*WHEA_ARM_BUS_ERROR(?:__bindgen.*)?",
        ".*WHEA_ARM_PROCESSOR_ERROR",
        ".*WHEA_ARM_CACHE_ERROR",
        ".*ADDRESS0_OWNERSHIP_ACQUIRE",
        ".*USBDEVICE_ABORTIO",
        ".*USBDEVICE_STARTIO",
        ".*USBDEVICE_TREE_PURGEIO",
    ] {
        builder = builder.blocklist_item(item);
    }
    builder
        .opaque_type("_KGDTENTRY64")
        .opaque_type("_KIDTENTRY64")
        .no_default(".*tagMONITORINFOEXA")
        .must_use_type("NTSTATUS")
        .must_use_type("HRESULT")
        .default_enum_style(EnumVariation::ModuleConsts)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .formatter(Formatter::Prettyplease)
        .rust_target(
            RustTarget::stable(WDK_BUILD_RUST_VERSION_MINOR, 0).expect("bindgen knows Rust 1.91"),
        )
        .rust_edition(RustEdition::Edition2024)
}

fn clang_resource_dir() -> BuildResult<PathBuf> {
    if let Ok(dir) = env::var("WDK_STANDIN_CLANG_RESOURCE_DIR") {
        return Ok(dir.into());
    }
    let out = Command::new("clang")
        .arg("-print-resource-dir")
        .output()
        .map_err(|e| format!("clang -print-resource-dir: {e} (install clang)"))?;
    if !out.status.success() {
        return Err("clang -print-resource-dir failed".into());
    }
    Ok(String::from_utf8(out.stdout)?.trim().into())
}

/// `#define STATUS_X ((NTSTATUS)0xC0000001)` → `pub const STATUS_X: NTSTATUS = -1073741823_i32;`
fn write_status_constants(ntstatus_h: &Path, out: &Path) -> BuildResult {
    println!("cargo::rerun-if-changed={}", ntstatus_h.display());
    let text = fs::read_to_string(ntstatus_h)?;
    let mut values = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some("#define"), Some(name), Some(value)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Some(hex) = value
            .strip_prefix("((NTSTATUS)0x")
            .and_then(|v| v.strip_suffix(')'))
            .map(|v| v.trim_end_matches(['L', 'l']))
        else {
            continue;
        };
        if name.starts_with("STATUS_") {
            let bits = u32::from_str_radix(hex, 16)?;
            values.insert(name.to_owned(), bits.cast_signed());
        }
    }
    if values.len() < 1000 || !values.contains_key("STATUS_SUCCESS") {
        return Err(format!(
            "{} gave only {} STATUS_ values",
            ntstatus_h.display(),
            values.len()
        )
        .into());
    }
    let mut rust = String::from("// Generated by build.rs from mingw-w64's ntstatus.h.\n");
    for (name, value) in values {
        writeln!(rust, "pub const {name}: NTSTATUS = {value}_i32;")?;
    }
    fs::write(out, rust)?;
    Ok(())
}
