//! Client IP derivation (security.md §9). Placeholder, completed by the RUM issue.
