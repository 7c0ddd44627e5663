//! apm-server's format strings for topics and keys: literal text with
//! `%{[field.path]}` references, optionally with a fallback
//! (`%{[service.name]:unknown}`).
//!
//! `data_stream.type|dataset|namespace` and `@metadata.beat|type|version`
//! resolve without touching the document; any other field parses the source
//! document once per rendering and walks its nested objects. Strings render
//! as they are, numbers and booleans in their JSON form; a missing field
//! without fallback, or an object, is an error naming the field. Date
//! patterns (`%{+yyyy.MM.dd}`) are refused when the string is parsed.

use super::{Document, BEAT};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("format string {0:?}: {1}")]
    Syntax(String, &'static str),
    #[error("field {0:?} referenced by the format string is missing from the document")]
    Missing(String),
    #[error("field {0:?} referenced by the format string is not a string, number or boolean")]
    NotScalar(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field {
        path: String,
        fallback: Option<String>,
    },
}

/// A parsed format string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FormatString {
    pieces: Vec<Piece>,
}

impl FormatString {
    pub fn parse(s: &str) -> Result<Self, FormatError> {
        let syntax = |why| FormatError::Syntax(s.to_string(), why);
        let mut pieces = Vec::new();
        let mut rest = s;
        while let Some(at) = rest.find("%{") {
            if at > 0 {
                pieces.push(Piece::Text(rest[..at].to_string()));
            }
            let after = &rest[at + 2..];
            let end = after.find('}').ok_or_else(|| syntax("unclosed %{"))?;
            let inner = &after[..end];
            let Some(field) = inner.strip_prefix('[') else {
                return Err(syntax(
                    "only %{[field]} references are supported (no date patterns)",
                ));
            };
            let close = field.find(']').ok_or_else(|| syntax("unclosed ["))?;
            let path = &field[..close];
            let tail = &field[close + 1..];
            let fallback = match tail.strip_prefix(':') {
                Some(f) => Some(f.to_string()),
                None if tail.is_empty() => None,
                None => return Err(syntax("unexpected text after ]")),
            };
            if path.is_empty() {
                return Err(syntax("empty field name"));
            }
            pieces.push(Piece::Field {
                path: path.to_string(),
                fallback,
            });
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(FormatString { pieces })
    }

    /// True when the string has no field reference.
    pub fn is_constant(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Text(_)))
    }

    /// True when the string renders to nothing.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// Renders the string for one document.
    pub fn render(&self, doc: &Document<'_>, version: &str) -> Result<String, FormatError> {
        let mut out = String::new();
        let mut parsed: Option<serde_json::Value> = None;
        for p in &self.pieces {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Field { path, fallback } => match lookup(path, doc, version, &mut parsed)? {
                    Some(v) => out.push_str(&v),
                    None => match fallback {
                        Some(f) => out.push_str(f),
                        None => return Err(FormatError::Missing(path.clone())),
                    },
                },
            }
        }
        Ok(out)
    }
}

fn lookup(
    path: &str,
    doc: &Document<'_>,
    version: &str,
    parsed: &mut Option<serde_json::Value>,
) -> Result<Option<String>, FormatError> {
    let (ty, dataset, namespace) = doc.data_stream();
    let known = match path {
        "data_stream.type" => Some(ty),
        "data_stream.dataset" => Some(dataset),
        "data_stream.namespace" => Some(namespace),
        "@metadata.beat" => Some(BEAT),
        "@metadata.type" => Some("_doc"),
        "@metadata.version" => Some(version),
        _ => None,
    };
    if let Some(v) = known {
        return Ok((!v.is_empty()).then(|| v.to_string()));
    }
    if parsed.is_none() {
        *parsed = Some(serde_json::from_slice(doc.source).unwrap_or(serde_json::Value::Null));
    }
    let mut v = parsed.as_ref().unwrap_or(&serde_json::Value::Null);
    for seg in path.split('.') {
        match v.get(seg) {
            Some(next) => v = next,
            None => return Ok(None),
        }
    }
    match v {
        serde_json::Value::String(s) => Ok(Some(s.clone())),
        serde_json::Value::Number(n) => Ok(Some(n.to_string())),
        serde_json::Value::Bool(b) => Ok(Some(b.to_string())),
        serde_json::Value::Null => Ok(None),
        _ => Err(FormatError::NotScalar(path.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = b"{\"create\":{\"_index\":\"logs-apm.error-default\"}}\n{\"service\":{\"name\":\"svc\",\"port\":8},\"data_stream\":{\"type\":\"logs\"}}\n";

    fn render(f: &str) -> Result<String, FormatError> {
        let d = Document::parse(DOC).unwrap();
        FormatString::parse(f)?.render(&d, "9.5.2")
    }

    #[test]
    fn data_stream_fields_render_from_the_index() {
        assert_eq!(
            render("apm-%{[data_stream.type]}-%{[data_stream.dataset]}").unwrap(),
            "apm-logs-apm.error"
        );
    }

    #[test]
    fn document_fields_render_from_nested_objects() {
        assert_eq!(render("%{[service.name]}").unwrap(), "svc");
        assert_eq!(render("%{[service.port]}").unwrap(), "8");
        assert_eq!(render("%{[@metadata.version]}").unwrap(), "9.5.2");
    }

    #[test]
    fn missing_field_uses_the_fallback_or_is_an_error() {
        assert_eq!(render("%{[user.id]:anon}").unwrap(), "anon");
        assert_eq!(
            render("%{[user.id]}"),
            Err(FormatError::Missing("user.id".into()))
        );
        assert_eq!(
            render("%{[service]}"),
            Err(FormatError::NotScalar("service".into()))
        );
    }

    #[test]
    fn date_patterns_and_broken_references_are_refused() {
        assert!(FormatString::parse("apm-%{+yyyy.MM.dd}").is_err());
        assert!(FormatString::parse("apm-%{[x").is_err());
        assert!(FormatString::parse("apm-%{[]}").is_err());
        assert!(FormatString::parse("plain").unwrap().is_constant());
    }
}
