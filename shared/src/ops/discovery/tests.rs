use super::*;
use crate::model::{Account, Service};
use crate::source::{DirectoryDrive, DirectorySite, SourceStats};
use crate::state::{EntityFilter, MemoryItems};
use async_trait::async_trait;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct FakeDirectory {
    users: Mutex<Vec<DirectoryUser>>,
    mailboxes: Mutex<HashSet<String>>,
    drives: Mutex<HashSet<String>>,
    failing: Mutex<HashSet<String>>,
    sites: Mutex<Vec<DirectorySite>>,
}

impl FakeDirectory {
    fn user(&self, id: &str, mailbox: bool, drive: bool, guest: bool) {
        self.users.lock().expect("lock").push(DirectoryUser {
            id: id.into(),
            user_principal_name: format!("{id}@contoso.test"),
            mail: Some(format!("{id}@contoso.test")),
            display_name: id.to_uppercase(),
            account_enabled: true,
            guest,
            exchange_licensed: mailbox,
        });
        if mailbox {
            self.mailboxes.lock().expect("lock").insert(id.into());
        }
        if drive {
            self.drives.lock().expect("lock").insert(id.into());
        }
    }
    fn remove(&self, id: &str) {
        self.users.lock().expect("lock").retain(|u| u.id != id);
    }
}

#[async_trait]
impl Directory for FakeDirectory {
    async fn verify(&self) -> Result<(), SourceError> {
        Ok(())
    }
    async fn users(&self) -> Result<Vec<DirectoryUser>, SourceError> {
        Ok(self.users.lock().expect("lock").clone())
    }
    async fn has_mailbox(&self, user_id: &str) -> Result<bool, SourceError> {
        if self.failing.lock().expect("lock").contains(user_id) {
            return Err(SourceError::Unavailable("503".into()));
        }
        Ok(self.mailboxes.lock().expect("lock").contains(user_id))
    }
    async fn drive_of(&self, user_id: &str) -> Result<Option<DirectoryDrive>, SourceError> {
        Ok(self
            .drives
            .lock()
            .expect("lock")
            .contains(user_id)
            .then(|| DirectoryDrive {
                id: format!("drive-{user_id}"),
                name: "OneDrive".into(),
                web_url: None,
            }))
    }
    async fn sites(&self) -> Result<Vec<DirectorySite>, SourceError> {
        Ok(self.sites.lock().expect("lock").clone())
    }
    fn stats(&self) -> SourceStats {
        SourceStats::default()
    }
}

async fn setup(auto_activate: bool) -> (State, Connection) {
    let state = State::new(Arc::new(MemoryItems::new()));
    let account = Account {
        id: AccountId("acct_1".into()),
        auto_activate,
        ..Account::new("Contoso")
    };
    let owner = crate::model::Admin {
        id: crate::model::AdminId("adm_1".into()),
        account_id: account.id.clone(),
        email: "owner@contoso.test".into(),
        display_name: "Owner".into(),
        role: crate::model::Role::Owner,
        permissions: Vec::new(),
        status: Default::default(),
        totp_enabled: false,
        created_at: Utc::now(),
        invited_by: None,
        last_sign_in_at: None,
    };
    state
        .create_account(&account, &owner, &Default::default())
        .await
        .expect("account");
    let connection = Connection {
        id: ConnectionId("conn_1".into()),
        account_id: account.id.clone(),
        service: Service::M365,
        display_name: "Contoso".into(),
        tenant_id: "t".into(),
        client_id: "c".into(),
        client_secret_sealed: "sealed".into(),
        login_url: "https://login.test".into(),
        graph_url: "https://graph.test".into(),
        created_at: Utc::now(),
        discovery: Default::default(),
    };
    state.put_connection(&connection).await.expect("connection");
    (state, connection)
}

async fn all(state: &State, connection: &Connection) -> Vec<Entity> {
    state
        .entities(&connection.account_id, &EntityFilter::default(), 1000, None)
        .await
        .expect("entities")
        .items
}

fn directory() -> FakeDirectory {
    let d = FakeDirectory::default();
    d.user("alice", true, true, false);
    d.user("bob", true, false, false);
    d.user("guest", false, false, true);
    d.user("nolicence", false, false, false);
    d.sites.lock().expect("lock").push(DirectorySite {
        id: "site-1".into(),
        display_name: "Intranet".into(),
        web_url: None,
    });
    d
}

#[tokio::test]
async fn discovery_finds_each_kind_and_records_the_run() {
    let (state, connection) = setup(false).await;
    let d = directory();
    let counts = discover(&state, &d, &connection, "r1").await.expect("discover");
    assert_eq!(
        (
            counts.users,
            counts.mailboxes,
            counts.onedrives,
            counts.sites,
            counts.new
        ),
        (4, 2, 1, 1, 4)
    );
    let entities = all(&state, &connection).await;
    assert_eq!(entities.len(), 4);
    assert!(entities.iter().all(|e| e.status == EntityStatus::Discovered));
    let conn = state
        .connection(&connection.account_id, &connection.id)
        .await
        .expect("get")
        .expect("conn");
    assert_eq!(conn.discovery.state, DiscoveryState::Succeeded);
    assert_eq!((conn.discovery.users_done, conn.discovery.users_total), (4, 4));
    let (activity, _) = state
        .activities(&connection.account_id, &Default::default(), 10, None)
        .await
        .expect("activity");
    assert_eq!(activity.len(), 1);
    assert_eq!(activity[0].kind, "discovery");
}

#[tokio::test]
async fn second_discovery_changes_nothing_and_vanished_users_go_gone() {
    let (state, connection) = setup(true).await;
    let d = directory();
    let first = discover(&state, &d, &connection, "r1").await.expect("discover");
    assert_eq!(first.activated, 4, "auto-activate activates new entities");
    let again = discover(&state, &d, &connection, "r2").await.expect("discover");
    assert_eq!((again.new, again.updated, again.unchanged, again.gone), (0, 0, 4, 0));
    d.remove("alice");
    let third = discover(&state, &d, &connection, "r3").await.expect("discover");
    assert_eq!(third.gone, 2, "alice's mailbox and OneDrive are gone");
    let gone: Vec<_> = all(&state, &connection)
        .await
        .into_iter()
        .filter(|e| e.status == EntityStatus::Gone)
        .collect();
    assert_eq!(gone.len(), 2);
    assert!(gone.iter().all(|e| e.status_before_gone == Some(EntityStatus::Active)));
    d.user("alice", true, true, false);
    let back = discover(&state, &d, &connection, "r4").await.expect("discover");
    assert_eq!((back.new, back.updated), (0, 2));
    assert!(
        all(&state, &connection)
            .await
            .iter()
            .all(|e| e.status == EntityStatus::Active),
        "a returning user gets its status back"
    );
}

#[tokio::test]
async fn a_user_that_cannot_be_probed_is_left_as_it_was() {
    let (state, connection) = setup(false).await;
    let d = directory();
    discover(&state, &d, &connection, "r1").await.expect("discover");
    d.failing.lock().expect("lock").insert("bob".into());
    let counts = discover(&state, &d, &connection, "r2").await.expect("discover");
    assert_eq!(
        (counts.undetermined, counts.gone),
        (1, 0),
        "no false deletion when a probe fails"
    );
    let bob = all(&state, &connection)
        .await
        .into_iter()
        .find(|e| e.source_id == "bob")
        .expect("bob");
    assert_eq!(bob.status, EntityStatus::Discovered);
}
