//! Every layout and name `src/` relies on matches Microsoft's metadata, or
//! differs for a listed reason; `docs/wdk-names.md` is this table.

use std::fs;
use std::path::PathBuf;

use wdk_layout_check::{KNOWN_DIFFERENCES, known, nesting_matches, render_markdown, table};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_layout_matches_or_is_explained() {
    let mut failures = Vec::new();
    let mut used_known = 0;
    for row in table() {
        for (what, (a, b)) in [("size", row.sizes), ("align", row.aligns)] {
            match (a == b, known(row.name, what)) {
                (true, None) => {}
                (false, Some(_)) => used_known += 1,
                (false, None) => {
                    failures.push(format!("{} {what}: stand-in {a}, WDK {b}", row.name))
                }
                (true, Some(_)) => failures.push(format!(
                    "{} {what}: listed as different but equal",
                    row.name
                )),
            }
        }
        for f in &row.fields {
            let same = f.standin_offset == f.metadata_offset
                && nesting_matches(&f.standin_path, &f.metadata_path);
            match (same, known(row.name, &f.standin_path)) {
                (true, None) => {}
                (false, Some(_)) => used_known += 1,
                (false, None) => failures.push(format!(
                    "{}.{} (windows-sys {}): offset {} vs {}",
                    row.name, f.standin_path, f.metadata_path, f.standin_offset, f.metadata_offset
                )),
                (true, Some(_)) => failures.push(format!(
                    "{}.{}: listed as different but equal",
                    row.name, f.standin_path
                )),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "layout differences:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        used_known,
        KNOWN_DIFFERENCES.len(),
        "a listed difference names no row"
    );
}

#[test]
fn nesting_rule_rejects_wrong_anonymous_steps() {
    assert!(nesting_matches(
        "Tail.Overlay.__bindgen_anon_2.__bindgen_anon_1.X",
        "Tail.Overlay.Anonymous2.Anonymous.X"
    ));
    assert!(!nesting_matches(
        "Tail.Overlay.__bindgen_anon_1.X",
        "Tail.Overlay.Anonymous2.X"
    ));
    assert!(!nesting_matches("A.__bindgen_anon_1.X", "A.X"));
    assert!(nesting_matches(
        "Read.ByteOffset.QuadPart",
        "Read.ByteOffset"
    ));
    assert!(!nesting_matches("Read.Length", "Read.ByteOffset"));
}

/// Every union path of src/ffi.rs is one of the table's rows.
#[test]
fn every_bindgen_path_of_the_driver_is_in_the_table() {
    let ffi = fs::read_to_string(repo().join("src/ffi.rs")).expect("src/ffi.rs");
    let rows: Vec<String> = table()
        .iter()
        .flat_map(|r| r.fields.iter().map(|f| f.standin_path.clone()))
        .collect();
    // Join each expression split over lines by rustfmt, then take every
    // `.a.__bindgen_anon_N.b...` chain.
    let joined: String = ffi
        .lines()
        .map(|l| l.trim())
        .filter(|l| !l.starts_with("//"))
        .collect::<Vec<_>>()
        .join("");
    let mut missing = Vec::new();
    for (at, _) in joined.match_indices("__bindgen_anon_") {
        let start = joined[..at]
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
            .map_or(0, |i| i + 1);
        let end = at
            + joined[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(joined.len() - at);
        let chain = joined[start..end].trim_start_matches('.');
        let chain = chain.split_once('.').map_or(chain, |(_, rest)| rest);
        if !rows
            .iter()
            .any(|r| r.starts_with(chain) || r.contains(chain))
        {
            missing.push(chain.to_owned());
        }
    }
    assert!(
        missing.is_empty(),
        "paths of src/ffi.rs not in the layout table: {missing:?}"
    );
}

#[test]
fn docs_wdk_names_is_the_table() {
    let rendered = render_markdown(&table());
    let path = repo().join("docs/wdk-names.md");
    if std::env::var_os("WDK_NAMES_BLESS").is_some() {
        fs::write(&path, &rendered).expect("write docs/wdk-names.md");
    }
    let on_disk = fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "docs/wdk-names.md is not the table this test renders; run \
         WDK_NAMES_BLESS=1 bash scripts/windows-check.sh and commit the result"
    );
}
