//! Detection jobs (`/detect/*`): durable, leased, retried, fair across
//! tenants, and restart-safe.
//!
//! Two storage interfaces, deliberately separate:
//! - [`JobRepo`]: what a tenant does with its own jobs (submit, read, list,
//!   cancel), reached through [`TenantStore`] like every tenant operation;
//! - [`JobQueue`]: what the worker pool does *across* tenants (claim the
//!   next job fairly, renew leases, complete, fail, release). It is the one
//!   explicitly named cross-tenant path, and it never takes a tenant from a
//!   request: a claimed job carries the tenant of its row, and the record it
//!   produces is written into that tenant (a child row inherits its
//!   parent's tenant).

pub mod detect;
pub mod http;
mod model;
mod queue;
mod repo;
mod routed;
pub mod worker;

use std::time::Duration;

use async_trait::async_trait;

use crate::records::{NewRecord, RecordId, decode_cursor};
use crate::store::{StoreError, TenantScope, TenantStore};

pub use model::{
    ClaimedJob, DetectionId, Job, JobPage, JobStatus, MAX_PRIORITY, NewJob, SubmitInput,
};
pub use routed::system_queue;

/// Why a jobs operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// No such job in this tenant (another tenant's id looks the same).
    #[error("Detection job {0} not found or access denied")]
    NotFound(String),
    /// The job already reached a final state.
    #[error("Detection job {id} is already {status}")]
    AlreadyFinal {
        /// The job.
        id: String,
        /// Its final state.
        status: &'static str,
    },
    /// The request is not acceptable. The texts are fixed and documented in
    /// the README, so clients can match on them.
    #[error("{0}")]
    BadRequest(&'static str),
    /// A field is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field. (a path for nested values: `fields.lang`).
        field: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl JobsError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// A NUL in a text field ([`crate::input`]) names its field like any
/// other invalid value.
impl From<crate::input::TextError> for JobsError {
    fn from(e: crate::input::TextError) -> Self {
        Self::invalid(e.field, "must not contain the NUL character (U+0000)")
    }
}

/// What cancelling found.
#[derive(Debug)]
pub enum CancelOutcome {
    /// Cancelled now.
    Cancelled(Box<Job>),
    /// It had already finished.
    AlreadyFinal(JobStatus),
    /// No such job in the tenant.
    NotFound,
}

/// A tenant's own jobs, implemented once on [`crate::store::Db`].
#[async_trait]
pub trait JobRepo: Send + Sync {
    /// Stores a new pending job.
    async fn submit_job(
        &self,
        scope: &TenantScope,
        new: NewJob,
        max_attempts: i64,
    ) -> Result<Job, StoreError>;
    /// The job `id` of the tenant.
    async fn get_job(
        &self,
        scope: &TenantScope,
        id: &DetectionId,
    ) -> Result<Option<Job>, StoreError>;
    /// The tenant's jobs, newest first.
    async fn list_jobs(
        &self,
        scope: &TenantScope,
        status: Option<JobStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<JobPage, StoreError>;
    /// Cancels a pending or running job.
    async fn cancel_job(
        &self,
        scope: &TenantScope,
        id: &DetectionId,
    ) -> Result<CancelOutcome, StoreError>;
}

/// The worker pool's cross-tenant queue operations.
#[async_trait]
pub trait JobQueue: Send + Sync {
    /// Claims the next job: round-robin over tenants with pending work whose
    /// running jobs are under `per_tenant_cap`, highest priority then oldest
    /// within the tenant. The lease lasts `lease`.
    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        per_tenant_cap: i64,
    ) -> Result<Option<ClaimedJob>, StoreError>;
    /// Renews the lease; `false` when the job is no longer this worker's
    /// (cancelled, or the lease was lost).
    async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool, StoreError>;
    /// Marks the job completed and upserts its record into the job's tenant,
    /// atomically. `None` (and nothing written) when the job is no longer
    /// this worker's.
    async fn complete(
        &self,
        job: &ClaimedJob,
        record: NewRecord,
    ) -> Result<Option<RecordId>, StoreError>;
    /// Marks the job completed with a record already written in its
    /// tenant's dedicated database. `false` (and nothing changed) when the
    /// job is no longer this worker's.
    async fn complete_with(&self, job: &ClaimedJob, record: &RecordId) -> Result<bool, StoreError>;
    /// Records a failed attempt: back to pending after `retry_after` when
    /// given and attempts remain, otherwise failed with `error`.
    async fn fail(
        &self,
        job: &ClaimedJob,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError>;
    /// Gives the job back untouched (shutdown): pending, attempt not counted.
    async fn release(&self, job: &ClaimedJob) -> Result<(), StoreError>;
    /// Jobs whose lease expired (their worker died): retried after
    /// `backoff`, or failed when out of attempts. Returns how many.
    async fn reap_expired(&self, backoff: Duration) -> Result<u64, StoreError>;
    /// Jobs waiting and jobs running, over every tenant (a metrics gauge).
    async fn depth(&self) -> Result<(u64, u64), StoreError>;
}

/// The jobs operations of one tenant.
impl TenantStore {
    /// Stores a new pending job.
    pub async fn submit_job(&self, new: NewJob, max_attempts: i64) -> Result<Job, JobsError> {
        let (scope, db) = self.shared();
        Ok(db.submit_job(scope, new, max_attempts).await?)
    }

    /// Reads a job of this tenant.
    pub async fn get_job(&self, id: &DetectionId) -> Result<Job, JobsError> {
        let (scope, db) = self.shared();
        db.get_job(scope, id)
            .await?
            .ok_or_else(|| JobsError::NotFound(id.to_string()))
    }

    /// Lists this tenant's jobs.
    pub async fn list_jobs(
        &self,
        status: Option<JobStatus>,
        limit: u64,
        cursor: Option<&str>,
    ) -> Result<JobPage, JobsError> {
        let offset = decode_cursor(cursor)
            .map_err(|_| JobsError::invalid("cursor", "is not a cursor returned by this API"))?;
        let (scope, db) = self.shared();
        Ok(db.list_jobs(scope, status, limit, offset).await?)
    }

    /// Cancels a job of this tenant.
    pub async fn cancel_job(&self, id: &DetectionId) -> Result<Job, JobsError> {
        let (scope, db) = self.shared();
        match db.cancel_job(scope, id).await? {
            CancelOutcome::Cancelled(job) => Ok(*job),
            CancelOutcome::AlreadyFinal(status) => Err(JobsError::AlreadyFinal {
                id: id.to_string(),
                status: status.as_str(),
            }),
            CancelOutcome::NotFound => Err(JobsError::NotFound(id.to_string())),
        }
    }
}
