//! Line decoding. PLACEHOLDER: replaced by the full v2/v3 decoder.

use super::{DecodeConfig, Event, LineError, Metadata, RequestBase};

/// Decodes lines of one stream at a time; one per decoder actor.
pub struct Decoder {
    #[allow(dead_code)]
    cfg: DecodeConfig,
    scratch: Vec<u8>,
}

fn root_key(line: &[u8]) -> Option<&[u8]> {
    let start = line.iter().position(|&b| b == b'"' || b == b'\'')?;
    let q = line[start];
    let rest = &line[start + 1..];
    let end = rest.iter().position(|&b| b == q)?;
    Some(&rest[..end])
}

impl Decoder {
    pub fn new(cfg: DecodeConfig) -> Self {
        Decoder {
            cfg,
            scratch: Vec::new(),
        }
    }

    fn parse(&mut self, line: &[u8]) -> Result<simd_json::OwnedValue, LineError> {
        self.scratch.clear();
        self.scratch.extend_from_slice(line);
        simd_json::to_owned_value(&mut self.scratch).map_err(|e| LineError::Decode(e.to_string()))
    }

    pub fn decode_metadata(
        &mut self,
        line: &[u8],
        base: &RequestBase,
    ) -> Result<Metadata, LineError> {
        use simd_json::prelude::*;
        let key = root_key(line).unwrap_or_default();
        if key != b"metadata" && key != b"m" {
            return Err(LineError::MetadataRequired);
        }
        let v = self.parse(line)?;
        let m = v.get(if key == b"m" { "m" } else { "metadata" });
        let svc = m.and_then(|m| m.get(if key == b"m" { "se" } else { "service" }));
        let name = svc
            .and_then(|s| s.get(if key == b"m" { "n" } else { "name" }))
            .and_then(|n| n.as_str())
            .ok_or_else(|| LineError::Validation("'metadata' required".into()))?;
        let agent = svc
            .and_then(|s| s.get(if key == b"m" { "a" } else { "agent" }))
            .and_then(|a| a.get(if key == b"m" { "n" } else { "name" }))
            .and_then(|n| n.as_str())
            .unwrap_or("");
        Ok(Metadata {
            base: base.clone(),
            service_name: name.into(),
            agent_name: agent.into(),
        })
    }

    pub fn decode_event(
        &mut self,
        line: &[u8],
        meta: &Metadata,
        out: &mut Vec<Event>,
    ) -> Result<(), LineError> {
        let key = String::from_utf8_lossy(root_key(line).unwrap_or_default()).into_owned();
        let kind = match key.as_str() {
            "transaction" | "x" => "transaction",
            "span" => "span",
            "error" | "e" => "error",
            "metricset" => "metricset",
            "log" => "log",
            _ => return Err(LineError::UnknownType(key)),
        };
        self.parse(line)?;
        out.push(Event {
            kind,
            timestamp_ns: meta.base.received_ns,
            service_name: meta.service_name.clone(),
            agent_name: meta.agent_name.clone(),
        });
        Ok(())
    }
}
