//! Detection job types: what clients submit, what is stored, what comes back.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tenancy::TenantId;
use utoipa::ToSchema;

use super::JobsError;
use crate::store::StoreError;

/// Priorities are bounded so a client cannot starve its own other jobs
/// forever with an absurd value.
pub const MAX_PRIORITY: i64 = 1000;

/// A detection id: `det_` followed by a ULID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "det_01JD6ZK8Q3V2N4M5P6R7S8T9VW")]
pub struct DetectionId(String);

impl DetectionId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(format!("det_{}", ulid::Ulid::new()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Not a detection id (answered as 404).
#[derive(Debug, thiserror::Error)]
#[error("not a detection id")]
pub struct InvalidDetectionId;

impl FromStr for DetectionId {
    type Err = InvalidDetectionId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ulid = s
            .strip_prefix("det_")
            .filter(|u| u.len() == 26)
            .and_then(|u| ulid::Ulid::from_string(u).ok())
            .ok_or(InvalidDetectionId)?;
        Ok(Self(format!("det_{ulid}")))
    }
}

impl TryFrom<String> for DetectionId {
    type Error = InvalidDetectionId;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<DetectionId> for String {
    fn from(id: DetectionId) -> Self {
        id.0
    }
}

impl fmt::Display for DetectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waiting for a worker (also after a retryable failure).
    Pending,
    /// Claimed by a worker under a lease.
    Running,
    /// Finished; `record_id` names the record written.
    Completed,
    /// Gave up; `error` says why.
    Failed,
    /// Cancelled by the tenant; never produces a record.
    Cancelled,
}

impl JobStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl FromStr for JobStatus {
    type Err = JobsError;

    fn from_str(s: &str) -> Result<Self, JobsError> {
        Ok(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "completed" => Self::Completed,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => {
                return Err(JobsError::invalid(
                    "status",
                    "must be one of pending, running, completed, failed, cancelled",
                ));
            }
        })
    }
}

/// A detection job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    /// The job's id.
    pub detection_id: DetectionId,
    /// The owning tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// The repository inspected.
    pub repository_url: String,
    /// Higher runs first within the tenant.
    pub priority: i64,
    /// Client data, copied into the record.
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    /// Current state.
    pub status: JobStatus,
    /// Claims so far (a retry is another attempt).
    pub attempts: i64,
    /// Attempts before the job fails for good.
    pub max_attempts: i64,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// The record written, once completed.
    pub record_id: Option<String>,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// RFC 3339 UTC.
    pub updated_at: String,
    /// When the last attempt started.
    pub started_at: Option<String>,
    /// When the job reached a final state.
    pub finished_at: Option<String>,
}

/// Body of `POST /detect/submit`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitInput {
    /// A local path, a `file://` URL, or an `http(s)://`, `ssh://` or
    /// `git@host:path` git URL.
    #[serde(default)]
    pub repository_url: Option<String>,
    /// Higher first, `-1000..=1000`, default 0.
    #[serde(default)]
    pub priority: Option<i64>,
    /// Any JSON object; kept on the job and copied into the record.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Optional tenant (must agree with header/query).
    #[serde(default)]
    pub tenant_id: Option<String>,
}

impl SubmitInput {
    /// Every text of the submission checked for what storage cannot keep
    /// ([`crate::input`]), before any other rule.
    pub fn check_text(&self) -> Result<(), crate::input::TextError> {
        use crate::input::{check_object, check_opt};
        check_opt("repository_url", self.repository_url.as_deref())?;
        if let Some(metadata) = &self.metadata {
            check_object("metadata", metadata)?;
        }
        check_opt("tenant_id", self.tenant_id.as_deref())
    }
}

/// A validated submission.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// Normalised URL or path.
    pub repository_url: String,
    /// Bounded priority.
    pub priority: i64,
    /// Client metadata.
    pub metadata: Map<String, Value>,
}

/// Page of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPage {
    /// Jobs of the tenant matching the filter, over all pages.
    pub total: u64,
    /// This page, newest first.
    pub results: Vec<Job>,
    /// Cursor of the next page.
    pub next_cursor: Option<String>,
}

/// A job claimed by a worker: everything the worker needs, read from the
/// job row (the tenant included, never from a request).
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    /// The job.
    pub id: DetectionId,
    /// The job row's tenant: the record's tenant.
    pub tenant: TenantId,
    /// What to inspect.
    pub repository_url: String,
    /// Client metadata.
    pub metadata: Map<String, Value>,
    /// This claim's attempt number (1-based).
    pub attempt: i64,
    /// Attempts allowed.
    pub max_attempts: i64,
    /// The worker holding the lease.
    pub owner: String,
    /// The tenant's quotas, which the result's record write enforces
    /// (filled in by the worker from its quota source).
    pub quotas: crate::limits::QuotaLimits,
}

impl ClaimedJob {
    /// When to retry after this attempt failed: `retry_after` while
    /// attempts remain, `None` (fail for good) otherwise.
    pub(crate) fn retry_delay(&self, retry_after: Option<Duration>) -> Option<Duration> {
        retry_after.filter(|_| self.attempt < self.max_attempts)
    }
}

/// The error of a job whose worker stopped on its last attempt (kept when
/// the job already had one).
pub(crate) const LEASE_EXPIRED: &str = "The worker running this job stopped (lease expired)";
/// The error of a job whose worker stopped, retried.
pub(crate) const LEASE_EXPIRED_RETRYING: &str =
    "The worker running this job stopped (lease expired); retrying";

/// `d` in milliseconds, saturating (leases, backoffs).
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Internal(format!("corrupt job row: {what}").into())
}

/// A job row as every backend stores it (JSON and times as text), before
/// it is checked and parsed.
#[derive(Debug)]
pub(crate) struct StoredJob {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) repository_url: String,
    pub(crate) priority: i64,
    pub(crate) metadata: String,
    pub(crate) status: String,
    pub(crate) attempts: i64,
    pub(crate) max_attempts: i64,
    pub(crate) error: Option<String>,
    pub(crate) record_id: Option<String>,
    pub(crate) created_at: String,
    pub(crate) updated_at: String,
    pub(crate) started_at: Option<String>,
    pub(crate) finished_at: Option<String>,
}

impl StoredJob {
    /// The job, or `Internal` naming the first column that is corrupt.
    pub(crate) fn into_job(self) -> Result<Job, StoreError> {
        Ok(Job {
            detection_id: self.id.parse().map_err(|_| corrupt("id"))?,
            tenant_id: TenantId::new(&self.tenant_id).map_err(|_| corrupt("tenant_id"))?,
            repository_url: self.repository_url,
            priority: self.priority,
            metadata: serde_json::from_str(&self.metadata).map_err(|_| corrupt("metadata"))?,
            status: self.status.parse().map_err(|_| corrupt("status"))?,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            error: self.error,
            record_id: self.record_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

/// The columns of a job row a claim returns, before parsing.
#[derive(Debug)]
pub(crate) struct StoredClaim {
    pub(crate) id: String,
    pub(crate) tenant_id: String,
    pub(crate) repository_url: String,
    pub(crate) metadata: String,
    pub(crate) attempts: i64,
    pub(crate) max_attempts: i64,
}

impl StoredClaim {
    /// The claimed job, leased to `owner` (quotas are the worker's to fill).
    pub(crate) fn into_claimed(self, owner: &str) -> Result<ClaimedJob, StoreError> {
        Ok(ClaimedJob {
            id: self.id.parse().map_err(|_| corrupt("id"))?,
            tenant: TenantId::new(&self.tenant_id).map_err(|_| corrupt("tenant_id"))?,
            repository_url: self.repository_url,
            metadata: serde_json::from_str(&self.metadata).map_err(|_| corrupt("metadata"))?,
            attempt: self.attempts,
            max_attempts: self.max_attempts,
            owner: owner.to_owned(),
            quotas: crate::limits::QuotaLimits::default(),
        })
    }
}
