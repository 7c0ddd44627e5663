//! RUM source mapping (behaviour: docs/sourcemaps.md): the store of source maps kept in
//! Elasticsearch's `.apm-source-map` index, the frame rewriting, and the
//! library-frame / exclude-from-grouping flags.
//!
//! * [`store::Store`] keeps an in-memory index of the stored maps (service
//!   name, version, bundle path → content hash, refreshed every 30 s with
//!   aliases for absolute URLs), fetches map bodies on demand with bounded
//!   concurrency, and caches parsed maps in an LRU of 128. It also writes
//!   uploaded maps in Kibana's document format.
//! * [`frame`] rewrites stack frames against any [`frame::MapSource`]
//!   (the store, or an in-memory map set in tests) and flags library and
//!   excluded frames; it works on any type implementing
//!   [`frame::FrameAccess`] (the model's frames; a plain frame in tests).
//! * [`map`] parses maps (the `sourcemap` crate) and resolves positions with
//!   go-sourcemap's semantics; [`paths`] normalises bundle paths.
//!
//! Invariants: a fetch failure never fails a request, it is recorded on the
//! frame as `sourcemap.error`; every wait is bounded by the caller's
//! deadline; caches and fetches are bounded; client and Elasticsearch input
//! never panics the stage.

pub mod es;
pub mod frame;
pub mod map;
pub mod paths;
pub mod store;

pub use frame::{FrameAccess, FramePatterns, MapSource, Mapped};
pub use map::ParsedMap;
pub use store::Store;

/// Why a frame could not be mapped; the `Display` text is what goes into
/// `sourcemap.error`; the texts are apm-server's where they are deterministic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourcemapError {
    /// No stored map (nor alias) for the key.
    #[error("unable to find sourcemap.url for service.name={service} service.version={version} bundle.path={path}")]
    UrlNotFound {
        service: String,
        version: String,
        path: String,
    },
    /// The index knows the map but its document is gone.
    #[error("unable to find sourcemap for service.name={service} service.version={version} bundle.path={path}")]
    NotFound {
        service: String,
        version: String,
        path: String,
    },
    /// Decompressed map larger than `max_sourcemap_size` (permanent).
    #[error("sourcemap size exceeds limit : decompressed source map exceeds limit of {0} bytes")]
    TooLarge(u64),
    /// Not a valid Source Map v3 (permanent).
    #[error("sourcemap malformed: {0}")]
    Malformed(String),
    /// The first metadata sync has not finished yet.
    #[error("metadata fetcher is not ready: fetcher unavailable")]
    NotReady,
    /// The batch deadline passed while waiting for the first sync.
    #[error("error waiting for metadata fetcher to be ready: {0}")]
    WaitReady(String),
    /// Elasticsearch answered 401/403/404 (`<status line>: <body>`).
    #[error("fetcher unavailable: {0}")]
    Unavailable(String),
    /// Elasticsearch answered another unexpected status.
    #[error("ES returned unknown status code: {0}")]
    UnknownStatus(String),
    /// Elasticsearch could not be queried (network, timeout, bad answer).
    #[error("failure querying ES: {0}")]
    Query(String),
}

impl SourcemapError {
    /// Permanent errors are cached; others are retried on the next lookup.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SourcemapError::TooLarge(_)
                | SourcemapError::Malformed(_)
                | SourcemapError::NotFound { .. }
        )
    }
}

/// Settings of the RUM frame processors (`apm-server.rum.*`).
#[derive(Debug, Clone)]
pub struct RumSettings {
    /// Source mapping active (`rum.enabled` and `rum.source_mapping.enabled`).
    pub source_mapping: bool,
    /// Budget of one batch's source mapping.
    pub timeout: std::time::Duration,
    pub patterns: FramePatterns,
}

impl RumSettings {
    /// From the configuration; invalid regexes are errors.
    pub fn from_config(cfg: &crate::config::Config) -> Result<RumSettings, regex::Error> {
        let rum = &cfg.apm_server.rum;
        Ok(RumSettings {
            source_mapping: rum.enabled && rum.source_mapping.enabled,
            timeout: rum.source_mapping.timeout.get(),
            patterns: FramePatterns::new(&rum.library_pattern, &rum.exclude_from_grouping)?,
        })
    }
}
