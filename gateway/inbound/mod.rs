//! Receive → verify → store. Never imports `mapping` or `deliver`.
pub mod handler;
pub mod handshake;
pub mod metrics;
pub mod pace;
pub mod source;
pub mod verify;

pub use handler::{router, InboundState, Receiver};
pub use source::{InboundSource, SourceRegistry};
