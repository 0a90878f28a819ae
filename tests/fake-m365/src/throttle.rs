//! Throttling at the real limits of `saas-apis.md` §A8, with the windows
//! scaled by `Options::time_scale`. Pure: every decision takes `now`.
//!
//! Scopes are keyed per app (the client id of the token):
//! - Outlook, per app per mailbox (the user's id, a UPN in the path resolved to it):
//!   4 concurrent requests, 10,000 requests per sliding 10 minutes, 150 MB
//!   uploaded (POST, PUT, PATCH bodies) per sliding 5 minutes;
//! - SharePoint and OneDrive, per app per tenant: resource units per fixed
//!   minute by the tenant's licence count.
//!
//! Once a scope answers 429 it stays closed until the `Retry-After` instant
//! it announced: every request to it before then gets 429 again.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Exchange: 4 concurrent requests per app per mailbox (§A8).
pub const MAILBOX_CONCURRENCY: usize = 4;
/// Exchange: 10,000 requests per 10 minutes per app per mailbox (§A8).
pub const MAILBOX_REQUESTS_PER_WINDOW: usize = 10_000;
pub const MAILBOX_WINDOW: Duration = Duration::from_secs(600);
/// Exchange: 150 MB uploaded (POST, PUT, PATCH) per 5 minutes per app per mailbox (§A8).
pub const MAILBOX_UPLOAD_BYTES_PER_WINDOW: u64 = 150 * 1024 * 1024;
pub const MAILBOX_UPLOAD_WINDOW: Duration = Duration::from_secs(300);
/// SharePoint/OneDrive resource units are counted per minute (§A8).
pub const RU_WINDOW: Duration = Duration::from_secs(60);
/// `RateLimit-*` headers appear past this share of the minute's budget (§A8).
const RATE_LIMIT_HEADERS_FROM: f64 = 0.8;

/// The SharePoint app budget per minute by licence count (§A8).
pub fn ru_per_minute(licensed: usize) -> u64 {
    match licensed {
        0..1_000 => 1_200,
        1_000..5_000 => 2_400,
        5_000..15_000 => 3_600,
        15_000..50_000 => 4_800,
        _ => 6_000,
    }
}

/// What a Graph request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// Outlook resources of one mailbox (the user's id).
    Mailbox(String),
    /// SharePoint and OneDrive resources of the tenant.
    SharePoint,
}

impl Scope {
    /// How the request log names it.
    pub fn label(&self) -> String {
        match self {
            Self::Mailbox(id) => format!("mailbox:{id}"),
            Self::SharePoint => "sharepoint".into(),
        }
    }
}

/// A 429.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub code: &'static str,
    pub message: &'static str,
    /// Whole seconds, at least 1.
    pub retry_after: u32,
}

/// The `RateLimit-*` headers of a request admitted past 80% of the budget.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub reset_secs: u32,
}

#[derive(Default)]
struct MailboxState {
    recent: VecDeque<Instant>,
    in_flight: usize,
    /// Bodies of admitted POST, PUT and PATCH requests: (arrival, bytes).
    uploads: VecDeque<(Instant, u64)>,
    uploaded: u64,
}

struct RuWindow {
    start: Instant,
    used: u64,
}

type Key = (String, Scope);

pub(crate) struct Throttle {
    scale: f64,
    mailboxes: HashMap<Key, MailboxState>,
    ru: HashMap<String, RuWindow>,
    closed: HashMap<Key, (Instant, &'static str, &'static str)>,
}

/// Whole seconds, rounded up, at least 1.
pub(crate) fn ceil_secs(d: Duration) -> u32 {
    (d.as_secs_f64().ceil().min(f64::from(u32::MAX)) as u32).max(1)
}

impl Throttle {
    pub fn new(scale: f64) -> Self {
        Self {
            scale,
            mailboxes: HashMap::new(),
            ru: HashMap::new(),
            closed: HashMap::new(),
        }
    }

    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.scale)
    }

    /// Admits a request that uploads nothing (see [`Throttle::admit_upload`]).
    #[cfg(test)]
    pub fn admit(
        &mut self,
        app: &str,
        scope: &Scope,
        cost: u64,
        licensed: usize,
        now: Instant,
    ) -> Result<Option<RateLimit>, Refusal> {
        self.admit_upload(app, scope, cost, 0, licensed, now)
    }

    /// Admits a request or refuses it. An admitted Outlook request holds one
    /// of the mailbox's concurrency slots until [`Throttle::release`]; the
    /// `upload` bytes (the body of a POST, PUT or PATCH) count against the
    /// mailbox's upload budget.
    pub fn admit_upload(
        &mut self,
        app: &str,
        scope: &Scope,
        cost: u64,
        upload: u64,
        licensed: usize,
        now: Instant,
    ) -> Result<Option<RateLimit>, Refusal> {
        let key = (app.to_string(), scope.clone());
        if let Some((until, code, message)) = self.closed.get(&key).copied() {
            if until > now {
                return Err(Refusal {
                    code,
                    message,
                    retry_after: ceil_secs(until - now),
                });
            }
            self.closed.remove(&key);
        }
        let result = match scope {
            Scope::Mailbox(_) => self.admit_mailbox(&key, upload, now).map(|()| None),
            Scope::SharePoint => self.admit_sharepoint(app, cost, licensed, now),
        };
        if let Err(refusal) = &result {
            let until = now + Duration::from_secs(u64::from(refusal.retry_after));
            self.closed.insert(key, (until, refusal.code, refusal.message));
        }
        result
    }

    fn admit_mailbox(&mut self, key: &Key, upload: u64, now: Instant) -> Result<(), Refusal> {
        let window = self.scaled(MAILBOX_WINDOW);
        let upload_window = self.scaled(MAILBOX_UPLOAD_WINDOW);
        let state = self.mailboxes.entry(key.clone()).or_default();
        while let Some((t, n)) = state.uploads.front().copied() {
            if now.saturating_duration_since(t) < upload_window {
                break;
            }
            state.uploads.pop_front();
            state.uploaded -= n;
        }
        while state
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= window)
        {
            state.recent.pop_front();
        }
        if state.in_flight >= MAILBOX_CONCURRENCY {
            return Err(Refusal {
                code: "ApplicationThrottled",
                message: "Application is over its MailboxConcurrency limit.",
                retry_after: 1,
            });
        }
        if state.recent.len() >= MAILBOX_REQUESTS_PER_WINDOW {
            let oldest = state.recent.front().copied().unwrap_or(now);
            return Err(Refusal {
                code: "ApplicationThrottled",
                message: "Application is over its MailboxRequests limit.",
                retry_after: ceil_secs(window.saturating_sub(now.saturating_duration_since(oldest))),
            });
        }
        if upload > 0 && state.uploaded + upload > MAILBOX_UPLOAD_BYTES_PER_WINDOW {
            // Free once enough of the oldest uploads have left the window.
            let mut freed = 0;
            let mut until = now;
            for (t, n) in &state.uploads {
                freed += n;
                until = *t + upload_window;
                if state.uploaded - freed + upload <= MAILBOX_UPLOAD_BYTES_PER_WINDOW {
                    break;
                }
            }
            return Err(Refusal {
                code: "ApplicationThrottled",
                message: "Application is over its MailboxUploadSize limit.",
                retry_after: ceil_secs(until.saturating_duration_since(now)),
            });
        }
        state.recent.push_back(now);
        state.in_flight += 1;
        if upload > 0 {
            state.uploads.push_back((now, upload));
            state.uploaded += upload;
        }
        Ok(())
    }

    fn admit_sharepoint(
        &mut self,
        app: &str,
        cost: u64,
        licensed: usize,
        now: Instant,
    ) -> Result<Option<RateLimit>, Refusal> {
        let window = self.scaled(RU_WINDOW);
        let budget = ru_per_minute(licensed);
        let w = self
            .ru
            .entry(app.to_string())
            .or_insert(RuWindow { start: now, used: 0 });
        if now.saturating_duration_since(w.start) >= window {
            *w = RuWindow { start: now, used: 0 };
        }
        let left = window.saturating_sub(now.saturating_duration_since(w.start));
        if w.used + cost > budget {
            return Err(Refusal {
                code: "TooManyRequests",
                message: "The request has been throttled: the application is over its resource units per minute.",
                retry_after: ceil_secs(left),
            });
        }
        w.used += cost;
        Ok(
            (w.used as f64 > budget as f64 * RATE_LIMIT_HEADERS_FROM).then(|| RateLimit {
                limit: budget,
                remaining: budget - w.used,
                reset_secs: ceil_secs(left),
            }),
        )
    }

    /// Gives back the concurrency slot of an admitted Outlook request.
    pub fn release(&mut self, app: &str, scope: &Scope) {
        if let Some(state) = self.mailboxes.get_mut(&(app.to_string(), scope.clone())) {
            state.in_flight = state.in_flight.saturating_sub(1);
        }
    }

    /// Closes a scope until `until` (an injected 429 or 503 with `Retry-After`).
    pub fn close(&mut self, app: &str, scope: &Scope, until: Instant, code: &'static str, message: &'static str) {
        let key = (app.to_string(), scope.clone());
        let later = self.closed.get(&key).is_some_and(|(u, _, _)| *u >= until);
        if !later {
            self.closed.insert(key, (until, code, message));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = "app";

    fn mailbox() -> Scope {
        Scope::Mailbox("u1".into())
    }

    #[test]
    fn four_at_once_per_mailbox_then_closed_for_a_second() {
        let mut t = Throttle::new(1.0);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(t.admit(APP, &mailbox(), 1, 10, t0), Ok(None));
        }
        let refusal = t.admit(APP, &mailbox(), 1, 10, t0).expect_err("fifth");
        assert_eq!(refusal.code, "ApplicationThrottled");
        assert_eq!(refusal.message, "Application is over its MailboxConcurrency limit.");
        assert_eq!(refusal.retry_after, 1);
        assert!(
            t.admit(APP, &Scope::Mailbox("u2".into()), 1, 10, t0).is_ok(),
            "another mailbox is another scope"
        );
        assert!(t.admit("other-app", &mailbox(), 1, 10, t0).is_ok(), "another app too");
        t.release(APP, &mailbox());
        assert!(
            t.admit(APP, &mailbox(), 1, 10, t0 + Duration::from_millis(500))
                .is_err(),
            "closed until Retry-After even with a free slot"
        );
        assert!(t.admit(APP, &mailbox(), 1, 10, t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn ten_thousand_per_ten_minutes_sliding_and_scaled() {
        // 0.001: the 10 minutes last 0.6 s.
        let mut t = Throttle::new(0.001);
        let t0 = Instant::now();
        for i in 0..MAILBOX_REQUESTS_PER_WINDOW {
            let at = t0 + Duration::from_micros(i as u64 * 10); // 0.1 s for the lot
            assert!(t.admit(APP, &mailbox(), 1, 10, at).is_ok(), "request {i}");
            t.release(APP, &mailbox());
        }
        let at = t0 + Duration::from_millis(150);
        let refusal = t.admit(APP, &mailbox(), 1, 10, at).expect_err("over the limit");
        assert_eq!(refusal.message, "Application is over its MailboxRequests limit.");
        assert_eq!(refusal.retry_after, 1, "0.45 s left, in whole seconds");
        assert!(
            t.admit(APP, &mailbox(), 1, 10, at + Duration::from_millis(900))
                .is_err()
        );
        assert!(
            t.admit(APP, &mailbox(), 1, 10, at + Duration::from_secs(1)).is_ok(),
            "open after Retry-After, the oldest requests having left the window"
        );
    }

    #[test]
    fn real_time_retry_after_is_the_time_until_the_window_frees() {
        let mut t = Throttle::new(1.0);
        let t0 = Instant::now();
        for _ in 0..MAILBOX_REQUESTS_PER_WINDOW {
            t.admit(APP, &mailbox(), 1, 10, t0).expect("admitted");
            t.release(APP, &mailbox());
        }
        let refusal = t
            .admit(APP, &mailbox(), 1, 10, t0 + Duration::from_secs(100))
            .expect_err("over");
        assert_eq!(refusal.retry_after, 500);
    }

    #[test]
    fn one_hundred_fifty_megabytes_per_five_minutes() {
        let mut t = Throttle::new(1.0);
        let t0 = Instant::now();
        let mib = 1024 * 1024;
        for i in 0..37 {
            let at = t0 + Duration::from_secs(i);
            t.admit_upload(APP, &mailbox(), 1, 4 * mib, 10, at)
                .expect("within budget");
            t.release(APP, &mailbox());
        }
        let at = t0 + Duration::from_secs(100);
        assert!(t.admit(APP, &mailbox(), 1, 10, at).is_ok(), "a GET uploads nothing");
        t.release(APP, &mailbox());
        let refusal = t
            .admit_upload(APP, &mailbox(), 1, 4 * mib, 10, at)
            .expect_err("148 MiB + 4 MiB");
        assert_eq!(refusal.message, "Application is over its MailboxUploadSize limit.");
        assert_eq!(refusal.retry_after, 200, "the oldest upload leaves the window at 300 s");
        let later = t0 + Duration::from_secs(302);
        assert!(t.admit_upload(APP, &mailbox(), 1, 4 * mib, 10, later).is_ok());
    }

    #[test]
    fn resource_units_per_minute_by_licences() {
        assert_eq!(
            [0, 999, 1_000, 4_999, 5_000, 15_000, 50_000].map(ru_per_minute),
            [1_200, 1_200, 2_400, 2_400, 3_600, 4_800, 6_000]
        );
        let mut t = Throttle::new(1.0);
        let t0 = Instant::now();
        let sp = Scope::SharePoint;
        // 1,200 RU: 480 lists (2 RU) and 240 single GETs (1 RU).
        for _ in 0..480 {
            let headers = t.admit(APP, &sp, 2, 500, t0).expect("list");
            assert_eq!(headers, None, "up to 80%: no RateLimit headers");
        }
        let mut last = None;
        for _ in 0..240 {
            last = t.admit(APP, &sp, 1, 500, t0 + Duration::from_secs(20)).expect("get");
        }
        assert_eq!(
            last,
            Some(RateLimit {
                limit: 1_200,
                remaining: 0,
                reset_secs: 40
            })
        );
        let refusal = t
            .admit(APP, &sp, 1, 500, t0 + Duration::from_secs(30))
            .expect_err("budget spent");
        assert_eq!((refusal.code, refusal.retry_after), ("TooManyRequests", 30));
        assert!(t.admit(APP, &sp, 1, 500, t0 + Duration::from_secs(59)).is_err());
        assert!(t.admit(APP, &sp, 1, 500, t0 + Duration::from_secs(60)).is_ok());
        let mut big = Throttle::new(1.0);
        for _ in 0..3_600 {
            big.admit(APP, &sp, 1, 10_000, t0).expect("5k-15k licences: 3,600 RU");
        }
        assert!(big.admit(APP, &sp, 1, 10_000, t0).is_err());
    }

    #[test]
    fn an_injected_retry_after_closes_the_scope() {
        let mut t = Throttle::new(1.0);
        let t0 = Instant::now();
        t.close(APP, &mailbox(), t0 + Duration::from_secs(2), "TooManyRequests", "x");
        let r = t.admit(APP, &mailbox(), 1, 1, t0).expect_err("closed");
        assert_eq!(r.retry_after, 2);
        assert!(t.admit(APP, &mailbox(), 1, 1, t0 + Duration::from_secs(2)).is_ok());
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1_001)), 2);
    }
}
