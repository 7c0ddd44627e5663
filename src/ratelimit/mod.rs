//! Per-client-IP token buckets (ratelimit.md). Placeholder, completed by the rate-limit issue.
