//! Bundle-path normalisation (docs/sourcemaps.md, "Mapping one frame" and
//! "Metadata index and lookup"): cleaning a
//! frame's `abs_path`, the URL path of a bundle path, and stripping query and
//! fragment.
//!
//! Invariants: every function is total (never fails; an unparsable input is
//! used as is) and idempotent (`clean(clean(p)) == clean(p)`).

use url::Url;

/// Go's `path.Clean` (lexical): collapses `//`, resolves `.` and `..`,
/// drops a trailing `/`. An empty path stays empty (Go would give `.`; we
/// only clean non-empty paths).
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return String::new();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|s| *s != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            s => out.push(s),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_string(),
        (false, false) => joined,
    }
}

/// Splits a relative reference into (path, query-and-fragment suffix).
fn split_suffix(s: &str) -> (&str, &str) {
    match s.find(['?', '#']) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    }
}

/// An absolute URL (scheme and host), if `s` is one.
fn absolute(s: &str) -> Option<Url> {
    let u = Url::parse(s).ok()?;
    (!u.cannot_be_a_base()).then_some(u)
}

/// The bundle path of a frame's `abs_path`: the URL with its path
/// lexically cleaned, query and fragment kept.
pub fn clean(abs_path: &str) -> String {
    if let Some(mut u) = absolute(abs_path) {
        let cleaned = clean_path(u.path());
        u.set_path(&cleaned);
        return u.to_string();
    }
    if Url::parse(abs_path).is_ok() {
        // e.g. `data:` or `mailto:` URLs: nothing to clean
        return abs_path.to_string();
    }
    let (path, suffix) = split_suffix(abs_path);
    if path.is_empty() {
        return abs_path.to_string();
    }
    format!("{}{suffix}", clean_path(path))
}

/// The URL's path component (no query, no fragment), if `s` is a URL or a
/// relative reference whose path differs from `s`.
pub fn url_path(s: &str) -> Option<String> {
    let p = match absolute(s) {
        Some(u) => u.path().to_string(),
        None if Url::parse(s).is_ok() => return None,
        None => split_suffix(s).0.to_string(),
    };
    (p != s).then_some(p)
}

/// `s` without query and fragment, path re-cleaned.
pub fn strip_query_fragment(s: &str) -> String {
    if let Some(mut u) = absolute(s) {
        u.set_query(None);
        u.set_fragment(None);
        let cleaned = clean_path(u.path());
        u.set_path(&cleaned);
        return u.to_string();
    }
    let (path, _) = split_suffix(s);
    clean_path(path)
}

/// Kibana's normalisation of an uploaded `bundle_filepath`: absolute
/// URLs in serialised form (dot segments resolved), anything else verbatim.
pub fn normalize_upload(bundle_filepath: &str) -> String {
    match absolute(bundle_filepath) {
        Some(u) => u.to_string(),
        None => bundle_filepath.to_string(),
    }
}

/// Lookup aliases of a stored bundle path: for absolute URLs, the URL
/// without query/fragment (if that differs) and the bare URL path.
pub fn aliases(stored: &str) -> Vec<String> {
    let Some(u) = absolute(stored) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut bare = u.clone();
    bare.set_query(None);
    bare.set_fragment(None);
    let bare = bare.to_string();
    if bare != stored {
        out.push(bare);
    }
    let path = u.path().to_string();
    if path != stored {
        out.push(path);
    }
    out
}

/// Percent-encodes `s` for use as one URL path segment.
pub fn escape_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_like_go() {
        assert_eq!(clean_path("/a//b/./c/../d"), "/a/b/d");
        assert_eq!(clean_path("a/../../b"), "../b");
        assert_eq!(clean_path("/../a"), "/a");
        assert_eq!(clean_path("bundle.js"), "bundle.js");
        assert_eq!(
            clean("http://localhost:8000/test/../test/e2e/general-usecase/bundle.js.map"),
            "http://localhost:8000/test/e2e/general-usecase/bundle.js.map"
        );
        assert_eq!(
            clean("http://example.com/.././bundle/././path/../path"),
            "http://example.com/bundle/path"
        );
        assert_eq!(
            clean("http://example.com//a//b.js?x=1#f"),
            "http://example.com/a/b.js?x=1#f"
        );
        assert_eq!(clean("/a/./b.js?v=1"), "/a/b.js?v=1");
        assert_eq!(clean("bundle.js"), "bundle.js");
    }

    #[test]
    fn url_parts() {
        assert_eq!(
            url_path("http://example.com/bundle/path?foo=bar").as_deref(),
            Some("/bundle/path")
        );
        assert_eq!(url_path("/bundle/path"), None);
        assert_eq!(url_path("/bundle/path#x").as_deref(), Some("/bundle/path"));
        assert_eq!(
            strip_query_fragment("http://example.com/bundle/path#foo"),
            "http://example.com/bundle/path"
        );
        assert_eq!(
            aliases("http://example.com/bundle/path?x=1"),
            vec![
                "http://example.com/bundle/path".to_string(),
                "/bundle/path".to_string()
            ]
        );
        assert_eq!(aliases("/bundle/path"), Vec::<String>::new());
        assert_eq!(escape_segment("a-1/b c:"), "a-1%2Fb%20c%3A");
    }
}
