//! The end-to-end world: a fake Microsoft 365 tenant, the local stack (moto,
//! resources from the SAM template, queue pollers calling the real handlers,
//! the HTTP API), and a small HTTP client of the API. Every test starts its
//! own world on its own loopback ports, so tests run in parallel.

pub mod coldstart;

use anyhow::{Context as _, Result, bail};
use fake_m365::{FakeM365, Options, Tenant};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use strata_local::{Running, Stack, StackOptions};

/// The repository's root (where `infra/template.yaml` is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("../.."))
}

/// A running world.
pub struct World {
    pub fake: FakeM365,
    pub stack: Stack,
    pub running: Option<Running>,
    pub api: Api,
}

/// What to start.
pub struct WorldOptions {
    pub tenant: Tenant,
    pub fake: Options,
    /// Environment overrides of the functions (on top of what the template gives).
    pub env: BTreeMap<String, String>,
    pub quiet: bool,
}

impl WorldOptions {
    pub fn new(tenant: Tenant) -> Self {
        Self {
            tenant,
            fake: Options::default(),
            env: BTreeMap::new(),
            quiet: true,
        }
    }
}

impl World {
    pub async fn start(opts: WorldOptions) -> Result<Self> {
        let fake = FakeM365::start(opts.tenant, opts.fake)
            .await
            .context("start the fake Microsoft 365")?;
        let stack = Stack::start(StackOptions {
            repo_root: repo_root(),
            stack_name: "strata-test".into(),
            endpoint: None,
            parameters: BTreeMap::new(),
            failed_visibility_secs: Some(1),
            quiet: opts.quiet,
        })
        .await
        .context("start the local stack")?;
        let mut env = strata_local::wire::local_overrides();
        env.extend(opts.env);
        let handlers = strata_local::wire::handlers(&stack, &env).await?;
        let running = stack.run(handlers, Some("127.0.0.1:0".parse()?)).await?;
        let base = running.api_url().context("the API is served")?;
        Ok(Self {
            fake,
            stack,
            running: Some(running),
            api: Api::new(base),
        })
    }

    /// The deployment's one-time bootstrap token, as an operator reads it from Secrets Manager.
    pub async fn bootstrap_token(&self) -> Result<String> {
        let arn = self
            .stack
            .physical_id("BootstrapSecret")
            .context("BootstrapSecret provisioned")?
            .to_string();
        let client = aws_sdk_secretsmanager::Client::new(&self.stack.sdk_config());
        let out = client.get_secret_value().secret_id(arn).send().await?;
        Ok(out.secret_string().unwrap_or_default().to_string())
    }

    /// Signs up an account with its owner and signs in; returns a client carrying the session.
    pub async fn sign_up(&self, account: &str, email: &str, password: &str, bootstrap: Option<&str>) -> Result<Api> {
        let token = match bootstrap {
            Some(t) => t.to_string(),
            None => self.bootstrap_token().await?,
        };
        let (status, body) = self
            .api
            .post(
                "/v1/signup",
                json!({"bootstrap_token": token, "account_name": account, "email": email, "password": password}),
            )
            .await?;
        if status != 201 {
            bail!("sign-up answered {status}: {body}");
        }
        self.sign_in(email, password, None).await
    }

    pub async fn sign_in(&self, email: &str, password: &str, totp: Option<&str>) -> Result<Api> {
        let (status, body) = self
            .api
            .post(
                "/v1/sessions",
                json!({"email": email, "password": password, "totp_code": totp}),
            )
            .await?;
        if status != 201 {
            bail!("sign-in answered {status}: {body}");
        }
        let token = body["token"].as_str().context("token")?.to_string();
        Ok(self.api.with_token(token))
    }

    /// The body of a connection to the fake tenant.
    pub fn connection_body(&self, secret: &str) -> Value {
        json!({
            "tenant_id": self.fake.tenant_id(),
            "client_id": self.fake.client_id(),
            "client_secret": secret,
            "login_url": self.fake.url(),
            "graph_url": self.fake.url(),
            "display_name": "Contoso (fake)",
        })
    }

    /// Waits until every queue is drained and no handler runs.
    pub async fn settle(&self) -> Result<()> {
        self.running
            .as_ref()
            .context("running")?
            .wait_idle(Duration::from_secs(600))
            .await
    }

    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.stop().await;
        }
        self.fake.stop().await;
    }
}

/// A client of the HTTP API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::new(),
            token: None,
        }
    }

    pub fn with_token(&self, token: String) -> Self {
        Self {
            token: Some(token),
            ..self.clone()
        }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    pub async fn get(&self, path: &str) -> Result<(u16, Value)> {
        self.send(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Result<(u16, Value)> {
        self.send(reqwest::Method::PATCH, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> Result<(u16, Value)> {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Every entity, following the cursor.
    pub async fn all_entities(&self, query: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/entities?limit=500{query}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, body) = self.get(&path).await?;
            if status != 200 {
                bail!("list entities answered {status}: {body}");
            }
            out.extend(body["items"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return Ok(out),
            }
        }
    }

    /// Polls a connection's discovery until it has finished.
    pub async fn wait_discovery(&self, connection_id: &str, timeout: Duration) -> Result<Value> {
        self.wait_discovery_after(connection_id, "", timeout).await
    }

    /// Polls until the discovery of `request_id` (any, when empty) has finished.
    pub async fn wait_discovery_after(
        &self,
        connection_id: &str,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let (status, body) = self.get(&format!("/v1/connections/{connection_id}/discovery")).await?;
            if status != 200 {
                bail!("discovery status answered {status}: {body}");
            }
            let ours = request_id.is_empty() || body["request_id"] == request_id;
            match body["state"].as_str() {
                Some("succeeded") | Some("failed") if ours => return Ok(body),
                _ if tokio::time::Instant::now() > deadline => bail!("discovery did not finish in time: {body}"),
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// The TOTP code of a base32 secret `offset_secs` from now (what an authenticator app shows).
pub fn totp_code(secret_base32: &str, email: &str, offset_secs: u64) -> Result<String> {
    let bytes = totp_rs::Secret::Encoded(secret_base32.to_string())
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let totp = totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        bytes,
        Some("Strata".into()),
        email.to_string(),
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(totp.generate(now + offset_secs))
}

/// What discovery must find in a tenant.
#[derive(Debug, Default)]
pub struct Expected {
    pub mailboxes: usize,
    pub onedrives: usize,
    pub sites: usize,
    pub shared_mailboxes: usize,
    /// Ids of users without a mailbox (guests, unlicensed).
    pub without_mailbox: Vec<String>,
    /// Ids of users without a OneDrive.
    pub without_onedrive: Vec<String>,
}

impl Expected {
    pub fn kinds(&self) -> BTreeMap<String, usize> {
        [
            ("mailbox", self.mailboxes),
            ("onedrive", self.onedrives),
            ("site", self.sites),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_string(), n))
        .collect()
    }
}

/// The entities a correct discovery finds in `tenant`, from the fake's ground truth.
pub fn expected_entities(tenant: &Tenant) -> Expected {
    let mut e = Expected {
        sites: tenant.sites.len(),
        ..Default::default()
    };
    for u in &tenant.users {
        if u.kind.has_mailbox() {
            e.mailboxes += 1;
        } else {
            e.without_mailbox.push(u.id.clone());
        }
        if u.kind.has_onedrive() {
            e.onedrives += 1;
        } else {
            e.without_onedrive.push(u.id.clone());
        }
        if u.kind == fake_m365::UserKind::SharedMailbox {
            e.shared_mailboxes += 1;
        }
    }
    e
}

pub fn sizes(users: usize, sites: usize) -> fake_m365::Sizes {
    fake_m365::Sizes { users, sites }
}

/// The fake at the real limits, with the throttling windows scaled down
/// (a minute of SharePoint resource units lasts 3 s) and one Outlook request
/// in 50 answered 429 with `Retry-After: 1`.
pub fn throttling_options() -> Options {
    Options {
        time_scale: 0.05,
        throttle: true,
        seed: 11,
        faults: fake_m365::Faults {
            rules: vec![fake_m365::FaultRule::status(
                "/mailboxSettings",
                429,
                Some(1),
                0.02,
                Some(40),
            )],
        },
        ..Options::default()
    }
}

/// A licensed user that was not in the tenant.
pub fn new_licensed_user(name: &str) -> fake_m365::User {
    let id = format!("00000000-0000-4000-8000-{:012}", name.len());
    fake_m365::User::new(
        id,
        format!("{name}@contoso.onmicrosoft.com"),
        name,
        fake_m365::UserKind::Licensed,
    )
}

/// What [`World::onboard`] set up.
pub struct Onboarded {
    /// The owner's session.
    pub admin: Api,
    pub account_id: String,
    pub connection_id: String,
    /// The first discovery's status, finished.
    pub discovery: Value,
}

impl World {
    /// An admin's first steps: sign up with the bootstrap token, connect the
    /// fake tenant, wait until its discovery has finished and the queues are idle.
    pub async fn onboard(&self) -> Result<Onboarded> {
        let admin = self
            .sign_up("Contoso", "owner@contoso.test", "correct horse battery staple", None)
            .await?;
        let (_, me) = admin.get("/v1/me").await?;
        let (status, conn) = admin
            .post("/v1/connections", self.connection_body(&self.fake.client_secret()))
            .await?;
        if status != 201 {
            bail!("connection refused ({status}): {conn}");
        }
        let connection_id = conn["id"].as_str().context("connection id")?.to_string();
        let discovery = admin.wait_discovery(&connection_id, Duration::from_secs(120)).await?;
        self.settle().await?;
        let account_id = me["account_id"].as_str().context("account id")?.to_string();
        Ok(Onboarded {
            admin,
            account_id,
            connection_id,
            discovery,
        })
    }
}

impl Api {
    /// The id of the entity of `kind` whose address is `address`.
    /// Every backup run record of an entity, oldest first.
    pub async fn backup_runs(&self, entity: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/v1/activity?kind=backup&entity_id={entity}&limit=500"))
            .await
            .expect("activity");
        assert_eq!(status, 200, "{body}");
        let mut items: Vec<Value> = body["items"].as_array().cloned().unwrap_or_default();
        items.reverse();
        items.into_iter().map(|a| a["details"]["run"].clone()).collect()
    }

    pub async fn entity_id(&self, kind: &str, address: &str) -> Result<String> {
        let entities = self.all_entities(&format!("&kind={kind}")).await?;
        let entity = entities
            .iter()
            .find(|e| e["address"] == address)
            .with_context(|| format!("no {kind} {address}"))?;
        Ok(entity["id"].as_str().context("entity id")?.to_string())
    }
}

/// A message with a base64 attachment, as a mail client sends it.
pub fn mail_with_attachment(i: usize, attachment: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(attachment);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap_or_default())
        .collect();
    format!(
        "From: Finance <finance@contoso.test>\r\nTo: Adele <adele.vance@contoso.onmicrosoft.com>\r\nSubject: Report {i}\r\nDate: Thu, 5 Nov 2026 10:{:02}:00 +0000\r\nMessage-ID: <r{i}@contoso.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nReport {i} attached.\r\n--b\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b--\r\n",
        i % 60,
        lines.join("\r\n")
    )
    .into_bytes()
}

/// A plain message of about `size` bytes.
pub fn plain_mail(i: usize, size: usize) -> Vec<u8> {
    let mut body = format!(
        "From: Megan <megan@contoso.test>\r\nTo: Adele <adele.vance@contoso.onmicrosoft.com>\r\nSubject: Note {i}\r\nDate: Thu, 5 Nov 2026 11:{:02}:00 +0000\r\nMessage-ID: <n{i}@contoso.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
        i % 60
    );
    let mut line = 0usize;
    while body.len() < size {
        line += 1;
        body.push_str(&format!(
            "Note {i}, line {line}: the quarterly figures are attached below.\r\n"
        ));
    }
    body.into_bytes()
}

impl World {
    /// The account's repository, read as an operator would (same bucket, same key).
    pub async fn repo(&self, account: &str) -> strata::repo::Repo {
        let sdk = self.stack.sdk_config();
        let store = std::sync::Arc::new(strata::repo::S3Store::new(
            strata_local::provision::s3_client(&sdk),
            self.stack.physical_id("DataBucket").expect("bucket"),
        ));
        let keys = strata::repo::KmsKeys::new(
            aws_sdk_kms::Client::new(&sdk),
            self.stack.physical_id("DataKey").expect("key"),
        );
        strata::repo::Repo::open(store, &keys, account).await.expect("repo")
    }

    /// "Back up now" for one entity; waits until the stack is idle and returns the last run record.
    pub async fn back_up(&self, admin: &Api, entity: &str) -> Value {
        let (status, body) = admin
            .post(&format!("/v1/entities/{entity}/backup"), json!({}))
            .await
            .expect("backup");
        assert_eq!(status, 202, "{body}");
        self.settle().await.expect("settle");
        let (_, activity) = admin.get("/v1/activity?limit=1").await.expect("activity");
        let last = activity["items"][0].clone();
        assert_eq!(last["kind"], "backup", "{activity}");
        last["details"]["run"].clone()
    }

    /// Requests for message content (`$value`) in the fake's log.
    pub fn content_fetches(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/$value"))
            .count()
    }
}

/// A request already on the wire when a 429 was answered may still arrive just after it.
pub const IN_FLIGHT_GRACE: Duration = Duration::from_millis(50);

/// Requests sent into a throttled scope after a 429 (and the in-flight
/// grace) but before its `Retry-After` had passed.
pub fn retry_after_violations(log: &[fake_m365::LoggedRequest]) -> Vec<String> {
    use strata::source::graph::Scope;
    let mut violations = Vec::new();
    for t in log.iter().filter(|r| r.status == 429) {
        let retry_after = Duration::from_secs(u64::from(t.retry_after_secs.unwrap_or(0)));
        let scope = Scope::of_path(&t.path);
        let open_at = t.finished_at + chrono::Duration::from_std(retry_after).unwrap_or_default();
        let grace_end = t.finished_at + chrono::Duration::from_std(IN_FLIGHT_GRACE).unwrap_or_default();
        for r in log
            .iter()
            .filter(|r| Scope::of_path(&r.path) == scope && !r.path.ends_with("/token"))
        {
            if r.at > grace_end && r.at < open_at {
                violations.push(format!(
                    "{} {} at {} before {} (429 at {})",
                    r.method, r.path, r.at, open_at, t.finished_at
                ));
            }
        }
    }
    violations
}

/// The most requests of one mailbox in flight at once, from the fake's log.
pub fn max_mailbox_concurrency(log: &[fake_m365::LoggedRequest]) -> usize {
    let mut events: BTreeMap<String, Vec<(chrono::DateTime<chrono::Utc>, i32)>> = BTreeMap::new();
    for r in log {
        if let Some(scope) = r.throttle_scope.as_deref().filter(|s| s.starts_with("mailbox:")) {
            let e = events.entry(scope.to_string()).or_default();
            e.push((r.at, 1));
            e.push((r.finished_at, -1));
        }
    }
    let mut most = 0;
    for (_, mut e) in events {
        // Ends before starts at the same instant.
        e.sort();
        let mut now = 0;
        for (_, d) in e {
            now += d;
            most = most.max(now);
        }
    }
    usize::try_from(most).unwrap_or(0)
}

impl World {
    /// [`World::onboard`], then every discovered entity activated.
    pub async fn onboard_active(&self) -> Result<Onboarded> {
        let onboarded = self.onboard().await?;
        let (status, body) = onboarded.admin.post("/v1/entities/activate-all", json!({})).await?;
        if status != 200 {
            bail!("activate-all answered {status}: {body}");
        }
        Ok(onboarded)
    }

    /// How the entity's latest catalog differs from the fake's mailbox: every
    /// message once, in its folder, with the SHA-256 of its MIME; nothing else.
    pub async fn catalog_mismatches(&self, account: &str, entity: &str, user: &str) -> Vec<String> {
        use sha2::Digest;
        let mailbox = self.fake.mailbox(user).expect("mailbox");
        let path_of = |id: &str| {
            let mut parts = Vec::new();
            let mut at = mailbox.folders.iter().find(|f| f.id == id);
            while let Some(f) = at {
                parts.push(f.display_name.clone());
                at = f
                    .parent_id
                    .as_ref()
                    .and_then(|p| mailbox.folders.iter().find(|x| &x.id == p));
            }
            parts.reverse();
            parts.join("/")
        };
        let view = self.repo(account).await.view(entity, None).await.expect("view");
        let mut out = Vec::new();
        for m in &mailbox.items {
            match view.get(&m.id) {
                None => out.push(format!("{} missing", m.id)),
                Some(e) => {
                    if e.sha256 != hex::encode(sha2::Sha256::digest(&m.mime)) {
                        out.push(format!("{}: content differs", m.id));
                    }
                    if e.meta["folder"] != json!(path_of(&m.folder_id)) {
                        out.push(format!(
                            "{}: folder {} not {}",
                            m.id,
                            e.meta["folder"],
                            path_of(&m.folder_id)
                        ));
                    }
                }
            }
        }
        for id in view.keys() {
            if !mailbox.items.iter().any(|m| &m.id == id) {
                out.push(format!("{id} is in the catalog but not in the mailbox"));
            }
        }
        out
    }
}

impl World {
    /// Waits until a restore or export job is `done` or `failed` (the queues
    /// drained between looks) and returns it.
    pub async fn wait_job(&self, admin: &Api, id: &str) -> Result<Value> {
        for _ in 0..3000 {
            self.settle().await?;
            let (status, job) = admin.get(&format!("/v1/jobs/{id}")).await?;
            if status != 200 {
                bail!("job {id}: {status} {job}");
            }
            if job["status"] == "done" || job["status"] == "failed" {
                return Ok(job);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("job {id} did not finish")
    }
}

impl Api {
    /// Any method, for tables of routes.
    pub async fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<(u16, Value)> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        self.send(method, path, body).await
    }
}

/// One e-mail the emulator's SES accepted.
#[derive(Debug, Clone)]
pub struct SentMail {
    pub to: Vec<String>,
    pub subject: String,
    /// The plain-text part (empty when only HTML was kept).
    pub text: String,
    /// The HTML part (empty when only text was kept).
    pub html: String,
}

impl World {
    /// The S3 client of the stack (path-style, on the emulator).
    pub async fn s3(&self) -> aws_sdk_s3::Client {
        strata_local::provision::s3_client(&self.stack.sdk_config())
    }
}

impl World {
    /// Every e-mail sent so far, read back from the emulator (`/moto-api/data.json`).
    /// A simple message keeps one body (moto keeps the HTML when there is
    /// one); a raw MIME message is parsed into both parts.
    pub async fn sent_mail(&self) -> Result<Vec<SentMail>> {
        let url = format!("{}/moto-api/data.json", self.stack.endpoint().trim_end_matches('/'));
        let data: Value = reqwest::get(&url).await?.error_for_status()?.json().await?;
        let mut out = Vec::new();
        for m in data["ses"]["Message"].as_array().into_iter().flatten() {
            let body = m["body"].as_str().unwrap_or_default().to_string();
            let is_html = body.trim_start().starts_with('<');
            out.push(SentMail {
                to: strings(&m["destinations"]["ToAddresses"]),
                subject: m["subject"].as_str().unwrap_or_default().to_string(),
                text: if is_html { String::new() } else { body.clone() },
                html: if is_html { body } else { String::new() },
            });
        }
        for m in data["ses"]["RawMessage"].as_array().into_iter().flatten() {
            let raw = m["raw_data"].as_str().unwrap_or_default();
            let Some(parsed) = mail_parser::MessageParser::default().parse(raw.as_bytes()) else {
                bail!("the emulator holds an unparsable message: {raw:.200}");
            };
            let mut to = strings(&m["destinations"]);
            if to.is_empty() {
                to = parsed
                    .to()
                    .map(|a| a.iter().filter_map(|a| a.address().map(str::to_string)).collect())
                    .unwrap_or_default();
            }
            out.push(SentMail {
                to,
                subject: parsed.subject().unwrap_or_default().to_string(),
                text: parsed.body_text(0).map(|t| t.into_owned()).unwrap_or_default(),
                html: parsed.body_html(0).map(|t| t.into_owned()).unwrap_or_default(),
            });
        }
        Ok(out)
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

impl World {
    /// Fires a schedule as Scheduler would for the firing due at `scheduled`
    /// (its `<aws.scheduler.scheduled-time>` is that time).
    pub async fn fire_at(&self, schedule: &str, scheduled: chrono::DateTime<chrono::Utc>) -> Result<()> {
        strata_local::schedule::find(self.stack.template(), self.stack.state(), schedule)?
            .fire_at(&self.stack.sdk_config(), scheduled)
            .await
    }
}

impl World {
    /// The stack's control-plane store, as an operator reaches it.
    pub fn state_store(&self) -> strata::state::State {
        let ddb = aws_sdk_dynamodb::Client::new(&self.stack.sdk_config());
        let table = self.stack.physical_id("StateTable").unwrap_or_default().to_string();
        strata::state::State::new(std::sync::Arc::new(strata::state::DynamoItems::new(ddb, &table)))
    }

    /// Another admin of the account, with `role` and the role's permissions:
    /// invited straight in the store (no e-mail to read back), accepted
    /// through the API, signed in.
    pub async fn admin_with_role(&self, account: &str, email: &str, role: strata::model::Role) -> Result<Api> {
        use sha2::Digest;
        let token = uuid::Uuid::new_v4().simple().to_string();
        let now = chrono::Utc::now();
        let admin = strata::model::Admin {
            id: strata::model::AdminId::random(),
            account_id: strata::model::AccountId(account.to_string()),
            email: email.to_string(),
            display_name: email.to_string(),
            role,
            permissions: role.allowed().to_vec(),
            status: strata::model::AdminStatus::Invited,
            totp_enabled: false,
            created_at: now,
            invited_by: None,
            last_sign_in_at: None,
        };
        let secrets = strata::model::AdminSecrets {
            invite_token_sha256: Some(hex::encode(sha2::Sha256::digest(token.as_bytes()))),
            invite_expires_at: Some(now + chrono::Duration::days(1)),
            ..Default::default()
        };
        self.state_store().create_admin(&admin, &secrets).await?;
        let password = "another correct horse battery";
        let (status, body) = self
            .api
            .post(
                "/v1/invitations/accept",
                json!({"email": email, "token": token, "password": password}),
            )
            .await?;
        if status != 200 {
            bail!("accepting the invitation answered {status}: {body}");
        }
        self.sign_in(email, password, None).await
    }
}

impl World {
    /// Starts a restore or export (`POST path` answering 202) and waits for the job to end.
    pub async fn run_job(&self, admin: &Api, path: &str, body: Value) -> Value {
        let (status, job) = admin.post(path, body).await.expect("job request");
        assert_eq!(status, 202, "{path}: {job}");
        self.wait_job(admin, job["id"].as_str().expect("job id"))
            .await
            .expect("job")
    }
}
