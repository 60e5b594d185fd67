//! The dedicated tier: tenants bound to a database of their own.
//!
//! A dedicated tenant's records live in its own database: a SQLite file
//! `data_dir/tenants/<id>.db`, or a PostgreSQL database named by its
//! binding. Everything the platform needs across tenants (the registry,
//! keys, the job queue, usage, audit, billing) stays in the shared
//! database, which is what lets one node serve 100,000 tenants without a
//! connection per tenant.
//!
//! Pools open on first use and are kept in a small LRU
//! (`storage.max_open_tenant_pools`): opening one more than the bound
//! closes the least recently used, and a sweeper closes pools idle longer
//! than `storage.tenant_pool_idle_secs`. New SQLite files are copied from a
//! migrated template, so a cold tenant costs a file copy, not a migration.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tenancy::TenantId;

use super::postgres::{PgOptions, open_postgres};
use super::sqlite::{open_sqlite_file, schema_version};
use super::upgrade::DataUpgrades;
use super::{Db, StoreError};
use crate::clock::Clock;
use crate::config::RlsCheck;

/// Where a dedicated tenant's database is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database URL. tenantd migrates it with this role, which
    /// owns the tenant's database and reads it without row-level security
    /// (the database holds this tenant only); the same code serves both
    /// tiers.
    Postgres(String),
}

impl Target {
    /// A PostgreSQL database at `url`, with its database name replaced by
    /// `database` when one is given (a binding may name the server and
    /// the database apart).
    pub fn postgres(url: &str, database: Option<&str>) -> Self {
        Target::Postgres(with_database(url, database))
    }

    /// Where `tenant`'s SQLite file is under `data_dir`.
    pub fn sqlite_file(data_dir: &Path, tenant: &TenantId) -> PathBuf {
        data_dir
            .join("tenants")
            .join(format!("{}.db", tenant.as_str()))
    }

    /// What to show an operator (a PostgreSQL URL without its credentials,
    /// see [`crate::redact::url`]).
    pub fn describe(&self) -> String {
        match self {
            Target::Sqlite(path) => path.display().to_string(),
            Target::Postgres(url) => crate::redact::url(url),
        }
    }
}

/// `url` with its database replaced by `database` (when given).
fn with_database(url: &str, database: Option<&str>) -> String {
    let Some(database) = database.filter(|d| !d.is_empty()) else {
        return url.to_owned();
    };
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.set_path(&format!("/{database}"));
            parsed.to_string()
        }
        Err(_) => url.to_owned(),
    }
}

/// The health of one tenant's storage, as `GET /health/tenants` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolHealth {
    /// Open and answering.
    Ok,
    /// Open (or opening) failed; the reason.
    Error(String),
    /// Not open now (lazily opened on the tenant's next request).
    NotOpen,
}

struct Open {
    db: Db,
    target: Target,
    last_used: Instant,
}

/// The bounded set of open dedicated pools.
pub struct TenantPools {
    /// What the databases it opens read the time from.
    clock: Clock,
    data_dir: PathBuf,
    bound: usize,
    idle: Duration,
    open: Mutex<HashMap<TenantId, Open>>,
    /// Serialises opening (and template creation): two requests for a cold
    /// tenant open one pool, not two.
    opening: tokio::sync::Mutex<()>,
    /// Failures of the last open attempt per tenant (for health).
    failures: Mutex<HashMap<TenantId, String>>,
    /// Run on every SQLite file opened, after its migrations.
    upgrades: DataUpgrades,
}

impl std::fmt::Debug for TenantPools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantPools")
            .field("bound", &self.bound)
            .field("open", &self.open_count())
            .finish_non_exhaustive()
    }
}

/// Lets go of a pool taken out of the set. A request may still hold it
/// (it took its handle just before the pool became least recently used),
/// so it is not closed under that request: the pool closes its
/// connections when its last handle drops (sqlx closes a pool whose last
/// handle is gone; its maintenance task holds only a weak reference).
fn retire(backend: Db) {
    drop(backend);
}

/// Locks a std mutex, recovering from poisoning (the maps stay valid: no
/// code path panics half-way through an update).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TenantPools {
    /// An empty set: at most `bound` pools open, each closed after `idle`.
    pub fn new(data_dir: &Path, bound: usize, idle: Duration, clock: Clock) -> Self {
        Self {
            clock,
            data_dir: data_dir.to_path_buf(),
            bound: bound.max(1),
            idle,
            open: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            failures: Mutex::new(HashMap::new()),
            upgrades: DataUpgrades::none(),
        }
    }

    /// The same set, running `upgrades` on each SQLite file it opens (a
    /// file made by an older build gets them on its first open).
    pub fn with_upgrades(mut self, upgrades: DataUpgrades) -> Self {
        self.upgrades = upgrades;
        self
    }

    /// The data directory dedicated SQLite files live under.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// How many pools are open now (never more than the bound).
    pub fn open_count(&self) -> usize {
        lock(&self.open).len()
    }

    /// `tenant`'s backend at `target`, opening it if needed.
    pub async fn get(&self, tenant: &TenantId, target: &Target) -> Result<Db, StoreError> {
        if let Some(found) = self.cached(tenant, target) {
            return Ok(found);
        }
        let _opening = self.opening.lock().await;
        if let Some(found) = self.cached(tenant, target) {
            return Ok(found);
        }
        let opened = match self.open_target(target).await {
            Ok(b) => b,
            Err(e) => {
                let reason = format!("{e:#}");
                lock(&self.failures).insert(tenant.clone(), reason.clone());
                return Err(StoreError::Unavailable(
                    format!("the tenant's dedicated database cannot be opened: {reason}").into(),
                ));
            }
        };
        lock(&self.failures).remove(tenant);
        tracing::info!("Storage pool created for tenant: {}", tenant.as_str());
        let evicted = {
            let mut open = lock(&self.open);
            let mut evicted = Vec::new();
            while open.len() >= self.bound {
                let Some(oldest) = open
                    .iter()
                    .min_by_key(|(_, o)| o.last_used)
                    .map(|(t, _)| t.clone())
                else {
                    break;
                };
                if let Some(o) = open.remove(&oldest) {
                    evicted.push((oldest, o.db));
                }
            }
            open.insert(
                tenant.clone(),
                Open {
                    db: opened.clone(),
                    target: target.clone(),
                    last_used: Instant::now(),
                },
            );
            evicted
        };
        for (t, backend) in evicted {
            tracing::debug!(tenant = %t.as_str(), "closing the least recently used tenant pool");
            retire(backend);
        }
        Ok(opened)
    }

    fn cached(&self, tenant: &TenantId, target: &Target) -> Option<Db> {
        let mut open = lock(&self.open);
        let entry = open.get_mut(tenant)?;
        if entry.target != *target {
            // The binding changed (a move): this pool is stale.
            retire(open.remove(tenant)?.db);
            return None;
        }
        entry.last_used = Instant::now();
        Some(entry.db.clone())
    }

    /// Opens `target` outside the LRU (a move holds it for its duration
    /// and closes it itself). The error's text is redacted
    /// ([`crate::redact::text`]): it reaches health reports, move
    /// errors and logs, and a driver's message may quote the URL.
    pub(crate) async fn open_target(&self, target: &Target) -> anyhow::Result<Db> {
        self.open_unredacted(target)
            .await
            .map_err(|e| anyhow::anyhow!(crate::redact::text(&format!("{e:#}"))))
    }

    async fn open_unredacted(&self, target: &Target) -> anyhow::Result<Db> {
        match target {
            Target::Sqlite(path) => {
                let template = self
                    .data_dir
                    .join("tenants")
                    .join(format!(".template-v{}.db", schema_version()));
                let db = Db::sqlite(
                    open_sqlite_file(path, &template, 2).await?,
                    self.clock.clone(),
                );
                self.upgrades.run(&db).await?;
                Ok(db)
            }
            Target::Postgres(url) => {
                let options = PgOptions {
                    url: url.clone(),
                    admin_url: url.clone(),
                    migrate_url: Some(url.clone()),
                    max_connections: 2,
                    rls_check: RlsCheck::Refuse,
                    single_role: true,
                };
                Ok(Db::postgres(
                    open_postgres(&options).await?,
                    self.clock.clone(),
                ))
            }
        }
    }

    /// Forgets `tenant`'s pool (after a move): it closes once the requests
    /// still using it are done.
    pub fn close_tenant(&self, tenant: &TenantId) {
        let removed = lock(&self.open).remove(tenant);
        if let Some(o) = removed {
            retire(o.db);
        }
    }

    /// Closes pools idle longer than the idle limit; returns how many.
    pub fn sweep_idle(&self) -> usize {
        let idle: Vec<Db> = {
            let mut open = lock(&self.open);
            let now = Instant::now();
            let stale: Vec<TenantId> = open
                .iter()
                .filter(|(_, o)| now.duration_since(o.last_used) >= self.idle)
                .map(|(t, _)| t.clone())
                .collect();
            stale
                .iter()
                .filter_map(|t| open.remove(t).map(|o| o.db))
                .collect()
        };
        let n = idle.len();
        for backend in idle {
            retire(backend);
        }
        n
    }

    /// The pools open now (what an audit outbox sweep drains).
    pub fn open_dbs(&self) -> Vec<Db> {
        lock(&self.open).values().map(|o| o.db.clone()).collect()
    }

    /// The state of `tenant`'s pool without opening it.
    pub async fn health(&self, tenant: &TenantId) -> PoolHealth {
        let backend = lock(&self.open).get(tenant).map(|o| o.db.clone());
        match backend {
            Some(b) => match b.ready().await {
                Ok(()) => PoolHealth::Ok,
                Err(e) => PoolHealth::Error(crate::redact::text(&e.to_string())),
            },
            None => match lock(&self.failures).get(tenant) {
                Some(reason) => PoolHealth::Error(reason.clone()),
                None => PoolHealth::NotOpen,
            },
        }
    }

    /// Closes every pool (graceful shutdown).
    pub async fn close_all(&self) {
        let all: Vec<Db> = lock(&self.open).drain().map(|(_, o)| o.db).collect();
        for backend in all {
            backend.close().await;
        }
    }
}
