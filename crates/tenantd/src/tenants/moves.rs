//! Moving a tenant's records between the shared database and a dedicated
//! one (`tenantd tenants move`, `POST /admin/tenants/{id}/move`).
//!
//! The phases, and what a crash after each leaves (the tenant is always
//! whole in exactly one place: the one its binding names):
//!
//! 1. **copy**: every record row goes to the target, replacing whatever a
//!    failed earlier attempt left there. Reads and writes go on against the
//!    source. *Crash*: the source is authoritative; the target's copy is
//!    invisible and replaced by the next attempt.
//! 2. **freeze**: the tenant's writes are refused (503 `tenant_moving`,
//!    `Retry-After`) under a lease stored with the tenant, so every node
//!    sees it (this one at once, others at their next registry poll, which
//!    the mover waits out). *Crash*: still whole in the source; the lease
//!    runs out and writes resume by themselves.
//! 3. **verify**: the source is read again (catching writes made during the
//!    copy, which are copied again) and the target must hold exactly the
//!    same rows: same count, same SHA-256 over the canonical rows.
//! 4. **switch**: one row update binds the tenant to the target and ends
//!    the lease. *Crash*: whole in the target; the source still holds a
//!    stale copy, invisible, removed by running the move again.
//! 5. **clean up**: the source rows are deleted.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenancy::TenantId;
use utoipa::ToSchema;

use super::model::StorageBinding;
use super::registry::Registry;
use super::{TenantRepo, TenantsError};
use crate::clock::Clock;
use crate::portable::Row;
use crate::records::DataRows;
use crate::store::{AdminStore, Db, Store, StoreError, Target};

/// How long a freeze holds writes before it lapses on its own (a mover
/// that died stops blocking its tenant after this). Renewed by a live
/// mover before each long step.
pub const MOVE_LEASE_MS: i64 = 15_000;

/// The tier a tenant moves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The shared database.
    Shared,
    /// A database of the tenant's own.
    Dedicated,
}

/// `POST /admin/tenants/{id}/move`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveTenant {
    /// Where to.
    pub to: Tier,
    /// With `to: dedicated`: a `postgres://` URL of the tenant's database.
    /// Absent: a SQLite file under `data_dir/tenants/`.
    #[serde(default)]
    pub url: Option<String>,
}

/// What a move did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MoveReport {
    /// The tenant.
    #[schema(value_type = String)]
    pub tenant_id: TenantId,
    /// Where the records were (`shared`, or the dedicated database).
    pub from: String,
    /// Where they are now.
    pub to: String,
    /// Records now in the target (verified).
    pub records: u64,
    /// SHA-256 over the canonical record rows, equal on both sides.
    pub sha256: String,
    /// How long the tenant's writes were refused.
    pub writes_paused_ms: u64,
    /// Stale rows removed from the source (a re-run after a crash removes
    /// what the crashed attempt left).
    pub removed_from_source: u64,
    /// `true` when the tenant was already there (nothing copied).
    pub already_there: bool,
}

/// Tenants with a move running in this process.
static MOVING: std::sync::Mutex<Vec<TenantId>> = std::sync::Mutex::new(Vec::new());

/// This process's claim on moving one tenant (two concurrent moves of a
/// tenant would each copy and delete); released on drop. Across processes
/// the lease and the binding check before the switch decide.
struct MoveGuard(TenantId);

impl MoveGuard {
    fn take(id: &TenantId) -> Result<Self, TenantsError> {
        let mut moving = MOVING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if moving.contains(id) {
            return Err(TenantsError::Moving(id.to_string()));
        }
        moving.push(id.clone());
        Ok(Self(id.clone()))
    }
}

impl Drop for MoveGuard {
    fn drop(&mut self) {
        let mut moving = MOVING
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        moving.retain(|t| *t != self.0);
    }
}

/// Runs moves (one per tenant at a time, enforced by the lease).
pub struct Mover<'a> {
    /// Tenant rows.
    pub admin: &'a AdminStore,
    /// The shared backend and the dedicated pools.
    pub store: &'a Store,
    /// This node's registry (refreshed at once after each change).
    pub registry: &'a Registry,
    /// How long other nodes may take to see a freeze (their registry poll
    /// interval plus margin; a short settle when no other node exists).
    pub settle: Duration,
    /// Lease deadlines are read and written on it.
    pub clock: Clock,
}

/// A canonical digest of record rows: count and SHA-256 over each row's
/// columns (database-assigned `seq` excluded) in id order, so equal on two
/// backends exactly when they hold the same records.
pub fn digest(rows: &[Row]) -> (u64, String) {
    let mut lines: Vec<String> = rows
        .iter()
        .map(|(table, data)| {
            let mut data = data.clone();
            data.remove("seq");
            // serde_json's Map is ordered by key: the text is canonical.
            format!("{table}\t{}", serde_json::Value::Object(data))
        })
        .collect();
    lines.sort();
    let mut hash = Sha256::new();
    for line in &lines {
        hash.update(line.as_bytes());
        hash.update(b"\n");
    }
    (lines.len() as u64, hex::encode(hash.finalize()))
}

/// Stops the process at a named phase when the (debug-build-only) test
/// hook `TENANTD_TEST_MOVE_CRASH_AT` names it: the crash-safety tests kill
/// a move at each phase.
fn crash_point(phase: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("TENANTD_TEST_MOVE_CRASH_AT").as_deref() == Ok(phase) {
        eprintln!("test hook: crashing the move after {phase}");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = phase;
}

fn describe(target: Option<&Target>) -> String {
    target.map_or_else(|| "shared".to_owned(), Target::describe)
}

impl Mover<'_> {
    async fn open(&self, target: Option<&Target>) -> Result<Db, TenantsError> {
        match target {
            None => Ok(self.store.shared_db().clone()),
            // A target that cannot be reached is a storage failure (503),
            // not a bad request: the same move may work in a moment.
            Some(t) => self.store.pools().open_target(t).await.map_err(|e| {
                TenantsError::Store(StoreError::Unavailable(
                    crate::redact::text(&format!(
                        "the target database {} cannot be opened: {e:#}",
                        t.describe()
                    ))
                    .into(),
                ))
            }),
        }
    }

    async fn set_lease(&self, id: &TenantId, until: Option<i64>) -> Result<(), TenantsError> {
        let mut row = self
            .admin
            .db()
            .get_tenant(id)
            .await?
            .ok_or_else(|| TenantsError::NotFound(id.to_string()))?;
        row.spec.moving_until_ms = until;
        self.admin.db().update_tenant(&row).await?;
        self.registry.refresh_tenant(self.admin, id).await?;
        Ok(())
    }

    /// The tenant's row once no other move holds its freeze lease. A live
    /// mover renews its lease, so waiting one lease period tells a move
    /// under way (409) from one whose process died (its lease lapses and
    /// this move takes over, finishing or redoing its work).
    async fn lease_free_row(&self, id: &TenantId) -> Result<super::TenantRow, TenantsError> {
        let give_up = Instant::now() + Duration::from_millis(MOVE_LEASE_MS.unsigned_abs() + 1000);
        loop {
            let row = self
                .admin
                .db()
                .get_tenant(id)
                .await?
                .ok_or_else(|| TenantsError::NotFound(id.to_string()))?;
            let held_for = row
                .spec
                .moving_until_ms
                .map_or(0, |until| until - self.clock.now_ms());
            if held_for <= 0 {
                return Ok(row);
            }
            if Instant::now() >= give_up {
                return Err(TenantsError::Moving(id.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(held_for.unsigned_abs().min(500))).await;
        }
    }

    /// Moves `id`'s records to `request.to` (see the module docs).
    pub async fn run(
        &self,
        id: &TenantId,
        request: &MoveTenant,
    ) -> Result<MoveReport, TenantsError> {
        let _one_at_a_time = MoveGuard::take(id)?;
        let mut row = self.lease_free_row(id).await?;
        if row.source == "config" {
            return Err(TenantsError::Invalid(vec![
                "a static tenant (from the tenants: configuration) is bound by that configuration; \
                 change its storage there"
                    .to_owned(),
            ]));
        }
        if row
            .spec
            .moving_until_ms
            .is_some_and(|until| until > self.clock.now_ms())
        {
            return Err(TenantsError::Moving(id.to_string()));
        }
        let binding = desired_binding(row.spec.storage.as_ref(), request)?;
        let data_dir = self.store.pools().data_dir().to_path_buf();
        let from = super::placement::target(&data_dir, id, row.spec.storage.as_ref());
        let to = super::placement::target(&data_dir, id, Some(&binding));
        let source = self.open(from.as_ref()).await?;
        let target = self.open(to.as_ref()).await?;
        let result = if from == to {
            self.finish_cleanup(id, &data_dir, to.as_ref(), &target)
                .await
        } else {
            self.transfer(id, &mut row, binding, &source, &target)
                .await
                .map(|(records, sha256, paused, removed)| MoveReport {
                    tenant_id: id.clone(),
                    from: describe(from.as_ref()),
                    to: describe(to.as_ref()),
                    records,
                    sha256,
                    writes_paused_ms: paused,
                    removed_from_source: removed,
                    already_there: false,
                })
        };
        for (t, b) in [(from.as_ref(), source), (to.as_ref(), target)] {
            if t.is_some() {
                b.close().await;
            }
        }
        // Whatever happened, this node's pool of the tenant may be stale.
        self.store.pools().close_tenant(id);
        result
    }

    /// The tenant is already bound to `to`: remove what a crashed attempt
    /// left in the other tier, and report the verified state.
    async fn finish_cleanup(
        &self,
        id: &TenantId,
        data_dir: &std::path::Path,
        to: Option<&Target>,
        target: &Db,
    ) -> Result<MoveReport, TenantsError> {
        let removed = match to {
            // Bound to a dedicated database: the stale copy is in the shared one.
            Some(_) => self.store.shared_db().delete_data_rows(id).await?,
            // Bound to shared: a stale copy may sit in its SQLite file.
            None => {
                let file = Target::sqlite_file(data_dir, id);
                if file.exists() {
                    let stale = self.open(Some(&Target::Sqlite(file))).await?;
                    let n = stale.delete_data_rows(id).await;
                    stale.close().await;
                    n?
                } else {
                    0
                }
            }
        };
        let (records, sha256) = digest(&target.data_rows(id).await?);
        Ok(MoveReport {
            tenant_id: id.clone(),
            from: describe(to),
            to: describe(to),
            records,
            sha256,
            writes_paused_ms: 0,
            removed_from_source: removed,
            already_there: true,
        })
    }

    async fn transfer(
        &self,
        id: &TenantId,
        row: &mut super::TenantRow,
        binding: StorageBinding,
        source: &Db,
        target: &Db,
    ) -> Result<(u64, String, u64, u64), TenantsError> {
        // 1. Copy while the tenant works on.
        let first = source.data_rows(id).await?;
        target.replace_data_rows(id, &first).await?;
        crash_point("copied");

        // 2. Freeze writes, and wait until every node has seen it.
        let frozen = Instant::now();
        self.set_lease(id, Some(self.clock.now_ms() + MOVE_LEASE_MS))
            .await?;
        crash_point("frozen");
        // Bounded well inside the lease, which must outlast the wait.
        tokio::time::sleep(
            self.settle
                .min(Duration::from_millis(MOVE_LEASE_MS.unsigned_abs() / 3)),
        )
        .await;

        let verified = self.verify(id, &first, source, target).await;
        let (records, sha256) = match verified {
            Ok(v) => v,
            Err(e) => {
                // Writes resume on the source, which is still authoritative.
                if let Err(unfreeze) = self.set_lease(id, None).await {
                    tracing::warn!(tenant = %id.as_str(), error = %unfreeze, "ending a failed move's freeze; it lapses by itself");
                }
                return Err(e);
            }
        };
        crash_point("verified");

        // 4. Switch: one row update rebinds the tenant and ends the freeze.
        let mut current = self
            .admin
            .db()
            .get_tenant(id)
            .await?
            .ok_or_else(|| TenantsError::NotFound(id.to_string()))?;
        // Still ours to switch? Another move (another process) may have
        // rebound the tenant meanwhile, or our freeze may have lapsed and
        // let writes reach the source after the final read: then nothing is
        // switched or deleted, the source stays authoritative.
        let data_dir = self.store.pools().data_dir().to_path_buf();
        let bound = super::placement::target(&data_dir, id, current.spec.storage.as_ref());
        let lease_left = current
            .spec
            .moving_until_ms
            .map_or(0, |until| until - self.clock.now_ms());
        if bound != super::placement::target(&data_dir, id, row.spec.storage.as_ref())
            || lease_left < 1000
        {
            return Err(TenantsError::Moving(id.to_string()));
        }
        current.spec.storage = Some(binding);
        current.spec.moving_until_ms = None;
        current.updated_at = self.clock.now_rfc3339();
        self.admin.db().update_tenant(&current).await?;
        *row = current;
        self.registry.refresh_tenant(self.admin, id).await?;
        let paused = u64::try_from(frozen.elapsed().as_millis()).unwrap_or(u64::MAX);
        crash_point("switched");

        // 5. Remove the source's copy.
        let removed = source.delete_data_rows(id).await?;
        crash_point("cleaned");
        tracing::info!(tenant = %id.as_str(), records, paused_ms = paused, "tenant moved");
        Ok((records, sha256, paused, removed))
    }

    /// Phase 3: copy again what changed during the first copy, then check
    /// that the target holds exactly the source's rows.
    async fn verify(
        &self,
        id: &TenantId,
        first: &[Row],
        source: &Db,
        target: &Db,
    ) -> Result<(u64, String), TenantsError> {
        // Renew the lease before the final read: it must still hold when
        // the binding switches, or writes resumed on the source would be
        // deleted with it.
        self.set_lease(id, Some(self.clock.now_ms() + MOVE_LEASE_MS))
            .await?;
        let now = source.data_rows(id).await?;
        let expected = digest(&now);
        if expected != digest(first) {
            target.replace_data_rows(id, &now).await?;
        }
        let copied = digest(&target.data_rows(id).await?);
        if copied != expected {
            return Err(TenantsError::Store(StoreError::Internal(
                format!(
                    "move verification failed: the source has {} records ({}), the target {} ({}); \
                 nothing was switched",
                    expected.0, expected.1, copied.0, copied.1
                )
                .into(),
            )));
        }
        Ok(expected)
    }
}

/// The binding a move to `request.to` gives (keeping the Redis fields).
fn desired_binding(
    current: Option<&StorageBinding>,
    request: &MoveTenant,
) -> Result<StorageBinding, TenantsError> {
    let mut binding = current.cloned().unwrap_or_default();
    match request.to {
        Tier::Shared => {
            if request.url.is_some() {
                return Err(TenantsError::Invalid(vec![
                    "url: only with to: dedicated".to_owned(),
                ]));
            }
            binding.isolation = Some("shared".to_owned());
            binding.url = None;
            binding.database = None;
        }
        Tier::Dedicated => {
            if let Some(url) = &request.url
                && (!crate::config::is_postgres_url(url) || url.contains('\0'))
            {
                return Err(TenantsError::Invalid(vec![
                    "url: a postgres:// URL (omit it for a SQLite file under data_dir/tenants/)"
                        .to_owned(),
                ]));
            }
            binding.isolation = Some("dedicated".to_owned());
            binding.url = request.url.clone();
            binding.database = None;
        }
    }
    Ok(binding)
}
