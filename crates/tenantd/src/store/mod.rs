//! Storage: the only way to data is through a tenant.
//!
//! [`Store`] is the process-wide handle. Handlers turn a request's
//! [`TenantContext`] into a [`TenantStore`] with [`Store::scoped`]; every
//! method of a [`TenantStore`] is confined to that tenant. Feature
//! repositories take a [`TenantScope`]: a token that only this module can
//! mint, so no tenant path can be called without a tenant, and no handler
//! can pick the tenant by hand.
//!
//! [`Db`] is one database on either engine, [`SqliteStore`] (embedded, the
//! default) or [`PgStore`] (PostgreSQL with row-level security, which
//! enforces the same confinement inside the database); features write
//! their statements once for both through the dialect seam ([`sql`]).
//! This core imports no feature (see `docs/architecture.md`, "Storage").

mod db;
mod dedicated;
pub mod outbox;
mod pg_roles;
mod postgres;
pub mod quota;
mod reader;
pub mod sql;
mod sqlite;
mod upgrade;
mod values;

use std::sync::Arc;

use tenancy::{TenantContext, TenantId};

use crate::clock::Clock;

pub use db::Db;
pub use dedicated::{PoolHealth, Target, TenantPools};
pub use outbox::{NewEvent, OutboxPlace, OutboxRef, OutboxRepo};
pub use pg_roles::check_isolation;
pub use postgres::{PgOptions, PgStore, SCHEMA_VERSION, open_postgres};
pub use quota::{QuotaExceeded, QuotaLimits, QuotaSource, Unlimited};
pub use sql::{Arg, Column, Conn, Dialect, Row, Sql, StoredType, sql};
pub use sqlite::{SqliteStore, open_sqlite, open_sqlite_file};
pub use upgrade::{DataUpgrade, DataUpgrades};
pub use values::{execute_rows, rows_per_statement, values_list};

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
///
/// Each failure keeps its [`Cause`]: the message shown to operators and
/// the driver's error it came from, reachable through
/// [`std::error::Error::source`], so a logged failure carries its whole
/// chain.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// A uniqueness constraint (inside the tenant) was violated.
    Conflict(Cause),
    /// The database cannot be reached or written (503; nothing changed).
    Unavailable(Cause),
    /// The disk holding the data is full (507; nothing changed). Clears
    /// itself when space returns: no connection keeps the failure.
    Full(Cause),
    /// Anything else: a bug or corrupt data (500; the cause is logged).
    Internal(Cause),
    /// The database refused a value of the request (PostgreSQL's "data
    /// exception" class, a value past a size limit): the client's doing,
    /// not a bug (422). Boundary validation ([`crate::input`]) should
    /// have refused it first; this keeps a missed case from being a 500.
    Invalid(Cause),
    /// The write would cross a quota; nothing was written (403).
    QuotaExceeded(QuotaExceeded),
    /// The tenant's data is being switched to another database: writes
    /// wait, reads continue (503 `tenant_moving` with `Retry-After`).
    Moving {
        /// The tenant.
        tenant: String,
        /// When to retry.
        retry_after_secs: u64,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Conflict(c) => write!(f, "conflict: {c}"),
            StoreError::Unavailable(c) => write!(f, "storage unavailable: {c}"),
            StoreError::Full(c) => write!(f, "storage full: {c}"),
            StoreError::Internal(c) => write!(f, "storage error: {c}"),
            StoreError::Invalid(c) => write!(f, "value refused by storage: {c}"),
            StoreError::QuotaExceeded(q) => q.fmt(f),
            StoreError::Moving {
                tenant,
                retry_after_secs,
            } => write!(
                f,
                "tenant {tenant} is moving to other storage; retry in {retry_after_secs} s"
            ),
        }
    }
}

impl std::error::Error for StoreError {
    /// The driver's error a failure came from (its message is already in
    /// this error's text, so the chain does not repeat it).
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Conflict(c)
            | StoreError::Unavailable(c)
            | StoreError::Full(c)
            | StoreError::Internal(c)
            | StoreError::Invalid(c) => c.source(),
            StoreError::QuotaExceeded(_) | StoreError::Moving { .. } => None,
        }
    }
}

impl From<QuotaExceeded> for StoreError {
    fn from(e: QuotaExceeded) -> Self {
        StoreError::QuotaExceeded(e)
    }
}

/// What went wrong in storage: a message, and the error it came from (the
/// driver's), kept whole rather than flattened into the text.
#[derive(Debug, Clone)]
pub struct Cause {
    message: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with `message` and the error it came from.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// The message alone.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The error this cause came from, if any.
    pub fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }

    /// The message followed by each error in the source chain: what a log
    /// line about this failure shows.
    pub fn chain(&self) -> String {
        let mut text = self.message.clone();
        let mut next = self.source();
        while let Some(e) = next {
            let line = e.to_string();
            // A driver error whose text is the message adds nothing.
            if line != self.message {
                text.push_str(": ");
                text.push_str(&line);
            }
            next = e.source();
        }
        text
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self {
            message,
            source: None,
        }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
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
    /// `clock`. `upgrades` run on every SQLite database it opens, after
    /// its migrations (the server passes the features' steps).
    pub async fn open(
        config: &crate::config::StorageConfig,
        max_connections: u32,
        clock: Clock,
        upgrades: DataUpgrades,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
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
        upgrades
            .run(&shared)
            .await
            .context("storage: upgrading the data of the shared database failed")?;
        let pools = Arc::new(
            TenantPools::new(
                &config.data_dir,
                config.max_open_tenant_pools,
                std::time::Duration::from_secs(config.tenant_pool_idle_secs),
                clock,
            )
            .with_upgrades(upgrades),
        );
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
            pools: self.pools.clone(),
        }
    }

    /// Where `tenant`'s records live now (the system path: a claimed
    /// job's tenant).
    pub fn placement_of(&self, tenant: &TenantId) -> Placement {
        self.placement.placement(tenant)
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
            pools: self.pools.clone(),
            placement: self.placement.clone(),
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
    pools: Arc<TenantPools>,
    placement: Arc<dyn PlacementSource>,
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

    /// `tenant`'s own database, when it has one (opening it if needed):
    /// for the administrative reads that add in what a dedicated tenant's
    /// writes keep there.
    pub async fn dedicated_db(&self, tenant: &TenantId) -> Result<Option<Db>, StoreError> {
        match self.placement.placement(tenant).dedicated {
            None => Ok(None),
            Some(target) => Ok(Some(self.pools.get(tenant, &target).await?)),
        }
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
        Ok(self
            .dedicated_db(&tenant)
            .await?
            .map(|db| -> Arc<dyn OutboxRepo> { Arc::new(db) }))
    }
}
