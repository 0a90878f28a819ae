//! The Graph connector against the fake Microsoft 365 over HTTP: credentials
//! refused with Entra ID's reason, tokens renewed, 5xx and broken bodies
//! retried, `Retry-After` honoured, at most 4 requests per mailbox at once,
//! paging followed to the end.

use fake_m365::{FakeM365, FaultKind, FaultRule, Faults, Options, Sizes, Tenant};
use std::time::Duration;
use strata::secrets::Secret;
use strata::source::graph::{GraphClient, GraphCredentials, RetryPolicy};
use strata::source::{Directory, SourceError};

fn client(fake: &FakeM365, secret: &str) -> GraphClient {
    let creds = GraphCredentials {
        tenant_id: fake.tenant_id(),
        client_id: fake.client_id(),
        client_secret: Secret::new(secret),
        login_url: fake.url(),
        graph_url: fake.url(),
    };
    let policy = RetryPolicy {
        base_delay: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    GraphClient::new(strata::context::http_client().expect("http"), creds, policy)
}

fn fault(path: &str, kind: FaultKind, remaining: u32) -> Faults {
    Faults {
        rules: vec![FaultRule {
            path_contains: Some(path.into()),
            kind,
            probability: 1.0,
            remaining: Some(remaining),
        }],
    }
}

#[tokio::test]
async fn wrong_secret_is_refused_with_entra_ids_reason() {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let err = client(&fake, "nope").verify().await.expect_err("refused");
    assert!(!err.is_retryable(), "bad credentials are not retried");
    match err {
        SourceError::Auth { code, description } => {
            assert_eq!(code, "invalid_client");
            assert!(description.starts_with("AADSTS7000215"), "{description}");
            assert!(!description.contains("Trace ID"), "ids trimmed: {description}");
        }
        other => panic!("expected Auth, got {other:?}"),
    }
}

#[tokio::test]
async fn an_expired_token_is_renewed() {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let graph = client(&fake, &fake.client_secret());
    graph.verify().await.expect("first call");
    fake.expire_tokens();
    graph.verify().await.expect("renewed after 401");
    let log = fake.requests();
    let statuses: Vec<(bool, u16)> = log.iter().map(|r| (r.path.ends_with("/token"), r.status)).collect();
    assert_eq!(
        statuses,
        [(true, 200), (false, 200), (false, 401), (true, 200), (false, 200)],
        "{log:?}"
    );
}

#[tokio::test]
async fn server_errors_and_truncated_bodies_are_retried() {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let graph = client(&fake, &fake.client_secret());
    fake.set_faults(fault(
        "/users",
        FaultKind::Status {
            status: 503,
            retry_after_secs: None,
        },
        2,
    ));
    assert_eq!(graph.users().await.expect("users after two 503s").len(), 8);
    fake.set_faults(fault("/users", FaultKind::Truncate, 1));
    assert_eq!(graph.users().await.expect("users after a truncated body").len(), 8);
    let statuses: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.path == "/v1.0/users")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 503, 200, 200, 200]);
    fake.set_faults(fault(
        "/users",
        FaultKind::Status {
            status: 500,
            retry_after_secs: None,
        },
        100,
    ));
    let err = graph.users().await.expect_err("gives up");
    assert!(
        matches!(err, SourceError::Unavailable(_)) && err.is_retryable(),
        "{err:?}"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_before_the_next_request_to_the_scope() {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let graph = client(&fake, &fake.client_secret());
    let user = fake.tenant().users[0].id.clone();
    fake.set_faults(fault(
        "/mailboxSettings",
        FaultKind::Status {
            status: 429,
            retry_after_secs: Some(1),
        },
        1,
    ));
    assert!(graph.has_mailbox(&user).await.expect("mailbox after a 429"));
    let log: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/mailboxSettings"))
        .collect();
    assert_eq!(log.iter().map(|r| r.status).collect::<Vec<_>>(), [429, 200]);
    let waited = log[1].at - log[0].finished_at;
    assert!(waited >= chrono::Duration::milliseconds(990), "waited only {waited}");
    assert_eq!(graph.stats().throttled, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_most_four_requests_per_mailbox_at_once() {
    let fake = FakeM365::start(Tenant::small_demo(), Options::default())
        .await
        .expect("fake");
    let graph = std::sync::Arc::new(client(&fake, &fake.client_secret()));
    let user = fake.tenant().users[0].id.clone();
    fake.set_faults(Faults {
        rules: vec![FaultRule {
            path_contains: Some("/mailboxSettings".into()),
            kind: FaultKind::Timeout { secs: 0.2 },
            probability: 1.0,
            remaining: Some(12),
        }],
    });
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (graph, user) = (graph.clone(), user.clone());
        tasks.push(tokio::spawn(async move { graph.has_mailbox(&user).await }));
    }
    for t in tasks {
        // The held requests answer 504 and are retried; all end well.
        assert!(t.await.expect("join").expect("mailbox"));
    }
    let log: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/mailboxSettings"))
        .collect();
    assert!(
        log.iter().all(|r| r.status != 429),
        "the fake never had to refuse for concurrency: {log:?}"
    );
    let max_overlap = log
        .iter()
        .map(|a| log.iter().filter(|b| b.at <= a.at && b.finished_at > a.at).count())
        .max()
        .unwrap_or(0);
    assert!(max_overlap <= 4, "{max_overlap} requests to one mailbox at once");
    assert!(max_overlap >= 2, "requests did run concurrently ({max_overlap})");
}

#[tokio::test]
async fn paging_follows_next_links_to_the_end() {
    let tenant = Tenant::generate(
        3,
        Sizes {
            users: 2_500,
            sites: 450,
        },
    );
    let fake = FakeM365::start(
        tenant,
        Options {
            throttle: false,
            ..Options::default()
        },
    )
    .await
    .expect("fake");
    let graph = client(&fake, &fake.client_secret());
    let users = graph.users().await.expect("users");
    let ids: std::collections::HashSet<_> = users.iter().map(|u| u.id.clone()).collect();
    assert_eq!((users.len(), ids.len()), (2_500, 2_500), "every user once");
    assert_eq!(
        fake.requests().iter().filter(|r| r.path == "/v1.0/users").count(),
        3,
        "999 per page"
    );
    assert_eq!(graph.sites().await.expect("sites").len(), 450);
}
