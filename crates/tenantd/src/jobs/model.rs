//! Detection job types: what clients submit, what is stored, what comes back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tenancy::TenantId;
use utoipa::ToSchema;

use super::JobsError;

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
