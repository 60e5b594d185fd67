//! The backend-neutral half of billing storage: the columns of an outbox
//! row, how a row decodes into a [`BillingEvent`] on either backend, and
//! the state a failed delivery attempt leaves.

use sqlx::{ColumnIndex, Decode, Row, Type};

use super::{BillingEvent, EventStatus};

/// The columns [`decode`] reads (by name).
pub(crate) const COLUMNS: &str = "id, tenant_id, month, status, attempts, next_attempt_ms, \
     last_error, created_at, delivered_at, payload";

/// Decodes an outbox row selected as [`COLUMNS`] (listings select `''`
/// as the payload).
pub(crate) fn decode<R>(row: &R) -> Result<BillingEvent, sqlx::Error>
where
    R: Row,
    &'static str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let attempts: i64 = row.try_get("attempts")?;
    let status: String = row.try_get("status")?;
    Ok(BillingEvent {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        month: row.try_get("month")?,
        status: EventStatus::parse(&status),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_ms: row.try_get("next_attempt_ms")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
        delivered_at: row.try_get("delivered_at")?,
        payload: row.try_get("payload")?,
    })
}

/// The state a failed attempt leaves: still pending when another attempt
/// is scheduled, failed when delivery gives up.
pub(crate) fn status_after_failure(next_attempt_ms: Option<i64>) -> EventStatus {
    if next_attempt_ms.is_some() {
        EventStatus::Pending
    } else {
        EventStatus::Failed
    }
}
