//! Typed control-plane operations over an [`ItemStore`]. Every key of account
//! data starts with `ACCT#<account id>`: a query can only see one account.

use super::items::{Cursor, Item, ItemStore, PutCondition, Query, StoreError};
use crate::model::{
    Account, AccountId, Activity, Admin, AdminId, AdminSecrets, ApiKey, ApiKeyId, AuditRecord, Connection,
    ConnectionId, Entity, EntityId, EntityKind, EntityStatus, Job, JobId,
};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Errors of the typed store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("an admin with this e-mail address already exists")]
    EmailTaken,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("the item changed under us too often; try again")]
    Contended,
}

impl StateError {
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => e.is_retryable(),
            Self::Contended => true,
            _ => false,
        }
    }
}

/// An admin's session, stored under the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub account_id: AccountId,
    pub admin_id: AdminId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The admin's session generation when it was made: an older one is over.
    #[serde(default)]
    pub generation: u64,
    /// The client's address at sign-in.
    #[serde(default)]
    pub ip: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct AdminRecord {
    admin: Admin,
    secrets: AdminSecrets,
}

#[derive(Serialize, Deserialize)]
struct EmailClaim {
    account_id: AccountId,
    admin_id: AdminId,
}

#[derive(Serialize, Deserialize)]
struct RequestMarker {
    done: bool,
    lease_until: DateTime<Utc>,
}

/// A pending purge confirmation (`PURGE#<entity>`): the token itself is never stored.
#[derive(Serialize, Deserialize)]
struct PurgeConfirmation {
    token_sha256: String,
    expires_at: DateTime<Utc>,
}

/// What [`State::claim_request`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClaim {
    /// Ours to run now.
    Claimed,
    /// Already done: a redelivery, nothing to do.
    AlreadyDone,
    /// Being run by someone else, whose lease has not expired.
    Busy,
}

/// Filters of the entity list.
#[derive(Debug, Clone, Default)]
pub struct EntityFilter {
    pub kind: Option<EntityKind>,
    pub status: Option<EntityStatus>,
    pub connection_id: Option<ConnectionId>,
}

impl EntityFilter {
    fn matches(&self, e: &Entity) -> bool {
        self.kind.is_none_or(|k| e.kind == k)
            && self.status.is_none_or(|s| e.status == s)
            && self.connection_id.as_ref().is_none_or(|c| e.connection_id == *c)
    }
}

/// Filters of the activity log.
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    /// `discovery`, `backup`, ...
    pub kind: Option<String>,
    pub entity_id: Option<EntityId>,
    pub day: Option<chrono::NaiveDate>,
    /// `ok`, `partial`, `failed`, ...
    pub status: Option<String>,
    pub service: Option<crate::model::Service>,
}

impl ActivityFilter {
    fn matches(&self, a: &Activity) -> bool {
        self.kind.as_ref().is_none_or(|k| a.kind == *k)
            && self.status.as_ref().is_none_or(|s| a.status == *s)
            && self.service.is_none_or(|s| a.service.is_none_or(|own| own == s))
            && self
                .entity_id
                .as_ref()
                .is_none_or(|e| a.details.get("entity_id").and_then(|v| v.as_str()) == Some(e.as_str()))
    }
}

/// Filters of the audit log.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub action: Option<String>,
    /// An admin or API key id.
    pub actor: Option<String>,
    pub outcome: Option<String>,
    pub target: Option<String>,
    pub day: Option<chrono::NaiveDate>,
}

impl AuditFilter {
    fn matches(&self, r: &AuditRecord) -> bool {
        let actor = match &r.actor {
            crate::model::Actor::Admin { admin_id, .. } => Some(admin_id.as_str()),
            crate::model::Actor::ApiKey { key_id, .. } => Some(key_id.as_str()),
            crate::model::Actor::Anonymous { .. } => None,
        };
        self.action.as_ref().is_none_or(|a| r.action == *a)
            && self.actor.as_ref().is_none_or(|a| actor == Some(a.as_str()))
            && self.outcome.as_ref().is_none_or(|o| r.outcome == *o)
            && self
                .target
                .as_ref()
                .is_none_or(|t| r.target.as_deref() == Some(t.as_str()))
    }
}

/// One page of entities and the opaque cursor of the next.
#[derive(Debug, Clone)]
pub struct EntityPage {
    pub items: Vec<Entity>,
    pub next: Option<String>,
}

fn acct(a: &AccountId) -> String {
    format!("ACCT#{a}")
}

const UPDATE_ATTEMPTS: usize = 8;

/// The control-plane store.
#[derive(Clone)]
pub struct State {
    items: Arc<dyn ItemStore>,
}

impl State {
    pub fn new(items: Arc<dyn ItemStore>) -> Self {
        Self { items }
    }

    pub fn items(&self) -> &Arc<dyn ItemStore> {
        &self.items
    }

    fn encode<T: Serialize>(value: &T) -> serde_json::Value {
        // Domain types are plain data: serializing them cannot fail.
        serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
    }

    // ----- accounts and admins -----

    /// Creates an account with its owner, atomically; the e-mail address must be free.
    pub async fn create_account(
        &self,
        account: &Account,
        owner: &Admin,
        secrets: &AdminSecrets,
    ) -> Result<(), StateError> {
        let [claim, record] = Self::admin_items(owner, secrets, PutCondition::NotExists);
        let account_item =
            Item::new(acct(&account.id), "ACCOUNT", Self::encode(account)).with_index("ACCOUNTS", account.id.as_str());
        Self::email_unique(
            self.items
                .put_all(vec![claim, (account_item, PutCondition::NotExists), record])
                .await,
        )
    }

    /// The two items of an admin: the claim of their (lowercased) e-mail
    /// address, which must be free, and their record under `condition`.
    fn admin_items(admin: &Admin, secrets: &AdminSecrets, condition: PutCondition) -> [(Item, PutCondition); 2] {
        let claim = EmailClaim {
            account_id: admin.account_id.clone(),
            admin_id: admin.id.clone(),
        };
        let record = AdminRecord {
            admin: admin.clone(),
            secrets: secrets.clone(),
        };
        [
            (
                Item::new(
                    format!("EMAIL#{}", admin.email.to_lowercase()),
                    "EMAIL",
                    Self::encode(&claim),
                ),
                PutCondition::NotExists,
            ),
            (
                Item::new(
                    acct(&admin.account_id),
                    format!("ADMIN#{}", admin.id),
                    Self::encode(&record),
                ),
                condition,
            ),
        ]
    }

    /// A failed claim of an e-mail address is [`StateError::EmailTaken`];
    /// any other failed condition, [`StateError::Contended`].
    fn email_unique(result: Result<(), StoreError>) -> Result<(), StateError> {
        match result {
            Err(StoreError::ConditionFailed { pk, .. }) if pk.starts_with("EMAIL#") => Err(StateError::EmailTaken),
            Err(StoreError::ConditionFailed { .. }) => Err(StateError::Contended),
            other => Ok(other?),
        }
    }

    /// Marks the one-time bootstrap token used; false if it already was.
    pub async fn claim_bootstrap(&self, account_id: &AccountId) -> Result<bool, StateError> {
        let item = Item::new(
            "BOOTSTRAP",
            "BOOTSTRAP",
            serde_json::json!({ "account_id": account_id, "at": Utc::now() }),
        );
        match self.items.put(item, PutCondition::NotExists).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the bootstrap token back (the account it was claimed for could not be created).
    pub async fn release_bootstrap(&self) -> Result<(), StateError> {
        Ok(self.items.delete("BOOTSTRAP", "BOOTSTRAP").await?)
    }

    pub async fn account(&self, id: &AccountId) -> Result<Option<Account>, StateError> {
        Ok(self
            .items
            .get(&acct(id), "ACCOUNT")
            .await?
            .map(|i| i.decode())
            .transpose()?)
    }

    /// Every account of the deployment (the daily report's fan-out).
    pub async fn all_accounts(&self) -> Result<Vec<Account>, StateError> {
        self.query_all(Query::gsi1("ACCOUNTS")).await
    }

    /// Changes an account's settings (read, modify, conditional write).
    pub async fn update_account(&self, id: &AccountId, change: impl Fn(&mut Account)) -> Result<Account, StateError> {
        self.update(&acct(id), "ACCOUNT", "account", |a: &mut Account| {
            change(a);
            true
        })
        .await
    }

    /// The admin signing in with this address, with their secrets and record version.
    pub async fn admin_by_email(&self, email: &str) -> Result<Option<(Admin, AdminSecrets, u64)>, StateError> {
        let Some(claim) = self
            .items
            .get(&format!("EMAIL#{}", email.to_lowercase()), "EMAIL")
            .await?
        else {
            return Ok(None);
        };
        let claim: EmailClaim = claim.decode()?;
        self.admin(&claim.account_id, &claim.admin_id).await
    }

    pub async fn admin(
        &self,
        account: &AccountId,
        id: &AdminId,
    ) -> Result<Option<(Admin, AdminSecrets, u64)>, StateError> {
        let Some(item) = self.items.get(&acct(account), &format!("ADMIN#{id}")).await? else {
            return Ok(None);
        };
        let record: AdminRecord = item.decode()?;
        Ok(Some((record.admin, record.secrets, item.version)))
    }

    /// Every admin of the account (invited and suspended ones too), oldest first.
    pub async fn admins(&self, account: &AccountId) -> Result<Vec<Admin>, StateError> {
        let records: Vec<AdminRecord> = self.query_all(Query::partition(acct(account)).prefix("ADMIN#")).await?;
        let mut admins: Vec<Admin> = records.into_iter().map(|r| r.admin).collect();
        admins.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        Ok(admins)
    }

    /// Writes an admin back if nobody changed it since `version` was read.
    pub async fn save_admin(&self, admin: &Admin, secrets: &AdminSecrets, version: u64) -> Result<(), StateError> {
        let record = AdminRecord {
            admin: admin.clone(),
            secrets: secrets.clone(),
        };
        let item = Item::new(
            acct(&admin.account_id),
            format!("ADMIN#{}", admin.id),
            Self::encode(&record),
        );
        match self.items.put(item, PutCondition::Version(version)).await {
            Err(StoreError::ConditionFailed { .. }) => Err(StateError::Contended),
            other => Ok(other?),
        }
    }

    /// Adds an invited admin: the e-mail address must be free.
    pub async fn create_admin(&self, admin: &Admin, secrets: &AdminSecrets) -> Result<(), StateError> {
        let items = Self::admin_items(admin, secrets, PutCondition::NotExists);
        Self::email_unique(self.items.put_all(items.into()).await)
    }

    /// Changes an admin's e-mail address: the new one is claimed with the
    /// admin's write in one transaction, then the old claim is let go.
    pub async fn change_admin_email(
        &self,
        admin: &Admin,
        secrets: &AdminSecrets,
        version: u64,
        old_email: &str,
    ) -> Result<(), StateError> {
        let items = Self::admin_items(admin, secrets, PutCondition::Version(version));
        Self::email_unique(self.items.put_all(items.into()).await)?;
        Ok(self
            .items
            .delete(&format!("EMAIL#{}", old_email.to_lowercase()), "EMAIL")
            .await?)
    }

    /// Removes an admin and frees their e-mail address; their sessions end
    /// with them (a session's admin must exist).
    pub async fn delete_admin(&self, admin: &Admin) -> Result<(), StateError> {
        self.items
            .delete(&acct(&admin.account_id), &format!("ADMIN#{}", admin.id))
            .await?;
        Ok(self
            .items
            .delete(&format!("EMAIL#{}", admin.email.to_lowercase()), "EMAIL")
            .await?)
    }

    // ----- API keys -----

    /// Stores a new key under its secret's hash (for authentication) and its id (for the list).
    pub async fn put_api_key(&self, key: &ApiKey, secret_hash: &str) -> Result<(), StateError> {
        let pointer = serde_json::json!({ "account_id": key.account_id, "key_id": key.id });
        let batch = vec![
            (
                Item::new(format!("APIKEY#{secret_hash}"), "APIKEY", pointer),
                PutCondition::NotExists,
            ),
            (
                Item::new(acct(&key.account_id), format!("APIKEY#{}", key.id), Self::encode(key)),
                PutCondition::NotExists,
            ),
        ];
        Ok(self.items.put_all(batch).await?)
    }

    /// The key whose secret has this hash, if it exists.
    pub async fn api_key_by_hash(&self, secret_hash: &str) -> Result<Option<ApiKey>, StateError> {
        let Some(pointer) = self.items.get(&format!("APIKEY#{secret_hash}"), "APIKEY").await? else {
            return Ok(None);
        };
        let account: AccountId =
            serde_json::from_value(pointer.doc["account_id"].clone()).map_err(|e| StoreError::Corrupt {
                pk: pointer.pk.clone(),
                sk: pointer.sk.clone(),
                reason: e.to_string(),
            })?;
        let id: ApiKeyId = serde_json::from_value(pointer.doc["key_id"].clone()).map_err(|e| StoreError::Corrupt {
            pk: pointer.pk.clone(),
            sk: pointer.sk.clone(),
            reason: e.to_string(),
        })?;
        self.api_key(&account, &id).await
    }

    pub async fn api_key(&self, account: &AccountId, id: &ApiKeyId) -> Result<Option<ApiKey>, StateError> {
        Ok(self
            .items
            .get(&acct(account), &format!("APIKEY#{id}"))
            .await?
            .map(|i| i.decode())
            .transpose()?)
    }

    pub async fn api_keys(&self, account: &AccountId) -> Result<Vec<ApiKey>, StateError> {
        self.query_all(Query::partition(acct(account)).prefix("APIKEY#")).await
    }

    /// Changes a key (revocation, last use); `change` returns false to leave it.
    pub async fn update_api_key(
        &self,
        account: &AccountId,
        id: &ApiKeyId,
        change: impl Fn(&mut ApiKey) -> bool,
    ) -> Result<ApiKey, StateError> {
        self.update(&acct(account), &format!("APIKEY#{id}"), "api key", change)
            .await
    }

    // ----- audit log -----

    /// Appends to the audit log (never overwrites; nothing deletes it).
    pub async fn put_audit(&self, record: &AuditRecord) -> Result<(), StateError> {
        let sk = format!("AUDIT#{}#{}", record.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"), record.id);
        let item = Item::new(acct(&record.account_id), sk, Self::encode(record));
        Ok(self.items.put(item, PutCondition::NotExists).await?)
    }

    /// The audit log, newest first, filtered.
    pub async fn audit_log(
        &self,
        account: &AccountId,
        filter: &AuditFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<AuditRecord>, Option<String>), StateError> {
        self.log_newest_first(account, "AUDIT", filter.day, |r| filter.matches(r), limit, cursor)
            .await
    }

    // ----- sessions -----

    pub async fn put_session(&self, token_hash: &str, session: &Session) -> Result<(), StateError> {
        let item = Item::new(format!("SESSION#{token_hash}"), "SESSION", Self::encode(session))
            .with_ttl(session.expires_at.timestamp());
        Ok(self.items.put(item, PutCondition::NotExists).await?)
    }

    /// The session if it exists and has not expired.
    pub async fn session(&self, token_hash: &str, now: DateTime<Utc>) -> Result<Option<Session>, StateError> {
        let Some(item) = self.items.get(&format!("SESSION#{token_hash}"), "SESSION").await? else {
            return Ok(None);
        };
        let session: Session = item.decode()?;
        Ok((session.expires_at > now).then_some(session))
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<(), StateError> {
        Ok(self.items.delete(&format!("SESSION#{token_hash}"), "SESSION").await?)
    }

    // ----- connections -----

    pub async fn put_connection(&self, c: &Connection) -> Result<(), StateError> {
        let item = Item::new(acct(&c.account_id), format!("CONN#{}", c.id), Self::encode(c))
            .with_index("CONNECTIONS", format!("{}#{}", c.account_id, c.id));
        Ok(self.items.put(item, PutCondition::NotExists).await?)
    }

    pub async fn connection(&self, account: &AccountId, id: &ConnectionId) -> Result<Option<Connection>, StateError> {
        Ok(self
            .items
            .get(&acct(account), &format!("CONN#{id}"))
            .await?
            .map(|i| i.decode())
            .transpose()?)
    }

    pub async fn connections(&self, account: &AccountId) -> Result<Vec<Connection>, StateError> {
        self.query_all(Query::partition(acct(account)).prefix("CONN#")).await
    }

    /// Every connection of every account (the scheduled discovery's fan-out).
    pub async fn all_connections(&self) -> Result<Vec<(AccountId, ConnectionId)>, StateError> {
        let connections: Vec<Connection> = self.query_all(Query::gsi1("CONNECTIONS")).await?;
        Ok(connections.into_iter().map(|c| (c.account_id, c.id)).collect())
    }

    pub async fn delete_connection(&self, account: &AccountId, id: &ConnectionId) -> Result<(), StateError> {
        Ok(self.items.delete(&acct(account), &format!("CONN#{id}")).await?)
    }

    pub async fn update_connection(
        &self,
        account: &AccountId,
        id: &ConnectionId,
        change: impl Fn(&mut Connection) -> bool,
    ) -> Result<Connection, StateError> {
        let item_index = |c: &Connection| ("CONNECTIONS".to_string(), format!("{}#{}", c.account_id, c.id));
        self.update_indexed(&acct(account), &format!("CONN#{id}"), "connection", change, item_index)
            .await
    }

    // ----- entities -----

    pub async fn entity(&self, account: &AccountId, id: &EntityId) -> Result<Option<Entity>, StateError> {
        Ok(self
            .items
            .get(&acct(account), &format!("ENT#{id}"))
            .await?
            .map(|i| i.decode())
            .transpose()?)
    }

    /// A page of an account's entities matching the filter, in id order.
    pub async fn entities(
        &self,
        account: &AccountId,
        filter: &EntityFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<EntityPage, StateError> {
        let limit = limit.clamp(1, 1000);
        let mut start = cursor.map(Cursor::decode).transpose()?;
        let mut items = Vec::new();
        loop {
            let page = self
                .items
                .query(
                    Query::partition(acct(account))
                        .prefix("ENT#")
                        .limit(limit.max(100))
                        .start(start.clone()),
                )
                .await?;
            for item in &page.items {
                let entity: Entity = item.decode()?;
                start = Some(Cursor::of(item));
                if filter.matches(&entity) {
                    items.push(entity);
                    if items.len() == limit {
                        return Ok(EntityPage {
                            items,
                            next: start.map(|c| c.encode()),
                        });
                    }
                }
            }
            if page.next.is_none() {
                return Ok(EntityPage { items, next: None });
            }
            start = page.next;
        }
    }

    /// Every entity of the account that matches the filter, all pages.
    pub async fn all_entities(&self, account: &AccountId, filter: &EntityFilter) -> Result<Vec<Entity>, StateError> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self.entities(account, filter, 1000, cursor.as_deref()).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Every entity of a connection with its record version (discovery's view).
    pub async fn entities_of_connection(
        &self,
        account: &AccountId,
        connection: &ConnectionId,
    ) -> Result<Vec<(Entity, u64)>, StateError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .items
                .query(Query::partition(acct(account)).prefix("ENT#").limit(1000).start(start))
                .await?;
            for item in &page.items {
                let entity: Entity = item.decode()?;
                if entity.connection_id == *connection {
                    out.push((entity, item.version));
                }
            }
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Writes an entity if its record is still at `version` (0: new).
    pub async fn put_entity(&self, entity: &Entity, version: u64) -> Result<(), StateError> {
        let item = Item::new(
            acct(&entity.account_id),
            format!("ENT#{}", entity.id),
            Self::encode(entity),
        );
        match self.items.put(item, PutCondition::Version(version)).await {
            Err(StoreError::ConditionFailed { .. }) => Err(StateError::Contended),
            other => Ok(other?),
        }
    }

    /// Changes one entity; `change` returns whether anything changed.
    pub async fn update_entity(
        &self,
        account: &AccountId,
        id: &EntityId,
        change: impl Fn(&mut Entity) -> bool,
    ) -> Result<Entity, StateError> {
        self.update(&acct(account), &format!("ENT#{id}"), "entity", change)
            .await
    }

    /// Applies `change` to every entity matching the filter; returns how many it changed.
    pub async fn update_entities(
        &self,
        account: &AccountId,
        filter: &EntityFilter,
        change: impl Fn(&mut Entity) -> bool,
    ) -> Result<u64, StateError> {
        let mut changed = 0u64;
        let mut cursor: Option<String> = None;
        loop {
            let page = self.entities(account, filter, 500, cursor.as_deref()).await?;
            for entity in page.items {
                // The entity may have changed since the page was read: `change` decides on the fresh copy.
                let did = std::sync::atomic::AtomicBool::new(false);
                self.update_entity(account, &entity.id, |e| {
                    let c = filter.matches(e) && change(e);
                    did.store(c, std::sync::atomic::Ordering::Relaxed);
                    c
                })
                .await?;
                if did.load(std::sync::atomic::Ordering::Relaxed) {
                    changed += 1;
                }
            }
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(changed),
            }
        }
    }

    // ----- activity -----

    pub async fn put_activity(&self, activity: &Activity) -> Result<(), StateError> {
        let sk = format!(
            "ACTIVITY#{}#{}",
            activity.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            activity.id
        );
        let ttl = (activity.at + Duration::days(400)).timestamp();
        let item = Item::new(acct(&activity.account_id), sk, Self::encode(activity)).with_ttl(ttl);
        Ok(self.items.put(item, PutCondition::NotExists).await?)
    }

    /// The account's activity, newest first, filtered (kind, entity, day).
    pub async fn activities(
        &self,
        account: &AccountId,
        filter: &ActivityFilter,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<Activity>, Option<String>), StateError> {
        self.log_newest_first(account, "ACTIVITY", filter.day, |a| filter.matches(a), limit, cursor)
            .await
    }

    /// A page of a time-ordered log (`<KIND>#<time>#<id>` sort keys), newest
    /// first, of the records `keep` accepts. The day is a prefix of the sort
    /// key: only that day is read.
    async fn log_newest_first<T: serde::de::DeserializeOwned>(
        &self,
        account: &AccountId,
        kind: &str,
        day: Option<chrono::NaiveDate>,
        keep: impl Fn(&T) -> bool,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<(Vec<T>, Option<String>), StateError> {
        let limit = limit.clamp(1, 500);
        let prefix = match day {
            Some(day) => format!("{kind}#{}", day.format("%Y-%m-%d")),
            None => format!("{kind}#"),
        };
        let mut start = cursor.map(Cursor::decode).transpose()?;
        let mut items = Vec::new();
        loop {
            let query = Query::partition(acct(account))
                .prefix(prefix.clone())
                .limit(limit)
                .start(start.clone())
                .descending();
            let page = self.items.query(query).await?;
            for item in &page.items {
                let record: T = item.decode()?;
                start = Some(Cursor::of(item));
                if keep(&record) {
                    items.push(record);
                    if items.len() == limit {
                        return Ok((items, start.map(|c| c.encode())));
                    }
                }
            }
            if page.next.is_none() {
                return Ok((items, None));
            }
            start = page.next;
        }
    }

    // ----- idempotency of queued requests -----

    /// Claims a queued request so that a redelivered message does nothing.
    pub async fn claim_request(
        &self,
        account: &AccountId,
        request_id: &str,
        lease: std::time::Duration,
    ) -> Result<RequestClaim, StateError> {
        let now = Utc::now();
        let lease_until = now + Duration::from_std(lease).unwrap_or(Duration::minutes(15));
        let (pk, sk) = (acct(account), format!("REQUEST#{request_id}"));
        let existing = self.items.get(&pk, &sk).await?;
        let version = match &existing {
            None => 0,
            Some(item) => {
                let marker: RequestMarker = item.decode()?;
                if marker.done {
                    return Ok(RequestClaim::AlreadyDone);
                }
                if marker.lease_until > now {
                    return Ok(RequestClaim::Busy);
                }
                item.version
            }
        };
        let marker = RequestMarker {
            done: false,
            lease_until,
        };
        let item = Item::new(pk, sk, Self::encode(&marker)).with_ttl((now + Duration::days(30)).timestamp());
        match self.items.put(item, PutCondition::Version(version)).await {
            Ok(()) => Ok(RequestClaim::Claimed),
            Err(StoreError::ConditionFailed { .. }) => Ok(RequestClaim::Busy),
            Err(e) => Err(e.into()),
        }
    }

    /// Marks a claimed request done (or releases it, so a retry may run it).
    pub async fn finish_request(&self, account: &AccountId, request_id: &str, done: bool) -> Result<(), StateError> {
        let (pk, sk) = (acct(account), format!("REQUEST#{request_id}"));
        if !done {
            return Ok(self.items.delete(&pk, &sk).await?);
        }
        let marker = RequestMarker {
            done: true,
            lease_until: Utc::now(),
        };
        let item = Item::new(pk, sk, Self::encode(&marker)).with_ttl((Utc::now() + Duration::days(30)).timestamp());
        Ok(self.items.put(item, PutCondition::None).await?)
    }

    // ----- backup cursors -----

    /// The delta cursors of an entity (saved only after the snapshot that holds their data).
    pub async fn cursor(
        &self,
        account: &AccountId,
        entity: &EntityId,
    ) -> Result<Option<serde_json::Value>, StateError> {
        Ok(self
            .items
            .get(&acct(account), &format!("CURSOR#{entity}"))
            .await?
            .map(|i| i.doc))
    }

    pub async fn put_cursor(
        &self,
        account: &AccountId,
        entity: &EntityId,
        cursor: &serde_json::Value,
    ) -> Result<(), StateError> {
        Ok(self
            .items
            .put(
                Item::new(acct(account), format!("CURSOR#{entity}"), cursor.clone()),
                PutCondition::None,
            )
            .await?)
    }

    // ----- erasure (purge): the cursor goes, and the two-step confirmation -----

    /// Forgets an entity's backup cursor: its backed-up data was purged, so
    /// a later backup must read the entity whole.
    pub async fn delete_cursor(&self, account: &AccountId, entity: &EntityId) -> Result<(), StateError> {
        Ok(self.items.delete(&acct(account), &format!("CURSOR#{entity}")).await?)
    }

    /// Records the SHA-256 (hex) of the token that confirms a purge of the
    /// entity, valid until `expires_at`; replaces an earlier one.
    pub async fn put_purge_token(
        &self,
        account: &AccountId,
        entity: &EntityId,
        token_sha256: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let doc = PurgeConfirmation {
            token_sha256: token_sha256.to_string(),
            expires_at,
        };
        let item =
            Item::new(acct(account), format!("PURGE#{entity}"), Self::encode(&doc)).with_ttl(expires_at.timestamp());
        Ok(self.items.put(item, PutCondition::None).await?)
    }

    /// The pending purge confirmation of the entity: its token's SHA-256 and until when it holds.
    pub async fn purge_token(
        &self,
        account: &AccountId,
        entity: &EntityId,
    ) -> Result<Option<(String, DateTime<Utc>)>, StateError> {
        let Some(item) = self.items.get(&acct(account), &format!("PURGE#{entity}")).await? else {
            return Ok(None);
        };
        let doc: PurgeConfirmation = item.decode()?;
        Ok(Some((doc.token_sha256, doc.expires_at)))
    }

    pub async fn delete_purge_token(&self, account: &AccountId, entity: &EntityId) -> Result<(), StateError> {
        Ok(self.items.delete(&acct(account), &format!("PURGE#{entity}")).await?)
    }

    // ----- recovery jobs -----

    pub async fn put_job(&self, job: &Job) -> Result<(), StateError> {
        let item = Item::new(acct(&job.account_id), format!("JOB#{}", job.id), Self::encode(job))
            .with_ttl((job.created_at + Duration::days(90)).timestamp());
        Ok(self.items.put(item, PutCondition::NotExists).await?)
    }

    pub async fn job(&self, account: &AccountId, id: &JobId) -> Result<Option<Job>, StateError> {
        match self.items.get(&acct(account), &format!("JOB#{id}")).await? {
            Some(item) => Ok(Some(item.decode()?)),
            None => Ok(None),
        }
    }

    /// The account's jobs, newest first.
    pub async fn jobs(&self, account: &AccountId) -> Result<Vec<Job>, StateError> {
        let mut jobs: Vec<Job> = self
            .query_all(Query::partition(acct(account)).prefix("JOB#".to_string()))
            .await?;
        jobs.sort_by_key(|j| std::cmp::Reverse(j.created_at));
        Ok(jobs)
    }

    /// Changes a job (optimistic concurrency); `change` returns false to leave it as it is.
    pub async fn update_job(
        &self,
        account: &AccountId,
        id: &JobId,
        change: impl Fn(&mut Job) -> bool,
    ) -> Result<Job, StateError> {
        self.update(&acct(account), &format!("JOB#{id}"), "job", change).await
    }

    /// Records that a job handled an item (restored it), so that a retried
    /// or redelivered job never handles it twice. False if it was already recorded.
    pub async fn record_job_item(
        &self,
        account: &AccountId,
        job: &JobId,
        key: &str,
        outcome: &serde_json::Value,
    ) -> Result<bool, StateError> {
        let item = Item::new(acct(account), format!("JOBITEM#{job}#{key}"), outcome.clone())
            .with_ttl((Utc::now() + Duration::days(90)).timestamp());
        match self.items.put(item, PutCondition::NotExists).await {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every item a job recorded, by key.
    pub async fn job_items(
        &self,
        account: &AccountId,
        job: &JobId,
    ) -> Result<std::collections::HashMap<String, serde_json::Value>, StateError> {
        let prefix = format!("JOBITEM#{job}#");
        let mut out = std::collections::HashMap::new();
        let mut start = None;
        loop {
            let page = self
                .items
                .query(
                    Query::partition(acct(account))
                        .prefix(prefix.clone())
                        .limit(500)
                        .start(start),
                )
                .await?;
            for item in page.items {
                if let Some(key) = item.sk.strip_prefix(&prefix) {
                    out.insert(key.to_string(), item.doc);
                }
            }
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(out),
            }
        }
    }

    // ----- helpers -----

    async fn query_all<T: serde::de::DeserializeOwned>(&self, query: Query) -> Result<Vec<T>, StateError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self.items.query(query.clone().limit(500).start(start)).await?;
            for item in &page.items {
                out.push(item.decode()?);
            }
            match page.next {
                Some(next) => start = Some(next),
                None => return Ok(out),
            }
        }
    }

    async fn update<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        what: &'static str,
        change: impl Fn(&mut T) -> bool,
    ) -> Result<T, StateError> {
        self.update_with(pk, sk, what, change, |_| None).await
    }

    async fn update_indexed<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        what: &'static str,
        change: impl Fn(&mut T) -> bool,
        index: impl Fn(&T) -> (String, String),
    ) -> Result<T, StateError> {
        self.update_with(pk, sk, what, change, |t| Some(index(t))).await
    }

    async fn update_with<T: Serialize + serde::de::DeserializeOwned>(
        &self,
        pk: &str,
        sk: &str,
        what: &'static str,
        change: impl Fn(&mut T) -> bool,
        index: impl Fn(&T) -> Option<(String, String)>,
    ) -> Result<T, StateError> {
        for _ in 0..UPDATE_ATTEMPTS {
            let Some(item) = self.items.get(pk, sk).await? else {
                return Err(StateError::NotFound(what));
            };
            let mut value: T = item.decode()?;
            if !change(&mut value) {
                return Ok(value);
            }
            let mut next = Item::new(pk, sk, Self::encode(&value));
            next.ttl = item.ttl;
            // An update keeps the item's index keys unless it sets new ones.
            next.gsi1pk = item.gsi1pk.clone();
            next.gsi1sk = item.gsi1sk.clone();
            if let Some((p, s)) = index(&value) {
                next = next.with_index(p, s);
            }
            match self.items.put(next, PutCondition::Version(item.version)).await {
                Ok(()) => return Ok(value),
                Err(StoreError::ConditionFailed { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StateError::Contended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Actor, AdminStatus, AuditId, Role};
    use crate::state::MemoryItems;

    fn admin(account: &Account, email: &str, role: Role) -> Admin {
        Admin {
            id: AdminId::random(),
            account_id: account.id.clone(),
            email: email.into(),
            display_name: email.into(),
            role,
            permissions: role.allowed().to_vec(),
            status: AdminStatus::Active,
            totp_enabled: false,
            created_at: Utc::now(),
            invited_by: None,
            last_sign_in_at: None,
        }
    }

    #[tokio::test]
    async fn admins_keep_their_addresses_unique_through_invitations_changes_and_removals() {
        let state = State::new(Arc::new(MemoryItems::new()));
        let account = Account::new("Contoso");
        let owner = admin(&account, "owner@contoso.test", Role::Owner);
        state
            .create_account(&account, &owner, &AdminSecrets::default())
            .await
            .expect("account");
        assert_eq!(state.all_accounts().await.expect("accounts").len(), 1);
        let ann = admin(&account, "ann@contoso.test", Role::Viewer);
        state
            .create_admin(&ann, &AdminSecrets::default())
            .await
            .expect("invite");
        let twin = admin(&account, "ANN@contoso.test", Role::Viewer);
        assert!(matches!(
            state.create_admin(&twin, &AdminSecrets::default()).await,
            Err(StateError::EmailTaken)
        ));
        assert_eq!(state.admins(&account.id).await.expect("admins").len(), 2);

        // A change of address frees the old one and claims the new one.
        let (mut changed, secrets, version) = state.admin(&account.id, &ann.id).await.expect("get").expect("ann");
        changed.email = "owner@contoso.test".into();
        assert!(matches!(
            state.change_admin_email(&changed, &secrets, version, &ann.email).await,
            Err(StateError::EmailTaken)
        ));
        changed.email = "ann.new@contoso.test".into();
        state
            .change_admin_email(&changed, &secrets, version, &ann.email)
            .await
            .expect("change");
        assert!(state.admin_by_email("ann@contoso.test").await.expect("old").is_none());
        assert_eq!(
            state
                .admin_by_email("ann.new@contoso.test")
                .await
                .expect("new")
                .map(|a| a.0.id),
            Some(ann.id.clone())
        );
        state.delete_admin(&changed).await.expect("remove");
        assert!(
            state
                .admin_by_email("ann.new@contoso.test")
                .await
                .expect("gone")
                .is_none()
        );
        assert_eq!(state.admins(&account.id).await.expect("admins").len(), 1);
    }

    #[tokio::test]
    async fn keys_are_found_by_their_secret_s_hash_and_audit_records_are_append_only() {
        let state = State::new(Arc::new(MemoryItems::new()));
        let account = AccountId("acct_1".into());
        let key = ApiKey {
            id: ApiKeyId::random(),
            account_id: account.clone(),
            name: "ci".into(),
            role: Role::Viewer,
            prefix: "stk_abcdef".into(),
            created_by: AdminId("adm_1".into()),
            created_at: Utc::now(),
            last_used_at: None,
            last_used_ip: None,
            revoked_at: None,
        };
        state.put_api_key(&key, "hash-1").await.expect("put");
        assert_eq!(state.api_key_by_hash("hash-1").await.expect("get"), Some(key.clone()));
        assert_eq!(state.api_key_by_hash("hash-2").await.expect("get"), None);
        assert_eq!(
            state.api_keys(&AccountId("acct_2".into())).await.expect("other").len(),
            0
        );

        let record = AuditRecord {
            id: AuditId::random(),
            account_id: account.clone(),
            at: Utc::now(),
            actor: Actor::ApiKey {
                key_id: key.id.clone(),
                name: key.name.clone(),
            },
            ip: Some("192.0.2.1".into()),
            action: "pause".into(),
            target: Some("ent_1".into()),
            outcome: "success".into(),
            details: serde_json::json!({}),
        };
        state.put_audit(&record).await.expect("append");
        assert!(state.put_audit(&record).await.is_err(), "a record is never overwritten");
        let filter = AuditFilter {
            actor: Some(key.id.to_string()),
            ..Default::default()
        };
        let (items, _) = state.audit_log(&account, &filter, 10, None).await.expect("log");
        assert_eq!(items, vec![record.clone()]);
        let (none, _) = state
            .audit_log(&AccountId("acct_2".into()), &AuditFilter::default(), 10, None)
            .await
            .expect("other account");
        assert!(none.is_empty(), "the log is the account's own");
    }
}
