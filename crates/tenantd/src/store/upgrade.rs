//! Data upgrades: rewrites of stored data that SQL migrations cannot do.
//!
//! A migration changes the schema; some changes also need every existing
//! row rewritten by Rust code (the search index's tokens are made by
//! Rust, not by SQL). A feature supplies such a step as a [`DataUpgrade`]
//! with a name; the server composes the steps into [`DataUpgrades`]; the
//! store runs them on every SQLite database it opens, right after its
//! migrations: the shared file and each dedicated tenant's file (a file
//! made by an older build is upgraded on its first open, however long
//! after).
//!
//! Each step runs inside one write transaction together with the row that
//! records it done in `data_upgrades` (migration 6), so it runs to
//! completion exactly once per database: a crash or an error leaves no
//! half-rewritten data and no record, and the next open runs it again.
//! The write lock it holds keeps every writer out meanwhile, so a step
//! that reads all rows sees all of them.
//!
//! PostgreSQL has needed no data upgrade (its search column is generated
//! by the database), so it has no ledger and the runner passes it by.
//! This module knows no feature: steps come in from outside.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Conn, Db, Dialect, StoreError, sql};

/// One rewrite of stored data, run once per database.
#[async_trait]
pub trait DataUpgrade: Send + Sync + 'static {
    /// The step's name, recorded once it is done. Never rename a step
    /// that has shipped: the new name would run it again.
    fn name(&self) -> &'static str;

    /// Does the work in `conn`, a write transaction (SQLite's write lock
    /// held) that the runner commits with the record of the step.
    async fn run(&self, conn: &mut Conn) -> Result<(), StoreError>;
}

/// The steps to run on each database, in order (cheap to clone).
#[derive(Clone, Default)]
pub struct DataUpgrades {
    steps: Arc<[Arc<dyn DataUpgrade>]>,
}

impl std::fmt::Debug for DataUpgrades {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.steps.iter().map(|s| s.name()))
            .finish()
    }
}

/// Records step `$1` done at `$2`.
const RECORD_SQL: &str = "INSERT INTO data_upgrades (name, done_at) VALUES ($1, $2)";

/// `1` when step `$1` is done.
const DONE_SQL: &str = "SELECT 1 FROM data_upgrades WHERE name = $1";

impl DataUpgrades {
    /// No steps: what a one-shot tool opening a database passes, leaving
    /// the steps pending for the next server to open it.
    pub fn none() -> Self {
        Self::default()
    }

    /// `steps`, run in this order.
    pub fn new(steps: Vec<Arc<dyn DataUpgrade>>) -> Self {
        Self {
            steps: steps.into(),
        }
    }

    /// Runs on `db` every step not yet recorded there, each in its own
    /// write transaction; returns how many ran. Nothing on PostgreSQL.
    pub async fn run(&self, db: &Db) -> Result<usize, StoreError> {
        if db.dialect() != Dialect::Sqlite {
            return Ok(0);
        }
        let mut ran = 0;
        for step in self.steps.iter() {
            if run_step(db, step.as_ref()).await? {
                ran += 1;
            }
        }
        Ok(ran)
    }
}

/// Runs `step` on `db` unless it is recorded done; whether it ran.
async fn run_step(db: &Db, step: &dyn DataUpgrade) -> Result<bool, StoreError> {
    let name = step.name();
    let mut conn = db.admin_write().await?;
    let done: Option<i32> = conn.scalar_optional(sql(DONE_SQL).bind(name)).await?;
    if done.is_some() {
        conn.rollback().await?;
        return Ok(false);
    }
    tracing::info!(upgrade = name, "data upgrade: running");
    let started = std::time::Instant::now();
    // On an error the transaction is dropped, which rolls it back: no
    // half of the step and no record of it.
    step.run(&mut conn).await?;
    conn.execute(sql(RECORD_SQL).bind(name).bind(db.now()))
        .await?;
    // The platform's own write: no request, no audit event.
    conn.commit_unattributed().await?;
    tracing::info!(
        upgrade = name,
        elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "data upgrade: done"
    );
    Ok(true)
}

#[cfg(test)]
mod tests;
