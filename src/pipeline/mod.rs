//! The actor pipeline.
pub mod budget;
