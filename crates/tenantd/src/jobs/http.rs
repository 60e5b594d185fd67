//! HTTP routes of detection jobs: submit, status, list and cancel under
//! `/detect`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tenancy::Tenant;
use utoipa::IntoParams;

use super::detect::parse_location;
use super::{DetectionId, Job, JobPage, JobStatus, JobsError, MAX_PRIORITY, NewJob, SubmitInput};
use crate::config::Config;
use crate::error::{ApiError, ErrorBody, truncate_for_echo};
use crate::extract::{ApiJson, ApiQuery, BodyTenant, TenantJson};
use crate::records::check_limit;
use crate::routes::{RouteFacts, Routes, Scope};
use crate::store::Store;
use std::sync::Arc;

/// Routes under `/detect`.
pub fn routes() -> Routes {
    let read = RouteFacts::tenant(Scope::DetectionsRead);
    let write = RouteFacts::tenant(Scope::DetectionsWrite);
    Routes::new()
        .post(
            "/detect/submit",
            write.body_tenant().named("detections.submit"),
            submit,
        )
        .get("/detect", read.named("detections.list"), list)
        .get("/detect/{id}/status", read.named("detections.read"), status)
        .post(
            "/detect/{id}/cancel",
            write.named("detections.cancel"),
            cancel,
        )
}

impl BodyTenant for SubmitInput {
    fn body_tenant(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }
}

fn parse_id(raw: &str) -> Result<DetectionId, JobsError> {
    raw.parse()
        .map_err(|_| JobsError::NotFound(truncate_for_echo(raw)))
}

/// Validates a submission, answering with the README's fixed error texts.
fn validate(input: SubmitInput, allow_local: bool) -> Result<NewJob, JobsError> {
    input.check_text()?;
    let url = input.repository_url.as_deref().map(str::trim).unwrap_or("");
    if url.is_empty() {
        return Err(JobsError::BadRequest("Repository URL is required"));
    }
    if parse_location(url, allow_local).is_none() {
        return Err(JobsError::BadRequest("Invalid repository URL"));
    }
    let priority = input.priority.unwrap_or(0);
    if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&priority) {
        return Err(JobsError::invalid(
            "priority",
            format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY}"),
        ));
    }
    Ok(NewJob {
        repository_url: url.to_owned(),
        priority,
        metadata: input.metadata.unwrap_or_default(),
    })
}

/// Submit a detection job for the caller's tenant.
#[utoipa::path(
    post, path = "/detect/submit", tag = "detect",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    request_body = SubmitInput,
    responses(
        (status = 202, description = "Accepted; runs in the background", body = Job),
        (status = 400, description = "Missing or invalid repository URL", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    )
)]
pub(crate) async fn submit(
    State(config): State<Arc<Config>>,
    State(store): State<Store>,
    State(jobs_notify): State<Arc<tokio::sync::Notify>>,
    TenantJson(tenant, ApiJson(input)): TenantJson<ApiJson<SubmitInput>>,
) -> Result<(StatusCode, Json<Job>), ApiError> {
    let jobs = &config.jobs;
    let new = validate(input, jobs.allow_local_paths)?;
    let max_attempts = i64::from(jobs.max_attempts);
    let job = store.scoped(&tenant).submit_job(new, max_attempts).await?;
    jobs_notify.notify_one();
    tracing::info!(detection_id = %job.detection_id, "detection submitted");
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Status of one of the caller's jobs.
#[utoipa::path(
    get, path = "/detect/{id}/status", tag = "detect",
    params(("id" = String, Path, description = "Detection id"),
           ("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 404, description = "Absent or another tenant's", body = ErrorBody),
    )
)]
pub(crate) async fn status(
    State(store): State<Store>,
    Path(id): Path<String>,
    Tenant(tenant): Tenant,
) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(store.scoped(&tenant).get_job(&id).await?))
}

/// Cancel one of the caller's pending or running jobs.
#[utoipa::path(
    post, path = "/detect/{id}/cancel", tag = "detect",
    params(("id" = String, Path, description = "Detection id"),
           ("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    responses(
        (status = 200, description = "Cancelled", body = Job),
        (status = 404, description = "Absent or another tenant's", body = ErrorBody),
        (status = 409, description = "Already completed, failed or cancelled", body = ErrorBody),
    )
)]
pub(crate) async fn cancel(
    State(store): State<Store>,
    Path(id): Path<String>,
    Tenant(tenant): Tenant,
) -> Result<Json<Job>, ApiError> {
    let id = parse_id(&id)?;
    let job = store.scoped(&tenant).cancel_job(&id).await?;
    tracing::info!(detection_id = %job.detection_id, "detection cancelled");
    Ok(Json(job))
}

/// Query string of `GET /detect`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only jobs in this state.
    status: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Tenant (alternative to the header).
    #[allow(
        dead_code,
        reason = "read by the tenant resolver; accepted so it is not an unknown field"
    )]
    tenant_id: Option<String>,
}

/// The caller's jobs, newest first.
#[utoipa::path(
    get, path = "/detect", tag = "detect",
    params(ListParams, ("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    responses(
        (status = 200, description = "A page of jobs", body = JobPage),
        (status = 422, description = "Invalid status, limit or cursor", body = ErrorBody),
    )
)]
pub(crate) async fn list(
    State(store): State<Store>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<JobPage>, ApiError> {
    let status = params
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(str::parse::<JobStatus>)
        .transpose()?;
    let limit = check_limit(params.limit)?;
    let page = store
        .scoped(&tenant)
        .list_jobs(status, limit, params.cursor.as_deref())
        .await?;
    Ok(Json(page))
}

/// How the jobs feature's errors answer: 404 for an absent job (or another
/// tenant's), 409 for cancelling a finished one, 400 for an unreadable
/// location, 422 for a refused value; storage failures as the storage core
/// maps them.
impl From<JobsError> for ApiError {
    fn from(e: JobsError) -> Self {
        match e {
            JobsError::NotFound(_) => Self::NotFound(e.to_string()),
            JobsError::AlreadyFinal { .. } => Self::Conflict(e.to_string()),
            JobsError::BadRequest(text) => Self::BadRequest(text.to_owned()),
            JobsError::Invalid { .. } => Self::Validation(e.to_string()),
            JobsError::Store(s) => s.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn answer(e: JobsError) -> (StatusCode, &'static str, String) {
        let api = ApiError::from(e);
        let (status, code) = api.parts();
        (status, code, api.to_string())
    }

    #[test]
    fn each_jobs_error_keeps_its_status_code_and_text() {
        assert_eq!(
            answer(JobsError::NotFound("j1".into())),
            (
                StatusCode::NOT_FOUND,
                "not_found",
                "Detection job j1 not found or access denied".into()
            )
        );
        assert_eq!(
            answer(JobsError::AlreadyFinal {
                id: "j1".into(),
                status: "completed"
            }),
            (
                StatusCode::CONFLICT,
                "conflict",
                "Detection job j1 is already completed".into()
            )
        );
        assert_eq!(
            answer(JobsError::BadRequest("Invalid repository URL")),
            (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Invalid repository URL".into()
            )
        );
        assert_eq!(
            answer(JobsError::invalid("priority", "out of range")),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "priority: out of range".into()
            )
        );
        let (status, code, _) = answer(JobsError::Store(StoreError::Full("disk".into())));
        assert_eq!(
            (status, code),
            (StatusCode::INSUFFICIENT_STORAGE, "storage_full")
        );
    }
}
