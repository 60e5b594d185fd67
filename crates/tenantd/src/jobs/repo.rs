//! [`JobRepo`]: a tenant's own jobs, written once for [`Db`] (either
//! engine).
//!
//! Every operation runs on the tenant's connections ([`Db::write`],
//! [`Db::read`]: row-level security on PostgreSQL) and still names
//! `tenant_id = $1` first in every statement. A submission checks and
//! counts the tenant's monthly detections in its own transaction, the
//! counter row locked until it commits (concurrent submissions of the
//! tenant check one after the other).

use async_trait::async_trait;
use tenancy::TenantId;

use super::model::{DetectionId, Job, JobPage, JobStatus, NewJob, StoredJob};
use super::{CancelOutcome, JobRepo};
use crate::limits::QuotaExceeded;
use crate::records::page_cursor;
use crate::store::{Conn, Db, Row, Sql, StoreError, TenantScope};
use crate::usage::{as_u64, count_in, counter_in, metric};

const JOB_COLUMNS: &str = "id, tenant_id, repository_url, priority, metadata, status, attempts, \
     max_attempts, error, record_id, created_at, updated_at, started_at, finished_at";

fn decode(row: &Row) -> Result<Job, StoreError> {
    StoredJob {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        repository_url: row.get(2)?,
        priority: row.get(3)?,
        metadata: row.get(4)?,
        status: row.get(5)?,
        attempts: row.get(6)?,
        max_attempts: row.get(7)?,
        error: row.get(8)?,
        record_id: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        started_at: row.get(12)?,
        finished_at: row.get(13)?,
    }
    .into_job()
}

/// Job `id` of `tenant`, read on `conn`.
async fn fetch_job(
    conn: &mut Conn,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<Job>, StoreError> {
    let text = format!("SELECT {JOB_COLUMNS} FROM detection_jobs WHERE tenant_id = $1 AND id = $2");
    let row = conn
        .fetch_optional(Sql::owned(text).bind(tenant).bind(id))
        .await?;
    row.as_ref().map(decode).transpose()
}

#[async_trait]
impl JobRepo for Db {
    async fn submit_job(
        &self,
        scope: &TenantScope,
        new: NewJob,
        max_attempts: i64,
    ) -> Result<Job, StoreError> {
        let id = DetectionId::generate();
        let now = self.now();
        let now_ms = self.clock().now_ms();
        let metadata = serde_json::to_string(&new.metadata)
            .map_err(|e| StoreError::Internal(e.to_string().into()))?;
        let mut conn = self.write(scope).await?;
        if let Some(limit) = scope.quotas().max_detections_per_month {
            // Locks the month's counter until commit: concurrent
            // submissions of the tenant check one after the other.
            let used =
                counter_in(&mut conn, self.clock(), scope.tenant(), metric::DETECTIONS).await?;
            if used >= limit {
                return Err(QuotaExceeded {
                    quota: "max_detections_per_month",
                    limit,
                }
                .into());
            }
        }
        count_in(
            &mut conn,
            self.clock(),
            scope.tenant(),
            metric::DETECTIONS,
            1,
        )
        .await?;
        let text = format!(
            "INSERT INTO detection_jobs (tenant_id, id, repository_url, priority, metadata, status, \
             max_attempts, available_ms, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $8) RETURNING {JOB_COLUMNS}"
        );
        let row = conn
            .fetch_one(
                Sql::owned(text)
                    .bind(scope.tenant())
                    .bind(id.as_str())
                    .bind(new.repository_url)
                    .bind(new.priority)
                    .bind(metadata)
                    .bind(max_attempts)
                    .bind(now_ms)
                    .bind(now),
            )
            .await?;
        let job = decode(&row)?;
        conn.commit().await?;
        Ok(job)
    }

    async fn get_job(
        &self,
        scope: &TenantScope,
        id: &DetectionId,
    ) -> Result<Option<Job>, StoreError> {
        let mut conn = self.read(scope).await?;
        fetch_job(&mut conn, scope.tenant(), id.as_str()).await
    }

    async fn list_jobs(
        &self,
        scope: &TenantScope,
        status: Option<JobStatus>,
        limit: u64,
        offset: u64,
    ) -> Result<JobPage, StoreError> {
        // Two statements rather than `($2 = '' OR status = $2)`, which a
        // generic plan could not match to the (tenant_id, status) index.
        let (filter, page) = match status {
            Some(_) => ("tenant_id = $1 AND status = $2", "LIMIT $3 OFFSET $4"),
            None => ("tenant_id = $1", "LIMIT $2 OFFSET $3"),
        };
        let mut count = Sql::owned(format!(
            "SELECT count(*) FROM detection_jobs WHERE {filter}"
        ))
        .bind(scope.tenant());
        let mut rows = Sql::owned(format!(
            "SELECT {JOB_COLUMNS} FROM detection_jobs WHERE {filter} ORDER BY seq DESC {page}"
        ))
        .bind(scope.tenant());
        if let Some(status) = status {
            count = count.bind(status.as_str());
            rows = rows.bind(status.as_str());
        }
        rows = rows
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX));
        let mut conn = self.read(scope).await?;
        let total: i64 = conn.scalar(count).await?;
        let rows = conn.fetch_all(rows).await?;
        let results = rows.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        let total = as_u64(total);
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
        let mut conn = self.write(scope).await?;
        // On PostgreSQL this waits for a worker's transaction on the job,
        // then re-checks the status: a job completed meanwhile is already
        // final.
        let text = format!(
            "UPDATE detection_jobs SET status = 'cancelled', lease_owner = NULL, \
             lease_expires_ms = NULL, updated_at = $3, finished_at = $3 \
             WHERE tenant_id = $1 AND id = $2 AND status IN ('pending', 'running') \
             RETURNING {JOB_COLUMNS}"
        );
        let cancelled = conn
            .fetch_optional(
                Sql::owned(text)
                    .bind(scope.tenant())
                    .bind(id.as_str())
                    .bind(self.now()),
            )
            .await?;
        let outcome = match cancelled {
            Some(row) => CancelOutcome::Cancelled(Box::new(decode(&row)?)),
            None => match fetch_job(&mut conn, scope.tenant(), id.as_str()).await? {
                None => CancelOutcome::NotFound,
                Some(job) => CancelOutcome::AlreadyFinal(job.status),
            },
        };
        conn.commit().await?;
        Ok(outcome)
    }
}
