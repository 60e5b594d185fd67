//! [`AuditRepo`] for SQLite. Writes are serialised by the store's write
//! transaction (`BEGIN IMMEDIATE`), so reading a chain's head and
//! appending after it cannot race.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::SqlitePool;

use super::rows::{
    COLUMNS, StoredEvent, chains_of, head_or_genesis, list_sql, place, still_parked_sql,
    verify_page_sql, walk_chain,
};
use super::{AuditEvent, AuditFilter, AuditRepo, ChainReport, NewEvent, OutboxPlace};
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError, TenantScope};

/// A page of `tenant`'s chain.
async fn list(
    pool: &SqlitePool,
    tenant: &str,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, StoreError> {
    let rows: Vec<StoredEvent> = sqlx::query_as(sqlx::AssertSqlSafe(list_sql(filter, '?')))
        .bind(tenant)
        .bind(i64::try_from(filter.after_seq).unwrap_or(i64::MAX))
        .bind(filter.action.as_deref())
        .bind(filter.actor.as_deref())
        .bind(filter.since_ms)
        .bind(filter.until_ms)
        .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await
        .map_err(map_sqlx)?;
    Ok(rows.into_iter().map(StoredEvent::into_event).collect())
}

/// Whether `event` is still to be chained, taking it out of this
/// database's outbox when it is parked here (see [`still_parked_sql`]).
async fn still_parked(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    event: &NewEvent,
) -> Result<bool, StoreError> {
    match still_parked_sql(event) {
        None => Ok(true),
        Some((OutboxPlace::Shared, sql, chain)) => Ok(sqlx::query(sql)
            .bind(chain)
            .bind(&event.id)
            .execute(&mut **tx)
            .await
            .map_err(map_sqlx)?
            .rows_affected()
            > 0),
        Some((OutboxPlace::Dedicated, sql, _)) => Ok(sqlx::query(sql)
            .bind(&event.tenant)
            .bind(event.at_ms)
            .bind(&event.id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_sqlx)?
            .is_none()),
    }
}

#[async_trait]
impl AuditRepo for SqliteStore {
    async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        let mut fresh = Vec::with_capacity(events.len());
        for event in events {
            if still_parked(&mut tx, event).await? {
                fresh.push(event);
            }
        }
        let events = fresh;
        let mut heads = HashMap::new();
        for chain in chains_of(&events) {
            let head: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?1")
                    .bind(chain)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
            heads.insert(chain, head_or_genesis(head));
        }
        let (placed, heads) = place(&events, heads);
        let sql: Arc<str> = format!(
            "INSERT INTO audit_events ({COLUMNS}, at_ms) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        )
        .into();
        for row in &placed {
            let event = row.event;
            sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(&event.tenant)
                .bind(row.seq_i64())
                .bind(&row.id)
                .bind(&event.at)
                .bind(&event.actor)
                .bind(&event.action)
                .bind(event.target.as_deref())
                .bind(event.request_id.as_deref())
                .bind(event.ip.as_deref())
                .bind(event.user_agent.as_deref())
                .bind(i64::from(event.status))
                .bind(row.duration_i64())
                .bind(&event.params)
                .bind(&row.prev_hash)
                .bind(&row.hash)
                .bind(event.at_ms)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        }
        for (chain, seq, hash) in &heads {
            sqlx::query(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(*chain)
            .bind(i64::try_from(*seq).unwrap_or(i64::MAX))
            .bind(hash)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        }
        tx.commit().await.map_err(map_sqlx)
    }

    async fn list_events(
        &self,
        tenant: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        list(&self.pool, tenant, filter).await
    }

    async fn list_scoped_events(
        &self,
        scope: &TenantScope,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        list(&self.pool, scope.tenant().as_str(), filter).await
    }

    async fn chains(&self) -> Result<Vec<String>, StoreError> {
        sqlx::query_scalar(
            "SELECT tenant_id FROM audit_heads UNION SELECT DISTINCT tenant_id FROM audit_events \
             ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(map_sqlx)
    }

    async fn verify_chain(&self, tenant: &str) -> Result<ChainReport, StoreError> {
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_sqlx)?;
        let sql: Arc<str> = verify_page_sql('?').into();
        let pool = &self.pool;
        walk_chain(tenant, head, |from, upto, limit| {
            let sql = sql.clone();
            async move {
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(tenant)
                    .bind(from)
                    .bind(limit)
                    .bind(upto)
                    .fetch_all(pool)
                    .await
                    .map_err(map_sqlx)
            }
        })
        .await
    }
}
