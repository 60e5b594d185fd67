//! Admin routes for tenants (`/admin/tenants`), behind the admin key.

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tenancy::TenantId;
use utoipa::{IntoParams, ToSchema};

pub use super::admin_key::Admin;
use super::model::{CreateTenant, PatchTenant};
use super::moves::{MoveReport, MoveTenant, Mover};
use super::service::TenantPage;
use super::{DeletedCounts, Tenant, TenantFilter, TenantState, TenantsError};
use crate::audit::layer::AuditTenant;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, ErrorBody, truncate_for_echo};
use crate::extract::{ApiJson, ApiQuery};
use crate::keys::IssuedKey;
use crate::records::{DEFAULT_LIMIT, MAX_LIMIT};
use crate::routes::{RouteFacts, Routes};
use crate::store::Store;
use crate::tenants::service::TenantAdmin;
use crate::usage::UsageBook;
use std::sync::Arc;

/// Routes under `/admin/tenants` (keys are in [`crate::keys::http`]).
pub fn routes() -> Routes {
    let admin = RouteFacts::admin();
    Routes::new()
        .post(
            "/admin/tenants",
            admin.named("tenants.create"),
            create_tenant,
        )
        .get("/admin/tenants", admin.named("tenants.list"), list_tenants)
        .get(
            "/admin/tenants/{id}",
            admin.named("tenants.read"),
            get_tenant,
        )
        .patch(
            "/admin/tenants/{id}",
            admin.named("tenants.update"),
            update_tenant,
        )
        .delete(
            "/admin/tenants/{id}",
            admin.named("tenants.delete"),
            delete_tenant,
        )
        .post(
            "/admin/tenants/{id}/move",
            admin.named("tenants.move"),
            move_tenant,
        )
}

/// Move a tenant's records to the shared database or a database of its
/// own: copy, verify (count and SHA-256), switch the binding atomically,
/// delete the source. The tenant's writes get 503 `tenant_moving` only
/// while the switch is under way; reads go on throughout.
#[utoipa::path(post, path = "/admin/tenants/{id}/move", tag = "admin",
    request_body = MoveTenant,
    responses((status = 200, description = "Moved (or already there, stale copies removed)", body = MoveReport),
              (status = 404, description = "No such tenant", body = ErrorBody),
              (status = 409, description = "A move of this tenant is under way", body = ErrorBody),
              (status = 422, description = "Bad target, or a static tenant", body = ErrorBody)))]
pub(crate) async fn move_tenant(
    _: Admin,
    State(admin): State<TenantAdmin>,
    State(store): State<Store>,
    State(config): State<Arc<Config>>,
    State(clock): State<Clock>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MoveTenant>,
) -> Result<Json<MoveReport>, ApiError> {
    let id = path_tenant(&id)?;
    let mover = Mover {
        admin: admin.store(),
        store: &store,
        registry: admin.registry(),
        // Other nodes see the freeze at their next registry poll.
        settle: std::time::Duration::from_millis(config.auth.registry_poll_ms + 250),
        clock: clock.clone(),
    };
    Ok(Json(mover.run(&id, &body).await?))
}

/// A tenant id from the path; one that cannot exist is a tenant that
/// does not exist.
pub(crate) fn path_tenant(raw: &str) -> Result<TenantId, TenantsError> {
    TenantId::new(raw).map_err(|_| TenantsError::NotFound(truncate_for_echo(raw)))
}

/// Response of `POST /admin/tenants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTenant {
    /// The tenant.
    pub tenant: Tenant,
    /// Its first API key, shown this once (absent if `issue_key: false`).
    pub api_key: Option<IssuedKey>,
}

/// Create a tenant (and its first API key).
#[utoipa::path(post, path = "/admin/tenants", tag = "admin",
    request_body = CreateTenant,
    responses((status = 201, description = "Created", body = CreatedTenant),
              (status = 401, description = "Admin key missing or wrong", body = ErrorBody),
              (status = 409, description = "Id taken", body = ErrorBody),
              (status = 422, description = "Invalid fields (all listed)", body = ErrorBody)))]
pub(crate) async fn create_tenant(
    _: Admin,
    State(admin): State<TenantAdmin>,
    ApiJson(input): ApiJson<CreateTenant>,
) -> Result<(StatusCode, Extension<AuditTenant>, Json<CreatedTenant>), ApiError> {
    let (tenant, api_key) = admin.create(input).await?;
    Ok((
        StatusCode::CREATED,
        Extension(AuditTenant(tenant.id.clone())),
        Json(CreatedTenant { tenant, api_key }),
    ))
}

/// Query of `GET /admin/tenants`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListTenantsParams {
    /// `active` or `suspended`.
    status: Option<TenantState>,
    /// Only this plan.
    plan: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// List tenants in id order.
#[utoipa::path(get, path = "/admin/tenants", tag = "admin", params(ListTenantsParams),
    responses((status = 200, description = "A page", body = TenantPage),
              (status = 401, description = "Admin key missing or wrong", body = ErrorBody)))]
pub(crate) async fn list_tenants(
    _: Admin,
    State(admin): State<TenantAdmin>,
    ApiQuery(params): ApiQuery<ListTenantsParams>,
) -> Result<Json<TenantPage>, ApiError> {
    let (limit, after) = tenant_page(params.limit, params.cursor)?;
    let filter = TenantFilter {
        status: params.status,
        plan: params.plan,
        after,
        limit,
    };
    Ok(Json(admin.list(filter).await?))
}

/// A page over tenants in id order: the size (1 to 1000, default 50) and
/// the tenant after which it starts (the previous page's `next_cursor`).
pub(crate) fn tenant_page(
    limit: Option<u64>,
    cursor: Option<String>,
) -> Result<(u64, Option<TenantId>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::Validation(format!(
            "limit: must be 1 to {MAX_LIMIT}"
        )));
    }
    let after = match cursor {
        None => None,
        Some(c) => Some(
            TenantId::new(&c).map_err(|_| ApiError::Validation("cursor: invalid".to_owned()))?,
        ),
    };
    Ok((limit, after))
}

/// Current use of a tenant. The key count is known here; the usage
/// feature fills the rest (null until then).
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantUsage {
    /// Live API keys.
    pub api_keys: u64,
    /// Records stored.
    pub records: u64,
    /// Bytes of stored records.
    pub storage_bytes: u64,
    /// Detections this calendar month.
    pub detections_this_month: u64,
    /// API calls this calendar month.
    pub api_calls_this_month: u64,
}

/// Response of `GET /admin/tenants/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantWithUsage {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// Its use.
    pub usage: TenantUsage,
    /// Rate-limit windows in force (plan and overrides resolved).
    pub effective_limits: Vec<crate::limits::http::WindowView>,
    /// Quotas in force with their use.
    pub effective_quotas: crate::limits::http::QuotaReport,
}

/// Read one tenant, with its usage.
#[utoipa::path(get, path = "/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "The tenant and `usage`", body = TenantWithUsage),
              (status = 404, description = "No such tenant", body = ErrorBody)))]
pub(crate) async fn get_tenant(
    _: Admin,
    State(admin): State<TenantAdmin>,
    State(usage_book): State<UsageBook>,
    State(clock): State<Clock>,
    Path(id): Path<String>,
) -> Result<Json<TenantWithUsage>, ApiError> {
    let id = path_tenant(&id)?;
    let tenant = admin.get(&id).await?;
    let store = admin.store();
    let api_keys = store.keys().count_live_keys(&id).await?;
    usage_book.flush().await;
    let month = crate::clock::month_of_ms(clock.now_ms());
    let counters = store.usage().month_counters(&id, &month).await?;
    let (records, storage_bytes) = store.usage().current_size(&id).await?;
    let settings = admin.registry().settings(&id);
    let report = crate::usage::report::UsageReport::build(
        id.as_str(),
        &month,
        &settings.plan,
        &counters,
        (records, storage_bytes),
        &Default::default(),
    );
    Ok(Json(TenantWithUsage {
        tenant,
        usage: TenantUsage {
            api_keys,
            records,
            storage_bytes,
            detections_this_month: report.detections,
            api_calls_this_month: report.api_calls.total,
        },
        effective_limits: crate::limits::http::windows(&settings.windows),
        effective_quotas: crate::limits::http::quota_report(
            &settings,
            &counters,
            (records, storage_bytes),
            api_keys,
        ),
    }))
}

/// Change a tenant (only the fields sent).
#[utoipa::path(patch, path = "/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = PatchTenant,
    responses((status = 200, description = "Changed", body = Tenant),
              (status = 404, description = "No such tenant", body = ErrorBody),
              (status = 422, description = "Invalid fields", body = ErrorBody)))]
pub(crate) async fn update_tenant(
    _: Admin,
    State(admin): State<TenantAdmin>,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<PatchTenant>,
) -> Result<Json<Tenant>, ApiError> {
    let id = path_tenant(&id)?;
    Ok(Json(admin.update(&id, patch).await?))
}

/// Response of `DELETE /admin/tenants/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedTenant {
    /// The tenant removed.
    pub deleted: String,
    /// What was removed with it.
    pub removed: DeletedCounts,
}

/// Delete a tenant and all its data.
#[utoipa::path(delete, path = "/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, description = "Deleted, with counts", body = DeletedTenant),
              (status = 404, description = "No such tenant", body = ErrorBody)))]
pub(crate) async fn delete_tenant(
    _: Admin,
    State(admin): State<TenantAdmin>,
    Path(id): Path<String>,
) -> Result<Json<DeletedTenant>, ApiError> {
    let id = path_tenant(&id)?;
    let removed = admin.delete(&id).await?;
    Ok(Json(DeletedTenant {
        deleted: id.to_string(),
        removed,
    }))
}

/// How the tenants feature's errors answer: 404 for an absent tenant or
/// key, 409 for an id that exists, is retired or is moving, 422 for a
/// refused value; storage failures as the storage core maps them.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    fn answer(e: TenantsError) -> (StatusCode, &'static str, String) {
        let api = ApiError::from(e);
        let (status, code) = api.parts();
        (status, code, api.to_string())
    }

    #[test]
    fn each_tenants_error_keeps_its_status_code_and_text() {
        let not_found = [
            (
                TenantsError::NotFound("acme".into()),
                "Tenant 'acme' not found",
            ),
            (
                TenantsError::KeyNotFound("k1".into()),
                "API key k1 not found",
            ),
        ];
        for (e, detail) in not_found {
            assert_eq!(
                answer(e),
                (StatusCode::NOT_FOUND, "not_found", detail.into())
            );
        }
        let conflicts = [
            TenantsError::AlreadyExists("acme".into()),
            TenantsError::Retired("acme".into()),
            TenantsError::Moving("acme".into()),
        ];
        for e in conflicts {
            let detail = e.to_string();
            assert_eq!(answer(e), (StatusCode::CONFLICT, "conflict", detail));
        }
        assert_eq!(
            answer(TenantsError::Invalid(vec![
                "a: bad".into(),
                "b: bad".into()
            ])),
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                "a: bad; b: bad".into()
            )
        );
        let (status, code, _) = answer(TenantsError::Store(StoreError::Conflict("dup".into())));
        assert_eq!((status, code), (StatusCode::CONFLICT, "conflict"));
    }
}
