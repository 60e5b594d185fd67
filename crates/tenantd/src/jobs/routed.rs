//! The worker pool's queue as the server runs it: the job queue lives in
//! the shared database (it is the platform's schedule, polled across
//! tenants); a job's result record goes to its tenant's records database,
//! which for a dedicated tenant is its own.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{ClaimedJob, JobQueue};
use crate::records::RecordRepo;
use crate::records::{NewRecord, RecordId};
use crate::store::{Db, Store, StoreError, TenantScope, check_not_moving};

/// The worker pool's cross-tenant queue. This is the one storage path not
/// confined to a tenant, named so it cannot be mistaken for one: it hands
/// out jobs with the tenant of their row.
pub fn system_queue(store: &Store) -> Arc<dyn JobQueue> {
    Arc::new(RoutedQueue {
        shared: store.shared_db().clone(),
        store: store.clone(),
    })
}

/// The queue of the shared database, completing into each job's tenant's
/// records database.
struct RoutedQueue {
    shared: Db,
    store: Store,
}

#[async_trait]
impl JobQueue for RoutedQueue {
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        per_tenant_cap: i64,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        self.shared.claim(owner, lease, per_tenant_cap).await
    }

    async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool, StoreError> {
        self.shared.heartbeat(job, lease).await
    }

    async fn complete(
        &self,
        job: &ClaimedJob,
        record: NewRecord,
    ) -> Result<Option<RecordId>, StoreError> {
        let placement = self.store.placement_of(&job.tenant);
        check_not_moving(&job.tenant, &placement, self.store.clock())?;
        let Some(target) = &placement.dedicated else {
            // Job and record in one database: one transaction.
            return self.shared.complete(job, record).await;
        };
        // Two databases: the record first (an idempotent upsert by kind
        // and name), then the job. A crash between them leaves the job
        // running until its lease expires; the retry upserts the same
        // record again.
        let own = self.store.pools().get(&job.tenant, target).await?;
        let scope = TenantScope::system(job.tenant.clone(), job.quotas);
        let written = own.upsert_record(&scope, record).await?;
        Ok(self
            .shared
            .complete_with(job, &written.id)
            .await?
            .then_some(written.id))
    }

    async fn complete_with(&self, job: &ClaimedJob, record: &RecordId) -> Result<bool, StoreError> {
        self.shared.complete_with(job, record).await
    }

    async fn fail(
        &self,
        job: &ClaimedJob,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.shared.fail(job, error, retry_after).await
    }

    async fn release(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        self.shared.release(job).await
    }

    async fn reap_expired(&self, backoff: Duration) -> Result<u64, StoreError> {
        self.shared.reap_expired(backoff).await
    }

    async fn depth(&self) -> Result<(u64, u64), StoreError> {
        self.shared.depth().await
    }
}
