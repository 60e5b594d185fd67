//! PostgreSQL for the integration tests: the server under test connects
//! exactly as in production, through three roles (owner for migrations,
//! app bound by row-level security, admin with `BYPASSRLS`), to a database
//! of its own, created here. Each database belongs to a [`DbGuard`] (held
//! by a test's `TestStorage`), which drops it when the test lets go of it;
//! databases of test processes that died are swept when the next one
//! starts.
//!
//! `TENANTD_TEST_POSTGRES_URL` names a superuser connection (CI sets it;
//! `.ci/run` starts PostgreSQL when it is down).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use sqlx::Connection as _;

/// The superuser URL variable.
pub const URL_VAR: &str = "TENANTD_TEST_POSTGRES_URL";
/// Prefix of every database the suites create.
pub const DB_PREFIX: &str = "tenantd_t_";
/// The three roles (cluster-wide, created once, reused).
pub const OWNER: &str = "tenantd_test_owner";
/// See [`OWNER`].
pub const APP: &str = "tenantd_test_app";
/// See [`OWNER`].
pub const ADMIN: &str = "tenantd_test_admin";

/// The superuser URL, if set.
pub fn superuser_url() -> Option<String> {
    std::env::var(URL_VAR).ok().filter(|u| !u.is_empty())
}

/// The superuser URL, or a test failure that says what to set.
pub fn require_superuser_url() -> String {
    superuser_url().unwrap_or_else(|| {
        panic!("{URL_VAR} is not set: it must name a PostgreSQL superuser connection")
    })
}

/// `base` with another user and database.
pub fn url_for(base: &str, user: &str, database: &str) -> String {
    let mut url = url::Url::parse(base).expect("TENANTD_TEST_POSTGRES_URL is a URL");
    url.set_username(user).expect("a URL with a host");
    url.set_password(None).expect("a URL with a host");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

/// A database for one server, owned by [`OWNER`]. The server migrates it
/// (`storage.migrate_url`). Plain names: the [`DbGuard`] owns it.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// The superuser URL it was created through.
    pub base: String,
}

impl TestDb {
    /// The app role's URL.
    pub fn app_url(&self) -> String {
        url_for(&self.base, APP, &self.name)
    }
    /// The admin role's URL.
    pub fn admin_url(&self) -> String {
        url_for(&self.base, ADMIN, &self.name)
    }
    /// The owner role's URL.
    pub fn owner_url(&self) -> String {
        url_for(&self.base, OWNER, &self.name)
    }
    /// The superuser's URL on this database.
    pub fn superuser_url(&self) -> String {
        let mut url = url::Url::parse(&self.base).expect("URL");
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }
}

/// Runs `f` on a private runtime in another thread: callable from sync
/// code and from inside a test's runtime alike.
fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("postgres helper thread")
}

async fn superuser(base: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {URL_VAR}: {e}"))
}

/// Runs `sql`, ignoring "already exists" (several test processes create
/// the same roles concurrently).
async fn idempotent(conn: &mut sqlx::PgConnection, sql: &'static str) {
    if let Err(sqlx::Error::Database(db)) = sqlx::query(sql).execute(&mut *conn).await {
        let code = db.code().unwrap_or_default().to_string();
        assert!(
            code == "42710" || code == "23505" || code == "XX000",
            "{sql}: {db}"
        );
    }
}

/// Creates the roles and sweeps databases of test processes that are gone.
fn prepare(base: &str) {
    static DONE: OnceLock<()> = OnceLock::new();
    let base = base.to_owned();
    DONE.get_or_init(|| {
        blocking(move || {
            Box::pin(async move {
                let mut conn = superuser(&base).await;
                idempotent(
                    &mut conn,
                    "CREATE ROLE tenantd_test_owner LOGIN NOSUPERUSER NOBYPASSRLS",
                )
                .await;
                idempotent(
                    &mut conn,
                    "CREATE ROLE tenantd_test_app LOGIN NOSUPERUSER NOBYPASSRLS",
                )
                .await;
                idempotent(
                    &mut conn,
                    "CREATE ROLE tenantd_test_admin LOGIN NOSUPERUSER BYPASSRLS",
                )
                .await;
                let stale: Vec<String> = sqlx::query_scalar(
                    "SELECT datname::text FROM pg_database WHERE datname LIKE 'tenantd\\_t\\_%'",
                )
                .fetch_all(&mut conn)
                .await
                .expect("list databases");
                for name in stale {
                    let pid = name
                        .trim_start_matches(DB_PREFIX)
                        .split('_')
                        .next()
                        .unwrap_or_default();
                    if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                        drop_db(&mut conn, &name).await;
                    }
                }
            })
        });
    });
}

async fn drop_db(conn: &mut sqlx::PgConnection, name: &str) {
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(conn).await;
}

/// Owns a test database: dropped (`WITH (FORCE)`, so a server still
/// connected does not keep it alive) when the guard drops.
pub struct DbGuard(TestDb);

impl std::ops::Deref for DbGuard {
    type Target = TestDb;
    fn deref(&self) -> &TestDb {
        &self.0
    }
}

impl Drop for DbGuard {
    fn drop(&mut self) {
        let (base, name) = (self.0.base.clone(), self.0.name.clone());
        blocking(move || {
            Box::pin(async move {
                let mut conn = superuser(&base).await;
                drop_db(&mut conn, &name).await;
            })
        });
    }
}

/// A fresh, empty database owned by the returned guard.
pub fn create_db() -> DbGuard {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = require_superuser_url();
    prepare(&base);
    let name = format!(
        "{DB_PREFIX}{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let (b, n) = (base.clone(), name.clone());
    blocking(move || {
        Box::pin(async move {
            let mut conn = superuser(&b).await;
            let sql = format!("CREATE DATABASE \"{n}\" OWNER {OWNER}");
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("create the test database");
        })
    });
    DbGuard(TestDb { name, base })
}

fn registry() -> std::sync::MutexGuard<'static, HashMap<PathBuf, TestDb>> {
    static BY_DIR: OnceLock<Mutex<HashMap<PathBuf, TestDb>>> = OnceLock::new();
    BY_DIR
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Records that the server over `data_dir` uses `db` (see [`db_for`]).
pub(super) fn register(data_dir: &Path, db: &TestDb) {
    registry().insert(data_dir.to_path_buf(), db.clone());
}

/// Forgets `data_dir` (its storage is being dropped).
pub(super) fn unregister(data_dir: &Path) {
    registry().remove(data_dir);
}

/// The database of the server over `data_dir`: the one its `TestStorage`
/// created. The config helpers and `backend_env` take a data directory,
/// so this is how they find its database.
pub fn db_for(data_dir: &Path) -> TestDb {
    registry().get(data_dir).cloned().unwrap_or_else(|| {
        panic!(
            "{} has no test database: create data directories with support::TestStorage::new()",
            data_dir.display()
        )
    })
}
