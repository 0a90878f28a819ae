//! Strata: self-hosted backup for Microsoft 365, Google Workspace and Salesforce.
//!
//! All logic lives in this crate; each Lambda in `functions/` only wires a
//! [`context::Context`] to one of the operations in [`ops`] or to the HTTP
//! [`api`] router. See `docs/design.md` for the persisted formats.

pub mod api;
pub mod config;
pub mod context;
pub mod model;
pub mod notify;
pub mod ops;
pub mod queue;
pub mod repo;
pub mod secrets;
pub mod source;
pub mod state;
pub mod telemetry;

pub use config::Config;
pub use context::Context;
