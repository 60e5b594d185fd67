//! The storage paths that span the shared database and a dedicated
//! tenant's own: the job queue (in the shared database) whose results go
//! to the tenant's records database, and usage reads that add in the
//! counters a dedicated tenant's writes keep in its own database.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy::TenantId;

use super::{
    Backend, PlacementSource, Store, StoreError, TenantPools, TenantScope, check_not_moving,
};
use crate::jobs::JobQueue;
use crate::usage::UsageRepo;

/// The job queue lives in the shared database (it is the platform's
/// schedule, polled across tenants); a job's result record goes to its
/// tenant's records database, which for a dedicated tenant is its own.
pub(super) struct RoutedQueue {
    pub(super) shared: Arc<dyn JobQueue>,
    pub(super) store: Store,
}

#[async_trait]
impl JobQueue for RoutedQueue {
    async fn claim(
        &self,
        owner: &str,
        lease: std::time::Duration,
        per_tenant_cap: i64,
    ) -> Result<Option<crate::jobs::ClaimedJob>, StoreError> {
        self.shared.claim(owner, lease, per_tenant_cap).await
    }

    async fn heartbeat(
        &self,
        job: &crate::jobs::ClaimedJob,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError> {
        self.shared.heartbeat(job, lease).await
    }

    async fn complete(
        &self,
        job: &crate::jobs::ClaimedJob,
        record: crate::records::NewRecord,
    ) -> Result<Option<crate::records::RecordId>, StoreError> {
        let placement = self.store.placement.placement(&job.tenant);
        check_not_moving(&job.tenant, &placement, self.store.clock())?;
        let Some(target) = &placement.dedicated else {
            // Job and record in one database: one transaction.
            return self.shared.complete(job, record).await;
        };
        // Two databases: the record first (an idempotent upsert by kind
        // and name), then the job. A crash between them leaves the job
        // running until its lease expires; the retry upserts the same
        // record again.
        let db = self.store.pools.get(&job.tenant, target).await?;
        let scope = TenantScope::system(job.tenant.clone(), job.quotas);
        let written = crate::records::RecordRepo::upsert_record(&db, &scope, record).await?;
        Ok(self
            .shared
            .complete_with(job, &written.id)
            .await?
            .then_some(written.id))
    }

    async fn complete_with(
        &self,
        job: &crate::jobs::ClaimedJob,
        record: &crate::records::RecordId,
    ) -> Result<bool, StoreError> {
        self.shared.complete_with(job, record).await
    }

    async fn fail(
        &self,
        job: &crate::jobs::ClaimedJob,
        error: &str,
        retry_after: Option<std::time::Duration>,
    ) -> Result<(), StoreError> {
        self.shared.fail(job, error, retry_after).await
    }

    async fn release(&self, job: &crate::jobs::ClaimedJob) -> Result<(), StoreError> {
        self.shared.release(job).await
    }

    async fn reap_expired(&self, backoff: std::time::Duration) -> Result<u64, StoreError> {
        self.shared.reap_expired(backoff).await
    }

    async fn depth(&self) -> Result<(u64, u64), StoreError> {
        self.shared.depth().await
    }
}

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
