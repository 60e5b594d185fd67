//! [`AuditRepo`] for SQLite.

use std::collections::HashMap;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use super::{
    AuditEvent, AuditFilter, AuditRepo, ChainReport, ChainWalk, GENESIS, HashInput, NewEvent,
    SYSTEM_CHAIN,
};
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError};

const COLUMNS: &str = "tenant_id, seq, id, at, actor, action, target, request_id, ip, user_agent, \
     status, duration_ms, params, prev_hash, hash";

/// A stored row, with params as the exact stored text (what the hash
/// covers).
struct StoredEvent {
    tenant: String,
    seq: i64,
    id: String,
    at: String,
    actor: String,
    action: String,
    target: Option<String>,
    request_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    status: i64,
    duration_ms: i64,
    params: String,
    prev_hash: String,
    hash: String,
}

impl StoredEvent {
    fn decode(row: &SqliteRow) -> Result<Self, StoreError> {
        Ok(Self {
            tenant: row.try_get(0).map_err(map_sqlx)?,
            seq: row.try_get(1).map_err(map_sqlx)?,
            id: row.try_get(2).map_err(map_sqlx)?,
            at: row.try_get(3).map_err(map_sqlx)?,
            actor: row.try_get(4).map_err(map_sqlx)?,
            action: row.try_get(5).map_err(map_sqlx)?,
            target: row.try_get(6).map_err(map_sqlx)?,
            request_id: row.try_get(7).map_err(map_sqlx)?,
            ip: row.try_get(8).map_err(map_sqlx)?,
            user_agent: row.try_get(9).map_err(map_sqlx)?,
            status: row.try_get(10).map_err(map_sqlx)?,
            duration_ms: row.try_get(11).map_err(map_sqlx)?,
            params: row.try_get(12).map_err(map_sqlx)?,
            prev_hash: row.try_get(13).map_err(map_sqlx)?,
            hash: row.try_get(14).map_err(map_sqlx)?,
        })
    }

    fn hash_input(&self) -> HashInput<'_> {
        HashInput {
            tenant: &self.tenant,
            seq: u64::try_from(self.seq).unwrap_or(0),
            id: &self.id,
            at: &self.at,
            actor: &self.actor,
            action: &self.action,
            target: self.target.as_deref(),
            request_id: self.request_id.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            status: u16::try_from(self.status).unwrap_or(0),
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            params: &self.params,
            prev_hash: &self.prev_hash,
        }
    }

    fn into_event(self) -> AuditEvent {
        AuditEvent {
            id: self.id,
            seq: u64::try_from(self.seq).unwrap_or(0),
            tenant_id: (self.tenant != SYSTEM_CHAIN).then_some(self.tenant),
            at: self.at,
            actor: self.actor,
            action: self.action,
            target: self.target,
            request_id: self.request_id,
            ip: self.ip,
            user_agent: self.user_agent,
            status: u16::try_from(self.status).unwrap_or(0),
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            params: serde_json::from_str(&self.params).unwrap_or(serde_json::Value::Null),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

#[async_trait]
impl AuditRepo for SqliteStore {
    async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut tx = self.write_tx().await?;
        let mut heads: HashMap<&str, (u64, String)> = HashMap::new();
        for event in events {
            if !heads.contains_key(event.tenant.as_str()) {
                let head: Option<(i64, String)> =
                    sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?1")
                        .bind(&event.tenant)
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(map_sqlx)?;
                let head = head.map_or((0, GENESIS.to_owned()), |(s, h)| {
                    (u64::try_from(s).unwrap_or(0), h)
                });
                heads.insert(event.tenant.as_str(), head);
            }
            let Some((seq, prev)) = heads.get_mut(event.tenant.as_str()) else {
                continue; // inserted just above
            };
            let next = *seq + 1;
            let id = ulid::Ulid::new().to_string();
            let hash = HashInput {
                tenant: &event.tenant,
                seq: next,
                id: &id,
                at: &event.at,
                actor: &event.actor,
                action: &event.action,
                target: event.target.as_deref(),
                request_id: event.request_id.as_deref(),
                ip: event.ip.as_deref(),
                user_agent: event.user_agent.as_deref(),
                status: event.status,
                duration_ms: event.duration_ms,
                params: &event.params,
                prev_hash: prev,
            }
            .hash();
            let sql = format!(
                "INSERT INTO audit_events ({COLUMNS}, at_ms) VALUES \
                 (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
            );
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&event.tenant)
                .bind(i64::try_from(next).unwrap_or(i64::MAX))
                .bind(&id)
                .bind(&event.at)
                .bind(&event.actor)
                .bind(&event.action)
                .bind(event.target.as_deref())
                .bind(event.request_id.as_deref())
                .bind(event.ip.as_deref())
                .bind(event.user_agent.as_deref())
                .bind(i64::from(event.status))
                .bind(i64::try_from(event.duration_ms).unwrap_or(i64::MAX))
                .bind(&event.params)
                .bind(prev.as_str())
                .bind(&hash)
                .bind(event.at_ms)
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
            *seq = next;
            *prev = hash;
        }
        for (tenant, (seq, hash)) in &heads {
            sqlx::query(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(*tenant)
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
        // Only the filters given become predicates, so a time range is a
        // plain range on (tenant_id, at_ms) that its index serves.
        let mut sql =
            format!("SELECT {COLUMNS} FROM audit_events WHERE tenant_id = ?1 AND seq > ?2");
        if filter.action.is_some() {
            sql.push_str(" AND action = ?3");
        }
        if filter.actor.is_some() {
            sql.push_str(" AND actor = ?4");
        }
        if filter.since_ms.is_some() {
            sql.push_str(" AND at_ms >= ?5");
        }
        if filter.until_ms.is_some() {
            sql.push_str(" AND at_ms < ?6");
        }
        sql.push_str(" ORDER BY seq LIMIT ?7");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(i64::try_from(filter.after_seq).unwrap_or(i64::MAX))
            .bind(filter.action.as_deref())
            .bind(filter.actor.as_deref())
            .bind(filter.since_ms)
            .bind(filter.until_ms)
            .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.iter()
            .map(|r| StoredEvent::decode(r).map(StoredEvent::into_event))
            .collect()
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
        const PAGE: i64 = 1000;
        let report = |walk: &ChainWalk, problem: Option<String>| ChainReport {
            tenant: tenant.to_owned(),
            events: walk.events(),
            problem,
        };
        // The head is read first and the walk stops at it: events appended
        // while a live server keeps writing are past the head and are not
        // mistaken for tampering.
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE tenant_id = ?1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_sqlx)?;
        let upto = head.as_ref().map_or(i64::MAX, |(seq, _)| *seq);
        let mut walk = ChainWalk::default();
        loop {
            let sql = format!(
                "SELECT {COLUMNS} FROM audit_events WHERE tenant_id = ?1 AND seq >= ?2 AND seq <= ?4 \
                 ORDER BY seq LIMIT ?3"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .bind(i64::try_from(walk.events() + 1).unwrap_or(i64::MAX))
                .bind(PAGE)
                .bind(upto)
                .fetch_all(&self.pool)
                .await
                .map_err(map_sqlx)?;
            let done = rows.len() < usize::try_from(PAGE).unwrap_or(usize::MAX);
            for row in &rows {
                let row = StoredEvent::decode(row)?;
                if let Err(problem) = walk.step(&row.hash_input(), &row.hash) {
                    return Ok(report(&walk, Some(problem)));
                }
            }
            if done {
                break;
            }
        }
        let head = head.map(|(seq, hash)| (u64::try_from(seq).unwrap_or(0), hash));
        let problem = walk
            .finish(head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())))
            .err();
        Ok(report(&walk, problem))
    }
}
