//! The fake over HTTP: the shapes and limits of `saas-apis.md` §A.

use fake_m365::{FakeM365, FaultKind, FaultRule, Faults, Options, Sizes, Tenant, UserKind};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

async fn token(fake: &FakeM365, secret: &str, scope: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/{}/oauth2/v2.0/token", fake.url(), fake.tenant_id()))
        .form(&[
            ("client_id", fake.client_id().as_str()),
            ("client_secret", secret),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token request");
    (resp.status().as_u16(), resp.json().await.expect("json"))
}

async fn bearer(fake: &FakeM365) -> String {
    let (status, body) = token(fake, &fake.client_secret(), "https://graph.microsoft.com/.default").await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("token").to_string()
}

async fn get(fake: &FakeM365, token: &str, path: &str) -> (u16, Option<String>, Value) {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{}{path}", fake.url())
    };
    let resp = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    let retry = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (resp.status().as_u16(), retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn token_endpoint_answers_like_entra_id() {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let (status, body) = token(&fake, "wrong", "https://graph.microsoft.com/.default").await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    assert!(
        body["error_description"]
            .as_str()
            .expect("description")
            .starts_with("AADSTS7000215")
    );
    for field in ["error_codes", "timestamp", "trace_id", "correlation_id"] {
        assert!(!body[field].is_null(), "{field} in {body}");
    }
    let (status, body) = token(&fake, &fake.client_secret(), "https://graph.microsoft.com").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "a scope without /.default"
    );
    let (status, body) = token(&fake, &fake.client_secret(), "https://graph.microsoft.com/.default").await;
    assert_eq!(
        (status, body["token_type"].as_str(), body["expires_in"].as_u64()),
        (200, Some("Bearer"), Some(3599))
    );
    let (status, _, body) = get(&fake, "not-a-token", "/v1.0/users").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("InvalidAuthenticationToken"))
    );
    assert!(
        !fake
            .requests()
            .iter()
            .any(|r| format!("{r:?}").contains(&fake.client_secret())),
        "no secret in the log"
    );
}

#[tokio::test]
async fn tokens_expire() {
    let options = Options {
        token_lifetime: Duration::from_millis(300),
        ..Options::default()
    };
    let fake = FakeM365::start(Tenant::small_demo(), options).await.expect("fake");
    let t = bearer(&fake).await;
    assert_eq!(get(&fake, &t, "/v1.0/users").await.0, 200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (status, _, body) = get(&fake, &t, "/v1.0/users").await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (401, Some("Access token has expired or is not yet valid."))
    );
}

#[tokio::test]
async fn users_page_with_opaque_links_and_select() {
    let fake = FakeM365::start(
        Tenant::generate(5, Sizes { users: 2_500, sites: 3 }),
        Options::default(),
    )
    .await
    .expect("fake");
    let t = bearer(&fake).await;
    let (status, _, body) = get(&fake, &t, "/v1.0/users?$top=1000").await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."
    );
    assert_eq!(get(&fake, &t, "/v1.0/users?$top=0").await.0, 400);
    let (_, _, first) = get(&fake, &t, "/v1.0/users").await;
    assert_eq!(first["value"].as_array().map(Vec::len), Some(100), "default page size");
    let mut next = Some(format!("{}/v1.0/users?$select=id,displayName&$top=999", fake.url()));
    let mut ids = std::collections::HashSet::new();
    let mut pages = 0;
    while let Some(link) = next {
        let (status, _, page) = get(&fake, &t, &link).await;
        assert_eq!(status, 200);
        pages += 1;
        for u in page["value"].as_array().expect("value") {
            assert!(u.get("userPrincipalName").is_none(), "$select trims: {u}");
            assert!(ids.insert(u["id"].as_str().expect("id").to_string()), "each user once");
        }
        next = page["@odata.nextLink"].as_str().map(str::to_string);
        if let Some(n) = &next {
            assert!(!n.contains("offset") && n.contains("$skiptoken="), "opaque link {n}");
        }
    }
    assert_eq!((ids.len(), pages), (2_500, 3));
}

#[tokio::test]
async fn mailboxes_and_drives_follow_the_kind_of_user() {
    let tenant = Tenant::small_demo();
    let fake = FakeM365::start(tenant.clone(), Options::default()).await.expect("fake");
    let t = bearer(&fake).await;
    for u in &tenant.users {
        let (status, _, body) = get(&fake, &t, &format!("/v1.0/users/{}/mailboxSettings", u.id)).await;
        if u.kind.has_mailbox() {
            assert_eq!(status, 200, "{:?}", u.kind);
        } else {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (404, Some("MailboxNotEnabledForRESTAPI")),
                "{:?}",
                u.kind
            );
        }
        let (status, _, body) = get(&fake, &t, &format!("/v1.0/users/{}/drive", u.id)).await;
        assert_eq!(
            status,
            if u.kind.has_onedrive() { 200 } else { 404 },
            "{:?} {body}",
            u.kind
        );
    }
    let (status, _, user) = get(
        &fake,
        &t,
        &format!("/v1.0/users/{}", tenant.users[0].user_principal_name),
    )
    .await;
    assert_eq!(
        (status, user["id"].as_str()),
        (200, Some(tenant.users[0].id.as_str())),
        "a UPN works as the id"
    );
    let (_, _, sites) = get(&fake, &t, "/v1.0/sites/getAllSites?$top=2").await;
    assert_eq!(sites["value"].as_array().map(Vec::len), Some(2));
    assert!(sites["@odata.nextLink"].is_string());
    let kinds: std::collections::HashSet<UserKind> = tenant.users.iter().map(|u| u.kind).collect();
    assert_eq!(
        kinds.len(),
        UserKind::ALL.len(),
        "the demo tenant has every kind of user"
    );
}

#[tokio::test]
async fn sharepoint_resource_units_run_out_and_retry_after_holds() {
    let options = Options {
        time_scale: 0.05,
        ..Options::default()
    };
    let fake = FakeM365::start(Tenant::small_demo(), options).await.expect("fake");
    let t = bearer(&fake).await;
    let user = fake.tenant().users[0].id.clone();
    // 1,200 RU per (scaled) minute for a tenant under 1,000 licences; a drive GET costs 1.
    let mut first_429 = None;
    for i in 0..1_300 {
        let (status, retry, _) = get(&fake, &t, &format!("/v1.0/users/{user}/drive")).await;
        if status == 429 {
            first_429 = Some((i, retry));
            break;
        }
    }
    let (at, retry) = first_429.expect("throttled");
    assert_eq!(at, 1_200, "the budget is the real one");
    assert!(
        retry.and_then(|r| r.parse::<u32>().ok()).is_some_and(|r| r >= 1),
        "Retry-After in seconds"
    );
    let (status, _, body) = get(&fake, &t, &format!("/v1.0/users/{user}/drive")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("TooManyRequests")),
        "still throttled before Retry-After"
    );
    assert_eq!(
        get(&fake, &t, "/v1.0/users").await.0,
        200,
        "the directory is another scope"
    );
    let log = fake.requests();
    assert!(
        log.iter().any(|r| r.status == 429
            && r.throttle_scope.as_deref() == Some("sharepoint")
            && r.retry_after_secs.is_some())
    );
}

#[tokio::test]
async fn faults_are_injected_by_rule_and_control_endpoint() {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let t = bearer(&fake).await;
    fake.set_faults(Faults {
        rules: vec![FaultRule {
            path_contains: Some("/users".into()),
            kind: FaultKind::Status {
                status: 503,
                retry_after_secs: None,
            },
            probability: 1.0,
            remaining: Some(1),
        }],
    });
    assert_eq!(get(&fake, &t, "/v1.0/users").await.0, 503);
    assert_eq!(get(&fake, &t, "/v1.0/users").await.0, 200, "remaining counts down");
    let rules = serde_json::json!({"rules": [{"path_contains": "/users", "kind": {"type": "truncate"}, "probability": 1.0, "remaining": 1}]});
    let resp = reqwest::Client::new()
        .post(format!("{}/_fake/faults", fake.url()))
        .json(&rules)
        .send()
        .await
        .expect("control");
    assert_eq!(resp.status(), 200);
    let truncated = reqwest::Client::new()
        .get(format!("{}/v1.0/users", fake.url()))
        .bearer_auth(&t)
        .send()
        .await
        .expect("headers arrive");
    assert!(
        truncated.bytes().await.is_err(),
        "a truncated body is an error, not a short success"
    );
    let log: Value = reqwest::get(format!("{}/_fake/requests", fake.url()))
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    let statuses: Vec<u64> = log
        .as_array()
        .expect("log")
        .iter()
        .filter(|r| r["path"] == "/v1.0/users")
        .filter_map(|r| r["status"].as_u64())
        .collect();
    assert_eq!(statuses, [503, 200, 200]);
}

#[tokio::test]
async fn tenants_come_from_a_seed_or_a_directory() {
    let a = Tenant::generate(9, Sizes { users: 50, sites: 4 });
    let b = Tenant::generate(9, Sizes { users: 50, sites: 4 });
    assert_eq!(a.users, b.users, "deterministic from the seed");
    assert_eq!(a.client_secret, b.client_secret);
    assert_ne!(a.users, Tenant::generate(10, Sizes { users: 50, sites: 4 }).users);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tenant");
    let t = Tenant::from_dir(&dir).expect("from dir");
    assert_eq!(t.users.len(), 2);
    let adele = &t.users[0];
    assert_eq!(adele.user_principal_name, "adele.vance@contoso.test");
    let folders: Vec<&str> = adele.messages.iter().map(|m| m.folder.as_str()).collect();
    assert_eq!(folders, ["Inbox", "Inbox/Projects"]);
    assert!(adele.messages[0].mime.starts_with(b"From: Alex"));
    assert_eq!(
        t.users[1].messages[0].folder, "Inbox",
        "top-level .eml files land in the Inbox"
    );
}
