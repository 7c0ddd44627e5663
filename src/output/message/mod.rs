//! Broker messages built from the documents the indexer hands to every
//! output (a bulk action line and a source line), shared by the Kafka, Redis
//! and console outputs.
//!
//! A message is the source line — the same JSON document the Elasticsearch
//! output writes — with an `@metadata` object added first, as apm-server's
//! JSON codec writes it for brokers: `{"beat":"apm-server","type":"_doc",
//! "version":…}`. The data stream named by the action line's `_index`
//! (`<type>-<dataset>-<namespace>`, none of which may contain `-`) answers
//! `%{[data_stream.*]}` in format strings without parsing the document.
//!
//! Invariants: the message body is valid JSON whenever the source line is a
//! JSON object (always, for documents from `model::encode`); a document that
//! is not in that shape is an error, never a panic.

pub mod backoff;
pub mod format;

pub use format::{FormatError, FormatString};

/// The `@metadata.beat` value apm-server writes.
pub const BEAT: &str = "apm-server";

/// Why a document could not be turned into a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("document is not an action line followed by a JSON object")]
    Shape,
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// One document seen as a broker message.
pub struct Document<'a> {
    /// The action line's `_index`, e.g. `traces-apm-default`.
    pub index: &'a str,
    /// The source line without its trailing newline.
    pub source: &'a [u8],
}

impl<'a> Document<'a> {
    /// Splits an indexer document (`{"create":{"_index":…}}\n{…}\n`).
    pub fn parse(doc: &'a [u8]) -> Result<Self, MessageError> {
        let nl = doc
            .iter()
            .position(|&b| b == b'\n')
            .ok_or(MessageError::Shape)?;
        let (action, rest) = (&doc[..nl], &doc[nl + 1..]);
        let source = rest.strip_suffix(b"\n").unwrap_or(rest);
        if source.first() != Some(&b'{') || source.last() != Some(&b'}') {
            return Err(MessageError::Shape);
        }
        const KEY: &[u8] = b"\"_index\":\"";
        let start = action
            .windows(KEY.len())
            .position(|w| w == KEY)
            .ok_or(MessageError::Shape)?
            + KEY.len();
        let len = action[start..]
            .iter()
            .position(|&b| b == b'"')
            .ok_or(MessageError::Shape)?;
        let index =
            std::str::from_utf8(&action[start..start + len]).map_err(|_| MessageError::Shape)?;
        Ok(Document { index, source })
    }

    /// `data_stream.type`, `.dataset`, `.namespace` from the index name.
    pub fn data_stream(&self) -> (&'a str, &'a str, &'a str) {
        let mut parts = self.index.splitn(3, '-');
        (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        )
    }

    /// Appends the message body: the source document with `@metadata` first.
    pub fn write_body(&self, version: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"@metadata\":{\"beat\":\"");
        out.extend_from_slice(BEAT.as_bytes());
        out.extend_from_slice(b"\",\"type\":\"_doc\",\"version\":");
        // The version is the server's own constant; written through serde to stay valid JSON.
        let v = serde_json::to_vec(version).unwrap_or_else(|_| b"\"\"".to_vec());
        out.extend_from_slice(&v);
        out.push(b'}');
        let inner = &self.source[1..];
        if inner.first() != Some(&b'}') {
            out.push(b',');
        }
        out.extend_from_slice(inner);
    }

    /// The message body as a new buffer.
    pub fn body(&self, version: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.source.len() + 80);
        self.write_body(version, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] = b"{\"create\":{\"_index\":\"traces-apm-default\"}}\n{\"@timestamp\":\"2024-01-01T00:00:00.000Z\",\"data_stream\":{\"type\":\"traces\"}}\n";

    #[test]
    fn body_is_the_source_document_with_metadata_first() {
        let d = Document::parse(DOC).unwrap();
        let body: serde_json::Value = serde_json::from_slice(&d.body("9.5.2")).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "@metadata": {"beat": "apm-server", "type": "_doc", "version": "9.5.2"},
                "@timestamp": "2024-01-01T00:00:00.000Z",
                "data_stream": {"type": "traces"}
            })
        );
    }

    #[test]
    fn data_stream_parts_come_from_the_index_name() {
        let doc = b"{\"create\":{\"_index\":\"metrics-apm.app.svc_a-prod\"}}\n{}\n";
        let d = Document::parse(doc).unwrap();
        assert_eq!(d.data_stream(), ("metrics", "apm.app.svc_a", "prod"));
        let body: serde_json::Value = serde_json::from_slice(&d.body("1")).unwrap();
        assert_eq!(body["@metadata"]["type"], "_doc");
    }

    #[test]
    fn a_document_without_action_line_is_a_shape_error() {
        assert_eq!(
            Document::parse(b"{\"a\":1}").err(),
            Some(MessageError::Shape)
        );
        assert_eq!(
            Document::parse(b"{\"create\":{}}\n{\"a\":1}\n").err(),
            Some(MessageError::Shape)
        );
    }
}
