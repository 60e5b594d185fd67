//! Storage: the only way to data is through a tenant.
//!
//! [`Store`] is the process-wide handle. Handlers turn a request's
//! [`TenantContext`] into a [`TenantStore`] with [`Store::scoped`]; every
//! method of a [`TenantStore`] is confined to that tenant. Backends implement
//! [`Backend`], whose methods all take a [`TenantScope`]: a token that only
//! this module can mint, so no backend method can be called without a
//! tenant, and no handler can pick the tenant by hand.
//!
//! Two backends implement [`Backend`]: [`SqliteStore`] (embedded, the
//! default) and [`PgStore`] (PostgreSQL with row-level security, which
//! enforces the same confinement inside the database). Handlers do not
//! know which one they talk to.

mod db;
mod dedicated;
pub mod outbox;
mod pg_roles;
mod postgres;
pub mod quota;
mod routed;
pub mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use tenancy::{TenantContext, TenantId};

use crate::audit::AuditRepo;
use crate::billing::BillingRepo;
use crate::clock::Clock;
use crate::jobs::{JobQueue, JobRepo};
use crate::keys::KeyRepo;
use crate::tenants::TenantRepo;
use crate::usage::UsageRepo;

pub use db::Db;
pub use dedicated::{PoolHealth, Target, TenantPools};
pub use outbox::{NewEvent, OutboxPlace, OutboxRef, OutboxRepo};
pub use pg_roles::check_isolation;
pub use postgres::{PgOptions, PgStore, SCHEMA_VERSION, open_postgres};
pub use quota::{QuotaExceeded, QuotaLimits, QuotaSource, Unlimited};
pub(crate) use routed::merge_counters;
use routed::{RoutedQueue, RoutedUsage};
pub use sql::{Arg, Column, Conn, Dialect, Engine, Row, Sql, sql};
pub use sqlite::{SqliteStore, open_sqlite, open_sqlite_file};

/// Helpers shared by the PostgreSQL implementations of feature
/// repositories.
pub(crate) mod pg_support {
    pub(crate) use super::postgres::map_pg;
}

/// Helpers shared by the SQLite implementations of feature repositories.
pub(crate) mod sqlite_support {
    pub(crate) use super::sqlite::map_sqlx;
}

/// Proof that a storage call acts for one tenant. Only [`Store::scoped`]
/// creates one (from a [`TenantContext`]); backends read the tenant from
/// it and put it first in every key they touch.
#[derive(Debug, Clone)]
pub struct TenantScope {
    tenant: TenantId,
    quotas: QuotaLimits,
}

impl TenantScope {
    /// A scope for a tenant named by a row the system path already holds
    /// (a claimed job's tenant, with the quotas it was claimed under), not
    /// by a request. Only the worker pool's routed queue makes one.
    pub(crate) fn system(tenant: TenantId, quotas: QuotaLimits) -> Self {
        Self { tenant, quotas }
    }

    /// The tenant every row touched through this scope belongs to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The tenant's quotas, which writes through this scope enforce in
    /// their own transaction.
    pub fn quotas(&self) -> &QuotaLimits {
        &self.quotas
    }
}

/// Storage failures that are not about a particular record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness constraint (inside the tenant) was violated.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database cannot be reached or written (503; nothing changed).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The disk holding the data is full (507; nothing changed). Clears
    /// itself when space returns: no connection keeps the failure.
    #[error("storage full: {0}")]
    Full(String),
    /// Anything else: a bug or corrupt data (500; the cause is logged).
    #[error("storage error: {0}")]
    Internal(String),
    /// The database refused a value of the request (PostgreSQL's "data
    /// exception" class, a value past a size limit): the client's doing,
    /// not a bug (422). Boundary validation ([`crate::input`]) should
    /// have refused it first; this keeps a missed case from being a 500.
    #[error("value refused by storage: {0}")]
    Invalid(String),
    /// The write would cross a quota; nothing was written (403).
    #[error(transparent)]
    QuotaExceeded(#[from] QuotaExceeded),
    /// The tenant's data is being switched to another database: writes
    /// wait, reads continue (503 `tenant_moving` with `Retry-After`).
    #[error("tenant {tenant} is moving to other storage; retry in {retry_after_secs} s")]
    Moving {
        /// The tenant.
        tenant: String,
        /// When to retry.
        retry_after_secs: u64,
    },
}

/// What every storage backend provides.
#[async_trait]
pub trait Backend:
    JobRepo
    + JobQueue
    + TenantRepo
    + KeyRepo
    + UsageRepo
    + AuditRepo
    + BillingRepo
    + Send
    + Sync
    + 'static
{
    /// Whether the backend can serve reads and writes now.
    async fn ready(&self) -> Result<(), StoreError>;

    /// Releases connections (graceful shutdown).
    async fn close(&self);

    /// Upcast for the worker pool.
    fn as_job_queue(self: Arc<Self>) -> Arc<dyn JobQueue>;
}

/// Where a tenant's records live, as the registry knows it now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// `None`: the shared database. `Some`: the tenant's own.
    pub dedicated: Option<Target>,
    /// A move is switching the tenant's data until this time (unix ms):
    /// writes are refused until then, reads go on. A lease, so a mover that
    /// died stops blocking writes by itself.
    pub moving_until_ms: Option<i64>,
}

/// Tells the store where each tenant's records live (the registry).
pub trait PlacementSource: Send + Sync + 'static {
    /// `tenant`'s placement.
    fn placement(&self, tenant: &TenantId) -> Placement;
}

/// Every tenant in the shared database (tools, tests, no registry yet).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllShared;

impl PlacementSource for AllShared {
    fn placement(&self, _tenant: &TenantId) -> Placement {
        Placement::default()
    }
}

/// The process-wide storage handle (cheap to clone).
#[derive(Clone)]
pub struct Store {
    shared: Db,
    backend: Arc<dyn Backend>,
    quotas: Arc<dyn QuotaSource>,
    placement: Arc<dyn PlacementSource>,
    pools: Arc<TenantPools>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens the configured backend (`storage.backend`) with at most
    /// `max_connections` connections: the server passes its pool size,
    /// one-shot CLI verbs a small one. Every timestamp it writes reads
    /// `clock`.
    pub async fn open(
        config: &crate::config::StorageConfig,
        max_connections: u32,
        clock: Clock,
    ) -> anyhow::Result<Self> {
        let shared = match config.backend {
            crate::config::Backend::Sqlite => Db::sqlite(
                open_sqlite(&config.data_dir, max_connections).await?,
                clock.clone(),
            ),
            crate::config::Backend::Postgres => {
                let options = PgOptions {
                    url: config.url.clone().unwrap_or_default(),
                    admin_url: config.admin_url.clone().unwrap_or_default(),
                    migrate_url: config.migrate_url.clone(),
                    max_connections,
                    rls_check: config.rls_check,
                    single_role: false,
                };
                Db::postgres(open_postgres(&options).await?, clock.clone())
            }
        };
        let pools = Arc::new(TenantPools::new(
            &config.data_dir,
            config.max_open_tenant_pools,
            std::time::Duration::from_secs(config.tenant_pool_idle_secs),
            clock,
        ));
        let mut store = Self::new(shared);
        store.pools = pools;
        Ok(store)
    }

    /// Wraps the shared database (no quotas until [`Store::with_quotas`],
    /// every tenant shared until [`Store::with_placement`]).
    pub fn new(shared: Db) -> Self {
        let pools = Arc::new(TenantPools::new(
            std::path::Path::new("."),
            1,
            std::time::Duration::from_secs(60),
            shared.clock().clone(),
        ));
        Self {
            backend: shared.backend(),
            shared,
            quotas: Arc::new(Unlimited),
            placement: Arc::new(AllShared),
            pools,
        }
    }

    /// The same store, with dedicated tenants (per `source`) served from
    /// its pools.
    pub fn with_placement(mut self, source: Arc<dyn PlacementSource>) -> Self {
        self.placement = source;
        self
    }

    /// The dedicated tenants' pools.
    pub fn pools(&self) -> &Arc<TenantPools> {
        &self.pools
    }

    /// The clock every timestamp the store writes reads.
    pub fn clock(&self) -> &Clock {
        self.shared.clock()
    }

    /// The same store, with writes checked against `source`'s quotas.
    pub fn with_quotas(mut self, source: Arc<dyn QuotaSource>) -> Self {
        self.quotas = source;
        self
    }

    /// The storage of the tenant `ctx` acts for.
    pub fn scoped(&self, ctx: &TenantContext) -> TenantStore {
        let tenant = ctx.tenant_id().clone();
        TenantStore {
            placement: self.placement.placement(&tenant),
            scope: TenantScope {
                quotas: self.quotas.quotas(&tenant),
                tenant,
            },
            shared: self.shared.clone(),
            backend: self.backend.clone(),
            pools: self.pools.clone(),
        }
    }

    /// Where `tenant`'s records live now (the system path: a claimed
    /// job's tenant).
    pub fn placement_of(&self, tenant: &TenantId) -> Placement {
        self.placement.placement(tenant)
    }

    /// The worker pool's cross-tenant queue. This is the one storage path
    /// not confined to a tenant, named so it cannot be mistaken for one:
    /// it hands out jobs with the tenant of their row.
    pub fn system_job_queue(&self) -> Arc<dyn JobQueue> {
        Arc::new(RoutedQueue {
            shared: self.backend.clone().as_job_queue(),
            store: self.clone(),
        })
    }

    /// The shared database, for moves between tiers and the system paths
    /// (administrative).
    pub fn shared_db(&self) -> &Db {
        &self.shared
    }

    /// The administrative, explicitly cross-tenant path: the tenant
    /// registry and API keys. Used by the admin API, the CLI and the
    /// registry cache, never by tenant routes.
    pub fn admin(&self) -> AdminStore {
        AdminStore {
            shared: self.shared.clone(),
            backend: self.backend.clone(),
            pools: self.pools.clone(),
            placement: self.placement.clone(),
            usage: Arc::new(RoutedUsage {
                shared: self.backend.clone(),
                placement: self.placement.clone(),
                pools: self.pools.clone(),
            }),
        }
    }

    /// Readiness of the backend (for `/health/ready`).
    pub async fn ready(&self) -> Result<(), StoreError> {
        self.shared.ready().await
    }

    /// Closes the backend's connections and every dedicated pool.
    pub async fn close(&self) {
        self.pools.close_all().await;
        self.shared.close().await;
    }
}

/// One tenant's view of storage. Every method is confined to
/// [`TenantStore::tenant`].
#[derive(Clone)]
pub struct TenantStore {
    scope: TenantScope,
    shared: Db,
    backend: Arc<dyn Backend>,
    placement: Placement,
    pools: Arc<TenantPools>,
}

impl TenantStore {
    /// The tenant this view is confined to.
    pub fn tenant(&self) -> &TenantId {
        &self.scope.tenant
    }

    /// The scope token and the shared database, for feature modules' store
    /// methods (jobs, usage, audit: the platform's tables of the tenant).
    pub fn shared(&self) -> (&TenantScope, &Db) {
        (&self.scope, &self.shared)
    }

    /// The scope token and the database holding the tenant's records: the
    /// shared one, or the tenant's dedicated database (opened if needed).
    pub async fn records_db(&self) -> Result<(&TenantScope, Db), StoreError> {
        let db = match &self.placement.dedicated {
            None => self.shared.clone(),
            Some(target) => self.pools.get(&self.scope.tenant, target).await?,
        };
        Ok((&self.scope, db))
    }

    /// Transitional: the shared backend.
    pub(crate) fn parts(&self) -> (&TenantScope, &dyn Backend) {
        (&self.scope, self.backend.as_ref())
    }

    /// The scope token and the backend holding the tenant's records: the
    /// shared one, or the tenant's dedicated database (opened if needed).
    pub(crate) async fn records_parts(
        &self,
    ) -> Result<(&TenantScope, Arc<dyn Backend>), StoreError> {
        let backend = match &self.placement.dedicated {
            None => self.backend.clone(),
            Some(target) => self.pools.get(&self.scope.tenant, target).await?.backend(),
        };
        Ok((&self.scope, backend))
    }

    /// Whether the tenant's records are in a database of its own.
    pub(crate) fn is_dedicated(&self) -> bool {
        self.placement.dedicated.is_some()
    }

    /// Refuses a write while the tenant's data is being switched to other
    /// storage (see [`Placement::moving_until_ms`]).
    pub(crate) fn check_writable(&self) -> Result<(), StoreError> {
        check_not_moving(&self.scope.tenant, &self.placement, self.shared.clock())
    }
}

/// `Err(Moving)` while `placement` says a move is switching `tenant`.
pub(crate) fn check_not_moving(
    tenant: &TenantId,
    placement: &Placement,
    clock: &Clock,
) -> Result<(), StoreError> {
    let Some(until) = placement.moving_until_ms else {
        return Ok(());
    };
    let now = clock.now_ms();
    if until <= now {
        return Ok(());
    }
    let remaining = u64::try_from(until - now).unwrap_or(0).div_ceil(1000);
    Err(StoreError::Moving {
        tenant: tenant.as_str().to_owned(),
        retry_after_secs: remaining.clamp(1, 5),
    })
}

/// Tenant and key administration (see [`Store::admin`]).
#[derive(Clone)]
pub struct AdminStore {
    shared: Db,
    backend: Arc<dyn Backend>,
    pools: Arc<TenantPools>,
    placement: Arc<dyn PlacementSource>,
    usage: Arc<RoutedUsage>,
}

impl std::fmt::Debug for AdminStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminStore").finish_non_exhaustive()
    }
}

impl AdminStore {
    /// The shared database, on the administrative path.
    pub fn db(&self) -> &Db {
        &self.shared
    }

    /// Tenant rows.
    pub fn tenants(&self) -> &dyn TenantRepo {
        self.backend.as_ref()
    }

    /// API key rows.
    pub fn keys(&self) -> &dyn KeyRepo {
        self.backend.as_ref()
    }

    /// Usage counters of every tenant (the batched recorder, admin
    /// reports, billing).
    pub fn usage(&self) -> &dyn UsageRepo {
        self.usage.as_ref()
    }

    /// The audit log of every tenant (the appender, admin reads, verify).
    pub fn audit(&self) -> &dyn AuditRepo {
        self.backend.as_ref()
    }

    /// The billing outbox.
    pub fn billing(&self) -> &dyn BillingRepo {
        self.backend.as_ref()
    }

    /// The dedicated tenants' pools (and the data directory).
    pub fn pools(&self) -> &Arc<TenantPools> {
        &self.pools
    }

    /// The audit outboxes open now: the shared database's and each open
    /// dedicated database's (a sweep drains them; a dedicated database
    /// that is not open keeps its parked events until it is).
    pub fn outboxes(&self) -> Vec<Arc<dyn OutboxRepo>> {
        let mut all: Vec<Arc<dyn OutboxRepo>> = vec![Arc::new(self.shared.clone())];
        all.extend(
            self.pools
                .open_dbs()
                .into_iter()
                .map(|db| -> Arc<dyn OutboxRepo> { Arc::new(db) }),
        );
        all
    }

    /// The outbox of `tenant`'s own database, when it has one (opening it
    /// if needed).
    pub async fn dedicated_outbox(
        &self,
        tenant: &str,
    ) -> Result<Option<Arc<dyn OutboxRepo>>, StoreError> {
        let Ok(tenant) = TenantId::new(tenant) else {
            return Ok(None);
        };
        let Some(target) = self.placement.placement(&tenant).dedicated else {
            return Ok(None);
        };
        let db = self.pools.get(&tenant, &target).await?;
        Ok(Some(Arc::new(db)))
    }
}
