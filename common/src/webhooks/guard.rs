//! The guard against server-side request forgery through callback URLs.
//!
//! A callback URL is the client's choice, so it must never become a way
//! into the operator's own network. Only `https` is allowed (`http` where
//! configured, for development); URLs carrying credentials are refused.
//! An address literal in the URL is checked at once (the URL parser has
//! already turned decimal, octal and hex forms such as `2130706433` or
//! `0x7f.1` into the address they mean). A host name is resolved once, every
//! address it resolves to is checked, and the request connects to those
//! checked addresses; there is no second lookup a DNS rebinding could
//! change. Refused are loopback, private, link-local (with the cloud
//! metadata address 169.254.169.254), shared (CGNAT), unspecified,
//! multicast, reserved, documentation and benchmarking ranges, IPv6
//! unique-local and site-local, and every IPv6 form that carries one of
//! those IPv4 addresses (mapped, compatible, NAT64, 6to4). Hosts listed in
//! `webhooks.allow_hosts` skip the address checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use url::{Host, Url};

/// Longest callback URL.
pub const MAX_URL_LEN: usize = 2048;

/// Why a callback URL may not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// Not a URL.
    #[error("not a valid URL: {0}")]
    Invalid(String),
    /// Longer than [`MAX_URL_LEN`].
    #[error("longer than {MAX_URL_LEN} characters")]
    TooLong,
    /// A scheme other than https (or http where allowed).
    #[error("scheme `{0}` is not allowed; use {1}")]
    Scheme(String, &'static str),
    /// A user name or password in the URL.
    #[error("must not carry a user name or password")]
    Credentials,
    /// No host.
    #[error("has no host")]
    NoHost,
    /// The host is, or resolves to, an address callbacks may not reach.
    #[error("{host} {via} {addr}, a {kind} address; callbacks may not reach it")]
    Forbidden {
        /// The host as written.
        host: String,
        /// "is" for a literal, "resolves to" for a name.
        via: &'static str,
        /// The offending address.
        addr: IpAddr,
        /// What kind of address it is.
        kind: &'static str,
    },
    /// The host name did not resolve.
    #[error("{host} does not resolve: {reason}")]
    Unresolvable {
        /// The host.
        host: String,
        /// The resolver's answer.
        reason: String,
    },
}

impl GuardError {
    /// Whether a later attempt might pass (a failed lookup might).
    pub fn is_transient(&self) -> bool {
        matches!(self, GuardError::Unresolvable { .. })
    }
}

/// What kind of forbidden address `ip` is, or `None` if callbacks may reach
/// it.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "unspecified (\"this network\")"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "shared (CGNAT)"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 169, 254], 32, "link-local (cloud metadata)"),
        ([169, 254, 0, 0], 16, "link-local"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignment"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved"),
    ];
    RANGES
        .iter()
        .find(|(net, bits, _)| in_v4(ip, *net, *bits))
        .map(|(_, _, kind)| *kind)
}

fn embedded_v4(seg: &[u16]) -> Ipv4Addr {
    Ipv4Addr::new(
        (seg[0] >> 8) as u8,
        seg[0] as u8,
        (seg[1] >> 8) as u8,
        seg[1] as u8,
    )
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if ip.is_loopback() {
        return Some("loopback");
    }
    // ::ffff:0:a.b.c.d (SIIT translated).
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return forbidden_v4(embedded_v4(&s[6..])).or(Some("IPv4-translated"));
    }
    // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return forbidden_v4(embedded_v4(&s[6..])).or(if s[5] == 0 {
            Some("IPv4-compatible")
        } else {
            None
        });
    }
    // NAT64 well-known prefix: the IPv4 address in the last 32 bits.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return forbidden_v4(embedded_v4(&s[6..]));
    }
    // 6to4: the IPv4 address in bits 16..48.
    if s[0] == 0x2002 {
        return forbidden_v4(embedded_v4(&s[1..3]));
    }
    const RANGES: &[(u16, u16, &str)] = &[
        // (first segment, mask, kind)
        (0xfe80, 0xffc0, "link-local"),
        (0xfec0, 0xffc0, "site-local"),
        (0xfc00, 0xfe00, "unique-local"),
        (0xff00, 0xff00, "multicast"),
    ];
    if let Some((_, _, kind)) = RANGES.iter().find(|(net, mask, _)| s[0] & mask == *net) {
        return Some(kind);
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation");
    }
    if s[0] == 0x2001 && s[1] == 0 {
        return Some("Teredo");
    }
    if s[0] == 0x0064 && s[1] == 0xff9b && s[2] == 1 {
        return Some("local-use NAT64");
    }
    if s[..4] == [0x0100, 0, 0, 0] {
        return Some("discard-only");
    }
    if s[0] == 0x2001 && s[1] == 0x0002 && s[2] == 0 {
        return Some("benchmarking");
    }
    if s[0] & 0xfff0 == 0x3ff0 {
        return Some("documentation");
    }
    None
}

/// A callback URL that passed the checks that need no lookup.
#[derive(Debug, Clone)]
pub struct Target {
    /// The parsed URL.
    pub url: Url,
    /// The host as the URL names it (an IPv6 address without brackets).
    pub host: String,
    /// The port, explicit or the scheme's.
    pub port: u16,
    /// The host is an address literal.
    pub literal: Option<IpAddr>,
    /// The host is on the allowlist: no address checks.
    pub allowed: bool,
}

/// The checks, as configured.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow_http: bool,
    allow_hosts: Vec<String>,
}

fn bare(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// What the configuration says about callback targets: the guard's input,
/// so that the guard needs nothing else of the configuration
/// (`webhooks` settings convert into it).
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy<'a> {
    /// Allows `http://` callback URLs (development and tests only).
    pub allow_http: bool,
    /// Hosts exempt from the address checks, as written in URLs.
    pub allow_hosts: &'a [String],
}

impl Guard {
    /// The guard `policy` describes (the `webhooks` settings are one).
    pub fn new<'a>(policy: impl Into<Policy<'a>>) -> Self {
        let policy = policy.into();
        Self {
            allow_http: policy.allow_http,
            allow_hosts: policy.allow_hosts.iter().map(|h| bare(h)).collect(),
        }
    }

    /// Whether `http://` callback URLs are accepted besides `https://`.
    pub fn allows_http(&self) -> bool {
        self.allow_http
    }

    fn allowed(&self, host: &str, literal: Option<IpAddr>) -> bool {
        self.allow_hosts.iter().any(|a| {
            *a == host || matches!((literal, a.parse::<IpAddr>()), (Some(ip), Ok(b)) if ip == b)
        })
    }

    /// Checks what can be checked without a lookup: form, scheme,
    /// credentials, and an address literal's kind.
    pub fn parse(&self, raw: &str) -> Result<Target, GuardError> {
        // Characters of the URL as the client wrote it, as the API's schema
        // counts them (`maxLength`).
        if raw.chars().count() > MAX_URL_LEN {
            return Err(GuardError::TooLong);
        }
        self.parse_form(raw)
    }

    /// [`Guard::parse`] but for the length: for a URL [`Guard::parse`]
    /// accepted and normalised (percent-encoding may lengthen it).
    fn parse_form(&self, raw: &str) -> Result<Target, GuardError> {
        let url = Url::parse(raw).map_err(|e| GuardError::Invalid(e.to_string()))?;
        let wanted = if self.allow_http {
            "https or http"
        } else {
            "https"
        };
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            other => return Err(GuardError::Scheme(other.to_string(), wanted)),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(GuardError::Credentials);
        }
        let (host, literal) = match url.host() {
            None => return Err(GuardError::NoHost),
            Some(Host::Domain(d)) => (bare(d), None),
            Some(Host::Ipv4(ip)) => (ip.to_string(), Some(IpAddr::V4(ip))),
            Some(Host::Ipv6(ip)) => (ip.to_string(), Some(IpAddr::V6(ip))),
        };
        if host.is_empty() {
            return Err(GuardError::NoHost);
        }
        // A name that is an address in another spelling the URL parser
        // leaves alone (e.g. with a trailing dot) is still that address.
        let literal = literal.or_else(|| host.parse::<IpAddr>().ok());
        let allowed = self.allowed(&host, literal);
        if let (Some(ip), false) = (literal, allowed) {
            if let Some(kind) = forbidden_kind(ip) {
                return Err(GuardError::Forbidden {
                    host,
                    via: "is",
                    addr: ip,
                    kind,
                });
            }
        }
        let port = url.port_or_known_default().unwrap_or(443);
        Ok(Target {
            url,
            host,
            port,
            literal,
            allowed,
        })
    }

    /// Checks every address a host name resolved to.
    pub fn check_resolved(
        &self,
        target_host: &str,
        addrs: &[SocketAddr],
    ) -> Result<(), GuardError> {
        if self.allowed(&bare(target_host), None) {
            return Ok(());
        }
        for a in addrs {
            if let Some(kind) = forbidden_kind(a.ip()) {
                return Err(GuardError::Forbidden {
                    host: target_host.to_string(),
                    via: "resolves to",
                    addr: a.ip(),
                    kind,
                });
            }
        }
        Ok(())
    }

    /// Resolves a host name once and checks every address; the caller
    /// connects to exactly these.
    pub async fn resolve(
        &self,
        host: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<Vec<SocketAddr>, GuardError> {
        let unresolvable = |reason: String| GuardError::Unresolvable {
            host: host.to_string(),
            reason,
        };
        let addrs: Vec<SocketAddr> =
            tokio::time::timeout(timeout, tokio::net::lookup_host((host, port)))
                .await
                .map_err(|_| unresolvable(format!("no answer within {timeout:?}")))?
                .map_err(|e| unresolvable(e.to_string()))?
                .collect();
        if addrs.is_empty() {
            return Err(unresolvable("no addresses".into()));
        }
        self.check_resolved(host, &addrs)?;
        Ok(addrs)
    }

    /// The full check at submit time: [`Guard::parse`], and for a host name
    /// not on the allowlist, one lookup whose addresses must all pass. A
    /// name that does not resolve now is accepted; the dispatcher checks
    /// again before every attempt.
    pub async fn check_submitted(&self, raw: &str) -> Result<Url, GuardError> {
        let t = self.parse_form(raw)?;
        if t.literal.is_none() && !t.allowed {
            match self.resolve(&t.host, t.port, Duration::from_secs(2)).await {
                Ok(_) | Err(GuardError::Unresolvable { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(t.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Guard {
        Guard::default()
    }

    fn dev() -> Guard {
        Guard::new(Policy {
            allow_http: true,
            allow_hosts: &["127.0.0.1".into(), "[::1]".into(), "Receiver.Local".into()],
        })
    }

    fn refused_kind(g: &Guard, url: &str) -> &'static str {
        match g.parse(url) {
            Err(GuardError::Forbidden { kind, .. }) => kind,
            other => panic!("{url}: expected a forbidden address, got {other:?}"),
        }
    }

    #[test]
    fn address_literals_in_every_spelling_are_refused() {
        let g = strict();
        for (url, kind) in [
            ("https://127.0.0.1/", "loopback"),
            ("https://127.1/", "loopback"),
            ("https://2130706433/", "loopback"),
            ("https://0x7f000001/", "loopback"),
            ("https://0x7f.0.0.1/", "loopback"),
            ("https://0177.0.0.01/", "loopback"),
            ("https://017700000001/", "loopback"),
            ("https://0/", "unspecified (\"this network\")"),
            ("https://0.0.0.0:8080/", "unspecified (\"this network\")"),
            ("https://10.1.2.3/", "private"),
            ("https://172.16.0.1/", "private"),
            ("https://172.31.255.255/", "private"),
            ("https://192.168.1.1/hook", "private"),
            (
                "https://169.254.169.254/latest/meta-data/",
                "link-local (cloud metadata)",
            ),
            ("https://2852039166/", "link-local (cloud metadata)"),
            (
                "https://0xa9.0xfe.0xa9.0xfe/",
                "link-local (cloud metadata)",
            ),
            ("https://169.254.1.1/", "link-local"),
            ("https://100.64.0.1/", "shared (CGNAT)"),
            ("https://224.0.0.1/", "multicast"),
            ("https://255.255.255.255/", "reserved"),
            ("https://[::1]/", "loopback"),
            ("https://[0:0:0:0:0:0:0:1]/", "loopback"),
            ("https://[::]/", "unspecified"),
            ("https://[::ffff:127.0.0.1]/", "loopback"),
            ("https://[::ffff:7f00:1]/", "loopback"),
            (
                "https://[::ffff:169.254.169.254]/",
                "link-local (cloud metadata)",
            ),
            ("https://[::ffff:10.0.0.1]/", "private"),
            ("https://[::127.0.0.1]/", "loopback"),
            (
                "https://[64:ff9b::a9fe:a9fe]/",
                "link-local (cloud metadata)",
            ),
            ("https://[2002:7f00:1::]/", "loopback"),
            ("https://[fe80::1]/", "link-local"),
            ("https://[fd00:ec2::254]/", "unique-local"),
            ("https://[fc00::1]/", "unique-local"),
            ("https://[fec0::1]/", "site-local"),
            ("https://[ff02::1]/", "multicast"),
            ("https://[2001:db8::1]/", "documentation"),
            ("https://[3fff::1]/", "documentation"),
            ("https://[2001:2::1]/", "benchmarking"),
            ("https://[::ffff:0:7f00:1]/", "loopback"),
            ("https://[::ffff:0:808:808]/", "IPv4-translated"),
        ] {
            assert_eq!(refused_kind(&g, url), kind, "{url}");
        }
    }

    #[test]
    fn public_addresses_and_names_pass_the_static_check() {
        let g = strict();
        for url in [
            "https://93.184.215.14/",
            "https://[2606:4700::1111]/x",
            "https://[::ffff:8.8.8.8]/",
            "https://hooks.example.com/infq?x=1",
            "https://8.8.8.8:8443/",
        ] {
            let t = g.parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert!(!t.allowed);
        }
    }

    #[test]
    fn scheme_credentials_and_form_are_checked() {
        let g = strict();
        assert!(matches!(
            g.parse("http://hooks.example.com/"),
            Err(GuardError::Scheme(s, "https")) if s == "http"
        ));
        for url in [
            "ftp://x.example/",
            "file:///etc/passwd",
            "gopher://x/",
            "javascript:alert(1)",
        ] {
            assert!(
                matches!(
                    g.parse(url),
                    Err(GuardError::Scheme(..) | GuardError::NoHost)
                ),
                "{url}"
            );
        }
        assert_eq!(
            g.parse("https://user:pw@hooks.example.com/").unwrap_err(),
            GuardError::Credentials
        );
        assert_eq!(
            g.parse("https://good.example@127.0.0.1/").unwrap_err(),
            GuardError::Credentials
        );
        assert!(matches!(g.parse("not a url"), Err(GuardError::Invalid(_))));
        assert!(matches!(g.parse(""), Err(GuardError::Invalid(_))));
        let long = format!("https://x.example/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(g.parse(&long).unwrap_err(), GuardError::TooLong);
    }

    #[test]
    fn the_allowlist_exempts_only_its_hosts() {
        let g = dev();
        assert!(g.parse("http://127.0.0.1:9000/hook").unwrap().allowed);
        assert!(g.parse("http://[::1]:9000/hook").unwrap().allowed);
        assert!(g.parse("http://receiver.local/").unwrap().allowed);
        // Another spelling of an allowed address is that address.
        assert!(g.parse("http://2130706433:9000/").unwrap().allowed);
        assert_eq!(refused_kind(&g, "http://127.0.0.2/"), "loopback");
        assert_eq!(
            refused_kind(&g, "http://169.254.169.254/"),
            "link-local (cloud metadata)"
        );
        let addrs = ["127.0.0.1:80".parse().unwrap()];
        assert!(g.check_resolved("receiver.local", &addrs).is_ok());
        assert!(matches!(
            g.check_resolved("evil.example", &addrs),
            Err(GuardError::Forbidden {
                via: "resolves to",
                ..
            })
        ));
    }

    #[test]
    fn one_bad_address_among_many_refuses_the_name() {
        let g = strict();
        let addrs: Vec<SocketAddr> = ["93.184.215.14:443", "10.0.0.5:443"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let err = g.check_resolved("mixed.example", &addrs).unwrap_err();
        assert!(err.to_string().contains("10.0.0.5"), "{err}");
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused() {
        let err = strict()
            .check_submitted("https://localhost:8443/hook")
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                GuardError::Forbidden {
                    via: "resolves to",
                    kind: "loopback",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("localhost resolves to"), "{err}");
        let err = strict()
            .resolve("localhost", 443, Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(matches!(err, GuardError::Forbidden { .. }));
    }
}
