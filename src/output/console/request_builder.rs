//! Encodes one document for the console: the broker message (source
//! document with `@metadata`) on one line, or indented when
//! `codec.json.pretty` is on; each followed by a newline.

use crate::output::message::{Document, MessageError};

pub fn encode(
    doc: &[u8],
    pretty: bool,
    version: &str,
    out: &mut Vec<u8>,
) -> Result<(), MessageError> {
    let d = Document::parse(doc)?;
    if pretty {
        let body = d.body(version);
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|_| MessageError::Shape)?;
        serde_json::to_writer_pretty(&mut *out, &v).map_err(|_| MessageError::Shape)?;
    } else {
        d.write_body(version, out);
    }
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &[u8] =
        b"{\"create\":{\"_index\":\"logs-apm.error-default\"}}\n{\"b\":1,\"a\":{\"c\":2}}\n";

    #[test]
    fn compact_output_is_one_line_per_document() {
        let mut out = Vec::new();
        encode(DOC, false, "9", &mut out).unwrap();
        encode(DOC, false, "9", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert_eq!(
            text.lines().next().unwrap(),
            r#"{"@metadata":{"beat":"apm-server","type":"_doc","version":"9"},"b":1,"a":{"c":2}}"#
        );
    }

    #[test]
    fn pretty_output_keeps_field_order_over_several_lines() {
        let mut out = Vec::new();
        encode(DOC, true, "9", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.lines().count() > 3, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["a"]["c"], 2);
        assert!(text.find("\"b\"").unwrap() < text.find("\"a\"").unwrap());
    }
}
