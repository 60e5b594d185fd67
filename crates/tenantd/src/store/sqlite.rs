//! The embedded SQLite backend: one database file under `data_dir`, WAL
//! mode, migrations compiled into the binary.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{SqlSafeStr, SqlitePool};

use super::outbox::OutboxPlace;
use super::reader::Readers;
use super::{Cause, StoreError};

/// A SQLite transaction through sqlx.
pub(crate) type SqliteTx = sqlx::Transaction<'static, sqlx::Sqlite>;

/// This process's turn to write to one SQLite file: held from before
/// `BEGIN IMMEDIATE` until the transaction ends.
pub(crate) type WriteTurn = tokio::sync::OwnedMutexGuard<()>;

/// How long a writer waits for its turn (as long as SQLite's own busy
/// timeout, which then bounds the wait for another process).
const WRITE_TURN_TIMEOUT: Duration = Duration::from_secs(5);

/// File name of the shared database inside `data_dir`.
pub const DB_FILE: &str = "tenantd.db";

/// The checksum databases recorded for migration 1 (SHA-384 of its text
/// as first released). Its leading comment has since been reworded; a
/// comment changes nothing in the schema, so the recorded checksum is kept
/// and databases migrated before the rewording open as before. Any change
/// to a statement of that file would need a new migration instead.
const RECORDS_MIGRATION_CHECKSUM: [u8; 48] = [
    0xd5, 0x8c, 0xe0, 0x9d, 0xe1, 0x8a, 0x70, 0x14, 0xf6, 0xd4, 0x5f, 0xf3, 0x32, 0x61, 0xbc, 0x56,
    0x30, 0xa4, 0x52, 0xf4, 0x03, 0x5d, 0x99, 0xd9, 0x13, 0xb0, 0x8d, 0x8d, 0xb2, 0xb0, 0x23, 0x87,
    0x04, 0x59, 0xd5, 0xa4, 0x7e, 0x6e, 0xb7, 0xed, 0xe2, 0x65, 0xc0, 0xe0, 0xc5, 0x06, 0x0d, 0xbf,
];

/// Migration 1 with the checksum databases recorded for it.
fn records_migration() -> Migration {
    let mut migration = Migration::new(
        1,
        "records".into(),
        MigrationType::Simple,
        include_str!("../../migrations/sqlite/0001_records.sql").into_sql_str(),
        false,
    );
    migration.checksum = std::borrow::Cow::Borrowed(&RECORDS_MIGRATION_CHECKSUM);
    migration
}

/// Migrations, in order. Each is embedded at compile time.
fn migrator() -> Migrator {
    let migrations = vec![
        records_migration(),
        Migration::new(
            2,
            "jobs".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0002_jobs.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            "tenants".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0003_tenants.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            4,
            "accounting".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0004_accounting.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            5,
            "audit_outbox".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0005_audit_outbox.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            6,
            "search_tokens".into(),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0006_search_tokens.sql").into_sql_str(),
            false,
        ),
    ];
    Migrator::with_migrations(migrations)
}

/// The version of the last SQLite migration: a dedicated tenant's file
/// copied from a template of this version needs no migration. (SQLite has
/// migrations PostgreSQL has not, so this is not [`super::SCHEMA_VERSION`].)
pub(super) fn schema_version() -> i64 {
    migrator().iter().map(|m| m.version).max().unwrap_or(0)
}

/// The SQLite backend: a pool over `data_dir/tenantd.db`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// Tenant reads, run on the calling thread (see [`super::reader`]).
    pub(crate) readers: Arc<Readers>,
    /// The write turn: this process's writers queue here, first come
    /// first served, before `BEGIN IMMEDIATE` (see [`SqliteStore::write_tx`]).
    writer: Arc<tokio::sync::Mutex<()>>,
    db_path: PathBuf,
    /// Whose outbox this file's is: the shared database's, or a dedicated
    /// tenant's.
    pub(super) outbox: OutboxPlace,
}

/// Opens (creating if needed) the database in `data_dir` and migrates it.
///
/// The error names the directory and says what is wrong with it, because
/// this is the first thing a new user's `serve` does.
pub async fn open_sqlite(data_dir: &Path, max_connections: u32) -> anyhow::Result<SqliteStore> {
    use anyhow::Context as _;
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "storage.data_dir {}: cannot create the directory",
            data_dir.display()
        )
    })?;
    let meta = std::fs::metadata(data_dir)
        .with_context(|| format!("storage.data_dir {}: cannot read it", data_dir.display()))?;
    anyhow::ensure!(
        meta.is_dir(),
        "storage.data_dir {}: not a directory",
        data_dir.display()
    );
    let db_path = data_dir.join(DB_FILE);
    connect(&db_path, max_connections, true, OutboxPlace::Shared)
        .await
        .with_context(|| {
            format!(
                "storage.data_dir {}: cannot open {} (is the directory writable?)",
                data_dir.display(),
                DB_FILE
            )
        })
}

/// Opens the SQLite file at `db_path` (WAL, foreign keys) and, when
/// `migrate`, brings its schema up to date.
async fn connect(
    db_path: &Path,
    max_connections: u32,
    migrate: bool,
    outbox: OutboxPlace,
) -> anyhow::Result<SqliteStore> {
    use anyhow::Context as _;
    let options = SqliteConnectOptions::from_str("sqlite://")
        .context("sqlite options")?
        .filename(db_path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(WRITE_TURN_TIMEOUT)
        .foreign_keys(true)
        .statement_cache_capacity(256)
        // PostgreSQL compares ids and times as bytes with `COLLATE "C"`;
        // SQLite's own byte-wise order under the same name lets one
        // statement text serve both engines.
        .collation("C", |a: &str, b: &str| a.as_bytes().cmp(b.as_bytes()));
    let pool = SqlitePoolOptions::new()
        // A connection whose transaction did not end cleanly (SQLite rolls
        // back by itself on a full disk, and the driver's own rollback then
        // fails) would refuse every later BEGIN: it is closed, never
        // handed out again.
        .after_release(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(&*conn)) })
        })
        .before_acquire(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(&*conn)) })
        })
        .max_connections(max_connections)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open {}", db_path.display()))?;
    if migrate {
        migrator()
            .run(&pool)
            .await
            .with_context(|| format!("storage: migrating {} failed", db_path.display()))?;
    }
    Ok(SqliteStore {
        pool,
        readers: Readers::new(db_path),
        writer: Arc::new(tokio::sync::Mutex::new(())),
        db_path: db_path.to_path_buf(),
        outbox,
    })
}

/// Opens a dedicated tenant's file, creating it from `template` (a migrated,
/// empty database, itself created on first need; its name carries the
/// schema version, so a newer build makes a new one) when it does not
/// exist: a copy and a rename, so a crash never leaves a half-made file in
/// place.
pub async fn open_sqlite_file(
    path: &Path,
    template: &Path,
    max_connections: u32,
) -> anyhow::Result<SqliteStore> {
    use anyhow::Context as _;
    let fresh = !path.exists();
    if fresh {
        let dir = path
            .parent()
            .context("a dedicated database path has a directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        if !template.exists() {
            let building = template.with_extension("new");
            let _ = std::fs::remove_file(&building);
            let store = connect(&building, 1, true, OutboxPlace::Dedicated).await?;
            // One self-contained file: no WAL beside it to copy.
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&store.pool)
                .await
                .context("checkpointing the template")?;
            sqlx::query("PRAGMA journal_mode = DELETE")
                .execute(&store.pool)
                .await
                .context("template journal mode")?;
            store.pool.close().await;
            std::fs::rename(&building, template)
                .with_context(|| format!("cannot create {}", template.display()))?;
        }
        let partial = path.with_extension("db.partial");
        std::fs::copy(template, &partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("cannot create {}", path.display()))?;
    }
    // A copy of this build's template is current; an older file is
    // migrated on open.
    connect(path, max_connections, !fresh, OutboxPlace::Dedicated).await
}

impl SqliteStore {
    /// Refuses writes once the database file has gone (its directory was
    /// deleted under the running server): SQLite would keep writing to the
    /// unlinked file and every write would be silently lost.
    /// A write transaction that takes SQLite's write lock up front
    /// (`BEGIN IMMEDIATE`), so it cannot fail half-way on lock upgrade,
    /// with this process's write turn, held until the transaction ends.
    ///
    /// SQLite has one writer at a time. Left to itself, a writer that
    /// finds the lock taken sleeps in its busy handler (1, 2, 5 … 100 ms)
    /// and polls again, so under concurrent writes most of the time went
    /// to sleeping and the last comer could win: 32 concurrent `POST
    /// /records` measured a few hundred per second with p99 near a
    /// second. Queuing in the process first (a fair mutex, FIFO) hands the
    /// lock straight to the next writer. Another process (the CLI beside a
    /// running server) still meets the busy timeout.
    pub(crate) async fn write_tx(&self) -> Result<(SqliteTx, WriteTurn), StoreError> {
        self.check_writable()?;
        let turn = tokio::time::timeout(WRITE_TURN_TIMEOUT, self.writer.clone().lock_owned())
            .await
            .map_err(|_| {
                StoreError::Unavailable(
                    "the database is busy: no write turn within the busy timeout"
                        .to_owned()
                        .into(),
                )
            })?;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(map_sqlx)?;
        Ok((tx, turn))
    }

    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        match std::fs::metadata(&self.db_path) {
            Ok(_) => Ok(()),
            Err(_) => Err(StoreError::Unavailable(
                "the data directory or database file is gone"
                    .to_owned()
                    .into(),
            )),
        }
    }
}

/// Free space below which readiness reports the store as not writable: a
/// write needs a few pages in the database and its log, and a probe
/// answering "ready" while every write fails with 507 would keep traffic
/// coming.
pub(crate) const READY_MIN_FREE_BYTES: u64 = 1024 * 1024;

/// Refuses readiness when the file system holding `db_path` has less than
/// [`READY_MIN_FREE_BYTES`] available.
fn check_free_space(db_path: &std::path::Path) -> Result<(), StoreError> {
    let dir = db_path.parent().unwrap_or(db_path);
    let Ok(stat) = rustix::fs::statvfs(dir) else {
        // Not knowing is not a refusal: the query below still checks the
        // database answers.
        return Ok(());
    };
    let available = stat.f_bavail.saturating_mul(stat.f_frsize);
    if available < READY_MIN_FREE_BYTES {
        return Err(StoreError::Unavailable(format!(
            "not writable: {available} bytes free where the data lives (under {READY_MIN_FREE_BYTES})"
        ).into()));
    }
    Ok(())
}

/// Classifies a driver error: what a client can retry (503) versus a bug.
pub(crate) fn map_sqlx(error: sqlx::Error) -> StoreError {
    let (kind, message): (fn(Cause) -> StoreError, String) = match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            (StoreError::Conflict, db.message().to_owned())
        }
        sqlx::Error::Database(db) => match db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .and_then(classify)
        {
            Some(kind) => (kind, db.message().to_owned()),
            None => (StoreError::Internal, error.to_string()),
        },
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            (StoreError::Unavailable, error.to_string())
        }
        _ => (StoreError::Internal, error.to_string()),
    };
    kind(Cause::with_source(message, error))
}

/// What a SQLite result code (primary or extended) means to a client: a
/// full disk (507), what it can retry (503), a value past SQLite's length
/// limit (what the client sent). `None`: a bug, reported with the whole
/// driver error. Unique violations are told apart by the drivers.
pub(crate) fn classify(code: i64) -> Option<fn(Cause) -> StoreError> {
    // Primary result codes: BUSY 5, LOCKED 6, NOMEM 7, READONLY 8,
    // IOERR 10, CORRUPT 11, FULL 13, CANTOPEN 14; TOOBIG 18.
    match code & 0xff {
        13 => Some(StoreError::Full),
        5 | 6 | 7 | 8 | 10 | 14 => Some(StoreError::Unavailable),
        18 => Some(StoreError::Invalid),
        _ => None,
    }
}

impl SqliteStore {
    /// Writable, not only reachable (see [`super::Db::ready`]).
    pub(super) async fn ready(&self) -> Result<(), StoreError> {
        self.check_writable()?;
        check_free_space(&self.db_path)?;
        // Writable, not only reachable: take the write lock (what every
        // write does first) and let it go. A read-only file or a lock
        // another process holds fails here; the readiness deadline bounds
        // the wait behind a running write.
        let (tx, _turn) = self.write_tx().await?;
        tx.rollback().await.map_err(map_sqlx)
    }
}
