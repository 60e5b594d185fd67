//! `GET /tenant`: the caller's own plan, limits, quotas and use. A tenant
//! sees only itself: the id comes from its authenticated context.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tenancy::Tenant;
use tenancy::ratelimit::Window;
use utoipa::ToSchema;

use crate::clock::Clock;
use crate::clock::month_of_ms;
use crate::error::{ApiError, ErrorBody};
use crate::routes::{RouteFacts, Routes, Scope};
use crate::store::Store;
use crate::tenants::service::TenantAdmin;
use crate::usage::UsageRecorder;
use crate::usage::metric;
use crate::usage::report::UsageReport;
use std::sync::Arc;

/// Tenant routes of the limits feature.
pub fn routes() -> Routes {
    Routes::new().get(
        "/tenant",
        RouteFacts::tenant(Scope::TenantRead).named("tenant.read"),
        me,
    )
}

/// One quota with its current use.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaUse {
    /// The limit (`null`: unlimited).
    pub limit: Option<u64>,
    /// Current use, in the quota's unit.
    pub used: u64,
}

/// Quotas with use. Storage use is in bytes (`max_storage_mb` × 1 MiB is
/// the limit in bytes).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuotaReport {
    /// Records stored.
    pub max_records: QuotaUse,
    /// Limit in MiB; `used` in bytes.
    pub max_storage_mb: QuotaUse,
    /// Detections this month.
    pub max_detections_per_month: QuotaUse,
    /// Live API keys.
    pub max_api_keys: QuotaUse,
}

/// Quotas of `settings` with their use: `counters` of this month, `size`
/// (records, bytes) now, `keys` live.
pub(crate) fn quota_report(
    settings: &crate::limits::Settings,
    counters: &[(String, u64)],
    size: (u64, u64),
    keys: u64,
) -> QuotaReport {
    let detections = counters
        .iter()
        .find(|(m, _)| m == metric::DETECTIONS)
        .map_or(0, |(_, v)| *v);
    let q = &settings.quotas;
    QuotaReport {
        max_records: QuotaUse {
            limit: q.max_records,
            used: size.0,
        },
        max_storage_mb: QuotaUse {
            limit: q.max_storage_mb,
            used: size.1,
        },
        max_detections_per_month: QuotaUse {
            limit: q.max_detections_per_month,
            used: detections,
        },
        max_api_keys: QuotaUse {
            limit: q.max_api_keys,
            used: keys,
        },
    }
}

/// A rate-limit window in force.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WindowView {
    /// `minute`, `hour`, `day` (or `<n>s`).
    pub window: String,
    /// Requests allowed per window.
    pub limit: u64,
}

/// `GET /tenant`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantSelf {
    /// The caller's tenant.
    pub id: String,
    /// Its display name (absent for a tenant outside the registry).
    pub name: Option<String>,
    /// Plan.
    pub plan: String,
    /// Rate limits in force (tenant-wide).
    pub limits: Vec<WindowView>,
    /// Quotas and their use.
    pub quotas: QuotaReport,
    /// This month's usage.
    pub usage: UsageReport,
}

pub(crate) fn windows(list: &[Window]) -> Vec<WindowView> {
    list.iter()
        .map(|w| WindowView {
            window: w.name(),
            limit: w.limit,
        })
        .collect()
}

/// The caller's own plan, limits, quotas and use this month.
#[utoipa::path(get, path = "/tenant", tag = "tenant",
    responses((status = 200, description = "The caller's tenant", body = TenantSelf),
              (status = 401, description = "Credentials required", body = ErrorBody)))]
pub(crate) async fn me(
    State(admin): State<TenantAdmin>,
    State(clock): State<Clock>,
    State(store): State<Store>,
    State(usage): State<Arc<UsageRecorder>>,
    Tenant(ctx): Tenant,
) -> Result<Json<TenantSelf>, ApiError> {
    let id = ctx.tenant_id();
    let settings = admin.registry().settings(id);
    let name = admin
        .store()
        .tenants()
        .get_tenant(id)
        .await?
        .map(|row| row.name);
    // Stored counters plus this tenant's calls not yet written: figures as
    // of now, without forcing a write transaction over every tenant.
    let month = month_of_ms(clock.now_ms());
    let scoped = store.scoped(&ctx);
    let mut counters = scoped.month_counters(&month).await?;
    counters.extend(usage.pending_counters(id, &month));
    let size = scoped.current_size().await?;
    let keys = admin.store().keys().count_live_keys(id).await?;
    let prices = admin.registry().plans().prices(&settings.plan);
    let usage = UsageReport::build(
        id.as_str(),
        &month,
        &settings.plan,
        &counters,
        size,
        &prices,
    );
    Ok(Json(TenantSelf {
        id: id.to_string(),
        name,
        plan: settings.plan.to_string(),
        limits: windows(&settings.windows),
        quotas: quota_report(&settings, &counters, size, keys),
        usage,
    }))
}
