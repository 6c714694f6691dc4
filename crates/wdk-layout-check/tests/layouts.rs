//! Every layout and name `src/` relies on matches Microsoft's metadata, or
//! differs for a listed reason; `docs/wdk-names.md` is this table.

use std::collections::BTreeSet;
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
fn every_constant_matches() {
    let rows = wdk_layout_check::constant_table();
    assert!(rows.len() >= 20);
    let different: Vec<_> = rows.iter().filter(|c| c.ours != c.metadata).collect();
    assert!(different.is_empty(), "constants differ: {different:?}");
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

/// Every `__bindgen_anon_N` chain in `source` (expressions split over lines
/// by rustfmt are joined first), without the leading variable or base.
fn bindgen_chains(source: &str) -> Vec<String> {
    let joined: String = source
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("//"))
        .collect();
    let is_path = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    joined
        .match_indices("__bindgen_anon_")
        .map(|(at, _)| {
            let start = joined[..at].rfind(|c| !is_path(c)).map_or(0, |i| i + 1);
            let end = at
                + joined[at..]
                    .find(|c| !is_path(c))
                    .unwrap_or(joined.len() - at);
            let chain = joined[start..end].trim_start_matches('.');
            chain
                .split_once('.')
                .map_or(chain, |(_, rest)| rest)
                .to_owned()
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn chains_missing_from_table(source: &str) -> Vec<String> {
    let rows: Vec<String> = table()
        .iter()
        .flat_map(|r| r.fields.iter().map(|f| f.standin_path.clone()))
        .collect();
    bindgen_chains(source)
        .into_iter()
        .filter(|chain| !rows.iter().any(|r| r.contains(chain.as_str())))
        .collect()
}

/// Every union path of src/ffi.rs is one of the table's rows.
#[test]
fn every_bindgen_path_of_the_driver_is_in_the_table() {
    let ffi = fs::read_to_string(repo().join("src/ffi.rs")).expect("src/ffi.rs");
    let chains = bindgen_chains(&ffi);
    assert!(
        chains.len() >= 6,
        "src/ffi.rs has its union paths: {chains:?}"
    );
    let missing = chains_missing_from_table(&ffi);
    assert!(
        missing.is_empty(),
        "paths of src/ffi.rs not in the layout table: {missing:?}"
    );
}

#[test]
fn a_path_missing_from_the_table_is_reported() {
    let source = "unsafe {\n    (*irp)\n        .Tail\n        .Overlay\n        .__bindgen_anon_2\n        .__bindgen_anon_1\n        .PacketType\n}\nlet s = io.__bindgen_anon_1.Status;";
    assert_eq!(
        chains_missing_from_table(source),
        ["Overlay.__bindgen_anon_2.__bindgen_anon_1.PacketType"]
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
