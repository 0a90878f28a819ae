//! A fake Microsoft 365: the Entra ID client-credentials token endpoint and
//! the Microsoft Graph v1.0 endpoints Strata uses, faithful to
//! `saas-apis.md` §A — error shapes, opaque paging, throttling at the real
//! limits (scaled in time), fault injection, and a request log the tests read.

mod mail;
mod tenant;

pub use mail::{Folder, MailItem, Mailbox};

pub use tenant::{Message, Site, Sizes, Tenant, User, UserKind};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Exchange: 4 concurrent requests per app per mailbox (§A8).
pub const MAILBOX_CONCURRENCY: usize = 4;
/// Exchange: 10,000 requests per 10 minutes per app per mailbox (§A8).
pub const MAILBOX_REQUESTS_PER_WINDOW: usize = 10_000;
pub const MAILBOX_WINDOW: Duration = Duration::from_secs(600);
/// SharePoint/OneDrive resource units are counted per minute (§A8).
pub const RU_WINDOW: Duration = Duration::from_secs(60);

/// How the fake behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// 1.0 is real time; 0.01 makes the 10-minute window 6 s.
    pub time_scale: f64,
    /// Enforce the throttling limits.
    pub throttle: bool,
    /// Lifetime of an access token (real time).
    pub token_lifetime: Duration,
    /// Seed of the fault decisions.
    pub seed: u64,
    pub faults: Faults,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            time_scale: 1.0,
            throttle: true,
            token_lifetime: Duration::from_secs(3599),
            seed: 0,
            faults: Faults::default(),
        }
    }
}

/// Injected faults: the first matching rule that fires decides.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Faults {
    pub rules: Vec<FaultRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRule {
    /// Only requests whose path contains this.
    pub path_contains: Option<String>,
    pub kind: FaultKind,
    /// Chance that a matching request gets the fault, 0..=1.
    pub probability: f64,
    /// How many more times it may fire (None: unlimited).
    pub remaining: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer with this status (500, 503, or 429 with a Retry-After).
    Status { status: u16, retry_after_secs: Option<u32> },
    /// Hold the request this long, then answer 504.
    Timeout { secs: f64 },
    /// Declare the full length but send half the body.
    Truncate,
}

/// One request as the fake saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoggedRequest {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    /// The app of the bearer token (or of the token request).
    pub client_id: Option<String>,
    /// The user id or UPN when the path is under `/users/{id}/...`.
    pub mailbox: Option<String>,
    pub status: u16,
    pub retry_after_secs: Option<u32>,
    /// What the request counted against: `mailbox:<id>`, `sharepoint`, or none.
    pub throttle_scope: Option<String>,
}

struct Inner {
    tenant: Tenant,
    tokens: HashMap<String, (String, Instant)>,
    log: Vec<LoggedRequest>,
    seq: u64,
    faults: Faults,
    rng: StdRng,
    mailbox_requests: HashMap<String, VecDeque<Instant>>,
    mailbox_in_flight: HashMap<String, usize>,
    ru_window: (Instant, u64),
    blocked_until: HashMap<String, Instant>,
    /// Mailboxes by user id.
    mailboxes: HashMap<String, Mailbox>,
}

fn mailbox_of(user: &User) -> Option<Mailbox> {
    if !user.kind.has_mailbox() {
        return None;
    }
    let mut mailbox = Mailbox::new(&user.id);
    for m in &user.messages {
        mailbox.add(&m.folder, m.mime.clone());
    }
    Some(mailbox)
}

struct Shared {
    inner: Mutex<Inner>,
    options: Options,
    base_url: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn scaled(&self, d: Duration) -> Duration {
        d.mul_f64(self.options.time_scale.max(0.000_001))
    }
}

/// A running fake on a loopback port.
pub struct FakeM365 {
    shared: Arc<Shared>,
    url: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeM365 {
    pub async fn start(tenant: Tenant, options: Options) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let tenant_users = tenant.users.clone();
        let url = format!("http://{}", listener.local_addr()?);
        let inner = Inner {
            tenant,
            tokens: HashMap::new(),
            log: Vec::new(),
            seq: 0,
            faults: options.faults.clone(),
            rng: StdRng::seed_from_u64(options.seed),
            mailbox_requests: HashMap::new(),
            mailbox_in_flight: HashMap::new(),
            ru_window: (Instant::now(), 0),
            blocked_until: HashMap::new(),
            mailboxes: tenant_mailboxes(&tenant_users),
        };
        let shared = Arc::new(Shared {
            inner: Mutex::new(inner),
            options,
            base_url: url.clone(),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            shared,
            url,
            task: Some(task),
        })
    }

    /// Base URL of both the token endpoint (`login_url`) and Graph (`graph_url`).
    pub fn url(&self) -> String {
        self.url.clone()
    }
    pub fn tenant_id(&self) -> String {
        self.shared.lock().tenant.tenant_id.clone()
    }
    pub fn client_id(&self) -> String {
        self.shared.lock().tenant.client_id.clone()
    }
    pub fn client_secret(&self) -> String {
        self.shared.lock().tenant.client_secret.clone()
    }
    pub fn tenant(&self) -> Tenant {
        self.shared.lock().tenant.clone()
    }
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log.clone()
    }
    pub fn clear_requests(&self) {
        self.shared.lock().log.clear();
    }
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }
    pub fn add_user(&self, user: User) {
        let mut inner = self.shared.lock();
        if let Some(mailbox) = mailbox_of(&user) {
            inner.mailboxes.insert(user.id.clone(), mailbox);
        }
        inner.tenant.users.push(user);
    }

    fn with_mailbox<T>(&self, user: &str, f: impl FnOnce(&mut Mailbox) -> T) -> Option<T> {
        let mut inner = self.shared.lock();
        let id = find_user(&inner.tenant, user)?.id.clone();
        inner.mailboxes.get_mut(&id).map(f)
    }

    /// Delivers a message into a folder (created with its parents); returns its id.
    pub fn add_message(&self, user: &str, folder_path: &str, mime: Vec<u8>) -> Option<String> {
        self.with_mailbox(user, |m| m.add(folder_path, mime))
    }
    pub fn delete_message(&self, user: &str, id: &str) -> bool {
        self.with_mailbox(user, |m| m.delete(id)).unwrap_or(false)
    }
    pub fn move_message(&self, user: &str, id: &str, folder_path: &str) -> bool {
        self.with_mailbox(user, |m| m.move_to(id, folder_path)).unwrap_or(false)
    }
    pub fn set_read(&self, user: &str, id: &str, read: bool) -> bool {
        self.with_mailbox(user, |m| m.set_read(id, read)).unwrap_or(false)
    }
    /// Forgets the mailbox's sync states: the next delta with an old token gets `syncStateNotFound`.
    pub fn expire_sync_states(&self, user: &str) {
        self.with_mailbox(user, Mailbox::expire_sync_states);
    }
    /// A copy of the user's mailbox (folders and messages).
    pub fn mailbox(&self, user: &str) -> Option<Mailbox> {
        self.with_mailbox(user, |m| m.clone())
    }
    /// Ends every access token now (the next Graph request gets 401 and must renew).
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for (_, expiry) in self.shared.lock().tokens.values_mut() {
            *expiry = now;
        }
    }
    pub fn remove_user(&self, id: &str) {
        self.shared
            .lock()
            .tenant
            .users
            .retain(|u| u.id != id && u.user_principal_name != id);
    }
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for FakeM365 {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ----- responses -----

fn graph_error(status: StatusCode, code: &str, message: &str) -> (StatusCode, Value) {
    let body = json!({"error": {"code": code, "message": message, "innerError": {
        "date": Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string(),
        "request-id": uuid::Uuid::new_v4().to_string(),
        "client-request-id": uuid::Uuid::new_v4().to_string(),
    }}});
    (status, body)
}

fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> (StatusCode, Value) {
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let now = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let body = json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {correlation} Timestamp: {now}"),
        "error_codes": [code],
        "timestamp": now,
        "trace_id": trace.to_string(),
        "correlation_id": correlation.to_string(),
    });
    (status, body)
}

struct Outcome {
    status: StatusCode,
    body: Value,
    /// A raw body (MIME from `$value`) instead of JSON.
    raw: Option<Vec<u8>>,
    retry_after: Option<u32>,
    truncate: bool,
}

impl Outcome {
    fn json((status, body): (StatusCode, Value)) -> Self {
        Self {
            status,
            body,
            retry_after: None,
            raw: None,
            truncate: false,
        }
    }
    fn throttled(code: &str, message: &str, retry_after: u32) -> Self {
        let (status, body) = graph_error(StatusCode::TOO_MANY_REQUESTS, code, message);
        Self {
            status,
            body,
            retry_after: Some(retry_after),
            raw: None,
            truncate: false,
        }
    }
    fn into_response(self) -> Response {
        let content_type = if self.raw.is_some() {
            "text/plain"
        } else {
            "application/json"
        };
        let bytes = match self.raw {
            Some(raw) => raw,
            None => serde_json::to_vec(&self.body).unwrap_or_default(),
        };
        let mut response = if self.truncate && bytes.len() > 1 {
            // Half the body, then the connection breaks: the declared length is never reached.
            let full = bytes.len();
            let half = Bytes::from(bytes[..full / 2].to_vec());
            let chunks = futures::stream::unfold(0u8, move |step| {
                let half = half.clone();
                async move {
                    match step {
                        0 => Some((Ok(half), 1)),
                        1 => {
                            // Let the headers and the first half reach the client before the break.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            Some((Err(std::io::Error::other("truncated by fault injection")), 2))
                        }
                        _ => None,
                    }
                }
            });
            let mut r = Response::new(Body::from_stream(chunks));
            if let Ok(v) = HeaderValue::from_str(&full.to_string()) {
                r.headers_mut().insert(header::CONTENT_LENGTH, v);
            }
            r
        } else {
            Response::new(Body::from(bytes))
        };
        *response.status_mut() = self.status;
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if let Some(secs) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, secs);
        }
        response
    }
}

fn ceil_secs(d: Duration) -> u32 {
    (d.as_secs_f64().ceil() as u32).max(1)
}

// ----- dispatch -----

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Utc::now();
    let path = uri.path().to_string();
    let query = uri.query().map(str::to_string);
    if let Some(rest) = path.strip_prefix("/_fake/") {
        return control(&shared, &method, rest, &body);
    }
    let mut client_id = None;
    let mut scope = None;
    let mut mailbox = None;
    let outcome = if method == Method::POST && path.ends_with("/oauth2/v2.0/token") {
        let (outcome, client) = token(&shared, &path, &body);
        client_id = client;
        outcome
    } else {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        mailbox = match segments.as_slice() {
            ["v1.0", "users", id, _, ..] => Some(id.to_string()),
            _ => None,
        };
        scope = throttle_scope(&segments);
        graph(
            &shared,
            &method,
            &segments,
            query.as_deref(),
            &headers,
            scope.as_deref(),
            &mut client_id,
        )
        .await
    };
    let retry_after = outcome.retry_after;
    let status = outcome.status.as_u16();
    let response = outcome.into_response();
    let mut inner = shared.lock();
    inner.seq += 1;
    let seq = inner.seq;
    inner.log.push(LoggedRequest {
        seq,
        at,
        finished_at: Utc::now(),
        method: method.to_string(),
        path,
        query,
        client_id,
        mailbox,
        status,
        retry_after_secs: retry_after,
        throttle_scope: scope,
    });
    response
}

/// What a Graph path counts against (§A8).
fn throttle_scope(segments: &[&str]) -> Option<String> {
    match segments {
        ["v1.0", "users", id, resource, ..] => match *resource {
            "mailboxSettings" | "mailFolders" | "messages" | "contactFolders" | "contacts" | "calendar" | "events"
            | "calendarView" => Some(format!("mailbox:{id}")),
            "drive" | "drives" => Some("sharepoint".into()),
            _ => None,
        },
        ["v1.0", "sites", ..] | ["v1.0", "drives", ..] => Some("sharepoint".into()),
        _ => None,
    }
}

fn control(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Response {
    let mut inner = shared.lock();
    let (status, value) = match (method.as_str(), rest) {
        ("GET", "faults") => (StatusCode::OK, serde_json::to_value(&inner.faults).unwrap_or_default()),
        ("POST", "faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => {
                inner.faults = f;
                (StatusCode::OK, serde_json::to_value(&inner.faults).unwrap_or_default())
            }
            Err(e) => (StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        ("GET", "requests") => (StatusCode::OK, serde_json::to_value(&inner.log).unwrap_or_default()),
        ("DELETE", "requests") => {
            inner.log.clear();
            (StatusCode::NO_CONTENT, Value::Null)
        }
        ("POST", "users") => match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                let kind = serde_json::from_value(v["kind"].clone()).unwrap_or(UserKind::Licensed);
                let id = v["id"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let upn = v["userPrincipalName"]
                    .as_str()
                    .unwrap_or("new.user@contoso.onmicrosoft.com")
                    .to_string();
                let name = v["displayName"].as_str().unwrap_or("New User").to_string();
                inner.tenant.users.push(User::new(id.clone(), upn, name, kind));
                (StatusCode::CREATED, json!({"id": id}))
            }
            Err(e) => (StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        ("DELETE", r) if r.starts_with("users/") => {
            let id = &r["users/".len()..];
            inner.tenant.users.retain(|u| u.id != id && u.user_principal_name != id);
            (StatusCode::NO_CONTENT, Value::Null)
        }
        _ => (StatusCode::NOT_FOUND, json!({"error": "no such control endpoint"})),
    };
    (status, axum::Json(value)).into_response()
}

fn token(shared: &Shared, path: &str, body: &[u8]) -> (Outcome, Option<String>) {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let tenant_segment = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let client = form.get("client_id").cloned();
    let mut inner = shared.lock();
    let t = &inner.tenant;
    if tenant_segment != t.tenant_id && tenant_segment != t.domain {
        return (
            Outcome::json(aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant_segment}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            )),
            client,
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return (
            Outcome::json(aad_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                "The app requested an unsupported grant type.",
            )),
            client,
        );
    }
    if client.as_deref() != Some(t.client_id.as_str()) {
        let id = client.clone().unwrap_or_default();
        return (
            Outcome::json(aad_error(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{id}' was not found in the directory '{}'.",
                    t.domain
                ),
            )),
            client,
        );
    }
    if form.get("client_secret").map(String::as_str) != Some(t.client_secret.as_str()) {
        return (
            Outcome::json(aad_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
            )),
            client,
        );
    }
    if !form.get("scope").is_some_and(|s| s.ends_with("/.default")) {
        return (
            Outcome::json(aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                1002012,
                "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI).",
            )),
            client,
        );
    }
    let access: String = (0..64)
        .map(|_| inner.rng.sample(rand::distributions::Alphanumeric) as char)
        .collect();
    let access = format!("eyJ0eXAiOiJKV1QifQ.{access}");
    let lifetime = shared.options.token_lifetime;
    let client_id = inner.tenant.client_id.clone();
    inner
        .tokens
        .insert(access.clone(), (client_id, Instant::now() + lifetime));
    let secs = lifetime.as_secs();
    (
        Outcome::json((
            StatusCode::OK,
            json!({"token_type": "Bearer", "expires_in": secs, "ext_expires_in": secs, "access_token": access}),
        )),
        client,
    )
}

/// Decides throttling before the request is served; `Err` is the 429.
fn admit(shared: &Shared, inner: &mut Inner, scope: Option<&str>, cost: u64) -> Result<(), Outcome> {
    let Some(scope) = scope else { return Ok(()) };
    let now = Instant::now();
    if let Some(until) = inner.blocked_until.get(scope).copied().filter(|u| *u > now) {
        return Err(Outcome::throttled(
            "TooManyRequests",
            "Too many requests: the Retry-After time has not passed.",
            ceil_secs(until - now),
        ));
    }
    let throttled = if let Some(mailbox) = scope.strip_prefix("mailbox:") {
        let window = shared.scaled(MAILBOX_WINDOW);
        let in_flight = inner.mailbox_in_flight.get(mailbox).copied().unwrap_or(0);
        let recent = inner.mailbox_requests.entry(mailbox.to_string()).or_default();
        while recent.front().is_some_and(|t| now.duration_since(*t) >= window) {
            recent.pop_front();
        }
        if in_flight >= MAILBOX_CONCURRENCY {
            Some((
                "ApplicationThrottled",
                "Application is over its MailboxConcurrency limit.",
                1,
            ))
        } else if recent.len() >= MAILBOX_REQUESTS_PER_WINDOW {
            let oldest = recent.front().copied().unwrap_or(now);
            Some((
                "ApplicationThrottled",
                "Application is over its MailboxRequests limit.",
                ceil_secs(window.saturating_sub(now.duration_since(oldest))),
            ))
        } else {
            recent.push_back(now);
            *inner.mailbox_in_flight.entry(mailbox.to_string()).or_default() += 1;
            None
        }
    } else {
        let window = shared.scaled(RU_WINDOW);
        let budget = ru_per_minute(inner.tenant.licensed_users());
        if now.duration_since(inner.ru_window.0) >= window {
            inner.ru_window = (now, 0);
        }
        if inner.ru_window.1 + cost > budget {
            let left = window.saturating_sub(now.duration_since(inner.ru_window.0));
            Some((
                "TooManyRequests",
                "The request has been throttled: the app is over its resource units per minute.",
                ceil_secs(left),
            ))
        } else {
            inner.ru_window.1 += cost;
            None
        }
    };
    match throttled {
        None => Ok(()),
        Some((code, message, secs)) => {
            inner
                .blocked_until
                .insert(scope.to_string(), now + Duration::from_secs(u64::from(secs)));
            Err(Outcome::throttled(code, message, secs))
        }
    }
}

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

fn pick_fault(inner: &mut Inner, path: &str) -> Option<FaultKind> {
    let roll: f64 = inner.rng.r#gen();
    for rule in inner.faults.rules.iter_mut() {
        let matches = rule.path_contains.as_deref().is_none_or(|p| path.contains(p)) && rule.remaining != Some(0);
        if matches && roll < rule.probability {
            if let Some(n) = rule.remaining.as_mut() {
                *n -= 1;
            }
            return Some(rule.kind.clone());
        }
    }
    None
}

#[allow(clippy::too_many_arguments)]
async fn graph(
    shared: &Arc<Shared>,
    method: &Method,
    segments: &[&str],
    query: Option<&str>,
    headers: &HeaderMap,
    scope: Option<&str>,
    client_id: &mut Option<String>,
) -> Outcome {
    let path = format!("/{}", segments.join("/"));
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string();
    let fault;
    {
        let mut inner = shared.lock();
        match inner.tokens.get(&token).cloned() {
            None => {
                return Outcome::json(graph_error(
                    StatusCode::UNAUTHORIZED,
                    "InvalidAuthenticationToken",
                    "Access token is empty or invalid.",
                ));
            }
            Some((client, expires)) => {
                *client_id = Some(client);
                if expires <= Instant::now() {
                    return Outcome::json(graph_error(
                        StatusCode::UNAUTHORIZED,
                        "InvalidAuthenticationToken",
                        "Access token has expired or is not yet valid.",
                    ));
                }
            }
        }
        fault = pick_fault(&mut inner, &path);
        if let Some(FaultKind::Status {
            status,
            retry_after_secs,
        }) = &fault
        {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let (code, message) = match status.as_u16() {
                429 => ("TooManyRequests", "Too many requests."),
                503 => ("serviceNotAvailable", "The service is temporarily unavailable."),
                _ => ("generalException", "An unexpected error occurred."),
            };
            let mut outcome = Outcome::json(graph_error(status, code, message));
            outcome.retry_after = *retry_after_secs;
            if let (Some(secs), Some(scope)) = (retry_after_secs, scope) {
                inner.blocked_until.insert(
                    scope.to_string(),
                    Instant::now() + Duration::from_secs(u64::from(*secs)),
                );
            }
            return outcome;
        }
        if shared.options.throttle {
            let cost = if matches!(segments, ["v1.0", "sites", "getAllSites"]) {
                2
            } else {
                1
            };
            if let Err(throttled) = admit(shared, &mut inner, scope, cost) {
                return throttled;
            }
        } else if let Some(mailbox) = scope.and_then(|s| s.strip_prefix("mailbox:")) {
            *inner.mailbox_in_flight.entry(mailbox.to_string()).or_default() += 1;
        }
    }
    let mut outcome = match &fault {
        Some(FaultKind::Timeout { secs }) => {
            tokio::time::sleep(Duration::from_secs_f64(*secs)).await;
            Outcome::json(graph_error(
                StatusCode::GATEWAY_TIMEOUT,
                "UnknownError",
                "The operation timed out.",
            ))
        }
        _ if *method != Method::GET => Outcome::json(graph_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "Request_BadRequest",
            "The method is not supported by the fake.",
        )),
        _ => serve(shared, segments, query, headers),
    };
    if let Some(mailbox) = scope.and_then(|s| s.strip_prefix("mailbox:")) {
        let mut inner = shared.lock();
        if let Some(n) = inner.mailbox_in_flight.get_mut(mailbox) {
            *n = n.saturating_sub(1);
        }
    }
    outcome.truncate = matches!(fault, Some(FaultKind::Truncate));
    outcome
}

fn params(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn user_json(u: &User) -> Value {
    let now = "2024-01-15T09:00:00Z";
    let plans = if u.kind.licensed() {
        json!([
            {"assignedDateTime": now, "capabilityStatus": "Enabled", "service": "exchange", "servicePlanId": "efb87545-963c-4e0d-99df-69c6916d9eb0"},
            {"assignedDateTime": now, "capabilityStatus": "Enabled", "service": "SharePoint", "servicePlanId": "5dbe027f-2339-4123-9542-606e4d348a72"},
        ])
    } else {
        json!([])
    };
    json!({
        "id": u.id,
        "userPrincipalName": u.user_principal_name,
        "mail": u.mail,
        "displayName": u.display_name,
        "accountEnabled": u.kind.account_enabled(),
        "userType": if u.kind == UserKind::Guest { "Guest" } else { "Member" },
        "assignedPlans": plans,
    })
}

fn select(v: Value, fields: Option<&String>) -> Value {
    let Some(fields) = fields else { return v };
    let wanted: Vec<&str> = fields.split(',').map(str::trim).collect();
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(k, _)| k == "id" || wanted.contains(&k.as_str()))
                .collect(),
        ),
        other => other,
    }
}

#[derive(Serialize, Deserialize)]
struct SkipToken {
    o: usize,
    t: usize,
    s: Option<String>,
}

/// A page of a collection with an opaque `@odata.nextLink`.
fn page(shared: &Shared, collection: &str, items: Vec<Value>, query: Option<&str>, default_top: usize) -> Outcome {
    let p = params(query);
    let (offset, top, selected) = match p.get("$skiptoken") {
        Some(token) => match base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| serde_json::from_slice::<SkipToken>(&b).ok())
        {
            Some(t) => (t.o, t.t, t.s),
            None => {
                return Outcome::json(graph_error(
                    StatusCode::BAD_REQUEST,
                    "Request_BadRequest",
                    "Invalid skip token.",
                ));
            }
        },
        None => {
            let top = match p.get("$top").map(|t| t.parse::<i64>()) {
                None => default_top,
                Some(Ok(n)) if (1..=999).contains(&n) => n as usize,
                Some(_) => {
                    let given = p.get("$top").cloned().unwrap_or_default();
                    return Outcome::json(graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_UnsupportedQuery",
                        &format!("Invalid page size specified: '{given}'. Must be between 1 and 999 inclusive."),
                    ));
                }
            };
            (0, top, p.get("$select").cloned())
        }
    };
    let total = items.len();
    let value: Vec<Value> = items
        .into_iter()
        .skip(offset)
        .take(top)
        .map(|v| select(v, selected.as_ref()))
        .collect();
    let base = &shared.base_url;
    let mut body = json!({"@odata.context": format!("{base}/v1.0/$metadata#{collection}"), "value": value});
    if offset + top < total {
        let token = SkipToken {
            o: offset + top,
            t: top,
            s: selected,
        };
        let token =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(&token).unwrap_or_default());
        body["@odata.nextLink"] = json!(format!("{base}/v1.0/{collection}?$skiptoken={token}"));
    }
    Outcome::json((StatusCode::OK, body))
}

fn find_user<'a>(tenant: &'a Tenant, id: &str) -> Option<&'a User> {
    tenant
        .users
        .iter()
        .find(|u| u.id == id || u.user_principal_name.eq_ignore_ascii_case(id))
}

fn serve(shared: &Shared, segments: &[&str], query: Option<&str>, headers: &HeaderMap) -> Outcome {
    if let ["v1.0", "users", id, "mailFolders" | "messages", ..] = segments {
        return serve_mail(shared, id, segments, query, headers);
    }
    let inner = shared.lock();
    let tenant = &inner.tenant;
    let not_found_user = || {
        Outcome::json(graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "Resource does not exist or one of its queried reference-property objects are not present.",
        ))
    };
    match segments {
        ["v1.0", "users"] => {
            let users = tenant.users.iter().map(user_json).collect();
            drop(inner);
            page(shared, "users", users, query, 100)
        }
        ["v1.0", "users", id] => match find_user(tenant, id) {
            Some(u) => Outcome::json((StatusCode::OK, select(user_json(u), params(query).get("$select")))),
            None => not_found_user(),
        },
        ["v1.0", "users", id, "mailboxSettings"] => match find_user(tenant, id) {
            None => not_found_user(),
            Some(u) if !u.kind.has_mailbox() => Outcome::json(graph_error(
                StatusCode::NOT_FOUND,
                "MailboxNotEnabledForRESTAPI",
                "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            )),
            Some(u) => Outcome::json((
                StatusCode::OK,
                json!({
                    "archiveFolder": format!("AAMk{}", u.id.replace('-', "")),
                    "timeZone": "UTC",
                    "automaticRepliesSetting": {"status": "disabled"},
                    "language": {"locale": "en-US", "displayName": "English (United States)"},
                    "userPurpose": if u.kind == UserKind::SharedMailbox { "shared" } else { "user" },
                }),
            )),
        },
        ["v1.0", "users", id, "drive"] => match find_user(tenant, id) {
            None => not_found_user(),
            Some(u) if !u.kind.has_onedrive() => {
                Outcome::json(graph_error(StatusCode::NOT_FOUND, "itemNotFound", "Item not found"))
            }
            Some(u) => {
                let personal = u.user_principal_name.replace(['@', '.'], "_");
                let host = format!(
                    "{}-my.sharepoint.com",
                    tenant.domain.split('.').next().unwrap_or("contoso")
                );
                Outcome::json((
                    StatusCode::OK,
                    json!({
                        "id": u.drive_id,
                        "driveType": "business",
                        "name": "OneDrive",
                        "owner": {"user": {"id": u.id, "displayName": u.display_name}},
                        "quota": {"total": 1_099_511_627_776u64, "used": 0, "remaining": 1_099_511_627_776u64, "state": "normal"},
                        "webUrl": format!("https://{host}/personal/{personal}/Documents"),
                    }),
                ))
            }
        },
        ["v1.0", "sites", "getAllSites"] => {
            let sites = tenant.sites.iter().map(site_json).collect();
            drop(inner);
            page(shared, "sites/getAllSites", sites, query, 200)
        }
        ["v1.0", "sites", id] => match tenant.sites.iter().find(|s| s.id == *id) {
            Some(s) => Outcome::json((StatusCode::OK, site_json(s))),
            None => Outcome::json(graph_error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "Requested site could not be found",
            )),
        },
        ["v1.0", "sites", id, "drive"] => match tenant.sites.iter().find(|s| s.id == *id) {
            Some(s) => Outcome::json((
                StatusCode::OK,
                json!({"id": format!("b!{}", s.id.replace(',', "")), "driveType": "documentLibrary", "name": "Documents", "webUrl": format!("{}/Shared%20Documents", s.web_url)}),
            )),
            None => Outcome::json(graph_error(
                StatusCode::NOT_FOUND,
                "itemNotFound",
                "Requested site could not be found",
            )),
        },
        _ => Outcome::json(graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            &format!(
                "Resource not found for the segment '{}'.",
                segments.last().unwrap_or(&"")
            ),
        )),
    }
}

fn site_json(s: &Site) -> Value {
    json!({"id": s.id, "name": s.name, "displayName": s.display_name, "webUrl": s.web_url, "createdDateTime": "2023-03-01T10:00:00Z", "siteCollection": {"hostname": s.web_url.trim_start_matches("https://").split('/').next().unwrap_or_default()}})
}

fn tenant_mailboxes(users: &[User]) -> HashMap<String, Mailbox> {
    users
        .iter()
        .filter_map(|u| mailbox_of(u).map(|m| (u.id.clone(), m)))
        .collect()
}

fn max_page_size(headers: &HeaderMap) -> usize {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|v| {
            v.trim()
                .strip_prefix("odata.maxpagesize=")
                .and_then(|n| n.parse::<usize>().ok())
        })
        .unwrap_or(10)
        .clamp(1, 1000)
}

/// Mail folders, message delta and MIME (saas-apis.md §A4).
fn serve_mail(shared: &Shared, user: &str, segments: &[&str], query: Option<&str>, headers: &HeaderMap) -> Outcome {
    let inner = shared.lock();
    let Some(owner) = find_user(&inner.tenant, user) else {
        return Outcome::json(graph_error(
            StatusCode::NOT_FOUND,
            "Request_ResourceNotFound",
            "Resource does not exist.",
        ));
    };
    let Some(mailbox) = inner.mailboxes.get(&owner.id) else {
        return Outcome::json(graph_error(
            StatusCode::NOT_FOUND,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
        ));
    };
    let p = params(query);
    let hidden = p.get("includeHiddenFolders").is_some_and(|v| v == "true");
    let not_found = || {
        Outcome::json(graph_error(
            StatusCode::NOT_FOUND,
            "ErrorItemNotFound",
            "The specified object was not found in the store.",
        ))
    };
    let base = format!("{}/v1.0/users/{user}", shared.base_url);
    match &segments[3..] {
        ["mailFolders"] => {
            let folders = mailbox
                .folders
                .iter()
                .filter(|f| f.parent_id.is_none() && (hidden || !f.hidden))
                .map(|f| mailbox.folder_json(f))
                .collect();
            drop(inner);
            page(shared, &format!("users/{user}/mailFolders"), folders, query, 10)
        }
        ["mailFolders", fid, "childFolders"] => {
            if !mailbox.folders.iter().any(|f| f.id == *fid) {
                return not_found();
            }
            let folders = mailbox
                .folders
                .iter()
                .filter(|f| f.parent_id.as_deref() == Some(*fid) && (hidden || !f.hidden))
                .map(|f| mailbox.folder_json(f))
                .collect();
            drop(inner);
            page(
                shared,
                &format!("users/{user}/mailFolders/{fid}/childFolders"),
                folders,
                query,
                10,
            )
        }
        ["mailFolders", fid, "messages", "delta"] => {
            if !mailbox.folders.iter().any(|f| f.id == *fid) {
                return not_found();
            }
            let page_size = max_page_size(headers);
            let now = mailbox.current_seq();
            let state = match (p.get("$skiptoken"), p.get("$deltatoken")) {
                (Some(t), _) => mail::SyncState::decode(t),
                (None, Some(t)) => mail::SyncState::decode(t).map(|s| mail::SyncState {
                    upto: now,
                    after_created: 0,
                    after_removal: 0,
                    ..s
                }),
                (None, None) => Some(mail::SyncState {
                    since: 0,
                    upto: now,
                    after_created: 0,
                    after_removal: 0,
                    page: page_size,
                }),
            };
            let Some(mut state) = state else {
                return Outcome::json(graph_error(
                    StatusCode::BAD_REQUEST,
                    "ErrorInvalidUrlQuery",
                    "The sync state is malformed.",
                ));
            };
            if state.since > 0 && state.since < mailbox.oldest_sync_state {
                return Outcome::json(graph_error(
                    StatusCode::GONE,
                    "syncStateNotFound",
                    "The sync state generation is not found; start a full synchronization.",
                ));
            }
            state.page = page_size;
            let (values, next) = mail::delta_page(mailbox, fid, &state);
            let (name, link) = match next {
                Some(next) => (
                    "@odata.nextLink",
                    format!("{base}/mailFolders/{fid}/messages/delta?$skiptoken={}", next.encode()),
                ),
                None => {
                    let next = mail::SyncState {
                        since: state.upto,
                        upto: 0,
                        after_created: 0,
                        after_removal: 0,
                        page: page_size,
                    };
                    (
                        "@odata.deltaLink",
                        format!("{base}/mailFolders/{fid}/messages/delta?$deltatoken={}", next.encode()),
                    )
                }
            };
            let mut body = json!({"@odata.context": format!("{}/v1.0/$metadata#Collection(message)", shared.base_url), "value": values});
            body[name] = json!(link);
            Outcome::json((StatusCode::OK, body))
        }
        ["messages", mid] => match mailbox.items.iter().find(|m| m.id == *mid) {
            Some(m) => Outcome::json((StatusCode::OK, mail::message_json(m))),
            None => not_found(),
        },
        ["messages", mid, "$value"] => match mailbox.items.iter().find(|m| m.id == *mid) {
            Some(m) => Outcome {
                status: StatusCode::OK,
                body: Value::Null,
                raw: Some(m.mime.clone()),
                retry_after: None,
                truncate: false,
            },
            None => not_found(),
        },
        _ => Outcome::json(graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Unsupported mail resource.",
        )),
    }
}
