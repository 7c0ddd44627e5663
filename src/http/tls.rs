//! Server TLS with rustls (security.md §10). Placeholder, completed by the auth issue.
