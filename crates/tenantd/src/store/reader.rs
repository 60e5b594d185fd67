//! SQLite reads on the calling thread.
//!
//! sqlx runs every SQLite connection on a worker thread of its own and
//! hands each statement to it over a channel: two thread switches per
//! statement, each costlier than the point read it carries (a record by
//! id is a few microseconds in SQLite; the hand-off was about half of a
//! `GET /records/{id}`'s CPU profile). Tenant reads ([`super::Db::read`])
//! therefore run on connections of their own, opened with rusqlite on the
//! same SQLite library, and execute where the request's task runs.
//!
//! Why that is safe to do on an async worker thread:
//! - the database is in WAL mode, so a reader never waits for a writer
//!   (it reads the last committed snapshot); the busy timeout only matters
//!   in the rare moments SQLite itself must recover the WAL index;
//! - tenant reads are bounded by the tenant's own rows: point reads by
//!   key, pages of at most `MAX_LIMIT` rows, and searches whose index
//!   lists only the tenant's own terms (see `records/search.rs`);
//! - the connections are `query_only`: a write sent down this path is an
//!   error, never a write outside `BEGIN IMMEDIATE`.
//!
//! Writes and the administrative path stay on sqlx (they wait for the
//! write lock, which must not block a runtime thread).
//!
//! The pool holds idle connections only: a statement runs to completion
//! without yielding, so at most one connection per runtime thread is busy
//! at a time, and a task that holds a [`Reader`] across its awaits only
//! adds one. Connections beyond [`MAX_IDLE`] are closed when returned, so
//! nothing grows with the number of tenants or databases.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use super::sql::{Arg, Row, Sql};
use super::sqlite::classify;
use super::{Cause, StoreError};

/// Idle connections kept per database file.
const MAX_IDLE: usize = 8;

/// Prepared statements kept per connection (the request path uses a few
/// dozen distinct texts; a search's filtered statements vary a little).
const STATEMENT_CACHE: usize = 256;

/// How long a read waits for SQLite's own locks (WAL index recovery).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The idle read connections of one database file.
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    /// Set by [`Readers::close`]: the database is being shut down, and a
    /// read answers "unavailable" as the writers' closed pool does.
    closed: AtomicBool,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readers")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Readers {
    /// Read connections to the file at `path` (opened as needed).
    pub(crate) fn new(path: &Path) -> Arc<Self> {
        Arc::new(Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        })
    }

    /// An idle connection, or a new one.
    pub(crate) fn get(self: &Arc<Self>) -> Result<Reader, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable(
                "the database is closed".to_owned().into(),
            ));
        }
        let idle = self.lock().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        Ok(Reader {
            conn: Some(conn),
            home: Arc::clone(self),
        })
    }

    /// Closes the idle connections and refuses new reads (shutdown; a
    /// connection in use closes when it is returned).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while the list was held cannot leave it half-changed
        // (push and pop are the only operations): use it as it is.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(&self) -> Result<Connection, StoreError> {
        // NO_MUTEX: a connection is used by one task at a time (the pool
        // hands it out whole), so SQLite's own per-connection mutex is
        // only overhead.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.path, flags).map_err(map_rusqlite)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map_rusqlite)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // The byte-wise "C" collation the writers register too (see
        // `super::sql`), so the same statement texts run here.
        conn.create_collation("C", |a: &str, b: &str| a.as_bytes().cmp(b.as_bytes()))
            .map_err(map_rusqlite)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(map_rusqlite)?;
        Ok(conn)
    }
}

/// A read connection borrowed from [`Readers`]; returned on drop.
pub(crate) struct Reader {
    conn: Option<Connection>,
    home: Arc<Readers>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let mut idle = self.home.lock();
            if idle.len() < MAX_IDLE && !self.home.closed.load(Ordering::Acquire) {
                idle.push(conn);
            }
        }
    }
}

impl Reader {
    /// Every row `sql` returns, each column read as stored.
    pub(crate) fn fetch_all(&mut self, sql: &Sql) -> Result<Vec<Row>, StoreError> {
        self.run(sql, usize::MAX)
    }

    /// The first row `sql` returns, if any.
    pub(crate) fn fetch_optional(&mut self, sql: &Sql) -> Result<Option<Row>, StoreError> {
        Ok(self.run(sql, 1)?.into_iter().next())
    }

    /// Runs `sql` for its effect (always refused: the connection is
    /// `query_only`); how many rows it changed.
    pub(crate) fn execute(&mut self, sql: &Sql) -> Result<u64, StoreError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(sql.text()).map_err(map_rusqlite)?;
        bind(&mut statement, sql)?;
        let changed = statement.raw_execute().map_err(map_rusqlite)?;
        Ok(u64::try_from(changed).unwrap_or(u64::MAX))
    }

    fn conn(&self) -> Result<&Connection, StoreError> {
        self.conn
            .as_ref()
            .ok_or_else(|| StoreError::Internal("a read connection used after release".into()))
    }

    /// Up to `max` rows of `sql`, materialised (a row cannot outlive its
    /// statement).
    fn run(&mut self, sql: &Sql, max: usize) -> Result<Vec<Row>, StoreError> {
        let conn = self.conn()?;
        let mut statement = conn.prepare_cached(sql.text()).map_err(map_rusqlite)?;
        bind(&mut statement, sql)?;
        let width = statement.column_count();
        let mut rows = statement.raw_query();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(row) = rows.next().map_err(map_rusqlite)? else {
                break;
            };
            let values = (0..width)
                .map(|i| {
                    let value = row.get_ref(i).map_err(map_rusqlite)?;
                    Value::try_from(value)
                        .map_err(|e| StoreError::Internal(format!("column {i}: {e}").into()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Row::Values(values));
        }
        Ok(out)
    }
}

/// Binds `sql`'s arguments. `$N` is the N-th argument wherever it
/// appears (SQLite numbers named parameters by first appearance, so the
/// name is what says which argument it is), as sqlx binds them on the
/// other paths.
fn bind(statement: &mut rusqlite::CachedStatement<'_>, sql: &Sql) -> Result<(), StoreError> {
    let args = sql.args();
    for index in 1..=statement.parameter_count() {
        let position = match statement.parameter_name(index) {
            Some(name) => name
                .strip_prefix('$')
                .or_else(|| name.strip_prefix('?'))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| {
                    StoreError::Internal(format!("unsupported placeholder {name}").into())
                })?,
            None => index,
        };
        let arg = position
            .checked_sub(1)
            .and_then(|i| args.get(i))
            .ok_or_else(|| {
                StoreError::Internal(format!("no argument bound for ${position}").into())
            })?;
        statement
            .raw_bind_parameter(index, arg)
            .map_err(map_rusqlite)?;
    }
    Ok(())
}

impl ToSql for Arg {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Arg::Int(Some(v)) => ValueRef::Integer(*v),
            Arg::Bytes(Some(v)) => ValueRef::Blob(v),
            Arg::Real(Some(v)) => ValueRef::Real(*v),
            Arg::Text(None) | Arg::Int(None) | Arg::Bytes(None) | Arg::Real(None) => ValueRef::Null,
        }))
    }
}

/// Classifies a rusqlite error as [`super::sqlite::map_sqlx`] classifies
/// sqlx's.
pub(crate) fn map_rusqlite(error: rusqlite::Error) -> StoreError {
    match &error {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let text = message.clone().unwrap_or_else(|| failure.to_string());
            let unique = failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY;
            let kind = if unique {
                Some(StoreError::Conflict as fn(Cause) -> StoreError)
            } else {
                classify(i64::from(failure.extended_code))
            };
            match kind {
                Some(kind) => kind(Cause::with_source(text, error)),
                None => StoreError::Internal(Cause::with_source(error.to_string(), error)),
            }
        }
        _ => StoreError::Internal(Cause::with_source(error.to_string(), error)),
    }
}

/// A column of a row read here, as `T` (what sqlx's decoding gives for
/// the same stored value).
pub(crate) fn decode<T: rusqlite::types::FromSql>(
    values: &[Value],
    index: usize,
) -> Result<T, StoreError> {
    let value = values.get(index).ok_or_else(|| {
        StoreError::Internal(format!("no column {index} in a row of {}", values.len()).into())
    })?;
    T::column_result(ValueRef::from(value))
        .map_err(|e| StoreError::Internal(format!("column {index}: {e}").into()))
}

#[cfg(test)]
mod tests;
