//! The head of a source file: how a source is received (verification, IP allowlist, dedup, body limit).
//! The mapping module parses the whole file and hands this part over; inbound compiles it.

use bytesize::ByteSize;
use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

use super::verify::VerifySpec;

/// The keys of a source file that belong to the head. The file parser accepts exactly these plus the
/// mapping's own keys (`rules`, `lookups`, `tests`), with these types.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    /// `source:` the name served at `POST /webhooks/{source}`.
    pub name: Spanned<String>,
    /// `verify:` signature or token check; required unless `allow_ips` is set.
    pub verify: Option<VerifySpec>,
    /// `allow_ips:` CIDRs (v4 and v6) the sender may post from; empty means any address.
    pub allow_ips: Vec<IpNet>,
    /// `dedup:` where the sender's event id is, and for how long redeliveries are dropped.
    pub dedup: Option<DedupSpec>,
    /// `max_body:` body size limit for this source, e.g. `2MiB`; the gateway default (1 MiB) otherwise.
    pub max_body: Option<ByteSize>,
}

/// `dedup: { id: $.id, ttl: 72h }` or `dedup: { header: X-GitHub-Delivery }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSpec {
    /// A JSONPath into the body.
    #[serde(default)]
    pub id: Option<Spanned<String>>,
    /// A request header.
    #[serde(default)]
    pub header: Option<String>,
    /// How long an id is remembered; default 72h.
    #[serde(default)]
    pub ttl: Option<Spanned<String>>,
}
