//! Where outbound deliveries may connect: the egress IP policy, and the only HTTP client that applies it.
//!
//! A subscriber URL is chosen by a customer, so without a policy it could point the gateway at the cloud
//! metadata service (`169.254.169.254`), Redis on loopback, or anything on the private network (SSRF).
//!
//! **The rule.** An address is refused when it is in `egress.deny`; otherwise it passes when it is in
//! `egress.allow`; otherwise it is refused when it is in a range that is not a public destination
//! (`ip_policy::NOT_GLOBAL`: loopback, RFC 1918, CGNAT, link-local, unspecified, "this network", multicast,
//! broadcast, reserved, documentation, benchmarking, unique-local, ...); otherwise it passes. An explicit
//! deny beats an explicit allow, so `allow: [10.0.0.0/8]` with `deny: [10.0.0.5/32]` opens the network but not
//! that host. IPv4-mapped addresses are IPv4; an IPv6 address that embeds an IPv4 address (IPv4-compatible,
//! IPv4-translated, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`, Teredo server and client) passes only if each
//! embedded address passes too.
//!
//! **Where it is checked.** Where the connection is made, so DNS rebinding cannot slip through between a
//! check and a connect:
//! - host names: in the client's DNS resolver ([`EgressPolicy::client`]), which drops denied addresses and
//!   fails the request when none is left; the connection is then made only to the addresses it returned;
//! - IP-literal URLs skip the resolver: [`EgressPolicy::check_url`] refuses them before anything is sent, and
//!   it refuses non-HTTPS schemes (unless `egress.allow_http`) and URLs carrying credentials;
//! - as a backstop, the client checks the peer address of every new connection before writing a request
//!   on it, so a caller that forgot `check_url` still sends nothing to a denied address.
//!
//! Redirects are not followed: a receiver answering 3xx has failed the delivery (following it would turn the
//! POST into a GET and lose the body, and would be one more destination to police). No proxy is taken from
//! the environment. Every refusal is counted in `hookgate_egress_denied_total{reason}`.

use crate::config;
use crate::ip_policy::{canonical, embedded_v4, not_global, CidrList, V4Form};
use hyper_util::client::legacy::connect::{Connection, HttpInfo};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every outbound request says it is.
pub const USER_AGENT: &str = concat!("hookgate/", env!("CARGO_PKG_VERSION"));

/// A destination the policy refuses. `reason` is a short fixed label (the metric's `reason`); `what` says, in
/// words, what was refused and why (never the URL's credentials or path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressDenied {
    pub reason: &'static str,
    pub what: String,
}

impl std::fmt::Display for EgressDenied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "egress denied: {}", self.what)
    }
}

impl std::error::Error for EgressDenied {}

impl EgressDenied {
    fn new(reason: &'static str, what: impl Into<String>) -> Self {
        Self {
            reason,
            what: what.into(),
        }
    }

    /// Count it, then hand it back: every refusal the caller acts on is counted once.
    fn counted(self) -> Self {
        metrics::counter!("hookgate_egress_denied_total", "reason" => self.reason).increment(1);
        self
    }
}

/// The `EgressDenied` somewhere in a request error's source chain (from the resolver or the connect check).
pub fn egress_denied(err: &reqwest::Error) -> Option<&EgressDenied> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = src {
        if let Some(d) = e.downcast_ref::<EgressDenied>() {
            return Some(d);
        }
        src = e.source();
    }
    None
}

/// Whether a request failed because the policy refused its destination: such a delivery is not retried.
pub fn is_egress_denied(err: &reqwest::Error) -> bool {
    egress_denied(err).is_some()
}

/// The configured policy; cheap to clone.
#[derive(Clone, Debug)]
pub struct EgressPolicy {
    rules: Arc<Rules>,
}

#[derive(Debug)]
struct Rules {
    allow: CidrList,
    deny: CidrList,
    allow_http: bool,
}

impl EgressPolicy {
    /// The policy of the `egress` config section. Fails on an allow entry that opens every address
    /// (`0.0.0.0/0`, `::/0`): that switches the policy off, which must not happen by a typo.
    pub fn new(cfg: &config::Egress) -> anyhow::Result<Self> {
        if let Some(all) = cfg.allow.iter().find(|n| n.prefix_len() == 0) {
            anyhow::bail!(
                "egress.allow: {all} opens every address; list the networks to open instead"
            );
        }
        Ok(Self {
            rules: Arc::new(Rules {
                allow: CidrList::new(&cfg.allow),
                deny: CidrList::new(&cfg.deny),
                allow_http: cfg.allow_http,
            }),
        })
    }

    /// Whether a connection to `ip` is allowed (a refusal is counted).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        self.rules.decide(ip).map_err(EgressDenied::counted)
    }

    /// What can be decided from the URL alone: the scheme (`https`, or `http` with `egress.allow_http`), no
    /// credentials in it (`https://user:pass@host` — use the subscription's `auth`), and, for an IP-literal host,
    /// the address (the WHATWG parser has already turned `0x7f.1` or `2130706433` into `127.0.0.1`). Host
    /// names are checked when they are resolved. A refusal is counted.
    pub fn check_url(&self, url: &Url) -> Result<(), EgressDenied> {
        self.rules.check_url(url).map_err(EgressDenied::counted)
    }

    /// [`Self::check_url`] for validating input (a subscription being created or changed): the same
    /// decision, not counted, since nothing was about to be sent.
    pub fn vet_url(&self, url: &Url) -> Result<(), EgressDenied> {
        self.rules.check_url(url)
    }

    /// `vet_url`, then, for a host name, a resolution: refused if every address it resolves to is denied.
    /// For validating a subscription when it is created (a 422 then beats a failed delivery later); the
    /// delivery itself is still checked at connect time, since DNS answers change. A name that does not
    /// resolve is not the policy's business and passes. Not counted, like `vet_url`.
    pub async fn vet_url_resolved(&self, url: &Url) -> Result<(), EgressDenied> {
        self.vet_url(url)?;
        if let Some(url::Host::Domain(host)) = url.host() {
            if let Err(Resolved::Denied(d)) = resolve(&self.rules, host).await {
                return Err(d);
            }
        }
        Ok(())
    }

    /// A client builder with the policy in place: rustls, the filtering resolver, the connect-time peer check,
    /// no redirects, no proxy, HTTPS only unless `egress.allow_http`, `user-agent: hookgate/<version>`. Add
    /// settings (pool, timeouts); do not replace the resolver, redirect or proxy ones.
    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .use_rustls_tls()
            .dns_resolver(Arc::new(Resolver(self.rules.clone())))
            .connector_layer(PeerCheckLayer(self.rules.clone()))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!self.rules.allow_http)
            .user_agent(USER_AGENT)
    }

    /// The client for outbound deliveries (see `client_builder`). Still call `check_url` before sending: it
    /// refuses an IP-literal destination before any connection is attempted.
    pub fn client(
        &self,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> anyhow::Result<reqwest::Client> {
        Ok(self
            .client_builder()
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .build()?)
    }
}

impl Rules {
    /// The rule of the module doc, applied to the address and to every IPv4 address it embeds.
    fn decide(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        let ip = canonical(ip);
        let mut views: Vec<(IpAddr, Option<V4Form>)> = vec![(ip, None)];
        if let IpAddr::V6(v6) = ip {
            views.extend(
                embedded_v4(v6)
                    .into_iter()
                    .map(|(v4, form)| (IpAddr::V4(v4), Some(form))),
            );
        }
        let name = |view: IpAddr, form: Option<V4Form>| match form {
            None => view.to_string(),
            Some(f) => format!("{ip} (which embeds {view} as {})", f.name()),
        };
        for &(view, form) in &views {
            if self.deny.contains(view) {
                return Err(EgressDenied::new(
                    "deny_list",
                    format!("{} is in egress.deny", name(view, form)),
                ));
            }
        }
        for &(view, form) in &views {
            if self.allow.contains(view) {
                continue;
            }
            if let Some(range) = not_global(view) {
                return Err(EgressDenied::new(
                    range.label,
                    format!("{} is in {}, {}", name(view, form), range.net, range.what),
                ));
            }
        }
        Ok(())
    }

    fn check_url(&self, url: &Url) -> Result<(), EgressDenied> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Err(EgressDenied::new(
                    "scheme",
                    "http:// URLs are refused; use https:// (or set egress.allow_http)",
                ))
            }
            other => {
                return Err(EgressDenied::new(
                    "scheme",
                    format!("scheme `{other}` is refused; only https:// is delivered to"),
                ))
            }
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressDenied::new(
                "userinfo",
                "credentials in the URL are refused; use the subscription's auth",
            ));
        }
        match url.host() {
            None => Err(EgressDenied::new("no_host", "the URL has no host")),
            Some(url::Host::Ipv4(a)) => self.decide(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => self.decide(IpAddr::V6(a)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }
}

/// Why a resolution gave no address to connect to.
enum Resolved {
    Denied(EgressDenied),
    Failed(BoxError),
}

/// The allowed addresses `host` resolves to (port 0: the client puts the URL's port in). Uses the system
/// resolver (`getaddrinfo` through tokio's blocking pool), like reqwest's default: it honours `/etc/hosts`
/// and nsswitch as every other program on the host does, and needs no new dependency; what makes it safe is
/// the filter, not the resolver.
async fn resolve(rules: &Rules, host: &str) -> Result<Vec<SocketAddr>, Resolved> {
    let addrs = tokio::net::lookup_host((host, 0))
        .await
        .map_err(|e| Resolved::Failed(Box::new(e)))?;
    filter(rules, host, addrs)
}

/// The addresses the policy allows, in the resolver's order; an error when none is left.
fn filter(
    rules: &Rules,
    host: &str,
    addrs: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, Resolved> {
    let mut kept = Vec::new();
    let mut denied = None;
    for a in addrs {
        match rules.decide(a.ip()) {
            Ok(()) => kept.push(a),
            Err(d) => {
                tracing::debug!(host, addr = %a.ip(), "egress: resolved address dropped");
                denied.get_or_insert(d);
            }
        }
    }
    match (kept.is_empty(), denied) {
        (false, _) => Ok(kept),
        (true, Some(d)) => Err(Resolved::Denied(EgressDenied::new(
            d.reason,
            format!("{host} resolves only to denied addresses: {}", d.what),
        ))),
        (true, None) => Err(Resolved::Failed(
            format!("{host} resolved to no address").into(),
        )),
    }
}

/// The client's DNS resolver: denied addresses never reach the connector.
struct Resolver(Arc<Rules>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let rules = self.0.clone();
        Box::pin(async move {
            match resolve(&rules, name.as_str()).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                Err(Resolved::Denied(d)) => Err(Box::new(d.counted()) as BoxError),
                Err(Resolved::Failed(e)) => Err(e),
            }
        })
    }
}

/// A connector layer that checks the peer address of each new connection before the client may use it.
#[derive(Clone)]
struct PeerCheckLayer(Arc<Rules>);

impl<S> tower::Layer<S> for PeerCheckLayer {
    type Service = PeerCheck<S>;

    fn layer(&self, inner: S) -> PeerCheck<S> {
        PeerCheck {
            inner,
            rules: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct PeerCheck<S> {
    inner: S,
    rules: Arc<Rules>,
}

impl<S, R> tower::Service<R> for PeerCheck<S>
where
    S: tower::Service<R, Error = BoxError>,
    S::Response: Connection + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let connecting = self.inner.call(req);
        let rules = self.rules.clone();
        Box::pin(async move {
            let conn = connecting.await?;
            let mut extras = http::Extensions::new();
            conn.connected().get_extras(&mut extras);
            let verdict = match extras.get::<HttpInfo>() {
                Some(info) => rules.decide(info.remote_addr().ip()),
                None => Err(EgressDenied::new(
                    "unknown_peer",
                    "the connection's peer address is unknown",
                )),
            };
            match verdict {
                Ok(()) => Ok(conn),
                Err(d) => Err(Box::new(d.counted()) as BoxError),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipnet::IpNet;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn policy(allow: &[&str], deny: &[&str], allow_http: bool) -> EgressPolicy {
        let nets = |v: &[&str]| v.iter().map(|s| s.parse::<IpNet>().unwrap()).collect();
        EgressPolicy::new(&config::Egress {
            allow: nets(allow),
            deny: nets(deny),
            allow_http,
        })
        .unwrap()
    }

    fn reason(p: &EgressPolicy, ip: &str) -> Option<&'static str> {
        p.rules.decide(ip.parse().unwrap()).err().map(|d| d.reason)
    }

    #[test]
    fn each_default_range_is_denied() {
        let p = policy(&[], &[], false);
        let cases = [
            ("0.0.0.0", "this_network"),
            ("0.1.2.3", "this_network"),
            ("10.0.0.1", "private"),
            ("10.255.255.255", "private"),
            ("100.64.0.1", "shared"),
            ("100.127.255.254", "shared"),
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("169.254.169.254", "link_local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "protocol"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "relay"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.7", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("64:ff9b:1::a", "nat64_local"),
            ("100::1", "discard"),
            ("2001:2::1", "benchmarking"),
            ("2001:10::1", "orchid"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("5f00::1", "srv6"),
            ("fc00::1", "unique_local"),
            ("fd12:3456::1", "unique_local"),
            ("fe80::1", "link_local"),
            ("febf::1", "link_local"),
            ("fec0::1", "site_local"),
            ("ff02::1", "multicast"),
            ("ff05::1:3", "multicast"),
        ];
        for (ip, want) in cases {
            assert_eq!(reason(&p, ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn neighbours_of_the_ranges_pass() {
        let p = policy(&[], &[], false);
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "2001:db7:ffff::1",
            "2001:db9::1",
            "fbff::1",
            "fe00::1",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::808:808",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(reason(&p, ip), None, "{ip}");
        }
    }

    #[test]
    fn embedded_ipv4_forms_are_checked() {
        let p = policy(&[], &[], false);
        let cases = [
            // IPv4-mapped: is IPv4
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:a9fe:a9fe", "link_local"),
            ("::ffff:10.0.0.1", "private"),
            // IPv4-compatible (deprecated)
            ("::127.0.0.1", "loopback"),
            ("::10.1.2.3", "private"),
            // IPv4-translated
            ("::ffff:0:127.0.0.1", "loopback"),
            // NAT64 well-known prefix
            ("64:ff9b::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link_local"),
            ("64:ff9b::192.168.0.1", "private"),
            // local-use NAT64: denied as a whole
            ("64:ff9b:1::808:808", "nat64_local"),
            // 6to4: 2002:AABB:CCDD::
            ("2002:7f00:1::1", "loopback"),
            ("2002:a00:1::", "private"),
            ("2002:a9fe:a9fe:1::5", "link_local"),
            // Teredo: server 10.0.0.1 in bits 32..63
            ("2001:0:a00:1::1", "private"),
            // Teredo: client 127.0.0.1 stored inverted (0x80ff_fffe) in the last 32 bits, server public
            ("2001:0:808:808:0:0:80ff:fffe", "loopback"),
        ];
        for (ip, want) in cases {
            assert_eq!(reason(&p, ip), Some(want), "{ip}");
        }
        let d = p
            .rules
            .decide("64:ff9b::a00:1".parse().unwrap())
            .unwrap_err();
        assert!(
            d.what.contains("embeds 10.0.0.1 as NAT64"),
            "the message names the embedded address: {}",
            d.what
        );
        // Teredo with public server and client passes.
        assert_eq!(reason(&p, "2001:0:808:808:0:0:f7f7:f7f7"), None);
    }

    #[test]
    fn allow_opens_and_deny_wins() {
        let p = policy(
            &["127.0.0.0/8", "10.1.0.0/16"],
            &["127.0.0.2/32", "8.8.4.0/24"],
            false,
        );
        assert_eq!(reason(&p, "127.0.0.1"), None);
        assert_eq!(reason(&p, "::ffff:127.0.0.1"), None, "mapped is IPv4");
        assert_eq!(
            reason(&p, "64:ff9b::7f00:1"),
            None,
            "allow opens embedded forms too"
        );
        assert_eq!(reason(&p, "10.1.200.3"), None);
        assert_eq!(reason(&p, "10.2.0.1"), Some("private"));
        assert_eq!(
            reason(&p, "127.0.0.2"),
            Some("deny_list"),
            "deny beats allow"
        );
        assert_eq!(reason(&p, "::ffff:127.0.0.2"), Some("deny_list"));
        assert_eq!(
            reason(&p, "2002:7f00:2::1"),
            Some("deny_list"),
            "deny sees embedded"
        );
        assert_eq!(
            reason(&p, "8.8.4.4"),
            Some("deny_list"),
            "deny adds to the defaults"
        );
        assert_eq!(reason(&p, "8.8.8.8"), None);
        assert_eq!(
            reason(&p, "::1"),
            Some("loopback"),
            "127/8 does not open ::1"
        );
        assert_eq!(reason(&p, "0.0.0.0"), Some("this_network"), "nor 0.0.0.0");
        // A mapped network in the config is the IPv4 network.
        let p = policy(&["10.0.0.0/8"], &["::ffff:10.0.0.5/128"], false);
        assert_eq!(reason(&p, "10.0.0.5"), Some("deny_list"));
        assert_eq!(reason(&p, "10.0.0.6"), None);
        // An IPv6 range opened does not open the IPv4 it embeds.
        let p = policy(&["64:ff9b::/96"], &[], false);
        assert_eq!(reason(&p, "64:ff9b::808:808"), None);
        assert_eq!(reason(&p, "64:ff9b::a00:1"), Some("private"));
    }

    #[test]
    fn allow_everything_is_refused() {
        for all in ["0.0.0.0/0", "::/0"] {
            let err = EgressPolicy::new(&config::Egress {
                allow: vec![all.parse().unwrap()],
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains("opens every address"), "{err}");
        }
    }

    #[test]
    fn urls() {
        let p = policy(&[], &[], false);
        let check = |u: &str| {
            p.rules
                .check_url(&Url::parse(u).unwrap())
                .err()
                .map(|d| d.reason)
        };
        assert_eq!(check("https://hooks.example.com/x"), None);
        assert_eq!(check("https://8.8.8.8:8443/x"), None);
        assert_eq!(check("http://hooks.example.com/x"), Some("scheme"));
        assert_eq!(check("ftp://hooks.example.com/x"), Some("scheme"));
        assert_eq!(check("file:///etc/passwd"), Some("scheme"));
        assert_eq!(
            check("https://user:pw@hooks.example.com/"),
            Some("userinfo")
        );
        assert_eq!(
            check("https://10.0.0.1@hooks.example.com/"),
            Some("userinfo")
        );
        assert_eq!(check("https://10.0.0.1/"), Some("private"));
        assert_eq!(
            check("https://169.254.169.254/latest/meta-data/"),
            Some("link_local")
        );
        assert_eq!(check("https://[::ffff:127.0.0.1]/"), Some("loopback"));
        assert_eq!(check("https://[::1]:8443/"), Some("loopback"));
        assert_eq!(check("https://0x7f.1/"), Some("loopback"));
        assert_eq!(check("https://2130706433/"), Some("loopback"));
        assert_eq!(check("https://0177.0.0.1/"), Some("loopback"));
        assert_eq!(check("https://127.1/"), Some("loopback"));
        assert_eq!(check("https://0/"), Some("this_network"));
        let p = policy(&[], &[], true);
        let check = |u: &str| {
            p.rules
                .check_url(&Url::parse(u).unwrap())
                .err()
                .map(|d| d.reason)
        };
        assert_eq!(check("http://hooks.example.com/x"), None);
        assert_eq!(check("http://127.0.0.1/x"), Some("loopback"));
        assert_eq!(check("gopher://hooks.example.com/"), Some("scheme"));
    }

    #[test]
    fn resolver_keeps_allowed_addresses_only() {
        let p = policy(&["10.9.0.0/16"], &[], false);
        let sa = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        let mixed = [
            sa("127.0.0.1"),
            sa("93.184.215.14"),
            sa("10.9.1.1"),
            sa("::1"),
            sa("2606:2800::1"),
        ];
        let kept = filter(&p.rules, "mixed.example", mixed).ok().unwrap();
        assert_eq!(
            kept,
            vec![sa("93.184.215.14"), sa("10.9.1.1"), sa("2606:2800::1")]
        );
        match filter(
            &p.rules,
            "internal.example",
            [sa("169.254.169.254"), sa("fd00::1")],
        ) {
            Err(Resolved::Denied(d)) => {
                assert_eq!(d.reason, "link_local");
                assert!(
                    d.what.starts_with(
                        "internal.example resolves only to denied addresses: 169.254.169.254"
                    ),
                    "{d}"
                );
            }
            _ => panic!("all denied must be an EgressDenied"),
        }
        assert!(matches!(
            filter(&p.rules, "empty.example", []),
            Err(Resolved::Failed(_))
        ));
    }

    #[test]
    fn every_range_constant_is_a_network() {
        for r in crate::ip_policy::NOT_GLOBAL {
            assert_eq!(r.net, r.net.trunc(), "{} has host bits", r.net);
        }
    }

    /// An address inside a range: the range's first address plus an offset wrapped into its size.
    fn inside(net: IpNet, offset: u128) -> IpAddr {
        match net {
            IpNet::V4(n) => {
                let size = 1u128 << (32 - n.prefix_len());
                IpAddr::V4(Ipv4Addr::from(
                    u32::from(n.network()) + (offset % size) as u32,
                ))
            }
            IpNet::V6(n) => {
                let host_bits = 128 - u32::from(n.prefix_len());
                let size_mask = if host_bits == 128 {
                    u128::MAX
                } else {
                    (1u128 << host_bits) - 1
                };
                IpAddr::V6(Ipv6Addr::from(
                    u128::from(n.network()) | (offset & size_mask),
                ))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// No address inside a default-denied range passes, in any form that embeds it.
        #[test]
        fn nothing_inside_a_denied_range_passes(i in 0..crate::ip_policy::NOT_GLOBAL.len(), off: u128) {
            let p = policy(&[], &[], false);
            let ip = inside(crate::ip_policy::NOT_GLOBAL[i].net, off);
            prop_assert!(p.rules.decide(ip).is_err(), "{} passed", ip);
            if let IpAddr::V4(v4) = ip {
                let b = u32::from(v4);
                let forms = [
                    IpAddr::V6(v4.to_ipv6_mapped()),
                    IpAddr::V6(v4.to_ipv6_compatible()),
                    IpAddr::V6(Ipv6Addr::from(0xffff_0000_0000u128 | u128::from(b))),
                    IpAddr::V6(Ipv6Addr::from((0x64_ff9bu128 << 96) | u128::from(b))),
                    IpAddr::V6(Ipv6Addr::from((0x2002u128 << 112) | (u128::from(b) << 80) | (off & 0xffff_ffff_ffff_ffff_ffff))),
                    IpAddr::V6(Ipv6Addr::from((0x2001_0000u128 << 96) | (u128::from(b) << 64) | (off as u64 as u128 & !0xffff_ffff) | u128::from(!0x0808_0808u32))),
                    IpAddr::V6(Ipv6Addr::from((0x2001_0000u128 << 96) | (0x0808_0808u128 << 64) | u128::from(!b))),
                ];
                for f in forms {
                    prop_assert!(p.rules.decide(f).is_err(), "{} (embedding {}) passed", f, v4);
                }
            }
        }

        /// Against the standard library's own classification, an independent oracle.
        #[test]
        fn std_classification_agrees(v4: u32, v6: u128) {
            let p = policy(&[], &[], false);
            let a = Ipv4Addr::from(v4);
            if a.is_unspecified() || a.is_loopback() || a.is_private() || a.is_link_local()
                || a.is_multicast() || a.is_broadcast() || a.is_documentation()
            {
                prop_assert!(p.rules.decide(IpAddr::V4(a)).is_err(), "{} passed", a);
            }
            let b = Ipv6Addr::from(v6);
            if b.is_unspecified() || b.is_loopback() || b.is_multicast() || b.is_unique_local()
                || b.is_unicast_link_local()
            {
                prop_assert!(p.rules.decide(IpAddr::V6(b)).is_err(), "{} passed", b);
            }
        }
    }
}
