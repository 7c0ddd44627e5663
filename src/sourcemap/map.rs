//! One parsed source map and its position lookup (docs/sourcemaps.md,
//! "Position lookup"), with go-sourcemap's semantics on top of the
//! `sourcemap` crate; plus Kibana's storage encoding (zlib + base64, SHA-256 of the compressed bytes).
//!
//! Invariants: parsing is done by the `sourcemap` crate only; decompression
//! never produces more than `max_size + 1` bytes; nothing here panics on
//! client or Elasticsearch input.

use super::SourcemapError;
use base64::Engine;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use sha2::{Digest, Sha256};
use sourcemap::SourceMap;
use std::io::{Read, Write};

/// Lines of context either side of the mapped line.
const CONTEXT_LINES: usize = 5;
/// Go's `bufio.Scanner` limit: a longer line makes the position unresolvable.
const MAX_LINE: usize = 64 * 1024;

/// A parsed Source Map v3.
#[derive(Debug)]
pub struct ParsedMap {
    sm: SourceMap,
}

/// The original position of a generated one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Resolved {
    /// The source file (after `sourceRoot`); empty when the mapping has none.
    pub source: String,
    /// The name at this position; empty when none.
    pub name: String,
    /// 1-based source line.
    pub line: i64,
    /// 0-based source column.
    pub col: i64,
    pub context_line: String,
    pub pre_context: Vec<String>,
    pub post_context: Vec<String>,
}

impl ParsedMap {
    /// Parses source-map JSON.
    /// Like go-sourcemap, requires `"version": 3` and non-empty mappings.
    pub fn parse(json: &[u8]) -> Result<ParsedMap, SourcemapError> {
        #[derive(serde::Deserialize)]
        struct Version {
            version: Option<serde_json::Value>,
        }
        let sm =
            SourceMap::from_slice(json).map_err(|e| SourcemapError::Malformed(e.to_string()))?;
        let v: Version =
            serde_json::from_slice(json).map_err(|e| SourcemapError::Malformed(e.to_string()))?;
        if v.version.as_ref().and_then(serde_json::Value::as_u64) != Some(3) {
            return Err(SourcemapError::Malformed(
                "sourcemap: only 3rd version is supported".into(),
            ));
        }
        if sm.get_token_count() == 0 {
            return Err(SourcemapError::Malformed(
                "sourcemap: mappings are empty".into(),
            ));
        }
        Ok(ParsedMap { sm })
    }

    /// Decodes a stored `content` field: base64 → zlib → JSON, at most
    /// `max_size` decompressed bytes.
    pub fn from_stored(content: &str, max_size: u64) -> Result<ParsedMap, SourcemapError> {
        let compressed = base64::engine::general_purpose::STANDARD
            .decode(content.trim())
            .map_err(|e| SourcemapError::Malformed(format!("invalid base64 content: {e}")))?;
        let json = inflate_bounded(&compressed, max_size)?;
        Self::parse(&json)
    }

    /// The mapping for a frame's generated position (`lineno` 1-based,
    /// `colno` compared as 0-based, as go-sourcemap does). `None`: cannot be
    /// resolved (the frame stays unchanged, no error).
    pub fn lookup(&self, lineno: i64, colno: i64) -> Option<Resolved> {
        if lineno <= 0 || colno < 0 {
            return None;
        }
        let line = u32::try_from(lineno - 1).ok()?;
        let col = u32::try_from(colno).unwrap_or(u32::MAX);
        // greatest mapping <= (line, col); none when every mapping lies after it
        let tok = self.sm.lookup_token(line, col)?;
        let pos = (tok.get_dst_line(), tok.get_dst_col());
        if pos < (line, col) {
            // past every mapping: go-sourcemap uses the last one only on the same line
            let count = self.sm.get_token_count();
            let last = self.sm.get_token(count.checked_sub(1)? as usize)?;
            if (last.get_dst_line(), last.get_dst_col()) == pos && pos.0 != line {
                return None;
            }
        }
        if !tok.has_source() {
            return None;
        }
        let src_line = tok.get_src_line();
        let mut r = Resolved {
            source: tok.get_source().unwrap_or_default().to_string(),
            name: tok.get_name().unwrap_or_default().to_string(),
            line: i64::from(src_line) + 1,
            col: i64::from(tok.get_src_col()),
            ..Default::default()
        };
        if let Some(view) = self.sm.get_source_view(tok.get_src_id()) {
            let idx = src_line as usize;
            let first = idx.saturating_sub(CONTEXT_LINES);
            let mut lines = Vec::with_capacity(2 * CONTEXT_LINES + 1);
            for i in first..=idx + CONTEXT_LINES {
                let Some(l) = u32::try_from(i).ok().and_then(|i| view.get_line(i)) else {
                    break;
                };
                if l.len() > MAX_LINE {
                    return None;
                }
                lines.push(l);
            }
            let at = idx - first;
            if let Some(cl) = lines.get(at) {
                r.context_line = (*cl).to_string();
                r.pre_context = lines[..at].iter().map(|s| s.to_string()).collect();
                r.post_context = lines[at + 1..].iter().map(|s| s.to_string()).collect();
            }
        }
        Some(r)
    }
}

/// zlib-inflates at most `max_size` bytes; more is a size error.
pub fn inflate_bounded(compressed: &[u8], max_size: u64) -> Result<Vec<u8>, SourcemapError> {
    let mut out = Vec::new();
    ZlibDecoder::new(compressed)
        .take(max_size.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| SourcemapError::Malformed(format!("invalid zlib content: {e}")))?;
    if out.len() as u64 > max_size {
        return Err(SourcemapError::TooLarge(max_size));
    }
    Ok(out)
}

/// The stored form of a map: (`content`, `content_sha256`).
pub fn encode_stored(json: &[u8]) -> Result<(String, String), SourcemapError> {
    let mut enc = ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(json)
        .and_then(|_| enc.finish())
        .map(|compressed| {
            let sha = hex::encode(Sha256::digest(&compressed));
            (
                base64::engine::general_purpose::STANDARD.encode(&compressed),
                sha,
            )
        })
        .map_err(|e| SourcemapError::Malformed(format!("cannot compress: {e}")))
}
