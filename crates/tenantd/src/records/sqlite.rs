//! [`RecordRepo`] for the SQLite backend.
//!
//! Every statement names `tenant_id` first: either as the leading column of
//! an index lookup, or (for search) as a leading FTS token *and* as a
//! predicate on the joined row. Writes run in `BEGIN IMMEDIATE`
//! transactions so the record and its index row change together.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use tenancy::TenantId;

use super::RecordRepo;
use super::fts;
use super::model::{
    NewRecord, Record, RecordId, SearchHit, SearchPage, SearchQuery, StoredRecord, json_text,
    page_cursor,
};
use crate::clock::now_rfc3339;
use crate::limits::QuotaLimits;
use crate::store::sqlite_support::map_sqlx;
use crate::store::{SqliteStore, StoreError, TenantScope};
use crate::usage::metric;
use crate::usage::sqlite_support::count_in_tx;

const COLUMNS: &str = "r.id, r.tenant_id, r.kind, r.name, r.url, r.description, r.tags, r.fields, r.created_at, r.updated_at";

fn decode(row: &SqliteRow) -> Result<Record, StoreError> {
    StoredRecord {
        id: row.try_get(0).map_err(map_sqlx)?,
        tenant_id: row.try_get(1).map_err(map_sqlx)?,
        kind: row.try_get(2).map_err(map_sqlx)?,
        name: row.try_get(3).map_err(map_sqlx)?,
        url: row.try_get(4).map_err(map_sqlx)?,
        description: row.try_get(5).map_err(map_sqlx)?,
        tags: row.try_get(6).map_err(map_sqlx)?,
        fields: row.try_get(7).map_err(map_sqlx)?,
        created_at: row.try_get(8).map_err(map_sqlx)?,
        updated_at: row.try_get(9).map_err(map_sqlx)?,
    }
    .into_record()
}

/// Writes the FTS row of record `seq` (replacing any previous one).
pub(crate) async fn index(
    tx: &mut Transaction<'static, Sqlite>,
    seq: i64,
    tenant: &TenantId,
    new: &NewRecord,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM records_fts WHERE rowid = ?1")
        .bind(seq)
        .execute(&mut **tx)
        .await
        .map_err(map_sqlx)?;
    sqlx::query(
        "INSERT INTO records_fts (rowid, tenant_key, name, description, url, tags, fields) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(seq)
    .bind(fts::tenant_token(tenant.as_str()))
    .bind(&new.name)
    .bind(new.description.as_deref().unwrap_or(""))
    .bind(&new.url)
    .bind(new.tags.join(" "))
    .bind(fts::fields_text(&new.fields))
    .execute(&mut **tx)
    .await
    .map_err(map_sqlx)?;
    Ok(())
}

/// Refuses a write that would take the tenant past `max_records` or
/// `max_storage_mb`. Runs inside the write's `BEGIN IMMEDIATE` transaction,
/// so concurrent writers are serialised and cannot overshoot together.
async fn check_quota(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    quotas: &QuotaLimits,
    added_records: i64,
    added_bytes: i64,
) -> Result<(), StoreError> {
    if quotas.max_records.is_none() && quotas.max_storage_bytes().is_none() {
        return Ok(());
    }
    let used: (i64, i64) =
        sqlx::query_as("SELECT records, storage_bytes FROM tenant_stats WHERE tenant_id = ?1")
            .bind(tenant.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(map_sqlx)?
            .unwrap_or((0, 0));
    super::model::check_quota(quotas, used, added_records, added_bytes)
}

/// Size and existence of record `(kind, name)` (an upsert's target).
async fn existing_size(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    new: &NewRecord,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar(
        "SELECT size_bytes FROM records WHERE tenant_id = ?1 AND kind = ?2 AND name = ?3",
    )
    .bind(tenant.as_str())
    .bind(&new.kind)
    .bind(&new.name)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_sqlx)
}

/// Inserts or replaces record `(kind, name)` of `tenant` inside `tx`.
///
/// For callers that already hold a tenant taken from a stored parent row
/// (a completed job writes its record in the job's transaction).
pub(crate) async fn upsert_in_tx(
    tx: &mut Transaction<'static, Sqlite>,
    tenant: &TenantId,
    new: &NewRecord,
    quotas: &QuotaLimits,
) -> Result<Record, StoreError> {
    let size = new.size_bytes();
    let (added_records, added_bytes) = match existing_size(tx, tenant, new).await? {
        Some(old) => (0, size - old),
        None => (1, size),
    };
    check_quota(tx, tenant, quotas, added_records, added_bytes).await?;
    count_in_tx(tx, tenant, metric::RECORDS_WRITTEN, 1).await?;
    let now = now_rfc3339();
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO records (tenant_id, id, kind, name, url, description, tags, fields, size_bytes, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10) \
         ON CONFLICT (tenant_id, kind, name) DO UPDATE SET url = excluded.url, \
         description = excluded.description, tags = excluded.tags, fields = excluded.fields, \
         size_bytes = excluded.size_bytes, updated_at = excluded.updated_at RETURNING seq",
    )
    .bind(tenant.as_str())
    .bind(RecordId::generate().as_str())
    .bind(&new.kind)
    .bind(&new.name)
    .bind(&new.url)
    .bind(new.description.as_deref())
    .bind(json_text(&new.tags)?)
    .bind(json_text(&new.fields)?)
    .bind(new.size_bytes())
    .bind(&now)
    .fetch_one(&mut **tx)
    .await
    .map_err(map_sqlx)?;
    index(tx, seq, tenant, new).await?;
    SqliteStore::fetch(tx, tenant, seq).await
}

impl SqliteStore {
    async fn fetch(
        tx: &mut Transaction<'static, Sqlite>,
        tenant: &TenantId,
        seq: i64,
    ) -> Result<Record, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM records r WHERE r.tenant_id = ?1 AND r.seq = ?2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(seq)
            .fetch_one(&mut **tx)
            .await
            .map_err(map_sqlx)?;
        decode(&row)
    }
}

#[async_trait]
impl RecordRepo for SqliteStore {
    async fn create_record(
        &self,
        scope: &TenantScope,
        new: NewRecord,
    ) -> Result<Record, StoreError> {
        let tenant = scope.tenant();
        let now = now_rfc3339();
        let mut tx = self.write_tx().await?;
        check_quota(&mut tx, tenant, scope.quotas(), 1, new.size_bytes()).await?;
        count_in_tx(&mut tx, tenant, metric::RECORDS_WRITTEN, 1).await?;
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO records (tenant_id, id, kind, name, url, description, tags, fields, size_bytes, created_at, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10) RETURNING seq",
        )
        .bind(tenant.as_str())
        .bind(RecordId::generate().as_str())
        .bind(&new.kind)
        .bind(&new.name)
        .bind(&new.url)
        .bind(new.description.as_deref())
        .bind(json_text(&new.tags)?)
        .bind(json_text(&new.fields)?)
        .bind(new.size_bytes())
        .bind(&now)
        .fetch_one(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        index(&mut tx, seq, tenant, &new).await?;
        let record = Self::fetch(&mut tx, tenant, seq).await?;
        self.commit(tx).await?;
        Ok(record)
    }

    async fn get_record(
        &self,
        scope: &TenantScope,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        let row = sqlx::query(
            "SELECT r.id, r.tenant_id, r.kind, r.name, r.url, r.description, r.tags, r.fields, r.created_at, r.updated_at \
             FROM records r WHERE r.tenant_id = ?1 AND r.id = ?2",
        )
        .bind(scope.tenant().as_str())
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_sqlx)?;
        row.as_ref().map(decode).transpose()
    }

    async fn replace_record(
        &self,
        scope: &TenantScope,
        id: &RecordId,
        new: NewRecord,
    ) -> Result<Option<Record>, StoreError> {
        let tenant = scope.tenant();
        let mut tx = self.write_tx().await?;
        let old: Option<i64> =
            sqlx::query_scalar("SELECT size_bytes FROM records WHERE tenant_id = ?1 AND id = ?2")
                .bind(tenant.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_sqlx)?;
        let Some(old) = old else {
            return Ok(None);
        };
        check_quota(&mut tx, tenant, scope.quotas(), 0, new.size_bytes() - old).await?;
        count_in_tx(&mut tx, tenant, metric::RECORDS_WRITTEN, 1).await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE records SET kind = ?3, name = ?4, url = ?5, description = ?6, tags = ?7, fields = ?8, \
             size_bytes = ?9, updated_at = ?10 WHERE tenant_id = ?1 AND id = ?2 RETURNING seq",
        )
        .bind(tenant.as_str())
        .bind(id.as_str())
        .bind(&new.kind)
        .bind(&new.name)
        .bind(&new.url)
        .bind(new.description.as_deref())
        .bind(json_text(&new.tags)?)
        .bind(json_text(&new.fields)?)
        .bind(new.size_bytes())
        .bind(now_rfc3339())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let Some(seq) = seq else {
            return Ok(None);
        };
        index(&mut tx, seq, tenant, &new).await?;
        let record = Self::fetch(&mut tx, tenant, seq).await?;
        self.commit(tx).await?;
        Ok(Some(record))
    }

    async fn upsert_record(
        &self,
        scope: &TenantScope,
        new: NewRecord,
    ) -> Result<Record, StoreError> {
        let mut tx = self.write_tx().await?;
        let record = upsert_in_tx(&mut tx, scope.tenant(), &new, scope.quotas()).await?;
        self.commit(tx).await?;
        Ok(record)
    }

    async fn delete_record(&self, scope: &TenantScope, id: &RecordId) -> Result<bool, StoreError> {
        let mut tx = self.write_tx().await?;
        let seq: Option<i64> = sqlx::query_scalar(
            "DELETE FROM records WHERE tenant_id = ?1 AND id = ?2 RETURNING seq",
        )
        .bind(scope.tenant().as_str())
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        let Some(seq) = seq else {
            return Ok(false);
        };
        sqlx::query("DELETE FROM records_fts WHERE rowid = ?1")
            .bind(seq)
            .execute(&mut *tx)
            .await
            .map_err(map_sqlx)?;
        self.commit(tx).await?;
        Ok(true)
    }

    async fn search_records(
        &self,
        scope: &TenantScope,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        let tenant = scope.tenant().as_str();
        let expression = fts::match_expression(tenant, &q.text);
        // Shared WHERE clause; parameters are bound in the same order below.
        let mut filter = String::from("r.tenant_id = ?");
        if q.kind.is_some() {
            filter.push_str(" AND r.kind = ?");
        }
        for _ in &q.tags {
            filter.push_str(
                " AND EXISTS (SELECT 1 FROM json_each(r.tags) WHERE json_each.value = ?)",
            );
        }
        let filtered = q.kind.is_some() || !q.tags.is_empty();
        // Three shapes. `rank` is bm25 with the column weights configured in
        // the migration (name 10, tags 5, description 2, url and fields 1).
        let (count_sql, page_sql) = match (&expression, filtered) {
            // Text only: the FTS index ranks and pages by itself, and only
            // the page's rows are fetched from `records`. The tenant token in
            // the MATCH confines it; the outer tenant_id check is defence in
            // depth.
            (Some(_), false) => (
                "SELECT count(*) FROM records_fts WHERE records_fts MATCH ? AND ? IS NOT NULL"
                    .to_owned(),
                format!(
                    "SELECT {COLUMNS}, -h.rank FROM \
                     (SELECT rowid AS seq, rank FROM records_fts WHERE records_fts MATCH ?1 \
                      ORDER BY rank LIMIT ?3 OFFSET ?4) h \
                     CROSS JOIN records r ON r.seq = h.seq WHERE r.tenant_id = ?2 ORDER BY h.rank"
                ),
            ),
            // Text and filters. CROSS JOIN fixes the order: the FTS index
            // drives and records are looked up by rowid (the planner would
            // otherwise run the MATCH once per row of the tenant).
            (Some(_), true) => {
                let from = "records_fts CROSS JOIN records r ON r.seq = records_fts.rowid";
                (
                    format!("SELECT count(*) FROM {from} WHERE records_fts MATCH ? AND {filter}"),
                    format!(
                        "SELECT {COLUMNS}, -records_fts.rank FROM {from} \
                         WHERE records_fts MATCH ? AND {filter} ORDER BY records_fts.rank LIMIT ? OFFSET ?"
                    ),
                )
            }
            // No text: a listing, newest first.
            (None, _) => (
                format!("SELECT count(*) FROM records r WHERE {filter}"),
                format!(
                    "SELECT {COLUMNS}, NULL FROM records r WHERE {filter} ORDER BY r.seq DESC LIMIT ? OFFSET ?"
                ),
            ),
        };
        let mut count = sqlx::query_scalar::<_, i64>(AssertSqlSafe(count_sql));
        let mut page = sqlx::query(AssertSqlSafe(page_sql));
        if let Some(e) = &expression {
            count = count.bind(e.clone());
            page = page.bind(e.clone());
        }
        count = count.bind(tenant);
        page = page.bind(tenant);
        // (The text-only page query numbers its parameters: ?1 match,
        // ?2 tenant, ?3 limit, ?4 offset; the others bind in order.)
        if let Some(kind) = &q.kind {
            count = count.bind(kind.clone());
            page = page.bind(kind.clone());
        }
        for tag in &q.tags {
            count = count.bind(tag.clone());
            page = page.bind(tag.clone());
        }
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
        page = page.bind(limit).bind(offset);

        let total = count.fetch_one(&self.pool).await.map_err(map_sqlx)?;
        let rows = page.fetch_all(&self.pool).await.map_err(map_sqlx)?;
        let results = rows
            .iter()
            .map(|row| {
                Ok(SearchHit {
                    record: decode(row)?,
                    score: row.try_get::<Option<f64>, _>(10).map_err(map_sqlx)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let total = u64::try_from(total).unwrap_or(0);
        let next_cursor = page_cursor(q.offset, results.len(), total);
        Ok(SearchPage {
            total,
            results,
            next_cursor,
        })
    }
}
