//! Mapping files: the declarative JSONPath language. Pure: no IO beyond what the caller hands in.
//! (Stub: parses the head only; the mapping work replaces this with the real language.)

use crate::inbound::source::{DedupSpec, SourceSpec};
use crate::inbound::verify::VerifySpec;
use bytesize::ByteSize;
use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::path::Path;

/// One problem in a file, shown as `file:line:col: message`.
#[derive(Clone, Debug)]
pub struct Diagnostic {
    pub file: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(
        file: impl Into<String>,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line,
            column,
            message: message.into(),
            hint: None,
        }
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )?;
        if let Some(h) = &self.hint {
            write!(f, " (hint: {h})")?;
        }
        Ok(())
    }
}

/// The compiled rules of one source.
#[derive(Debug, Default)]
pub struct Mapping;

/// A parsed and compiled source file.
#[derive(Debug)]
pub struct SourceFile {
    pub path: std::path::PathBuf,
    pub head: SourceSpec,
    pub mapping: Mapping,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    source: Spanned<String>,
    #[serde(default)]
    verify: Option<VerifySpec>,
    #[serde(default)]
    allow_ips: Vec<IpNet>,
    #[serde(default)]
    dedup: Option<DedupSpec>,
    #[serde(default)]
    max_body: Option<ByteSize>,
    #[serde(default)]
    #[allow(dead_code)]
    rules: Option<serde_json::Value>,
    #[serde(default)]
    #[allow(dead_code)]
    tests: Option<serde_json::Value>,
}

/// Parse and compile one source file; every problem found is returned.
pub fn parse_source_file(path: &Path, text: &str) -> Result<SourceFile, Vec<Diagnostic>> {
    let file = path.display().to_string();
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
        let (line, col) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        vec![Diagnostic::new(
            &file,
            line as u32,
            col as u32,
            e.to_string(),
        )]
    })?;
    Ok(SourceFile {
        path: path.to_path_buf(),
        head: SourceSpec {
            name: raw.source,
            verify: raw.verify,
            allow_ips: raw.allow_ips,
            dedup: raw.dedup,
            max_body: raw.max_body,
        },
        mapping: Mapping,
    })
}

/// Expand directories to their `*.yaml` files (top level, dot entries skipped), parse every file, and
/// return what parsed along with every problem of every file.
pub fn load_files(paths: &[std::path::PathBuf]) -> (Vec<SourceFile>, Vec<Diagnostic>) {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(p) {
                let mut v: Vec<_> = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| {
                        let n = f.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        !n.starts_with('.') && (n.ends_with(".yaml") || n.ends_with(".yml"))
                    })
                    .collect();
                v.sort();
                files.extend(v);
            }
        } else {
            files.push(p.clone());
        }
    }
    let (mut ok, mut errs) = (Vec::new(), Vec::new());
    for f in files {
        match std::fs::read_to_string(&f) {
            Ok(t) => match parse_source_file(&f, &t) {
                Ok(sf) => ok.push(sf),
                Err(d) => errs.extend(d),
            },
            Err(e) => errs.push(Diagnostic::new(
                f.display().to_string(),
                1,
                1,
                e.to_string(),
            )),
        }
    }
    (ok, errs)
}
