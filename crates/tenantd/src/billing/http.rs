//! Admin routes: close a month, read the outbox.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{BillingEvent, CloseReport};
use crate::billing::BillingWorker;
use crate::clock::Clock;
use crate::clock::month_of_ms;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;
use crate::routes::{RouteFacts, Routes};
use crate::tenants::http::Admin;
use crate::tenants::service::TenantAdmin;
use crate::usage::UsageBook;
use crate::usage::http::month_arg;

/// Admin billing routes.
pub fn routes() -> Routes {
    Routes::new()
        .post(
            "/admin/billing/close",
            RouteFacts::admin().named("billing.close"),
            close,
        )
        .get(
            "/admin/billing/events",
            RouteFacts::admin().named("billing_events.read"),
            events,
        )
}

/// Query of a close.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CloseQuery {
    /// `YYYY-MM`; default the previous month.
    pub month: Option<String>,
    /// Close a month that has not ended yet (its figures may still grow;
    /// the events carry them as of now).
    #[serde(default)]
    pub force: bool,
}

/// Query of the outbox listing.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Only this month (`YYYY-MM`).
    pub month: Option<String>,
}

/// Writes one billing event per tenant for the month and starts delivery.
/// Idempotent: a tenant that already has an event for the month gets no
/// second one.
#[utoipa::path(post, path = "/admin/billing/close", tag = "admin", params(CloseQuery),
    responses((status = 200, description = "Month closed", body = CloseReport),
              (status = 409, description = "The month has not ended (use force=true)", body = ErrorBody),
              (status = 422, description = "Bad month", body = ErrorBody)))]
pub(crate) async fn close(
    _: Admin,
    State(clock): State<Clock>,
    State(usage_book): State<UsageBook>,
    State(billing): State<BillingWorker>,
    ApiQuery(query): ApiQuery<CloseQuery>,
) -> Result<Json<CloseReport>, ApiError> {
    let current = month_of_ms(clock.now_ms());
    let month = match query.month.as_deref() {
        Some(m) => month_arg(m)?,
        None => crate::clock::previous_month(&current)
            .ok_or_else(|| ApiError::Internal("no previous month".to_owned()))?,
    };
    if month >= current && !query.force {
        return Err(ApiError::Conflict(format!(
            "Month {month} has not ended; pass force=true to close it now"
        )));
    }
    // Requests counted so far belong in the events.
    usage_book.flush().await;
    Ok(Json(billing.close(&month).await?))
}

/// The billing outbox (delivery state of every event).
#[utoipa::path(get, path = "/admin/billing/events", tag = "admin", params(EventsQuery),
    responses((status = 200, description = "Events", body = [BillingEvent]),
              (status = 422, description = "Bad month", body = ErrorBody)))]
pub(crate) async fn events(
    _: Admin,
    State(admin): State<TenantAdmin>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<BillingEvent>>, ApiError> {
    let month = query.month.as_deref().map(month_arg).transpose()?;
    Ok(Json(
        admin
            .store()
            .billing()
            .list_billing_events(month.as_deref())
            .await?,
    ))
}
