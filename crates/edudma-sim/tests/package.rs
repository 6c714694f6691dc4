//! The driver package as the Windows test VM gets it: the INF template and
//! the Driver Verifier script hold what the project promises (a
//! system-defined class without `[ClassInstall32]`, the device's own
//! security, Driver Verifier's standard settings with DMA checking).

fn read(path: &str) -> String {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::fs::read_to_string(format!("{root}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An INF line without its comment (a `;` outside double quotes).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The INF's lines without comments, trimmed.
fn inf_lines() -> Vec<String> {
    read("inf/edudma.inx")
        .lines()
        .map(|l| strip_comment(l).trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn the_inf_uses_a_system_defined_class_and_no_class_installer() {
    let lines = inf_lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("[ClassInstall32]")),
        "InfVerif /w refuses [ClassInstall32]"
    );
    assert!(
        lines.contains(&"Class       = System".to_string()),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&"ClassGuid   = {4d36e97d-e325-11ce-bfc1-08002be10318}".to_string()),
        "the System class's GUID"
    );
    // The security is the device's own (hardware key), with secure opens.
    let hw = lines
        .iter()
        .skip_while(|l| *l != "[EduDma_HW_AddReg]")
        .take_while(|l| !l.starts_with("[EduDma_Device.NT$ARCH$.Services]"))
        .cloned()
        .collect::<Vec<_>>();
    assert!(
        hw.iter()
            .any(|l| l.starts_with("HKR,,Security,,\"D:P(A;;GA;;;SY)(A;;GA;;;BA)\""))
    );
    assert!(
        hw.iter()
            .any(|l| l == "HKR,,DeviceCharacteristics,0x10001,0x100")
    );
    // The INF's DmaStrategy is the core's default, kept if edited.
    assert!(hw.iter().any(|l| l == "HKR,,DmaStrategy,0x10003,3"));
    assert_eq!(
        edudma_core::engine::DmaStrategy::from_registry(Some(3)),
        edudma_core::engine::DmaStrategy::default()
    );
    // DmaAddressWidth is the core's default reach (28 bits), kept if edited.
    assert!(hw.iter().any(|l| l == "HKR,,DmaAddressWidth,0x10003,28"));
    assert_eq!(
        edudma_core::engine::dma_address_width_from_registry(Some(28)),
        edudma_core::engine::EngineConfig::default().dma_address_width
    );
}

#[test]
fn the_verifier_script_applies_the_standard_settings() {
    let script = read("scripts/enable-verifier.ps1");
    let commands: Vec<&str> = script
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("verifier "))
        .collect();
    assert!(
        commands.contains(&"verifier /standard /driver edudma.sys"),
        "{commands:?}"
    );
    assert!(script.contains("DMA checking (0x80)"));
    assert!(script.contains("DDI compliance checking (0x20000)"));
}

/// The device's own security descriptor (the hardware key's `Security`,
/// which the PnP manager applies to every device object of the stack):
/// a protected DACL that allows SYSTEM and Administrators and nobody else,
/// and `FILE_DEVICE_SECURE_OPEN` among the characteristics, so that opens
/// of names below the device are checked against it too.
#[test]
fn the_inf_limits_the_device_to_system_and_administrators() {
    let lines = inf_lines();
    let hw: Vec<&String> = lines
        .iter()
        .skip_while(|l| *l != "[EduDma_HW_AddReg]")
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .collect();
    let value = |name: &str| -> Vec<String> {
        hw.iter()
            .filter_map(|l| {
                let fields: Vec<&str> = l.splitn(5, ',').map(str::trim).collect();
                (fields.len() == 5 && fields[0] == "HKR" && fields[2] == name)
                    .then(|| fields[4].trim_matches('"').to_string())
            })
            .collect()
    };
    let security = value("Security");
    assert_eq!(security.len(), 1, "one Security value: {hw:?}");
    let sddl = &security[0];
    let dacl = sddl
        .strip_prefix("D:P")
        .expect("a protected DACL, nothing inherited");
    let aces: Vec<&str> = dacl
        .strip_prefix('(')
        .and_then(|d| d.strip_suffix(')'))
        .expect("ACEs")
        .split(")(")
        .collect();
    let mut trustees = Vec::new();
    for ace in &aces {
        let f: Vec<&str> = ace.split(';').collect();
        assert_eq!(f.len(), 6, "{ace}");
        assert_eq!(f[0], "A", "allow ACEs only: {ace}");
        assert!(["SY", "BA"].contains(&f[5]), "no other trustee: {ace}");
        trustees.push(f[5]);
    }
    trustees.sort();
    assert_eq!(trustees, ["BA", "SY"]);
    // No owner, group or SACL part that could widen it.
    assert!(!sddl.contains("O:") && !sddl.contains("G:") && !sddl.contains("S:"));
    let characteristics = value("DeviceCharacteristics");
    assert_eq!(characteristics.len(), 1);
    let flags = u32::from_str_radix(characteristics[0].trim_start_matches("0x"), 16).unwrap();
    assert_ne!(flags & 0x100, 0, "FILE_DEVICE_SECURE_OPEN");
    // The device is not opened exclusively by one caller by accident, nor
    // given a type that changes the stack's defaults.
    assert!(value("Exclusive").is_empty() && value("DeviceType").is_empty());
}
