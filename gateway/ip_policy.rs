//! Who may talk to us, and whom we may talk to: the inbound source allowlist, the client address behind
//! trusted proxies, and the address ranges outbound deliveries must not reach (`crate::egress` applies them).

use http::HeaderMap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes plain IPv4, so one CIDR list covers both socket families.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An IPv4-mapped network (`::ffff:10.0.0.0/104`) becomes the IPv4 network (`10.0.0.0/8`): addresses are
/// canonicalised before lookup, so the mapped form of a network would otherwise never match anything.
pub fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, n.prefix_len() - 96).map_or(net, IpNet::V4),
            None => net,
        },
        _ => net,
    }
}

/// A list of CIDRs; `contains` canonicalises the address first.
#[derive(Clone, Debug, Default)]
pub struct CidrList(Vec<IpNet>);

impl CidrList {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.iter().map(|n| canonical_net(n.trunc())).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// A source's allowlist: empty allows every address.
#[derive(Clone, Debug, Default)]
pub struct IpAllowlist(CidrList);

impl IpAllowlist {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(CidrList::new(nets))
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || self.0.contains(ip)
    }
}

/// An address range that is not a public destination, with what it is (for the refusal message) and a short
/// label (for the metric).
#[derive(Debug)]
pub struct SpecialRange {
    pub net: IpNet,
    pub label: &'static str,
    pub what: &'static str,
}

const fn v4(
    a: u8,
    b: u8,
    c: u8,
    d: u8,
    len: u8,
    label: &'static str,
    what: &'static str,
) -> SpecialRange {
    SpecialRange {
        net: IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)),
        label,
        what,
    }
}

const fn v6(segs: [u16; 8], len: u8, label: &'static str, what: &'static str) -> SpecialRange {
    let [a, b, c, d, e, f, g, h] = segs;
    SpecialRange {
        net: IpNet::V6(Ipv6Net::new_assert(
            Ipv6Addr::new(a, b, c, d, e, f, g, h),
            len,
        )),
        label,
        what,
    }
}

/// Ranges that are not globally reachable destinations (IANA special-purpose registries, RFC 6890 and
/// successors), plus multicast and the deprecated site-local range. Outbound deliveries refuse them unless
/// `egress.allow` opens them. The IPv6 forms that embed an IPv4 address (mapped, compatible, NAT64, 6to4,
/// Teredo) are not listed: `embedded_v4` extracts the IPv4 address and it is checked against this table.
pub const NOT_GLOBAL: &[SpecialRange] = &[
    v4(
        0,
        0,
        0,
        0,
        8,
        "this_network",
        "\"this network\" (RFC 791); 0.0.0.0 reaches the local host",
    ),
    v4(10, 0, 0, 0, 8, "private", "private-use (RFC 1918)"),
    v4(
        100,
        64,
        0,
        0,
        10,
        "shared",
        "shared address space, carrier-grade NAT (RFC 6598)",
    ),
    v4(127, 0, 0, 0, 8, "loopback", "loopback"),
    v4(
        169,
        254,
        0,
        0,
        16,
        "link_local",
        "link-local, cloud metadata services (RFC 3927)",
    ),
    v4(172, 16, 0, 0, 12, "private", "private-use (RFC 1918)"),
    v4(
        192,
        0,
        0,
        0,
        24,
        "protocol",
        "IETF protocol assignments (RFC 6890)",
    ),
    v4(
        192,
        0,
        2,
        0,
        24,
        "documentation",
        "documentation, TEST-NET-1 (RFC 5737)",
    ),
    v4(
        192,
        88,
        99,
        0,
        24,
        "relay",
        "deprecated 6to4 relay anycast (RFC 7526)",
    ),
    v4(192, 168, 0, 0, 16, "private", "private-use (RFC 1918)"),
    v4(198, 18, 0, 0, 15, "benchmarking", "benchmarking (RFC 2544)"),
    v4(
        198,
        51,
        100,
        0,
        24,
        "documentation",
        "documentation, TEST-NET-2 (RFC 5737)",
    ),
    v4(
        203,
        0,
        113,
        0,
        24,
        "documentation",
        "documentation, TEST-NET-3 (RFC 5737)",
    ),
    v4(224, 0, 0, 0, 4, "multicast", "multicast"),
    v4(255, 255, 255, 255, 32, "broadcast", "limited broadcast"),
    v4(240, 0, 0, 0, 4, "reserved", "reserved (RFC 1112)"),
    v6(
        [0, 0, 0, 0, 0, 0, 0, 0],
        128,
        "unspecified",
        "the unspecified address; it reaches the local host",
    ),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, "loopback", "loopback"),
    v6(
        [0x64, 0xff9b, 1, 0, 0, 0, 0, 0],
        48,
        "nat64_local",
        "local-use IPv4/IPv6 translation (RFC 8215)",
    ),
    v6(
        [0x100, 0, 0, 0, 0, 0, 0, 0],
        64,
        "discard",
        "discard-only (RFC 6666)",
    ),
    v6(
        [0x2001, 2, 0, 0, 0, 0, 0, 0],
        48,
        "benchmarking",
        "benchmarking (RFC 5180)",
    ),
    v6(
        [0x2001, 0x10, 0, 0, 0, 0, 0, 0],
        28,
        "orchid",
        "deprecated ORCHID (RFC 4843)",
    ),
    v6(
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation",
        "documentation (RFC 3849)",
    ),
    v6(
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation",
        "documentation (RFC 9637)",
    ),
    v6(
        [0x5f00, 0, 0, 0, 0, 0, 0, 0],
        16,
        "srv6",
        "SRv6 segment identifiers (RFC 9602)",
    ),
    v6(
        [0xfc00, 0, 0, 0, 0, 0, 0, 0],
        7,
        "unique_local",
        "unique local (RFC 4193)",
    ),
    v6(
        [0xfe80, 0, 0, 0, 0, 0, 0, 0],
        10,
        "link_local",
        "link-local",
    ),
    v6(
        [0xfec0, 0, 0, 0, 0, 0, 0, 0],
        10,
        "site_local",
        "deprecated site-local (RFC 3879)",
    ),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", "multicast"),
];

/// The first range of `NOT_GLOBAL` holding `ip` (canonicalised), if any.
pub fn not_global(ip: IpAddr) -> Option<&'static SpecialRange> {
    let ip = canonical(ip);
    NOT_GLOBAL.iter().find(|r| r.net.contains(&ip))
}

/// How an IPv6 address carries an IPv4 one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum V4Form {
    /// `::a.b.c.d`, deprecated (RFC 4291); `::` and `::1` are not this form.
    Compatible,
    /// `::ffff:0:a.b.c.d`, IPv4-translated (RFC 2765), deprecated.
    Translated,
    /// `64:ff9b::a.b.c.d`, the well-known NAT64 prefix (RFC 6052): a translator connects to the IPv4 address.
    Nat64,
    /// `2002:AABB:CCDD::/48` (RFC 3056): the 6to4 router's IPv4 address.
    SixToFour,
    /// `2001:0:SSSS:SSSS:flags:port:CCCC:CCCC` (RFC 4380): the Teredo server's address.
    TeredoServer,
    /// The Teredo client's public address, stored inverted in the last 32 bits.
    TeredoClient,
}

impl V4Form {
    pub fn name(self) -> &'static str {
        match self {
            V4Form::Compatible => "IPv4-compatible",
            V4Form::Translated => "IPv4-translated",
            V4Form::Nat64 => "NAT64",
            V4Form::SixToFour => "6to4",
            V4Form::TeredoServer => "Teredo server",
            V4Form::TeredoClient => "Teredo client",
        }
    }
}

/// The IPv4 addresses an IPv6 address leads to besides itself (IPv4-mapped addresses are handled by
/// `canonical`, which makes them plain IPv4). A destination is only as safe as the IPv4 it embeds.
pub fn embedded_v4(ip: Ipv6Addr) -> Vec<(Ipv4Addr, V4Form)> {
    let s = ip.segments();
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    match s {
        [0, 0, 0, 0, 0, 0, _, _] if bits > 1 => vec![(low32, V4Form::Compatible)],
        [0, 0, 0, 0, 0xffff, 0, _, _] => vec![(low32, V4Form::Translated)],
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => vec![(low32, V4Form::Nat64)],
        [0x2002, a, b, ..] => vec![(
            Ipv4Addr::from((u32::from(a) << 16) | u32::from(b)),
            V4Form::SixToFour,
        )],
        [0x2001, 0, a, b, ..] => vec![
            (
                Ipv4Addr::from((u32::from(a) << 16) | u32::from(b)),
                V4Form::TeredoServer,
            ),
            (Ipv4Addr::from(!(bits as u32)), V4Form::TeredoClient),
        ],
        _ => Vec::new(),
    }
}

/// The client's address. The socket peer, unless the peer is a trusted proxy: then `X-Forwarded-For` is read
/// from the right, skipping trusted proxies, and the first other address is the client. Anything left of an
/// untrusted or unparsable hop is sender-controlled and ignored.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &CidrList) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.contains(peer) {
        return peer;
    }
    let mut client = peer;
    // Split raw bytes: one unreadable hop must not discard the proxy-appended hops beside it.
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        let hop = std::str::from_utf8(hop).map(str::trim).unwrap_or("");
        match parse_hop(hop) {
            Some(ip) if trusted.contains(ip) => client = ip,
            Some(ip) => return ip,
            None => return client,
        }
    }
    client
}

/// An XFF entry: a bare address, or one with a port (`1.2.3.4:5`, `[::1]:5`), or an IPv6 address in
/// brackets without one (`[::1]`, as RFC 7239's `Forwarded` writes it and some proxies copy).
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(Ok(ip)) = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(str::parse::<std::net::Ipv6Addr>)
    {
        return Some(canonical(IpAddr::V6(ip)));
    }
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| canonical(a.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn nets(v: &[&str]) -> Vec<IpNet> {
        v.iter().map(|s| s.parse().unwrap()).collect()
    }
    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn mapped_v6_is_v4() {
        assert_eq!(canonical(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(canonical(ip("2001:db8::1")), ip("2001:db8::1"));
        let a = IpAllowlist::new(&nets(&["10.1.0.0/16"]));
        assert!(a.allows(ip("::ffff:10.1.2.3")));
        assert!(!a.allows(ip("::ffff:10.2.2.3")));
    }

    #[test]
    fn embedded_v4_of_each_form() {
        let v6 = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            embedded_v4(v6("::10.1.2.3")),
            vec![(v4("10.1.2.3"), V4Form::Compatible)]
        );
        assert_eq!(
            embedded_v4(v6("::ffff:0:10.1.2.3")),
            vec![(v4("10.1.2.3"), V4Form::Translated)]
        );
        assert_eq!(
            embedded_v4(v6("64:ff9b::10.1.2.3")),
            vec![(v4("10.1.2.3"), V4Form::Nat64)]
        );
        assert_eq!(
            embedded_v4(v6("2002:a01:203:5::9")),
            vec![(v4("10.1.2.3"), V4Form::SixToFour)]
        );
        // RFC 4380's example: server 65.54.227.120, client 192.0.2.45 (inverted: 3fff:fdd2).
        assert_eq!(
            embedded_v4(v6("2001:0:4136:e378:8000:63bf:3fff:fdd2")),
            vec![
                (v4("65.54.227.120"), V4Form::TeredoServer),
                (v4("192.0.2.45"), V4Form::TeredoClient)
            ]
        );
        for plain in [
            "::",
            "::1",
            "::ffff:10.1.2.3",
            "2001:db8::1",
            "64:ff9b:1::a01:203",
            "fe80::1",
        ] {
            assert_eq!(embedded_v4(v6(plain)), vec![], "{plain}");
        }
    }

    #[test]
    fn mapped_networks_are_v4_networks() {
        let l = CidrList::new(&nets(&["::ffff:10.0.0.0/104", "::ffff:192.168.1.7/128"]));
        assert!(l.contains(ip("10.200.0.1")));
        assert!(l.contains(ip("::ffff:10.200.0.1")));
        assert!(l.contains(ip("192.168.1.7")));
        assert!(!l.contains(ip("192.168.1.8")));
        assert!(!l.contains(ip("11.0.0.1")));
        // Wider than the mapped block: stays IPv6.
        let wide: IpNet = "::fffe:0:0/95".parse().unwrap();
        assert_eq!(canonical_net(wide), wide);
        assert_eq!(
            canonical_net("2001:db8::/32".parse().unwrap()),
            "2001:db8::/32".parse().unwrap()
        );
    }

    #[test]
    fn allowlist_v6_and_empty() {
        let a = IpAllowlist::new(&nets(&["2001:db8::/32", "3.18.12.63/32"]));
        assert!(a.allows(ip("2001:db8:1::5")));
        assert!(a.allows(ip("3.18.12.63")));
        assert!(!a.allows(ip("3.18.12.64")));
        assert!(!a.allows(ip("2001:db9::1")));
        assert!(IpAllowlist::default().allows(ip("8.8.8.8")));
    }

    #[test]
    fn xff_from_untrusted_peer_is_ignored() {
        let t = CidrList::new(&nets(&["10.0.0.0/8"]));
        assert_eq!(
            client_ip(ip("203.0.113.9"), &xff("3.18.12.63"), &t),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_chain_rightmost_untrusted_wins() {
        let t = CidrList::new(&nets(&["10.0.0.0/8"]));
        // spoofed left part, real client 3.18.12.63, then two trusted proxies
        let h = xff("1.1.1.1, 3.18.12.63, 10.0.0.7");
        assert_eq!(client_ip(ip("10.0.0.2"), &h, &t), ip("3.18.12.63"));
        // several headers are one list
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "1.1.1.1".parse().unwrap());
        h.append("x-forwarded-for", "3.18.12.63, 10.9.9.9".parse().unwrap());
        assert_eq!(client_ip(ip("::ffff:10.0.0.2"), &h, &t), ip("3.18.12.63"));
    }

    #[test]
    fn garbage_hop_stops_the_walk() {
        let t = CidrList::new(&nets(&["10.0.0.0/8"]));
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff("3.18.12.63, nonsense"), &t),
            ip("10.0.0.2")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff("[2001:db8::7]:443"), &t),
            ip("2001:db8::7")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff("[2001:db8::8]"), &t),
            ip("2001:db8::8"),
            "brackets without a port"
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &xff("[10.1.2.3]"), &t),
            ip("10.0.0.2"),
            "brackets hold IPv6 only"
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &t),
            ip("10.0.0.2")
        );
    }
}
