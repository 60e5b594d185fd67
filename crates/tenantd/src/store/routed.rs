//! The storage path that spans the shared database and a dedicated
//! tenant's own: usage reads that add in the counters a dedicated tenant's
//! writes keep in its own database.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy::TenantId;

use super::{Backend, PlacementSource, StoreError, TenantPools};
use crate::usage::UsageRepo;

/// Usage lives in the shared database, except what a record write counts
/// in its own transaction (`records_written`) and the stored size
/// (`tenant_stats`): for a dedicated tenant those are in its database, so
/// reads of one tenant add them in.
pub(super) struct RoutedUsage {
    pub(super) shared: Arc<dyn Backend>,
    pub(super) placement: Arc<dyn PlacementSource>,
    pub(super) pools: Arc<TenantPools>,
}

impl RoutedUsage {
    async fn dedicated(&self, tenant: &TenantId) -> Result<Option<Arc<dyn Backend>>, StoreError> {
        match self.placement.placement(tenant).dedicated {
            None => Ok(None),
            Some(target) => Ok(Some(self.pools.get(tenant, &target).await?.backend())),
        }
    }
}

/// Counters of two databases summed by metric (sorted by metric).
pub(crate) fn merge_counters(a: Vec<(String, u64)>, b: Vec<(String, u64)>) -> Vec<(String, u64)> {
    let mut merged: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for (metric, value) in a.into_iter().chain(b) {
        *merged.entry(metric).or_default() += value;
    }
    merged.into_iter().collect()
}

#[async_trait]
impl UsageRepo for RoutedUsage {
    async fn add_usage(&self, batch: &crate::usage::UsageBatch) -> Result<(), StoreError> {
        self.shared.add_usage(batch).await
    }

    async fn month_counters(
        &self,
        tenant: &TenantId,
        month: &str,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let shared = self.shared.month_counters(tenant, month).await?;
        match self.dedicated(tenant).await? {
            None => Ok(shared),
            Some(own) => Ok(merge_counters(
                shared,
                own.month_counters(tenant, month).await?,
            )),
        }
    }

    async fn current_size(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError> {
        match self.dedicated(tenant).await? {
            None => self.shared.current_size(tenant).await,
            Some(own) => own.current_size(tenant).await,
        }
    }

    async fn daily(
        &self,
        tenant: &TenantId,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, crate::usage::DayStats)>, StoreError> {
        self.shared.daily(tenant, start, end).await
    }

    async fn tenants_with_usage(&self, month: &str) -> Result<Vec<TenantId>, StoreError> {
        self.shared.tenants_with_usage(month).await
    }
}
