//! Test and bench doubles for source mapping without the model or
//! Elasticsearch: a plain stack frame and an in-memory map set. Included by
//! `tests/sourcemap.rs` and `benches/sourcemap.rs` with `#[path]`.

use apm_rs::sourcemap::{FrameAccess, MapSource, Mapped, ParsedMap, SourcemapError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Values kept by source mapping and library flagging (`original.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    pub abs_path: String,
    pub filename: String,
    pub classname: String,
    pub function: String,
    pub lineno: Option<i64>,
    pub colno: Option<i64>,
    pub library_frame: Option<bool>,
}

/// A plain stack frame: the fields of an ECS `stacktrace` entry that
/// source mapping reads and writes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackFrame {
    pub filename: String,
    pub abs_path: String,
    pub classname: String,
    pub function: String,
    pub lineno: Option<i64>,
    pub colno: Option<i64>,
    pub library_frame: bool,
    pub exclude_from_grouping: bool,
    pub context_line: String,
    pub pre_context: Vec<String>,
    pub post_context: Vec<String>,
    pub original: Option<Original>,
    pub sourcemap_updated: bool,
    pub sourcemap_error: String,
}

impl FrameAccess for StackFrame {
    fn abs_path(&self) -> &str {
        &self.abs_path
    }
    fn filename(&self) -> &str {
        &self.filename
    }
    fn lineno(&self) -> Option<i64> {
        self.lineno
    }
    fn colno(&self) -> Option<i64> {
        self.colno
    }
    fn library_frame(&self) -> bool {
        self.library_frame
    }
    fn mark_library_frame(&mut self, is_library: bool) {
        self.original
            .get_or_insert_with(Default::default)
            .library_frame = Some(self.library_frame);
        self.library_frame = is_library;
    }
    fn set_exclude_from_grouping(&mut self, v: bool) {
        self.exclude_from_grouping = v;
    }
    fn set_sourcemap_error(&mut self, e: String) {
        self.sourcemap_error = e;
    }
    fn apply_mapping(&mut self, m: Mapped) {
        let o = self.original.get_or_insert_with(Default::default);
        o.abs_path = std::mem::take(&mut self.abs_path);
        o.filename = self.filename.clone();
        o.classname = self.classname.clone();
        o.function = std::mem::take(&mut self.function);
        o.lineno = self.lineno;
        o.colno = self.colno;
        if let Some(f) = m.filename {
            self.filename = f;
        }
        self.abs_path = m.abs_path;
        self.lineno = Some(m.lineno);
        self.colno = Some(m.colno);
        self.function = m.function;
        self.context_line = m.context_line;
        self.pre_context = m.pre_context;
        self.post_context = m.post_context;
        self.sourcemap_updated = true;
    }
}

/// Maps held in memory by exact (service, version, bundle path): tests and benches.
#[derive(Debug, Default)]
pub struct InMemory {
    maps: HashMap<(String, String, String), Arc<ParsedMap>>,
}

impl InMemory {
    pub fn insert(&mut self, service: &str, version: &str, path: &str, map: ParsedMap) {
        self.maps
            .insert((service.into(), version.into(), path.into()), Arc::new(map));
    }
}

impl MapSource for InMemory {
    fn fetch(
        &self,
        service: &str,
        version: &str,
        path: &str,
        _deadline: Instant,
    ) -> Result<Option<Arc<ParsedMap>>, SourcemapError> {
        match self
            .maps
            .get(&(service.to_string(), version.to_string(), path.to_string()))
        {
            Some(m) => Ok(Some(Arc::clone(m))),
            None => Err(SourcemapError::UrlNotFound {
                service: service.into(),
                version: version.into(),
                path: path.into(),
            }),
        }
    }
}
