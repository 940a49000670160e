//! `hookgate check [PATH...]`: validate mapping files and run their embedded tests. Needs no
//! secrets (verify secrets are references, resolved only when serving). Exit 0 only if all pass;
//! warnings are printed and do not fail it, unless `--deny-warnings`.

use crate::mapping::{self, load_files};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(paths: &[PathBuf], deny_warnings: bool) -> ExitCode {
    let stdout = std::io::stdout();
    let report = check(paths, &mut stdout.lock());
    if report.ok(deny_warnings) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What `check` found, counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub problems: usize,
    pub warnings: usize,
    pub failed: usize,
}

impl Report {
    /// Every file valid and every test passed (and no warning, when they are denied).
    pub fn ok(&self, deny_warnings: bool) -> bool {
        self.problems == 0 && self.failed == 0 && !(deny_warnings && self.warnings > 0)
    }
}

/// Check `paths` and write the report to `out`. (The Rust tests call this directly.)
pub fn check(paths: &[PathBuf], out: &mut dyn Write) -> Report {
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
    let (mut passed, mut failed, mut warnings) = (0usize, 0usize, 0usize);
    for file in &files {
        let outcomes = mapping::tests::run(file);
        let mut file_warnings = file.warnings.clone();
        file_warnings.extend(mapping::tests::unreached_rules(file, &outcomes));
        file_warnings.sort_by_key(|d| (d.line, d.column));
        for d in &file_warnings {
            let _ = writeln!(out, "{}\n", d.render());
        }
        warnings += file_warnings.len();
        for outcome in outcomes {
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
        "{} file(s) ok, {} problem(s), {} warning(s); {} test(s) passed, {} failed",
        files.len(),
        problems,
        warnings,
        passed,
        failed
    );
    Report {
        problems,
        warnings,
        failed,
    }
}
