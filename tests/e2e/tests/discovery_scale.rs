//! Discovery of a 10,000-user tenant under throttling: every user found once,
//! and no request sent into a scope before its `Retry-After` had passed.

use std::collections::BTreeMap;
use std::time::Duration;
use strata_e2e::{World, WorldOptions};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_users_under_throttling() {
    let tenant = fake_m365::Tenant::generate(7, strata_e2e::sizes(10_000, 40));
    let expected = strata_e2e::expected_entities(&tenant);
    let mut opts = WorldOptions::new(tenant);
    opts.fake = strata_e2e::throttling_options();
    let world = World::start(opts).await.expect("world");
    let admin = world
        .sign_up("Contoso", "owner@contoso.test", PASSWORD, None)
        .await
        .expect("sign up");
    let (status, conn) = admin
        .post("/v1/connections", world.connection_body(&world.fake.client_secret()))
        .await
        .expect("connect");
    assert_eq!(status, 201, "{conn}");
    let conn_id = conn["id"].as_str().expect("id").to_string();
    let discovery = admin
        .wait_discovery(&conn_id, Duration::from_secs(900))
        .await
        .expect("discovery");
    assert_eq!(discovery["state"], "succeeded", "{discovery}");
    let result = &discovery["result"];
    let took = chrono::DateTime::parse_from_rfc3339(discovery["finished_at"].as_str().expect("finished"))
        .expect("time")
        - chrono::DateTime::parse_from_rfc3339(discovery["started_at"].as_str().expect("started")).expect("time");
    println!(
        "discovery of 10,000 users: {} ms, result {result}",
        took.num_milliseconds()
    );
    assert_eq!(result["users"], 10_000);
    assert_eq!(
        result["undetermined"], 0,
        "every user determined despite throttling: {result}"
    );

    let entities = admin.all_entities("").await.expect("entities");
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut sources = std::collections::HashSet::new();
    for e in &entities {
        *kinds.entry(e["kind"].as_str().unwrap_or_default().into()).or_default() += 1;
        assert!(
            sources.insert((e["kind"].to_string(), e["source_id"].to_string())),
            "found twice: {e}"
        );
    }
    assert_eq!(kinds, expected.kinds(), "every mailbox, OneDrive and site found once");

    // The client's behaviour, from the fake's request log.
    let log = world.fake.requests();
    let throttled: Vec<_> = log.iter().filter(|r| r.status == 429).collect();
    assert!(
        throttled.len() >= 5,
        "the run was throttled ({} times), so the test means something",
        throttled.len()
    );
    assert_eq!(
        result["throttled"].as_u64(),
        Some(throttled.len() as u64),
        "the client counted every 429"
    );
    let violations = strata_e2e::retry_after_violations(&log);
    assert!(
        violations.is_empty(),
        "{} requests ignored a Retry-After: {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    world.stop().await;
}
