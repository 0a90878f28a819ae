//! The control-plane store (design: "Control plane (DynamoDB)").
//!
//! [`ItemStore`] is the narrow edge: items with a `pk`/`sk` key, one secondary
//! index (`gsi1pk`/`gsi1sk`), conditional puts and queries. It has a DynamoDB
//! implementation and an in-memory one, and one contract suite runs against
//! both. [`State`] puts the typed domain operations on top of it, once.

mod dynamo;
mod items;
mod memory;
mod store;

pub use dynamo::DynamoItems;
pub use items::{Cursor, Index, Item, ItemStore, Page, PutCondition, Query, StoreError};
pub use memory::MemoryItems;
pub use store::{ActivityFilter, AuditFilter, EntityFilter, EntityPage, RequestClaim, Session, State, StateError};

pub mod contract;
