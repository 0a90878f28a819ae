//! The operations, as plain async functions over a [`crate::Context`]:
//! each Lambda's `main.rs` calls one of them.

pub mod backup;
pub mod browse;
pub mod connections;
pub mod discovery;
pub mod export;
pub mod jobs;
pub mod purge;
pub mod report;
pub mod restore;
pub mod usage;
