//! [`BillingRepo`] on [`Db`], for both engines.
//!
//! The outbox is administrative (a month close concerns every tenant), so
//! every statement runs on the administrative path ([`Db::admin_write`],
//! [`Db::admin_read`]).
//!
//! On SQLite writes are serialised by the store's write transaction
//! (`BEGIN IMMEDIATE`) and one instance owns the file. On PostgreSQL
//! several instances may share the database and their transactions run
//! concurrently:
//!
//! - a close inserts with `ON CONFLICT DO NOTHING`, so two closes of one
//!   month still write one event per tenant; a page goes in sorted by
//!   tenant, in as few statements as the parameter limits allow, so two
//!   concurrent closes take the conflicting rows' locks in the same order;
//! - [`BillingRepo::due_events`] *claims* what it returns (the one
//!   statement written per engine: SQLite only reads): it locks the due
//!   rows with `FOR UPDATE SKIP LOCKED` (a concurrent claim passes them by
//!   instead of waiting) and pushes their `next_attempt_ms` forward as a
//!   lease, so another instance does not pick them up while this one
//!   attempts them. The worker attempts a batch one event at a time, so
//!   the lease grows with the event's place in the batch ([`LEASE_MS`] +
//!   [`LEASE_STEP_MS`] per event before it). The outcome of the attempt
//!   ends the lease (a retry time, or a final status). A lease is short on
//!   purpose: events an instance claimed but never attempted (it stopped,
//!   or died) are due again within seconds. An attempt that outlasts its
//!   lease may be repeated by another instance, which the event's
//!   `Idempotency-Key` makes harmless to the receiver;
//! - a failed attempt is recorded only on a pending event, so a late
//!   failure never re-opens an event another instance has delivered.

use async_trait::async_trait;

use super::{BillingEvent, BillingRepo, EventStatus, NewBillingEvent};
use crate::clock::rfc3339_from_ms;
use crate::store::{Db, Dialect, Row, Sql, StoreError, execute_rows, sql};

/// How long a claimed event stays with its claimer before another
/// instance may attempt it (the first event of a batch).
const LEASE_MS: i64 = 5_000;

/// Added to the lease per event ahead in the same batch.
const LEASE_STEP_MS: i64 = 1_000;

/// Due events, oldest first, on SQLite (`$1` now, `$2` limit): one
/// instance owns the file, so reading is enough.
const DUE_SQLITE: &str = "SELECT id, tenant_id, month, status, attempts, next_attempt_ms, \
     last_error, created_at, delivered_at, payload FROM billing_events \
     WHERE status = 'pending' AND next_attempt_ms <= $1 \
     ORDER BY next_attempt_ms, id LIMIT $2";

/// Due events claimed with a lease on PostgreSQL (`$1` now, `$2` limit,
/// `$3` lease, `$4` lease step). The scan is the partial index of pending
/// events (tenant first, as every index of a tenant table; the due time
/// is its second column). The events come back with the due time they
/// had, not their lease, and in no order (`RETURNING`).
const DUE_POSTGRES: &str = "WITH picked AS ( \
         SELECT tenant_id, month, id, next_attempt_ms FROM billing_events \
         WHERE status = 'pending' AND next_attempt_ms <= $1 \
         ORDER BY next_attempt_ms, id COLLATE \"C\" LIMIT $2 \
         FOR UPDATE SKIP LOCKED \
     ), ranked AS ( \
         SELECT tenant_id, month, next_attempt_ms, \
                row_number() OVER (ORDER BY next_attempt_ms, id COLLATE \"C\") - 1 AS ahead \
         FROM picked \
     ) \
     UPDATE billing_events AS b SET next_attempt_ms = $1 + $3 + ranked.ahead * $4 \
     FROM ranked WHERE b.tenant_id = ranked.tenant_id AND b.month = ranked.month \
     RETURNING b.id, b.tenant_id, b.month, b.status, b.attempts, \
               ranked.next_attempt_ms, b.last_error, b.created_at, b.delivered_at, b.payload";

/// Decodes an outbox row selected as `id, tenant_id, month, status,
/// attempts, next_attempt_ms, last_error, created_at, delivered_at,
/// payload` (listings select `''` as the payload).
fn decode(row: &Row) -> Result<BillingEvent, StoreError> {
    let status: String = row.get(3)?;
    let attempts: i64 = row.get(4)?;
    Ok(BillingEvent {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        month: row.get(2)?,
        status: EventStatus::parse(&status),
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        next_attempt_ms: row.get(5)?,
        last_error: row.get(6)?,
        created_at: row.get(7)?,
        delivered_at: row.get(8)?,
        payload: row.get(9)?,
    })
}

/// The state a failed attempt leaves: still pending when another attempt
/// is scheduled, failed when delivery gives up.
fn status_after_failure(next_attempt_ms: Option<i64>) -> EventStatus {
    if next_attempt_ms.is_some() {
        EventStatus::Pending
    } else {
        EventStatus::Failed
    }
}

#[async_trait]
impl BillingRepo for Db {
    async fn month_closed(&self, month: &str) -> Result<bool, StoreError> {
        let mut conn = self.admin_read().await?;
        let found: Option<i32> = conn
            .scalar_optional(sql("SELECT 1 FROM billing_months WHERE month = $1").bind(month))
            .await?;
        Ok(found.is_some())
    }

    async fn close_month(
        &self,
        month: &str,
        events: &[NewBillingEvent],
        now_ms: i64,
        mark_closed: bool,
    ) -> Result<u64, StoreError> {
        let created_at = rfc3339_from_ms(now_ms);
        let mut page: Vec<&NewBillingEvent> = events.iter().collect();
        page.sort_by(|a, b| a.tenant.as_str().cmp(b.tenant.as_str()));
        let mut conn = self.admin_write().await?;
        let created = execute_rows(
            &mut conn,
            0,
            &page,
            8,
            |values| {
                Sql::owned(format!(
                    "INSERT INTO billing_events (tenant_id, month, id, payload, status, \
                     attempts, next_attempt_ms, created_at) VALUES {values} \
                     ON CONFLICT DO NOTHING"
                ))
            },
            |q, e| {
                q.bind(&e.tenant)
                    .bind(month)
                    .bind(&e.id)
                    .bind(&e.payload)
                    .bind(EventStatus::Pending.as_str())
                    .bind(0_i64)
                    .bind(now_ms)
                    .bind(&created_at)
            },
        )
        .await?;
        if mark_closed {
            conn.execute(
                sql(
                    "INSERT INTO billing_months (month, closed_at) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(month)
                .bind(&created_at),
            )
            .await?;
        }
        conn.commit().await?;
        Ok(created)
    }

    async fn due_events(&self, now_ms: i64, limit: u32) -> Result<Vec<BillingEvent>, StoreError> {
        let mut conn = self.admin_read().await?;
        // The one statement that differs: PostgreSQL claims (see the
        // module's documentation), SQLite reads.
        let claim = match conn.dialect() {
            Dialect::Sqlite => sql(DUE_SQLITE).bind(now_ms).bind(i64::from(limit)),
            Dialect::Postgres => sql(DUE_POSTGRES)
                .bind(now_ms)
                .bind(i64::from(limit))
                .bind(LEASE_MS)
                .bind(LEASE_STEP_MS),
        };
        let rows = conn.fetch_all(claim).await?;
        let mut due = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        // Oldest first (RETURNING has no order).
        due.sort_by(|a, b| {
            (a.next_attempt_ms, a.id.as_str()).cmp(&(b.next_attempt_ms, b.id.as_str()))
        });
        Ok(due)
    }

    async fn mark_delivered(
        &self,
        tenant: &str,
        id: &str,
        attempts: u32,
    ) -> Result<(), StoreError> {
        let mut conn = self.admin_write().await?;
        // With the tenant: a point lookup on (tenant_id, id).
        conn.execute(
            sql(
                "UPDATE billing_events SET status = 'delivered', attempts = $2, \
                 last_error = NULL, delivered_at = $3 WHERE tenant_id = $4 AND id = $1",
            )
            .bind(id)
            .bind(i64::from(attempts))
            .bind(self.now())
            .bind(tenant),
        )
        .await?;
        conn.commit().await
    }

    async fn mark_attempt_failed(
        &self,
        tenant: &str,
        id: &str,
        attempts: u32,
        next_attempt_ms: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.admin_write().await?;
        conn.execute(
            sql("UPDATE billing_events SET status = $2, attempts = $3, \
                 next_attempt_ms = COALESCE($4, next_attempt_ms), last_error = $5 \
                 WHERE tenant_id = $6 AND id = $1 AND status = 'pending'")
            .bind(id)
            .bind(status_after_failure(next_attempt_ms).as_str())
            .bind(i64::from(attempts))
            .bind(next_attempt_ms)
            .bind(error)
            .bind(tenant),
        )
        .await?;
        conn.commit().await
    }

    async fn list_billing_events(
        &self,
        month: Option<&str>,
    ) -> Result<Vec<BillingEvent>, StoreError> {
        let mut conn = self.admin_read().await?;
        // The payload stays out of listings (it is not shown). Byte order,
        // whatever the database's collation.
        let rows = conn
            .fetch_all(
                sql(
                    "SELECT id, tenant_id, month, status, attempts, next_attempt_ms, \
                     last_error, created_at, delivered_at, CAST('' AS TEXT) AS payload \
                     FROM billing_events WHERE CAST($1 AS TEXT) IS NULL OR month = $1 \
                     ORDER BY month COLLATE \"C\", tenant_id COLLATE \"C\"",
                )
                .bind(month),
            )
            .await?;
        rows.iter().map(decode).collect()
    }

    async fn next_due_ms(&self) -> Result<Option<i64>, StoreError> {
        let mut conn = self.admin_read().await?;
        conn.scalar(sql(
            "SELECT MIN(next_attempt_ms) FROM billing_events WHERE status = 'pending'",
        ))
        .await
    }
}
