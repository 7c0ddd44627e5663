//! Client IP derivation with optional trusted proxies (see docs/security.md).
//!
//! [`derive`] turns the TCP peer address and the request headers into the
//! client IP used for rate limiting, `client.ip` / `source.*` fields and logs.
//!
//! * **No trusted proxies configured** (the default): exactly apm-server's
//!   rules. The first of `Forwarded` (first element, last `for`),
//!   `X-Real-Ip`, `X-Forwarded-For` (first entry) that yields a valid address
//!   wins; the TCP peer then becomes the NAT IP. These headers are trusted
//!   unconditionally, so any client can choose its derived IP.
//! * **`apm-server.auth.anonymous.trusted_proxies` set** (apm-rs addition):
//!   only the address the nearest trusted hop vouches for counts. Forwarding
//!   headers are read only when the TCP peer is inside one of the trusted
//!   CIDRs, and then only the one header the proxies write
//!   (`apm-server.auth.anonymous.trusted_proxy_header`, default
//!   `X-Forwarded-For`); the other two are ignored, since a proxy that only
//!   appends to its own header passes a client's others through untouched.
//!   `X-Forwarded-For` / `Forwarded`: all lines form one hop chain (oldest
//!   first); walking it from the peer backwards through trusted addresses,
//!   the first untrusted address is the client. If every hop is trusted, the
//!   left-most one is the client; an unparsable entry ends the walk at the
//!   trusted hop that wrote it (a client can never pick an arbitrary IP by
//!   sending garbage). `X-Real-Ip`: the last line, which the nearest proxy
//!   must overwrite. A peer that is not an IP (Unix socket) is not trusted.
//!
//! Invariants: never panics on any header content; only the first line of
//! each header counts in apm-server mode; without a trusted peer the derived
//! IP is the peer's whatever the headers say (trusted mode).

use crate::config::ProxyHeader;
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The addresses of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientAddr {
    /// Client IP = source IP (`client.ip`, `source.ip`); None when the peer is
    /// not an IP (Unix socket) and no header gave one.
    pub client_ip: Option<IpAddr>,
    /// Source port (`source.port`); None when unknown or 0 (a header address
    /// without a port).
    pub source_port: Option<u16>,
    /// The TCP peer IP when a forwarding header supplied the client IP
    /// (`source.nat.ip`); None otherwise.
    pub nat_ip: Option<IpAddr>,
}

/// Invalid `trusted_proxies` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `apm-server.auth.anonymous.trusted_proxies` entry: {0}")]
pub struct TrustedProxiesError(pub String);

/// CIDRs of proxies whose forwarding headers are trusted. Empty = trust every
/// peer's headers (apm-server behaviour).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: ProxyHeader,
}

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or bare addresses (/32, /128).
    pub fn new(cidrs: &[String]) -> Result<Self, TrustedProxiesError> {
        let nets = cidrs
            .iter()
            .map(|c| crate::config::parse_cidr(c).map_err(TrustedProxiesError))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies {
            nets,
            header: ProxyHeader::default(),
        })
    }

    /// The proxies and the header they write, from
    /// `apm-server.auth.anonymous.*`.
    pub fn from_config(a: &crate::config::Anonymous) -> Result<Self, TrustedProxiesError> {
        Ok(Self::new(&a.trusted_proxies)?.with_header(a.trusted_proxy_header))
    }

    /// The one forwarding header the proxies write.
    pub fn with_header(mut self, header: ProxyHeader) -> Self {
        self.header = header;
        self
    }

    /// No CIDR configured: apm-server mode.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy (IPv4-mapped IPv6 is matched as IPv4).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        let canon = ip.to_canonical();
        self.nets
            .iter()
            .any(|n| n.contains(ip) || n.contains(&canon))
    }
}

/// The fields of the first `Forwarded` element apm-server reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwarded {
    pub for_: String,
    pub host: String,
    pub proto: String,
}

/// Parses one `Forwarded` value: only the first element (text before the
/// first `,`); `;`-separated `key=value` pairs, keys case-insensitive,
/// whitespace trimmed, quoted values unquoted (malformed → pair ignored),
/// pairs without `=` ignored, the last occurrence of a key wins.
pub fn parse_forwarded(value: &str) -> Forwarded {
    let first = value.split(',').next().unwrap_or("");
    parse_forwarded_element(first)
}

fn parse_forwarded_element(element: &str) -> Forwarded {
    let mut out = Forwarded::default();
    for field in element.split(';') {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let mut value = value.trim().to_string();
        if value.starts_with('"') {
            match unquote(&value) {
                Some(v) => value = v,
                None => continue,
            }
        }
        if key.eq_ignore_ascii_case("for") {
            out.for_ = value;
        } else if key.eq_ignore_ascii_case("host") {
            out.host = value;
        } else if key.eq_ignore_ascii_case("proto") {
            out.proto = value;
        }
    }
    out
}

/// A double-quoted string with Go-style backslash escapes (the subset that
/// can matter in a header); None when malformed.
fn unquote(s: &str) -> Option<String> {
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\n' => return None,
            '\\' => out.push(match chars.next()? {
                '"' => '"',
                '\\' => '\\',
                '\'' => '\'',
                'a' => '\u{7}',
                'b' => '\u{8}',
                'f' => '\u{c}',
                'n' => '\n',
                'r' => '\r',
                't' => '\t',
                'v' => '\u{b}',
                _ => return None,
            }),
            c => out.push(c),
        }
    }
    Some(out)
}

/// Parses an address as apm-server does: text starting
/// with `[` or containing both `.` and `:` must be `host:port`/`[host]:port`
/// with a port; anything else must be a bare IPv4/IPv6 address (port 0).
/// Hostnames, `[::1]` without a port and bare IPv4-mapped IPv6 are invalid.
pub fn parse_ip_port(s: &str) -> Option<(IpAddr, u16)> {
    if s.starts_with('[') || (s.contains('.') && s.contains(':')) {
        s.parse::<SocketAddr>().ok().map(|a| (a.ip(), a.port()))
    } else {
        s.parse::<IpAddr>().ok().map(|ip| (ip, 0))
    }
}

/// Read access to request headers for [`derive`]: actix's header map for
/// HTTP, the `http` crate's for gRPC metadata.
pub trait Headers {
    /// Every line of header `name` (lower-case) in order; a line that is not
    /// visible ASCII is `""`.
    fn lines(&self, name: &str) -> Vec<&str>;
}

impl Headers for HeaderMap {
    fn lines(&self, name: &str) -> Vec<&str> {
        self.get_all(name)
            .map(|v| v.to_str().unwrap_or_default())
            .collect()
    }
}

/// The first line of a header as text (an empty or non-UTF-8 value counts as absent).
fn first(headers: &impl Headers, name: &str) -> Option<String> {
    headers
        .lines(name)
        .first()
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string())
}

/// apm-server's header rules (netutil.ClientAddrFromHeaders).
fn from_headers(headers: &impl Headers) -> Option<(IpAddr, u16)> {
    if let Some(v) = first(headers, "forwarded") {
        let f = parse_forwarded(&v);
        if !f.for_.is_empty() {
            if let Some(a) = parse_ip_port(&f.for_) {
                return Some(a);
            }
        }
    }
    if let Some(v) = first(headers, "x-real-ip") {
        if let Some(a) = parse_ip_port(&v) {
            return Some(a);
        }
    }
    if let Some(v) = first(headers, "x-forwarded-for") {
        let v = match v.find(',') {
            Some(sep) if sep > 0 => &v[..sep],
            _ => v.as_str(),
        };
        if let Some(a) = parse_ip_port(v.trim()) {
            return Some(a);
        }
    }
    None
}

/// One hop of a forwarding chain: an address, or an unparsable entry.
type Hop = Option<(IpAddr, u16)>;

/// The hop chain of `header` (all lines, oldest first; for `X-Real-Ip`
/// the last line), or None when it is absent.
fn chain(headers: &impl Headers, header: ProxyHeader) -> Option<Vec<Hop>> {
    let lines = |name: &str| -> Vec<String> {
        headers
            .lines(name)
            .into_iter()
            .filter(|v| !v.trim().is_empty())
            .map(str::to_string)
            .collect()
    };
    let hops: Vec<Hop> = match header {
        ProxyHeader::Forwarded => lines("forwarded")
            .iter()
            .flat_map(|l| l.split(','))
            .map(|el| {
                let f = parse_forwarded_element(el);
                if f.for_.is_empty() {
                    None
                } else {
                    parse_ip_port(&f.for_)
                }
            })
            .collect(),
        ProxyHeader::XRealIp => lines("x-real-ip")
            .last()
            .map(|v| parse_ip_port(v.trim()))
            .into_iter()
            .collect(),
        ProxyHeader::XForwardedFor => lines("x-forwarded-for")
            .iter()
            .flat_map(|l| l.split(','))
            .map(|e| parse_ip_port(e.trim()))
            .collect(),
    };
    (!hops.is_empty()).then_some(hops)
}

/// Trusted-proxy mode: walking `chain` from the (trusted) peer backwards
/// through trusted hops, the first untrusted address.
fn from_chain(chain: &[Hop], trusted: &TrustedProxies) -> Option<(IpAddr, u16)> {
    let mut last_trusted: Option<(IpAddr, u16)> = None;
    for hop in chain.iter().rev() {
        match hop {
            Some(a) if trusted.contains(&a.0) => last_trusted = Some(*a),
            Some(a) => return Some(*a),
            None => return last_trusted,
        }
    }
    last_trusted
}

/// Derives the client address of a request (see the module doc). `peer` is the TCP peer (None for Unix sockets).
pub fn derive(
    peer: Option<SocketAddr>,
    headers: &impl Headers,
    trusted: &TrustedProxies,
) -> ClientAddr {
    let from_peer = ClientAddr {
        client_ip: peer.map(|p| p.ip()),
        source_port: peer.map(|p| p.port()).filter(|p| *p != 0),
        nat_ip: None,
    };
    let forwarded = if trusted.is_empty() {
        from_headers(headers)
    } else {
        match peer {
            Some(p) if trusted.contains(&p.ip()) => {
                chain(headers, trusted.header).and_then(|c| from_chain(&c, trusted))
            }
            _ => None,
        }
    };
    match forwarded {
        Some((ip, port)) => ClientAddr {
            client_ip: Some(ip),
            source_port: Some(port).filter(|p| *p != 0),
            nat_ip: peer.map(|p| p.ip()),
        },
        None => from_peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn hm(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn hdr_ip(pairs: &[(&str, &str)]) -> Option<(IpAddr, u16)> {
        from_headers(&hm(pairs))
    }

    #[test]
    fn invalid_headers_l97() {
        assert_eq!(hdr_ip(&[]), None);
        assert_eq!(hdr_ip(&[("X-Forwarded-For", "client.invalid")]), None);
        assert_eq!(hdr_ip(&[("X-Real-Ip", "client.invalid")]), None);
        assert_eq!(hdr_ip(&[("Forwarded", "for=client.invalid")]), None);
        assert_eq!(hdr_ip(&[("Forwarded", "128.0.0.5")]), None);
    }

    #[test]
    fn valid_headers_l98_to_l103() {
        assert_eq!(
            hdr_ip(&[("X-Forwarded-For", "123.0.0.1")]),
            Some((ip("123.0.0.1"), 0))
        );
        assert_eq!(
            hdr_ip(&[("X-Forwarded-For", "123.0.0.1, 127.0.0.1")]),
            Some((ip("123.0.0.1"), 0))
        );
        assert_eq!(
            hdr_ip(&[("X-Real-Ip", "123.0.0.1:6060")]),
            Some((ip("123.0.0.1"), 6060))
        );
        assert_eq!(
            hdr_ip(&[("X-Real-Ip", "invalid"), ("X-Forwarded-For", "182.0.0.9")]),
            Some((ip("182.0.0.9"), 0))
        );
        assert_eq!(
            hdr_ip(&[("Forwarded", "for=[2001:db8:cafe::17]:4711")]),
            Some((ip("2001:db8:cafe::17"), 4711))
        );
        assert_eq!(
            hdr_ip(&[("Forwarded", "for=\"[2001:db8:cafe::17]:4711\"")]),
            Some((ip("2001:db8:cafe::17"), 4711))
        );
        assert_eq!(
            hdr_ip(&[("Forwarded", "invalid"), ("X-Forwarded-For", "182.0.0.9")]),
            Some((ip("182.0.0.9"), 0))
        );
        assert_eq!(
            hdr_ip(&[("Forwarded", "invalid"), ("X-Real-Ip", "182.0.0.9")]),
            Some((ip("182.0.0.9"), 0))
        );
        assert_eq!(
            hdr_ip(&[("x-real-ip", "182.0.0.9")]),
            Some((ip("182.0.0.9"), 0))
        );
        // precedence: Forwarded, then X-Real-Ip, then X-Forwarded-For
        assert_eq!(
            hdr_ip(&[
                ("X-Forwarded-For", "3.3.3.3"),
                ("X-Real-Ip", "2.2.2.2"),
                ("Forwarded", "for=1.1.1.1")
            ]),
            Some((ip("1.1.1.1"), 0))
        );
        // only the first line of a header counts
        assert_eq!(
            hdr_ip(&[("X-Real-Ip", "bogus"), ("X-Real-Ip", "2.2.2.2")]),
            None
        );
        // the last `for` of the first element wins; later elements ignored
        assert_eq!(
            hdr_ip(&[("Forwarded", "for=1.1.1.1;for=2.2.2.2, for=3.3.3.3")]),
            Some((ip("2.2.2.2"), 0))
        );
        // X-Forwarded-For starting with a comma: the whole value is parsed
        assert_eq!(hdr_ip(&[("X-Forwarded-For", ",1.1.1.1")]), None);
    }

    #[test]
    fn address_parsing_quirks() {
        assert_eq!(parse_ip_port("1.2.3.4"), Some((ip("1.2.3.4"), 0)));
        assert_eq!(parse_ip_port("1.2.3.4:80"), Some((ip("1.2.3.4"), 80)));
        assert_eq!(parse_ip_port("::1"), Some((ip("::1"), 0)));
        assert_eq!(parse_ip_port("[::1]:80"), Some((ip("::1"), 80)));
        assert_eq!(parse_ip_port("[::1]"), None);
        assert_eq!(parse_ip_port("::ffff:1.2.3.4"), None);
        assert_eq!(parse_ip_port("1.2.3.4:"), None);
        assert_eq!(parse_ip_port("1.2.3.4:99999"), None);
        assert_eq!(parse_ip_port("host.example"), None);
        assert_eq!(parse_ip_port("host:80"), None);
        assert_eq!(parse_ip_port(""), None);
        assert_eq!(parse_ip_port("[1.2.3.4]:80"), None);
    }

    #[test]
    fn forwarded_parsing_l104() {
        let f = parse_forwarded(
            "by=127.0.0.1; for=127.1.1.1; Host=\"forwarded.invalid:443\"; proto=HTTPS",
        );
        assert_eq!(f.for_, "127.1.1.1");
        assert_eq!(f.host, "forwarded.invalid:443");
        assert_eq!(f.proto, "HTTPS");
        assert_eq!(
            parse_forwarded("host=first.invalid, host=second.invalid").host,
            "first.invalid"
        );
        assert_eq!(
            parse_forwarded("what; nonsense=\"; host=first.invalid").host,
            "first.invalid"
        );
        assert_eq!(
            parse_forwarded("host=first.invalid;,").host,
            "first.invalid"
        );
        assert_eq!(parse_forwarded("for=\"a\\\"b\"").for_, "a\"b");
        assert_eq!(parse_forwarded("for=\"bad\\q\"").for_, "");
        assert_eq!(parse_forwarded("").for_, "");
    }

    #[test]
    fn derive_l105_and_peer() {
        let none = TrustedProxies::default();
        let peer: SocketAddr = "10.1.2.3:1234".parse().unwrap();
        let a = derive(
            Some(peer),
            &hm(&[("X-Forwarded-For", "192.168.0.1")]),
            &none,
        );
        assert_eq!(
            a,
            ClientAddr {
                client_ip: Some(ip("192.168.0.1")),
                source_port: None,
                nat_ip: Some(ip("10.1.2.3")),
            }
        );
        let a = derive(Some(peer), &hm(&[]), &none);
        assert_eq!(
            a,
            ClientAddr {
                client_ip: Some(ip("10.1.2.3")),
                source_port: Some(1234),
                nat_ip: None,
            }
        );
        let a = derive(Some(peer), &hm(&[("X-Real-Ip", "1.2.3.4:99")]), &none);
        assert_eq!(a.source_port, Some(99));
        // Unix socket: no IP at all without headers
        assert_eq!(derive(None, &hm(&[]), &none), ClientAddr::default());
        let a = derive(None, &hm(&[("X-Real-Ip", "1.2.3.4")]), &none);
        assert_eq!(a.client_ip, Some(ip("1.2.3.4")));
        assert_eq!(a.nat_ip, None);
    }

    #[test]
    fn trusted_proxies_parse() {
        assert!(TrustedProxies::new(&["10.0.0.0/8".into(), "::1".into()]).is_ok());
        let e = TrustedProxies::new(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(e.to_string().contains("10.0.0.0/33"), "{e}");
        assert!(TrustedProxies::new(&["proxy.example".into()]).is_err());
        let t = TrustedProxies::new(&["10.0.0.0/8".into()]).unwrap();
        assert!(t.contains(&ip("10.9.9.9")));
        assert!(t.contains(&ip("::ffff:10.9.9.9")));
        assert!(!t.contains(&ip("11.0.0.1")));
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into()]).unwrap();
        let peer: SocketAddr = "203.0.113.7:5555".parse().unwrap();
        let spoofs: [&[(&str, &str)]; 6] = [
            &[("Forwarded", "for=1.1.1.1")],
            &[("X-Real-Ip", "1.1.1.1")],
            &[("X-Forwarded-For", "1.1.1.1")],
            &[("x-forwarded-for", "1.1.1.1, 10.0.0.1")],
            &[("Forwarded", "for=10.0.0.1"), ("X-Real-Ip", "10.0.0.2")],
            &[
                ("Forwarded", "for=\"[2001:db8::1]:80\""),
                ("X-Real-Ip", "1.1.1.1"),
                ("X-Forwarded-For", "2.2.2.2"),
            ],
        ];
        for h in spoofs {
            let a = derive(Some(peer), &hm(h), &t);
            assert_eq!(
                a,
                ClientAddr {
                    client_ip: Some(peer.ip()),
                    source_port: Some(5555),
                    nat_ip: None
                },
                "{h:?}"
            );
        }
        // Unix-socket peers are not trusted either.
        assert_eq!(
            derive(None, &hm(&[("X-Real-Ip", "1.1.1.1")]), &t),
            ClientAddr::default()
        );
    }

    #[test]
    fn trusted_peer_rightmost_untrusted() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into()]).unwrap();
        let peer: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        let d = |h: &[(&str, &str)]| derive(Some(peer), &hm(h), &t);
        // client prepends a fake entry; the proxy appended the real client
        let a = d(&[("X-Forwarded-For", "6.6.6.6, 198.51.100.9, 10.0.0.2")]);
        assert_eq!(a.client_ip, Some(ip("198.51.100.9")));
        assert_eq!(a.nat_ip, Some(ip("10.0.0.1")));
        // several header lines form one chain
        let a = d(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("X-Forwarded-For", "198.51.100.9:1000"),
        ]);
        assert_eq!(a.client_ip, Some(ip("198.51.100.9")));
        assert_eq!(a.source_port, Some(1000));
        // Forwarded elements, when the proxies write Forwarded
        let fwd = t.clone().with_header(ProxyHeader::Forwarded);
        let a = derive(
            Some(peer),
            &hm(&[(
                "Forwarded",
                "for=6.6.6.6, for=198.51.100.9;proto=https, for=10.1.1.1",
            )]),
            &fwd,
        );
        assert_eq!(a.client_ip, Some(ip("198.51.100.9")));
        // X-Real-Ip set by the proxy, when the proxies write X-Real-Ip
        let real = t.clone().with_header(ProxyHeader::XRealIp);
        assert_eq!(
            derive(Some(peer), &hm(&[("X-Real-Ip", "198.51.100.9")]), &real).client_ip,
            Some(ip("198.51.100.9"))
        );
        // every hop trusted → left-most
        assert_eq!(
            d(&[("X-Forwarded-For", "10.5.5.5, 10.6.6.6")]).client_ip,
            Some(ip("10.5.5.5"))
        );
        // garbage right of the trusted hops → right-most trusted hop so far
        assert_eq!(
            d(&[("X-Forwarded-For", "6.6.6.6, garbage, 10.6.6.6")]).client_ip,
            Some(ip("10.6.6.6"))
        );
        assert_eq!(
            d(&[("X-Forwarded-For", "6.6.6.6, garbage")]),
            ClientAddr {
                client_ip: Some(ip("10.0.0.1")),
                source_port: Some(5555),
                nat_ip: None
            }
        );
        // no headers → the peer
        assert_eq!(d(&[]).client_ip, Some(ip("10.0.0.1")));
    }

    #[test]
    fn a_header_the_trusted_proxy_did_not_write_never_decides() {
        let t = TrustedProxies::new(&["10.0.0.0/8".into()]).unwrap();
        let peer: SocketAddr = "10.0.0.1:5555".parse().unwrap();
        // nginx appended the real client to X-Forwarded-For and passed the
        // client's own X-Real-Ip and Forwarded through
        let h = hm(&[
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-Ip", "7.7.7.7"),
            ("X-Forwarded-For", "8.8.8.8, 198.51.100.9"),
        ]);
        assert_eq!(
            derive(Some(peer), &h, &t).client_ip,
            Some(ip("198.51.100.9"))
        );
        // a proxy that writes X-Real-Ip: only its value counts
        let real = t.clone().with_header(ProxyHeader::XRealIp);
        let h = hm(&[
            ("Forwarded", "for=6.6.6.6"),
            ("X-Forwarded-For", "8.8.8.8"),
            ("X-Real-Ip", "198.51.100.9"),
        ]);
        assert_eq!(
            derive(Some(peer), &h, &real).client_ip,
            Some(ip("198.51.100.9"))
        );
        // the chosen header absent: the peer, whatever the others say
        let h = hm(&[("Forwarded", "for=6.6.6.6"), ("X-Real-Ip", "7.7.7.7")]);
        assert_eq!(
            derive(Some(peer), &h, &t),
            ClientAddr {
                client_ip: Some(peer.ip()),
                source_port: Some(5555),
                nat_ip: None
            }
        );
    }
}
