//! [`AuditRepo`] for PostgreSQL.
//!
//! Pools: the group-commit writer's appends, the administrative reads and
//! `verify` act on any chain (the system chain included) and run on the
//! admin role's pool ([`PgStore::admin_pool`]). A tenant reading its own
//! log ([`AuditRepo::list_scoped_events`]) runs in a tenant transaction
//! ([`PgStore::tenant_tx`]: the app role, bound by row-level security)
//! and still names its tenant in the `WHERE`.
//!
//! Appends: PostgreSQL runs transactions concurrently (the writers of
//! several instances, unlike SQLite's serialised `BEGIN IMMEDIATE`), so an
//! append locks the head row of every chain it extends (`FOR UPDATE`,
//! after inserting a genesis head for a new chain) and reads the head
//! under that lock. Two appends to one chain take turns: they never place
//! two events at the same `seq` or after the same hash. The heads are
//! locked in sorted chain order, one order for every writer, so two
//! appends over several chains cannot deadlock. The events then go in
//! with one multi-row `INSERT` and the heads are updated in the same
//! transaction.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{Executor, Postgres};

use super::rows::{
    COLUMNS, Placed, StoredEvent, chains_of, head_or_genesis, list_sql, place, still_parked_sql,
    verify_page_sql, walk_chain,
};
use super::{AuditEvent, AuditFilter, AuditRepo, ChainReport, GENESIS, NewEvent, OutboxPlace};
use crate::store::pg_support::map_pg;
use crate::store::{PgStore, StoreError, TenantScope};

/// A page of `tenant`'s chain, on `executor` (the admin pool, or a tenant
/// transaction).
async fn list<'e, E>(
    executor: E,
    tenant: &str,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, StoreError>
where
    E: Executor<'e, Database = Postgres>,
{
    let rows: Vec<StoredEvent> = sqlx::query_as(sqlx::AssertSqlSafe(list_sql(filter, '$')))
        .bind(tenant)
        .bind(i64::try_from(filter.after_seq).unwrap_or(i64::MAX))
        .bind(filter.action.as_deref())
        .bind(filter.actor.as_deref())
        .bind(filter.since_ms)
        .bind(filter.until_ms)
        .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
        .fetch_all(executor)
        .await
        .map_err(map_pg)?;
    Ok(rows.into_iter().map(StoredEvent::into_event).collect())
}

/// One column of `placed`, as an array parameter of a multi-row insert.
fn column<'a, 'e, T>(placed: &'a [Placed<'e>], field: impl Fn(&'a Placed<'e>) -> T) -> Vec<T> {
    placed.iter().map(field).collect()
}

/// Whether `event` is still to be chained, taking it out of this
/// database's outbox when it is parked here (see [`still_parked_sql`]).
async fn still_parked(
    tx: &mut sqlx::Transaction<'static, Postgres>,
    event: &NewEvent,
) -> Result<bool, StoreError> {
    match still_parked_sql(event) {
        None => Ok(true),
        Some((OutboxPlace::Shared, sql, chain)) => Ok(sqlx::query(sql)
            .bind(chain)
            .bind(&event.id)
            .execute(&mut **tx)
            .await
            .map_err(map_pg)?
            .rows_affected()
            > 0),
        Some((OutboxPlace::Dedicated, sql, _)) => Ok(sqlx::query(sql)
            .bind(&event.tenant)
            .bind(event.at_ms)
            .bind(&event.id)
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_pg)?
            .is_none()),
    }
}

#[async_trait]
impl AuditRepo for PgStore {
    async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.admin_pool().begin().await.map_err(map_pg)?;
        let mut fresh = Vec::with_capacity(events.len());
        for event in events {
            if still_parked(&mut tx, event).await? {
                fresh.push(event);
            }
        }
        let events = fresh;
        if events.is_empty() {
            return tx.commit().await.map_err(map_pg);
        }
        let mut heads = HashMap::new();
        for chain in chains_of(&events) {
            sqlx::query(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(chain)
            .bind(GENESIS)
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
            let head: (i64, String) =
                sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1 FOR UPDATE")
                    .bind(chain)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(map_pg)?;
            heads.insert(chain, head_or_genesis(Some(head)));
        }
        let (placed, heads) = place(&events, heads);

        // One multi-row INSERT: a column per array, a row per event.
        let insert = format!(
            "INSERT INTO audit_events ({COLUMNS}, at_ms) \
             SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::bigint[], \
             $12::bigint[], $13::text[], $14::text[], $15::text[], $16::bigint[])"
        );
        sqlx::query(sqlx::AssertSqlSafe(insert))
            .bind(column(&placed, |r| r.event.tenant.as_str()))
            .bind(column(&placed, Placed::seq_i64))
            .bind(column(&placed, |r| r.id.as_str()))
            .bind(column(&placed, |r| r.event.at.as_str()))
            .bind(column(&placed, |r| r.event.actor.as_str()))
            .bind(column(&placed, |r| r.event.action.as_str()))
            .bind(column(&placed, |r| r.event.target.as_deref()))
            .bind(column(&placed, |r| r.event.request_id.as_deref()))
            .bind(column(&placed, |r| r.event.ip.as_deref()))
            .bind(column(&placed, |r| r.event.user_agent.as_deref()))
            .bind(column(&placed, |r| i64::from(r.event.status)))
            .bind(column(&placed, Placed::duration_i64))
            .bind(column(&placed, |r| r.event.params.as_str()))
            .bind(column(&placed, |r| r.prev_hash.as_str()))
            .bind(column(&placed, |r| r.hash.as_str()))
            .bind(column(&placed, |r| r.event.at_ms))
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;

        let chains: Vec<&str> = heads.iter().map(|(chain, _, _)| *chain).collect();
        let seqs: Vec<i64> = heads
            .iter()
            .map(|(_, seq, _)| i64::try_from(*seq).unwrap_or(i64::MAX))
            .collect();
        let hashes: Vec<&str> = heads.iter().map(|(_, _, hash)| hash.as_str()).collect();
        // Every head row exists (inserted or found above) and is locked.
        sqlx::query(
            "UPDATE audit_heads AS h SET seq = u.seq, hash = u.hash \
             FROM UNNEST($1::text[], $2::bigint[], $3::text[]) AS u(tenant_id, seq, hash) \
             WHERE h.tenant_id = u.tenant_id",
        )
        .bind(chains)
        .bind(seqs)
        .bind(hashes)
        .execute(&mut *tx)
        .await
        .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)
    }

    async fn list_events(
        &self,
        tenant: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        list(self.admin_pool(), tenant, filter).await
    }

    async fn list_scoped_events(
        &self,
        scope: &TenantScope,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut tx = self.tenant_tx(scope).await?;
        let events = list(&mut *tx, scope.tenant().as_str(), filter).await?;
        tx.commit().await.map_err(map_pg)?;
        Ok(events)
    }

    async fn chains(&self) -> Result<Vec<String>, StoreError> {
        // Byte order, as SQLite sorts, whatever the database's collation.
        sqlx::query_scalar(
            "SELECT tenant_id FROM (SELECT tenant_id FROM audit_heads \
             UNION SELECT tenant_id FROM audit_events) AS c ORDER BY tenant_id COLLATE \"C\"",
        )
        .fetch_all(self.admin_pool())
        .await
        .map_err(map_pg)
    }

    async fn verify_chain(&self, tenant: &str) -> Result<ChainReport, StoreError> {
        let pool = self.admin_pool();
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(pool)
                .await
                .map_err(map_pg)?;
        let sql: Arc<str> = verify_page_sql('$').into();
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
                    .map_err(map_pg)
            }
        })
        .await
    }
}
