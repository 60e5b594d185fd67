//! [`JobRepo`] and [`JobQueue`] for the PostgreSQL backend.
//!
//! **Isolation.** A tenant's own operations ([`JobRepo`]) run in
//! [`PgStore::tenant_tx`] (the app role, bound by row-level security) and
//! still name `tenant_id = $1` first in every statement. The queue's
//! cross-tenant operations — [`JobQueue::claim`], [`JobQueue::reap_expired`]
//! and [`JobQueue::depth`] — run on the admin role's pool. The operations
//! on one claimed job (heartbeat, complete, fail, release) run in
//! [`PgStore::tenant_tx_for`] the job row's tenant, so the record a
//! completed job writes is bound by row-level security to that tenant.
//!
//! **Scheduling.** `job_turns` holds, per tenant, its last turn and its
//! pending and running counts, which a trigger on `detection_jobs` keeps
//! exact (see `migrations/postgres/0002_jobs.sql`); the cross-tenant
//! statements read that small table, never an index not led by
//! `tenant_id`. A claim takes the tenant whose turn is oldest among those
//! with a claimable job and fewer running jobs than the cap, and locks
//! that tenant's `job_turns` row: claims of one tenant are serialised, so
//! the running count they check stays exact and the cap holds. It locks
//! `FOR UPDATE SKIP LOCKED`, so concurrent workers take different tenants
//! (the round-robin holds across them). Within the tenant, the job
//! (highest priority, then oldest) is taken `FOR UPDATE SKIP LOCKED` too,
//! so a job a cancel is changing is passed over rather than waited for.
//! When every candidate is locked (that tenant is being claimed, submitted
//! to or completed right now), the claim does not report an empty queue:
//! it starts a second transaction and waits for the first candidate's row,
//! then checks it again.
//!
//! **Locking.** Every transition guards on the job's status and lease
//! owner, as on SQLite, so two workers can never both complete a job and a
//! cancelled job is never completed. No transaction waits for a lock while
//! holding another one that could close a cycle:
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
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};

use super::model::{
    ClaimedJob, DetectionId, Job, JobPage, JobStatus, LEASE_EXPIRED, LEASE_EXPIRED_RETRYING,
    NewJob, StoredClaim, StoredJob, millis,
};
use super::{CancelOutcome, JobQueue, JobRepo};
use crate::clock::{now_ms, now_rfc3339};
use crate::limits::QuotaExceeded;
use crate::records::pg_support::upsert_in_tx;
use crate::records::{NewRecord, RecordId, page_cursor};
use crate::store::pg_support::map_pg;
use crate::store::{PgStore, StoreError, TenantScope};
use crate::usage::metric;
use crate::usage::pg_support::{count_in_tx, counter_in_tx};

const JOB_COLUMNS: &str = "id, tenant_id, repository_url, priority, metadata, status, attempts, \
     max_attempts, error, record_id, created_at, updated_at, started_at, finished_at";

/// The advisory lock (transaction-scoped) held by the one reaper running
/// at a time: "tenantd" and 1 in its bytes.
const REAPER_LOCK: i64 = 0x7465_6e61_6e74_6401;

/// The tenant whose turn is oldest among those with a claimable job
/// (`$1`: now, in ms) and fewer running jobs than the cap (`$2`).
const NEXT_TENANT: &str = "SELECT t.tenant_id FROM job_turns t \
     WHERE t.pending > 0 AND t.running < $2 \
     AND EXISTS (SELECT 1 FROM detection_jobs d WHERE d.tenant_id = t.tenant_id \
                 AND d.status = 'pending' AND d.available_ms <= $1) \
     ORDER BY t.last_turn, t.tenant_id COLLATE \"C\" LIMIT 1";

fn decode(row: &PgRow) -> Result<Job, StoreError> {
    StoredJob {
        id: row.try_get("id").map_err(map_pg)?,
        tenant_id: row.try_get("tenant_id").map_err(map_pg)?,
        repository_url: row.try_get("repository_url").map_err(map_pg)?,
        priority: row.try_get("priority").map_err(map_pg)?,
        metadata: row.try_get("metadata").map_err(map_pg)?,
        status: row.try_get("status").map_err(map_pg)?,
        attempts: row.try_get("attempts").map_err(map_pg)?,
        max_attempts: row.try_get("max_attempts").map_err(map_pg)?,
        error: row.try_get("error").map_err(map_pg)?,
        record_id: row.try_get("record_id").map_err(map_pg)?,
        created_at: row.try_get("created_at").map_err(map_pg)?,
        updated_at: row.try_get("updated_at").map_err(map_pg)?,
        started_at: row.try_get("started_at").map_err(map_pg)?,
        finished_at: row.try_get("finished_at").map_err(map_pg)?,
    }
    .into_job()
}

/// Job `id` of `tenant`, read in `tx`.
async fn fetch_job(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &str,
    id: &str,
) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM detection_jobs WHERE tenant_id = $1 AND id = $2");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await
        .map_err(map_pg)?;
    row.as_ref().map(decode).transpose()
}

/// Claims `tenant`'s next job in `tx`, which holds the tenant's `job_turns`
/// row: highest priority, then oldest, among the available ones (one a
/// concurrent cancel holds is skipped, not waited for). Gives the tenant
/// the newest turn and commits; `None`, rolled back, when no job was free.
async fn take_job(
    mut tx: Transaction<'static, Postgres>,
    tenant: &str,
    owner: &str,
    lease: Duration,
    now: i64,
) -> Result<Option<ClaimedJob>, StoreError> {
    // A job a concurrent cancel holds is skipped.
    let row = sqlx::query(
        "UPDATE detection_jobs SET status = 'running', attempts = attempts + 1, \
         lease_owner = $2, lease_expires_ms = $3, started_at = $4, updated_at = $4 \
         WHERE tenant_id = $1 AND status = 'pending' AND seq = \
             (SELECT seq FROM detection_jobs WHERE tenant_id = $1 AND status = 'pending' \
              AND available_ms <= $5 ORDER BY priority DESC, seq LIMIT 1 \
              FOR UPDATE SKIP LOCKED) \
         RETURNING id, tenant_id, repository_url, metadata, attempts, max_attempts",
    )
    .bind(tenant)
    .bind(owner)
    .bind(now.saturating_add(millis(lease)))
    .bind(now_rfc3339())
    .bind(now)
    .fetch_optional(&mut *tx)
    .await
    .map_err(map_pg)?;
    let Some(row) = row else {
        tx.rollback().await.map_err(map_pg)?;
        return Ok(None);
    };
    sqlx::query(
        "UPDATE job_turns SET last_turn = (SELECT coalesce(max(last_turn), 0) + 1 FROM job_turns) \
         WHERE tenant_id = $1",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await
    .map_err(map_pg)?;
    tx.commit().await.map_err(map_pg)?;
    StoredClaim {
        id: row.try_get("id").map_err(map_pg)?,
        tenant_id: row.try_get("tenant_id").map_err(map_pg)?,
        repository_url: row.try_get("repository_url").map_err(map_pg)?,
        metadata: row.try_get("metadata").map_err(map_pg)?,
        attempts: row.try_get("attempts").map_err(map_pg)?,
        max_attempts: row.try_get("max_attempts").map_err(map_pg)?,
    }
    .into_claimed(owner)
    .map(Some)
}

#[async_trait]
impl JobRepo for PgStore {
    async fn submit_job(
        &self,
        scope: &TenantScope,
        new: NewJob,
        max_attempts: i64,
    ) -> Result<Job, StoreError> {
        let tenant = scope.tenant().as_str();
        let id = DetectionId::generate();
        let now = now_rfc3339();
        let metadata = serde_json::to_string(&new.metadata)
            .map_err(|e| StoreError::Internal(e.to_string()))?;
        let mut tx = self.tenant_tx(scope).await?;
        if let Some(limit) = scope.quotas().max_detections_per_month {
            // Locks the month's counter until commit: concurrent
            // submissions of the tenant check one after the other.
            let used = counter_in_tx(&mut tx, scope.tenant(), metric::DETECTIONS).await?;
            if used >= limit {
                return Err(QuotaExceeded {
                    quota: "max_detections_per_month",
                    limit,
                }
                .into());
            }
        }
        count_in_tx(&mut tx, scope.tenant(), metric::DETECTIONS, 1).await?;
        let sql = format!(
            "INSERT INTO detection_jobs (tenant_id, id, repository_url, priority, metadata, status, \
             max_attempts, available_ms, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $8) RETURNING {JOB_COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id.as_str())
            .bind(&new.repository_url)
            .bind(new.priority)
            .bind(metadata)
            .bind(max_attempts)
            .bind(now_ms())
            .bind(&now)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_pg)?;
        let job = decode(&row)?;
        self.commit(tx, Some(scope.tenant())).await?;
        Ok(job)
    }

    async fn get_job(
        &self,
        scope: &TenantScope,
        id: &DetectionId,
    ) -> Result<Option<Job>, StoreError> {
        let mut tx = self.tenant_tx(scope).await?;
        let job = fetch_job(&mut tx, scope.tenant().as_str(), id.as_str()).await?;
        tx.commit().await.map_err(map_pg)?;
        Ok(job)
    }

    async fn list_jobs(
        &self,
        scope: &TenantScope,
        status: Option<JobStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<JobPage, StoreError> {
        let tenant = scope.tenant().as_str();
        // Two statements rather than `($2 = '' OR status = $2)`, which a
        // generic plan could not match to the (tenant_id, status) index.
        let (filter, page) = match status {
            Some(_) => ("tenant_id = $1 AND status = $2", "LIMIT $3 OFFSET $4"),
            None => ("tenant_id = $1", "LIMIT $2 OFFSET $3"),
        };
        let mut count = sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
            "SELECT count(*) FROM detection_jobs WHERE {filter}"
        )))
        .bind(tenant);
        let mut rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM detection_jobs WHERE {filter} ORDER BY seq DESC {page}"
        )))
        .bind(tenant);
        if let Some(status) = status {
            count = count.bind(status.as_str());
            rows = rows.bind(status.as_str());
        }
        rows = rows
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let mut tx = self.tenant_tx(scope).await?;
        let total = count.fetch_one(&mut *tx).await.map_err(map_pg)?;
        let rows = rows.fetch_all(&mut *tx).await.map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        let results = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let total = u64::try_from(total).unwrap_or(0);
        let next_cursor = page_cursor(offset, results.len(), total);
        Ok(JobPage {
            total,
            results,
            next_cursor,
        })
    }

    async fn cancel_job(
        &self,
        scope: &TenantScope,
        id: &DetectionId,
    ) -> Result<CancelOutcome, StoreError> {
        let tenant = scope.tenant().as_str();
        let mut tx = self.tenant_tx(scope).await?;
        // Waits for a worker's transaction on the job, then re-checks the
        // status: a job completed meanwhile is already final.
        let sql = format!(
            "UPDATE detection_jobs SET status = 'cancelled', lease_owner = NULL, \
             lease_expires_ms = NULL, updated_at = $3, finished_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND status IN ('pending', 'running') \
             RETURNING {JOB_COLUMNS}"
        );
        let cancelled = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id.as_str())
            .bind(now_rfc3339())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_pg)?;
        let outcome = match cancelled {
            Some(row) => CancelOutcome::Cancelled(Box::new(decode(&row)?)),
            None => match fetch_job(&mut tx, tenant, id.as_str()).await? {
                None => CancelOutcome::NotFound,
                Some(job) => CancelOutcome::AlreadyFinal(job.status),
            },
        };
        self.commit(tx, Some(scope.tenant())).await?;
        Ok(outcome)
    }
}

#[async_trait]
impl JobQueue for PgStore {
    async fn depth(&self) -> Result<(u64, u64), StoreError> {
        // The trigger-kept counts: no scan of detection_jobs.
        let (pending, running): (i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(pending), 0)::bigint, coalesce(sum(running), 0)::bigint \
             FROM job_turns",
        )
        .fetch_one(self.admin_pool())
        .await
        .map_err(map_pg)?;
        Ok((
            u64::try_from(pending).unwrap_or(0),
            u64::try_from(running).unwrap_or(0),
        ))
    }

    async fn claim(
        &self,
        owner: &str,
        lease: Duration,
        per_tenant_cap: i64,
    ) -> Result<Option<ClaimedJob>, StoreError> {
        let now = now_ms();
        // The first candidate no other transaction holds. This transaction
        // never waits for a lock: rows it locked and then found no longer
        // qualifying stay locked until it ends, so it must not wait while
        // holding them.
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        let tenant: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "{NEXT_TENANT} FOR UPDATE OF t SKIP LOCKED"
        )))
        .bind(now)
        .bind(per_tenant_cap)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_pg)?;
        if let Some(tenant) = tenant {
            return take_job(tx, &tenant, owner, lease, now).await;
        }
        tx.rollback().await.map_err(map_pg)?;
        // No candidate, or every one held (its tenant is being claimed,
        // submitted to or completed right now): wait for the first one,
        // holding no other lock, and check it again once it is ours.
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        let first: Option<String> = sqlx::query_scalar(NEXT_TENANT)
            .bind(now)
            .bind(per_tenant_cap)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_pg)?;
        let tenant = match first {
            None => None,
            Some(first) => sqlx::query_scalar::<_, String>(
                "SELECT tenant_id FROM job_turns \
                 WHERE tenant_id = $1 AND pending > 0 AND running < $2 FOR UPDATE",
            )
            .bind(&first)
            .bind(per_tenant_cap)
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_pg)?,
        };
        match tenant {
            Some(tenant) => take_job(tx, &tenant, owner, lease, now).await,
            None => {
                tx.rollback().await.map_err(map_pg)?;
                Ok(None)
            }
        }
    }

    async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx_for(&job.tenant).await?;
        let changed = sqlx::query(
            "UPDATE detection_jobs SET lease_expires_ms = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND lease_owner = $3",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(&job.owner)
        .bind(now_ms().saturating_add(millis(lease)))
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        tx.commit().await.map_err(map_pg)?;
        Ok(changed == 1)
    }

    async fn complete(
        &self,
        job: &ClaimedJob,
        record: NewRecord,
    ) -> Result<Option<RecordId>, StoreError> {
        let now = now_rfc3339();
        let mut tx = self.tenant_tx_for(&job.tenant).await?;
        // Still ours? The row stays locked: a cancel or a reaper waits (or
        // skips it) until this transaction ends.
        let ours: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM detection_jobs \
             WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND lease_owner = $3 \
             FOR UPDATE",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(&job.owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_pg)?;
        if ours.is_none() {
            // Cancelled or lease lost: write nothing.
            tx.rollback().await.map_err(map_pg)?;
            return Ok(None);
        }
        // The record's tenant is the job row's tenant (and the
        // transaction's, for row-level security).
        let written = upsert_in_tx(&mut tx, &job.tenant, &record, &job.quotas).await?;
        sqlx::query(
            "UPDATE detection_jobs SET status = 'completed', lease_owner = NULL, \
             lease_expires_ms = NULL, error = NULL, record_id = $3, updated_at = $4, \
             finished_at = $4 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(written.id.as_str())
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        Ok(Some(written.id))
    }

    async fn complete_with(&self, job: &ClaimedJob, record: &RecordId) -> Result<bool, StoreError> {
        let mut tx = self.tenant_tx_for(&job.tenant).await?;
        let done = sqlx::query(
            "UPDATE detection_jobs SET status = 'completed', lease_owner = NULL, \
             lease_expires_ms = NULL, error = NULL, record_id = $4, updated_at = $5, \
             finished_at = $5 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND lease_owner = $3",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(&job.owner)
        .bind(record.as_str())
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        tx.commit().await.map_err(map_pg)?;
        Ok(done == 1)
    }

    async fn fail(
        &self,
        job: &ClaimedJob,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now = now_rfc3339();
        let query = match job.retry_delay(retry_after) {
            Some(delay) => sqlx::query(
                "UPDATE detection_jobs SET status = 'pending', lease_owner = NULL, \
                 lease_expires_ms = NULL, error = $4, available_ms = $6, updated_at = $5 \
                 WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND lease_owner = $3",
            )
            .bind(job.tenant.as_str())
            .bind(job.id.as_str())
            .bind(&job.owner)
            .bind(error)
            .bind(&now)
            .bind(now_ms().saturating_add(millis(delay))),
            None => sqlx::query(
                "UPDATE detection_jobs SET status = 'failed', lease_owner = NULL, \
                 lease_expires_ms = NULL, error = $4, updated_at = $5, finished_at = $5 \
                 WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND lease_owner = $3",
            )
            .bind(job.tenant.as_str())
            .bind(job.id.as_str())
            .bind(&job.owner)
            .bind(error)
            .bind(&now),
        };
        let mut tx = self.tenant_tx_for(&job.tenant).await?;
        query.execute(&mut *tx).await.map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)
    }

    async fn release(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        let mut tx = self.tenant_tx_for(&job.tenant).await?;
        sqlx::query(
            "UPDATE detection_jobs SET status = 'pending', attempts = greatest(attempts - 1, 0), \
             lease_owner = NULL, lease_expires_ms = NULL, updated_at = $4 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'running' AND lease_owner = $3",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(&job.owner)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)
    }

    async fn reap_expired(&self, backoff: Duration) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(REAPER_LOCK)
            .fetch_one(&mut *tx)
            .await
            .map_err(map_pg)?;
        if !ours {
            // Another node is reaping now; what it leaves, the next round
            // takes.
            tx.rollback().await.map_err(map_pg)?;
            return Ok(0);
        }
        // Tenants with running jobs (the trigger-kept count), then, tenant
        // by tenant (LATERAL), their expired leases through the
        // (tenant_id, status, …) index. Rows a worker is
        // completing or renewing right now are skipped, not waited for.
        // Out of attempts: failed (keeping an earlier error); otherwise
        // pending again after the backoff.
        let reaped = sqlx::query(
            "WITH expired AS ( \
                 SELECT d.tenant_id, d.id FROM job_turns t CROSS JOIN LATERAL \
                     (SELECT tenant_id, id FROM detection_jobs \
                      WHERE tenant_id = t.tenant_id AND status = 'running' \
                      AND lease_expires_ms < $1 FOR UPDATE SKIP LOCKED) d \
                 WHERE t.running > 0) \
             UPDATE detection_jobs j SET \
                 status = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'pending' END, \
                 lease_owner = NULL, lease_expires_ms = NULL, \
                 error = CASE WHEN j.attempts >= j.max_attempts THEN coalesce(j.error, $3) \
                              ELSE $4 END, \
                 available_ms = CASE WHEN j.attempts >= j.max_attempts THEN j.available_ms \
                                     ELSE $5 END, \
                 updated_at = $2, \
                 finished_at = CASE WHEN j.attempts >= j.max_attempts THEN $2 \
                                    ELSE j.finished_at END \
             FROM expired e WHERE j.tenant_id = e.tenant_id AND j.id = e.id",
        )
        .bind(now)
        .bind(now_rfc3339())
        .bind(LEASE_EXPIRED)
        .bind(LEASE_EXPIRED_RETRYING)
        .bind(now.saturating_add(millis(backoff)))
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?
        .rows_affected();
        tx.commit().await.map_err(map_pg)?;
        Ok(reaped)
    }
}
