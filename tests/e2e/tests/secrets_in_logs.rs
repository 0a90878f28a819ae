//! No secret appears in any log line or API response: the whole flow runs with
//! every log line captured, then the capture is searched for each secret.

use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_e2e::{World, WorldOptions, totp_code};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("capture").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_in_any_log_line_or_response() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("debug,hyper=info,h2=info,rustls=info,aws_smithy_runtime=info,aws_config=info")
        .with_writer(move || writer.clone())
        .init();

    let password = "correct horse battery staple";
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let bootstrap = world.bootstrap_token().await.expect("bootstrap");
    let admin = world
        .sign_up("Contoso", "owner@contoso.test", password, Some(&bootstrap))
        .await
        .expect("sign up");
    let (_, setup) = admin.post("/v1/me/totp", json!({})).await.expect("totp");
    let totp_secret = setup["secret_base32"].as_str().expect("secret").to_string();
    let code = totp_code(&totp_secret, "owner@contoso.test", 0).expect("code");
    admin
        .post("/v1/me/totp/confirm", json!({"code": code}))
        .await
        .expect("confirm");
    let next = totp_code(&totp_secret, "owner@contoso.test", 30).expect("code");
    let admin = world
        .sign_in("owner@contoso.test", password, Some(&next))
        .await
        .expect("sign in");
    let wrong = "wrong-secret-0123456789";
    admin
        .post("/v1/connections", world.connection_body(wrong))
        .await
        .expect("connect");
    let secret = world.fake.client_secret();
    let (_, conn) = admin
        .post("/v1/connections", world.connection_body(&secret))
        .await
        .expect("connect");
    let conn_id = conn["id"].as_str().expect("id").to_string();
    admin
        .wait_discovery(&conn_id, Duration::from_secs(120))
        .await
        .expect("discovery");
    world.settle().await.expect("settle");
    let (_, key) = admin
        .post("/v1/api-keys", json!({"name": "script", "role": "viewer"}))
        .await
        .expect("key");
    let api_key = key["secret"].as_str().expect("secret").to_string();
    let (status, _) = world
        .api
        .with_token(api_key.clone())
        .get("/v1/entities")
        .await
        .expect("key use");
    assert_eq!(status, 200);
    let mut responses = vec![conn.to_string()];
    for path in [
        "/v1/connections",
        &format!("/v1/connections/{conn_id}"),
        "/v1/me",
        "/v1/account",
        "/v1/activity",
        "/v1/entities",
        "/v1/api-keys",
        "/v1/audit?limit=500",
        "/v1/admins",
    ] {
        responses.push(admin.get(path).await.expect("get").1.to_string());
    }
    let session = admin.token().expect("token").to_string();
    world.stop().await;

    let logs = String::from_utf8_lossy(&capture.0.lock().expect("capture")).to_string();
    assert!(
        logs.lines().count() > 20,
        "the capture holds the run's log lines ({} lines)",
        logs.lines().count()
    );
    assert!(
        logs.contains("discovery message handled"),
        "the discovery handler's lines were captured"
    );
    let fake_tokens: Vec<String> = world_tokens(&logs);
    for (name, value) in [
        ("client secret", secret.as_str()),
        ("wrong client secret", wrong),
        ("password", password),
        ("session token", session.as_str()),
        ("TOTP seed", totp_secret.as_str()),
        ("bootstrap token", bootstrap.as_str()),
        ("API key", api_key.as_str()),
    ] {
        assert!(!logs.contains(value), "the {name} appears in the logs");
        for r in &responses {
            assert!(!r.contains(value), "the {name} appears in an API response: {r}");
        }
    }
    assert!(fake_tokens.is_empty(), "access tokens in the logs: {fake_tokens:?}");
}

/// Bearer tokens that leaked into log lines.
fn world_tokens(logs: &str) -> Vec<String> {
    logs.match_indices("Bearer ")
        .map(|(i, _)| logs[i..].chars().take(40).collect())
        .collect()
}
