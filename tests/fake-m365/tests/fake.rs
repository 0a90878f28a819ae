//! The fake over HTTP: the shapes and limits of `saas-apis.md` §A.

use fake_m365::{FakeM365, FaultKind, FaultRule, Faults, Options, Sizes, Tenant, User, UserKind};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

const GRAPH: &str = "https://graph.microsoft.com/.default";

fn http() -> reqwest::Client {
    reqwest::Client::new()
}

async fn token_with(fake: &FakeM365, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = http()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", fake.url()))
        .form(form)
        .send()
        .await
        .expect("token request");
    (resp.status().as_u16(), resp.json().await.expect("json"))
}

async fn token(fake: &FakeM365, secret: &str, scope: &str) -> (u16, Value) {
    let client = fake.client_id();
    let form = [
        ("client_id", client.as_str()),
        ("client_secret", secret),
        ("scope", scope),
        ("grant_type", "client_credentials"),
    ];
    token_with(fake, &fake.tenant_id(), &form).await
}

async fn bearer(fake: &FakeM365) -> String {
    let (status, body) = token(fake, &fake.client_secret(), GRAPH).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().expect("token").to_string()
}

struct Got {
    status: u16,
    headers: HeaderMap,
    body: Value,
}

impl Got {
    fn retry_after(&self) -> Option<u32> {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }
    fn code(&self) -> Option<&str> {
        self.body["error"]["code"].as_str()
    }
}

async fn get(fake: &FakeM365, token: &str, path: &str) -> Got {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{}{path}", fake.url())
    };
    let resp = http().get(url).bearer_auth(token).send().await.expect("get");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.json().await.unwrap_or(Value::Null);
    Got { status, headers, body }
}

fn rule(path: &str, kind: FaultKind, probability: f64, remaining: Option<u32>) -> Faults {
    Faults {
        rules: vec![FaultRule {
            path_contains: Some(path.into()),
            kind,
            probability,
            remaining,
        }],
    }
}

async fn demo() -> (FakeM365, String) {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let t = bearer(&fake).await;
    (fake, t)
}

fn user_of(fake: &FakeM365, kind: UserKind) -> User {
    fake.tenant()
        .users
        .into_iter()
        .find(|u| u.kind == kind)
        .expect("a user of that kind")
}

// ----- token endpoint -----

#[tokio::test]
async fn token_endpoint_answers_like_entra_id() {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let (status, body) = token(&fake, &fake.client_secret(), GRAPH).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert_eq!(body["ext_expires_in"], 3599);
    let access = body["access_token"].as_str().expect("token").to_string();
    assert!(access.len() > 40 && access.split('.').count() == 3, "{access}");

    let check = |status: u16, body: &Value, want_status: u16, error: &str, code: u64| {
        assert_eq!((status, body["error"].as_str()), (want_status, Some(error)), "{body}");
        let description = body["error_description"].as_str().expect("description");
        assert!(description.starts_with(&format!("AADSTS{code}: ")), "{description}");
        assert!(description.contains("Trace ID: ") && description.contains("Correlation ID: "));
        assert_eq!(body["error_codes"], json!([code]));
        for field in ["timestamp", "trace_id", "correlation_id"] {
            assert!(body[field].is_string(), "{field} in {body}");
        }
    };
    let (status, body) = token(&fake, "wrong", GRAPH).await;
    check(status, &body, 401, "invalid_client", 7_000_215);
    assert!(
        body["error_description"]
            .as_str()
            .expect("description")
            .starts_with("AADSTS7000215: Invalid client secret provided.")
    );
    let (status, body) = token(&fake, &fake.client_secret(), "https://graph.microsoft.com").await;
    check(status, &body, 400, "invalid_scope", 1_002_012);
    let form = [
        ("client_id", "11111111-1111-1111-1111-111111111111"),
        ("client_secret", "x"),
        ("scope", GRAPH),
        ("grant_type", "client_credentials"),
    ];
    let (status, body) = token_with(&fake, &fake.tenant_id(), &form).await;
    check(status, &body, 400, "unauthorized_client", 700_016);
    let (status, body) = token_with(&fake, "22222222-2222-2222-2222-222222222222", &form).await;
    check(status, &body, 400, "invalid_request", 90_002);
    let client = fake.client_id();
    let (status, body) = token_with(&fake, &fake.tenant_id(), &[("client_id", &client), ("scope", GRAPH)]).await;
    check(status, &body, 400, "invalid_request", 900_144);
    let secret = fake.client_secret();
    let by_domain = [
        ("client_id", client.as_str()),
        ("client_secret", secret.as_str()),
        ("scope", GRAPH),
        ("grant_type", "client_credentials"),
    ];
    let (status, _) = token_with(&fake, "contoso.onmicrosoft.com", &by_domain).await;
    assert_eq!(status, 200, "the tenant's domain works as its id");

    let log = fake.requests();
    assert_eq!(log.len(), 7, "token requests are logged");
    assert!(log.iter().all(|r| r.path.ends_with("/oauth2/v2.0/token")));
    let text = serde_json::to_string(&log).expect("json");
    assert!(!text.contains(&fake.client_secret()), "no secret in the log");
    assert!(!text.contains(&access), "no token in the log");
}

#[tokio::test]
async fn graph_needs_a_valid_unexpired_token() {
    let options = Options {
        token_lifetime: Duration::from_millis(300),
        ..Options::default()
    };
    let fake = FakeM365::start(Tenant::small_demo(), options).await.expect("fake");
    let (_, body) = token(&fake, &fake.client_secret(), GRAPH).await;
    assert_eq!(body["expires_in"], 1, "the lifetime, rounded up");
    let t = body["access_token"].as_str().expect("token").to_string();
    assert_eq!(get(&fake, &t, "/v1.0/users").await.status, 200);
    let missing = http()
        .get(format!("{}/v1.0/users", fake.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 401);
    let body: Value = missing.json().await.expect("json");
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    let inner = &body["error"]["innerError"];
    for field in ["date", "request-id", "client-request-id"] {
        assert!(inner[field].is_string(), "innerError.{field}: {body}");
    }
    let unknown = get(&fake, "not-a-token", "/v1.0/users").await;
    assert_eq!(
        (unknown.status, unknown.code()),
        (401, Some("InvalidAuthenticationToken"))
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let expired = get(&fake, &t, "/v1.0/users").await;
    assert_eq!(
        (expired.status, expired.body["error"]["message"].as_str()),
        (401, Some("Access token has expired or is not yet valid."))
    );
    let fresh = bearer(&fake).await;
    assert_eq!(get(&fake, &fresh, "/v1.0/users").await.status, 200);
    fake.expire_tokens();
    assert_eq!(get(&fake, &fresh, "/v1.0/users").await.status, 401);
}

// ----- users -----

#[tokio::test]
async fn users_page_with_opaque_links_top_and_select() {
    let fake = FakeM365::start(
        Tenant::generate(5, Sizes { users: 2_500, sites: 3 }),
        Options::default(),
    )
    .await
    .expect("fake");
    let t = bearer(&fake).await;
    let too_big = get(&fake, &t, "/v1.0/users?$top=1000").await;
    assert_eq!(too_big.status, 400);
    assert_eq!(
        too_big.body["error"]["message"],
        "Invalid page size specified: '1000'. Must be between 1 and 999 inclusive."
    );
    for bad in ["0", "-1", "abc"] {
        assert_eq!(
            get(&fake, &t, &format!("/v1.0/users?$top={bad}")).await.status,
            400,
            "{bad}"
        );
    }
    assert_eq!(
        get(&fake, &t, "/v1.0/users?$top=1").await.body["value"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let first = get(&fake, &t, "/v1.0/users").await;
    assert_eq!(
        first.body["value"].as_array().map(Vec::len),
        Some(100),
        "default page size"
    );
    let u = &first.body["value"][0];
    assert!(u["userPrincipalName"].is_string() && u["displayName"].is_string());
    assert!(
        u.get("accountEnabled").is_none() && u.get("assignedPlans").is_none(),
        "not in the default properties: {u}"
    );
    assert!(
        first.body["@odata.context"]
            .as_str()
            .is_some_and(|c| c.ends_with("/v1.0/$metadata#users"))
    );

    let mut next = Some(format!(
        "{}/v1.0/users?$select=id,userPrincipalName,mail,displayName,accountEnabled,userType,assignedPlans&$top=999",
        fake.url()
    ));
    let mut ids = HashSet::new();
    let mut pages = Vec::new();
    while let Some(link) = next {
        let page = get(&fake, &t, &link).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for u in page.body["value"].as_array().expect("value") {
            assert!(ids.insert(u["id"].as_str().expect("id").to_string()), "each user once");
            assert!(u["accountEnabled"].is_boolean() && u["assignedPlans"].is_array() && u["userType"].is_string());
        }
        next = page.body["@odata.nextLink"].as_str().map(str::to_string);
        if let Some(n) = &next {
            assert!(n.starts_with(&format!("{}/v1.0/users?", fake.url())), "absolute: {n}");
            let token = n.split("$skiptoken=").nth(1).expect("skiptoken");
            assert!(token.len() >= 20 && token.parse::<u64>().is_err(), "opaque: {n}");
        }
        pages.push(link);
    }
    assert_eq!((ids.len(), pages.len()), (2_500, 3));
    let replay = get(&fake, &t, &pages[1]).await;
    assert_eq!(
        replay.body["value"][0]["id"],
        get(&fake, &t, &pages[1]).await.body["value"][0]["id"],
        "a next link can be fetched again"
    );

    let trimmed = get(&fake, &t, "/v1.0/users?$select=displayName&$top=5").await;
    for u in trimmed.body["value"].as_array().expect("value") {
        let keys: HashSet<&str> = u.as_object().expect("object").keys().map(String::as_str).collect();
        assert_eq!(keys, HashSet::from(["id", "displayName"]), "only the selected, and id");
    }
    assert!(
        trimmed.body["@odata.context"]
            .as_str()
            .is_some_and(|c| c.ends_with("#users(displayName)"))
    );
    let second = get(&fake, &t, trimmed.body["@odata.nextLink"].as_str().expect("next")).await;
    assert_eq!(
        second.body["value"][0].as_object().map(|o| o.len()),
        Some(2),
        "$select holds on the next pages"
    );
    let unknown = get(&fake, &t, "/v1.0/users?$select=shoeSize").await;
    assert_eq!(unknown.status, 400);
    let bad_token = get(&fake, &t, "/v1.0/users?$skiptoken=bogus").await;
    assert_eq!(bad_token.status, 400);
}

#[tokio::test]
async fn paging_neither_skips_nor_repeats_when_users_vanish_meanwhile() {
    let fake = FakeM365::start(Tenant::generate(8, Sizes { users: 30, sites: 1 }), Options::default())
        .await
        .expect("fake");
    let t = bearer(&fake).await;
    let first = get(&fake, &t, "/v1.0/users?$top=10").await;
    let seen: Vec<String> = first.body["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|u| u["id"].as_str().expect("id").to_string())
        .collect();
    for id in &seen[..3] {
        fake.remove_user(id);
    }
    let newcomer = User::new(
        "00000000-0000-4000-8000-00000000abcd",
        "new.hire@contoso.onmicrosoft.com",
        "New Hire",
        UserKind::Licensed,
    );
    fake.add_user(newcomer.clone());
    let mut rest = Vec::new();
    let mut next = first.body["@odata.nextLink"].as_str().map(str::to_string);
    while let Some(link) = next {
        let page = get(&fake, &t, &link).await;
        for u in page.body["value"].as_array().expect("value") {
            rest.push(u["id"].as_str().expect("id").to_string());
        }
        next = page.body["@odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(rest.len(), 21, "the 20 others and the newcomer");
    assert!(rest.iter().all(|id| !seen.contains(id)));
    assert_eq!(rest.last(), Some(&newcomer.id));
}

#[tokio::test]
async fn mailboxes_and_drives_follow_the_kind_of_user() {
    for tenant in [
        Tenant::small_demo(),
        Tenant::generate(21, Sizes { users: 40, sites: 2 }),
    ] {
        let fake = FakeM365::start(tenant.clone(), Options::default()).await.expect("fake");
        let t = bearer(&fake).await;
        for u in &tenant.users {
            let settings = get(&fake, &t, &format!("/v1.0/users/{}/mailboxSettings", u.id)).await;
            if u.kind.has_mailbox() {
                assert_eq!(settings.status, 200, "{:?}", u.kind);
                assert!(settings.body["timeZone"].is_string() && settings.body["language"]["locale"].is_string());
            } else {
                assert_eq!(
                    (settings.status, settings.code()),
                    (404, Some("MailboxNotEnabledForRESTAPI"))
                );
                assert_eq!(
                    settings.body["error"]["message"],
                    "The mailbox is either inactive, soft-deleted, or is hosted on-premise."
                );
            }
            let drive = get(&fake, &t, &format!("/v1.0/users/{}/drive", u.id)).await;
            if u.kind.has_onedrive() {
                assert_eq!(drive.status, 200, "{:?}", u.kind);
                let d = &drive.body;
                assert_eq!(
                    (d["driveType"].as_str(), d["name"].as_str()),
                    (Some("business"), Some("OneDrive"))
                );
                assert_eq!(d["owner"]["user"]["id"], u.id.as_str());
                assert!(d["quota"]["total"].is_u64() && d["webUrl"].is_string() && d["id"].is_string());
                let by_id = get(
                    &fake,
                    &t,
                    &format!("/v1.0/drives/{}", d["id"].as_str().unwrap_or_default()),
                )
                .await;
                assert_eq!(by_id.status, 200);
            } else {
                assert_eq!(
                    (drive.status, drive.code()),
                    (404, Some("itemNotFound")),
                    "{:?}",
                    u.kind
                );
            }
            let one = get(
                &fake,
                &t,
                &format!("/v1.0/users/{}?$select=accountEnabled,userType,assignedPlans", u.id),
            )
            .await;
            let b = &one.body;
            assert_eq!(b["accountEnabled"], u.kind.account_enabled());
            assert_eq!(
                b["userType"],
                if u.kind == UserKind::Guest { "Guest" } else { "Member" }
            );
            let exchange = b["assignedPlans"]
                .as_array()
                .expect("plans")
                .iter()
                .any(|p| p["service"] == "exchange" && p["capabilityStatus"] == "Enabled");
            assert_eq!(exchange, u.kind.licensed(), "{:?}", u.kind);
        }
        let kinds: HashSet<UserKind> = tenant.users.iter().map(|u| u.kind).collect();
        assert_eq!(kinds.len(), UserKind::ALL.len(), "every kind of user");
    }
    let (fake, t) = demo().await;
    let guest = user_of(&fake, UserKind::Guest);
    assert!(guest.user_principal_name.contains("#EXT#@"));
    let path = format!(
        "/v1.0/users/{}/mailboxSettings",
        urlencoding_encode(&guest.user_principal_name)
    );
    let by_upn = get(&fake, &t, &path).await;
    assert_eq!(
        by_upn.code(),
        Some("MailboxNotEnabledForRESTAPI"),
        "an encoded UPN works as the id"
    );
    let adele = &fake.tenant().users[0];
    let by_upn = get(&fake, &t, &format!("/v1.0/users/{}", adele.user_principal_name)).await;
    assert_eq!(by_upn.body["id"], adele.id.as_str());
    let nobody = get(&fake, &t, "/v1.0/users/00000000-0000-0000-0000-000000000000").await;
    assert_eq!((nobody.status, nobody.code()), (404, Some("Request_ResourceNotFound")));
    let shared = user_of(&fake, UserKind::SharedMailbox);
    let b = get(
        &fake,
        &t,
        &format!("/v1.0/users/{}?$select=accountEnabled,assignedPlans", shared.id),
    )
    .await
    .body;
    assert_eq!(
        (b["accountEnabled"].clone(), b["assignedPlans"].clone()),
        (json!(false), json!([]))
    );
}

fn urlencoding_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ----- sites -----

#[tokio::test]
async fn sites_page_through_get_all_sites() {
    let fake = FakeM365::start(Tenant::generate(3, Sizes { users: 5, sites: 450 }), Options::default())
        .await
        .expect("fake");
    let t = bearer(&fake).await;
    let mut next = Some(format!("{}/v1.0/sites/getAllSites", fake.url()));
    let mut ids = HashSet::new();
    let mut sizes = Vec::new();
    while let Some(link) = next {
        let page = get(&fake, &t, &link).await;
        assert_eq!(page.status, 200);
        let value = page.body["value"].as_array().expect("value");
        sizes.push(value.len());
        for s in value {
            let id = s["id"].as_str().expect("id");
            assert_eq!(id.split(',').count(), 3, "host,guid,guid: {id}");
            assert!(s["name"].is_string() && s["displayName"].is_string() && s["createdDateTime"].is_string());
            assert!(
                s["webUrl"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("https://contoso.sharepoint.com"))
            );
            assert_eq!(s["siteCollection"]["hostname"], "contoso.sharepoint.com");
            assert!(ids.insert(id.to_string()));
        }
        next = page.body["@odata.nextLink"].as_str().map(str::to_string);
    }
    assert_eq!(sizes, [200, 200, 50], "default page of 200");
    let small = get(&fake, &t, "/v1.0/sites/getAllSites?$top=2&$select=id,webUrl").await;
    assert_eq!(small.body["value"].as_array().map(Vec::len), Some(2));
    assert_eq!(small.body["value"][0].as_object().map(|o| o.len()), Some(2));
    let root = fake.tenant().sites[0].clone();
    let site = get(&fake, &t, &format!("/v1.0/sites/{}", root.id)).await;
    assert_eq!(
        (site.status, site.body["webUrl"].as_str()),
        (200, Some(root.web_url.as_str()))
    );
    let drive = get(&fake, &t, &format!("/v1.0/sites/{}/drive", root.id)).await;
    assert_eq!(
        (drive.status, drive.body["driveType"].as_str()),
        (200, Some("documentLibrary"))
    );
    let missing = get(&fake, &t, "/v1.0/sites/contoso.sharepoint.com,a,b").await;
    assert_eq!((missing.status, missing.code()), (404, Some("itemNotFound")));
}

// ----- throttling -----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fifth_concurrent_request_to_a_mailbox_is_refused() {
    let (fake, t) = demo().await;
    let adele = fake.tenant().users[0].clone();
    // Four requests held open for 600 ms each.
    fake.set_faults(rule("/mailboxSettings", FaultKind::Timeout { secs: 0.6 }, 1.0, Some(4)));
    let mut held = Vec::new();
    for _ in 0..4 {
        let (url, t) = (
            format!("{}/v1.0/users/{}/mailboxSettings", fake.url(), adele.id),
            t.clone(),
        );
        held.push(tokio::spawn(async move {
            http().get(url).bearer_auth(t).send().await.map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The same mailbox by its UPN: the same scope.
    let fifth = get(
        &fake,
        &t,
        &format!("/v1.0/users/{}/mailboxSettings", adele.user_principal_name),
    )
    .await;
    assert_eq!((fifth.status, fifth.code()), (429, Some("ApplicationThrottled")));
    assert_eq!(
        fifth.body["error"]["message"],
        "Application is over its MailboxConcurrency limit."
    );
    assert_eq!(fifth.retry_after(), Some(1));
    let other = fake.tenant().users[1].id.clone();
    assert_eq!(
        get(&fake, &t, &format!("/v1.0/users/{other}/mailboxSettings"))
            .await
            .status,
        200,
        "another mailbox is another scope"
    );
    for h in held {
        assert_eq!(h.await.expect("join").expect("held"), 504);
    }
    let still = get(&fake, &t, &format!("/v1.0/users/{}/mailboxSettings", adele.id)).await;
    assert_eq!(still.status, 429, "closed until the Retry-After instant");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        get(&fake, &t, &format!("/v1.0/users/{}/mailboxSettings", adele.id))
            .await
            .status,
        200
    );
    let log = fake.requests();
    let scope = format!("mailbox:{}", adele.id);
    let refused: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert_eq!(refused.len(), 2);
    assert!(
        refused
            .iter()
            .all(|r| r.throttle_scope.as_deref() == Some(scope.as_str()))
    );
    assert!(refused.iter().all(|r| r.retry_after_secs.is_some()));
    assert_eq!(
        refused[0].mailbox.as_deref(),
        Some(adele.user_principal_name.as_str()),
        "the log keeps the id as sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_gives_up_frees_its_mailbox_slot() {
    let (fake, t) = demo().await;
    let adele = fake.tenant().users[0].id.clone();
    fake.set_faults(rule(
        "/mailboxSettings",
        FaultKind::Timeout { secs: 30.0 },
        1.0,
        Some(4),
    ));
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let url = format!("{}/v1.0/users/{adele}/mailboxSettings", fake.url());
    let mut tries = Vec::new();
    for _ in 0..4 {
        tries.push(impatient.get(&url).bearer_auth(&t).send());
    }
    for r in futures::future::join_all(tries).await {
        assert!(r.is_err_and(|e| e.is_timeout()), "never answered in time");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(get(&fake, &t, &url).await.status, 200, "the four slots were given back");
    let log = fake.requests();
    assert_eq!(
        log.iter().filter(|r| r.status == 504).count(),
        4,
        "a held request is logged when its client goes away: {log:?}"
    );
}

#[tokio::test]
async fn sharepoint_resource_units_run_out_and_retry_after_holds() {
    let options = Options {
        time_scale: 0.1, // a minute of resource units lasts 6 s
        ..Options::default()
    };
    let fake = FakeM365::start(Tenant::small_demo(), options).await.expect("fake");
    let t = bearer(&fake).await;
    let user = fake.tenant().users[0].id.clone();
    let site = fake.tenant().sites[0].id.clone();
    // 1,200 RU per minute for a tenant under 1,000 licences: 100 lists (2 RU) and 1,000 single GETs (1 RU).
    for _ in 0..100 {
        assert_eq!(get(&fake, &t, "/v1.0/sites/getAllSites").await.status, 200);
    }
    let mut rate_limited = 0;
    let mut first_429 = None;
    for i in 0..1_100 {
        let path = if i % 2 == 0 {
            format!("/v1.0/users/{user}/drive")
        } else {
            format!("/v1.0/sites/{site}")
        };
        let got = get(&fake, &t, &path).await;
        if got.status == 429 {
            first_429 = Some((i, got));
            break;
        }
        if got.headers.contains_key("ratelimit-remaining") {
            rate_limited += 1;
        }
    }
    let (at, refused) = first_429.expect("throttled");
    assert_eq!(at, 1_000, "the budget is the real one");
    assert_eq!(rate_limited, 240, "RateLimit headers past 80% of the budget");
    assert_eq!(refused.code(), Some("TooManyRequests"));
    let retry = refused.retry_after().expect("Retry-After in seconds");
    assert!((1..=6).contains(&retry), "{retry}");
    let again = get(&fake, &t, &format!("/v1.0/users/{user}/drive")).await;
    assert_eq!(again.status, 429, "still throttled before Retry-After");
    assert!(again.retry_after().is_some_and(|r| r <= retry));
    assert_eq!(
        get(&fake, &t, "/v1.0/users").await.status,
        200,
        "the directory is another scope"
    );
    assert_eq!(
        get(&fake, &t, &format!("/v1.0/users/{user}/mailboxSettings"))
            .await
            .status,
        200,
        "Outlook is another scope"
    );
    let log = fake.requests();
    let refused: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert_eq!(refused.len(), 2);
    assert!(
        refused
            .iter()
            .all(|r| r.throttle_scope.as_deref() == Some("sharepoint") && r.retry_after_secs.is_some())
    );
}

#[tokio::test]
async fn throttling_can_be_turned_off() {
    let options = Options {
        throttle: false,
        ..Options::default()
    };
    let fake = FakeM365::start(Tenant::small_demo(), options).await.expect("fake");
    let t = bearer(&fake).await;
    fake.set_faults(rule("/mailboxSettings", FaultKind::Timeout { secs: 0.3 }, 1.0, Some(6)));
    let user = fake.tenant().users[0].id.clone();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (url, t) = (format!("{}/v1.0/users/{user}/mailboxSettings", fake.url()), t.clone());
        tasks.push(tokio::spawn(async move {
            http().get(url).bearer_auth(t).send().await.map(|r| r.status().as_u16())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("join").expect("get"), 504, "held, never refused");
    }
}

// ----- faults -----

#[tokio::test]
async fn faults_are_injected_by_rule_and_control_endpoint() {
    let (fake, t) = demo().await;
    fake.set_faults(rule(
        "/users",
        FaultKind::Status {
            status: 500,
            retry_after_secs: None,
        },
        1.0,
        Some(1),
    ));
    let failed = get(&fake, &t, "/v1.0/users").await;
    assert_eq!((failed.status, failed.code()), (500, Some("generalException")));
    assert_eq!(get(&fake, &t, "/v1.0/users").await.status, 200, "remaining counts down");
    assert_eq!(fake.faults().rules[0].remaining, Some(0));

    let rules = json!({"rules": [{"path_contains": "/users", "kind": {"type": "truncate"}, "probability": 1.0, "remaining": 1}]});
    let resp = http()
        .post(format!("{}/_fake/faults", fake.url()))
        .json(&rules)
        .send()
        .await
        .expect("control");
    assert_eq!(resp.status(), 200);
    let current: Value = http()
        .get(format!("{}/_fake/faults", fake.url()))
        .send()
        .await
        .expect("control")
        .json()
        .await
        .expect("json");
    assert_eq!(current["rules"][0]["kind"]["type"], "truncate");
    let truncated = http()
        .get(format!("{}/v1.0/users", fake.url()))
        .bearer_auth(&t)
        .send()
        .await
        .expect("headers arrive");
    assert_eq!(truncated.status(), 200);
    assert!(truncated.content_length().is_some_and(|n| n > 100));
    assert!(
        truncated.bytes().await.is_err(),
        "a truncated body is an error, not a short success"
    );
    let bad = http()
        .post(format!("{}/_fake/faults", fake.url()))
        .json(&json!({"rules": [{"kind": {"type": "truncate"}, "probability": 2.0}]}))
        .send()
        .await
        .expect("control");
    assert_eq!(bad.status(), 400);

    // A 429 with Retry-After closes the scope like a real throttle.
    fake.set_faults(rule(
        "/mailboxSettings",
        FaultKind::Status {
            status: 429,
            retry_after_secs: Some(1),
        },
        1.0,
        Some(1),
    ));
    let user = fake.tenant().users[0].id.clone();
    let path = format!("/v1.0/users/{user}/mailboxSettings");
    let first = get(&fake, &t, &path).await;
    assert_eq!((first.status, first.retry_after()), (429, Some(1)));
    assert_eq!(
        get(&fake, &t, &path).await.status,
        429,
        "before the Retry-After instant"
    );
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    assert_eq!(get(&fake, &t, &path).await.status, 200);

    // A timeout holds the request, then answers 504.
    fake.set_faults(rule("/sites", FaultKind::Timeout { secs: 0.3 }, 1.0, Some(1)));
    let started = Instant::now();
    let held = get(&fake, &t, "/v1.0/sites/getAllSites").await;
    assert_eq!(held.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Faults reach the token endpoint too.
    fake.set_faults(rule(
        "/oauth2/",
        FaultKind::Status {
            status: 503,
            retry_after_secs: Some(2),
        },
        1.0,
        Some(1),
    ));
    let (status, body) = token(&fake, &fake.client_secret(), GRAPH).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("temporarily_unavailable")));
    assert_eq!(token(&fake, &fake.client_secret(), GRAPH).await.0, 200);

    let log: Value = http()
        .get(format!("{}/_fake/requests", fake.url()))
        .send()
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
    assert_eq!(statuses, [500, 200, 200]);
}

#[tokio::test]
async fn fault_decisions_repeat_with_the_seed() {
    async fn statuses(seed: u64) -> Vec<u16> {
        let options = Options {
            seed,
            faults: rule(
                "/users",
                FaultKind::Status {
                    status: 503,
                    retry_after_secs: None,
                },
                0.4,
                None,
            ),
            ..Options::default()
        };
        let fake = FakeM365::start(Tenant::small_demo(), options).await.expect("fake");
        let t = bearer(&fake).await;
        let mut out = Vec::new();
        for _ in 0..40 {
            out.push(get(&fake, &t, "/v1.0/users?$top=1").await.status);
        }
        out
    }
    let a = statuses(3).await;
    assert_eq!(a, statuses(3).await);
    assert_ne!(a, statuses(4).await);
    let failed = a.iter().filter(|s| **s == 503).count();
    assert!((6..=28).contains(&failed), "about 40%: {failed}");
}

// ----- the request log -----

#[tokio::test]
async fn the_request_log_records_what_the_client_did() {
    let (fake, t) = demo().await;
    let adele = fake.tenant().users[0].clone();
    let before = chrono::Utc::now();
    let resp = http()
        .get(format!(
            "{}/v1.0/users/{}/mailboxSettings?$select=timeZone",
            fake.url(),
            adele.id
        ))
        .bearer_auth(&t)
        .header("client-request-id", "my-request-1")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.headers()["client-request-id"], "my-request-1");
    assert!(resp.headers().contains_key("request-id"));
    get(&fake, &t, "/v1.0/users?$top=2").await;
    get(&fake, &t, "/v1.0/nonsense").await;
    let log = fake.requests();
    assert_eq!(log.len(), 4);
    assert_eq!(log.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    let token_req = &log[0];
    assert_eq!(token_req.method, "POST");
    assert_eq!(token_req.client_id.as_deref(), Some(fake.client_id().as_str()));
    assert_eq!((token_req.status, token_req.throttle_scope.as_deref()), (200, None));
    let r = &log[1];
    assert_eq!(
        (r.method.as_str(), r.path.clone(), r.query.as_deref()),
        (
            "GET",
            format!("/v1.0/users/{}/mailboxSettings", adele.id),
            Some("$select=timeZone")
        )
    );
    assert_eq!(
        r.client_id.as_deref(),
        Some(fake.client_id().as_str()),
        "from the token"
    );
    assert_eq!(r.mailbox.as_deref(), Some(adele.id.as_str()));
    assert_eq!(r.throttle_scope, Some(format!("mailbox:{}", adele.id)));
    assert_eq!((r.status, r.retry_after_secs), (200, None));
    assert!(r.at >= before && r.finished_at >= r.at);
    assert_eq!(
        (log[2].mailbox.as_deref(), log[2].throttle_scope.as_deref()),
        (None, None)
    );
    assert_eq!(log[3].status, 400);
    let over_http: Vec<fake_m365::LoggedRequest> = http()
        .get(format!("{}/_fake/requests", fake.url()))
        .send()
        .await
        .expect("log")
        .json()
        .await
        .expect("json");
    assert_eq!(over_http.len(), 4, "control requests are not logged");
    let cleared = http()
        .delete(format!("{}/_fake/requests", fake.url()))
        .send()
        .await
        .expect("clear");
    assert_eq!(cleared.status(), 204);
    assert!(fake.requests().is_empty());
}

// ----- mail (stored now, served for later work) -----

#[tokio::test]
async fn mail_folders_page_with_their_options() {
    let (fake, t) = demo().await;
    let adele = fake.tenant().users[0].id.clone();
    let id = fake
        .add_message(&adele, "Inbox/Projects", b"Subject: hi\r\n\r\nhello\r\n".to_vec())
        .expect("delivered");
    let count = |hidden: bool| {
        let (fake, t, adele) = (&fake, &t, &adele);
        async move {
            let mut next = Some(format!(
                "{}/v1.0/users/{adele}/mailFolders?includeHiddenFolders={hidden}&$top=2",
                fake.url()
            ));
            let mut names = Vec::new();
            while let Some(link) = next {
                let page = get(fake, t, &link).await;
                assert_eq!(page.status, 200, "{}", page.body);
                for f in page.body["value"].as_array().expect("value") {
                    names.push(f["displayName"].as_str().expect("name").to_string());
                }
                next = page.body["@odata.nextLink"].as_str().map(str::to_string);
            }
            names
        }
    };
    assert_eq!(count(false).await.len(), 5);
    let all = count(true).await;
    assert_eq!(all.len(), 6, "the option holds on every page: {all:?}");
    assert!(all.contains(&"Conversation History".to_string()));
    let mime = http()
        .get(format!("{}/v1.0/users/{adele}/messages/{id}/$value", fake.url()))
        .bearer_auth(&t)
        .send()
        .await
        .expect("mime");
    assert_eq!(
        mime.bytes().await.expect("body").as_ref(),
        b"Subject: hi\r\n\r\nhello\r\n"
    );
    let guest = user_of(&fake, UserKind::Guest);
    let none = get(&fake, &t, &format!("/v1.0/users/{}/mailFolders", guest.id)).await;
    assert_eq!(none.code(), Some("MailboxNotEnabledForRESTAPI"));
}

// ----- tenants -----

#[tokio::test]
async fn users_come_and_go() {
    let (fake, t) = demo().await;
    let leaver = fake.tenant().users[0].clone();
    fake.remove_user(&leaver.id);
    let users = get(&fake, &t, "/v1.0/users").await;
    assert_eq!(users.body["value"].as_array().map(Vec::len), Some(7));
    assert_eq!(
        get(&fake, &t, &format!("/v1.0/users/{}/drive", leaver.id)).await.status,
        404
    );
    assert_eq!(
        get(&fake, &t, &format!("/v1.0/drives/{}", leaver.drive_id))
            .await
            .status,
        404
    );
    fake.add_user(leaver.clone());
    assert_eq!(
        get(&fake, &t, &format!("/v1.0/users/{}/drive", leaver.id)).await.status,
        200
    );

    let created = http()
        .post(format!("{}/_fake/users", fake.url()))
        .json(&json!({"userPrincipalName": "visitor_fabrikam.com#EXT#@contoso.onmicrosoft.com", "displayName": "Visitor", "kind": "Guest"}))
        .send()
        .await
        .expect("control");
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let guest = get(&fake, &t, &format!("/v1.0/users/{id}?$select=mail,userType")).await;
    assert_eq!(
        (guest.body["mail"].as_str(), guest.body["userType"].as_str()),
        (Some("visitor@fabrikam.com"), Some("Guest"))
    );
    assert_eq!(
        get(&fake, &t, &format!("/v1.0/users/{id}/mailboxSettings"))
            .await
            .code(),
        Some("MailboxNotEnabledForRESTAPI")
    );
    let shared = http()
        .post(format!("{}/_fake/users", fake.url()))
        .json(&json!({"userPrincipalName": "sales@contoso.onmicrosoft.com", "kind": "SharedMailbox"}))
        .send()
        .await
        .expect("control");
    assert_eq!(shared.status(), 201);
    assert_eq!(
        get(&fake, &t, "/v1.0/users/sales@contoso.onmicrosoft.com/mailboxSettings")
            .await
            .status,
        200,
        "a user added by the control endpoint gets its mailbox"
    );
    let bad = http()
        .post(format!("{}/_fake/users", fake.url()))
        .json(&json!({"userPrincipalName": "x@contoso.onmicrosoft.com", "kind": "Robot"}))
        .send()
        .await
        .expect("control");
    assert_eq!(bad.status(), 400);
    let deleted = http()
        .delete(format!("{}/_fake/users/{id}", fake.url()))
        .send()
        .await
        .expect("control");
    assert_eq!(deleted.status(), 204);
    assert_eq!(get(&fake, &t, &format!("/v1.0/users/{id}")).await.status, 404);
    let users = get(&fake, &t, "/v1.0/users").await;
    assert_eq!(users.body["value"].as_array().map(Vec::len), Some(9));
}

#[test]
fn generated_tenants_are_deterministic_and_realistic() {
    let sizes = Sizes { users: 1_000, sites: 4 };
    let a = Tenant::generate(9, sizes);
    assert_eq!(a, Tenant::generate(9, sizes), "deterministic from the seed");
    let c = Tenant::generate(10, sizes);
    assert_ne!(a.users, c.users);
    assert_ne!(a.tenant_id, c.tenant_id);
    assert_eq!(a.sites.len(), 4);
    assert_eq!(a.sites[0].web_url, "https://contoso.sharepoint.com", "the root site");
    let ids: HashSet<&str> = a.users.iter().map(|u| u.id.as_str()).collect();
    let upns: HashSet<String> = a.users.iter().map(|u| u.user_principal_name.to_lowercase()).collect();
    assert_eq!((ids.len(), upns.len()), (1_000, 1_000), "unique ids and UPNs");
    let count = |k: UserKind| a.users.iter().filter(|u| u.kind == k).count();
    let licensed = a.users.iter().filter(|u| u.kind.licensed()).count();
    assert!((750..=900).contains(&licensed), "about 80% licensed: {licensed}");
    for k in UserKind::ALL {
        assert!(count(k) >= 1, "{k:?}");
    }
    let small = Tenant::generate(1, Sizes { users: 10, sites: 1 });
    let kinds: HashSet<UserKind> = small.users.iter().map(|u| u.kind).collect();
    assert_eq!(kinds.len(), 6, "every kind from ten users on");
    for u in &a.users {
        match u.kind {
            UserKind::Guest => assert!(u.user_principal_name.contains("#EXT#@")),
            UserKind::Unlicensed => assert_eq!(u.mail, None),
            _ => assert!(u.mail.is_some()),
        }
    }
    let demo = Tenant::small_demo();
    assert_eq!(demo, Tenant::small_demo());
    assert_eq!((demo.users.len(), demo.sites.len()), (8, 3));
    assert_eq!(demo.users[0].display_name, "Adele Vance");
    let mail = Tenant::small_demo().with_generated_mail(1, 5);
    for u in &mail.users {
        assert_eq!(u.messages.len(), if u.kind.has_mailbox() { 5 } else { 0 });
    }
    assert!(mail.users[0].messages[0].mime.starts_with(b"From: "));
    assert_eq!(mail, Tenant::small_demo().with_generated_mail(1, 5));
}

#[tokio::test]
async fn a_tenant_from_a_directory() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/tenant");
    let tenant = Tenant::from_dir(&dir).expect("from dir");
    assert_eq!(tenant.domain, "contoso.test");
    let upns: Vec<&str> = tenant.users.iter().map(|u| u.user_principal_name.as_str()).collect();
    assert_eq!(
        upns,
        [
            "adele.vance@contoso.test",
            "info@contoso.test",
            "megan.bowen_fabrikam.com#EXT#@contoso.test"
        ]
    );
    let adele = &tenant.users[0];
    assert_eq!(
        (adele.kind, adele.display_name.as_str()),
        (UserKind::Licensed, "Adele Vance")
    );
    let folders: Vec<&str> = adele.messages.iter().map(|m| m.folder.as_str()).collect();
    assert_eq!(folders, ["Inbox", "Inbox/Projects"]);
    let raw = std::fs::read(dir.join("adele.vance@contoso.test/Inbox/1.eml")).expect("eml");
    assert_eq!(adele.messages[0].mime, raw, "stored byte for byte");
    let info = &tenant.users[1];
    assert_eq!(info.kind, UserKind::SharedMailbox, "tenant.json sets the kind");
    assert_eq!(
        info.messages[0].folder, "Inbox",
        "top-level .eml files land in the Inbox"
    );
    let names: Vec<&str> = tenant.sites.iter().map(|s| s.display_name.as_str()).collect();
    assert_eq!(names, ["Communication site", "Marketing", "Finance"]);
    assert_eq!(Tenant::from_dir(&dir).expect("again"), tenant, "deterministic");

    let fake = FakeM365::start(tenant.clone(), Options::default()).await.expect("fake");
    let (status, _) = token_with(
        &fake,
        "contoso.test",
        &[
            ("client_id", &fake.client_id()),
            ("client_secret", &fake.client_secret()),
            ("scope", GRAPH),
            ("grant_type", "client_credentials"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let t = bearer(&fake).await;
    let settings = get(&fake, &t, "/v1.0/users/info@contoso.test/mailboxSettings").await;
    assert_eq!(
        (settings.status, settings.body["userPurpose"].as_str()),
        (200, Some("shared"))
    );
    assert_eq!(get(&fake, &t, "/v1.0/users/info@contoso.test/drive").await.status, 404);
    let mailbox = fake.mailbox("adele.vance@contoso.test").expect("mailbox");
    assert_eq!(mailbox.items.len(), 2);
    assert!(fake.mailbox(&tenant.users[2].id).is_none(), "a guest has none");
}

#[test]
fn a_bad_tenant_json_is_an_error() {
    let dir = std::env::temp_dir().join(format!("fake-m365-bad-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("x@contoso.test")).expect("mkdir");
    std::fs::write(dir.join("x@contoso.test/1.eml"), b"Subject: hi\r\n\r\nhi\r\n").expect("eml");
    std::fs::write(
        dir.join("tenant.json"),
        br#"{"users":[{"userPrincipalName":"x@contoso.test","kind":"Guest"}]}"#,
    )
    .expect("json");
    let err = Tenant::from_dir(&dir).expect_err("a guest cannot have mail");
    assert!(err.to_string().contains("no mailbox"), "{err}");
    std::fs::write(dir.join("tenant.json"), br#"{"colour":"blue"}"#).expect("json");
    assert!(Tenant::from_dir(&dir).is_err(), "unknown fields are refused");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

// ----- the binary -----

#[tokio::test]
async fn the_binary_prints_its_coordinates_and_serves() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fake-m365"))
        .args(["--demo", "--port", "0", "--time-scale", "0.01"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("started in time")
    .expect("read");
    let info: Value = serde_json::from_str(&line).expect("one JSON line");
    let url = info["url"].as_str().expect("url");
    assert!(url.starts_with("http://127.0.0.1:"));
    let resp = http()
        .post(format!(
            "{url}/{}/oauth2/v2.0/token",
            info["tenant_id"].as_str().expect("tenant")
        ))
        .form(&[
            ("client_id", info["client_id"].as_str().expect("client")),
            ("client_secret", info["client_secret"].as_str().expect("secret")),
            ("scope", GRAPH),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(resp.status(), 200);
    child.kill().await.expect("kill");
}
