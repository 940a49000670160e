//! hookgate: a webhook gateway.
//!
//! Data flows one way: receive → verify → store → map → deliver; publish → store → deliver.
//! Leaves (`error`, `action`, `ip_policy`, `secret`, `jsonpath`) import nothing of ours; `config`
//! imports only `secret`, `route` and the mapping module's located YAML reader and did-you-mean hints (so
//! config errors are placed and hinted as mapping errors are); only `app` imports everything, and nothing
//! imports `app`.

/// mimalloc instead of the system allocator: the receive path and the mapping engine are dominated by
/// small short-lived allocations (JSON values, header maps), where it is markedly faster than glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod action;
pub mod admin;
pub mod admission;
pub mod app;
pub mod catalog;
pub mod clock;
pub mod commands;
pub mod config;
pub mod deliver;
pub mod egress;
pub mod error;
pub mod gauges;
pub mod inbound;
pub mod ip_policy;
pub mod jsonpath;
pub mod mapping;
pub mod outbound;
pub mod payload;
pub mod redis_conn;
pub mod replica_ack;
pub mod route;
pub mod secret;
pub mod server;
pub mod stream;
pub mod telemetry;
