//! [`RecordRepo`], written once for both engines on [`Db`].
//!
//! **Isolation.** Every method runs on a tenant connection of its scope
//! ([`Db::write`], [`Db::read`]): on PostgreSQL the app role with
//! `app.tenant_id` set for the transaction, so row-level security confines
//! each statement to the scope's tenant. Every statement still names
//! `tenant_id = $1` itself, first, so the tenant-leading indexes serve it
//! (and on SQLite it is the confinement).
//!
//! **Locking.** SQLite serialises writers (`BEGIN IMMEDIATE`); PostgreSQL
//! runs them concurrently. Every record write (create, replace, upsert,
//! delete) therefore starts by making sure the tenant's `tenant_stats` row
//! exists and locking it ([`lock_stats`]): one tenant's writes are
//! serialised from their first statement, the quota check reads figures
//! nobody can change before this transaction commits (the records trigger
//! updates that same row), so `max_records` and `max_storage_mb` stay
//! exact under concurrency. It also gives every writer one lock order —
//! stats row, then the month's usage counter, then record rows — so
//! writers cannot deadlock (a delete that locked a record row first and
//! then waited for the stats row in the trigger could, against a replace
//! of that record).
//!
//! **Search.** The search index follows each write in the same
//! transaction where the engine needs it ([`search::index`]); searching is
//! in [`search`].

use async_trait::async_trait;
use tenancy::TenantId;

use super::RecordRepo;
use super::model::{NewRecord, Record, RecordId, SearchPage, SearchQuery, StoredRecord, json_text};
use super::search;
use crate::clock::Clock;
use crate::limits::QuotaLimits;
use crate::store::{Conn, Db, Row, Sql, StoreError, TenantScope, sql};
use crate::usage::{count_in, metric};

/// The columns of a [`Record`], in [`decode`]'s order (a macro, so the
/// statements below are whole constants: no text is built per request).
macro_rules! columns {
    () => {
        "id, tenant_id, kind, name, url, description, tags, fields, created_at, updated_at"
    };
}

/// One record by id.
const GET_SQL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM records WHERE tenant_id = $1 AND id = $2"
);

/// A new record: tenant, id, content `$3`…`$9`, now `$10`.
const INSERT_SQL: &str = concat!(
    "INSERT INTO records (tenant_id, id, kind, name, url, description, tags, fields, \
     size_bytes, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING ",
    columns!(),
    ", seq"
);

/// New content `$3`…`$9` for record `$2` of tenant `$1`, now `$10`.
const REPLACE_SQL: &str = concat!(
    "UPDATE records SET kind = $3, name = $4, url = $5, description = $6, tags = $7, \
     fields = $8, size_bytes = $9, updated_at = $10 \
     WHERE tenant_id = $1 AND id = $2 RETURNING ",
    columns!(),
    ", seq"
);

/// the record columns ([`decode`]'s order) on alias `r` (statements that join another table).
pub(super) const R_COLUMNS: &str = "r.id, r.tenant_id, r.kind, r.name, r.url, r.description, \
     r.tags, r.fields, r.created_at, r.updated_at";

/// The record of a row starting with the record columns ([`decode`]'s order).
pub(super) fn decode(row: &Row) -> Result<Record, StoreError> {
    StoredRecord {
        id: row.get(0)?,
        tenant_id: row.get(1)?,
        kind: row.get(2)?,
        name: row.get(3)?,
        url: row.get(4)?,
        description: row.get(5)?,
        tags: row.get(6)?,
        fields: row.get(7)?,
        created_at: row.get(8)?,
        updated_at: row.get(9)?,
    }
    .into_record()
}

/// The record a write returned (`RETURNING` the record columns, then `seq`) and its `seq`,
/// with its search entry written.
async fn written(
    conn: &mut Conn,
    row: &Row,
    tenant: &TenantId,
    new: &NewRecord,
) -> Result<Record, StoreError> {
    search::index(conn, row.get(10)?, tenant, new).await?;
    decode(row)
}

/// Locks `tenant`'s `tenant_stats` row until the transaction ends (creating
/// it first when the tenant has none yet) and returns its records and
/// bytes. The first statement of every record write: see the module
/// documentation.
async fn lock_stats(conn: &mut Conn, tenant: &TenantId) -> Result<(i64, i64), StoreError> {
    conn.execute(
        sql("INSERT INTO tenant_stats (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING")
            .bind(tenant),
    )
    .await?;
    let text = format!(
        "SELECT records, storage_bytes FROM tenant_stats WHERE tenant_id = $1{}",
        conn.dialect().lock_rows()
    );
    let row = conn.fetch_one(Sql::owned(text).bind(tenant)).await?;
    Ok((row.get(0)?, row.get(1)?))
}

/// Refuses a change of `added` (records, bytes) that would take a tenant
/// storing `used` past its quotas, then counts the write: what every
/// record write does, after [`lock_stats`], before its own statement.
async fn check_and_count(
    conn: &mut Conn,
    clock: &Clock,
    tenant: &TenantId,
    quotas: &QuotaLimits,
    used: (i64, i64),
    (added_records, added_bytes): (i64, i64),
) -> Result<(), StoreError> {
    super::model::check_quota(quotas, used, added_records, added_bytes)?;
    count_in(conn, clock, tenant, metric::RECORDS_WRITTEN, 1).await
}

/// Inserts or replaces record `(kind, name)` of `tenant` inside `conn`, with
/// the quota check, the usage count and the search entry of any record
/// write.
///
/// For callers that hold the tenant from a stored parent row (a completed
/// job writes its record in the job's transaction); `conn` must be a write
/// transaction of `tenant` ([`Db::write_for`]).
pub(crate) async fn upsert_in(
    conn: &mut Conn,
    clock: &Clock,
    tenant: &TenantId,
    new: &NewRecord,
    quotas: &QuotaLimits,
) -> Result<Record, StoreError> {
    // The stats row first (the lock order), then the target's size.
    let used = lock_stats(conn, tenant).await?;
    let size = new.size_bytes();
    let old: Option<i64> = conn
        .scalar_optional(
            sql(SIZE_BY_NAME_SQL)
                .bind(tenant)
                .bind(&new.kind)
                .bind(&new.name),
        )
        .await?;
    let added = match old {
        Some(old) => (0, size - old),
        None => (1, size),
    };
    check_and_count(conn, clock, tenant, quotas, used, added).await?;
    let sql = bind_content(
        sql(UPSERT_SQL)
            .bind(tenant)
            .bind(RecordId::generate().as_str()),
        new,
    )?
    .bind(clock.now_rfc3339());
    let row = conn.fetch_one(sql).await?;
    written(conn, &row, tenant, new).await
}

/// Size of record `$1`'s `(kind, name)` = `($2, $3)`, if it exists (an
/// upsert's target).
pub(super) const SIZE_BY_NAME_SQL: &str =
    "SELECT size_bytes FROM records WHERE tenant_id = $1 AND kind = $2 AND name = $3";

/// Inserts or replaces record `(kind, name)`: tenant `$1`, new id `$2`,
/// content `$3`…`$9` ([`bind_content`]), now `$10`; returns the record columns ([`decode`]'s order)
/// and `seq`.
pub(super) const UPSERT_SQL: &str = "INSERT INTO records (tenant_id, id, kind, name, url, \
     description, tags, fields, size_bytes, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
     ON CONFLICT (tenant_id, kind, name) DO UPDATE SET url = excluded.url, \
     description = excluded.description, tags = excluded.tags, fields = excluded.fields, \
     size_bytes = excluded.size_bytes, updated_at = excluded.updated_at \
     RETURNING id, tenant_id, kind, name, url, description, tags, fields, created_at, \
     updated_at, seq";

/// Binds a record's content, in the order of the write statements:
/// kind, name, url, description, tags, fields, size.
fn bind_content(sql: Sql, new: &NewRecord) -> Result<Sql, StoreError> {
    Ok(sql
        .bind(&new.kind)
        .bind(&new.name)
        .bind(&new.url)
        .bind(new.description.as_deref())
        .bind(json_text(&new.tags)?)
        .bind(json_text(&new.fields)?)
        .bind(new.size_bytes()))
}

#[async_trait]
impl RecordRepo for Db {
    async fn create_record(
        &self,
        scope: &TenantScope,
        new: NewRecord,
    ) -> Result<Record, StoreError> {
        let tenant = scope.tenant();
        let mut conn = self.write(scope).await?;
        let used = lock_stats(&mut conn, tenant).await?;
        let added = (1, new.size_bytes());
        check_and_count(&mut conn, self.clock(), tenant, scope.quotas(), used, added).await?;
        // A taken (kind, name) fails with a unique violation (Conflict),
        // which ends the transaction: nothing was written.
        let sql = bind_content(
            sql(INSERT_SQL)
                .bind(tenant)
                .bind(RecordId::generate().as_str()),
            &new,
        )?
        .bind(self.now());
        let row = conn.fetch_one(sql).await?;
        let record = written(&mut conn, &row, tenant, &new).await?;
        conn.commit().await?;
        Ok(record)
    }

    async fn get_record(
        &self,
        scope: &TenantScope,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        let mut conn = self.read(scope).await?;
        let row = conn
            .fetch_optional(sql(GET_SQL).bind(scope.tenant()).bind(id.as_str()))
            .await?;
        // A read: nothing to commit (and no audit event to park).
        conn.rollback().await?;
        row.as_ref().map(decode).transpose()
    }

    async fn replace_record(
        &self,
        scope: &TenantScope,
        id: &RecordId,
        new: NewRecord,
    ) -> Result<Option<Record>, StoreError> {
        let tenant = scope.tenant();
        let mut conn = self.write(scope).await?;
        let used = lock_stats(&mut conn, tenant).await?;
        let old: Option<i64> = conn
            .scalar_optional(
                sql("SELECT size_bytes FROM records WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant)
                    .bind(id.as_str()),
            )
            .await?;
        let Some(old) = old else {
            return Ok(None);
        };
        let added = (0, new.size_bytes() - old);
        check_and_count(&mut conn, self.clock(), tenant, scope.quotas(), used, added).await?;
        let sql =
            bind_content(sql(REPLACE_SQL).bind(tenant).bind(id.as_str()), &new)?.bind(self.now());
        let Some(row) = conn.fetch_optional(sql).await? else {
            return Ok(None);
        };
        let record = written(&mut conn, &row, tenant, &new).await?;
        conn.commit().await?;
        Ok(Some(record))
    }

    async fn upsert_record(
        &self,
        scope: &TenantScope,
        new: NewRecord,
    ) -> Result<Record, StoreError> {
        let mut conn = self.write(scope).await?;
        let record = upsert_in(
            &mut conn,
            self.clock(),
            scope.tenant(),
            &new,
            scope.quotas(),
        )
        .await?;
        conn.commit().await?;
        Ok(record)
    }

    async fn delete_record(&self, scope: &TenantScope, id: &RecordId) -> Result<bool, StoreError> {
        let tenant = scope.tenant();
        let mut conn = self.write(scope).await?;
        // The stats row first, as every record write (the lock order).
        lock_stats(&mut conn, tenant).await?;
        let seq: Option<i64> = conn
            .scalar_optional(
                sql("DELETE FROM records WHERE tenant_id = $1 AND id = $2 RETURNING seq")
                    .bind(tenant)
                    .bind(id.as_str()),
            )
            .await?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        search::unindex(&mut conn, seq).await?;
        conn.commit().await?;
        Ok(true)
    }

    async fn search_records(
        &self,
        scope: &TenantScope,
        query: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        search::search(self, scope, query).await
    }
}
