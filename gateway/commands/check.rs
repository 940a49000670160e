//! `hookgate check [PATH...]`: validate mapping files and run their embedded tests. Needs no
//! secrets (verify secrets are references, resolved only when serving). Exit 0 only if all pass.

use crate::mapping::{self, load_files};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(paths: &[PathBuf]) -> ExitCode {
    let stdout = std::io::stdout();
    if check(paths, &mut stdout.lock()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Check `paths` and write the report to `out`; true when every file is valid and every test
/// passes. (The Rust tests call this directly.)
pub fn check(paths: &[PathBuf], out: &mut dyn Write) -> bool {
    let (files, mut diags) = load_files(paths);
    // A directory with no mapping file is a problem here: a CI gate that checks nothing must fail.
    for dir in paths.iter().filter(|p| p.is_dir()) {
        if !files.iter().any(|f| f.path.starts_with(dir))
            && !diags
                .iter()
                .any(|d| std::path::Path::new(&d.file).starts_with(dir))
        {
            diags.push(mapping::Diagnostic::new(
                dir.display().to_string(),
                0,
                0,
                "no mapping files (*.yaml, *.yml) in this directory",
            ));
        }
    }
    for d in &diags {
        let _ = writeln!(out, "{}\n", d.render());
    }
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in &files {
        for outcome in mapping::tests::run(file) {
            match outcome.failure {
                None => passed += 1,
                Some(why) => {
                    failed += 1;
                    let _ = writeln!(
                        out,
                        "{}:{}: test `{}` FAILED",
                        file.path.display(),
                        outcome.line,
                        outcome.name
                    );
                    for line in why.lines() {
                        let _ = writeln!(out, "    {line}");
                    }
                    let _ = writeln!(out);
                }
            }
        }
    }
    let problems = diags.len();
    let _ = writeln!(
        out,
        "{} file(s) ok, {} problem(s); {} test(s) passed, {} failed",
        files.len(),
        problems,
        passed,
        failed
    );
    problems == 0 && failed == 0
}
