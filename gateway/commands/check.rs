//! `hookgate check [PATH...]`. (Stub.)
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(_paths: &[PathBuf]) -> ExitCode {
    eprintln!("check: not implemented yet");
    ExitCode::FAILURE
}
