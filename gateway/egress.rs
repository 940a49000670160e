//! PLACEHOLDER until branch `egress` is merged (it owns this file): the agreed API, with a minimal policy.

use crate::config::Egress;
use crate::ip_policy::{canonical, CidrList};
use ipnet::IpNet;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
#[error("egress denied: {0}")]
pub struct EgressDenied(pub String);

pub struct EgressPolicy {
    allow: CidrList,
    deny: CidrList,
    allow_http: bool,
}

const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
];

impl EgressPolicy {
    pub fn new(cfg: &Egress) -> Self {
        let mut deny: Vec<IpNet> = DEFAULT_DENY.iter().filter_map(|s| s.parse().ok()).collect();
        deny.extend(cfg.deny.iter().copied());
        Self {
            allow: CidrList::new(&cfg.allow),
            deny: CidrList::new(&deny),
            allow_http: cfg.allow_http,
        }
    }

    pub fn check_ip(&self, ip: IpAddr) -> Result<(), EgressDenied> {
        let ip = canonical(ip);
        if self.deny.contains(ip) && !self.allow.contains(ip) {
            return Err(EgressDenied(format!("address {ip} is not allowed")));
        }
        Ok(())
    }

    pub fn check_url(&self, url: &url::Url) -> Result<(), EgressDenied> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            s => return Err(EgressDenied(format!("scheme {s} is not allowed"))),
        }
        match url.host() {
            Some(url::Host::Ipv4(a)) => self.check_ip(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => self.check_ip(IpAddr::V6(a)),
            Some(url::Host::Domain(_)) => Ok(()),
            None => Err(EgressDenied("no host".into())),
        }
    }

    pub fn client(
        &self,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> anyhow::Result<reqwest::Client> {
        Ok(reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(timeout)
            .build()?)
    }
}

pub fn is_egress_denied(e: &reqwest::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<EgressDenied>() {
            return true;
        }
        src = s.source();
    }
    false
}
