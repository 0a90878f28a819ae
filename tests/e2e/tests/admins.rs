//! Admins, roles, permissions, API keys, account settings, billing and the
//! audit log, through the local stack's HTTP API (issue 5): every route
//! against every role and key; password changes end other sessions; "2FA
//! required" leaves nothing but its set-up; the billing projection and the
//! stored bytes; every action once in the audit log.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use strata::api::access::{Access, POLICIES};
use strata::model::{Permission, Role};
use strata_e2e::{Api, World, WorldOptions, totp_code};

const PASSWORD: &str = "correct horse battery staple";
const OWNER: &str = "owner@contoso.test";

async fn world() -> World {
    World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world")
}

/// The token of the last invitation e-mailed to `email`, read back from the emulator's sent mail.
async fn invitation_token(world: &World, email: &str) -> String {
    let mail = world.sent_mail().await.expect("sent mail");
    let message = mail
        .iter()
        .rev()
        .find(|m| m.to.iter().any(|t| t == email) && m.subject.contains("invited"))
        .unwrap_or_else(|| panic!("no invitation to {email} in {mail:?}"));
    let body = format!("{} {}", message.text, message.html);
    body.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .find(|w| w.len() == 43)
        .unwrap_or_else(|| panic!("no token in {body}"))
        .to_string()
}

/// Invites an admin with a role, accepts the e-mailed invitation, signs in.
async fn admin_with_role(world: &World, owner: &Api, email: &str, role: &str) -> (Api, String) {
    let (status, invited) = owner
        .post("/v1/admins", json!({"email": email, "role": role}))
        .await
        .expect("invite");
    assert_eq!(status, 201, "{invited}");
    let id = invited["admin"]["id"].as_str().expect("id").to_string();
    let (status, body) = world
        .api
        .post("/v1/sessions", json!({"email": email, "password": PASSWORD}))
        .await
        .expect("sign in");
    assert_eq!(status, 401, "an invited admin cannot sign in before accepting: {body}");
    let token = invitation_token(world, email).await;
    let (status, body) = world
        .api
        .post(
            "/v1/invitations/accept",
            json!({"email": email, "token": "x".repeat(43), "password": PASSWORD}),
        )
        .await
        .expect("accept");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_invitation"))
    );
    let (status, accepted) = world
        .api
        .post(
            "/v1/invitations/accept",
            json!({"email": email, "token": token, "password": PASSWORD}),
        )
        .await
        .expect("accept");
    assert_eq!(
        (status, accepted["status"].as_str()),
        (200, Some("active")),
        "{accepted}"
    );
    let (status, _) = world
        .api
        .post(
            "/v1/invitations/accept",
            json!({"email": email, "token": token, "password": PASSWORD}),
        )
        .await
        .expect("accept again");
    assert_eq!(status, 400, "an invitation is used once");
    (world.sign_in(email, PASSWORD, None).await.expect("sign in"), id)
}

/// What each role holds, written out here rather than taken from the code under test.
fn holds(role: Role) -> Vec<Permission> {
    use Permission::*;
    match role {
        Role::Owner | Role::Admin => vec![ManageBackups, Restore, Download, Billing, ManageAdmins, Settings],
        Role::Operator => vec![ManageBackups, Restore, Download],
        Role::Viewer => vec![],
    }
}

fn expected_allowed(access: Access, role: Role, is_key: bool) -> bool {
    match access {
        Access::Public | Access::Read => true,
        Access::Own => !is_key,
        Access::Needs(p) => holds(role).contains(&p),
        Access::Owner => role == Role::Owner && !is_key,
    }
}

/// A request to a route with made-up ids and an empty body: what matters is
/// whether the access layer lets it through.
async fn call(api: &Api, method: &str, path: &str) -> (u16, Value) {
    let path = path
        .replace("{id}", "x-none")
        .replace("{snapshot}", "x-none")
        .replace("{account}", "x-none")
        .replace("{job}", "x-none");
    let body = (method != "GET" && method != "DELETE").then(|| json!({}));
    api.request(method, &path, body).await.expect("request")
}

async fn get(api: &Api, path: &str) -> (u16, Value) {
    api.get(path).await.expect("get")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_answers_every_role_and_key_as_its_policy_says() {
    let world = world().await;
    // No connection: "activate all" and "back up all" have nothing to act on.
    let owner = world.sign_up("Contoso", OWNER, PASSWORD, None).await.expect("sign up");
    let (admin, _) = admin_with_role(&world, &owner, "admin@contoso.test", "admin").await;
    let (operator, _) = admin_with_role(&world, &owner, "operator@contoso.test", "operator").await;
    let (viewer, _) = admin_with_role(&world, &owner, "viewer@contoso.test", "viewer").await;
    let mut callers = vec![
        ("owner", Role::Owner, false, owner.clone()),
        ("admin", Role::Admin, false, admin.clone()),
        ("operator", Role::Operator, false, operator.clone()),
        ("viewer", Role::Viewer, false, viewer.clone()),
    ];
    for (name, role) in [
        ("admin", Role::Admin),
        ("operator", Role::Operator),
        ("viewer", Role::Viewer),
    ] {
        let (status, key) = owner
            .post("/v1/api-keys", json!({"name": format!("{name} script"), "role": name}))
            .await
            .expect("key");
        assert_eq!(status, 201, "{key}");
        let secret = key["secret"].as_str().expect("secret").to_string();
        assert!(secret.starts_with("stk_"));
        callers.push((name, role, true, world.api.with_token(secret)));
    }

    let mut checked = 0;
    let mut matrix: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for policy in POLICIES {
        // Signing out ends the caller's session; it is checked last.
        if policy.access == Access::Public || policy.path == "/v1/sessions/current" {
            continue;
        }
        let method = policy.method.as_str();
        for (name, role, is_key, api) in &callers {
            let (status, body) = call(api, method, policy.path).await;
            let denied = status == 403 && body["error"]["code"] == "forbidden";
            let allowed = expected_allowed(policy.access, *role, *is_key);
            assert_eq!(
                !denied,
                allowed,
                "{method} {} as {name}{}: {status} {body}",
                policy.path,
                if *is_key { " key" } else { "" }
            );
            assert_ne!(status, 401, "{method} {} as {name}: {body}", policy.path);
            if !denied {
                matrix
                    .entry(format!("{} {}", method, policy.path))
                    .or_default()
                    .push(format!("{name}{}", if *is_key { "-key" } else { "" }));
            }
            checked += 1;
        }
    }
    let routes = POLICIES
        .iter()
        .filter(|p| p.access != Access::Public && p.path != "/v1/sessions/current")
        .count();
    assert!(routes >= 40, "{routes} routes");
    assert_eq!(checked, routes * callers.len(), "every route against every caller");

    // The cases, spelled out.
    let entity = "/v1/entities/x-none";
    for (method, path, body) in [
        ("POST", format!("{entity}/activate"), json!({})),
        ("POST", format!("{entity}/pause"), json!({})),
        ("POST", "/v1/restores".to_string(), json!({"selections": []})),
        ("POST", "/v1/exports".to_string(), json!({"selections": []})),
        (
            "POST",
            "/v1/admins".to_string(),
            json!({"email": "x@contoso.test", "role": "viewer"}),
        ),
        ("DELETE", "/v1/api-keys/x-none".to_string(), Value::Null),
    ] {
        let body = (method != "DELETE").then_some(body);
        let (status, answer) = viewer.request(method, &path, body).await.expect("viewer");
        assert_eq!(status, 403, "a viewer cannot {method} {path}: {answer}");
    }
    for (method, path, body) in [
        ("GET", "/v1/billing", None),
        (
            "PUT",
            "/v1/billing/prices",
            Some(json!({"currency": "USD", "prices": []})),
        ),
        (
            "POST",
            "/v1/admins",
            Some(json!({"email": "y@contoso.test", "role": "viewer"})),
        ),
        ("PATCH", "/v1/admins/x-none", Some(json!({"role": "viewer"}))),
        ("GET", "/v1/api-keys", None),
        ("GET", "/v1/audit", None),
    ] {
        let (status, answer) = operator.request(method, path, body).await.expect("operator");
        assert_eq!(status, 403, "an operator cannot {method} {path}: {answer}");
    }
    // A method a route does not have is 405, not a policy question.
    let (status, _) = owner.get("/v1/admins/x-none").await.expect("405");
    assert_eq!(status, 405);
    // An operator cannot hand out more than they hold, and nobody a second owner.
    let (status, _) = admin
        .post("/v1/admins", json!({"email": "o2@contoso.test", "role": "owner"}))
        .await
        .expect("owner invite");
    assert_eq!(status, 400);

    // Signing out: every session caller may; a key may not.
    for (name, _, is_key, api) in &callers {
        let (status, body) = api.delete("/v1/sessions/current").await.expect("sign out");
        let expected = if *is_key { 403 } else { 204 };
        assert_eq!(status, expected, "sign out as {name}: {body}");
    }
    let (status, _) = viewer.get("/v1/entities").await.expect("after sign-out");
    assert_eq!(status, 401);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_change_ends_other_sessions_and_required_2fa_leaves_only_its_set_up() {
    let world = world().await;
    let owner = world.sign_up("Contoso", OWNER, PASSWORD, None).await.expect("sign up");
    let other = world.sign_in(OWNER, PASSWORD, None).await.expect("second session");
    let (status, body) = owner
        .post(
            "/v1/me/password",
            json!({"current_password": "wrong password here", "new_password": "a brand new passphrase"}),
        )
        .await
        .expect("change");
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("wrong_password")));
    let (status, changed) = owner
        .post(
            "/v1/me/password",
            json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
        )
        .await
        .expect("change");
    assert_eq!(status, 200, "{changed}");
    for (name, api) in [("the other session", &other), ("the session that changed it", &owner)] {
        let (status, body) = api.get("/v1/me").await.expect("me");
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("session_expired")),
            "{name}"
        );
    }
    let owner = world
        .api
        .with_token(changed["token"].as_str().expect("token").to_string());
    let (status, _) = owner.get("/v1/me").await.expect("me");
    assert_eq!(status, 200, "the new session works");
    assert!(
        world.sign_in(OWNER, PASSWORD, None).await.is_err(),
        "the old password is over"
    );
    let owner = world
        .sign_in(OWNER, "a brand new passphrase", None)
        .await
        .expect("new password");

    // The owner turns 2FA on, then requires it of everyone.
    let (admin, _) = admin_with_role(&world, &owner, "admin@contoso.test", "admin").await;
    let (status, _) = admin
        .request("PUT", "/v1/account/security", Some(json!({"require_2fa": true})))
        .await
        .expect("put");
    assert_eq!(status, 403, "only the owner requires 2FA");
    let (_, setup) = owner.post("/v1/me/totp", json!({})).await.expect("totp");
    let secret = setup["secret_base32"].as_str().expect("secret").to_string();
    let code = totp_code(&secret, OWNER, 0).expect("code");
    let (status, _) = owner
        .post("/v1/me/totp/confirm", json!({"code": code}))
        .await
        .expect("confirm");
    assert_eq!(status, 200);
    let (status, account) = owner
        .request("PUT", "/v1/account/security", Some(json!({"require_2fa": true})))
        .await
        .expect("require");
    assert_eq!(
        (status, account["require_2fa"].as_bool()),
        (200, Some(true)),
        "{account}"
    );

    // The admin without 2FA: nothing but its set-up (seeing who they are, signing out).
    let (status, me) = admin.get("/v1/me").await.expect("me");
    assert_eq!((status, me["totp_enabled"].as_bool()), (200, Some(false)));
    for (method, path) in [
        ("GET", "/v1/entities"),
        ("GET", "/v1/account"),
        ("GET", "/v1/activity"),
        ("GET", "/v1/admins"),
        ("POST", "/v1/connections"),
        ("PATCH", "/v1/account"),
        ("GET", "/v1/jobs"),
        ("PATCH", "/v1/me"),
        ("POST", "/v1/me/password"),
    ] {
        let body = (method != "GET").then(|| json!({}));
        let (status, body) = admin.request(method, path, body).await.expect("blocked");
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("totp_setup_required")),
            "{method} {path}"
        );
    }
    let (status, setup) = admin.post("/v1/me/totp", json!({})).await.expect("totp");
    assert_eq!(status, 200, "{setup}");
    let secret = setup["secret_base32"].as_str().expect("secret").to_string();
    let code = totp_code(&secret, "admin@contoso.test", 0).expect("code");
    let (status, _) = admin
        .post("/v1/me/totp/confirm", json!({"code": code}))
        .await
        .expect("confirm");
    assert_eq!(status, 200);
    let (status, _) = admin.get("/v1/entities").await.expect("entities");
    assert_eq!(status, 200, "with 2FA on, the admin works again");
    // A key is not a person: the requirement does not block it.
    let (_, key) = owner
        .post("/v1/api-keys", json!({"name": "ci", "role": "viewer"}))
        .await
        .expect("key");
    let key_api = world
        .api
        .with_token(key["secret"].as_str().expect("secret").to_string());
    let (status, _) = key_api.get("/v1/entities").await.expect("key");
    assert_eq!(status, 200);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn billing_settings_and_every_action_once_in_the_audit_log() {
    let world = world().await;
    let onboarded = world.onboard().await.expect("onboard");
    let owner = onboarded.admin.clone();
    let account_id = onboarded.account_id.clone();
    let (operator, operator_id) = admin_with_role(&world, &owner, "operator@contoso.test", "operator").await;
    let (helper, helper_id) = admin_with_role(&world, &owner, "helper@contoso.test", "viewer").await;

    // Settings.
    let (status, account) = owner
        .patch(
            "/v1/account",
            json!({"report_mode": "exceptions", "report_hour": 6, "timezone": "Europe/Paris",
                   "notification_addresses": ["Ops@Contoso.test", "it@contoso.test"]}),
        )
        .await
        .expect("settings");
    assert_eq!(status, 200, "{account}");
    assert_eq!(account["report_mode"], "exceptions");
    assert_eq!(account["timezone"], "Europe/Paris");
    assert_eq!(
        account["notification_addresses"],
        json!(["ops@contoso.test", "it@contoso.test"])
    );
    for bad in [
        json!({"timezone": "Mars/Olympus"}),
        json!({"report_hour": 24}),
        json!({"colour": "red"}),
    ] {
        let (status, body) = owner.patch("/v1/account", bad.clone()).await.expect("bad settings");
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, me) = owner
        .patch("/v1/me", json!({"display_name": "The Owner"}))
        .await
        .expect("me");
    assert_eq!((status, me["display_name"].as_str()), (200, Some("The Owner")));
    let (status, body) = owner
        .patch(
            "/v1/me",
            json!({"email": "operator@contoso.test", "current_password": PASSWORD}),
        )
        .await
        .expect("taken");
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("email_taken")));

    // Activation, pause, a backup, a restore, an export and its download.
    let adele = owner
        .entity_id("mailbox", "adele.vance@contoso.onmicrosoft.com")
        .await
        .expect("adele");
    let alex = owner
        .entity_id("mailbox", "alex.wilber@contoso.onmicrosoft.com")
        .await
        .expect("alex");
    let (status, _) = operator
        .post(&format!("/v1/entities/{adele}/activate"), json!({}))
        .await
        .expect("activate");
    assert_eq!(status, 200);
    let (status, _) = operator
        .post(&format!("/v1/entities/{alex}/activate"), json!({}))
        .await
        .expect("activate");
    assert_eq!(status, 200);
    world.back_up(&owner, &adele).await;
    world.settle().await.expect("settle");
    // The activity log by entity, kind, service and status, each run with its counts.
    let (status, runs) = get(
        &owner,
        &format!("/v1/activity?kind=backup&entity_id={adele}&status=ok&service=m365"),
    )
    .await;
    assert_eq!(status, 200, "{runs}");
    let runs = runs["items"].as_array().expect("items").clone();
    assert!(!runs.is_empty());
    for r in &runs {
        assert_eq!(
            (r["kind"].as_str(), r["status"].as_str(), r["service"].as_str()),
            (Some("backup"), Some("ok"), Some("m365"))
        );
        assert_eq!(r["details"]["entity_id"], adele);
        assert!(r["details"]["run"]["added"].as_u64().is_some() && r["details"]["run"]["exceptions"].is_array());
    }
    let (_, failed) = get(&owner, &format!("/v1/activity?entity_id={adele}&status=failed")).await;
    assert_eq!(failed["items"].as_array().map(Vec::len), Some(0));
    let (_, paged) = get(&owner, "/v1/activity?limit=1").await;
    assert!(paged["next_cursor"].is_string(), "{paged}");
    let (status, _) = operator
        .post(&format!("/v1/entities/{alex}/pause"), json!({}))
        .await
        .expect("pause");
    assert_eq!(status, 200);
    let restored = world
        .run_job(
            &operator,
            "/v1/restores",
            json!({"entity_id": adele, "folder_name": "Audit restore"}),
        )
        .await;
    assert_eq!(restored["status"], "done", "{restored}");
    let export = world
        .run_job(&operator, "/v1/exports", json!({"selections": [{"entity_id": adele}]}))
        .await;
    let export_id = export["id"].as_str().expect("id").to_string();
    let (status, link) = operator
        .get(&format!("/v1/jobs/{export_id}/download"))
        .await
        .expect("download");
    assert_eq!(status, 200, "{link}");

    // Billing: the account's price table times its protected entities.
    let (status, _) = operator.get("/v1/billing").await.expect("operator billing");
    assert_eq!(status, 403, "an operator cannot see billing");
    let table = json!({"currency": "EUR", "prices": [
        {"service": "m365", "kind": "mailbox", "active_cents": 275, "paused_cents": 90},
        {"service": "m365", "kind": "onedrive", "active_cents": 150, "paused_cents": 50},
        {"service": "m365", "kind": "site", "active_cents": 400, "paused_cents": 100}]});
    let (status, body) = owner
        .request("PUT", "/v1/billing/prices", Some(table))
        .await
        .expect("prices");
    assert_eq!(status, 200, "{body}");
    let entities = owner.all_entities("").await.expect("entities");
    let count = |kind: &str, status: &str| {
        entities
            .iter()
            .filter(|e| e["kind"] == kind && e["status"] == status)
            .count() as u64
    };
    assert_eq!((count("mailbox", "active"), count("mailbox", "paused")), (1, 1));
    let expected = count("mailbox", "active") * 275
        + count("mailbox", "paused") * 90
        + count("onedrive", "active") * 150
        + count("onedrive", "paused") * 50
        + count("site", "active") * 400
        + count("site", "paused") * 100;
    let (status, bill) = owner.get("/v1/billing").await.expect("billing");
    assert_eq!(status, 200, "{bill}");
    assert_eq!(bill["currency"], "EUR");
    assert_eq!(bill["monthly_cents"].as_u64(), Some(expected), "{bill}");
    assert_eq!(bill["monthly_cents"].as_u64(), Some(275 + 90));
    assert_eq!(bill["price_table_source"], "account");
    // Stored bytes: what the bucket holds under the account, listed through S3 itself.
    let s3 = world.s3().await;
    let bucket = world.stack.physical_id("DataBucket").expect("bucket").to_string();
    let mut listed = (0u64, 0u64);
    for prefix in [format!("{account_id}/"), format!("exports/{account_id}/")] {
        let mut pages = s3
            .list_objects_v2()
            .bucket(&bucket)
            .prefix(&prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.expect("list").contents() {
                listed.0 += u64::try_from(o.size().unwrap_or(0)).expect("size");
                listed.1 += 1;
            }
        }
    }
    assert!(listed.0 > 0);
    assert_eq!(bill["storage"]["total_bytes"].as_u64(), Some(listed.0), "{bill}");
    assert_eq!(
        bill["storage"]["repository_objects"].as_u64().unwrap_or(0)
            + bill["storage"]["export_objects"].as_u64().unwrap_or(0),
        listed.1
    );

    // Admins: a change, a suspension, a removal; keys: a creation, a revocation.
    let (status, changed) = owner
        .patch(
            &format!("/v1/admins/{helper_id}"),
            json!({"role": "operator", "permissions": ["restore"]}),
        )
        .await
        .expect("change");
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["permissions"], json!(["restore"]));
    let (status, _) = helper.post("/v1/restores", json!({})).await.expect("now may restore");
    assert_ne!(status, 403);
    let (status, _) = helper
        .post(&format!("/v1/entities/{alex}/resume"), json!({}))
        .await
        .expect("resume");
    assert_eq!(status, 403, "restore only, not manage backups");
    let (status, _) = owner
        .patch(&format!("/v1/admins/{operator_id}"), json!({"status": "suspended"}))
        .await
        .expect("suspend");
    assert_eq!(status, 200);
    let (status, body) = operator.get("/v1/entities").await.expect("suspended");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("admin_suspended")));
    let (status, body) = world
        .api
        .post(
            "/v1/sessions",
            json!({"email": "operator@contoso.test", "password": PASSWORD}),
        )
        .await
        .expect("suspended sign-in");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("admin_suspended")));
    let (status, _) = owner.delete(&format!("/v1/admins/{helper_id}")).await.expect("remove");
    assert_eq!(status, 204);
    let (status, _) = helper.get("/v1/entities").await.expect("removed");
    assert_eq!(status, 401, "a removed admin's session ends");
    let (status, key) = owner
        .post("/v1/api-keys", json!({"name": "nightly script", "role": "viewer"}))
        .await
        .expect("key");
    assert_eq!(status, 201);
    let key_id = key["key"]["id"].as_str().expect("id").to_string();
    let key_api = world
        .api
        .with_token(key["secret"].as_str().expect("secret").to_string());
    let (status, _) = key_api.get("/v1/entities").await.expect("key use");
    assert_eq!(status, 200);
    let (_, keys) = owner.get("/v1/api-keys").await.expect("keys");
    let listed_key = keys["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|k| k["id"] == key_id)
        .expect("listed")
        .clone();
    assert!(listed_key["last_used_at"].is_string(), "{listed_key}");
    assert!(listed_key.get("secret").is_none() && !keys.to_string().contains(key["secret"].as_str().expect("s")));
    let (status, _) = owner.delete(&format!("/v1/api-keys/{key_id}")).await.expect("revoke");
    assert_eq!(status, 200);
    let (status, body) = key_api.get("/v1/entities").await.expect("revoked");
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("api_key_revoked")));
    // A failed sign-in.
    let (status, _) = world
        .api
        .post("/v1/sessions", json!({"email": OWNER, "password": "not the password"}))
        .await
        .expect("failed sign-in");
    assert_eq!(status, 401);

    // The audit log: every action once, with who and from where.
    let (status, log) = owner.get("/v1/audit?limit=500").await.expect("audit");
    assert_eq!(status, 200, "{log}");
    let records = log["items"].as_array().expect("items").clone();
    let successes = |action: &str| {
        records
            .iter()
            .filter(|r| r["action"] == action && r["outcome"] == "success")
            .cloned()
            .collect::<Vec<_>>()
    };
    for action in [
        "signup",
        "settings_change",
        "profile_change",
        "price_table_change",
        "restore",
        "export",
        "download",
        "pause",
        "admin_remove",
        "api_key_create",
        "api_key_revoke",
    ] {
        assert_eq!(successes(action).len(), 1, "{action} once: {:#?}", successes(action));
    }
    assert_eq!(successes("activate").len(), 2, "two activations");
    assert_eq!(successes("admin_invite").len(), 2);
    assert_eq!(successes("admin_change").len(), 2, "a role change and a suspension");
    assert_eq!(successes("invitation_accept").len(), 2);
    let activation = &successes("activate")[0];
    assert_eq!(activation["actor"]["email"], "operator@contoso.test");
    assert_eq!(activation["ip"], "127.0.0.1");
    assert!(activation["target"] == adele || activation["target"] == alex);
    let settings = &successes("settings_change")[0];
    assert_eq!(settings["actor"]["email"], OWNER);
    assert_eq!(
        settings["details"]["changed"],
        json!(["report_mode", "report_hour", "timezone", "notification_addresses"])
    );
    // Sign-ins: the owner's (onboarding), and each invited admin's; one failure.
    let signins = successes("sign_in");
    assert_eq!(signins.len(), 3, "{signins:#?}");
    let failures: Vec<_> = records
        .iter()
        .filter(|r| r["action"] == "sign_in" && r["outcome"] == "failure")
        .collect();
    assert_eq!(
        failures.len(),
        4,
        "a wrong password, two invited admins before accepting, the suspended admin: {failures:#?}"
    );
    assert!(
        failures
            .iter()
            .any(|f| f["details"]["reason"] == "invalid_credentials" && f["actor"]["email"] == OWNER)
    );
    // Filters.
    let (_, only) = owner.get("/v1/audit?action=pause").await.expect("filter");
    assert_eq!(only["items"].as_array().map(Vec::len), Some(1));
    let (_, by_target) = owner
        .get(&format!("/v1/audit?target={alex}&outcome=success"))
        .await
        .expect("filter");
    let actions: Vec<_> = by_target["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["action"].clone())
        .collect();
    assert_eq!(actions, vec![json!("pause"), json!("activate")]);
    world.stop().await;
}
