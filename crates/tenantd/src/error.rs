//! The one place errors become HTTP: every error body
//! is `{"detail": "...", "code": "..."}`.
//!
//! Feature modules keep their own `thiserror` enums; [`ApiError`] converts
//! them. Internal errors are logged here with their cause and answered with
//! an opaque 500.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tenancy::TenancyError;
use utoipa::ToSchema;

use crate::jobs::JobsError;
use crate::limits::QuotaExceeded;
use crate::records::RecordsError;
use crate::routes::Scope;
use crate::store::StoreError;
use crate::tenants::TenantsError;

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
    /// 403: the write would cross a quota; nothing was written.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
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
    /// that do not include the route's (named, when the route has one).
    #[error("{}", insufficient_scope_detail(*.0))]
    InsufficientScope(Option<Scope>),
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
    fn parts(&self) -> (StatusCode, &'static str) {
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

fn insufficient_scope_detail(needed: Option<Scope>) -> String {
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
                let cause = crate::audit::redact::text(cause);
                tracing::error!(%cause, "internal error");
                "Internal server error".to_owned()
            }
            Self::Unavailable(cause) => {
                let cause = crate::audit::redact::text(cause);
                tracing::warn!(%cause, "storage unavailable");
                "Storage is unavailable; the request changed nothing. Retry later".to_owned()
            }
            Self::StorageFull(cause) => {
                let cause = crate::audit::redact::text(cause);
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

impl From<TenantsError> for ApiError {
    fn from(e: TenantsError) -> Self {
        match e {
            TenantsError::NotFound(_) | TenantsError::KeyNotFound(_) => {
                Self::NotFound(e.to_string())
            }
            TenantsError::AlreadyExists(_) | TenantsError::Retired(_) | TenantsError::Moving(_) => {
                Self::Conflict(e.to_string())
            }
            TenantsError::Invalid(_) => Self::Validation(e.to_string()),
            TenantsError::Store(s) => s.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(c) => Self::Conflict(c),
            StoreError::Unavailable(c) => Self::Unavailable(c),
            StoreError::Full(c) => Self::StorageFull(c),
            StoreError::Internal(c) => Self::Internal(c),
            StoreError::Invalid(c) => {
                tracing::warn!(cause = %crate::audit::redact::text(&c), "storage refused a value");
                Self::Validation(format!(
                    "A value of the request cannot be stored: {}",
                    truncate_for_echo(&c)
                ))
            }
            StoreError::QuotaExceeded(q) => Self::Quota(q),
            e @ StoreError::Moving {
                retry_after_secs, ..
            } => Self::Moving {
                detail: format!("{e}; nothing was changed"),
                retry_after_secs,
            },
        }
    }
}

impl From<RecordsError> for ApiError {
    fn from(e: RecordsError) -> Self {
        match e {
            RecordsError::NotFound(_) => Self::NotFound(e.to_string()),
            RecordsError::Conflict { .. } => Self::Conflict(e.to_string()),
            RecordsError::Invalid { .. } => Self::Validation(e.to_string()),
            RecordsError::Store(s) => s.into(),
        }
    }
}

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

impl From<crate::input::TextError> for ApiError {
    fn from(e: crate::input::TextError) -> Self {
        Self::Validation(e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::Validation(format!(
                "Invalid request body: {}",
                std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string())
            )),
            JsonRejection::JsonSyntaxError(e) => Self::BadRequest(format!(
                "Malformed JSON body: {}",
                std::error::Error::source(&e).map_or_else(|| e.body_text(), |s| s.to_string())
            )),
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType(
                "Expected a JSON body with 'Content-Type: application/json'".to_owned(),
            ),
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Self::PayloadTooLarge("Request body is larger than the configured limit".to_owned())
            }
            other => Self::BadRequest(format!(
                "Cannot read the request body: {}",
                other.body_text()
            )),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(format!("Invalid query string: {}", rejection.body_text()))
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s (400 syntax, 422 data,
/// 413 size, 415 content type).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    /// Text is checked at this boundary ([`crate::input`]): a body with a
    /// NUL anywhere is a 422 naming the field, whatever the route.
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // One read and one parse: the content type is judged as the tenancy
        // layer judges it (axum's rule), the bytes parsed once, and the NUL
        // check scans the same bytes.
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(tenancy::is_json_content_type);
        if !is_json {
            return Err(Self::Rejection::UnsupportedMediaType(
                "Expected a JSON body with 'Content-Type: application/json'".to_owned(),
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(JsonRejection::from)?;
        let Json(value) = Json::<T>::from_bytes(&bytes)?;
        crate::input::check_json_body(&bytes)?;
        Ok(Self(value))
    }
}

/// An optional JSON body: a request without one (no `Content-Type`, no
/// length) gets `T::default()`; any body goes through [`ApiJson`] and its
/// rejections.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for OptionalJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let headers = req.headers();
        let no_body = !headers.contains_key(axum::http::header::CONTENT_TYPE)
            && headers
                .get(axum::http::header::CONTENT_LENGTH)
                .is_none_or(|len| len.as_bytes() == b"0");
        if no_body {
            return Ok(Self(T::default()));
        }
        let ApiJson(value) = ApiJson::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    /// Every parameter is checked as text ([`crate::input`]) once the
    /// query has been read.
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        crate::input::check_query(parts.uri.query().unwrap_or_default())?;
        Ok(Self(value))
    }
}

/// The JSON-body tenant extractor lives in the tenancy library; tenant
/// routes parse with [`ApiJson`], so its rejections are [`ApiError`]s:
/// `TenantJson(ctx, ApiJson(body)): TenantJson<ApiJson<T>>`.
pub use tenancy::{BodyTenant, TenantJson};

impl<T: BodyTenant> BodyTenant for ApiJson<T> {
    fn body_tenant(&self) -> Option<&str> {
        self.0.body_tenant()
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
