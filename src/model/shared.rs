//! Shared strings for the fields events repeat: stack frames, HTTP
//! headers, span and transaction names and the like.
//!
//! Job: stack frames repeat. An application's spans and errors are thrown
//! from the same few hundred functions in the same files, so a frame's
//! `filename`, `abs_path`, `function`, `classname` and `module` are
//! [`SharedStr`]s: reference-counted, handed out by a small per-thread cache
//! ([`SharedStr::intern`]) instead of one allocation per field per frame. In
//! the Node.js agent capture a span carries six frames on average, three
//! strings each, drawn from about a hundred distinct values; decoding them
//! was the largest share of the decoder's allocations, and freeing them the
//! indexer's. Frames' source lines, header names and most header values
//! (content types, user agents, accept lists), span and transaction names,
//! types and outcomes, destinations, HTTP methods and versions, URL schemes
//! and hosts, and label keys repeat the same way and are shared too; ids,
//! paths, queries and label values, which mostly do not repeat, stay owned
//! strings.
//!
//! Invariants:
//! * the empty string is no allocation and no cache entry (`SharedStr`
//!   holds `None`), so a default frame allocates nothing;
//! * the cache is direct-mapped with [`SLOTS`] entries per thread and only
//!   strings of at most [`MAX_LEN`] bytes enter it, so whatever clients send
//!   it holds at most `SLOTS × MAX_LEN` bytes per decoding thread; a
//!   collision replaces the slot (events keep their own reference), so a
//!   miss costs what an owned string did;
//! * the hash is seeded per thread: a client cannot pick strings that keep
//!   evicting each other in every thread;
//! * a shared string is immutable: source mapping replaces frame strings, it
//!   never edits them in place.

use std::cell::RefCell;
use std::fmt;
use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::Arc;

/// Entries of each thread's cache (a power of two).
pub(crate) const SLOTS: usize = 1024;
/// Longest string the cache keeps; longer ones are allocated as they come.
pub(crate) const MAX_LEN: usize = 256;

/// An immutable string shared by reference count; empty without allocating.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct SharedStr(Option<Arc<str>>);

impl SharedStr {
    /// `s` from this thread's cache, or a new shared string (then cached
    /// when it is short enough).
    pub(crate) fn intern(s: &str) -> Self {
        if s.is_empty() {
            return SharedStr(None);
        }
        if s.len() > MAX_LEN {
            return SharedStr(Some(Arc::from(s)));
        }
        CACHE.with(|c| {
            let Ok(mut cache) = c.try_borrow_mut() else {
                return SharedStr(Some(Arc::from(s)));
            };
            let i = (cache.seed.hash_one(s) as usize) & (SLOTS - 1);
            let cache = &mut *cache;
            match cache.slots.get_mut(i) {
                Some(Some(hit)) if **hit == *s => SharedStr(Some(Arc::clone(hit))),
                Some(slot) => {
                    let fresh: Arc<str> = Arc::from(s);
                    *slot = Some(Arc::clone(&fresh));
                    SharedStr(Some(fresh))
                }
                None => SharedStr(Some(Arc::from(s))),
            }
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }
}

struct Cache {
    seed: foldhash::fast::RandomState,
    slots: Box<[Option<Arc<str>>]>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache {
        seed: foldhash::fast::RandomState::default(),
        slots: vec![None; SLOTS].into_boxed_slice(),
    });
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        if s.is_empty() {
            SharedStr(None)
        } else {
            SharedStr(Some(Arc::from(s)))
        }
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        if s.is_empty() {
            SharedStr(None)
        } else {
            SharedStr(Some(Arc::from(s)))
        }
    }
}

/// Hashes as the `str` it holds (so maps keyed by it can be probed with a `&str`).
impl std::hash::Hash for SharedStr {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interned_string_is_shared_with_the_next_equal_one() {
        let a = SharedStr::intern("lib/instrumentation/http.js");
        let b = SharedStr::intern("lib/instrumentation/http.js");
        match (&a.0, &b.0) {
            (Some(x), Some(y)) => assert!(Arc::ptr_eq(x, y)),
            _ => panic!("both are non-empty"),
        }
        assert_eq!(a, "lib/instrumentation/http.js");
    }

    #[test]
    fn the_empty_string_takes_no_allocation() {
        assert_eq!(SharedStr::intern(""), SharedStr::default());
        assert!(SharedStr::intern("").0.is_none());
        assert!(SharedStr::from(String::new()).0.is_none());
        assert_eq!(SharedStr::default().as_str(), "");
    }

    #[test]
    fn long_strings_are_not_cached_and_the_cache_stays_bounded() {
        let long = "x".repeat(MAX_LEN + 1);
        let a = SharedStr::intern(&long);
        let b = SharedStr::intern(&long);
        match (&a.0, &b.0) {
            (Some(x), Some(y)) => assert!(!Arc::ptr_eq(x, y)),
            _ => panic!("both are non-empty"),
        }
        for i in 0..SLOTS * 4 {
            let s = format!("frame-{i}");
            assert_eq!(SharedStr::intern(&s), s.as_str());
        }
        CACHE.with(|c| {
            let c = c.borrow();
            assert_eq!(c.slots.len(), SLOTS);
            assert!(c
                .slots
                .iter()
                .flatten()
                .all(|s| s.len() <= MAX_LEN && !s.is_empty()));
        });
    }
}
