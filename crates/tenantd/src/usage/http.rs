//! Admin routes: a tenant's monthly usage report and daily metrics.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::report::{MetricsReport, UsageReport};
use crate::clock::{Clock, day_of_ms, month_of_ms, parse_day, parse_month};
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::routes::{RouteFacts, Routes};
use crate::tenants::http::{Admin, path_tenant};
use crate::tenants::service::TenantAdmin;
use crate::usage::UsageBook;

/// Admin usage routes.
pub fn routes() -> Routes {
    Routes::new()
        .get(
            "/admin/tenants/{id}/usage",
            RouteFacts::admin().named("usage.read"),
            usage,
        )
        .get(
            "/admin/tenants/{id}/metrics",
            RouteFacts::admin().named("metrics.read"),
            metrics,
        )
}

/// Query of the usage report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MonthQuery {
    /// `YYYY-MM` (UTC); default the current month.
    pub month: Option<String>,
}

/// A validated `YYYY-MM` query value (trimmed).
pub(crate) fn month_arg(text: &str) -> Result<String, ApiError> {
    let text = text.trim();
    parse_month(text)
        .map(|_| text.to_owned())
        .ok_or_else(|| ApiError::Validation("month: expected YYYY-MM, e.g. 2026-01".to_owned()))
}

/// A validated month, defaulting to `clock`'s current one.
pub(crate) fn month_or_current(month: Option<&str>, clock: &Clock) -> Result<String, ApiError> {
    month.map_or_else(|| Ok(month_of_ms(clock.now_ms())), month_arg)
}

/// A tenant's usage in a month, with cost when its plan has prices.
#[utoipa::path(get, path = "/admin/tenants/{id}/usage", tag = "admin",
    params(("id" = String, Path, description = "Tenant id"), MonthQuery),
    responses((status = 200, description = "Usage report", body = UsageReport),
              (status = 404, description = "No such tenant", body = ErrorBody),
              (status = 422, description = "Bad month", body = ErrorBody)))]
pub(crate) async fn usage(
    _: Admin,
    State(clock): State<Clock>,
    State(admin): State<TenantAdmin>,
    State(usage_book): State<UsageBook>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<MonthQuery>,
) -> Result<Json<UsageReport>, ApiError> {
    let id = path_tenant(&id)?;
    let month = month_or_current(query.month.as_deref(), &clock)?;
    let tenant = admin.get(&id).await?;
    usage_book.flush().await;
    Ok(Json(usage_book.report(&id, &tenant.plan, &month).await?))
}

/// Query of the metrics report.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// First day, `YYYY-MM-DD` (or an RFC 3339 time; its UTC date counts).
    /// Default: 29 days before `end`.
    pub start: Option<String>,
    /// Last day, inclusive. Default: today (UTC).
    pub end: Option<String>,
}

const MAX_RANGE_DAYS: i64 = 366;

fn day_arg(name: &str, text: &str) -> Result<time::Date, ApiError> {
    let text = text.trim();
    let date = text.get(..10).unwrap_or(text);
    parse_day(date).ok_or_else(|| {
        ApiError::Validation(format!("{name}: expected YYYY-MM-DD or an RFC 3339 time"))
    })
}

/// Requests, errors and p50/p99 latency of a tenant, per day.
#[utoipa::path(get, path = "/admin/tenants/{id}/metrics", tag = "admin",
    params(("id" = String, Path, description = "Tenant id"), RangeQuery),
    responses((status = 200, description = "Metrics", body = MetricsReport),
              (status = 404, description = "No such tenant", body = ErrorBody),
              (status = 422, description = "Bad range", body = ErrorBody)))]
pub(crate) async fn metrics(
    _: Admin,
    State(clock): State<Clock>,
    State(admin): State<TenantAdmin>,
    State(usage_book): State<UsageBook>,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<RangeQuery>,
) -> Result<Json<MetricsReport>, ApiError> {
    let id = path_tenant(&id)?;
    let end = match &query.end {
        Some(text) => day_arg("end", text)?,
        None => day_arg("end", &day_of_ms(clock.now_ms()))?,
    };
    let start = match &query.start {
        Some(text) => day_arg("start", text)?,
        None => end - time::Duration::days(29),
    };
    if start > end {
        return Err(ApiError::Validation("start: after end".to_owned()));
    }
    if (end - start).whole_days() >= MAX_RANGE_DAYS {
        return Err(ApiError::Validation(format!(
            "start: the range is at most {MAX_RANGE_DAYS} days"
        )));
    }
    admin.get(&id).await?;
    usage_book.flush().await;
    let (start, end) = (start.to_string(), end.to_string());
    let days = admin.store().usage().daily(&id, &start, &end).await?;
    Ok(Json(MetricsReport::build(id.as_str(), &start, &end, &days)))
}
