//! What an account stores: the bytes of its backup repository (after
//! deduplication and compression) and of its exports, measured by listing the
//! bucket, and their estimated monthly cost.

use crate::model::AccountId;
use crate::repo::{BlobStore, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// S3 Standard storage in us-east-1, USD per GB-month (the default of `STORAGE_USD_PER_GB_MONTH`).
pub const DEFAULT_STORAGE_USD_PER_GB_MONTH: f64 = 0.023;

/// Bytes in the bucket that belong to one account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct StorageUsage {
    /// The repository (`<account>/`): packs, indexes, catalogs, snapshots, views.
    pub repository_bytes: u64,
    pub repository_objects: u64,
    /// Zip exports not yet expired (`exports/<account>/`).
    pub export_bytes: u64,
    pub export_objects: u64,
}

impl StorageUsage {
    pub fn total_bytes(&self) -> u64 {
        self.repository_bytes + self.export_bytes
    }

    /// The estimated monthly cost of keeping these bytes, in USD.
    pub fn monthly_usd(&self, usd_per_gb_month: f64) -> f64 {
        self.total_bytes() as f64 / 1e9 * usd_per_gb_month
    }
}

/// Lists the account's objects and adds up their sizes.
pub async fn storage_used(store: &dyn BlobStore, account: &AccountId) -> Result<StorageUsage, StoreError> {
    let repository = store.list_sized(&format!("{account}/")).await?;
    let exports = store.list_sized(&format!("exports/{account}/")).await?;
    Ok(StorageUsage {
        repository_bytes: repository.iter().map(|(_, n)| n).sum(),
        repository_objects: repository.len() as u64,
        export_bytes: exports.iter().map(|(_, n)| n).sum(),
        export_objects: exports.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::MemoryStore;
    use bytes::Bytes;

    #[tokio::test]
    async fn usage_counts_only_the_account_s_objects() {
        let store = MemoryStore::default();
        store
            .put_new("acct_a/packs/00/p1", Bytes::from(vec![0; 100]))
            .await
            .expect("put");
        store
            .put_new("acct_a/index/r1", Bytes::from(vec![0; 10]))
            .await
            .expect("put");
        store
            .put_new("acct_ab/packs/00/p1", Bytes::from(vec![0; 1000]))
            .await
            .expect("put");
        store
            .put_new("exports/acct_a/j.zip", Bytes::from(vec![0; 7]))
            .await
            .expect("put");
        let usage = storage_used(&store, &AccountId("acct_a".into())).await.expect("usage");
        assert_eq!(usage.repository_bytes, 110);
        assert_eq!(usage.repository_objects, 2);
        assert_eq!(usage.export_bytes, 7);
        assert_eq!(usage.total_bytes(), 117);
        assert!((usage.monthly_usd(0.023) - 117.0 / 1e9 * 0.023).abs() < 1e-12);
    }
}
