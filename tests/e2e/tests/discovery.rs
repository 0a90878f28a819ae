//! Discovery through the queue: a redelivered message changes nothing, the
//! schedule discovers every connection, vanished users go `gone`, new users
//! are activated when the account says so.

use serde_json::{Value, json};
use strata_e2e::{World, WorldOptions};

async fn send(world: &World, body: &Value) {
    let url = world.stack.physical_id("DiscoveryQueue").expect("queue").to_string();
    let sqs = aws_sdk_sqs::Client::new(&world.stack.sdk_config());
    sqs.send_message()
        .queue_url(url)
        .message_body(body.to_string())
        .send()
        .await
        .expect("send");
}

fn by_id(entities: Vec<Value>) -> std::collections::BTreeMap<String, Value> {
    entities
        .into_iter()
        .map(|e| (e["id"].as_str().unwrap_or_default().to_string(), e))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivered_discovery_message_changes_nothing() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let onboarded = world.onboard().await.expect("onboard");
    let (admin, conn_id, done) = (onboarded.admin, onboarded.connection_id, onboarded.discovery);
    let before = by_id(admin.all_entities("").await.expect("entities"));
    let (_, activity_before) = admin.get("/v1/activity").await.expect("activity");
    let requests_before = world.fake.requests().len();

    // The same message, delivered twice more (SQS is at-least-once).
    let message = json!({
        "type": "connection",
        "account_id": onboarded.account_id,
        "connection_id": conn_id,
        "request_id": done["request_id"],
    });
    send(&world, &message).await;
    send(&world, &message).await;
    world.settle().await.expect("settle");

    assert_eq!(
        by_id(admin.all_entities("").await.expect("entities")),
        before,
        "entities unchanged, timestamps included"
    );
    assert_eq!(
        admin.get("/v1/activity").await.expect("activity").1,
        activity_before,
        "no second activity record"
    );
    assert_eq!(
        world.fake.requests().len(),
        requests_before,
        "the tenant was not asked again"
    );
    let (_, after) = admin
        .get(&format!("/v1/connections/{conn_id}/discovery"))
        .await
        .expect("status");
    assert_eq!(after, done);
    world.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_schedule_discovers_every_connection_and_vanished_users_go_gone() {
    let world = World::start(WorldOptions::new(fake_m365::Tenant::small_demo()))
        .await
        .expect("world");
    let admin = world.onboard().await.expect("onboard").admin;
    let (status, _) = admin
        .patch("/v1/account", json!({"auto_activate": true}))
        .await
        .expect("settings");
    assert_eq!(status, 200);
    admin
        .post("/v1/entities/activate-all", json!({}))
        .await
        .expect("activate all");

    // A user leaves, another arrives; the daily schedule runs.
    let mailboxes = admin.all_entities("&kind=mailbox").await.expect("mailboxes");
    let leaving = mailboxes[0]["source_id"].as_str().expect("source id").to_string();
    world.fake.remove_user(&leaving);
    let newcomer = strata_e2e::new_licensed_user("newcomer");
    let newcomer_id = newcomer.id.clone();
    world.fake.add_user(newcomer);
    let (_, activity_before) = admin.get("/v1/activity").await.expect("activity");
    let discoveries = |activity: &Value| {
        activity["items"]
            .as_array()
            .map(|items| items.iter().filter(|a| a["kind"] == "discovery").count())
            .unwrap_or_default()
    };
    let before = discoveries(&activity_before);
    world.stack.fire("DiscoverySchedule").await.expect("fire the schedule");
    world.settle().await.expect("settle");

    let entities = admin.all_entities("").await.expect("entities");
    let gone: Vec<&Value> = entities.iter().filter(|e| e["status"] == "gone").collect();
    assert!(
        gone.iter()
            .any(|e| e["kind"] == "mailbox" && e["source_id"] == leaving.as_str()),
        "the leaver's mailbox is gone"
    );
    assert!(
        gone.iter()
            .all(|e| e["gone_at"].is_string() && e["status_before_gone"] == "active")
    );
    let newcomer_mailbox = entities
        .iter()
        .find(|e| e["kind"] == "mailbox" && e["source_id"] == newcomer_id.as_str())
        .expect("newcomer found");
    assert_eq!(newcomer_mailbox["status"], "active", "auto-activated");
    let (_, activity) = admin.get("/v1/activity").await.expect("activity");
    assert_eq!(discoveries(&activity), before + 1, "one discovery run per connection");
    let backups = activity["items"]
        .as_array()
        .map(|items| items.iter().filter(|a| a["kind"] == "backup").count());
    let active_mailboxes = entities
        .iter()
        .filter(|e| e["kind"] == "mailbox" && e["status"] == "active")
        .count();
    assert_eq!(
        backups,
        Some(active_mailboxes),
        "the daily run backs up every active mailbox"
    );

    // A gone entity cannot be activated, but it is still listed (its data stays).
    let gone_id = gone[0]["id"].as_str().expect("id");
    let (status, body) = admin
        .post(&format!("/v1/entities/{gone_id}/activate"), json!({}))
        .await
        .expect("activate");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("invalid_transition"))
    );
    world.stop().await;
}
