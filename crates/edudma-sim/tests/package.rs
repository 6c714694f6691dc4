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
    assert!(hw.iter().any(|l| l == "HKR,,DmaStrategy,0x10003,0"));
    assert_eq!(
        edudma_core::engine::DmaStrategy::from_registry(Some(0)),
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
