//! HTTP routes of the records feature (`/records`, `/records/{id}`,
//! `/records/search`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tenancy::Tenant;
use utoipa::IntoParams;

use super::model::{RecordInput, SearchRequest, check_limit};
use super::{NewRecord, Record, RecordId, RecordsError, SearchPage, SearchQuery};
use crate::error::{ApiError, ErrorBody, truncate_for_echo};
use crate::extract::{ApiJson, ApiQuery, BodyTenant, TenantJson};
use crate::routes::{RouteFacts, Routes, Scope};
use crate::store::Store;
use crate::usage::RouteClass;

/// Routes under `/records`.
pub fn routes() -> Routes {
    let read = RouteFacts::tenant(Scope::RecordsRead);
    let write = RouteFacts::tenant(Scope::RecordsWrite);
    Routes::new()
        .post(
            "/records",
            write.body_tenant().named("records.create"),
            create_record,
        )
        .get("/records", read.named("records.list"), list_records)
        .post(
            "/records/search",
            read.body_tenant()
                .named("records.search")
                .counted_as(RouteClass::Search),
            search_records,
        )
        .get("/records/{id}", read.named("records.read"), get_record)
        .put(
            "/records/{id}",
            write.body_tenant().named("records.replace"),
            replace_record,
        )
        .delete(
            "/records/{id}",
            write.named("records.delete"),
            delete_record,
        )
}

impl BodyTenant for RecordInput {
    fn body_tenant(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }
}

impl BodyTenant for SearchRequest {
    fn body_tenant(&self) -> Option<&str> {
        self.tenant_id.as_deref()
    }
}

/// An id that cannot exist is reported like one that does not: 404.
fn parse_id(raw: &str) -> Result<RecordId, RecordsError> {
    raw.parse()
        .map_err(|_| RecordsError::NotFound(truncate_for_echo(raw)))
}

/// Create a record in the caller's tenant.
#[utoipa::path(
    post, path = "/records", tag = "records",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant (header name is configurable)")),
    request_body = RecordInput,
    responses(
        (status = 201, description = "Created", body = Record),
        (status = 400, description = "Malformed body or tenant", body = ErrorBody),
        (status = 403, description = "Tenant not allowed", body = ErrorBody),
        (status = 409, description = "Name taken in this tenant", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
        (status = 503, description = "Storage unavailable", body = ErrorBody),
    )
)]
pub(crate) async fn create_record(
    State(store): State<Store>,
    TenantJson(tenant, ApiJson(input)): TenantJson<ApiJson<RecordInput>>,
) -> Result<(StatusCode, Json<Record>), ApiError> {
    let new = NewRecord::try_from(input)?;
    let record = store.scoped(&tenant).create_record(new).await?;
    tracing::info!(record_id = %record.id, kind = %record.kind, "record created");
    Ok((StatusCode::CREATED, Json(record)))
}

/// Read one record of the caller's tenant.
#[utoipa::path(
    get, path = "/records/{id}", tag = "records",
    params(("id" = String, Path, description = "Record id"),
           ("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    responses(
        (status = 200, description = "The record", body = Record),
        (status = 404, description = "Absent or another tenant's", body = ErrorBody),
    )
)]
pub(crate) async fn get_record(
    State(store): State<Store>,
    Path(id): Path<String>,
    Tenant(tenant): Tenant,
) -> Result<Json<Record>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(store.scoped(&tenant).get_record(&id).await?))
}

/// Replace a record of the caller's tenant.
#[utoipa::path(
    put, path = "/records/{id}", tag = "records",
    params(("id" = String, Path, description = "Record id"),
           ("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    request_body = RecordInput,
    responses(
        (status = 200, description = "Replaced", body = Record),
        (status = 404, description = "Absent or another tenant's", body = ErrorBody),
        (status = 409, description = "Name taken in this tenant", body = ErrorBody),
        (status = 422, description = "Invalid field", body = ErrorBody),
    )
)]
pub(crate) async fn replace_record(
    State(store): State<Store>,
    Path(id): Path<String>,
    TenantJson(tenant, ApiJson(input)): TenantJson<ApiJson<RecordInput>>,
) -> Result<Json<Record>, ApiError> {
    let id = parse_id(&id)?;
    let new = NewRecord::try_from(input)?;
    let record = store.scoped(&tenant).replace_record(&id, new).await?;
    tracing::info!(record_id = %record.id, "record replaced");
    Ok(Json(record))
}

/// Delete a record of the caller's tenant.
#[utoipa::path(
    delete, path = "/records/{id}", tag = "records",
    params(("id" = String, Path, description = "Record id"),
           ("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "Absent or another tenant's", body = ErrorBody),
    )
)]
pub(crate) async fn delete_record(
    State(store): State<Store>,
    Path(id): Path<String>,
    Tenant(tenant): Tenant,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    store.scoped(&tenant).delete_record(&id).await?;
    tracing::info!(record_id = %id, "record deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Full-text search over the caller's records.
#[utoipa::path(
    post, path = "/records/search", tag = "records",
    params(("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    request_body = SearchRequest,
    responses(
        (status = 200, description = "A page of results", body = SearchPage),
        (status = 422, description = "Invalid query, limit or cursor", body = ErrorBody),
    )
)]
pub(crate) async fn search_records(
    State(store): State<Store>,
    TenantJson(tenant, ApiJson(request)): TenantJson<ApiJson<SearchRequest>>,
) -> Result<Json<SearchPage>, ApiError> {
    let query = SearchQuery::try_from(request)?;
    Ok(Json(store.scoped(&tenant).search_records(&query).await?))
}

/// Query string of `GET /records`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only records of this kind.
    kind: Option<String>,
    /// Comma-separated tags; records must carry all of them.
    tags: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Tenant (alternative to the header).
    #[allow(
        dead_code,
        reason = "read by the tenant resolver, accepted here so it is not an unknown field"
    )]
    tenant_id: Option<String>,
}

/// List the caller's records, newest first.
#[utoipa::path(
    get, path = "/records", tag = "records",
    params(ListParams, ("X-Tenant-ID" = Option<String>, Header, description = "Tenant")),
    responses(
        (status = 200, description = "A page of records", body = SearchPage),
        (status = 422, description = "Invalid limit or cursor", body = ErrorBody),
    )
)]
pub(crate) async fn list_records(
    State(store): State<Store>,
    Tenant(tenant): Tenant,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<SearchPage>, ApiError> {
    let tags = params
        .tags
        .as_deref()
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let query = SearchQuery::try_from(SearchRequest {
        query: String::new(),
        kind: params.kind,
        tags,
        limit: Some(check_limit(params.limit)?),
        cursor: params.cursor.clone(),
        tenant_id: None,
    })?;
    Ok(Json(store.scoped(&tenant).search_records(&query).await?))
}

/// How the records feature's errors answer: 404 for an absent record (or
/// another tenant's), 409 for a conflicting write, 422 for a refused value;
/// storage failures as the storage core maps them.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn answer(e: RecordsError) -> (StatusCode, &'static str, String) {
        let api = ApiError::from(e);
        let (status, code) = api.parts();
        (status, code, api.to_string())
    }

    #[test]
    fn each_records_error_keeps_its_status_code_and_text() {
        assert_eq!(
            answer(RecordsError::NotFound("r1".into())),
            (
                StatusCode::NOT_FOUND,
                "not_found",
                "Record r1 not found or access denied".into()
            )
        );
        assert_eq!(
            answer(RecordsError::Conflict {
                kind: "note".into(),
                name: "a".into()
            }),
            (
                StatusCode::CONFLICT,
                "conflict",
                "A record of kind 'note' named 'a' already exists".into()
            )
        );
        assert_eq!(
            answer(RecordsError::invalid("name", "too long")),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "name: too long".into()
            )
        );
        let (status, code, _) = answer(RecordsError::Store(StoreError::Unavailable("down".into())));
        assert_eq!(
            (status, code),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
    }
}
