//! Request extractors whose rejections are [`ApiError`]s, so a body or query
//! that cannot be read gets the same `{"detail","code"}` answer as every
//! other error (see `docs/architecture.md`, "Errors").
//!
//! They also apply the text rule of [`crate::input`] at the boundary. The
//! conversions of axum's JSON and query rejections live here, with the only
//! extractors that produce them.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// 400 syntax, 422 data, 413 size, 415 content type; anything else 400.
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

/// Always 400: a query string that does not fit the route's parameters.
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
            return Err(ApiError::UnsupportedMediaType(
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
