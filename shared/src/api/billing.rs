//! The billing projection: the protected entities (active and paused, each
//! at its price) times the account's price table, per service; beside it the
//! AWS storage the account actually uses and its estimated monthly cost.

use super::AppState;
use super::audit::noted;
use super::auth::Principal;
use super::error::{ApiError, JsonBody};
use crate::model::{Account, EntityKind, EntityStatus, Price, PriceTable, Service};
use crate::ops::usage::{DEFAULT_STORAGE_USD_PER_GB_MONTH, StorageUsage, storage_used};
use crate::state::EntityFilter;
use axum::Json;
use axum::extract::State;
use axum::response::Response;
use serde::Serialize;
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// The deployment's price table, used by accounts that have none of their own.
pub fn default_price_table() -> PriceTable {
    let price = |kind, active_cents, paused_cents| Price {
        service: Service::M365,
        kind,
        active_cents,
        paused_cents,
    };
    PriceTable {
        currency: "USD".into(),
        prices: vec![
            price(EntityKind::Mailbox, 300, 100),
            price(EntityKind::Onedrive, 200, 75),
            price(EntityKind::Site, 500, 150),
        ],
    }
}

/// The table in force for an account.
pub fn price_table_of(account: &Account) -> PriceTable {
    account.price_table.clone().unwrap_or_else(default_price_table)
}

#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct BillingLine {
    pub kind: EntityKind,
    pub active: u64,
    pub paused: u64,
    pub active_cents: u64,
    pub paused_cents: u64,
    /// `active × active_cents + paused × paused_cents`.
    pub monthly_cents: u64,
}

#[derive(Debug, Serialize, ToSchema, PartialEq)]
pub struct ServiceBilling {
    pub service: Service,
    pub monthly_cents: u64,
    pub lines: Vec<BillingLine>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StorageCost {
    #[serde(flatten)]
    pub usage: StorageUsage,
    pub total_bytes: u64,
    pub usd_per_gb_month: f64,
    pub estimated_monthly_usd: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Billing {
    pub currency: String,
    /// The projected monthly amount, in cents.
    pub monthly_cents: u64,
    pub services: Vec<ServiceBilling>,
    pub price_table: PriceTable,
    /// `account` (its own table) or `default` (the deployment's).
    pub price_table_source: String,
    /// The S3 storage actually used (after deduplication and compression).
    pub storage: StorageCost,
}

/// The projection from counts of entities by (kind, status).
pub fn project(table: &PriceTable, counts: &BTreeMap<(EntityKind, EntityStatus), u64>) -> (u64, Vec<ServiceBilling>) {
    let mut services: BTreeMap<String, ServiceBilling> = BTreeMap::new();
    for price in &table.prices {
        let active = counts.get(&(price.kind, EntityStatus::Active)).copied().unwrap_or(0);
        let paused = counts.get(&(price.kind, EntityStatus::Paused)).copied().unwrap_or(0);
        let monthly_cents = active * price.active_cents + paused * price.paused_cents;
        let key = serde_json::to_value(price.service)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let service = services.entry(key).or_insert_with(|| ServiceBilling {
            service: price.service,
            monthly_cents: 0,
            lines: Vec::new(),
        });
        service.monthly_cents += monthly_cents;
        service.lines.push(BillingLine {
            kind: price.kind,
            active,
            paused,
            active_cents: price.active_cents,
            paused_cents: price.paused_cents,
            monthly_cents,
        });
    }
    let services: Vec<ServiceBilling> = services.into_values().collect();
    (services.iter().map(|s| s.monthly_cents).sum(), services)
}

/// The projected monthly bill and the storage used.
#[utoipa::path(get, path = "/v1/billing", tag = "account", responses((status = 200, body = Billing)), security(("session" = [])))]
pub async fn billing(State(ctx): State<AppState>, principal: Principal) -> Result<Json<Billing>, ApiError> {
    let account = ctx
        .state
        .account(&principal.account_id)
        .await?
        .ok_or_else(|| ApiError::not_found("account"))?;
    let mut counts: BTreeMap<(EntityKind, EntityStatus), u64> = BTreeMap::new();
    for e in ctx
        .state
        .all_entities(&principal.account_id, &EntityFilter::default())
        .await?
    {
        *counts.entry((e.kind, e.status)).or_default() += 1;
    }
    let table = price_table_of(&account);
    let (monthly_cents, services) = project(&table, &counts);
    let usage = storage_used(ctx.repo_store.as_ref(), &principal.account_id)
        .await
        .map_err(|e| ApiError::unavailable("storage listing", &e))?;
    Ok(Json(Billing {
        currency: table.currency.clone(),
        monthly_cents,
        services,
        price_table_source: if account.price_table.is_some() {
            "account"
        } else {
            "default"
        }
        .into(),
        price_table: table,
        storage: StorageCost {
            usage,
            total_bytes: usage.total_bytes(),
            usd_per_gb_month: DEFAULT_STORAGE_USD_PER_GB_MONTH,
            estimated_monthly_usd: usage.monthly_usd(DEFAULT_STORAGE_USD_PER_GB_MONTH),
        },
    }))
}

/// Sets the account's price table (one price per kind of entity).
#[utoipa::path(put, path = "/v1/billing/prices", request_body = PriceTable, tag = "account", responses((status = 200, body = PriceTable), (status = 400, body = super::error::ErrorBody)), security(("session" = [])))]
pub async fn set_prices(
    State(ctx): State<AppState>,
    principal: Principal,
    JsonBody(table): JsonBody<PriceTable>,
) -> Result<Response, ApiError> {
    let currency_ok = table.currency.len() == 3 && table.currency.chars().all(|c| c.is_ascii_uppercase());
    if !currency_ok {
        return Err(ApiError::bad_request(
            "invalid_currency",
            "the currency is an ISO 4217 code such as USD or EUR",
        ));
    }
    let mut kinds: Vec<EntityKind> = table.prices.iter().map(|p| p.kind).collect();
    kinds.sort();
    kinds.dedup();
    if kinds.len() != table.prices.len() || table.prices.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_prices",
            "give one price per kind of entity (mailbox, onedrive, site)",
        ));
    }
    let stored = table.clone();
    ctx.state
        .update_account(&principal.account_id, |a| a.price_table = Some(stored.clone()))
        .await?;
    let note = serde_json::to_value(&table).unwrap_or_default();
    Ok(noted(Json(table), note))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projection_is_counts_times_prices_per_service() {
        let table = default_price_table();
        let counts = BTreeMap::from([
            ((EntityKind::Mailbox, EntityStatus::Active), 10),
            ((EntityKind::Mailbox, EntityStatus::Paused), 2),
            ((EntityKind::Mailbox, EntityStatus::Discovered), 50),
            ((EntityKind::Onedrive, EntityStatus::Active), 3),
            ((EntityKind::Site, EntityStatus::Gone), 1),
        ]);
        let (total, services) = project(&table, &counts);
        assert_eq!(total, 10 * 300 + 2 * 100 + 3 * 200);
        assert_eq!(services.len(), 1);
        let mailbox = &services[0].lines[0];
        assert_eq!((mailbox.active, mailbox.paused, mailbox.monthly_cents), (10, 2, 3200));
        assert_eq!(
            services[0].lines[2].monthly_cents, 0,
            "discovered and gone cost nothing"
        );
    }
}
