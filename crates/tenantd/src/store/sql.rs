//! The dialect seam: one statement text for both engines.
//!
//! Features write each query once, with `$N` placeholders (SQLite accepts
//! them too), bind plain values ([`Arg`]) and read columns by index
//! ([`Row::get`]); [`Conn`] runs the statement on whichever engine holds
//! the data. The engines agree on nearly everything the schema uses (text,
//! 64-bit integers, blobs, `ON CONFLICT … DO UPDATE`, `RETURNING`,
//! `COLLATE "C"`, which SQLite connections register as a byte-wise
//! collation). What really differs is small and named here: row locks
//! ([`Dialect::lock_rows`]), and the engine-specific statements a feature
//! chooses with [`Conn::dialect`] (full-text search, `SKIP LOCKED`).
//! See `docs/architecture.md`, "Storage".

use std::borrow::Cow;

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Postgres, Sqlite, Transaction, Type};
use tenancy::TenantId;

use super::StoreError;
use super::outbox::{self, OutboxPlace};
use super::postgres::map_pg;
use super::reader::{self, Reader};
use super::sqlite::{WriteTurn, map_sqlx};

/// Which SQL engine a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// The embedded default.
    Sqlite,
    /// PostgreSQL, with row-level security.
    Postgres,
}

impl Dialect {
    /// What follows a `SELECT` that must lock the rows it reads until the
    /// transaction ends. SQLite has no row locks: its write transactions
    /// take the database's write lock up front (`BEGIN IMMEDIATE`), which
    /// already serialises them.
    pub fn lock_rows(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

/// A value bound to a placeholder. Both engines store the schema's values
/// as text, 64-bit integers, blobs and (rarely) doubles.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    /// `TEXT` (or `NULL`).
    Text(Option<String>),
    /// `INTEGER` / `BIGINT` (or `NULL`).
    Int(Option<i64>),
    /// `BLOB` / `BYTEA` (or `NULL`).
    Bytes(Option<Vec<u8>>),
    /// `REAL` / `DOUBLE PRECISION` (or `NULL`).
    Real(Option<f64>),
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Arg::Text(Some(v.to_owned()))
    }
}
impl From<String> for Arg {
    fn from(v: String) -> Self {
        Arg::Text(Some(v))
    }
}
impl From<&String> for Arg {
    fn from(v: &String) -> Self {
        Arg::Text(Some(v.clone()))
    }
}
impl From<Option<&str>> for Arg {
    fn from(v: Option<&str>) -> Self {
        Arg::Text(v.map(str::to_owned))
    }
}
impl From<Option<String>> for Arg {
    fn from(v: Option<String>) -> Self {
        Arg::Text(v)
    }
}
impl From<&TenantId> for Arg {
    fn from(v: &TenantId) -> Self {
        Arg::Text(Some(v.as_str().to_owned()))
    }
}
impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Arg::Int(Some(v))
    }
}
impl From<Option<i64>> for Arg {
    fn from(v: Option<i64>) -> Self {
        Arg::Int(v)
    }
}
impl From<i32> for Arg {
    fn from(v: i32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<u32> for Arg {
    fn from(v: u32) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<bool> for Arg {
    fn from(v: bool) -> Self {
        Arg::Int(Some(i64::from(v)))
    }
}
impl From<&[u8]> for Arg {
    fn from(v: &[u8]) -> Self {
        Arg::Bytes(Some(v.to_vec()))
    }
}
impl From<Vec<u8>> for Arg {
    fn from(v: Vec<u8>) -> Self {
        Arg::Bytes(Some(v))
    }
}
impl From<f64> for Arg {
    fn from(v: f64) -> Self {
        Arg::Real(Some(v))
    }
}

/// One statement and its arguments, in placeholder order.
#[derive(Debug, Clone)]
pub struct Sql {
    text: Cow<'static, str>,
    args: Vec<Arg>,
}

/// A statement written once for both engines.
pub fn sql(text: &'static str) -> Sql {
    Sql {
        text: Cow::Borrowed(text),
        args: Vec::new(),
    }
}

impl Sql {
    /// A statement assembled at run time (a dialect fragment, a column
    /// list). Its values still go through placeholders, never into the
    /// text.
    pub fn owned(text: String) -> Sql {
        Sql {
            text: Cow::Owned(text),
            args: Vec::new(),
        }
    }

    /// Binds the next placeholder.
    #[must_use]
    pub fn bind(mut self, value: impl Into<Arg>) -> Self {
        self.args.push(value.into());
        self
    }

    /// The statement's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The bound arguments, in placeholder order.
    pub(super) fn args(&self) -> &[Arg] {
        &self.args
    }

    fn sqlite(&self) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&*self.text));
        for arg in &self.args {
            q = match arg {
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::Int(v) => q.bind(*v),
                Arg::Bytes(v) => q.bind(v.as_deref()),
                Arg::Real(v) => q.bind(*v),
            };
        }
        q
    }

    fn postgres(&self) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
        let mut q = sqlx::query(sqlx::AssertSqlSafe(&*self.text));
        for arg in &self.args {
            q = match arg {
                Arg::Text(v) => q.bind(v.as_deref()),
                Arg::Int(v) => q.bind(*v),
                Arg::Bytes(v) => q.bind(v.as_deref()),
                Arg::Real(v) => q.bind(*v),
            };
        }
        q
    }
}

/// A value every driver decodes (text, integers, blobs, options of them).
pub trait Column:
    for<'r> Decode<'r, Sqlite>
    + Type<Sqlite>
    + for<'r> Decode<'r, Postgres>
    + Type<Postgres>
    + rusqlite::types::FromSql
{
}

impl<T> Column for T where
    T: for<'r> Decode<'r, Sqlite>
        + Type<Sqlite>
        + for<'r> Decode<'r, Postgres>
        + Type<Postgres>
        + rusqlite::types::FromSql
{
}

/// A result row of either engine.
#[derive(Debug)]
pub enum Row {
    /// From SQLite, through sqlx (writes and the administrative path).
    Sqlite(SqliteRow),
    /// From PostgreSQL.
    Postgres(PgRow),
    /// From SQLite's read path ([`super::reader`]), values as stored.
    Values(Vec<rusqlite::types::Value>),
}

/// How SQLite stored a value (its columns' declared types do not bind
/// their values): what a dump must read it as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredType {
    /// `INTEGER`.
    Integer,
    /// `REAL`.
    Real,
    /// `TEXT`.
    Text,
    /// `BLOB`.
    Blob,
}

impl Row {
    /// Column `index` (from 0).
    pub fn get<T: Column>(&self, index: usize) -> Result<T, StoreError> {
        use sqlx::Row as _;
        match self {
            Row::Sqlite(row) => row.try_get(index).map_err(map_sqlx),
            Row::Postgres(row) => row.try_get(index).map_err(map_pg),
            Row::Values(values) => reader::decode(values, index),
        }
    }

    /// How SQLite stored column `index` (`None` for `NULL`), for rows of
    /// columns without a declared type. `Err` on PostgreSQL, whose
    /// columns are always typed.
    pub fn stored_type(&self, index: usize) -> Result<Option<StoredType>, StoreError> {
        use rusqlite::types::Value;
        use sqlx::{Row as _, TypeInfo as _, ValueRef as _};
        let name = match self {
            Row::Sqlite(row) => {
                let raw = row.try_get_raw(index).map_err(map_sqlx)?;
                if raw.is_null() {
                    return Ok(None);
                }
                raw.type_info().name().to_owned()
            }
            Row::Values(values) => {
                return Ok(match values.get(index) {
                    Some(Value::Integer(_)) => Some(StoredType::Integer),
                    Some(Value::Real(_)) => Some(StoredType::Real),
                    Some(Value::Text(_)) => Some(StoredType::Text),
                    Some(Value::Blob(_)) => Some(StoredType::Blob),
                    Some(Value::Null) | None => None,
                });
            }
            Row::Postgres(_) => {
                return Err(StoreError::Internal(
                    "a column of no declared type outside SQLite"
                        .to_owned()
                        .into(),
                ));
            }
        };
        Ok(Some(match name.as_str() {
            "INTEGER" => StoredType::Integer,
            "REAL" => StoredType::Real,
            "BLOB" => StoredType::Blob,
            _ => StoredType::Text,
        }))
    }
}

pub(super) enum Inner {
    /// A transaction; a write one holds the process's write turn until
    /// it ends (see `SqliteStore::write_tx`).
    SqliteTx(Transaction<'static, Sqlite>, Option<WriteTurn>),
    SqliteConn(PoolConnection<Sqlite>),
    /// A tenant read on the calling thread ([`super::reader`]).
    SqliteRead(Reader),
    PgTx(Transaction<'static, Postgres>),
    PgConn(PoolConnection<Postgres>),
}

/// A connection (or transaction) to the database holding some data, from
/// [`super::Db`]. Writes end with [`Conn::commit`]; dropping a transaction
/// uncommitted rolls it back.
pub struct Conn {
    pub(super) inner: Inner,
    /// The tenant a PostgreSQL tenant transaction is confined to (its
    /// row-level security lets it park only that tenant's audit events).
    pub(super) tenant: Option<TenantId>,
    pub(super) outbox: OutboxPlace,
}

/// Runs `$sql` with sqlx's `$method` on whichever connection `$self`
/// holds, mapping the driver's error by engine, and hands the result to
/// the engine's closure.
macro_rules! on_engine {
    ($self:ident, $sql:ident, $method:ident, $sqlite:expr, $pg:expr) => {
        match &mut $self.inner {
            Inner::SqliteRead(reader) => reader.$method(&$sql)?,
            Inner::SqliteTx(c, _) => {
                ($sqlite)($sql.sqlite().$method(&mut **c).await.map_err(map_sqlx)?)
            }
            Inner::SqliteConn(c) => {
                ($sqlite)($sql.sqlite().$method(&mut **c).await.map_err(map_sqlx)?)
            }
            Inner::PgTx(c) => ($pg)($sql.postgres().$method(&mut **c).await.map_err(map_pg)?),
            Inner::PgConn(c) => ($pg)($sql.postgres().$method(&mut **c).await.map_err(map_pg)?),
        }
    };
}

impl Conn {
    /// The engine this connection talks to.
    pub fn dialect(&self) -> Dialect {
        match self.inner {
            Inner::SqliteTx(..) | Inner::SqliteConn(_) | Inner::SqliteRead(_) => Dialect::Sqlite,
            Inner::PgTx(_) | Inner::PgConn(_) => Dialect::Postgres,
        }
    }

    /// Runs a statement; how many rows it changed.
    pub async fn execute(&mut self, sql: Sql) -> Result<u64, StoreError> {
        Ok(on_engine!(
            self,
            sql,
            execute,
            |r: sqlx::sqlite::SqliteQueryResult| r.rows_affected(),
            |r: sqlx::postgres::PgQueryResult| r.rows_affected()
        ))
    }

    /// Every row of a query.
    pub async fn fetch_all(&mut self, sql: Sql) -> Result<Vec<Row>, StoreError> {
        Ok(on_engine!(
            self,
            sql,
            fetch_all,
            |rows: Vec<SqliteRow>| rows.into_iter().map(Row::Sqlite).collect::<Vec<_>>(),
            |rows: Vec<PgRow>| rows.into_iter().map(Row::Postgres).collect::<Vec<_>>()
        ))
    }

    /// The first row of a query, if any.
    pub async fn fetch_optional(&mut self, sql: Sql) -> Result<Option<Row>, StoreError> {
        Ok(on_engine!(
            self,
            sql,
            fetch_optional,
            |row: Option<SqliteRow>| row.map(Row::Sqlite),
            |row: Option<PgRow>| row.map(Row::Postgres)
        ))
    }

    /// The one row a query must return.
    pub async fn fetch_one(&mut self, sql: Sql) -> Result<Row, StoreError> {
        self.fetch_optional(sql)
            .await?
            .ok_or_else(|| StoreError::Internal("a query that returns a row returned none".into()))
    }

    /// The first column of the one row a query returns (`count(*)`).
    pub async fn scalar<T: Column>(&mut self, sql: Sql) -> Result<T, StoreError> {
        self.fetch_one(sql).await?.get(0)
    }

    /// The first column of the first row, if there is one.
    pub async fn scalar_optional<T: Column>(&mut self, sql: Sql) -> Result<Option<T>, StoreError> {
        self.fetch_optional(sql)
            .await?
            .map(|row| row.get(0))
            .transpose()
    }

    /// Commits a write, parking the request's audit event in this
    /// database's outbox inside the same transaction (see
    /// [`super::outbox`]): every write a request makes commits here. A
    /// PostgreSQL tenant transaction parks only its own tenant's event
    /// (row-level security would refuse another); an event of another
    /// chain is left to the audit writer alone rather than failing the
    /// write. Without a transaction (a read), nothing to do.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        let pending = outbox::pending().filter(|(_, e)| {
            self.dialect() == Dialect::Sqlite
                || self.tenant.as_ref().is_none_or(|t| t.as_str() == e.tenant)
        });
        let parked = match pending {
            Some((pending, event)) if self.in_transaction() => {
                self.execute(outbox::park(&event)).await?;
                Some((pending, event.tenant))
            }
            _ => None,
        };
        match self.inner {
            Inner::SqliteTx(tx, _turn) => tx.commit().await.map_err(map_sqlx)?,
            Inner::PgTx(tx) => tx.commit().await.map_err(map_pg)?,
            Inner::SqliteConn(_) | Inner::SqliteRead(_) | Inner::PgConn(_) => {}
        }
        if let Some((pending, chain)) = parked {
            pending.parked(outbox::OutboxRef {
                place: self.outbox,
                chain,
            });
        }
        Ok(())
    }

    /// Commits a write made on the platform's behalf rather than the
    /// request's (the usage flush a report runs first): the request's
    /// audit event is not parked with it, so an event still parks with the
    /// request's own write, or reaches its chain through the writer.
    pub async fn commit_unattributed(self) -> Result<(), StoreError> {
        match self.inner {
            Inner::SqliteTx(tx, _turn) => tx.commit().await.map_err(map_sqlx),
            Inner::PgTx(tx) => tx.commit().await.map_err(map_pg),
            Inner::SqliteConn(_) | Inner::SqliteRead(_) | Inner::PgConn(_) => Ok(()),
        }
    }

    /// Ends a transaction without writing anything.
    pub async fn rollback(self) -> Result<(), StoreError> {
        match self.inner {
            Inner::SqliteTx(tx, _turn) => tx.rollback().await.map_err(map_sqlx),
            Inner::PgTx(tx) => tx.rollback().await.map_err(map_pg),
            Inner::SqliteConn(_) | Inner::SqliteRead(_) | Inner::PgConn(_) => Ok(()),
        }
    }

    fn in_transaction(&self) -> bool {
        matches!(self.inner, Inner::SqliteTx(..) | Inner::PgTx(_))
    }
}

#[cfg(test)]
mod tests {
    use super::sql;
    use crate::clock::Clock;
    use crate::store::{Db, open_sqlite};

    #[tokio::test]
    async fn one_statement_text_runs_on_sqlite_with_numbered_placeholders_and_byte_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::sqlite(
            open_sqlite(dir.path(), 2).await.expect("opens"),
            Clock::system(),
        );
        let mut conn = db.admin_read().await.expect("conn");
        // `$2` before `$1`, both bound by position.
        let row = conn
            .fetch_one(
                sql("SELECT $2 || $1, $3 + 1, $4")
                    .bind("b")
                    .bind("a")
                    .bind(41_i64)
                    .bind(None::<String>),
            )
            .await
            .expect("row");
        assert_eq!(row.get::<String>(0).expect("text"), "ab");
        assert_eq!(row.get::<i64>(1).expect("int"), 42);
        assert_eq!(row.get::<Option<String>>(2).expect("null"), None);
        // Upper case sorts before lower case byte-wise, whatever a locale says.
        let first: String = conn
            .scalar(sql(
                "SELECT x FROM (SELECT 'a' AS x UNION ALL SELECT 'B') ORDER BY x COLLATE \"C\" LIMIT 1",
            ))
            .await
            .expect("scalar");
        assert_eq!(first, "B");
    }
}

#[cfg(test)]
mod cause_tests {
    use crate::clock::Clock;
    use crate::store::{Db, StoreError, open_sqlite, sql};

    #[tokio::test]
    async fn a_driver_failure_keeps_the_driver_error_as_its_source() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::sqlite(
            open_sqlite(dir.path(), 2).await.expect("opens"),
            Clock::system(),
        );
        let mut conn = db.admin_write().await.expect("conn");
        conn.execute(sql("INSERT INTO tenants_nope VALUES (1)"))
            .await
            .map(|_| ())
            .expect_err("no such table");
        let err = conn
            .execute(sql(
                "INSERT INTO deleted_tenants (id, deleted_at) VALUES ('a', 'x'), ('a', 'x')",
            ))
            .await
            .expect_err("the same id twice");
        let StoreError::Conflict(cause) = &err else {
            panic!("a unique violation is a conflict: {err:?}");
        };
        let source = std::error::Error::source(&err).expect("the driver's error is kept");
        assert!(source.to_string().contains("UNIQUE"), "{source}");
        assert!(cause.chain().starts_with(cause.message()));
    }
}
