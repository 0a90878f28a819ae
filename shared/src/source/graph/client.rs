//! The Graph HTTP client: tokens, retries, throttle gates, paging.

use super::throttle::{Gates, Scope};
use crate::secrets::Secret;
use crate::source::{SourceError, SourceStats};
use futures::StreamExt;
use futures::stream::BoxStream;
use rand::Rng;
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::io::StreamReader;
use tracing::{debug, warn};

/// Where and as whom to reach a tenant. National clouds (and the fake) override the URLs.
#[derive(Debug, Clone)]
pub struct GraphCredentials {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// e.g. `https://login.microsoftonline.com`
    pub login_url: String,
    /// e.g. `https://graph.microsoft.com`
    pub graph_url: String,
}

/// How hard to try before giving up on a request.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts on 5xx, timeouts and broken responses.
    pub max_attempts: u32,
    /// Attempts while throttled (429, or 503 with `Retry-After`).
    pub max_throttled_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A `Retry-After` longer than this ends the request as [`SourceError::Throttled`].
    pub max_retry_after: Duration,
    /// Requests in flight at once, over all scopes.
    pub concurrency: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_ATTEMPTS,
            max_throttled_attempts: 20,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(300),
            concurrency: 16,
        }
    }
}

impl RetryPolicy {
    pub const DEFAULT_ATTEMPTS: u32 = 6;

    /// For checking credentials while a user waits: fail fast.
    pub fn interactive() -> Self {
        Self {
            max_attempts: 3,
            max_throttled_attempts: 3,
            max_retry_after: Duration::from_secs(10),
            ..Self::default()
        }
    }

    /// Full jitter: a random wait in `[0, min(max, base * 2^attempt)]`.
    fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let millis = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::thread_rng().gen_range(0..=millis))
    }
}

struct Token {
    value: Secret,
    renew_at: Instant,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

#[derive(Deserialize)]
struct TokenError {
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphErrorDetail,
}

#[derive(Deserialize)]
struct GraphErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// A client of one tenant's Graph API.
pub struct GraphClient {
    http: reqwest::Client,
    creds: GraphCredentials,
    policy: RetryPolicy,
    token: Mutex<Option<Token>>,
    gates: Gates,
    in_flight: Arc<Semaphore>,
    requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
}

/// What one attempt ended with.
enum Attempt {
    Done(bytes::Bytes),
    /// A successful response whose body is read as it arrives, permits held.
    Streaming(reqwest::Response, Permits),
    Throttled(Option<Duration>),
    Transient(String),
    ExpiredToken,
}

impl GraphClient {
    pub fn new(http: reqwest::Client, creds: GraphCredentials, policy: RetryPolicy) -> Self {
        Self {
            http,
            in_flight: Arc::new(Semaphore::new(policy.concurrency.max(1))),
            creds,
            policy,
            token: Mutex::new(None),
            gates: Gates::default(),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            retries: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> SourceStats {
        SourceStats {
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
        }
    }

    fn graph_base(&self) -> String {
        format!("{}/v1.0", self.creds.graph_url.trim_end_matches('/'))
    }

    /// An access token, fetched or renewed 5 minutes before it expires.
    async fn token(&self) -> Result<Secret, SourceError> {
        let mut slot = self.token.lock().await;
        if let Some(token) = slot.as_ref().filter(|t| t.renew_at > Instant::now()) {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *slot = Some(token);
        Ok(value)
    }

    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    async fn fetch_token(&self) -> Result<Token, SourceError> {
        let url = format!(
            "{}/{}/oauth2/v2.0/token",
            self.creds.login_url.trim_end_matches('/'),
            urlencoding::encode(&self.creds.tenant_id)
        );
        let scope = format!("{}/.default", self.creds.graph_url.trim_end_matches('/'));
        let form = [
            ("client_id", self.creds.client_id.as_str()),
            ("client_secret", self.creds.client_secret.expose()),
            ("scope", scope.as_str()),
            ("grant_type", "client_credentials"),
        ];
        let mut attempt = 0;
        loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let reason: String = match self.http.post(&url).form(&form).send().await {
                Err(e) => format!("token endpoint unreachable: {}", without_url(&e)),
                Ok(resp) => {
                    let status = resp.status();
                    let body = resp
                        .bytes()
                        .await
                        .map_err(|e| format!("token response broken: {}", without_url(&e)));
                    match body {
                        Err(e) => e,
                        Ok(body) if status.is_success() => {
                            let parsed: TokenResponse = serde_json::from_slice(&body)
                                .map_err(|e| SourceError::Protocol(format!("token response: {e}")))?;
                            // Renew 5 minutes early, or halfway through a short-lived token.
                            let lifetime = Duration::from_secs(parsed.expires_in);
                            let margin = Duration::from_secs(300).min(lifetime / 2);
                            return Ok(Token {
                                value: Secret::new(parsed.access_token),
                                renew_at: Instant::now() + lifetime - margin,
                            });
                        }
                        Ok(_) if status.is_server_error() || status.as_u16() == 429 => {
                            format!("token endpoint answered {status}")
                        }
                        Ok(body) => {
                            let (code, description) = match serde_json::from_slice::<TokenError>(&body) {
                                Ok(e) => (e.error, first_line(&e.error_description)),
                                Err(_) => (
                                    status.as_u16().to_string(),
                                    "the token endpoint refused the request".to_string(),
                                ),
                            };
                            return Err(SourceError::Auth { code, description });
                        }
                    }
                }
            };
            attempt += 1;
            if attempt >= self.policy.max_attempts {
                return Err(SourceError::Unavailable(reason));
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(self.policy.backoff(attempt)).await;
        }
    }

    /// GET a Graph path (`/users?...`) or an absolute `@odata.nextLink`, as JSON.
    pub async fn get_json(&self, path_or_url: &str) -> Result<serde_json::Value, SourceError> {
        let body = self.get_body(path_or_url, None).await?;
        serde_json::from_slice(&body).map_err(|e| SourceError::Protocol(format!("unreadable response: {e}")))
    }

    /// GET with an extra `Prefer` preference (e.g. `odata.maxpagesize=100`), as JSON.
    pub async fn get_json_prefer(&self, path_or_url: &str, prefer: &str) -> Result<serde_json::Value, SourceError> {
        let body = self.get_body(path_or_url, Some(prefer)).await?;
        serde_json::from_slice(&body).map_err(|e| SourceError::Protocol(format!("unreadable response: {e}")))
    }

    /// GET the raw body (MIME from `$value`), with the same retries and gates.
    pub async fn get_raw(&self, path_or_url: &str) -> Result<bytes::Bytes, SourceError> {
        self.get_body(path_or_url, Some("raw")).await
    }

    async fn get_body(&self, path_or_url: &str, prefer: Option<&str>) -> Result<bytes::Bytes, SourceError> {
        match self.get(path_or_url, prefer, false).await? {
            Got::Whole(body) => Ok(body),
            Got::Stream(_) => Err(SourceError::Protocol(
                "a streamed answer where a whole one was asked".into(),
            )),
        }
    }

    /// GET a raw body (MIME from `$value`) as a reader that yields it as it
    /// arrives: memory stays small whatever the size. The request keeps its
    /// concurrency slots until the reader is dropped. A body that breaks
    /// midway is an `io::Error` of the reader: the caller starts over.
    pub async fn get_stream(&self, path_or_url: &str) -> Result<ContentStream, SourceError> {
        match self.get(path_or_url, Some("raw"), true).await? {
            Got::Stream(stream) => Ok(stream),
            Got::Whole(_) => Err(SourceError::Protocol("a whole answer where a stream was asked".into())),
        }
    }

    async fn get(&self, path_or_url: &str, prefer: Option<&str>, stream: bool) -> Result<Got, SourceError> {
        let url = self.resolve(path_or_url)?;
        let scope = Scope::of_path(url.path());
        self.run(&Req::get(), &url, &scope, prefer, stream).await
    }

    /// POST a JSON body to a Graph path; the answer as JSON. A throttled
    /// request is sent again (it was refused, not done); a 5xx or a broken
    /// connection is not, since the service may have done it: the caller
    /// decides (a restore records the item as failed and never guesses).
    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, SourceError> {
        self.write_json(reqwest::Method::POST, path, body).await
    }

    /// PATCH a JSON body (same retry rules as [`GraphClient::post_json`]).
    pub async fn patch_json(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, SourceError> {
        self.write_json(reqwest::Method::PATCH, path, body).await
    }

    async fn write_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, SourceError> {
        let url = self.resolve(path)?;
        let scope = Scope::of_path(url.path());
        let req = Req {
            method,
            body: Some(("application/json", bytes::Bytes::from(body.to_string()))),
            content_range: None,
            auth: true,
            retry_transient: false,
        };
        match self.run(&req, &url, &scope, None, false).await? {
            Got::Whole(b) if b.is_empty() => Ok(serde_json::Value::Null),
            Got::Whole(b) => {
                serde_json::from_slice(&b).map_err(|e| SourceError::Protocol(format!("unreadable response: {e}")))
            }
            Got::Stream(_) => Err(SourceError::Protocol("a streamed answer to a write".into())),
        }
    }

    /// PUT one chunk to an upload session's URL (pre-authenticated: no
    /// `Authorization` header goes with it, and it may be on another host).
    /// Counts against `mailbox`'s limits. The session checks ranges, so a
    /// chunk is sent again after a transient failure.
    pub async fn put_chunk(
        &self,
        upload_url: &str,
        mailbox: &str,
        range: String,
        chunk: bytes::Bytes,
    ) -> Result<serde_json::Value, SourceError> {
        let url = url::Url::parse(upload_url).map_err(|e| SourceError::Protocol(format!("bad upload url: {e}")))?;
        if url.scheme() != "https" && url.origin() != self.resolve("/")?.origin() {
            return Err(SourceError::Protocol("upload url is not https".into()));
        }
        let req = Req {
            method: reqwest::Method::PUT,
            body: Some(("application/octet-stream", chunk)),
            content_range: Some(range),
            auth: false,
            retry_transient: true,
        };
        match self
            .run(&req, &url, &Scope::Mailbox(mailbox.to_string()), Some("raw"), false)
            .await?
        {
            Got::Whole(b) if b.is_empty() => Ok(serde_json::Value::Null),
            Got::Whole(b) => Ok(serde_json::from_slice(&b).unwrap_or(serde_json::Value::Null)),
            Got::Stream(_) => Err(SourceError::Protocol("a streamed answer to a write".into())),
        }
    }

    async fn run(
        &self,
        req: &Req,
        url: &url::Url,
        scope: &Scope,
        prefer: Option<&str>,
        stream: bool,
    ) -> Result<Got, SourceError> {
        let (mut attempts, mut throttled_attempts, mut token_renewed) = (0u32, 0u32, false);
        loop {
            match self.attempt(req, url, scope, prefer, stream).await? {
                Attempt::Done(value) => return Ok(Got::Whole(value)),
                Attempt::Streaming(response, permits) => {
                    return Ok(Got::Stream(ContentStream::from_response(response, permits)));
                }
                Attempt::ExpiredToken if !token_renewed && req.auth => {
                    token_renewed = true;
                    self.forget_token().await;
                }
                Attempt::ExpiredToken => {
                    return Err(SourceError::Auth {
                        code: "InvalidAuthenticationToken".into(),
                        description: "a fresh token was refused".into(),
                    });
                }
                Attempt::Throttled(retry_after) => {
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    throttled_attempts += 1;
                    let wait = retry_after.unwrap_or_else(|| self.policy.backoff(throttled_attempts));
                    if throttled_attempts >= self.policy.max_throttled_attempts || wait > self.policy.max_retry_after {
                        return Err(SourceError::Throttled {
                            attempts: throttled_attempts,
                            retry_after,
                        });
                    }
                    debug!(?scope, wait_ms = wait.as_millis() as u64, "throttled");
                    self.gates.hold(scope, wait);
                    self.retries.fetch_add(1, Ordering::Relaxed);
                }
                Attempt::Transient(reason) => {
                    attempts += 1;
                    if attempts >= self.policy.max_attempts || !req.retry_transient {
                        warn!(path = url.path(), %reason, attempts, "giving up");
                        return Err(SourceError::Unavailable(reason));
                    }
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(self.policy.backoff(attempts)).await;
                }
            }
        }
    }

    /// Sleeps the backoff of a failed attempt at a whole streamed item (the
    /// caller's retry of a body that broke midway).
    pub async fn backoff(&self, attempt: u32) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.policy.backoff(attempt)).await;
    }

    /// Every `value` entry of a collection, following `@odata.nextLink` until it is absent.
    pub async fn get_all(&self, path: &str) -> Result<Vec<serde_json::Value>, SourceError> {
        let mut out = Vec::new();
        let mut next = Some(path.to_string());
        while let Some(link) = next {
            let mut page = self.get_json(&link).await?;
            match page.get_mut("value").map(serde_json::Value::take) {
                Some(serde_json::Value::Array(values)) => out.extend(values),
                _ => return Err(SourceError::Protocol("collection page without a value array".into())),
            }
            next = page.get("@odata.nextLink").and_then(|v| v.as_str()).map(str::to_string);
        }
        Ok(out)
    }

    /// The absolute URL of a request; links must stay on the Graph host (the token goes with them).
    fn resolve(&self, path_or_url: &str) -> Result<url::Url, SourceError> {
        let base = url::Url::parse(&self.graph_base()).map_err(|e| SourceError::Protocol(format!("graph url: {e}")))?;
        if path_or_url.starts_with('/') {
            return url::Url::parse(&format!("{}{}", self.graph_base(), path_or_url))
                .map_err(|e| SourceError::Protocol(format!("bad path: {e}")));
        }
        let url = url::Url::parse(path_or_url).map_err(|e| SourceError::Protocol(format!("bad link: {e}")))?;
        if url.origin() != base.origin() {
            return Err(SourceError::Protocol(format!(
                "link leaves the Graph host: {}",
                url.origin().ascii_serialization()
            )));
        }
        Ok(url)
    }

    async fn attempt(
        &self,
        req: &Req,
        url: &url::Url,
        scope: &Scope,
        prefer: Option<&str>,
        stream: bool,
    ) -> Result<Attempt, SourceError> {
        let closed = |_| SourceError::Unavailable("client closed".into());
        let mailbox = match scope {
            Scope::Mailbox(id) => Some(self.gates.mailbox(id).acquire_owned().await.map_err(closed)?),
            _ => None,
        };
        let permits = Permits {
            _mailbox: mailbox,
            _flight: self.in_flight.clone().acquire_owned().await.map_err(closed)?,
        };
        // Honour any Retry-After that arrived while this request waited for a permit.
        self.gates.wait_open(scope).await;
        let mut request = self.http.request(req.method.clone(), url.clone());
        if req.auth {
            let token = self.token().await?;
            request = request.bearer_auth(token.expose()).header(
                "Prefer",
                match prefer {
                    Some(p) if p != "raw" => format!("IdType=\"ImmutableId\", {p}"),
                    _ => "IdType=\"ImmutableId\"".to_string(),
                },
            );
        }
        if let Some((content_type, body)) = &req.body {
            request = request.header("Content-Type", *content_type).body(body.clone());
        }
        if let Some(range) = &req.content_range {
            request = request.header("Content-Range", range);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let response = request.send().await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Ok(Attempt::Transient(format!("request failed: {}", without_url(&e)))),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        if stream && (200..300).contains(&status) {
            return Ok(Attempt::Streaming(response, permits));
        }
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Ok(Attempt::Transient(format!("response body broken: {}", without_url(&e)))),
        };
        if (200..300).contains(&status) {
            // JSON must parse: a garbled body is asked for again. Raw bodies arrived whole (length checked by HTTP).
            let json_expected = prefer != Some("raw");
            if let Some(e) = json_expected
                .then(|| serde_json::from_slice::<serde::de::IgnoredAny>(&body).err())
                .flatten()
            {
                return Ok(Attempt::Transient(format!("unreadable response: {e}")));
            }
            return Ok(Attempt::Done(body));
        }
        let (code, message) = match serde_json::from_slice::<GraphErrorBody>(&body) {
            Ok(b) => (b.error.code, b.error.message),
            Err(_) => (
                String::new(),
                String::from_utf8_lossy(&body).chars().take(200).collect(),
            ),
        };
        Ok(match status {
            429 => Attempt::Throttled(retry_after),
            410 => return Err(SourceError::Resync),
            _ if code == "syncStateNotFound" || code == "resyncRequired" => return Err(SourceError::Resync),
            503 if retry_after.is_some() => Attempt::Throttled(retry_after),
            401 if code == "InvalidAuthenticationToken" || code.is_empty() => Attempt::ExpiredToken,
            500..=599 => Attempt::Transient(format!("{status} {code}")),
            401 => {
                return Err(SourceError::Auth {
                    code,
                    description: message,
                });
            }
            403 => return Err(SourceError::Forbidden { code, message }),
            404 => return Err(SourceError::NotFound { code, message }),
            _ => return Err(SourceError::Api { status, code, message }),
        })
    }
}

/// What is sent: GETs carry nothing; writes a body, and upload chunks no token.
struct Req {
    method: reqwest::Method,
    body: Option<(&'static str, bytes::Bytes)>,
    content_range: Option<String>,
    auth: bool,
    /// Send again after a 5xx or a broken connection (safe for reads and ranged chunks).
    retry_transient: bool,
}

impl Req {
    fn get() -> Self {
        Self {
            method: reqwest::Method::GET,
            body: None,
            content_range: None,
            auth: true,
            retry_transient: true,
        }
    }
}

/// The concurrency slots a request holds: its mailbox's and the client's.
pub struct Permits {
    _mailbox: Option<OwnedSemaphorePermit>,
    _flight: OwnedSemaphorePermit,
}

enum Got {
    Whole(bytes::Bytes),
    Stream(ContentStream),
}

/// A response body read as it arrives ([`GraphClient::get_stream`]).
pub struct ContentStream {
    reader: StreamReader<BoxStream<'static, std::io::Result<bytes::Bytes>>, bytes::Bytes>,
    _permits: Permits,
}

impl ContentStream {
    fn from_response(response: reqwest::Response, permits: Permits) -> Self {
        let body = response
            .bytes_stream()
            .map(|r| r.map_err(|e| std::io::Error::other(format!("response body broken: {}", without_url(&e)))));
        Self {
            reader: StreamReader::new(body.boxed()),
            _permits: permits,
        }
    }
}

impl tokio::io::AsyncRead for ContentStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().reader).poll_read(cx, buf)
    }
}

/// A reqwest error without its URL (which may carry query parameters).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "transport error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The human part of an Entra ID error description: its first line, without
/// the trace and correlation ids that follow.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    let line = line.split(" Trace ID:").next().unwrap_or(line);
    line.trim().chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> GraphClient {
        let creds = GraphCredentials {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: Secret::new("s"),
            login_url: "https://login.example".into(),
            graph_url: "https://graph.example".into(),
        };
        GraphClient::new(reqwest::Client::new(), creds, RetryPolicy::default())
    }

    #[test]
    fn links_must_stay_on_the_graph_host() {
        let c = client();
        assert!(c.resolve("/users?$top=1").is_ok());
        assert!(c.resolve("https://graph.example/v1.0/users?$skiptoken=x").is_ok());
        assert!(
            c.resolve("https://evil.example/v1.0/users").is_err(),
            "the token must not follow a link elsewhere"
        );
        assert!(
            c.resolve("http://graph.example/v1.0/users").is_err(),
            "nor downgrade to http"
        );
    }

    #[test]
    fn backoff_stays_within_its_cap() {
        let p = RetryPolicy::default();
        for attempt in 0..20 {
            assert!(p.backoff(attempt) <= p.max_delay);
        }
    }

    #[test]
    fn entra_descriptions_lose_their_ids() {
        assert_eq!(
            first_line("AADSTS7000215: Invalid client secret. Trace ID: 1 Correlation ID: 2"),
            "AADSTS7000215: Invalid client secret."
        );
    }
}
