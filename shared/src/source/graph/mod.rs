//! Microsoft Graph v1.0 (reference: `saas-apis.md` §A): client-credentials
//! tokens, paging by opaque `@odata.nextLink`, and the throttling discipline
//! of §A8 — `Retry-After` honoured per throttle scope, at most 4 concurrent
//! requests per mailbox, exponential backoff with full jitter on 5xx.

mod client;
mod directory;
mod mail;
mod throttle;

pub use client::{ContentStream, GraphClient, GraphCredentials, RetryPolicy};
pub use mail::{DELTA_PAGE_SIZE, DeltaPage, MailFolder, MessageChange};
pub use throttle::Scope;
