//! Parsing of the `Authorization` header, as apm-server does it: the scheme is the
//! text before the first space (case-sensitive), the token everything after.

pub const BEARER: &str = "Bearer";
pub const API_KEY: &str = "ApiKey";

/// Returns `(kind, token)`; `("", "")` when the header is absent or unparsable.
pub fn parse(header: Option<&str>) -> (&str, &str) {
    match header.and_then(|h| h.split_once(' ')) {
        Some((kind, token)) if !kind.is_empty() => (kind, token),
        _ => ("", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        // upstream case F.59
        assert_eq!(parse(Some("Bearer abc123")), ("Bearer", "abc123"));
        assert_eq!(parse(Some("Bearer a b")), ("Bearer", "a b"));
        assert_eq!(parse(Some("Bearer")), ("", ""));
        assert_eq!(parse(Some(" Bearer x")), ("", ""));
        assert_eq!(parse(Some("abc")), ("", ""));
        assert_eq!(parse(Some("bearer x")), ("bearer", "x"));
        assert_eq!(parse(None), ("", ""));
    }
}
