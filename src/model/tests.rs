//! Corpus-driven tests for the intake model (documents.md §5–§15).
