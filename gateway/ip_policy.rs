//! Who may talk to us: the inbound source allowlist and the client address behind trusted proxies.
//! (The outbound egress policy, checked in the DNS resolver, belongs here too.)

use http::HeaderMap;
use ipnet::IpNet;
use std::net::IpAddr;

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes plain IPv4, so one CIDR list covers both socket families.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A list of CIDRs; `contains` canonicalises the address first.
#[derive(Clone, Debug, Default)]
pub struct CidrList(Vec<IpNet>);

impl CidrList {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.iter().map(IpNet::trunc).collect())
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

/// An XFF entry: a bare address, or one with a port (`1.2.3.4:5`, `[::1]:5`).
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
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
            client_ip(ip("10.0.0.2"), &HeaderMap::new(), &t),
            ip("10.0.0.2")
        );
    }
}
