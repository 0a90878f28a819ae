//! The HTTP side: shared state, dispatch, the request log, the control
//! endpoints and the shape of every response.

use crate::faults::{FaultKind, FaultPicker, Faults};
use crate::graph::PageState;
use crate::mail::Mailbox;
use crate::tenant::{Tenant, User, UserKind};
use crate::throttle::{Scope, Throttle};
use crate::{LoggedRequest, Options};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// An access token the fake issued.
pub(crate) struct Token {
    pub client_id: String,
    pub expires: Instant,
}

pub(crate) struct Inner {
    pub tenant: Tenant,
    /// Mailboxes by user id.
    pub mailboxes: HashMap<String, Mailbox>,
    /// A stable position per user id (insertion order): what `/users` skip tokens point after.
    pub user_order: HashMap<String, u64>,
    next_order: u64,
    /// Licensed users now (the SharePoint throttling band counts them).
    pub licensed: usize,
    /// Position in `tenant.users` by lower-case id and lower-case UPN.
    index: HashMap<String, usize>,
    pub tokens: HashMap<String, Token>,
    pub faults: FaultPicker,
    pub throttle: Throttle,
    pub log: Vec<LoggedRequest>,
    seq: u64,
    /// The state behind each opaque `$skiptoken`.
    pub pages: HashMap<String, PageState>,
    /// Attachment upload sessions by their opaque id (the last segment of `uploadUrl`).
    pub uploads: HashMap<String, crate::upload::Session>,
}

impl Inner {
    /// A user by id or UPN, without regard to case.
    pub fn find_user(&self, id: &str) -> Option<&User> {
        self.index
            .get(&id.to_lowercase())
            .and_then(|i| self.tenant.users.get(*i))
    }

    fn index_user(&mut self, i: usize) {
        if let Some(u) = self.tenant.users.get(i) {
            self.index.insert(u.id.to_lowercase(), i);
            self.index.insert(u.user_principal_name.to_lowercase(), i);
        }
    }

    fn reindex(&mut self) {
        self.index.clear();
        for i in 0..self.tenant.users.len() {
            self.index_user(i);
        }
    }

    pub fn add_user(&mut self, user: User) {
        if user.kind.has_mailbox() {
            let mut mailbox = Mailbox::new(&user.id);
            for m in &user.messages {
                mailbox.add(&m.folder, m.mime.clone());
            }
            self.mailboxes.insert(user.id.clone(), mailbox);
        } else {
            self.mailboxes.remove(&user.id);
        }
        self.next_order += 1;
        self.user_order.insert(user.id.clone(), self.next_order);
        let replaced = self
            .index
            .get(&user.id.to_lowercase())
            .copied()
            .filter(|i| self.tenant.users.get(*i).is_some_and(|u| u.id == user.id));
        self.licensed += usize::from(user.kind.licensed());
        self.tenant.users.push(user);
        match replaced {
            Some(i) => {
                let old = self.tenant.users.remove(i);
                self.licensed -= usize::from(old.kind.licensed());
                self.reindex();
            }
            None => self.index_user(self.tenant.users.len() - 1),
        }
    }

    /// Removes a user by id or UPN; false when there was none.
    pub fn remove_user(&mut self, id: &str) -> bool {
        let Some((user, licensed)) = self.find_user(id).map(|u| (u.id.clone(), u.kind.licensed())) else {
            return false;
        };
        self.licensed -= usize::from(licensed);
        self.tenant.users.retain(|u| u.id != user);
        self.reindex();
        self.mailboxes.remove(&user);
        self.user_order.remove(&user);
        true
    }

    pub fn requests(&self) -> Vec<LoggedRequest> {
        let mut log = self.log.clone();
        log.sort_by_key(|r| r.seq);
        log
    }
}

pub(crate) struct Shared {
    inner: Mutex<Inner>,
    pub options: Options,
    pub base_url: String,
}

impl Shared {
    pub fn new(mut tenant: Tenant, options: Options, base_url: String) -> Self {
        let users = std::mem::take(&mut tenant.users);
        let mut inner = Inner {
            tenant,
            mailboxes: HashMap::new(),
            user_order: HashMap::new(),
            next_order: 0,
            licensed: 0,
            index: HashMap::new(),
            tokens: HashMap::new(),
            faults: FaultPicker::new(options.faults.clone(), options.seed),
            throttle: Throttle::new(options.time_scale),
            log: Vec::new(),
            seq: 0,
            pages: HashMap::new(),
            uploads: HashMap::new(),
        };
        for u in users {
            inner.add_user(u);
        }
        Self {
            inner: Mutex::new(inner),
            options,
            base_url,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The largest request body read (above axum's 2 MB default): a 4 MiB upload
/// chunk, a base64 attachment over 3 MiB or a large MIME message must reach the
/// handlers, which answer Graph's own errors.
const MAX_BODY: usize = 64 * 1024 * 1024;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

// ----- responses -----

/// A Graph error body (§A2); `innerError` is filled in per request.
pub(crate) fn graph_error(status: StatusCode, code: &str, message: &str) -> Outcome {
    Outcome::json(
        status,
        json!({"error": {"code": code, "message": message, "innerError": {}}}),
    )
}

/// An Entra ID error body (§A1).
pub(crate) fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Outcome {
    let trace = uuid::Uuid::new_v4();
    let correlation = uuid::Uuid::new_v4();
    let now = Utc::now().format("%Y-%m-%d %H:%M:%SZ").to_string();
    let mut outcome = Outcome::json(
        status,
        json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {now}"),
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace.to_string(),
            "correlation_id": correlation.to_string(),
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    );
    outcome.content_type = "application/json; charset=utf-8";
    outcome
}

/// What a handler decided; turned into a response by [`Outcome::into_response`].
#[derive(Debug)]
pub(crate) struct Outcome {
    pub status: StatusCode,
    pub body: Value,
    /// A raw body (MIME from `$value`) instead of JSON.
    pub raw: Option<Bytes>,
    pub content_type: &'static str,
    pub retry_after: Option<u32>,
    pub headers: Vec<(&'static str, String)>,
    pub truncate: bool,
}

const GRAPH_JSON: &str =
    "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8";

impl Outcome {
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            raw: None,
            content_type: GRAPH_JSON,
            retry_after: None,
            headers: Vec::new(),
            truncate: false,
        }
    }

    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    pub fn raw(bytes: Bytes, content_type: &'static str) -> Self {
        Self {
            raw: Some(bytes),
            content_type,
            ..Self::ok(Value::Null)
        }
    }

    fn into_response(mut self, request_id: &str, client_request_id: &str) -> Response {
        if let Some(inner) = self
            .body
            .pointer_mut("/error/innerError")
            .and_then(Value::as_object_mut)
        {
            inner.insert("date".into(), json!(Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string()));
            inner.insert("request-id".into(), json!(request_id));
            inner.insert("client-request-id".into(), json!(client_request_id));
        }
        let bytes = match self.raw {
            Some(raw) => raw,
            None => Bytes::from(serde_json::to_vec(&self.body).unwrap_or_default()),
        };
        let mut response = if self.truncate && bytes.len() > 1 {
            truncated(bytes)
        } else {
            Response::new(Body::from(bytes))
        };
        *response.status_mut() = self.status;
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        if let Some(secs) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        for (name, value) in [("request-id", request_id), ("client-request-id", client_request_id)] {
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                h.insert(HeaderName::from_static(name), v);
            }
        }
        response
    }
}

/// Half the body under the full `Content-Length`, then the connection breaks.
fn truncated(bytes: Bytes) -> Response {
    let full = bytes.len();
    let half = bytes.slice(..full / 2);
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
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(full));
    r
}

// ----- the request log -----

/// One request on its way: logged when dropped, so a request whose client
/// went away is logged too, and its mailbox concurrency slot is given back.
pub(crate) struct Flight {
    shared: Arc<Shared>,
    pub entry: LoggedRequest,
    /// The mailbox slot to give back: (app, scope).
    pub slot: Option<(String, Scope)>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if let Some((app, scope)) = self.slot.take() {
            inner.throttle.release(&app, &scope);
        }
        let mut entry = self.entry.clone();
        entry.finished_at = Utc::now();
        inner.log.push(entry);
    }
}

// ----- dispatch -----

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query = uri.query().map(str::to_string);
    if let Some(rest) = path.strip_prefix("/_fake/") {
        return control(&shared, &method, rest, &body);
    }
    let at = Utc::now();
    let seq = {
        let mut inner = shared.lock();
        inner.seq += 1;
        inner.seq
    };
    let mut flight = Flight {
        shared: shared.clone(),
        entry: LoggedRequest {
            seq,
            at,
            finished_at: at,
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            client_id: None,
            mailbox: None,
            // Until an answer is ready: the client went away.
            status: 499,
            retry_after_secs: None,
            throttle_scope: None,
        },
        slot: None,
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| request_id.clone());
    let segments: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|s| {
            urlencoding::decode(s)
                .map(|d| d.into_owned())
                .unwrap_or_else(|_| s.to_string())
        })
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    let outcome = match segments.as_slice() {
        [tenant, "oauth2", "v2.0", "token"] => {
            crate::token::handle(&shared, &method, tenant, &path, &body, &mut flight).await
        }
        _ => {
            crate::graph::handle(
                &shared,
                &method,
                &path,
                &segments,
                query.as_deref(),
                &headers,
                &body,
                &mut flight,
            )
            .await
        }
    };
    flight.entry.status = outcome.status.as_u16();
    flight.entry.retry_after_secs = outcome.retry_after;
    let response = outcome.into_response(&request_id, &client_request_id);
    drop(flight);
    response
}

/// The hold of a timeout fault, then 504; the log says 504 even if the client gave up first.
pub(crate) async fn hold(secs: f64, flight: &mut Flight) {
    flight.entry.status = 504;
    tokio::time::sleep(FaultKind::hold(secs)).await;
}

// ----- control endpoints -----

fn control(shared: &Shared, method: &Method, rest: &str, body: &[u8]) -> Response {
    let mut inner = shared.lock();
    let (status, value) = match (method.as_str(), rest) {
        ("GET", "faults") => (StatusCode::OK, json!(inner.faults.get())),
        ("POST", "faults") => match serde_json::from_slice::<Faults>(body) {
            Ok(f) => match f.validate() {
                Ok(()) => {
                    inner.faults.set(f);
                    (StatusCode::OK, json!(inner.faults.get()))
                }
                Err(e) => (StatusCode::BAD_REQUEST, json!({"error": e})),
            },
            Err(e) => (StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        ("GET", "requests") => (StatusCode::OK, json!(inner.requests())),
        ("DELETE", "requests") => {
            inner.log.clear();
            return StatusCode::NO_CONTENT.into_response();
        }
        ("GET", "tenant") => {
            let t = &inner.tenant;
            let users: Vec<Value> = t
                .users
                .iter()
                .map(|u| json!({"id": u.id, "userPrincipalName": u.user_principal_name, "displayName": u.display_name, "kind": u.kind}))
                .collect();
            let sites: Vec<Value> = t
                .sites
                .iter()
                .map(|s| json!({"id": s.id, "name": s.name, "webUrl": s.web_url}))
                .collect();
            (
                StatusCode::OK,
                json!({"tenant_id": t.tenant_id, "domain": t.domain, "client_id": t.client_id, "users": users, "sites": sites}),
            )
        }
        ("POST", "users") => match new_user(&inner, body) {
            Ok(user) => {
                let v = json!({"id": user.id, "userPrincipalName": user.user_principal_name, "displayName": user.display_name, "kind": user.kind});
                inner.add_user(user);
                (StatusCode::CREATED, v)
            }
            Err((status, e)) => (status, json!({"error": e})),
        },
        ("DELETE", r) if r.starts_with("users/") => {
            let id = urlencoding::decode(&r["users/".len()..])
                .map(|d| d.into_owned())
                .unwrap_or_default();
            if inner.remove_user(&id) {
                return StatusCode::NO_CONTENT.into_response();
            }
            (StatusCode::NOT_FOUND, json!({"error": format!("no user {id}")}))
        }
        _ => (StatusCode::NOT_FOUND, json!({"error": "no such control endpoint"})),
    };
    (status, axum::Json(value)).into_response()
}

/// A user from `POST /_fake/users`: `{"userPrincipalName", "displayName"?, "id"?, "kind"?}`.
fn new_user(inner: &Inner, body: &[u8]) -> Result<User, (StatusCode, String)> {
    let bad = |e: String| (StatusCode::BAD_REQUEST, e);
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let upn = v["userPrincipalName"]
        .as_str()
        .ok_or_else(|| bad("userPrincipalName is required".into()))?
        .to_string();
    let kind = match v.get("kind") {
        None | Some(Value::Null) => UserKind::Licensed,
        Some(k) => serde_json::from_value(k.clone()).map_err(|e| bad(format!("kind: {e}")))?,
    };
    let id = v["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    if inner.find_user(&upn).is_some() || inner.find_user(&id).is_some() {
        return Err((StatusCode::CONFLICT, format!("{upn} or {id} exists")));
    }
    let name = v["displayName"].as_str().unwrap_or(&upn).to_string();
    Ok(User::new(id, upn, name, kind))
}
