//! Elasticsearch test double (placeholder; see issue 3).
