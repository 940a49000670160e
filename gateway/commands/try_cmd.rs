//! `hookgate try MAPPING --payload FILE [--header 'Name: value']...`. (Stub.)
use std::path::Path;
use std::process::ExitCode;

pub fn run(_mapping: &Path, _payload: &Path, _headers: &[String]) -> ExitCode {
    eprintln!("try: not implemented yet");
    ExitCode::FAILURE
}
