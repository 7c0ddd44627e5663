//! Writing results the way apm-server does (see docs/intake.md): content
//! negotiation by `Accept`, pretty JSON with two-space indent for JSON
//! clients, compact JSON otherwise, Go's HTML escaping inside strings, a
//! trailing newline, and `X-Content-Type-Options: nosniff` on everything.

use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use serde::Serialize;

pub const NOSNIFF: (&str, &str) = ("x-content-type-options", "nosniff");

/// True when the client asked for JSON (`*/*` or `application/json` in `Accept`).
pub fn wants_json(req: &HttpRequest) -> bool {
    req.headers()
        .get_all(actix_web::http::header::ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("*/*") || v.contains("application/json"))
}

/// Escapes `<`, `>`, `&`, U+2028 and U+2029 as Go's encoder does. Safe on
/// serialized JSON because these characters only occur inside strings.
fn go_escape(json: String) -> String {
    if !json.contains(['<', '>', '&', '\u{2028}', '\u{2029}']) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Serializes `body` per the request's `Accept` header; returns (content type, text).
pub fn render<T: Serialize>(req: &HttpRequest, body: &T) -> (&'static str, String) {
    let json = wants_json(req);
    let text = if json {
        serde_json::to_string_pretty(body)
    } else {
        serde_json::to_string(body)
    }
    .unwrap_or_else(|_| "{}".into());
    let mut text = go_escape(text);
    text.push('\n');
    (
        if json {
            "application/json"
        } else {
            "text/plain; charset=utf-8"
        },
        text,
    )
}

/// A response with a JSON body rendered per `Accept`.
pub fn json<T: Serialize>(req: &HttpRequest, status: StatusCode, body: &T) -> HttpResponse {
    let (ct, text) = render(req, body);
    builder(status).insert_header((CONTENT_TYPE, ct)).body(text)
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

/// The generic failure shape `{"error": "<text>"}`.
pub fn error(req: &HttpRequest, status: StatusCode, text: &str) -> HttpResponse {
    json(req, status, &ErrorBody { error: text })
}

/// A response builder with the headers every response carries.
pub fn builder(status: StatusCode) -> HttpResponseBuilder {
    let mut b = HttpResponse::build(status);
    b.insert_header(NOSNIFF);
    b
}

/// Configured extra headers (`apm-server.response_headers`, RUM's), appended.
#[derive(Clone, Debug, Default)]
pub struct ExtraHeaders(pub Vec<(HeaderName, HeaderValue)>);

impl ExtraHeaders {
    pub fn from_config(map: &crate::config::HeaderMap) -> Result<Self, String> {
        let mut v = Vec::new();
        for (k, vals) in map {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|e| format!("invalid header name {k:?}: {e}"))?;
            for val in vals.values() {
                let value = HeaderValue::try_from(val)
                    .map_err(|e| format!("invalid value for header {k:?}: {e}"))?;
                v.push((name.clone(), value));
            }
        }
        Ok(ExtraHeaders(v))
    }

    pub fn apply(&self, resp: &mut HttpResponse) {
        for (k, v) in &self.0 {
            resp.headers_mut().append(k.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn negotiation_and_escaping() {
        let r = TestRequest::default().to_http_request();
        let (ct, t) = render(&r, &serde_json::json!({"error": "a<b"}));
        assert_eq!(ct, "text/plain; charset=utf-8");
        assert_eq!(t, "{\"error\":\"a\\u003cb\"}\n");
        let r = TestRequest::default()
            .insert_header(("accept", "*/*"))
            .to_http_request();
        let (ct, t) = render(&r, &serde_json::json!({"xyz": "bar"}));
        assert_eq!(ct, "application/json");
        assert_eq!(t, "{\n  \"xyz\": \"bar\"\n}\n");
    }
}
