//! CORS for RUM routes (security.md §7). Placeholder, completed by the RUM issue.
