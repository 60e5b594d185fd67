//! [`JobQueue`]: the worker pool's cross-tenant queue, written once for
//! [`Db`] (either engine).
//!
//! **Isolation.** The queue's cross-tenant operations ([`JobQueue::claim`],
//! [`JobQueue::reap_expired`], [`JobQueue::depth`]) run on the
//! administrative path. The operations on one claimed job (heartbeat,
//! complete, fail, release) run on [`Db::write_for`] the job row's tenant,
//! so the record a completed job writes is bound to that tenant.
//!
//! **Guards.** Every transition guards on the job's status and lease
//! owner, so two workers can never both complete a job and a cancelled job
//! is never completed.
//!
//! **Scheduling.** A claim takes the tenant whose turn (`job_turns`) is
//! oldest among those with a claimable job and fewer running jobs than the
//! cap, then that tenant's job of highest priority, then oldest, and gives
//! the tenant the newest turn. Only the choice of tenant differs by engine:
//! - SQLite serialises every write transaction (`BEGIN IMMEDIATE`), so a
//!   claim reads the pending and running jobs directly and nothing it
//!   reads can change under it.
//! - On PostgreSQL, `job_turns` also holds each tenant's pending and
//!   running counts, kept exact by a trigger on `detection_jobs` (see
//!   `migrations/postgres/0002_jobs.sql`); the cross-tenant statements read
//!   that small table, never an index not led by `tenant_id`. A claim
//!   locks the chosen tenant's `job_turns` row, so claims of one tenant are
//!   serialised and the running count they check stays exact (the cap
//!   holds). It locks `FOR UPDATE SKIP LOCKED`, so concurrent workers take
//!   different tenants (the round-robin holds across them). Within the
//!   tenant, the job is taken `SKIP LOCKED` too, so a job a cancel is
//!   changing is passed over rather than waited for. When every candidate
//!   is locked (that tenant is being claimed, submitted to or completed
//!   right now), the claim does not report an empty queue: it starts a
//!   second transaction and waits for the first candidate's row, then
//!   checks it again.
//!
//! **Locking (PostgreSQL).** No transaction waits for a lock while holding
//! another one that could close a cycle:
//! - the skipping claim transaction never waits (rows it locked and then
//!   found no longer qualifying stay locked until it ends); the waiting
//!   one waits for one `job_turns` row while holding nothing, then only
//!   skips;
//! - everything else locks the job row before the tenant's `job_turns` row
//!   (through the trigger). A completion locks its job row, writes the
//!   record (stats row, usage counter, record: the records lock order) and
//!   changes the job's status last, so it holds the tenant's `job_turns`
//!   row only at the end of its transaction;
//! - reapers of several nodes are serialised by an advisory lock (a reaper
//!   that finds it taken skips this round), since each updates many
//!   tenants' `job_turns` rows in no fixed order.

use std::time::Duration;

use async_trait::async_trait;

use super::JobQueue;
use super::model::{ClaimedJob, LEASE_EXPIRED, LEASE_EXPIRED_RETRYING, StoredClaim, millis};
use crate::records::{NewRecord, RecordId};
use crate::store::{Conn, Db, Dialect, Row, Sql, StoreError, sql};
use crate::usage::as_u64;

/// The job columns a claim returns.
const CLAIM_COLUMNS: &str = "id, tenant_id, repository_url, metadata, attempts, max_attempts";

/// The guard of every transition of a claimed job (`$1` tenant, `$2` id,
/// `$3` lease owner): still running, still this worker's.
const OURS: &str = "tenant_id = $1 AND id = $2 AND status = 'running' AND lease_owner = $3";

/// The advisory lock (transaction-scoped) held by the one PostgreSQL
/// reaper running at a time: "tenantd" and 1 in its bytes.
const REAPER_LOCK: i64 = 0x7465_6e61_6e74_6401;

fn decode_claim(row: &Row, owner: &str) -> Result<ClaimedJob, StoreError> {
    StoredClaim {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        repository_url: row.get(2)?,
        metadata: row.get(3)?,
        attempts: row.get(4)?,
        max_attempts: row.get(5)?,
    }
    .into_claimed(owner)
}

/// A statement on one claimed job: `text` with the job bound to `$1`
/// (tenant), `$2` (id) and `$3` (lease owner), as [`OURS`] reads them.
/// Marks the job completed with its record `$3` at `$4`, once the guard
/// has found it still ours (and locked it, on PostgreSQL).
const FINISH: &str = "UPDATE detection_jobs SET status = 'completed', lease_owner = NULL, \
     lease_expires_ms = NULL, error = NULL, record_id = $3, updated_at = $4, \
     finished_at = $4 WHERE tenant_id = $1 AND id = $2";

fn on_job(text: String, job: &ClaimedJob) -> Sql {
    Sql::owned(text)
        .bind(&job.tenant)
        .bind(job.id.as_str())
        .bind(&job.owner)
}

/// What follows a `SELECT` that takes only rows no other transaction
/// holds. SQLite has nothing to skip: its write transactions never run
/// side by side.
fn skip_locked(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
    }
}

/// Claims `tenant`'s next job on `conn`, a transaction that holds the
/// tenant's turn (its `job_turns` row on PostgreSQL; the database on
/// SQLite): highest priority, then oldest, among the available ones (one a
/// concurrent cancel holds is skipped, not waited for). Gives the tenant
/// the newest turn and commits; `None`, rolled back, when no job was free.
async fn take_job(
    db: &Db,
    mut conn: Conn,
    tenant: &str,
    owner: &str,
    lease: Duration,
    now: i64,
) -> Result<Option<ClaimedJob>, StoreError> {
    let text = format!(
        "UPDATE detection_jobs SET status = 'running', attempts = attempts + 1, \
         lease_owner = $2, lease_expires_ms = $3, started_at = $4, updated_at = $4 \
         WHERE tenant_id = $1 AND status = 'pending' AND seq = \
             (SELECT seq FROM detection_jobs WHERE tenant_id = $1 AND status = 'pending' \
              AND available_ms <= $5 ORDER BY priority DESC, seq LIMIT 1{}) \
         RETURNING {CLAIM_COLUMNS}",
        skip_locked(conn.dialect())
    );
    let row = conn
        .fetch_optional(
            Sql::owned(text)
                .bind(tenant)
                .bind(owner)
                .bind(now.saturating_add(millis(lease)))
                .bind(db.now())
                .bind(now),
        )
        .await?;
    let Some(row) = row else {
        conn.rollback().await?;
        return Ok(None);
    };
    // On PostgreSQL the row exists (the trigger made it) and is ours; on
    // SQLite the tenant's first turn creates it.
    conn.execute(
        sql("INSERT INTO job_turns (tenant_id, last_turn) \
             VALUES ($1, (SELECT coalesce(max(last_turn), 0) + 1 FROM job_turns)) \
             ON CONFLICT (tenant_id) DO UPDATE SET last_turn = excluded.last_turn")
        .bind(tenant),
    )
    .await?;
    conn.commit().await?;
    decode_claim(&row, owner).map(Some)
}

/// The state of an expired lease after reaping: failed when out of
/// attempts (keeping an earlier error), otherwise pending again after the
/// backoff. `$1` now (ms), `$2` now (text), `$3` and `$4` the errors, `$5`
/// when the job is available again.
const REAPED: &str = "status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'pending' END, \
     lease_owner = NULL, lease_expires_ms = NULL, \
     error = CASE WHEN attempts >= max_attempts THEN coalesce(error, $3) ELSE $4 END, \
     available_ms = CASE WHEN attempts >= max_attempts THEN available_ms ELSE $5 END, \
     updated_at = $2, \
     finished_at = CASE WHEN attempts >= max_attempts THEN $2 ELSE finished_at END";

#[async_trait]
impl JobQueue for Db {
    async fn depth(&self) -> Result<(u64, u64), StoreError> {
        let text = match self.dialect() {
            Dialect::Sqlite => {
                "SELECT CAST(coalesce(sum(status = 'pending'), 0) AS BIGINT), \
                 CAST(coalesce(sum(status = 'running'), 0) AS BIGINT) \
                 FROM detection_jobs WHERE status IN ('pending', 'running')"
            }
            // The trigger-kept counts: no scan of detection_jobs.
            Dialect::Postgres => {
                "SELECT CAST(coalesce(sum(pending), 0) AS BIGINT), \
                 CAST(coalesce(sum(running), 0) AS BIGINT) FROM job_turns"
            }
        };
        let row = self.admin_read().await?.fetch_one(sql(text)).await?;
        Ok((as_u64(row.get(0)?), as_u64(row.get(1)?)))
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        per_tenant_cap: i64,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let now = self.clock().now_ms();
        // The tenant whose turn is oldest among those with a claimable job
        // (`$1`: now, in ms) and fewer running jobs than the cap (`$2`).
        let next_tenant = match self.dialect() {
            Dialect::Sqlite => {
                "SELECT p.tenant_id \
                 FROM (SELECT tenant_id FROM detection_jobs \
                       WHERE status = 'pending' AND available_ms <= $1 GROUP BY tenant_id) p \
                 LEFT JOIN (SELECT tenant_id, count(*) AS n FROM detection_jobs \
                            WHERE status = 'running' GROUP BY tenant_id) r \
                     ON r.tenant_id = p.tenant_id \
                 LEFT JOIN job_turns t ON t.tenant_id = p.tenant_id \
                 WHERE coalesce(r.n, 0) < $2 \
                 ORDER BY coalesce(t.last_turn, 0), p.tenant_id COLLATE \"C\" LIMIT 1"
            }
            Dialect::Postgres => {
                "SELECT t.tenant_id FROM job_turns t \
                 WHERE t.pending > 0 AND t.running < $2 \
                 AND EXISTS (SELECT 1 FROM detection_jobs d WHERE d.tenant_id = t.tenant_id \
                             AND d.status = 'pending' AND d.available_ms <= $1) \
                 ORDER BY t.last_turn, t.tenant_id COLLATE \"C\" LIMIT 1"
            }
        };
        // The first candidate no other transaction holds. On PostgreSQL
        // this transaction never waits for a lock: rows it locked and then
        // found no longer qualifying stay locked until it ends, so it must
        // not wait while holding them.
        let mut conn = self.admin_write().await?;
        let skipping = match conn.dialect() {
            Dialect::Sqlite => next_tenant.to_owned(),
            Dialect::Postgres => format!("{next_tenant} FOR UPDATE OF t SKIP LOCKED"),
        };
        let tenant: Option<String> = conn
            .scalar_optional(Sql::owned(skipping).bind(now).bind(per_tenant_cap))
            .await?;
        if let Some(tenant) = tenant {
            return take_job(self, conn, &tenant, owner, lease, now).await;
        }
        conn.rollback().await?;
        if self.dialect() == Dialect::Sqlite {
            // Nothing was skipped: the queue is empty for now.
            return Ok(None);
        }
        // No candidate, or every one held (its tenant is being claimed,
        // submitted to or completed right now): wait for the first one,
        // holding no other lock, and check it again once it is ours.
        let mut conn = self.admin_write().await?;
        let first: Option<String> = conn
            .scalar_optional(sql(next_tenant).bind(now).bind(per_tenant_cap))
            .await?;
        let tenant: Option<String> = match first {
            None => None,
            Some(first) => {
                conn.scalar_optional(
                    sql("SELECT tenant_id FROM job_turns \
                         WHERE tenant_id = $1 AND pending > 0 AND running < $2 FOR UPDATE")
                    .bind(first)
                    .bind(per_tenant_cap),
                )
                .await?
            }
        };
        match tenant {
            Some(tenant) => take_job(self, conn, &tenant, owner, lease, now).await,
            None => {
                conn.rollback().await?;
                Ok(None)
            }
        }
    }

    async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool, StoreError> {
        let expires = self.clock().now_ms().saturating_add(millis(lease));
        let mut conn = self.write_for(&job.tenant).await?;
        let changed = conn
            .execute(
                on_job(
                    format!("UPDATE detection_jobs SET lease_expires_ms = $4 WHERE {OURS}"),
                    job,
                )
                .bind(expires),
            )
            .await?;
        conn.commit().await?;
        Ok(changed == 1)
    }

    async fn complete(
        &self,
        job: &ClaimedJob,
        record: NewRecord,
    ) -> Result<Option<RecordId>, StoreError> {
        // The job row is locked first (a cancel or a reaper waits, or
        // skips it, until this transaction ends) and its status changed
        // last (see the module's lock order); the record's tenant is the
        // job row's (and, on PostgreSQL, the transaction's).
        let mut conn = self.write_for(&job.tenant).await?;
        let guard = format!(
            "SELECT 1 FROM detection_jobs WHERE {OURS}{}",
            conn.dialect().lock_rows()
        );
        if conn
            .scalar_optional::<i32>(on_job(guard, job))
            .await?
            .is_none()
        {
            // Cancelled or lease lost: write nothing.
            conn.rollback().await?;
            return Ok(None);
        }
        let written =
            crate::records::upsert_in(&mut conn, self.clock(), &job.tenant, &record, &job.quotas)
                .await?;
        conn.execute(
            sql(FINISH)
                .bind(&job.tenant)
                .bind(job.id.as_str())
                .bind(written.id.as_str())
                .bind(self.now()),
        )
        .await?;
        conn.commit().await?;
        Ok(Some(written.id))
    }

    async fn complete_with(&self, job: &ClaimedJob, record: &RecordId) -> Result<bool, StoreError> {
        let mut conn = self.write_for(&job.tenant).await?;
        let done = conn
            .execute(
                on_job(
                    format!(
                        "UPDATE detection_jobs SET status = 'completed', lease_owner = NULL, \
                         lease_expires_ms = NULL, error = NULL, record_id = $4, updated_at = $5, \
                         finished_at = $5 WHERE {OURS}"
                    ),
                    job,
                )
                .bind(record.as_str())
                .bind(self.now()),
            )
            .await?;
        conn.commit().await?;
        Ok(done == 1)
    }

    async fn fail(
        &self,
        job: &ClaimedJob,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let statement = match job.retry_delay(retry_after) {
            Some(delay) => on_job(
                format!(
                    "UPDATE detection_jobs SET status = 'pending', lease_owner = NULL, \
                     lease_expires_ms = NULL, error = $4, available_ms = $6, updated_at = $5 \
                     WHERE {OURS}"
                ),
                job,
            )
            .bind(error)
            .bind(now)
            .bind(self.clock().now_ms().saturating_add(millis(delay))),
            None => on_job(
                format!(
                    "UPDATE detection_jobs SET status = 'failed', lease_owner = NULL, \
                     lease_expires_ms = NULL, error = $4, updated_at = $5, finished_at = $5 \
                     WHERE {OURS}"
                ),
                job,
            )
            .bind(error)
            .bind(now),
        };
        let mut conn = self.write_for(&job.tenant).await?;
        conn.execute(statement).await?;
        conn.commit().await
    }

    async fn release(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        let mut conn = self.write_for(&job.tenant).await?;
        conn.execute(
            on_job(
                format!(
                    "UPDATE detection_jobs SET status = 'pending', \
                     attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, \
                     lease_owner = NULL, lease_expires_ms = NULL, updated_at = $4 WHERE {OURS}"
                ),
                job,
            )
            .bind(self.now()),
        )
        .await?;
        conn.commit().await
    }

    async fn reap_expired(&self, backoff: Duration) -> Result<u64, StoreError> {
        let now = self.clock().now_ms();
        let mut conn = self.admin_write().await?;
        let text = match conn.dialect() {
            // One writer at a time already.
            Dialect::Sqlite => format!(
                "UPDATE detection_jobs SET {REAPED} \
                 WHERE status = 'running' AND lease_expires_ms < $1"
            ),
            Dialect::Postgres => {
                let ours: bool = conn
                    .scalar(sql("SELECT pg_try_advisory_xact_lock($1)").bind(REAPER_LOCK))
                    .await?;
                if !ours {
                    // Another node is reaping now; what it leaves, the
                    // next round takes.
                    conn.rollback().await?;
                    return Ok(0);
                }
                // Tenants with running jobs (the trigger-kept count),
                // then, tenant by tenant (LATERAL), their expired leases
                // through the (tenant_id, status, …) index. Rows a worker
                // is completing or renewing right now are skipped, not
                // waited for.
                format!(
                    "WITH expired AS ( \
                         SELECT d.tenant_id, d.id FROM job_turns t CROSS JOIN LATERAL \
                             (SELECT tenant_id, id FROM detection_jobs \
                              WHERE tenant_id = t.tenant_id AND status = 'running' \
                              AND lease_expires_ms < $1 FOR UPDATE SKIP LOCKED) d \
                         WHERE t.running > 0) \
                     UPDATE detection_jobs j SET {REAPED} \
                     FROM expired e WHERE j.tenant_id = e.tenant_id AND j.id = e.id"
                )
            }
        };
        let reaped = conn
            .execute(
                Sql::owned(text)
                    .bind(now)
                    .bind(self.now())
                    .bind(LEASE_EXPIRED)
                    .bind(LEASE_EXPIRED_RETRYING)
                    .bind(now.saturating_add(millis(backoff))),
            )
            .await?;
        conn.commit().await?;
        Ok(reaped)
    }
}
