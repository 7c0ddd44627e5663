//! Client IP derivation (security.md §9) with optional trusted proxies.
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
//!   forwarding headers are honoured only when the TCP peer is inside one of
//!   the trusted CIDRs. The header chosen is the first *present* of
//!   `Forwarded`, `X-Real-Ip`, `X-Forwarded-For`; all its lines are joined
//!   into one hop chain (oldest first) followed by the peer, and the client IP
//!   is the right-most address of that chain that is not itself trusted. If
//!   every hop is trusted, the left-most one is the client; if an entry cannot
//!   be parsed before an untrusted address is found, the right-most trusted
//!   hop so far is the client (a client can never pick an arbitrary IP by
//!   sending garbage). A peer that is not an IP (Unix socket) is not trusted.
//!   The proxies must overwrite or append to the header they use; a header a
//!   trusted proxy passes through untouched is as spoofable as without this
//!   setting.
//!
//! Invariants: never panics on any header content; only the first line of
//! each header counts in apm-server mode; without a trusted peer the derived
//! IP is the peer's whatever the headers say (trusted mode).

use actix_web::http::header::HeaderMap;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};

/// The addresses of a request (security.md §9 step 4).
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
}

impl TrustedProxies {
    /// Parses CIDRs (`10.0.0.0/8`, `2001:db8::/32`) or bare addresses (/32, /128).
    pub fn new(cidrs: &[String]) -> Result<Self, TrustedProxiesError> {
        let nets = cidrs
            .iter()
            .map(|c| crate::config::parse_cidr(c).map_err(TrustedProxiesError))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies { nets })
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

/// Parses an address as apm-server does (security.md §9.3): text starting
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

/// The first line of a header as text (an empty or non-UTF-8 value counts as absent).
fn first(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// apm-server's header rules (netutil.ClientAddrFromHeaders).
fn from_headers(headers: &HeaderMap) -> Option<(IpAddr, u16)> {
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

/// The hop chain of the first present forwarding header (all lines, oldest
/// first), or None when none of the three headers is present.
fn chain(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let lines = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .map(|v| v.to_str().map(str::to_string).unwrap_or_default())
            .filter(|v| !v.trim().is_empty())
            .collect()
    };
    let fwd = lines("forwarded");
    if !fwd.is_empty() {
        return Some(
            fwd.iter()
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
        );
    }
    let real = lines("x-real-ip");
    if let Some(v) = real.first() {
        return Some(vec![parse_ip_port(v.trim())]);
    }
    let xff = lines("x-forwarded-for");
    if !xff.is_empty() {
        return Some(
            xff.iter()
                .flat_map(|l| l.split(','))
                .map(|e| parse_ip_port(e.trim()))
                .collect(),
        );
    }
    None
}

/// Trusted-proxy mode: right-most untrusted hop of `chain` (the peer is trusted).
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

/// Derives the client address of a request (security.md §9; see the module
/// doc for trusted proxies). `peer` is the TCP peer (None for Unix sockets).
pub fn derive(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
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
                chain(headers).and_then(|c| from_chain(&c, trusted))
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
        // Forwarded elements, last `for` in each
        let a = d(&[(
            "Forwarded",
            "for=6.6.6.6, for=198.51.100.9;proto=https, for=10.1.1.1",
        )]);
        assert_eq!(a.client_ip, Some(ip("198.51.100.9")));
        // X-Real-Ip set by the proxy
        assert_eq!(
            d(&[("X-Real-Ip", "198.51.100.9")]).client_ip,
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
}
