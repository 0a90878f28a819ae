//! Tenant isolation: account B sees none of account A's connections or
//! entities (404) and cannot act on them.

use serde_json::json;
use std::time::Duration;
use strata_e2e::{World, WorldOptions};

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_account_sees_and_touches_nothing() {
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    opts.env.insert("OPEN_SIGNUP".into(), "true".into());
    let world = World::start(opts).await.expect("world");
    let a = world
        .sign_up("Contoso", "a@contoso.test", PASSWORD, Some(""))
        .await
        .expect("account A");
    let b = world
        .sign_up("Fabrikam", "b@fabrikam.test", PASSWORD, Some(""))
        .await
        .expect("account B");
    let (status, dup) = world
        .api
        .post(
            "/v1/signup",
            json!({"account_name": "X", "email": "A@contoso.test", "password": PASSWORD}),
        )
        .await
        .expect("signup");
    assert_eq!((status, dup["error"]["code"].as_str()), (409, Some("email_taken")));

    let (status, conn) = a
        .post("/v1/connections", world.connection_body(&world.fake.client_secret()))
        .await
        .expect("connect");
    assert_eq!(status, 201, "{conn}");
    let conn_id = conn["id"].as_str().expect("id").to_string();
    a.wait_discovery(&conn_id, Duration::from_secs(120))
        .await
        .expect("discovery");
    let entities = a.all_entities("").await.expect("entities");
    assert!(!entities.is_empty());
    let entity_id = entities[0]["id"].as_str().expect("id").to_string();

    assert_eq!(b.get("/v1/connections").await.expect("list").1, json!([]));
    assert!(b.all_entities("").await.expect("entities").is_empty());
    assert!(
        b.get("/v1/activity").await.expect("activity").1["items"]
            .as_array()
            .expect("items")
            .is_empty()
    );
    for (method, path) in [
        ("GET", format!("/v1/connections/{conn_id}")),
        ("GET", format!("/v1/connections/{conn_id}/discovery")),
        ("POST", format!("/v1/connections/{conn_id}/discover")),
        ("DELETE", format!("/v1/connections/{conn_id}")),
        ("GET", format!("/v1/entities/{entity_id}")),
        ("POST", format!("/v1/entities/{entity_id}/activate")),
        ("POST", format!("/v1/entities/{entity_id}/pause")),
        ("POST", format!("/v1/entities/{entity_id}/resume")),
    ] {
        let (status, body) = match method {
            "GET" => b.get(&path).await,
            "POST" => b.post(&path, json!({})).await,
            _ => b.delete(&path).await,
        }
        .expect("request");
        assert_eq!(status, 404, "{method} {path} answered {status}: {body}");
    }
    let (_, all) = b
        .post("/v1/entities/activate-all", json!({}))
        .await
        .expect("activate all");
    assert_eq!(all["activated"], 0, "activate-all only sees B's own entities");
    let still = a.all_entities("&status=discovered").await.expect("entities");
    assert_eq!(still.len(), entities.len(), "A's entities are untouched");
    assert_eq!(a.get(&format!("/v1/connections/{conn_id}")).await.expect("get").0, 200);
    world.stop().await;
}
