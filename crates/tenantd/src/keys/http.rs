//! Admin routes for API keys (`/admin/tenants/{id}/api-keys`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiKeyInfo, IssueKey, IssuedKey, RotateKey};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, OptionalJson};
use crate::routes::{RouteFacts, Routes};
use crate::tenants::http::{Admin, path_tenant};
use crate::tenants::service::TenantAdmin;

/// Routes under `/admin/tenants/{id}/api-keys`.
pub fn routes() -> Routes {
    let admin = RouteFacts::admin();
    Routes::new()
        .get(
            "/admin/tenants/{id}/api-keys",
            admin.named("api_keys.list"),
            list_keys,
        )
        .post(
            "/admin/tenants/{id}/api-keys",
            admin.named("api_keys.issue"),
            issue_key,
        )
        .delete(
            "/admin/tenants/{id}/api-keys/{key_id}",
            admin.named("api_keys.revoke"),
            revoke_key,
        )
        .post(
            "/admin/tenants/{id}/api-keys/{key_id}/rotate",
            admin.named("api_keys.rotate"),
            rotate_key,
        )
}

/// Issue an API key (shown this once).
#[utoipa::path(post, path = "/admin/tenants/{id}/api-keys", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = IssueKey,
    responses((status = 201, description = "Issued", body = IssuedKey),
              (status = 404, description = "No such tenant", body = ErrorBody),
              (status = 422, description = "Invalid fields", body = ErrorBody)))]
pub(crate) async fn issue_key(
    _: Admin,
    State(admin): State<TenantAdmin>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<IssueKey>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    let id = path_tenant(&id)?;
    Ok((
        StatusCode::CREATED,
        Json(admin.issue_key(&id, input).await?),
    ))
}

/// List a tenant's keys (never the secret or its hash).
#[utoipa::path(get, path = "/admin/tenants/{id}/api-keys", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Keys", body = Vec<ApiKeyInfo>),
              (status = 404, description = "No such tenant", body = ErrorBody)))]
pub(crate) async fn list_keys(
    _: Admin,
    State(admin): State<TenantAdmin>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ApiKeyInfo>>, ApiError> {
    let id = path_tenant(&id)?;
    Ok(Json(admin.list_keys(&id).await?))
}

/// Revoke a key, effective on the next request to this node.
#[utoipa::path(delete, path = "/admin/tenants/{id}/api-keys/{key_id}", tag = "admin",
    params(("id" = String, Path, description = "Tenant id"),
           ("key_id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked"),
              (status = 404, description = "No such key in this tenant", body = ErrorBody)))]
pub(crate) async fn revoke_key(
    _: Admin,
    State(admin): State<TenantAdmin>,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = path_tenant(&id)?;
    admin.revoke_key(&id, &key_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Replace a key; the old one keeps working for `grace_seconds`.
#[utoipa::path(post, path = "/admin/tenants/{id}/api-keys/{key_id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "Tenant id"),
           ("key_id" = String, Path, description = "Key id")),
    request_body = RotateKey,
    responses((status = 201, description = "The new key", body = IssuedKey),
              (status = 404, description = "No such live key", body = ErrorBody)))]
pub(crate) async fn rotate_key(
    _: Admin,
    State(admin): State<TenantAdmin>,
    Path((id, key_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<RotateKey>,
) -> Result<(StatusCode, Json<IssuedKey>), ApiError> {
    let id = path_tenant(&id)?;
    let grace = body.grace_seconds;
    Ok((
        StatusCode::CREATED,
        Json(admin.rotate_key(&id, &key_id, grace).await?),
    ))
}
