//! [`Db`]: one database (the shared one, or a dedicated tenant's), on
//! either engine.
//!
//! Features implement their repositories once, on `Db`, through the
//! connections it hands out: a tenant's ([`Db::write`], [`Db::read`]),
//! confined by row-level security on PostgreSQL, or the administrative,
//! explicitly cross-tenant path ([`Db::admin_write`], [`Db::admin_read`]).
//! The engine behind it is chosen at open and never named by a feature.

use std::sync::Arc;

use async_trait::async_trait;
use tenancy::TenantId;

use super::outbox::{self, NewEvent, OutboxPlace, OutboxRepo};
use super::postgres::{PgStore, map_pg};
use super::sql::{Conn, Dialect, Inner, sql};
use super::sqlite::{SqliteStore, map_sqlx};
use super::{StoreError, TenantScope};
use crate::clock::Clock;

#[derive(Clone, Debug)]
enum Engine {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// A handle on one database (cheap to clone: one reference count, the
/// pools inside are shared).
#[derive(Clone)]
pub struct Db {
    engine: Arc<Engine>,
    clock: Clock,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("dialect", &self.dialect())
            .finish_non_exhaustive()
    }
}

impl Db {
    /// A SQLite database read with `clock`.
    pub fn sqlite(store: SqliteStore, clock: Clock) -> Self {
        Self {
            engine: Arc::new(Engine::Sqlite(store)),
            clock,
        }
    }

    /// A PostgreSQL database read with `clock`.
    pub fn postgres(store: PgStore, clock: Clock) -> Self {
        Self {
            engine: Arc::new(Engine::Postgres(store)),
            clock,
        }
    }

    /// The engine.
    pub fn dialect(&self) -> Dialect {
        match *self.engine {
            Engine::Sqlite(_) => Dialect::Sqlite,
            Engine::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The clock every timestamp this database writes is read from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Now, as stored text.
    pub fn now(&self) -> String {
        self.clock.now_rfc3339()
    }

    /// The PostgreSQL engine, for its own administration (grants, the
    /// isolation check, tests of row-level security).
    pub fn as_postgres(&self) -> Option<&PgStore> {
        match self.engine.as_ref() {
            Engine::Postgres(pg) => Some(pg),
            Engine::Sqlite(_) => None,
        }
    }

    /// The SQLite engine (file path, pool), for its own administration.
    pub fn as_sqlite(&self) -> Option<&SqliteStore> {
        match self.engine.as_ref() {
            Engine::Sqlite(s) => Some(s),
            Engine::Postgres(_) => None,
        }
    }

    fn conn(&self, inner: Inner, tenant: Option<&TenantId>) -> Conn {
        Conn {
            inner,
            tenant: tenant.cloned(),
            outbox: self.outbox_place(),
        }
    }

    /// A write transaction confined to `scope`'s tenant.
    pub async fn write(&self, scope: &TenantScope) -> Result<Conn, StoreError> {
        self.write_for(scope.tenant()).await
    }

    /// [`Db::write`] for a tenant named by a row the system path already
    /// holds (a claimed job's tenant), not by a request.
    pub(crate) async fn write_for(&self, tenant: &TenantId) -> Result<Conn, StoreError> {
        match self.engine.as_ref() {
            Engine::Sqlite(s) => {
                let (tx, turn) = s.write_tx().await?;
                Ok(self.conn(Inner::SqliteTx(tx, Some(turn)), None))
            }
            Engine::Postgres(pg) => {
                Ok(self.conn(Inner::PgTx(pg.tenant_tx_for(tenant).await?), Some(tenant)))
            }
        }
    }

    /// Reads confined to `scope`'s tenant (on PostgreSQL a transaction
    /// whose row-level security sees that tenant only; on SQLite a pooled
    /// connection that runs statements on the calling thread, see
    /// [`super::reader`]; every statement names the tenant).
    pub async fn read(&self, scope: &TenantScope) -> Result<Conn, StoreError> {
        match self.engine.as_ref() {
            Engine::Sqlite(s) => Ok(self.conn(Inner::SqliteRead(s.readers.get()?), None)),
            Engine::Postgres(pg) => Ok(self.conn(
                Inner::PgTx(pg.tenant_tx_for(scope.tenant()).await?),
                Some(scope.tenant()),
            )),
        }
    }

    /// A write transaction on the administrative path (registry, keys,
    /// usage, audit, billing, the job scheduler): every statement names
    /// its tenant explicitly.
    pub async fn admin_write(&self) -> Result<Conn, StoreError> {
        match self.engine.as_ref() {
            Engine::Sqlite(s) => {
                let (tx, turn) = s.write_tx().await?;
                Ok(self.conn(Inner::SqliteTx(tx, Some(turn)), None))
            }
            Engine::Postgres(pg) => {
                let tx = pg.admin_pool().begin().await.map_err(map_pg)?;
                Ok(self.conn(Inner::PgTx(tx), None))
            }
        }
    }

    /// A connection on the administrative path, for reads and single
    /// statements (each commits by itself).
    pub async fn admin_read(&self) -> Result<Conn, StoreError> {
        match self.engine.as_ref() {
            Engine::Sqlite(s) => {
                let conn = s.pool.acquire().await.map_err(map_sqlx)?;
                Ok(self.conn(Inner::SqliteConn(conn), None))
            }
            Engine::Postgres(pg) => {
                let conn = pg.admin_pool().acquire().await.map_err(map_pg)?;
                Ok(self.conn(Inner::PgConn(conn), None))
            }
        }
    }

    /// A read-only transaction on the administrative path that sees one
    /// snapshot across its statements (a dump or a move reads several
    /// tables, or reads twice, and must not see a write in between). End
    /// it with [`Conn::rollback`]: it wrote nothing.
    pub async fn admin_snapshot(&self) -> Result<Conn, StoreError> {
        match self.engine.as_ref() {
            // A deferred transaction: its first read fixes the snapshot
            // (WAL), without taking the write lock.
            Engine::Sqlite(s) => {
                let tx = s.pool.begin().await.map_err(map_sqlx)?;
                Ok(self.conn(Inner::SqliteTx(tx, None), None))
            }
            Engine::Postgres(pg) => {
                let tx = pg
                    .admin_pool()
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
                    .map_err(map_pg)?;
                Ok(self.conn(Inner::PgTx(tx), None))
            }
        }
    }

    /// Whether the database can serve reads and writes now.
    pub async fn ready(&self) -> Result<(), StoreError> {
        match self.engine.as_ref() {
            Engine::Sqlite(s) => s.ready().await,
            Engine::Postgres(pg) => pg.ready().await,
        }
    }

    /// Releases connections (graceful shutdown).
    pub async fn close(&self) {
        match self.engine.as_ref() {
            Engine::Sqlite(s) => {
                s.readers.close();
                s.pool.close().await;
            }
            Engine::Postgres(pg) => pg.close().await,
        }
    }
}

#[async_trait]
impl OutboxRepo for Db {
    fn outbox_place(&self) -> OutboxPlace {
        match self.engine.as_ref() {
            Engine::Sqlite(s) => s.outbox,
            Engine::Postgres(pg) => pg.outbox,
        }
    }

    async fn due_events(&self, before_ms: i64, limit: i64) -> Result<Vec<NewEvent>, StoreError> {
        let place = self.outbox_place();
        let mut conn = self.admin_read().await?;
        let rows = conn
            .fetch_all(sql(outbox::DUE_SQL).bind(before_ms).bind(limit))
            .await?;
        rows.iter()
            .map(|row| outbox::due_event(row, place))
            .collect()
    }

    async fn unpark(&self, chain: &str, id: &str) -> Result<(), StoreError> {
        let mut conn = self.admin_write().await?;
        conn.execute(sql(outbox::UNPARK_SQL).bind(chain).bind(id))
            .await?;
        conn.commit().await
    }
}

/// Upcast for the places that hold outboxes as trait objects.
impl From<Db> for Arc<dyn OutboxRepo> {
    fn from(db: Db) -> Self {
        Arc::new(db)
    }
}
