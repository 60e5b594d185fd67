//! The one place errors become HTTP (see `docs/architecture.md`, "Errors"):
//! every error body is `{"detail": "...", "code": "..."}`.
//!
//! This module knows no feature. Each feature keeps its own `thiserror`
//! enum and maps it into [`ApiError`] in its own module (`records::http`,
//! `jobs::http`, `tenants::http`, …), so adding a feature never edits this
//! file. Request extractors and the framework rejections they produce live
//! in [`crate::extract`]. Internal errors are logged here with their cause
//! and answered with an opaque 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tenancy::TenancyError;
use utoipa::ToSchema;

use crate::store::StoreError;

/// The JSON shape of every error.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A sentence for humans.
    pub detail: String,
    /// A stable code for programs.
    pub code: String,
}

/// An error on its way to the client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Tenant resolution refused the request.
    #[error(transparent)]
    Tenancy(#[from] TenancyError),
    /// 401: a missing or wrong admin key.
    #[error("{0}")]
    Unauthorized(String),
    /// 404 (absent, or another tenant's).
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 400: the request cannot be read.
    #[error("{0}")]
    BadRequest(String),
    /// 422: the request is readable but a value is not acceptable.
    #[error("{0}")]
    Validation(String),
    /// 413.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 403: the write would cross a quota; nothing was written. The text
    /// is the quota's own message (`limits::QuotaExceeded`).
    #[error("{0}")]
    Quota(String),
    /// 503: storage is unavailable; nothing was changed.
    #[error("{0}")]
    Unavailable(String),
    /// 503 `tenant_moving`: the tenant's data is switching databases;
    /// writes are refused for the moment, reads go on.
    #[error("{detail}")]
    Moving {
        /// What the client reads.
        detail: String,
        /// Seconds (the `Retry-After` header).
        retry_after_secs: u64,
    },
    /// 403 `insufficient_scope`: the credential is restricted to scopes
    /// that do not include the route's (named, when the route has one: the
    /// scope's name as keys carry it).
    #[error("{}", insufficient_scope_detail(*.0))]
    InsufficientScope(Option<&'static str>),
    /// 429 `too_many_auth_failures`: too many wrong admin keys from this
    /// address; every admin request from it waits out the minute.
    #[error(
        "Too many failed admin authentications from this address; retry in {retry_after_secs} s"
    )]
    TooManyAuthFailures {
        /// Seconds (the `Retry-After` header).
        retry_after_secs: u64,
    },
    /// 507 `storage_full`: the disk holding the data is full; nothing was
    /// changed, and the same request succeeds once space is freed.
    #[error("{0}")]
    StorageFull(String),
    /// 500: a bug. The text is logged, never sent.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status and the stable code this error answers with; features'
    /// tests check their mappings through it.
    pub(crate) fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Tenancy(e) => (e.status(), e.code()),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Quota(_) => (StatusCode::FORBIDDEN, "quota_exceeded"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Moving { .. } => (StatusCode::SERVICE_UNAVAILABLE, "tenant_moving"),
            Self::InsufficientScope(_) => (StatusCode::FORBIDDEN, "insufficient_scope"),
            Self::TooManyAuthFailures { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_auth_failures")
            }
            Self::StorageFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

fn insufficient_scope_detail(needed: Option<&str>) -> String {
    match needed {
        Some(scope) => format!("This credential lacks the scope '{scope}' this route needs"),
        None => "This credential is restricted to scopes and this route grants none".to_owned(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let detail = match &self {
            Self::Internal(cause) => {
                let cause = crate::redact::text(cause);
                tracing::error!(%cause, "internal error");
                "Internal server error".to_owned()
            }
            Self::Unavailable(cause) => {
                let cause = crate::redact::text(cause);
                tracing::warn!(%cause, "storage unavailable");
                "Storage is unavailable; the request changed nothing. Retry later".to_owned()
            }
            Self::StorageFull(cause) => {
                let cause = crate::redact::text(cause);
                tracing::error!(%cause, "storage full");
                "The disk holding the data is full; the request changed nothing. Retry once space is freed".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = tenancy::error_response(status, code, &detail);
        if let Self::Moving {
            retry_after_secs, ..
        }
        | Self::TooManyAuthFailures { retry_after_secs } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// The storage core's error is mapped here rather than in `store`:
/// dependencies point from features to the core and from HTTP to storage,
/// never back. Features depend on both `store` and this module, so their
/// own mappings (`RecordsError::Store(s) => s.into()`) reuse this one, and
/// `store` stays free of HTTP (the CLI and the workers use it without axum).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(c) => Self::Conflict(c.message().to_owned()),
            // Logged (redacted) with their whole chain, answered with a
            // fixed text.
            StoreError::Unavailable(c) => Self::Unavailable(c.chain()),
            StoreError::Full(c) => Self::StorageFull(c.chain()),
            StoreError::Internal(c) => Self::Internal(c.chain()),
            StoreError::Invalid(c) => {
                tracing::warn!(cause = %crate::redact::text(&c.chain()), "storage refused a value");
                Self::Validation(format!(
                    "A value of the request cannot be stored: {}",
                    truncate_for_echo(c.message())
                ))
            }
            StoreError::QuotaExceeded(q) => Self::Quota(q.to_string()),
            e @ StoreError::Moving {
                retry_after_secs, ..
            } => Self::Moving {
                detail: format!("{e}; nothing was changed"),
                retry_after_secs,
            },
        }
    }
}

/// Cuts user text that is echoed in an error to a readable length.
pub fn truncate_for_echo(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut}…")
    }
}
