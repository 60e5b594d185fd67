//! Usage across the shared database and dedicated tenants' own.
//!
//! Usage lives in the shared database, except what a record write counts
//! in its own transaction (`records_written`) and the stored size
//! (`tenant_stats`): for a dedicated tenant those are in its database, so
//! administrative reads of one tenant add them in ([`admin_usage`]).

use std::collections::BTreeMap;

use async_trait::async_trait;
use tenancy::TenantId;

use super::{DayStats, UsageBatch, UsageRepo};
use crate::store::{AdminStore, StoreError};

/// Usage counters of every tenant, as the batched recorder, admin reports
/// and billing see them.
pub fn admin_usage(admin: &AdminStore) -> RoutedUsage<'_> {
    RoutedUsage { admin }
}

/// See [`admin_usage`].
pub struct RoutedUsage<'a> {
    admin: &'a AdminStore,
}

/// Counters of two databases summed by metric (sorted by metric).
pub(crate) fn merge_counters(a: Vec<(String, u64)>, b: Vec<(String, u64)>) -> Vec<(String, u64)> {
    let mut merged: BTreeMap<String, u64> = BTreeMap::new();
    for (metric, value) in a.into_iter().chain(b) {
        *merged.entry(metric).or_default() += value;
    }
    merged.into_iter().collect()
}

#[async_trait]
impl UsageRepo for RoutedUsage<'_> {
    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError> {
        self.admin.db().add_usage(batch).await
    }

    async fn month_counters(
        &self,
        tenant: &TenantId,
        month: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let shared = self.admin.db().month_counters(tenant, month).await?;
        match self.admin.dedicated_db(tenant).await? {
            None => Ok(shared),
            Some(own) => Ok(merge_counters(
                shared,
                own.month_counters(tenant, month).await?,
            )),
        }
    }

    async fn current_size(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        match self.admin.dedicated_db(tenant).await? {
            None => self.admin.db().current_size(tenant).await,
            Some(own) => own.current_size(tenant).await,
        }
    }

    async fn daily(
        &self,
        tenant: &TenantId,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, DayStats)>, StoreError> {
        self.admin.db().daily(tenant, start, end).await
    }

    async fn tenants_with_usage(&self, month: &str) -> Result<Vec<TenantId>, StoreError> {
        self.admin.db().tenants_with_usage(month).await
    }
}
