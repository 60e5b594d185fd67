//! The storage path that spans the shared database and a dedicated
//! tenant's own: the job queue (in the shared database) whose results go
//! to the tenant's records database.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Store, StoreError, TenantScope, check_not_moving};
use crate::jobs::JobQueue;

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
        let backend = self.store.pools.get(&job.tenant, target).await?.backend();
        let scope = TenantScope::system(job.tenant.clone(), job.quotas);
        let written = backend.upsert_record(&scope, record).await?;
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
