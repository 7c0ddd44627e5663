//! CORS for RUM routes (see docs/security.md).
//!
//! [`Cors`] holds `apm-server.rum.allow_origins` (simple globs) and
//! `apm-server.rum.allow_headers`. The RUM middleware:
//! * answers every `OPTIONS` request directly with `200`, an empty body and
//!   [`Cors::preflight_headers`], whatever the origin, auth or rate limit;
//! * for other methods, if [`Cors::origin_allowed`] → adds
//!   `Access-Control-Allow-Origin: <Origin>` (even an empty one) and
//!   continues; else answers `403 {"error": forbidden_message(origin)}`.
//!
//! Invariants: the configured pattern is never echoed, only the request's
//! origin, and only when it matches; matching is case-sensitive and `*`
//! matches any run of characters (including none); no other character is
//! special.

/// Header names used by the middleware.
pub const ALLOW_ORIGIN: &str = "Access-Control-Allow-Origin";
pub const MAX_AGE: &str = "Access-Control-Max-Age";
pub const VARY: &str = "Vary";
pub const ALLOW_METHODS: &str = "Access-Control-Allow-Methods";
pub const ALLOW_HEADERS: &str = "Access-Control-Allow-Headers";
pub const EXPOSE_HEADERS: &str = "Access-Control-Expose-Headers";

/// Origin allow-list and extra allowed headers of the RUM routes.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Vec<String>,
    allow_headers_value: String,
}

impl Cors {
    pub fn new(allow_origins: &[String], allow_headers: &[String]) -> Self {
        let allow_headers_value = allow_headers
            .iter()
            .map(String::as_str)
            .chain(["Content-Type", "Content-Encoding", "Accept"])
            .collect::<Vec<_>>()
            .join(", ");
        Cors {
            origins: allow_origins.to_vec(),
            allow_headers_value,
        }
    }

    /// Whether `origin` (the `Origin` header, `""` if absent) matches any pattern.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|p| glob_match(p, origin))
    }

    /// Headers of an `OPTIONS` answer, in order. `Content-Length: 0` is not
    /// included: actix sets it for an empty body.
    pub fn preflight_headers(&self, origin: &str) -> Vec<(&'static str, String)> {
        let mut h = Vec::with_capacity(6);
        if self.origin_allowed(origin) {
            h.push((ALLOW_ORIGIN, origin.to_string()));
        }
        h.push((MAX_AGE, "3600".to_string()));
        h.push((VARY, "Origin".to_string()));
        h.push((ALLOW_METHODS, "POST, OPTIONS".to_string()));
        h.push((ALLOW_HEADERS, self.allow_headers_value.clone()));
        h.push((EXPOSE_HEADERS, "Etag".to_string()));
        h
    }

    /// For non-`OPTIONS` requests: the header to add when allowed, else the
    /// 403 message (`Err`).
    pub fn check(&self, origin: &str) -> Result<(&'static str, String), String> {
        if self.origin_allowed(origin) {
            Ok((ALLOW_ORIGIN, origin.to_string()))
        } else {
            Err(Self::forbidden_message(origin))
        }
    }

    /// The 403 error text for a disallowed origin.
    pub fn forbidden_message(origin: &str) -> String {
        format!("forbidden request: origin: '{origin}' is not allowed")
    }
}

/// `*` matches any run of bytes; everything else is literal and case-sensitive.
fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], headers: &[&str]) -> Cors {
        let o: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
        let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
        Cors::new(&o, &h)
    }

    fn value<'a>(h: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn preflight_allowed_m106() {
        let h = cors(&["w*yz"], &[]).preflight_headers("wxyz");
        assert_eq!(
            h,
            vec![
                (ALLOW_ORIGIN, "wxyz".to_string()),
                (MAX_AGE, "3600".to_string()),
                (VARY, "Origin".to_string()),
                (ALLOW_METHODS, "POST, OPTIONS".to_string()),
                (
                    ALLOW_HEADERS,
                    "Content-Type, Content-Encoding, Accept".to_string()
                ),
                (EXPOSE_HEADERS, "Etag".to_string()),
            ]
        );
    }

    #[test]
    fn preflight_not_allowed_m107() {
        let h = cors(&["xy.*i"], &[]).preflight_headers("xyz");
        assert_eq!(value(&h, ALLOW_ORIGIN), None);
        assert_eq!(value(&h, MAX_AGE), Some("3600"));
        assert_eq!(h.len(), 5);
    }

    #[test]
    fn other_methods_m108_m109() {
        let c = cors(&["*", "testing.*"], &[]);
        for o in ["", "wxyz", "testingx"] {
            assert_eq!(c.check(o), Ok((ALLOW_ORIGIN, o.to_string())));
        }
        let c = cors(&["xyz", "testing.*"], &[]);
        for o in ["", "wxyz", "test"] {
            assert_eq!(
                c.check(o),
                Err(format!("forbidden request: origin: '{o}' is not allowed"))
            );
        }
        assert!(c.origin_allowed("testing.x"));
        assert!(c.origin_allowed("xyz"));
        assert!(!c.origin_allowed("XYZ"));
    }

    #[test]
    fn allow_headers_m110() {
        let h = cors(&["*"], &["Authorization"]).preflight_headers("x");
        assert!(value(&h, ALLOW_HEADERS).unwrap().contains("Authorization"));
        let h = cors(&["*"], &["stick", "door"]).preflight_headers("x");
        assert_eq!(
            value(&h, ALLOW_HEADERS),
            Some("stick, door, Content-Type, Content-Encoding, Accept")
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*", "anything"));
        assert!(!glob_match("", "x"));
        assert!(glob_match("", ""));
        assert!(glob_match(
            "https://*.example.com",
            "https://a.b.example.com"
        ));
        assert!(!glob_match("https://*.example.com", "https://example.com"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(glob_match("a**", "a"));
        // `.` and `?` are literal
        assert!(!glob_match("a.c", "abc"));
        assert!(!glob_match("a?c", "abc"));
        assert!(glob_match("ü*", "über"));
        assert!(glob_match("*ü", "xü"));
    }
}
