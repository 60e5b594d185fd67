//! [`RecordRepo`] for the PostgreSQL backend.
//!
//! **Isolation.** Every method runs in [`PgStore::tenant_tx`]: the app
//! role, with `app.tenant_id` set for the transaction, so row-level
//! security confines each statement to the scope's tenant. Every statement
//! still names `tenant_id = $1` itself, first, so the tenant-leading
//! indexes serve it.
//!
//! **Locking.** SQLite serialises writers (`BEGIN IMMEDIATE`); PostgreSQL
//! runs them concurrently. Every record write (create, replace, upsert,
//! delete) therefore starts by making sure the tenant's `tenant_stats` row
//! exists and locking it (`SELECT … FOR UPDATE`, see [`lock_stats`]): one
//! tenant's writes are serialised from their first statement, the quota
//! check reads figures nobody can change before this transaction commits
//! (the records trigger updates that same row), so `max_records` and
//! `max_storage_mb` stay exact under concurrency. It also gives every
//! writer one lock order — stats row, then the month's usage counter, then
//! record rows — so writers cannot deadlock (a delete that locked a record
//! row first and then waited for the stats row in the trigger could,
//! against a replace of that record).
//!
//! **Search.** `records.search` is a generated `tsvector` (the
//! `records_search` configuration: words split at punctuation, case and
//! diacritics folded, as FTS5's `unicode61 remove_diacritics 2`), weighted
//! A name, B tags, C description, D url and fields like the bm25 column
//! weights. The user's text becomes a `tsquery` text of quoted terms
//! ([`fts::ts_query`]: all required, the last as a prefix) bound as a
//! parameter of `to_tsquery`, never SQL. Results are ranked by `ts_rank`
//! with those weights, best first, ties oldest first (as FTS5 returns
//! them); without terms it is a listing, newest first.
//!
//! Under row-level security the planner uses an index condition only when
//! its operator is leakproof, and `@@` is not: searches read the tenant's
//! rows through the index on `tenant_id` and test the match on each (never
//! another tenant's rows). A superuser can let the GIN index serve the
//! match too with `ALTER FUNCTION ts_match_vq(tsvector, tsquery) LEAKPROOF`.

use async_trait::async_trait;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Postgres, Row, Transaction};
use tenancy::TenantId;

use super::RecordRepo;
use super::fts;
use super::model::{
    NewRecord, Record, RecordId, SearchHit, SearchPage, SearchQuery, StoredRecord, check_quota,
    json_text, page_cursor,
};
use crate::clock::now_rfc3339;
use crate::limits::QuotaLimits;
use crate::store::pg_support::map_pg;
use crate::store::{PgStore, StoreError, TenantScope};
use crate::usage::metric;
use crate::usage::pg_support::count_in_tx;

/// The columns of a [`Record`], in [`decode`]'s order, on alias `r`.
const COLUMNS: &str = "r.id, r.tenant_id, r.kind, r.name, r.url, r.description, r.tags, \
     r.fields, r.created_at, r.updated_at";

/// `ts_rank` weights for D, C, B, A: url and fields 1, description 2, tags
/// 5, name 10, as SQLite's bm25 column weights (scaled to at most 1).
const RANK_WEIGHTS: &str = "'{0.1, 0.2, 0.5, 1.0}'";

/// `ts_rank` normalisation 1: divided by 1 + log(document length), as bm25
/// favours short documents.
const RANK_NORMALISATION: &str = "1";

fn decode(row: &PgRow) -> Result<Record, StoreError> {
    StoredRecord {
        id: row.try_get(0).map_err(map_pg)?,
        tenant_id: row.try_get(1).map_err(map_pg)?,
        kind: row.try_get(2).map_err(map_pg)?,
        name: row.try_get(3).map_err(map_pg)?,
        url: row.try_get(4).map_err(map_pg)?,
        description: row.try_get(5).map_err(map_pg)?,
        tags: row.try_get(6).map_err(map_pg)?,
        fields: row.try_get(7).map_err(map_pg)?,
        created_at: row.try_get(8).map_err(map_pg)?,
        updated_at: row.try_get(9).map_err(map_pg)?,
    }
    .into_record()
}

/// Locks `tenant`'s `tenant_stats` row until the transaction ends (creating
/// it first when the tenant has none yet) and returns its records and
/// bytes. The first statement of every record write: see the module
/// documentation.
async fn lock_stats(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
) -> Result<(i64, i64), StoreError> {
    sqlx::query(
        "INSERT INTO tenant_stats (tenant_id) VALUES ($1) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant.as_str())
    .execute(&mut **tx)
    .await
    .map_err(map_pg)?;
    sqlx::query_as(
        "SELECT records, storage_bytes FROM tenant_stats WHERE tenant_id = $1 FOR UPDATE",
    )
    .bind(tenant.as_str())
    .fetch_one(&mut **tx)
    .await
    .map_err(map_pg)
}

/// Size of record `(kind, name)` of `tenant`, if it exists (an upsert's
/// target).
async fn existing_size(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    new: &NewRecord,
) -> Result<Option<i64>, StoreError> {
    sqlx::query_scalar(
        "SELECT size_bytes FROM records WHERE tenant_id = $1 AND kind = $2 AND name = $3",
    )
    .bind(tenant.as_str())
    .bind(&new.kind)
    .bind(&new.name)
    .fetch_optional(&mut **tx)
    .await
    .map_err(map_pg)
}

/// Inserts or replaces record `(kind, name)` of `tenant` inside `tx`, with
/// the quota check and the usage count of any record write.
///
/// For callers that hold the tenant from a stored parent row (a completed
/// job writes its record in the job's transaction); `tx` must be a tenant
/// transaction of `tenant` ([`PgStore::tenant_tx_for`]).
pub(crate) async fn upsert_in_tx(
    tx: &mut Transaction<'static, Postgres>,
    tenant: &TenantId,
    new: &NewRecord,
    quotas: &QuotaLimits,
) -> Result<Record, StoreError> {
    let used = lock_stats(tx, tenant).await?;
    let size = new.size_bytes();
    let (added_records, added_bytes) = match existing_size(tx, tenant, new).await? {
        Some(old) => (0, size - old),
        None => (1, size),
    };
    check_quota(quotas, used, added_records, added_bytes)?;
    count_in_tx(tx, tenant, metric::RECORDS_WRITTEN, 1).await?;
    let sql = format!(
        "INSERT INTO records AS r (tenant_id, id, kind, name, url, description, tags, fields, \
         size_bytes, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
         ON CONFLICT (tenant_id, kind, name) DO UPDATE SET url = excluded.url, \
         description = excluded.description, tags = excluded.tags, fields = excluded.fields, \
         size_bytes = excluded.size_bytes, updated_at = excluded.updated_at \
         RETURNING {COLUMNS}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(tenant.as_str())
        .bind(RecordId::generate().as_str())
        .bind(&new.kind)
        .bind(&new.name)
        .bind(&new.url)
        .bind(new.description.as_deref())
        .bind(json_text(&new.tags)?)
        .bind(json_text(&new.fields)?)
        .bind(size)
        .bind(now_rfc3339())
        .fetch_one(&mut **tx)
        .await
        .map_err(map_pg)?;
    decode(&row)
}

/// Numbered placeholders (`$1`, `$2`, …) handed out in binding order, for
/// SQL assembled from constants.
struct Placeholders(usize);

impl Placeholders {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("${}", self.0)
    }
}

#[async_trait]
impl RecordRepo for PgStore {
    async fn create_record(
        &self,
        scope: &TenantScope,
        new: NewRecord,
    ) -> Result<Record, StoreError> {
        let tenant = scope.tenant();
        let mut tx = self.tenant_tx(scope).await?;
        let used = lock_stats(&mut tx, tenant).await?;
        check_quota(scope.quotas(), used, 1, new.size_bytes())?;
        count_in_tx(&mut tx, tenant, metric::RECORDS_WRITTEN, 1).await?;
        // A taken (kind, name) fails with a unique violation (Conflict),
        // which ends the transaction: nothing was written.
        let sql = format!(
            "INSERT INTO records AS r (tenant_id, id, kind, name, url, description, tags, fields, \
             size_bytes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) RETURNING {COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(tenant.as_str())
            .bind(RecordId::generate().as_str())
            .bind(&new.kind)
            .bind(&new.name)
            .bind(&new.url)
            .bind(new.description.as_deref())
            .bind(json_text(&new.tags)?)
            .bind(json_text(&new.fields)?)
            .bind(new.size_bytes())
            .bind(now_rfc3339())
            .fetch_one(&mut *tx)
            .await
            .map_err(map_pg)?;
        let record = decode(&row)?;
        self.commit(tx, Some(scope.tenant())).await?;
        Ok(record)
    }

    async fn get_record(
        &self,
        scope: &TenantScope,
        id: &RecordId,
    ) -> Result<Option<Record>, StoreError> {
        let mut tx = self.tenant_tx(scope).await?;
        let sql = format!("SELECT {COLUMNS} FROM records r WHERE r.tenant_id = $1 AND r.id = $2");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(scope.tenant().as_str())
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        row.as_ref().map(decode).transpose()
    }

    async fn replace_record(
        &self,
        scope: &TenantScope,
        id: &RecordId,
        new: NewRecord,
    ) -> Result<Option<Record>, StoreError> {
        let tenant = scope.tenant();
        let mut tx = self.tenant_tx(scope).await?;
        let used = lock_stats(&mut tx, tenant).await?;
        let old: Option<i64> =
            sqlx::query_scalar("SELECT size_bytes FROM records WHERE tenant_id = $1 AND id = $2")
                .bind(tenant.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(map_pg)?;
        let Some(old) = old else {
            return Ok(None);
        };
        check_quota(scope.quotas(), used, 0, new.size_bytes() - old)?;
        count_in_tx(&mut tx, tenant, metric::RECORDS_WRITTEN, 1).await?;
        let sql = format!(
            "UPDATE records r SET kind = $3, name = $4, url = $5, description = $6, tags = $7, \
             fields = $8, size_bytes = $9, updated_at = $10 \
             WHERE r.tenant_id = $1 AND r.id = $2 RETURNING {COLUMNS}"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
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
            .map_err(map_pg)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = decode(&row)?;
        self.commit(tx, Some(scope.tenant())).await?;
        Ok(Some(record))
    }

    async fn upsert_record(
        &self,
        scope: &TenantScope,
        new: NewRecord,
    ) -> Result<Record, StoreError> {
        let mut tx = self.tenant_tx(scope).await?;
        let record = upsert_in_tx(&mut tx, scope.tenant(), &new, scope.quotas()).await?;
        self.commit(tx, Some(scope.tenant())).await?;
        Ok(record)
    }

    async fn delete_record(&self, scope: &TenantScope, id: &RecordId) -> Result<bool, StoreError> {
        let tenant = scope.tenant();
        let mut tx = self.tenant_tx(scope).await?;
        // The stats row first, as every record write (the lock order).
        lock_stats(&mut tx, tenant).await?;
        let deleted = sqlx::query("DELETE FROM records WHERE tenant_id = $1 AND id = $2")
            .bind(tenant.as_str())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?
            .rows_affected();
        if deleted == 0 {
            return Ok(false);
        }
        self.commit(tx, Some(scope.tenant())).await?;
        Ok(true)
    }

    async fn search_records(
        &self,
        scope: &TenantScope,
        q: &SearchQuery,
    ) -> Result<SearchPage, StoreError> {
        let tenant = scope.tenant().as_str();
        let query = fts::ts_query(&q.text);
        // The statements, from constants only; parameters are bound below
        // in the order the placeholders are handed out.
        let mut p = Placeholders(0);
        let mut filter = format!("r.tenant_id = {}", p.next());
        let mut from = String::from("records r");
        if query.is_some() {
            from.push_str(&format!(", to_tsquery('records_search', {}) q", p.next()));
            filter.push_str(" AND r.search @@ q");
        }
        if q.kind.is_some() {
            filter.push_str(&format!(" AND r.kind = {}", p.next()));
        }
        if !q.tags.is_empty() {
            // Every tag an element of the record's tags array.
            filter.push_str(&format!(" AND r.tags::jsonb ?& {}::text[]", p.next()));
        }
        let count_sql = format!("SELECT count(*) FROM {from} WHERE {filter}");
        let (limit, offset) = (p.next(), p.next());
        let page_sql = if query.is_some() {
            format!(
                "SELECT {COLUMNS}, ts_rank({RANK_WEIGHTS}, r.search, q, {RANK_NORMALISATION})::float8 \
                 AS score FROM {from} WHERE {filter} \
                 ORDER BY score DESC, r.seq LIMIT {limit} OFFSET {offset}"
            )
        } else {
            format!(
                "SELECT {COLUMNS}, NULL::float8 AS score FROM {from} WHERE {filter} \
                 ORDER BY r.seq DESC LIMIT {limit} OFFSET {offset}"
            )
        };
        let mut count = sqlx::query_scalar::<_, i64>(AssertSqlSafe(count_sql)).bind(tenant);
        let mut page = sqlx::query(AssertSqlSafe(page_sql)).bind(tenant);
        if let Some(query) = &query {
            count = count.bind(query.clone());
            page = page.bind(query.clone());
        }
        if let Some(kind) = &q.kind {
            count = count.bind(kind.clone());
            page = page.bind(kind.clone());
        }
        if !q.tags.is_empty() {
            count = count.bind(q.tags.clone());
            page = page.bind(q.tags.clone());
        }
        page = page
            .bind(i64::try_from(q.limit).unwrap_or(i64::MAX))
            .bind(i64::try_from(q.offset).unwrap_or(i64::MAX));

        let mut tx = self.tenant_tx(scope).await?;
        let total = count.fetch_one(&mut *tx).await.map_err(map_pg)?;
        let rows = page.fetch_all(&mut *tx).await.map_err(map_pg)?;
        tx.commit().await.map_err(map_pg)?;
        let results = rows
            .iter()
            .map(|row| {
                Ok(SearchHit {
                    record: decode(row)?,
                    score: row.try_get::<Option<f64>, _>(10).map_err(map_pg)?,
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
