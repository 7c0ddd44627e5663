//! Frame rewriting (docs/sourcemaps.md, "Which frames" to "Library frames,
//! grouping, culprit"): source
//! mapping of one stack trace with the one-frame function-name shift, and the
//! library-frame / exclude-from-grouping flags.
//!
//! The logic is generic over [`FrameAccess`], implemented by the model's
//! frame in the pipeline stage (and by a plain frame in tests and benches),
//! and over [`MapSource`], implemented by the [`Store`] (and by in-memory
//! map sets in tests and benches).
//!
//! Invariants: frames without `lineno`, `colno` or a non-empty `abs_path`
//! are left untouched; a frame that cannot be mapped keeps its values (only
//! `sourcemap.error` may be set) and does not advance the name carry.

use super::map::ParsedMap;
use super::store::Store;
use super::{paths, SourcemapError};
use regex::Regex;
use std::sync::Arc;
use std::time::Instant;

/// The function name given to the outermost mapped frame.
pub const ANONYMOUS: &str = "<anonymous>";
/// The carry when the map has no name at a position.
pub const UNKNOWN: &str = "<unknown>";

/// The values a successful mapping writes into a frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapped {
    /// The mapped source file; `None` keeps the frame's filename.
    pub filename: Option<String>,
    /// The cleaned bundle path.
    pub abs_path: String,
    pub lineno: i64,
    pub colno: i64,
    pub function: String,
    pub context_line: String,
    pub pre_context: Vec<String>,
    pub post_context: Vec<String>,
}

/// What the frame processors read and write.
pub trait FrameAccess {
    fn abs_path(&self) -> &str;
    fn filename(&self) -> &str;
    fn lineno(&self) -> Option<i64>;
    fn colno(&self) -> Option<i64>;
    fn library_frame(&self) -> bool;
    /// Sets `library_frame`, keeping the old value as `original.library_frame`.
    fn mark_library_frame(&mut self, is_library: bool);
    fn set_exclude_from_grouping(&mut self, v: bool);
    fn set_sourcemap_error(&mut self, e: String);
    /// Saves the `original.*` values and writes `m`, `sourcemap.updated = true`.
    fn apply_mapping(&mut self, m: Mapped);
}

/// Where maps come from.
pub trait MapSource {
    fn fetch(
        &self,
        service: &str,
        version: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<ParsedMap>>, SourcemapError>;
}

impl MapSource for Store {
    fn fetch(
        &self,
        service: &str,
        version: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<ParsedMap>>, SourcemapError> {
        Store::fetch(self, service, version, path, deadline)
    }
}

/// Source-maps one stack trace, last frame first. Returns the
/// number of frames updated.
pub fn apply_sourcemaps<F: FrameAccess, S: MapSource + ?Sized>(
    frames: &mut [F],
    service: &str,
    version: &str,
    source: &S,
    deadline: Instant,
) -> usize {
    if service.is_empty() || version.is_empty() {
        return 0;
    }
    let mut carry = ANONYMOUS.to_string();
    let mut updated = 0;
    for f in frames.iter_mut().rev() {
        let (Some(lineno), Some(colno)) = (f.lineno(), f.colno()) else {
            continue;
        };
        if f.abs_path().is_empty() {
            continue;
        }
        let path = paths::clean(f.abs_path());
        let map = match source.fetch(service, version, &path, deadline) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                f.set_sourcemap_error(e.to_string());
                continue;
            }
        };
        let Some(r) = map.lookup(lineno, colno) else {
            tracing::debug!(path = %path, lineno, colno, "source map has no mapping for the frame's position");
            continue;
        };
        let next_carry = if r.name.is_empty() {
            UNKNOWN.to_string()
        } else {
            r.name
        };
        f.apply_mapping(Mapped {
            filename: (!r.source.is_empty()).then_some(r.source),
            abs_path: path,
            lineno: r.line,
            colno: r.col,
            function: std::mem::replace(&mut carry, next_carry),
            context_line: r.context_line,
            pre_context: r.pre_context,
            post_context: r.post_context,
        });
        updated += 1;
    }
    updated
}

/// `rum.library_pattern` and `rum.exclude_from_grouping`; an empty
/// pattern disables its processor.
#[derive(Debug, Clone, Default)]
pub struct FramePatterns {
    library: Option<Regex>,
    exclude: Option<Regex>,
}

impl FramePatterns {
    /// Compiles both patterns (unanchored search, as RE2 `MatchString`).
    pub fn new(library: &str, exclude: &str) -> Result<FramePatterns, regex::Error> {
        let compile = |p: &str| (!p.is_empty()).then(|| Regex::new(p)).transpose();
        Ok(FramePatterns {
            library: compile(library)?,
            exclude: compile(exclude)?,
        })
    }

    /// Library-frame flagging of every frame.
    pub fn mark_library<F: FrameAccess>(&self, frames: &mut [F]) {
        let Some(re) = &self.library else { return };
        for f in frames {
            let m = (!f.filename().is_empty() && re.is_match(f.filename()))
                || (!f.abs_path().is_empty() && re.is_match(f.abs_path()));
            f.mark_library_frame(m);
        }
    }

    /// Exclude-from-grouping flagging of every frame (filename only).
    pub fn mark_exclude<F: FrameAccess>(&self, frames: &mut [F]) {
        let Some(re) = &self.exclude else { return };
        for f in frames {
            let m = !f.filename().is_empty() && re.is_match(f.filename());
            f.set_exclude_from_grouping(m);
        }
    }
}
