//! The registry cache: what the request path reads for every request,
//! served from memory, because resolution runs on every request and must
//! cost microseconds, not a database round trip.
//!
//! It holds, per tenant, only its status, IP allow-list, settings,
//! placement and OIDC binding, and per live API key its hash, tenant, id,
//! scopes and validity window; everything
//! else stays in the store. Changes made through this process update it at
//! once (a revoked key stops working on the next request); changes made
//! elsewhere (the CLI, another node) are picked up by polling the store's
//! registry version.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::task::OwnedTask;
use tenancy::{
    AuthError, IpNet, KeyHash, Principal, PrincipalKind, TenantDirectory, TenantId, TenantStatus,
};

use super::DirectoryRow;
use super::model::TenantState;
use super::oidc::{BindingMap, Lookup};
use crate::clock::{Clock, rfc3339_from_ms};
use crate::config::parse_net;
use crate::keys::KeyRow;
use crate::limits::{PlanBook, QuotaLimits, QuotaSource, Settings, key_windows};
use crate::store::{AdminStore, Placement, PlacementSource, StoreError, Target};
use tenancy::ratelimit::Window;

/// A tenant as the request path needs it.
#[derive(Debug)]
struct CachedTenant {
    status: TenantStatus,
    settings: Arc<Settings>,
    /// `None` for the common case (shared, not moving): one pointer.
    placement: Option<Box<Placement>>,
}

#[derive(Debug)]
struct CachedKey {
    tenant: TenantId,
    id: Box<str>,
    hash: KeyHash,
    scopes: Arc<[String]>,
    expires_ms: Option<i64>,
    revoked_ms: Option<i64>,
}

/// A key's own windows, by (tenant, key id).
type KeyWindows = HashMap<KeyOf, Arc<[Window]>>;
/// (tenant, key id).
type KeyOf = (TenantId, Box<str>);

/// The in-memory registry.
#[derive(Debug)]
pub struct Registry {
    tenants: RwLock<HashMap<TenantId, CachedTenant>>,
    /// Rate-limit windows of the (few) keys that set their own.
    key_windows: RwLock<KeyWindows>,
    plans: Arc<PlanBook>,
    /// Serialises full reloads with single-tenant refreshes: a reload that
    /// read the directory before a tenant was created must not swap its
    /// stale snapshot in after that tenant's refresh (the tenant would be
    /// unknown until the next poll).
    loading: tokio::sync::Mutex<()>,
    keys: RwLock<HashMap<KeyHash, CachedKey>>,
    /// OIDC bindings: (issuer, client id) → the one tenant.
    issuers: RwLock<BindingMap>,
    /// `tenant.registry`: `Some(b)` forces checks on/off; `None` enforces
    /// them once any tenant exists.
    mode: Option<bool>,
    /// Some tenant was deleted: its id is retired and its trail kept, so
    /// checks stay on even with no tenant left (else a header naming the
    /// retired id would reach the kept trail).
    retired: std::sync::atomic::AtomicBool,
    /// `storage.data_dir` (dedicated SQLite files live under it).
    data_dir: std::path::PathBuf,
    version: AtomicI64,
    uses: Mutex<HashMap<(TenantId, Box<str>), i64>>,
    no_ips: Arc<[IpNet]>,
    /// Key validity and last-use times are read on it.
    clock: Clock,
}

impl Registry {
    /// An empty registry resolving settings with `plans`; call
    /// [`Registry::reload`] before serving. Keys' expiry and revocation
    /// are checked against `clock`.
    pub fn new(mode: Option<bool>, plans: Arc<PlanBook>, clock: Clock) -> Self {
        Self {
            tenants: RwLock::new(HashMap::new()),
            key_windows: RwLock::new(HashMap::new()),
            plans,
            loading: tokio::sync::Mutex::new(()),
            keys: RwLock::new(HashMap::new()),
            issuers: RwLock::new(BindingMap::default()),
            mode,
            retired: std::sync::atomic::AtomicBool::new(false),
            version: AtomicI64::new(-1),
            uses: Mutex::new(HashMap::new()),
            no_ips: Arc::from(Vec::new()),
            data_dir: std::path::PathBuf::from("."),
            clock,
        }
    }

    fn cached_tenant(&self, row: &DirectoryRow, keyed: bool) -> CachedTenant {
        CachedTenant {
            status: self.status_of(row, keyed),
            settings: self.plans.settings(&row.plan, &row.limits, &row.quotas),
            placement: self.placement_of(row),
        }
    }

    fn placement_of(&self, row: &DirectoryRow) -> Option<Box<Placement>> {
        let dedicated = Target::of(&self.data_dir, &row.id, row.storage.as_ref());
        if dedicated.is_none() && row.moving_until_ms.is_none() {
            return None;
        }
        Some(Box::new(Placement {
            dedicated,
            moving_until_ms: row.moving_until_ms,
        }))
    }

    /// Where dedicated tenants' SQLite files live (`storage.data_dir`).
    pub fn with_data_dir(mut self, data_dir: &std::path::Path) -> Self {
        self.data_dir = data_dir.to_path_buf();
        self
    }

    /// Up to `limit` tenants after `after`, in id order, with their
    /// placement (`GET /health/tenants`, eager pool opening).
    pub fn placements_page(
        &self,
        after: Option<&TenantId>,
        limit: usize,
    ) -> Vec<(TenantId, Placement)> {
        let tenants = read(&self.tenants);
        let mut ids: Vec<&TenantId> = tenants
            .keys()
            .filter(|id| after.is_none_or(|a| id.as_str() > a.as_str()))
            .collect();
        ids.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        ids.truncate(limit);
        ids.into_iter()
            .map(|id| {
                let placement = tenants
                    .get(id)
                    .and_then(|t| t.placement.as_deref().cloned())
                    .unwrap_or_default();
                (id.clone(), placement)
            })
            .collect()
    }

    /// Every tenant bound to a dedicated database, in id order.
    pub fn dedicated_tenants(&self) -> Vec<(TenantId, Target)> {
        let tenants = read(&self.tenants);
        let mut out: Vec<(TenantId, Target)> = tenants
            .iter()
            .filter_map(|(id, t)| {
                let target = t.placement.as_ref()?.dedicated.clone()?;
                Some((id.clone(), target))
            })
            .collect();
        out.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        out
    }

    fn key_window_entry(row: &KeyRow) -> Option<(KeyOf, Arc<[Window]>)> {
        if row.limits.is_empty() {
            return None;
        }
        Some((
            (row.tenant_id.clone(), row.id.clone().into_boxed_str()),
            key_windows(&row.limits).into(),
        ))
    }

    /// `keyed`: the tenant has an API key that is not revoked. With it, or
    /// with an identity provider, the tenant holds credentials and a bare
    /// header no longer reaches it (unless `security.header_access`).
    fn status_of(&self, row: &DirectoryRow, keyed: bool) -> TenantStatus {
        let credential_required = (keyed || row.oidc.is_some()) && !row.header_access;
        match row.status {
            TenantState::Suspended => TenantStatus::Suspended,
            TenantState::Active if row.allowed_ips.is_empty() => TenantStatus::Active {
                allowed_ips: self.no_ips.clone(),
                credential_required,
            },
            TenantState::Active => TenantStatus::Active {
                allowed_ips: row
                    .allowed_ips
                    .iter()
                    .filter_map(|s| parse_net(s))
                    .collect(),
                credential_required,
            },
        }
    }

    /// Tenants with at least one key that is not revoked.
    fn keyed_tenants(keys: &[KeyRow]) -> std::collections::HashSet<TenantId> {
        keys.iter()
            .filter(|k| k.revoked_ms.is_none())
            .map(|k| k.tenant_id.clone())
            .collect()
    }

    fn cached(row: KeyRow) -> (KeyHash, CachedKey) {
        (
            row.hash,
            CachedKey {
                tenant: row.tenant_id,
                id: row.id.into_boxed_str(),
                hash: row.hash,
                scopes: row.scopes.into(),
                expires_ms: row.expires_ms,
                revoked_ms: row.revoked_ms,
            },
        )
    }

    /// Replaces the whole cache with the store's contents.
    pub async fn reload(&self, store: &AdminStore) -> Result<(), StoreError> {
        let _loading = self.loading.lock().await;
        // Read the version first: a change racing with the load bumps it
        // again and the next poll reloads.
        let version = store.tenants().registry_version().await?;
        let rows = store.tenants().load_directory(None).await?;
        let keys = store.keys().load_keys(None).await?;
        let retired = store.tenants().retired_count().await? > 0;
        self.retired.store(retired, Ordering::Release);
        let keyed = Self::keyed_tenants(&keys);
        let tenants: HashMap<TenantId, CachedTenant> = rows
            .iter()
            .map(|row| {
                let cached = self.cached_tenant(row, keyed.contains(&row.id));
                (row.id.clone(), cached)
            })
            .collect();
        let key_windows: HashMap<_, _> = keys.iter().filter_map(Self::key_window_entry).collect();
        let keys: HashMap<KeyHash, CachedKey> = keys.into_iter().map(Self::cached).collect();
        let mut issuers = BindingMap::default();
        for row in &rows {
            issuers.set(&row.id, row.oidc.clone());
        }
        *write(&self.issuers) = issuers;
        *write(&self.tenants) = tenants;
        *write(&self.key_windows) = key_windows;
        *write(&self.keys) = keys;
        self.version.store(version, Ordering::Release);
        Ok(())
    }

    /// Re-reads one tenant and its keys after a change made by this
    /// process (effective on the next request).
    pub async fn refresh_tenant(
        &self,
        store: &AdminStore,
        id: &TenantId,
    ) -> Result<(), StoreError> {
        let _loading = self.loading.lock().await;
        let rows = store.tenants().load_directory(Some(id)).await?;
        let keys = store.keys().load_keys(Some(id)).await?;
        {
            let mut tenants = write(&self.tenants);
            match rows.first() {
                Some(row) => {
                    let keyed = !Self::keyed_tenants(&keys).is_empty();
                    tenants.insert(id.clone(), self.cached_tenant(row, keyed));
                }
                None => {
                    // Deleted: its id is retired from now on.
                    if tenants.remove(id).is_some() {
                        self.retired.store(true, Ordering::Release);
                    }
                }
            }
        }
        write(&self.issuers).set(id, rows.first().and_then(|r| r.oidc.clone()));
        {
            let mut windows = write(&self.key_windows);
            windows.retain(|(tenant, _), _| tenant != id);
            windows.extend(keys.iter().filter_map(Self::key_window_entry));
        }
        let mut map = write(&self.keys);
        map.retain(|_, k| &k.tenant != id);
        map.extend(keys.into_iter().map(Self::cached));
        Ok(())
    }

    /// Whether any tenant binds the OIDC issuer `issuer`.
    pub fn knows_issuer(&self, issuer: &str) -> bool {
        read(&self.issuers).knows(issuer)
    }

    /// The tenant bound to OIDC `issuer` with client id `audience`.
    pub fn oidc_binding(&self, issuer: &str, audience: &str) -> Lookup {
        read(&self.issuers).lookup(issuer, audience)
    }

    /// The limits and quotas in force for `tenant` (the default plan's
    /// for a tenant the registry does not hold).
    pub fn settings(&self, tenant: &TenantId) -> Arc<Settings> {
        read(&self.tenants)
            .get(tenant)
            .map(|t| t.settings.clone())
            .unwrap_or_else(|| self.plans.unregistered())
    }

    /// The windows of an API key that sets its own limits.
    pub fn key_windows(&self, tenant: &TenantId, key_id: &str) -> Option<Arc<[Window]>> {
        let map = read(&self.key_windows);
        if map.is_empty() {
            return None;
        }
        map.get(&(tenant.clone(), Box::from(key_id))).cloned()
    }

    /// The plans the registry resolves settings with.
    pub fn plans(&self) -> &Arc<PlanBook> {
        &self.plans
    }

    /// Number of tenants known.
    pub fn tenant_count(&self) -> usize {
        read(&self.tenants).len()
    }

    /// Verifies an API key by its hash: an index probe, then a constant-time
    /// comparison of the stored hash.
    pub fn verify_key(&self, hash: &KeyHash) -> Result<Principal, AuthError> {
        let now = self.clock.now_ms();
        let keys = read(&self.keys);
        let Some(key) = keys.get(hash) else {
            return Err(AuthError::InvalidKey);
        };
        if !key.hash.ct_eq(hash) {
            return Err(AuthError::InvalidKey);
        }
        if key.revoked_ms.is_some_and(|at| at <= now) {
            return Err(AuthError::InvalidKey);
        }
        if key.expires_ms.is_some_and(|at| at <= now) {
            return Err(AuthError::ExpiredKey);
        }
        let principal = Principal::new(
            key.tenant.clone(),
            PrincipalKind::ApiKey {
                key_id: key.id.to_string(),
            },
            key.scopes.clone(),
        );
        let use_key = (key.tenant.clone(), key.id.clone());
        drop(keys);
        if let Ok(mut uses) = self.uses.lock() {
            uses.insert(use_key, now);
        }
        Ok(principal)
    }

    /// Writes the batched `last_used_at` times.
    pub async fn flush_uses(&self, store: &AdminStore) -> Result<(), StoreError> {
        let batch: Vec<(TenantId, String, String)> = match self.uses.lock() {
            Ok(mut uses) => uses
                .drain()
                .map(|((tenant, id), ms)| (tenant, id.into_string(), rfc3339_from_ms(ms)))
                .collect(),
            Err(_) => Vec::new(),
        };
        store.keys().touch_keys(&batch).await
    }

    /// Starts the background task: reloads when the store's registry
    /// version moves, flushes key uses every `flush`. Stop it with
    /// [`OwnedTask::stop_within`], which flushes once more.
    pub fn maintain(
        self: &Arc<Self>,
        store: AdminStore,
        poll: Duration,
        flush: Duration,
    ) -> OwnedTask {
        let registry = self.clone();
        OwnedTask::spawn("registry maintenance", move |token| async move {
            let mut poll_tick = tokio::time::interval(poll);
            let mut flush_tick = tokio::time::interval(flush);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = poll_tick.tick() => {
                        match store.tenants().registry_version().await {
                            Ok(v) if v != registry.version.load(Ordering::Acquire) => {
                                if let Err(e) = registry.reload(&store).await {
                                    tracing::warn!(error = %e, "registry reload failed");
                                }
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!(error = %e, "registry version check failed"),
                        }
                    }
                    _ = flush_tick.tick() => {
                        if let Err(e) = registry.flush_uses(&store).await {
                            tracing::warn!(error = %e, "recording API key use failed");
                        }
                    }
                }
            }
            if let Err(e) = registry.flush_uses(&store).await {
                tracing::warn!(error = %e, "recording API key use at shutdown failed");
            }
        })
    }
}

// A poisoned lock only means a panic happened while it was held; the maps
// are always left whole (each write is a single assignment or insert), so
// the data is still usable.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TenantDirectory for Registry {
    fn enforced(&self) -> bool {
        self.mode.unwrap_or_else(|| {
            self.retired.load(Ordering::Acquire) || !read(&self.tenants).is_empty()
        })
    }

    fn status(&self, tenant: &TenantId) -> TenantStatus {
        read(&self.tenants)
            .get(tenant)
            .map(|t| t.status.clone())
            .unwrap_or(TenantStatus::Unknown)
    }
}

impl PlacementSource for Registry {
    fn placement(&self, tenant: &TenantId) -> Placement {
        read(&self.tenants)
            .get(tenant)
            .and_then(|t| t.placement.as_deref().cloned())
            .unwrap_or_default()
    }
}

impl QuotaSource for Registry {
    fn quotas(&self, tenant: &TenantId) -> QuotaLimits {
        read(&self.tenants)
            .get(tenant)
            .map_or_else(|| self.plans.unregistered().quotas, |t| t.settings.quotas)
    }
}
