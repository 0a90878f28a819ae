//! The foundation, end to end over HTTP through the local stack: sign-up,
//! two-factor sign-in, connections (a wrong secret refused and not stored),
//! discovery of a seeded tenant, activation, pause, resume, sign-out.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use strata_e2e::{World, WorldOptions, totp_code};

const PASSWORD: &str = "correct horse battery staple";

fn kinds(entities: &[Value]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in entities {
        *out.entry(e["kind"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sign_up_two_factor_connect_discover_activate_pause_resume() {
    let tenant = fake_m365::Tenant::small_demo();
    let expected = strata_e2e::expected_entities(&tenant);
    let world = World::start(WorldOptions::new(tenant)).await.expect("world");
    let api = &world.api;

    // Sign-up is closed: the bootstrap token is needed, and works once.
    let signup = json!({"account_name": "Contoso", "email": "Owner@Contoso.test", "password": PASSWORD});
    let (status, body) = api.post("/v1/signup", signup.clone()).await.expect("signup");
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("signup_closed")));
    let mut wrong = signup.clone();
    wrong["bootstrap_token"] = json!("not-the-token");
    assert_eq!(api.post("/v1/signup", wrong).await.expect("signup").0, 403);
    let mut weak = signup.clone();
    weak["password"] = json!("short");
    weak["bootstrap_token"] = json!(world.bootstrap_token().await.expect("token"));
    assert_eq!(
        api.post("/v1/signup", weak).await.expect("signup").1["error"]["code"],
        "weak_password"
    );
    let admin = world
        .sign_up("Contoso", "Owner@Contoso.test", PASSWORD, None)
        .await
        .expect("sign up");
    let again = world.sign_up("Fabrikam", "someone@fabrikam.test", PASSWORD, None).await;
    assert!(again.is_err(), "the bootstrap token works once");

    // Sessions: no token, a wrong password.
    assert_eq!(api.get("/v1/me").await.expect("me").0, 401);
    let (status, body) = api
        .post(
            "/v1/sessions",
            json!({"email": "owner@contoso.test", "password": "wrong password!"}),
        )
        .await
        .expect("sign in");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("invalid_credentials"))
    );
    let (status, me) = admin.get("/v1/me").await.expect("me");
    assert_eq!(
        (status, me["email"].as_str(), me["role"].as_str()),
        (200, Some("owner@contoso.test"), Some("owner"))
    );

    // Two-factor authentication: set up, confirm, then sign-in needs the code.
    let (status, setup) = admin.post("/v1/me/totp", json!({})).await.expect("totp setup");
    assert_eq!(status, 200, "{setup}");
    assert!(
        setup["otpauth_uri"]
            .as_str()
            .expect("uri")
            .starts_with("otpauth://totp/Strata:")
    );
    let secret = setup["secret_base32"].as_str().expect("secret").to_string();
    assert_eq!(
        admin
            .post("/v1/me/totp/confirm", json!({"code": "000000"}))
            .await
            .expect("confirm")
            .0,
        400
    );
    let code = totp_code(&secret, "owner@contoso.test", 0).expect("code");
    let (status, me) = admin
        .post("/v1/me/totp/confirm", json!({"code": code}))
        .await
        .expect("confirm");
    assert_eq!((status, me["totp_enabled"].as_bool()), (200, Some(true)), "{me}");
    let (status, body) = api
        .post(
            "/v1/sessions",
            json!({"email": "owner@contoso.test", "password": PASSWORD}),
        )
        .await
        .expect("sign in");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("totp_required")));
    let (status, body) = api
        .post(
            "/v1/sessions",
            json!({"email": "owner@contoso.test", "password": PASSWORD, "totp_code": "123456"}),
        )
        .await
        .expect("sign in");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_totp")));
    // The code of the confirmation's time step was used; the next step's code is what the app shows next.
    let next = totp_code(&secret, "owner@contoso.test", 30).expect("code");
    let admin = world
        .sign_in("owner@contoso.test", PASSWORD, Some(&next))
        .await
        .expect("sign in with the code");

    // A wrong secret is refused with Entra ID's reason, and nothing is stored.
    let (status, body) = admin
        .post("/v1/connections", world.connection_body("wrong-secret"))
        .await
        .expect("connect");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_credentials")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("AADSTS7000215"),
        "{body}"
    );
    assert_eq!(admin.get("/v1/connections").await.expect("list").1, json!([]));

    // The right secret: accepted, then discovered.
    let (status, conn) = admin
        .post("/v1/connections", world.connection_body(&world.fake.client_secret()))
        .await
        .expect("connect");
    assert_eq!(status, 201, "{conn}");
    assert!(
        conn.get("client_secret").is_none() && conn.get("client_secret_sealed").is_none(),
        "no secret in {conn}"
    );
    let conn_id = conn["id"].as_str().expect("id").to_string();
    let discovery = admin
        .wait_discovery(&conn_id, Duration::from_secs(120))
        .await
        .expect("discovery");
    assert_eq!(discovery["state"], "succeeded", "{discovery}");
    let entities = admin.all_entities("").await.expect("entities");
    assert_eq!(
        kinds(&entities),
        expected.kinds(),
        "one entity per mailbox, OneDrive and site"
    );
    assert!(entities.iter().all(|e| e["status"] == "discovered"));
    for guest in &expected.without_mailbox {
        assert!(
            !entities
                .iter()
                .any(|e| e["kind"] == "mailbox" && e["source_id"] == guest.as_str()),
            "user {guest} has no mailbox"
        );
    }
    for user in &expected.without_onedrive {
        assert!(
            !entities
                .iter()
                .any(|e| e["kind"] == "onedrive" && e["details"]["owner_user_id"] == user.as_str())
        );
    }
    let shared = entities
        .iter()
        .filter(|e| e["details"]["mailbox_type"] == "shared")
        .count();
    assert_eq!(shared, expected.shared_mailboxes, "shared mailboxes are mailboxes too");
    let (_, page) = admin.get("/v1/entities?kind=site&limit=1").await.expect("page");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert!(page["next_cursor"].is_string() || expected.kinds().get("site") == Some(&1));

    // Activate all, pause one, resume it.
    let (status, result) = admin
        .post("/v1/entities/activate-all", json!({}))
        .await
        .expect("activate all");
    assert_eq!(
        (status, result["activated"].as_u64()),
        (200, Some(entities.len() as u64))
    );
    let active = admin.all_entities("&status=active").await.expect("active");
    assert_eq!(active.len(), entities.len());
    let one = active[0]["id"].as_str().expect("id").to_string();
    let (status, paused) = admin
        .post(&format!("/v1/entities/{one}/pause"), json!({}))
        .await
        .expect("pause");
    assert_eq!((status, paused["status"].as_str()), (200, Some("paused")));
    assert_eq!(admin.all_entities("&status=paused").await.expect("paused").len(), 1);
    let (status, body) = admin
        .post(&format!("/v1/entities/{one}/resume"), json!({}))
        .await
        .expect("resume");
    assert_eq!((status, body["status"].as_str()), (200, Some("active")));
    let (status, body) = admin
        .post(&format!("/v1/entities/{one}/resume"), json!({}))
        .await
        .expect("resume again");
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("active")),
        "resuming an active entity changes nothing"
    );
    assert_eq!(
        admin
            .post("/v1/entities/ent_nope/pause", json!({}))
            .await
            .expect("pause")
            .0,
        404
    );

    // The activity log tells the discovery.
    let (_, activity) = admin.get("/v1/activity").await.expect("activity");
    let items = activity["items"].as_array().expect("items");
    assert!(
        items
            .iter()
            .any(|a| a["kind"] == "discovery" && a["status"] == "succeeded"),
        "{activity}"
    );

    // Discovery on request: queued, then done again; nothing new.
    let (status, queued) = admin
        .post(&format!("/v1/connections/{conn_id}/discover"), json!({}))
        .await
        .expect("discover");
    assert_eq!((status, queued["state"].as_str()), (202, Some("queued")), "{queued}");
    let again = admin
        .wait_discovery_after(
            &conn_id,
            queued["request_id"].as_str().expect("request id"),
            Duration::from_secs(120),
        )
        .await
        .expect("discovery");
    assert_eq!(
        (again["state"].as_str(), again["result"]["new"].as_u64()),
        (Some("succeeded"), Some(0)),
        "{again}"
    );

    // Deleting the connection keeps the entities (their data stays) but pauses the active ones.
    assert_eq!(
        admin
            .delete(&format!("/v1/connections/{conn_id}"))
            .await
            .expect("delete")
            .0,
        204
    );
    assert_eq!(
        admin.get(&format!("/v1/connections/{conn_id}")).await.expect("get").0,
        404
    );
    let after = admin.all_entities("").await.expect("entities");
    assert_eq!(after.len(), entities.len());
    assert!(
        after.iter().all(|e| e["status"] == "paused"),
        "active entities are paused"
    );

    // The OpenAPI document is served.
    let (status, doc) = api.get("/v1/openapi.json").await.expect("openapi");
    assert_eq!(status, 200);
    assert!(doc["paths"]["/v1/connections"].is_object());

    // Sign-out ends the session.
    assert_eq!(admin.delete("/v1/sessions/current").await.expect("sign out").0, 204);
    assert_eq!(admin.get("/v1/me").await.expect("me").0, 401);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repeated_failures_lock_sign_in_and_sessions_expire() {
    let mut opts = WorldOptions::new(fake_m365::Tenant::small_demo());
    opts.env.insert("SIGNIN_MAX_FAILURES".into(), "3".into());
    opts.env.insert("SESSION_TTL_SECS".into(), "2".into());
    let world = World::start(opts).await.expect("world");
    let admin = world
        .sign_up("Contoso", "owner@contoso.test", PASSWORD, None)
        .await
        .expect("sign up");
    assert_eq!(admin.get("/v1/me").await.expect("me").0, 200);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (status, body) = admin.get("/v1/me").await.expect("me");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("session_expired")),
        "sessions expire"
    );

    for _ in 0..3 {
        let (status, _) = world
            .api
            .post(
                "/v1/sessions",
                json!({"email": "owner@contoso.test", "password": "wrong password!"}),
            )
            .await
            .expect("sign in");
        assert_eq!(status, 401);
    }
    let (status, body) = world
        .api
        .post(
            "/v1/sessions",
            json!({"email": "owner@contoso.test", "password": PASSWORD}),
        )
        .await
        .expect("sign in");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("signin_locked")),
        "locked, even with the right password"
    );
    world.stop().await;
}
