//! Throttle scopes and the gates that keep requests back until `Retry-After` has passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::time::Instant;

/// Exchange allows 4 concurrent requests per app per mailbox (§A8).
pub const MAILBOX_CONCURRENCY: usize = 4;

/// What a request counts against on the service's side (§A8).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Outlook resources of one mailbox: per app per mailbox limits.
    Mailbox(String),
    /// OneDrive and SharePoint: resource units per app per tenant.
    SharePoint,
    /// Everything else (directory): the app's global limits.
    Directory,
}

impl Scope {
    /// The scope of a Graph path such as `/v1.0/users/{id}/mailboxSettings`.
    pub fn of_path(path: &str) -> Self {
        let rest = path.trim_start_matches('/');
        let rest = rest
            .strip_prefix("v1.0/")
            .or_else(|| rest.strip_prefix("beta/"))
            .unwrap_or(rest);
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["users", id, resource, ..] => {
                let resource = resource.split(['?', '(']).next().unwrap_or_default();
                match resource {
                    "mailboxSettings" | "mailFolders" | "messages" | "contactFolders" | "contacts" | "calendar"
                    | "calendars" | "events" | "calendarView" => Self::Mailbox(id.to_string()),
                    "drive" | "drives" => Self::SharePoint,
                    _ => Self::Directory,
                }
            }
            ["drives", ..] | ["sites", ..] => Self::SharePoint,
            _ => Self::Directory,
        }
    }
}

/// Per-scope "not before" instants and per-mailbox concurrency.
#[derive(Default)]
pub struct Gates {
    not_before: Mutex<HashMap<Scope, Instant>>,
    mailboxes: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Gates {
    /// Holds the scope back until `Retry-After` has passed.
    pub fn hold(&self, scope: &Scope, wait: Duration) {
        let until = Instant::now() + wait;
        let mut gates = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        let entry = gates.entry(scope.clone()).or_insert(until);
        if *entry < until {
            *entry = until;
        }
    }

    /// Waits until the scope is open.
    pub async fn wait_open(&self, scope: &Scope) {
        loop {
            let until = {
                let gates = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
                gates.get(scope).copied()
            };
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }

    /// The semaphore limiting concurrent requests to one mailbox.
    pub fn mailbox(&self, id: &str) -> Arc<Semaphore> {
        let mut map = self.mailboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.to_string())
            .or_insert_with(|| Arc::new(Semaphore::new(MAILBOX_CONCURRENCY)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_follow_the_throttling_limits() {
        assert_eq!(
            Scope::of_path("/v1.0/users/u1/mailboxSettings"),
            Scope::Mailbox("u1".into())
        );
        assert_eq!(
            Scope::of_path("/v1.0/users/u1/mailFolders/inbox/messages/delta"),
            Scope::Mailbox("u1".into())
        );
        assert_eq!(Scope::of_path("/v1.0/users/u1/drive"), Scope::SharePoint);
        assert_eq!(Scope::of_path("/v1.0/sites/getAllSites"), Scope::SharePoint);
        assert_eq!(Scope::of_path("/v1.0/users"), Scope::Directory);
        assert_eq!(Scope::of_path("/v1.0/users/u1"), Scope::Directory);
    }

    #[tokio::test(start_paused = true)]
    async fn a_held_scope_opens_after_the_wait_and_others_stay_open() {
        let gates = Gates::default();
        let scope = Scope::Mailbox("a".into());
        gates.hold(&scope, Duration::from_secs(3));
        let start = Instant::now();
        gates.wait_open(&Scope::Directory).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
        gates.wait_open(&scope).await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }
}
