//! The set of sources being served: the mapping files compiled into inbound heads (and mappings), loaded
//! all-or-nothing so a bad file never replaces a good set.

use crate::inbound::source::HeadProblem;
use crate::inbound::InboundSource;
use crate::mapping::{self, Diagnostic};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

/// Everything loaded from one mappings directory.
pub struct Catalog {
    pub inbound: HashMap<String, Arc<InboundSource>>,
}

/// Load and compile every file in `dir`; any problem anywhere rejects the whole set, with every problem listed.
pub fn load(dir: &Path) -> Result<Catalog, Vec<Diagnostic>> {
    if !dir.is_dir() {
        return Err(vec![Diagnostic::new(
            dir.display().to_string(),
            1,
            1,
            "mappings_dir is not a directory",
        )]);
    }
    let (files, mut problems) = mapping::load_files(&[dir.to_path_buf()]);
    let mut inbound = HashMap::new();
    for f in &files {
        let file = f.head.name.referenced;
        let name = f.head.name.value.clone();
        match InboundSource::build(&f.head) {
            Ok(src) => {
                if inbound.insert(name.clone(), Arc::new(src)).is_some() {
                    problems.push(Diagnostic::new(
                        f.path.display().to_string(),
                        file.line() as u32,
                        file.column() as u32,
                        format!("source `{name}` is declared by more than one file"),
                    ));
                }
            }
            Err(ps) => problems.extend(ps.into_iter().map(|p: HeadProblem| {
                let (line, col) = if p.line == 0 {
                    (file.line() as u32, file.column() as u32)
                } else {
                    (p.line, p.column)
                };
                Diagnostic::new(f.path.display().to_string(), line, col, p.message)
            })),
        }
    }
    if problems.is_empty() {
        Ok(Catalog { inbound })
    } else {
        Err(problems)
    }
}
