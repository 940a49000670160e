//! Receive → verify → store. Never imports `mapping` or `deliver`.
pub mod source;
pub mod verify;
