//! Liveness and readiness probes (no tenant needed), and the per-tenant
//! storage check (admin).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use crate::clock::Clock;
use crate::config::Config;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::routes::{RouteFacts, Routes};
use crate::store::PoolHealth;
use crate::store::Store;
use crate::tenants::http::{Admin, tenant_page};
use crate::tenants::service::TenantAdmin;
use std::sync::Arc;

/// `/health`, `/health/ready` and `/health/tenants`.
pub fn routes() -> Routes {
    Routes::new()
        .get("/health", RouteFacts::public().named("health.live"), health)
        .get(
            "/health/ready",
            RouteFacts::public().named("health.ready"),
            ready,
        )
        .get(
            "/health/tenants",
            RouteFacts::admin().named("tenants.health"),
            tenants,
        )
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Alive", body = Object)))]
pub(crate) async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// How long readiness waits for storage: orchestrators' probes commonly
/// time out at one second, and a database that does not answer within it
/// is not ready, whatever the pool's own wait.
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Readiness: storage answers and can be written.
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses((status = 200, description = "Ready", body = Object),
              (status = 503, description = "Storage unavailable", body = ErrorBody)))]
pub(crate) async fn ready(State(store): State<Store>) -> Result<Json<Value>, ApiError> {
    tokio::time::timeout(READY_DEADLINE, store.ready())
        .await
        .map_err(|_| {
            ApiError::Unavailable(format!(
                "storage did not answer within {} s",
                READY_DEADLINE.as_secs()
            ))
        })??;
    Ok(Json(json!({ "status": "ready" })))
}

/// Query of `GET /health/tenants`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthTenantsParams {
    /// Page size, 1 to 1000 (default 50).
    limit: Option<u64>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// One tenant's storage.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantStorageHealth {
    /// The tenant.
    pub tenant_id: String,
    /// `shared` or `dedicated`.
    pub isolation: &'static str,
    /// The database (a dedicated PostgreSQL URL without credentials).
    pub storage: String,
    /// `ok`, `error` or `not_open` (a dedicated pool opens on first use).
    pub status: &'static str,
    /// Why, when `error`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Writes are paused by a move.
    pub moving: bool,
}

/// A page of `GET /health/tenants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantStorageHealthPage {
    /// Tenants in id order.
    pub tenants: Vec<TenantStorageHealth>,
    /// Dedicated pools open now.
    pub open_pools: usize,
    /// `storage.max_open_tenant_pools`.
    pub max_open_pools: usize,
    /// Cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

/// Per-tenant storage checks: the shared database's state for shared
/// tenants, and each dedicated tenant's own pool (never opened by this
/// check: a closed pool shows `not_open`).
#[utoipa::path(get, path = "/health/tenants", tag = "health", params(HealthTenantsParams),
    responses((status = 200, description = "A page", body = TenantStorageHealthPage),
              (status = 401, description = "Admin key missing or wrong", body = ErrorBody)))]
pub(crate) async fn tenants(
    _: Admin,
    State(admin): State<TenantAdmin>,
    State(store): State<Store>,
    State(clock): State<Clock>,
    State(config): State<Arc<Config>>,
    ApiQuery(params): ApiQuery<HealthTenantsParams>,
) -> Result<Json<TenantStorageHealthPage>, ApiError> {
    let (limit, after) = tenant_page(params.limit, params.cursor)?;
    let registry = admin.registry();
    // usize holds 1..=1000.
    let mut page = registry.placements_page(after.as_ref(), limit as usize + 1);
    let next_cursor = if page.len() > limit as usize {
        page.truncate(limit as usize);
        page.last().map(|(id, _)| id.as_str().to_owned())
    } else {
        None
    };
    let shared = store.ready().await;
    let now = clock.now_ms();
    let pools = store.pools();
    let mut tenants = Vec::with_capacity(page.len());
    for (id, placement) in page {
        let moving = placement.moving_until_ms.is_some_and(|until| until > now);
        let (isolation, storage, health) = match &placement.dedicated {
            None => (
                "shared",
                "shared".to_owned(),
                match &shared {
                    Ok(()) => PoolHealth::Ok,
                    Err(e) => PoolHealth::Error(crate::redact::text(&e.to_string())),
                },
            ),
            Some(target) => ("dedicated", target.describe(), pools.health(&id).await),
        };
        let (status, reason) = match health {
            PoolHealth::Ok => ("ok", None),
            PoolHealth::Error(why) => ("error", Some(why)),
            PoolHealth::NotOpen => ("not_open", None),
        };
        tenants.push(TenantStorageHealth {
            tenant_id: id.as_str().to_owned(),
            isolation,
            storage,
            status,
            reason,
            moving,
        });
    }
    Ok(Json(TenantStorageHealthPage {
        tenants,
        open_pools: pools.open_count(),
        max_open_pools: config.storage.max_open_tenant_pools,
        next_cursor,
    }))
}
