//! Full-text search of records: the one place the two engines really
//! differ for records, so both dialects' statements sit here side by side.
//!
//! **SQLite (FTS5).** `records_fts` is a contentless FTS5 table whose rowid
//! is the record's `seq`; record writes keep it in step ([`index`],
//! [`unindex`]), and every path that writes one (the records repository,
//! imports, moves, the re-index of old databases) goes through [`index`]
//! or [`write_entry`], so [`fts_columns`] is the one definition of an
//! entry. Each word of an entry is one token prefixed with its tenant
//! ([`fts::indexed_text`]), so a tenant's words are terms of their own: a
//! search ([`fts::match_expression`], every term the tenant's) walks the
//! posting lists of the tenant's terms only, a prefix expands over the
//! tenant's vocabulary only, and its cost follows the tenant's rows, not
//! the database's. `rank` is bm25 with the column weights configured in the
//! migration (name 10, tags 5, description 2, url and fields 1); its
//! document frequency of a term counts the tenant's records only, so what
//! other tenants write does not change which of a tenant's words are rare
//! (the row count and average lengths bm25 also reads stay global). The
//! joined row's `tenant_id` is checked again as defence in depth.
//!
//! **PostgreSQL (`tsvector`).** `records.search` is a generated `tsvector`
//! (the `records_search` configuration: words split at punctuation, case
//! and diacritics folded, as FTS5's `unicode61 remove_diacritics 2`),
//! weighted A name, B tags, C description, D url and fields like the bm25
//! column weights, so writes maintain nothing. The user's text becomes a
//! `tsquery` text of quoted terms ([`fts::ts_query`]: all required, the last
//! as a prefix) bound as a parameter of `to_tsquery`, never SQL. Results are
//! ranked by `ts_rank` with those weights, best first, ties oldest first
//! (as FTS5 returns them).
//!
//! Under row-level security the planner uses an index condition only when
//! its operator is leakproof, and `@@` is not: searches read the tenant's
//! rows through the index on `tenant_id` and test the match on each (never
//! another tenant's rows). A superuser can let the GIN index serve the
//! match too with `ALTER FUNCTION ts_match_vq(tsvector, tsquery) LEAKPROOF`.
//!
//! Without terms, a search is a listing, newest first: one statement for
//! both engines.

use tenancy::TenantId;

use super::fts;
use super::model::{NewRecord, SearchHit, SearchPage, SearchQuery, page_cursor};
use super::repo::{R_COLUMNS, decode};
use crate::store::{Arg, Conn, Db, Dialect, Sql, StoreError, TenantScope, sql};

/// `ts_rank` weights for D, C, B, A: url and fields 1, description 2, tags
/// 5, name 10, as SQLite's bm25 column weights (scaled to at most 1).
const RANK_WEIGHTS: &str = "'{0.1, 0.2, 0.5, 1.0}'";

/// `ts_rank` normalisation 1: divided by 1 + log(document length), as bm25
/// favours short documents.
const RANK_NORMALISATION: &str = "1";

/// Whether record writes must keep the search index in step themselves:
/// SQLite's FTS5 table is separate; PostgreSQL's search column is
/// generated from the row.
pub(crate) fn indexed_by_writes(dialect: Dialect) -> bool {
    dialect == Dialect::Sqlite
}

/// Writes the search entry of record `seq` (replacing any previous one).
pub(crate) async fn index(
    conn: &mut Conn,
    seq: i64,
    tenant: &TenantId,
    new: &NewRecord,
) -> Result<(), StoreError> {
    if !indexed_by_writes(conn.dialect()) {
        return Ok(());
    }
    unindex(conn, seq).await?;
    write_entry(conn, seq, tenant, new).await
}

/// Writes the search entry of record `seq`, which has none (SQLite only):
/// [`index`] without the removal first, for a rebuild of the whole index.
pub(super) async fn write_entry(
    conn: &mut Conn,
    seq: i64,
    tenant: &TenantId,
    new: &NewRecord,
) -> Result<(), StoreError> {
    let [name, description, url, tags, fields] = fts_columns(tenant, new);
    conn.execute(
        sql(INDEX_SQL)
            .bind(seq)
            .bind(name)
            .bind(description)
            .bind(url)
            .bind(tags)
            .bind(fields),
    )
    .await?;
    Ok(())
}

/// Writes the FTS5 row `$1` from `$2`…`$6` ([`fts_columns`]).
pub const INDEX_SQL: &str = "INSERT INTO records_fts (rowid, name, description, url, tags, fields) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// Removes the FTS5 row `$1`.
pub(super) const UNINDEX_SQL: &str = "DELETE FROM records_fts WHERE rowid = $1";

/// The FTS5 columns of `tenant`'s record `new` after its rowid ([`INDEX_SQL`]'s
/// `$2`…`$6`): the searchable text of each field, every word one token
/// carrying the tenant ([`fts::indexed_text`]). Public for the benchmark's
/// bulk loader, which must write what the server writes.
pub fn fts_columns(tenant: &TenantId, new: &NewRecord) -> [String; 5] {
    let token = fts::tenant_token(tenant.as_str());
    let text = |t: &str| fts::indexed_text(&token, t);
    [
        text(&new.name),
        text(new.description.as_deref().unwrap_or_default()),
        text(&new.url),
        text(&new.tags.join(" ")),
        text(&fts::fields_text(&new.fields)),
    ]
}

/// Removes the search entry of record `seq`.
pub(crate) async fn unindex(conn: &mut Conn, seq: i64) -> Result<(), StoreError> {
    if indexed_by_writes(conn.dialect()) {
        conn.execute(sql(UNINDEX_SQL).bind(seq)).await?;
    }
    Ok(())
}

/// Removes the search entries of every record of `tenant` (before its
/// rows are deleted).
pub(crate) async fn unindex_tenant(conn: &mut Conn, tenant: &TenantId) -> Result<(), StoreError> {
    if indexed_by_writes(conn.dialect()) {
        conn.execute(
            sql("DELETE FROM records_fts WHERE rowid IN \
                 (SELECT seq FROM records WHERE tenant_id = $1)")
            .bind(tenant),
        )
        .await?;
    }
    Ok(())
}

/// Full-text search of `scope`'s records (a listing when the text has no
/// terms): the count and the page, read in one transaction.
pub(super) async fn search(
    db: &Db,
    scope: &TenantScope,
    q: &SearchQuery,
) -> Result<SearchPage, StoreError> {
    let mut conn = db.read(scope).await?;
    let (count, page) = statements(conn.dialect(), scope.tenant(), q);
    let rows = conn.fetch_all(page).await?;
    // A page shorter than asked for is the last one: the total is known
    // from it (exactly, and from the same snapshot), and the count, which
    // costs as much as the page, is not run. An empty page past the end
    // says nothing of the total.
    let got = u64::try_from(rows.len()).unwrap_or(u64::MAX);
    let last_page = got < q.limit && (got > 0 || q.offset == 0);
    let total: i64 = if last_page {
        i64::try_from(q.offset.saturating_add(got)).unwrap_or(i64::MAX)
    } else {
        conn.scalar(count).await?
    };
    // A read: nothing to commit (and no audit event to park).
    conn.rollback().await?;
    let results = rows
        .iter()
        .map(|row| {
            Ok(SearchHit {
                record: decode(row)?,
                score: row.get::<Option<f64>>(10)?,
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

/// The count and page statements of `q` on `dialect`.
fn statements(dialect: Dialect, tenant: &TenantId, q: &SearchQuery) -> (Sql, Sql) {
    let filtered = q.kind.is_some() || !q.tags.is_empty();
    match dialect {
        Dialect::Sqlite => match fts::match_expression(tenant.as_str(), &q.text) {
            Some(e) if filtered => fts5_filtered(&e, tenant, q),
            Some(e) => fts5_text_only(&e, tenant, q),
            None => listing(dialect, tenant, q),
        },
        Dialect::Postgres => match fts::ts_query(&q.text) {
            Some(tsquery) => tsvector(&tsquery, tenant, q),
            None => listing(dialect, tenant, q),
        },
    }
}

/// SQLite, text only: the FTS index ranks and pages by itself, and only the
/// page's rows are fetched from `records`. The MATCH asks the tenant's
/// tokens only, which confines it; the outer `tenant_id` check is defence in depth.
fn fts5_text_only(expression: &str, tenant: &TenantId, q: &SearchQuery) -> (Sql, Sql) {
    let count = sql("SELECT count(*) FROM records_fts WHERE records_fts MATCH $1").bind(expression);
    let page = Sql::owned(format!(
        "SELECT {R_COLUMNS}, -h.rank FROM \
         (SELECT rowid AS seq, rank FROM records_fts WHERE records_fts MATCH $1 \
          ORDER BY rank LIMIT $3 OFFSET $4) h \
         CROSS JOIN records r ON r.seq = h.seq WHERE r.tenant_id = $2 ORDER BY h.rank"
    ))
    .bind(expression)
    .bind(tenant)
    .bind(limit(q.limit))
    .bind(limit(q.offset));
    (count, page)
}

/// SQLite, text and filters. CROSS JOIN fixes the order: the FTS index
/// drives and records are looked up by rowid (the planner would otherwise
/// run the MATCH once per row of the tenant).
fn fts5_filtered(expression: &str, tenant: &TenantId, q: &SearchQuery) -> (Sql, Sql) {
    let from = "records_fts CROSS JOIN records r ON r.seq = records_fts.rowid";
    let count = Statement::build(|s| {
        let m = s.arg(expression);
        let filter = filter(s, Dialect::Sqlite, tenant, q);
        format!("SELECT count(*) FROM {from} WHERE records_fts MATCH {m} AND {filter}")
    });
    let page = Statement::build(|s| {
        let m = s.arg(expression);
        let filter = filter(s, Dialect::Sqlite, tenant, q);
        let (limit, offset) = s.page(q);
        format!(
            "SELECT {R_COLUMNS}, -records_fts.rank FROM {from} \
             WHERE records_fts MATCH {m} AND {filter} \
             ORDER BY records_fts.rank LIMIT {limit} OFFSET {offset}"
        )
    });
    (count, page)
}

/// PostgreSQL, with terms: the match tested on the tenant's rows, ranked
/// by `ts_rank`, ties oldest first.
fn tsvector(tsquery: &str, tenant: &TenantId, q: &SearchQuery) -> (Sql, Sql) {
    let count = Statement::build(|s| {
        let query = s.arg(tsquery);
        let filter = filter(s, Dialect::Postgres, tenant, q);
        format!(
            "SELECT count(*) FROM records r, to_tsquery('records_search', {query}) q \
             WHERE {filter} AND r.search @@ q"
        )
    });
    let page = Statement::build(|s| {
        let query = s.arg(tsquery);
        let filter = filter(s, Dialect::Postgres, tenant, q);
        let (limit, offset) = s.page(q);
        format!(
            "SELECT {R_COLUMNS}, \
             CAST(ts_rank({RANK_WEIGHTS}, r.search, q, {RANK_NORMALISATION}) AS DOUBLE PRECISION) \
             AS score FROM records r, to_tsquery('records_search', {query}) q \
             WHERE {filter} AND r.search @@ q \
             ORDER BY score DESC, r.seq LIMIT {limit} OFFSET {offset}"
        )
    });
    (count, page)
}

/// No terms: a filtered listing, newest first (both engines).
fn listing(dialect: Dialect, tenant: &TenantId, q: &SearchQuery) -> (Sql, Sql) {
    let count = Statement::build(|s| {
        let filter = filter(s, dialect, tenant, q);
        format!("SELECT count(*) FROM records r WHERE {filter}")
    });
    let page = Statement::build(|s| {
        let filter = filter(s, dialect, tenant, q);
        let (limit, offset) = s.page(q);
        format!(
            "SELECT {R_COLUMNS}, CAST(NULL AS DOUBLE PRECISION) FROM records r WHERE {filter} \
             ORDER BY r.seq DESC LIMIT {limit} OFFSET {offset}"
        )
    });
    (count, page)
}

/// The tenant, kind and tag conditions on `records r`. Every tag must be
/// an element of the record's tags array: SQLite walks the JSON text,
/// PostgreSQL asks `jsonb`.
fn filter(s: &mut Statement, dialect: Dialect, tenant: &TenantId, q: &SearchQuery) -> String {
    let mut filter = format!("r.tenant_id = {}", s.arg(tenant));
    if let Some(kind) = &q.kind {
        filter.push_str(&format!(" AND r.kind = {}", s.arg(kind)));
    }
    for tag in &q.tags {
        let tag = s.arg(tag);
        filter.push_str(&match dialect {
            Dialect::Sqlite => format!(
                " AND EXISTS (SELECT 1 FROM json_each(r.tags) WHERE json_each.value = {tag})"
            ),
            Dialect::Postgres => format!(" AND CAST(r.tags AS jsonb) ? {tag}"),
        });
    }
    filter
}

/// A page size or offset as bound.
fn limit(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A statement assembled from constants whose placeholders are handed out
/// as its arguments are added, so `$N` is always the N-th argument bound.
struct Statement {
    args: Vec<Arg>,
}

impl Statement {
    /// The statement `text` writes, with the arguments it added.
    fn build(text: impl FnOnce(&mut Statement) -> String) -> Sql {
        let mut s = Statement { args: Vec::new() };
        let text = text(&mut s);
        s.args
            .into_iter()
            .fold(Sql::owned(text), |sql, arg| sql.bind(arg))
    }

    /// Adds an argument; its placeholder.
    fn arg(&mut self, value: impl Into<Arg>) -> String {
        self.args.push(value.into());
        format!("${}", self.args.len())
    }

    /// The placeholders of `q`'s page size and offset.
    fn page(&mut self, q: &SearchQuery) -> (String, String) {
        (self.arg(limit(q.limit)), self.arg(limit(q.offset)))
    }
}
