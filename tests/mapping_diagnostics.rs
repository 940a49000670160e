//! Golden tests of the diagnostics: each broken file in `tests/mapping_diagnostics/` is checked and
//! its rendered report (its problems; or its warnings, then `ok`) compared exactly with the `.out`
//! file beside it. After an intended change,
//! regenerate with `BLESS=1 cargo test --test mapping_diagnostics` and review the diff.

use hookgate::mapping::parse_source_file;
use std::path::Path;

#[test]
fn golden_diagnostics() {
    let dir = Path::new("tests/mapping_diagnostics");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<_> = std::fs::read_dir(root.join(dir))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 7);
    let bless = std::env::var_os("BLESS").is_some();
    let mut mismatches = Vec::new();
    for name in names {
        let rel = dir.join(&name);
        let text = std::fs::read_to_string(root.join(&rel)).unwrap();
        let report = match parse_source_file(&rel, &text) {
            Ok(file) => file
                .warnings
                .iter()
                .map(|d| d.render() + "\n\n")
                .chain(["ok\n".to_owned()])
                .collect(),
            Err(diags) => diags
                .iter()
                .map(|d| d.render() + "\n")
                .collect::<Vec<_>>()
                .join("\n"),
        };
        let golden = root.join(rel.with_extension("out"));
        if bless {
            std::fs::write(&golden, &report).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != report {
            mismatches.push(format!("--- {}\n{report}", golden.display()));
        }
    }
    assert!(
        mismatches.is_empty(),
        "diagnostics changed (BLESS=1 to accept):\n{}",
        mismatches.join("\n")
    );
}
