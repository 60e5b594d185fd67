//! [`JobRepo`] and [`JobQueue`] for the SQLite backend.
//!
//! Every queue transition is one `BEGIN IMMEDIATE` transaction guarded by
//! the job's current status and lease owner, so two workers can never both
//! complete a job, and a cancelled job can never be completed.

use crate::limits::QuotaExceeded;
use crate::usage::metric;
use crate::usage::sqlite_support::{count_in_tx, counter_in_tx};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use super::model::{
    ClaimedJob, DetectionId, Job, JobPage, JobStatus, LEASE_EXPIRED, LEASE_EXPIRED_RETRYING,
    NewJob, StoredClaim, StoredJob, millis as ms,
};
use super::{CancelOutcome, JobQueue, JobRepo};
use crate::clock::now_ms;
use crate::clock::now_rfc3339;
use crate::records::{NewRecord, RecordId, page_cursor, upsert_in_tx};
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError, TenantScope};

const JOB_COLUMNS: &str = "id, tenant_id, repository_url, priority, metadata, status, attempts, \
     max_attempts, error, record_id, created_at, updated_at, started_at, finished_at";

fn decode(row: &SqliteRow) -> Result<Job, StoreError> {
    StoredJob {
        id: row.try_get("id").map_err(map_sqlx)?,
        tenant_id: row.try_get("tenant_id").map_err(map_sqlx)?,
        repository_url: row.try_get("repository_url").map_err(map_sqlx)?,
        priority: row.try_get("priority").map_err(map_sqlx)?,
        metadata: row.try_get("metadata").map_err(map_sqlx)?,
        status: row.try_get("status").map_err(map_sqlx)?,
        attempts: row.try_get("attempts").map_err(map_sqlx)?,
        max_attempts: row.try_get("max_attempts").map_err(map_sqlx)?,
        error: row.try_get("error").map_err(map_sqlx)?,
        record_id: row.try_get("record_id").map_err(map_sqlx)?,
        created_at: row.try_get("created_at").map_err(map_sqlx)?,
        updated_at: row.try_get("updated_at").map_err(map_sqlx)?,
        started_at: row.try_get("started_at").map_err(map_sqlx)?,
        finished_at: row.try_get("finished_at").map_err(map_sqlx)?,
    }
    .into_job()
}

impl SqliteStore {
    async fn fetch_job(
        tx: &mut Transaction<'static, Sqlite>,
        tenant: &str,
        id: &str,
    ) -> Result<Option<Job>, StoreError> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM detection_jobs WHERE tenant_id = ?1 AND id = ?2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(decode).transpose()
    }
}

#[async_trait]
impl JobRepo for SqliteStore {
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
        let mut tx = self.write_tx().await?;
        if let Some(limit) = scope.quotas().max_detections_per_month {
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
        sqlx::query(
            "INSERT INTO detection_jobs (tenant_id, id, repository_url, priority, metadata, status, \
             max_attempts, available_ms, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?8)",
        )
        .bind(tenant)
        .bind(id.as_str())
        .bind(&new.repository_url)
        .bind(new.priority)
        .bind(metadata)
        .bind(max_attempts)
        .bind(now_ms())
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let job = Self::fetch_job(&mut tx, tenant, id.as_str())
            .await?
            .ok_or_else(|| StoreError::Internal("inserted job vanished".into()))?;
        self.commit(tx).await?;
        Ok(job)
    }

    async fn get_job(
        &self,
        scope: &TenantScope,
        id: &DetectionId,
    ) -> Result<Option<Job>, StoreError> {
        let sql =
            format!("SELECT {JOB_COLUMNS} FROM detection_jobs WHERE tenant_id = ?1 AND id = ?2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(scope.tenant().as_str())
            .bind(id.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_sqlx)?;
        row.as_ref().map(decode).transpose()
    }

    async fn list_jobs(
        &self,
        scope: &TenantScope,
        status: Option<JobStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<JobPage, StoreError> {
        let tenant = scope.tenant().as_str();
        let filter = "tenant_id = ?1 AND (?2 = '' OR status = ?2)";
        let status_text = status.map(JobStatus::as_str).unwrap_or("");
        let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM detection_jobs WHERE {filter}"
        )))
        .bind(tenant)
        .bind(status_text)
        .fetch_one(&self.pool)
        .await
        .map_err(map_sqlx)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM detection_jobs WHERE {filter} ORDER BY seq DESC LIMIT ?3 OFFSET ?4"
        )))
        .bind(tenant)
        .bind(status_text)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)?;
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
        let now = now_rfc3339();
        let mut tx = self.write_tx().await?;
        let changed = sqlx::query(
            "UPDATE detection_jobs SET status = 'cancelled', lease_owner = NULL, lease_expires_ms = NULL, \
             updated_at = ?3, finished_at = ?3 \
             WHERE tenant_id = ?1 AND id = ?2 AND status IN ('pending', 'running')",
        )
        .bind(tenant)
        .bind(id.as_str())
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        let job = Self::fetch_job(&mut tx, tenant, id.as_str()).await?;
        self.commit(tx).await?;
        Ok(match job {
            None => CancelOutcome::NotFound,
            Some(job) if changed == 1 => CancelOutcome::Cancelled(Box::new(job)),
            Some(job) => CancelOutcome::AlreadyFinal(job.status),
        })
    }
}

#[async_trait]
impl JobQueue for SqliteStore {
    async fn depth(&self) -> Result<(u64, u64), StoreError> {
        let (pending, running): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'running'), 0) \
             FROM detection_jobs WHERE status IN ('pending', 'running')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(map_sqlx)?;
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
        let mut tx = self.write_tx().await?;
        // The tenant whose turn is oldest among those with claimable work
        // and free concurrency.
        let tenant: Option<String> = sqlx::query_scalar(
            "SELECT p.tenant_id \
             FROM (SELECT tenant_id FROM detection_jobs \
                   WHERE status = 'pending' AND available_ms <= ?1 GROUP BY tenant_id) p \
             LEFT JOIN (SELECT tenant_id, count(*) AS n FROM detection_jobs \
                        WHERE status = 'running' GROUP BY tenant_id) r ON r.tenant_id = p.tenant_id \
             LEFT JOIN job_turns t ON t.tenant_id = p.tenant_id \
             WHERE coalesce(r.n, 0) < ?2 \
             ORDER BY coalesce(t.last_turn, 0), p.tenant_id LIMIT 1",
        )
        .bind(now)
        .bind(per_tenant_cap)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let Some(tenant) = tenant else {
            return Ok(None);
        };
        let row = sqlx::query(
            "UPDATE detection_jobs SET status = 'running', attempts = attempts + 1, lease_owner = ?2, \
             lease_expires_ms = ?3, started_at = ?4, updated_at = ?4, error = error \
             WHERE seq = (SELECT seq FROM detection_jobs WHERE tenant_id = ?1 AND status = 'pending' \
                          AND available_ms <= ?5 ORDER BY priority DESC, seq LIMIT 1) \
             RETURNING id, tenant_id, repository_url, metadata, attempts, max_attempts",
        )
        .bind(&tenant)
        .bind(owner)
        .bind(now.saturating_add(ms(lease)))
        .bind(now_rfc3339())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let Some(row) = row else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO job_turns (tenant_id, last_turn) \
             VALUES (?1, (SELECT coalesce(max(last_turn), 0) + 1 FROM job_turns)) \
             ON CONFLICT (tenant_id) DO UPDATE SET last_turn = excluded.last_turn",
        )
        .bind(&tenant)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        StoredClaim {
            id: row.try_get("id").map_err(map_sqlx)?,
            tenant_id: row.try_get("tenant_id").map_err(map_sqlx)?,
            repository_url: row.try_get("repository_url").map_err(map_sqlx)?,
            metadata: row.try_get("metadata").map_err(map_sqlx)?,
            attempts: row.try_get("attempts").map_err(map_sqlx)?,
            max_attempts: row.try_get("max_attempts").map_err(map_sqlx)?,
        }
        .into_claimed(owner)
        .map(Some)
    }

    async fn heartbeat(&self, job: &ClaimedJob, lease: Duration) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE detection_jobs SET lease_expires_ms = ?4 \
             WHERE tenant_id = ?1 AND id = ?2 AND status = 'running' AND lease_owner = ?3",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(&job.owner)
        .bind(now_ms().saturating_add(ms(lease)))
        .execute(&self.pool)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        Ok(changed == 1)
    }

    async fn complete(
        &self,
        job: &ClaimedJob,
        record: NewRecord,
    ) -> Result<Option<RecordId>, StoreError> {
        let now = now_rfc3339();
        let mut tx = self.write_tx().await?;
        let still_ours = sqlx::query(
            "UPDATE detection_jobs SET status = 'completed', lease_owner = NULL, lease_expires_ms = NULL, \
             error = NULL, updated_at = ?4, finished_at = ?4 \
             WHERE tenant_id = ?1 AND id = ?2 AND status = 'running' AND lease_owner = ?3",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(&job.owner)
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        if still_ours != 1 {
            // Cancelled or lease lost: write nothing.
            tx.rollback().await.map_err(map_sqlx)?;
            return Ok(None);
        }
        // The record's tenant is the job row's tenant.
        let written = upsert_in_tx(&mut tx, &job.tenant, &record, &job.quotas).await?;
        sqlx::query("UPDATE detection_jobs SET record_id = ?3 WHERE tenant_id = ?1 AND id = ?2")
            .bind(job.tenant.as_str())
            .bind(job.id.as_str())
            .bind(written.id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(Some(written.id))
    }

    async fn complete_with(&self, job: &ClaimedJob, record: &RecordId) -> Result<bool, StoreError> {
        let now = now_rfc3339();
        let mut tx = self.write_tx().await?;
        let done = sqlx::query(
            "UPDATE detection_jobs SET status = 'completed', lease_owner = NULL, lease_expires_ms = NULL, \
             error = NULL, record_id = ?4, updated_at = ?5, finished_at = ?5 \
             WHERE tenant_id = ?1 AND id = ?2 AND status = 'running' AND lease_owner = ?3",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(&job.owner)
        .bind(record.as_str())
        .bind(&now)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        tx.commit().await.map_err(map_sqlx)?;
        Ok(done == 1)
    }

    async fn fail(
        &self,
        job: &ClaimedJob,
        error: &str,
        retry_after: Option<Duration>,
    ) -> Result<(), StoreError> {
        let now = now_rfc3339();
        let retry = job.retry_delay(retry_after);
        let sql = if retry.is_some() {
            "UPDATE detection_jobs SET status = 'pending', lease_owner = NULL, lease_expires_ms = NULL, \
             error = ?4, available_ms = ?5, updated_at = ?6 \
             WHERE tenant_id = ?1 AND id = ?2 AND status = 'running' AND lease_owner = ?3"
        } else {
            "UPDATE detection_jobs SET status = 'failed', lease_owner = NULL, lease_expires_ms = NULL, \
             error = ?4, updated_at = ?6, finished_at = ?6 \
             WHERE tenant_id = ?1 AND id = ?2 AND status = 'running' AND lease_owner = ?3 AND ?5 >= 0"
        };
        let mut tx = self.write_tx().await?;
        sqlx::query(sql)
            .bind(job.tenant.as_str())
            .bind(job.id.as_str())
            .bind(&job.owner)
            .bind(error)
            .bind(now_ms().saturating_add(retry.map_or(0, ms)))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(())
    }

    async fn release(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        let mut tx = self.write_tx().await?;
        sqlx::query(
            "UPDATE detection_jobs SET status = 'pending', attempts = max(attempts - 1, 0), \
             lease_owner = NULL, lease_expires_ms = NULL, updated_at = ?4 \
             WHERE tenant_id = ?1 AND id = ?2 AND status = 'running' AND lease_owner = ?3",
        )
        .bind(job.tenant.as_str())
        .bind(job.id.as_str())
        .bind(&job.owner)
        .bind(now_rfc3339())
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(())
    }

    async fn reap_expired(&self, backoff: Duration) -> Result<u64, StoreError> {
        let now = now_ms();
        let stamp = now_rfc3339();
        let mut tx = self.write_tx().await?;
        let failed = sqlx::query(
            "UPDATE detection_jobs SET status = 'failed', lease_owner = NULL, lease_expires_ms = NULL, \
             error = coalesce(error, ?3), updated_at = ?2, finished_at = ?2 \
             WHERE status = 'running' AND lease_expires_ms < ?1 AND attempts >= max_attempts",
        )
        .bind(now)
        .bind(&stamp)
        .bind(LEASE_EXPIRED)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        let retried = sqlx::query(
            "UPDATE detection_jobs SET status = 'pending', lease_owner = NULL, lease_expires_ms = NULL, \
             error = ?4, available_ms = ?3, updated_at = ?2 \
             WHERE status = 'running' AND lease_expires_ms < ?1",
        )
        .bind(now)
        .bind(&stamp)
        .bind(now.saturating_add(ms(backoff)))
        .bind(LEASE_EXPIRED_RETRYING)
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?
        .rows_affected();
        tx.commit().await.map_err(map_sqlx)?;
        Ok(failed + retried)
    }
}
