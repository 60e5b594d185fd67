//! [`AuditRepo`] on [`Db`], for both engines.
//!
//! Connections: the group-commit writer's appends, the administrative
//! reads and `verify` act on any chain (the system chain included) and run
//! on the administrative path ([`Db::admin_write`], [`Db::admin_read`]). A
//! tenant reading its own log ([`AuditRepo::list_scoped_events`]) reads
//! through its scope ([`Db::read`]: on PostgreSQL the app role, bound by
//! row-level security) and still names its tenant in the `WHERE`.
//!
//! Appends: an append locks the head row of every chain it extends (after
//! inserting a genesis head for a new chain) and reads the head under that
//! lock. On SQLite the write transaction (`BEGIN IMMEDIATE`) already
//! serialises appends; PostgreSQL runs the writers of several instances
//! concurrently, and there the lock (`FOR UPDATE`) makes two appends to
//! one chain take turns: they never place two events at the same `seq` or
//! after the same hash. The heads are locked in sorted chain order, one
//! order for every writer, so two appends over several chains cannot
//! deadlock. The events then go in with multi-row `INSERT`s and the heads
//! are updated in the same transaction.

use std::collections::HashMap;

use async_trait::async_trait;

use super::rows::{
    COLUMNS, Placed, StoredEvent, chains_of, head_or_genesis, list_sql, place, still_parked_sql,
    verify_page_sql, walk_chain,
};
use super::{AuditEvent, AuditFilter, AuditRepo, ChainReport, GENESIS, NewEvent, OutboxPlace};
use crate::store::{Conn, Db, Sql, StoreError, TenantScope, execute_rows, sql};

/// A page of `tenant`'s chain, on `conn`.
async fn list(
    conn: &mut Conn,
    tenant: &str,
    filter: &AuditFilter,
) -> Result<Vec<AuditEvent>, StoreError> {
    let rows = conn.fetch_all(list_sql(tenant, filter)).await?;
    rows.iter()
        .map(|row| Ok(StoredEvent::from_row(row)?.into_event()))
        .collect()
}

/// The events of `events` still to be chained, each taken out of this
/// database's outbox when it is parked here (see [`still_parked_sql`]).
async fn still_parked<'a>(
    conn: &mut Conn,
    events: &'a [NewEvent],
) -> Result<Vec<&'a NewEvent>, StoreError> {
    let mut fresh = Vec::with_capacity(events.len());
    for event in events {
        let keep = match still_parked_sql(event) {
            None => true,
            Some((OutboxPlace::Shared, claim)) => conn.execute(claim).await? > 0,
            Some((OutboxPlace::Dedicated, chained)) => {
                conn.fetch_optional(chained).await?.is_none()
            }
        };
        if keep {
            fresh.push(event);
        }
    }
    Ok(fresh)
}

/// The heads of the chains of `events`, each created at genesis when
/// missing and locked until the transaction ends, in sorted chain order.
async fn lock_heads<'a>(
    conn: &mut Conn,
    events: &[&'a NewEvent],
) -> Result<HashMap<&'a str, (u64, String)>, StoreError> {
    let lock = conn.dialect().lock_rows();
    let mut heads = HashMap::new();
    for chain in chains_of(events) {
        conn.execute(
            sql(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) \
                 ON CONFLICT (tenant_id) DO NOTHING",
            )
            .bind(chain)
            .bind(GENESIS),
        )
        .await?;
        let head = conn
            .fetch_one(
                Sql::owned(format!(
                    "SELECT seq, hash FROM audit_heads WHERE tenant_id = $1{lock}"
                ))
                .bind(chain),
            )
            .await?;
        heads.insert(chain, head_or_genesis(Some((head.get(0)?, head.get(1)?))));
    }
    Ok(heads)
}

/// Inserts the placed events, a multi-row statement per chunk.
async fn insert_events(conn: &mut Conn, placed: &[Placed<'_>]) -> Result<(), StoreError> {
    execute_rows(
        conn,
        0,
        placed,
        16,
        |values| {
            Sql::owned(format!(
                "INSERT INTO audit_events ({COLUMNS}, at_ms) VALUES {values}"
            ))
        },
        |q, row| {
            let event = row.event;
            q.bind(&event.tenant)
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
        },
    )
    .await?;
    Ok(())
}

/// Moves the chains' heads (`(chain, seq, hash)`; every head row exists
/// and is locked by [`lock_heads`]).
async fn write_heads(conn: &mut Conn, heads: &[(&str, u64, String)]) -> Result<(), StoreError> {
    execute_rows(
        conn,
        0,
        heads,
        3,
        |values| {
            Sql::owned(format!(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES {values} \
                 ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash"
            ))
        },
        |q, (chain, seq, hash)| {
            q.bind(*chain)
                .bind(i64::try_from(*seq).unwrap_or(i64::MAX))
                .bind(hash)
        },
    )
    .await?;
    Ok(())
}

#[async_trait]
impl AuditRepo for Db {
    async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut conn = self.admin_write().await?;
        let events = still_parked(&mut conn, events).await?;
        if events.is_empty() {
            return conn.commit().await;
        }
        let heads = lock_heads(&mut conn, &events).await?;
        let (placed, heads) = place(&events, heads);
        insert_events(&mut conn, &placed).await?;
        write_heads(&mut conn, &heads).await?;
        conn.commit().await
    }

    async fn list_events(
        &self,
        tenant: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        list(&mut self.admin_read().await?, tenant, filter).await
    }

    async fn list_scoped_events(
        &self,
        scope: &TenantScope,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let mut conn = self.read(scope).await?;
        let events = list(&mut conn, scope.tenant().as_str(), filter).await?;
        // A read: nothing to commit (and no audit event to park with it).
        conn.rollback().await?;
        Ok(events)
    }

    async fn chains(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.admin_read().await?;
        // Byte order, whatever the database's collation.
        let rows = conn
            .fetch_all(sql(
                "SELECT tenant_id FROM (SELECT tenant_id FROM audit_heads \
                 UNION SELECT tenant_id FROM audit_events) AS c ORDER BY tenant_id COLLATE \"C\"",
            ))
            .await?;
        rows.iter().map(|row| row.get(0)).collect()
    }

    async fn verify_chain(&self, tenant: &str) -> Result<ChainReport, StoreError> {
        let head = self
            .admin_read()
            .await?
            .fetch_optional(
                sql("SELECT seq, hash FROM audit_heads WHERE tenant_id = $1").bind(tenant),
            )
            .await?
            .map(|row| Ok::<_, StoreError>((row.get(0)?, row.get(1)?)))
            .transpose()?;
        walk_chain(tenant, head, |from, upto, limit| async move {
            let rows = self
                .admin_read()
                .await?
                .fetch_all(verify_page_sql(tenant, from, upto, limit))
                .await?;
            rows.iter().map(StoredEvent::from_row).collect()
        })
        .await
    }
}
