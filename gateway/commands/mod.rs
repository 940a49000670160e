//! The `check` and `try` commands. (Stub: the mapping work fills this in.)
pub mod check;
pub mod try_cmd;
