//! The PostgreSQL backend: one shared schema, isolation enforced by the
//! database with row-level security.
//!
//! Three roles, three pools, each named for what it may do:
//!
//! - the **app** role (`storage.url`) runs every tenant-scoped statement,
//!   inside a transaction that first sets `app.tenant_id` with
//!   `set_config(…, true)` (transaction-local, so a pooled connection never
//!   carries a tenant into the next transaction: PgBouncer transaction mode
//!   is safe). It owns nothing and cannot bypass RLS, so even a statement
//!   that forgets its `WHERE tenant_id` sees one tenant's rows;
//! - the **admin** role (`storage.admin_url`, `BYPASSRLS`) serves the
//!   explicitly cross-tenant paths ([`crate::store::AdminStore`], the job
//!   scheduler). The policies have no bypass clause of their own, which
//!   would stop the planner using the tenant indexes;
//! - the **owner** role (`storage.migrate_url`) runs migrations and grants.
//!
//! [`check_isolation`] verifies all of this at startup.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, SqlSafeStr, Transaction};
use tenancy::TenantId;

use super::outbox::OutboxPlace;
use super::pg_roles::{check_isolation, grant, unforce};
use super::{Cause, StoreError};
use crate::config::RlsCheck;

/// Migrations, in order, embedded at compile time. Versions match the
/// SQLite migrations one for one, so a tenant dump's schema number means
/// the same tables on both backends.
fn migrator() -> Migrator {
    let files: [(i64, &str, &str); 5] = [
        (
            1,
            "records",
            include_str!("../../migrations/postgres/0001_records.sql"),
        ),
        (
            2,
            "jobs",
            include_str!("../../migrations/postgres/0002_jobs.sql"),
        ),
        (
            3,
            "tenants",
            include_str!("../../migrations/postgres/0003_tenants.sql"),
        ),
        (
            4,
            "accounting",
            include_str!("../../migrations/postgres/0004_accounting.sql"),
        ),
        (
            5,
            "audit_outbox",
            include_str!("../../migrations/postgres/0005_audit_outbox.sql"),
        ),
    ];
    Migrator::with_migrations(
        files
            .into_iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    version,
                    name.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// The schema version this build needs (the last migration).
pub const SCHEMA_VERSION: i64 = 5;

/// Where and how to connect (from `storage.*`).
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The app role's URL.
    pub url: String,
    /// The admin role's URL.
    pub admin_url: String,
    /// The owner role's URL; migrations run only when set.
    pub migrate_url: Option<String>,
    /// Pool size of the app pool (the admin pool gets half, at least 2).
    pub max_connections: u32,
    /// What a failed isolation check does.
    pub rls_check: RlsCheck,
    /// One role for everything (a dedicated tenant's own database, which
    /// holds that tenant only): the role owns the tables and they are not
    /// FORCE'd, so the cross-tenant paths (a move, usage reads) see the
    /// rows; the other table checks still apply.
    pub single_role: bool,
}

/// The PostgreSQL backend.
#[derive(Debug, Clone)]
pub struct PgStore {
    app: PgPool,
    admin: PgPool,
    /// Whose outbox this database's is: the shared database's, or (one
    /// role, [`PgOptions::single_role`]) a dedicated tenant's.
    pub(super) outbox: OutboxPlace,
}

/// Whether sqlx reads the connection URL parameter `name`.
fn sqlx_reads(name: &str) -> bool {
    matches!(
        name,
        "sslmode"
            | "ssl-mode"
            | "sslrootcert"
            | "ssl-root-cert"
            | "ssl-ca"
            | "sslcert"
            | "ssl-cert"
            | "sslkey"
            | "ssl-key"
            | "statement-cache-capacity"
            | "host"
            | "hostaddr"
            | "port"
            | "dbname"
            | "user"
            | "password"
            | "application_name"
            | "options"
    ) || name.starts_with("options[")
}

/// `url` without the query parameters sqlx does not read. It ignores
/// them anyway, but logs each one *with its value*, and an unknown
/// parameter may well be a password (`sslpassword=`, `pass=`, even a bare
/// `?secret`): only their number is logged here.
fn without_unread_params(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return url.to_owned();
    };
    if parsed.query().is_none() {
        return url.to_owned();
    }
    let pairs: Vec<(String, String)> = parsed.query_pairs().into_owned().collect();
    let kept: Vec<&(String, String)> = pairs.iter().filter(|(n, _)| sqlx_reads(n)).collect();
    let ignored = pairs.len() - kept.len();
    if ignored == 0 {
        return url.to_owned();
    }
    tracing::warn!(
        ignored,
        "ignoring connection URL parameters PostgreSQL connections do not use"
    );
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed
            .query_pairs_mut()
            .clear()
            .extend_pairs(kept.iter().map(|(n, v)| (n, v)));
    }
    parsed.to_string()
}

async fn pool(url: &str, max: u32, what: &str) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = without_unread_params(url)
        .parse()
        .with_context(|| format!("{what}: not a valid PostgreSQL URL"))?;
    let options = options.application_name("tenantd");
    PgPoolOptions::new()
        // A connection whose transaction state is unknown is closed, never
        // reused (see the SQLite pool).
        .after_release(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(&*conn)) })
        })
        .max_connections(max)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_with(options)
        .await
        .with_context(|| format!("{what}: cannot connect"))
}

/// Quotes an SQL identifier (role names come from configuration).
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Connects, migrates when `migrate_url` is set, and checks isolation.
pub async fn open_postgres(options: &PgOptions) -> anyhow::Result<PgStore> {
    let app = pool(&options.url, options.max_connections, "storage.url").await?;
    let admin = pool(
        &options.admin_url,
        (options.max_connections / 2).max(2),
        "storage.admin_url",
    )
    .await?;
    if let Some(owner_url) = &options.migrate_url {
        migrate(owner_url, &app, &admin, options.single_role).await?;
    }
    check_schema_version(&admin).await?;
    let problems = if options.single_role {
        prepare_dedicated(&app).await?
    } else {
        check_isolation(&app)
            .await
            .context("storage: isolation check")?
    };
    report_isolation(&problems, options.rls_check)?;
    let outbox = if options.single_role {
        OutboxPlace::Dedicated
    } else {
        OutboxPlace::Shared
    };
    Ok(PgStore { app, admin, outbox })
}

/// Brings the schema up to date as the owner role and grants the app and
/// admin roles what they need.
async fn migrate(
    owner_url: &str,
    app: &PgPool,
    admin: &PgPool,
    single_role: bool,
) -> anyhow::Result<()> {
    let owner = pool(owner_url, 1, "storage.migrate_url").await?;
    migrator()
        .run(&owner)
        .await
        .context("storage: migrating the PostgreSQL schema failed")?;
    let app_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(app)
        .await
        .context("storage.url: reading the role")?;
    let admin_role: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(admin)
        .await
        .context("storage.admin_url: reading the role")?;
    if !single_role {
        // One role owns a dedicated database: nothing to grant, and
        // revoking from itself would stop its next migration.
        grant(&owner, &app_role, &admin_role)
            .await
            .context("storage: granting the app and admin roles")?;
    }
    owner.close().await;
    Ok(())
}

/// Refuses a schema this build was not made for.
async fn check_schema_version(admin: &PgPool) -> anyhow::Result<()> {
    let version: Option<i64> = sqlx::query_scalar(
        "SELECT max(version) FROM _sqlx_migrations WHERE success",
    )
    .fetch_one(admin)
    .await
    .context(
        "storage: the PostgreSQL schema is not migrated (set storage.migrate_url to an owner role)",
    )?;
    anyhow::ensure!(
        version == Some(SCHEMA_VERSION),
        "storage: the PostgreSQL schema is at version {version:?}, this build needs \
         {SCHEMA_VERSION} (set storage.migrate_url to migrate it)"
    );
    Ok(())
}

/// A dedicated tenant's own database: one role owns it by design and
/// serves every path, the cross-tenant ones included (a move reads and
/// deletes the tenant's rows, usage reads its counters), so its tables are
/// not FORCE'd: the owner reads them as the database holds nothing but
/// this tenant's rows. A database with a tenant registry is a shared
/// tenantd database: turning its RLS down, or moving records into it as if
/// it were the tenant's own, would be a disaster, so it is refused. The
/// isolation problems that still matter are returned.
async fn prepare_dedicated(app: &PgPool) -> anyhow::Result<Vec<String>> {
    let registered: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(app)
        .await
        .context("storage: reading the dedicated database")?;
    anyhow::ensure!(
        registered == 0,
        "this database holds a tenant registry ({registered} tenants): it is a shared \
         tenantd database, not a tenant's own"
    );
    unforce(app)
        .await
        .context("storage: a dedicated database's tables")?;
    let mut problems = check_isolation(app)
        .await
        .context("storage: isolation check")?;
    problems.retain(|p| p.starts_with("tenant table") && !p.ends_with("is not forced"));
    Ok(problems)
}

/// Refuses to start (or warns, per `storage.rls_check`) when the database
/// does not enforce tenant isolation.
fn report_isolation(problems: &[String], rls_check: RlsCheck) -> anyhow::Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    match rls_check {
        RlsCheck::Refuse => anyhow::bail!(
            "storage: tenant isolation is not enforced by the database, refusing to start \
             (storage.rls_check: warn starts anyway):\n  - {}",
            problems.join("\n  - ")
        ),
        RlsCheck::Warn => {
            for problem in problems {
                tracing::warn!(%problem, "storage isolation check");
            }
            Ok(())
        }
    }
}

impl PgStore {
    /// [`PgStore::tenant_tx`] for a tenant named by a row the system path
    /// already holds (a claimed job's tenant), not by a request.
    pub(crate) async fn tenant_tx_for(
        &self,
        tenant: &TenantId,
    ) -> Result<Transaction<'static, Postgres>, StoreError> {
        let mut tx = self.app.begin().await.map_err(map_pg)?;
        sqlx::query("SELECT set_config('app.tenant_id', $1, true)")
            .bind(tenant.as_str())
            .execute(&mut *tx)
            .await
            .map_err(map_pg)?;
        Ok(tx)
    }

    /// The admin role's pool: the explicitly cross-tenant path (registry,
    /// keys, usage writer, audit writer, billing, job scheduler). Never
    /// used for a tenant request's own data.
    pub(crate) fn admin_pool(&self) -> &PgPool {
        &self.admin
    }

    /// The app role's pool, for tests of the isolation itself.
    pub fn app_pool(&self) -> &PgPool {
        &self.app
    }
}

/// Classifies a driver error: what a client can retry (503) versus a bug.
pub(crate) fn map_pg(error: sqlx::Error) -> StoreError {
    let (kind, message): (fn(Cause) -> StoreError, String) = match &error {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            (StoreError::Conflict, db.message().to_owned())
        }
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // 08 connection exception, 53 insufficient resources,
            // 55 object not in prerequisite state (a database that does
            // not allow connections, a lock not available), 57P01-03
            // shutdown / cannot connect now, 3D000 no such database,
            // 28 authorization, 40001 serialization failure, 40P01
            // deadlock: retryable, nothing was committed.
            if code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("55")
                || code.starts_with("57P")
                || code.starts_with("28")
                || code == "3D000"
                || code == "40001"
                || code == "40P01"
            {
                (StoreError::Unavailable, db.message().to_owned())
            } else if code.starts_with("22") || code == "54000" {
                // 22 data exception (a NUL byte 22021, an unsupported
                // escape 22P05, a value too long 22001 or out of range
                // 22003, bad text for a type 22P02), 54000 a value past a
                // size limit (a tsvector over 1 MB): what the client sent.
                (StoreError::Invalid, db.message().to_owned())
            } else {
                (StoreError::Internal, error.to_string())
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
            (StoreError::Unavailable, error.to_string())
        }
        _ => (StoreError::Internal, error.to_string()),
    };
    kind(Cause::with_source(message, error))
}

impl PgStore {
    /// Both roles' pools answer.
    pub(super) async fn ready(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.app)
            .await
            .map_err(map_pg)?;
        sqlx::query("SELECT 1")
            .execute(&self.admin)
            .await
            .map(|_| ())
            .map_err(map_pg)
    }

    /// Closes both pools.
    pub(super) async fn close(&self) {
        self.app.close().await;
        self.admin.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::without_unread_params;

    #[test]
    fn parameters_sqlx_would_log_with_their_value_are_dropped() {
        assert_eq!(
            without_unread_params(
                "postgres://u@db/v?sslmode=disable&sslpassword=x1&password=p&pass=x2&Secret"
            ),
            "postgres://u@db/v?sslmode=disable&password=p"
        );
        assert_eq!(
            without_unread_params("postgres://db/v?pass=x"),
            "postgres://db/v"
        );
        assert_eq!(
            without_unread_params("postgres://db/v?user=u"),
            "postgres://db/v?user=u"
        );
        assert_eq!(without_unread_params("not a url"), "not a url");
    }
}
