//! (stub)
pub fn init(_l: &crate::config::LogConfig) {}
