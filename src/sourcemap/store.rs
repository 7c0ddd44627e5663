//! The source-map store (docs/sourcemaps.md, "Where maps are stored" to
//! "Fetching and caching"): metadata index, lookup with URL
//! aliasing, LRU cache of parsed maps, bounded body fetches, and uploads.
//!
//! Threads: the store owns a small tokio runtime (one worker) that runs the
//! 30-second metadata sync and every Elasticsearch request. The sourcemap
//! stage calls [`Store::fetch`] from its plain OS thread; a cache miss blocks
//! that thread until the body arrives or the batch deadline passes, never
//! longer. The upload handler awaits [`Store::upload`] from actix.
//!
//! Invariants: at most [`CACHE_SIZE`] parsed maps and [`FETCH_SLOTS`]
//! concurrent body fetches; permanent failures (not found, too large,
//! malformed) are cached, transient ones are not; ids whose hash changed or
//! that disappeared are evicted on every sync. A sync never hides a map
//! uploaded while it was in flight: uploads are numbered, and a sync keeps
//! every upload numbered after the moment its query started
//! ([`RecentUploads`], at most [`RECENT_UPLOADS`] entries).

use super::es::{MetaEntry, SourcemapEs};
use super::map::{self, ParsedMap};
use super::{paths, SourcemapError};
use crate::config::Config;
use crate::es::Error as SettingsError;
use lru::LruCache;
use parking_lot::{Condvar, Mutex, RwLock};
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};
use serde_json::json;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Parsed maps kept (LRU, no expiry; apm-server keeps 128 as well).
pub const CACHE_SIZE: usize = 128;
/// Body fetches in flight at once.
pub const FETCH_SLOTS: usize = 8;
/// Metadata refresh period (apm-server's).
pub const SYNC_EVERY: Duration = Duration::from_secs(30);
/// Uploads remembered until a sync that started after them has run.
pub const RECENT_UPLOADS: usize = 4096;

/// (service name, service version, bundle path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub service: String,
    pub version: String,
    pub path: String,
}

impl Key {
    pub fn new(service: &str, version: &str, path: &str) -> Key {
        Key {
            service: service.to_string(),
            version: version.to_string(),
            path: path.to_string(),
        }
    }

    /// The document id Kibana uses: `<service>-<version>-<path>`.
    pub fn doc_id(&self) -> String {
        format!("{}-{}-{}", self.service, self.version, self.path)
    }

    fn with_path(&self, path: &str) -> Key {
        Key::new(&self.service, &self.version, path)
    }
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The map is not a valid source map (→ 400).
    #[error("{0}")]
    Invalid(SourcemapError),
    /// Elasticsearch did not store it (→ 503).
    #[error("cannot store the source map: {0}")]
    Store(SourcemapError),
}

/// Why the store cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("rum.source_mapping.elasticsearch: {0}")]
    Settings(#[from] SettingsError),
    #[error("cannot start the source-map runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

#[derive(Default)]
struct Meta {
    /// Stored maps → content hash.
    entries: HashMap<Key, String>,
    /// Alias → stored key.
    aliases: HashMap<Key, Key>,
}

/// Uploads this server made that a sync in flight may not have seen. An
/// upload gets its number after its document is stored (with
/// `refresh=true`), so a sync whose query started at number `n` saw every
/// upload numbered `<= n`.
#[derive(Default)]
struct RecentUploads {
    seq: u64,
    recent: std::collections::VecDeque<(u64, Key, String)>,
}

impl RecentUploads {
    fn record(&mut self, k: Key, sha: String) {
        self.seq += 1;
        if self.recent.len() >= RECENT_UPLOADS {
            self.recent.pop_front();
        }
        self.recent.push_back((self.seq, k, sha));
    }

    /// Adds to `next` the uploads a sync started at `started` may have
    /// missed, and forgets those it certainly saw.
    fn merge_into(&mut self, next: &mut Meta, started: u64) {
        self.recent.retain(|(n, _, _)| *n > started);
        for (_, k, sha) in &self.recent {
            next.insert(k.clone(), sha.clone());
        }
    }
}

impl Meta {
    fn insert(&mut self, k: Key, sha: String) {
        for a in paths::aliases(&k.path) {
            self.aliases.insert(k.with_path(&a), k.clone());
        }
        self.entries.insert(k, sha);
    }

    /// The stored key for `k` (exact id, then alias).
    fn resolve_one(&self, k: &Key) -> Option<Key> {
        if self.entries.contains_key(k) {
            return Some(k.clone());
        }
        self.aliases.get(k).cloned()
    }

    /// The stored key for `start`: the exact key or an alias; else the URL
    /// path of its bundle path; else the path without query and fragment,
    /// looked up again.
    fn resolve(&self, start: &Key) -> Result<Key, SourcemapError> {
        let mut k = start.clone();
        // two rounds at most: the stripped path is a fixed point
        for _ in 0..3 {
            if let Some(found) = self.resolve_one(&k) {
                return Ok(found);
            }
            if let Some(p) = paths::url_path(&k.path) {
                if let Some(found) = self.resolve_one(&k.with_path(&p)) {
                    return Ok(found);
                }
            }
            let stripped = paths::strip_query_fragment(&k.path);
            if stripped == k.path {
                break;
            }
            k.path = stripped;
        }
        Err(SourcemapError::UrlNotFound {
            service: k.service,
            version: k.version,
            path: k.path,
        })
    }
}

enum Readiness {
    Pending,
    Ready,
    Failed(SourcemapError),
}

#[derive(Clone)]
enum Cached {
    Map(Arc<ParsedMap>),
    Err(SourcemapError),
}

struct Inner {
    es: SourcemapEs,
    meta: RwLock<Meta>,
    /// Locked only while `meta` is write-locked (lock order: meta, uploads).
    uploads: Mutex<RecentUploads>,
    ready: Mutex<Readiness>,
    ready_cv: Condvar,
    cache: Mutex<LruCache<Key, Cached>>,
    fetch_slots: tokio::sync::Semaphore,
    max_size: u64,
    hits: IntCounter,
    misses: IntCounter,
}

/// The source-map store. Cheap to share (`Arc<Store>`).
pub struct Store {
    inner: Arc<Inner>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("es", &self.inner.es).finish()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // safe from async contexts too (a plain drop would panic there)
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// `apm_rs_sourcemap_cache_total{result}` (the telemetry registry adds the `apm_rs_` prefix).
fn cache_counter(registry: Option<&Registry>) -> IntCounterVec {
    let v = IntCounterVec::new(
        Opts::new(
            "sourcemap_cache_total",
            "Source-map cache lookups by result (hit or miss).",
        ),
        &["result"],
    )
    .expect("static metric definition");
    if let Some(r) = registry {
        if let Err(e) = r.register(Box::new(v.clone())) {
            tracing::debug!(error = %e, "source-map cache counter not registered");
        }
    }
    v
}

impl Store {
    /// Starts a store: builds the client and begins the metadata sync.
    /// The server creates one store and hands it to the upload handler and
    /// the sourcemap stage; its cache counter is registered in `registry`.
    pub fn start(cfg: &Config, registry: Option<&Registry>) -> Result<Store, StoreError> {
        let counter = cache_counter(registry);
        let es = SourcemapEs::from_config(cfg)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sourcemap-es")
            .enable_all()
            .build()?;
        let inner = Arc::new(Inner {
            es,
            meta: RwLock::new(Meta::default()),
            uploads: Mutex::new(RecentUploads::default()),
            ready: Mutex::new(Readiness::Pending),
            ready_cv: Condvar::new(),
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(CACHE_SIZE).unwrap_or(NonZeroUsize::MIN),
            )),
            fetch_slots: tokio::sync::Semaphore::new(FETCH_SLOTS),
            max_size: cfg.apm_server.rum.source_mapping.max_sourcemap_size.get(),
            hits: counter.with_label_values(&["hit"]),
            misses: counter.with_label_values(&["miss"]),
        });
        let weak = Arc::downgrade(&inner);
        rt.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                inner.sync().await;
                drop(inner);
                tokio::time::sleep(SYNC_EVERY).await;
            }
        });
        Ok(Store {
            inner,
            rt: Some(rt),
        })
    }

    /// Whether the first metadata sync succeeded.
    pub fn is_ready(&self) -> bool {
        matches!(*self.inner.ready.lock(), Readiness::Ready)
    }

    /// Waits (at most until `deadline`) for the first metadata sync.
    pub fn wait_ready(&self, deadline: Instant) -> Result<(), SourcemapError> {
        let mut g = self.inner.ready.lock();
        loop {
            match &*g {
                Readiness::Ready => return Ok(()),
                Readiness::Failed(e) => return Err(e.clone()),
                Readiness::Pending => {
                    if self.inner.ready_cv.wait_until(&mut g, deadline).timed_out() {
                        return match &*g {
                            Readiness::Ready => Ok(()),
                            Readiness::Failed(e) => Err(e.clone()),
                            Readiness::Pending => Err(SourcemapError::WaitReady(
                                "context deadline exceeded".into(),
                            )),
                        };
                    }
                }
            }
        }
    }

    fn block_on<F: std::future::Future + Send>(&self, f: F) -> Option<F::Output>
    where
        F::Output: Send,
    {
        let rt = self.rt.as_ref()?;
        if tokio::runtime::Handle::try_current().is_ok() {
            // called from async code (tests): block on a scoped thread instead
            std::thread::scope(|s| s.spawn(|| rt.handle().block_on(f)).join().ok())
        } else {
            Some(rt.handle().block_on(f))
        }
    }

    /// The map for (service, version, bundle path); `Ok(None)` never happens
    /// for a resolved id whose document exists (errors say why there is none).
    pub fn fetch(
        &self,
        service: &str,
        version: &str,
        path: &str,
        deadline: Instant,
    ) -> Result<Option<Arc<ParsedMap>>, SourcemapError> {
        self.wait_ready(deadline)?;
        let key = self
            .inner
            .meta
            .read()
            .resolve(&Key::new(service, version, path))?;
        if let Some(c) = self.inner.cache.lock().get(&key).cloned() {
            self.inner.hits.inc();
            return match c {
                Cached::Map(m) => Ok(Some(m)),
                Cached::Err(e) => Err(e),
            };
        }
        self.inner.misses.inc();
        let inner = Arc::clone(&self.inner);
        let id = key.doc_id();
        let tdeadline = tokio::time::Instant::from_std(deadline);
        let got = self
            .block_on(async move {
                tokio::time::timeout_at(tdeadline, async {
                    let _slot = inner
                        .fetch_slots
                        .acquire()
                        .await
                        .map_err(|_| SourcemapError::Query("store closed".into()))?;
                    inner.es.get_content(&id).await
                })
                .await
            })
            .ok_or_else(|| SourcemapError::Query("store closed".into()))?;
        let res = match got {
            Err(_) => Err(SourcemapError::Query("context deadline exceeded".into())),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => Err(SourcemapError::NotFound {
                service: key.service.clone(),
                version: key.version.clone(),
                path: key.path.clone(),
            }),
            Ok(Ok(Some(content))) => {
                ParsedMap::from_stored(&content, self.inner.max_size).map(Arc::new)
            }
        };
        match res {
            Ok(m) => {
                self.inner
                    .cache
                    .lock()
                    .put(key, Cached::Map(Arc::clone(&m)));
                Ok(Some(m))
            }
            Err(e) => {
                if e.is_permanent() {
                    tracing::warn!(error = %e, id = %key.doc_id(), "source map refused");
                    self.inner.cache.lock().put(key, Cached::Err(e.clone()));
                }
                Err(e)
            }
        }
    }

    /// Stores an uploaded map in Kibana's format and makes it visible
    /// to lookups at once. `json` is the map as uploaded (size already checked).
    pub async fn upload(
        self: &Arc<Self>,
        service: &str,
        version: &str,
        bundle_filepath: &str,
        json: Vec<u8>,
    ) -> Result<(), UploadError> {
        let rt = self
            .rt
            .as_ref()
            .ok_or_else(|| UploadError::Store(SourcemapError::Query("store closed".into())))?;
        // parsing and compressing a large map is CPU work: off the caller's executor
        let (content, sha) = rt
            .spawn_blocking(move || {
                ParsedMap::parse(&json)?;
                map::encode_stored(&json)
            })
            .await
            .map_err(|e| UploadError::Store(SourcemapError::Query(e.to_string())))?
            .map_err(UploadError::Invalid)?;
        let key = Key::new(service, version, &paths::normalize_upload(bundle_filepath));
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let doc = json!({
            "fleet_id": "",
            "created": now,
            "service": {"name": key.service, "version": key.version},
            "file": {"path": key.path},
            "content": content,
            "content_sha256": sha,
        });
        let inner = Arc::clone(&self.inner);
        let id = key.doc_id();
        rt.spawn(async move { inner.es.put_doc(&id, &doc).await })
            .await
            .map_err(|e| UploadError::Store(SourcemapError::Query(e.to_string())))?
            .map_err(UploadError::Store)?;
        {
            let mut meta = self.inner.meta.write();
            meta.insert(key.clone(), sha.clone());
            self.inner.uploads.lock().record(key.clone(), sha);
        }
        self.inner.cache.lock().pop(&key);
        Ok(())
    }

    /// Runs one metadata sync now (tests; the store also syncs every 30 s).
    pub fn sync_now(&self) {
        let inner = Arc::clone(&self.inner);
        let _ = self.block_on(async move { inner.sync().await });
    }

    /// Number of cached entries.
    pub fn cached(&self) -> usize {
        self.inner.cache.lock().len()
    }
}

impl Inner {
    async fn sync(&self) {
        let started = {
            let _meta = self.meta.read();
            self.uploads.lock().seq
        };
        match self.es.load_metadata().await {
            Ok(entries) => {
                self.apply(entries, started);
                *self.ready.lock() = Readiness::Ready;
                self.ready_cv.notify_all();
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot load source-map metadata");
                let mut g = self.ready.lock();
                if !matches!(*g, Readiness::Ready) {
                    *g = Readiness::Failed(e);
                }
                drop(g);
                self.ready_cv.notify_all();
            }
        }
    }

    /// After a metadata load: evict changed and removed ids, rebuild the
    /// index and aliases.
    fn apply(&self, entries: Vec<MetaEntry>, started: u64) {
        let mut next = Meta::default();
        for e in entries {
            next.insert(Key::new(&e.service, &e.version, &e.path), e.sha256);
        }
        let mut meta = self.meta.write();
        self.uploads.lock().merge_into(&mut next, started);
        {
            let mut cache = self.cache.lock();
            for (k, sha) in &meta.entries {
                if next.entries.get(k) != Some(sha) {
                    cache.pop(k);
                }
            }
        }
        *meta = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(paths_: &[&str]) -> Meta {
        let mut m = Meta::default();
        for p in paths_ {
            m.insert(Key::new("app", "1.0", p), "h".into());
        }
        m
    }

    fn resolve(m: &Meta, p: &str) -> Result<String, SourcemapError> {
        m.resolve(&Key::new("app", "1.0", p)).map(|k| k.path)
    }

    #[test]
    fn sync_in_flight_keeps_a_concurrent_upload() {
        let mut up = RecentUploads::default();
        // a sync starts (seq 0), then a map is uploaded, then the sync's
        // (stale, empty) answer is applied: the upload must stay visible
        let started = up.seq;
        up.record(Key::new("app", "1.0", "/b.js"), "h".into());
        let mut next = Meta::default();
        up.merge_into(&mut next, started);
        assert_eq!(resolve(&next, "/b.js").ok().as_deref(), Some("/b.js"));
        // a later sync started after the upload saw it: its answer rules,
        // e.g. the map was deleted meanwhile
        let started = up.seq;
        let mut next = Meta::default();
        up.merge_into(&mut next, started);
        assert!(resolve(&next, "/b.js").is_err());
        assert!(up.recent.is_empty());
    }

    #[test]
    fn recent_uploads_are_bounded() {
        let mut up = RecentUploads::default();
        for i in 0..RECENT_UPLOADS + 10 {
            up.record(Key::new("app", "1.0", &format!("/{i}.js")), "h".into());
        }
        assert_eq!(up.recent.len(), RECENT_UPLOADS);
    }

    // upstream case Q.147
    #[test]
    fn absolute_url_paths_are_found_through_their_aliases() {
        let m = meta(&["/bundle/path"]);
        assert_eq!(
            resolve(&m, "/bundle/path").ok().as_deref(),
            Some("/bundle/path")
        );
        assert_eq!(
            resolve(&m, "http://example.com/bundle/path")
                .ok()
                .as_deref(),
            Some("/bundle/path")
        );
        let m = meta(&["http://example.com/bundle/path"]);
        for p in [
            "http://example.com/bundle/path",
            "/bundle/path",
            "http://example.com/bundle/path?foo=bar",
            "http://example.com/bundle/path#foo",
            "http://other.example/bundle/path",
        ] {
            assert_eq!(
                resolve(&m, p).ok().as_deref(),
                Some("http://example.com/bundle/path"),
                "{p}"
            );
        }
        assert_eq!(
            resolve(
                &m,
                &paths::clean("http://example.com/.././bundle/././path/../path")
            )
            .ok()
            .as_deref(),
            Some("http://example.com/bundle/path")
        );
        assert_eq!(
            resolve(&m, "/other").unwrap_err().to_string(),
            "unable to find sourcemap.url for service.name=app service.version=1.0 bundle.path=/other"
        );
    }

    // upstream case Q.148
    #[test]
    fn a_metadata_sync_evicts_changed_and_removed_maps() {
        let cfg = Config::default();
        let store = match Store::start(&cfg, None) {
            Ok(s) => s,
            Err(e) => panic!("store: {e}"),
        };
        let inner = &store.inner;
        let e = |p: &str, h: &str| MetaEntry {
            service: "app".into(),
            version: "1".into(),
            path: p.into(),
            sha256: h.into(),
        };
        inner.apply(vec![e("/a", "1"), e("/b", "1")], 0);
        let dummy = Cached::Err(SourcemapError::Malformed("x".into()));
        for p in ["/a", "/b"] {
            inner
                .cache
                .lock()
                .put(Key::new("app", "1", p), dummy.clone());
        }
        // /a changed, /b removed, /c added
        inner.apply(vec![e("/a", "2"), e("/c", "1")], 0);
        assert_eq!(inner.cache.lock().len(), 0);
        let m = inner.meta.read();
        assert_eq!(
            m.entries
                .get(&Key::new("app", "1", "/a"))
                .map(String::as_str),
            Some("2")
        );
        assert!(!m.entries.contains_key(&Key::new("app", "1", "/b")));
        assert!(m.entries.contains_key(&Key::new("app", "1", "/c")));
    }
}
