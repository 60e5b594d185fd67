//! [`TenantAdmin`]: tenant and key operations, shared by the admin HTTP API
//! and the CLI, keeping the registry cache in step with the store.

use std::sync::Arc;

use tenancy::{KeyHasher, PlainKey, TenantId};

use super::model::{CreateTenant, DEFAULT_PLAN, PatchTenant, TenantRow, TenantSpec, validate};
use super::registry::Registry;
use super::{DeletedCounts, Inserted, Tenant, TenantFilter, TenantRepo, TenantState, TenantsError};
use crate::clock::{Clock, rfc3339_from_ms};
use crate::config::is_postgres_url;
use crate::keys::{ApiKeyInfo, IssueKey, IssuedKey, KeyInsert, KeyRepo, NewKey, new_key_id};
use crate::store::{AdminStore, StoreError};

/// Tenant administration.
#[derive(Clone)]
pub struct TenantAdmin {
    store: AdminStore,
    registry: Arc<Registry>,
    hasher: KeyHasher,
    /// Creation, update and revocation times, and rotation grace ends.
    clock: Clock,
}

impl std::fmt::Debug for TenantAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantAdmin").finish_non_exhaustive()
    }
}

/// A page of tenants.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct TenantPage {
    /// Tenants in id order.
    pub tenants: Vec<Tenant>,
    /// Cursor of the next page, if any.
    pub next_cursor: Option<String>,
}

impl TenantAdmin {
    /// Operations over `store`, keeping `registry` current, with times
    /// read on `clock`.
    pub fn new(
        store: AdminStore,
        registry: Arc<Registry>,
        hasher: KeyHasher,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            registry,
            hasher,
            clock,
        }
    }

    /// The clock operations read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The registry cache.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The store.
    pub fn store(&self) -> &AdminStore {
        &self.store
    }

    async fn refresh(&self, id: &TenantId) -> Result<(), TenantsError> {
        Ok(self.registry.refresh_tenant(&self.store, id).await?)
    }

    fn mint(&self, tenant: &TenantId, new: NewKey) -> (KeyInsert, PlainKey) {
        let plain = PlainKey::generate(tenant);
        let insert = KeyInsert {
            id: new_key_id(),
            name: new.name,
            prefix: plain.display_prefix(),
            hash: self.hasher.hash(&plain),
            scopes: new.scopes,
            expires_at: new.expires_at,
            limits: new.limits,
        };
        (insert, plain)
    }

    /// Creates a tenant and (unless `issue_key` is false) its first key.
    pub async fn create(
        &self,
        input: CreateTenant,
    ) -> Result<(Tenant, Option<IssuedKey>), TenantsError> {
        let issue_key = input.issue_key;
        let row = self.new_row(input)?;
        let first = issue_key.then(|| {
            self.mint(
                &row.id,
                NewKey {
                    name: "default".to_owned(),
                    expires_at: None,
                    scopes: Vec::new(),
                    limits: Default::default(),
                },
            )
        });
        let stored = self
            .insert_tenant(&row, first.as_ref().map(|(insert, _)| insert))
            .await?;
        self.refresh(&row.id).await?;
        tracing::info!(tenant = %row.id, "tenant created");
        let issued = match (stored, first) {
            (Some(info), Some((_, plain))) => Some(IssuedKey {
                info,
                key: plain.expose().to_owned(),
            }),
            _ => None,
        };
        Ok((row.into(), issued))
    }

    /// The row a creation request stores, or every problem it has.
    fn new_row(&self, input: CreateTenant) -> Result<TenantRow, TenantsError> {
        let mut problems = Vec::new();
        let id = super::model::parse_tenant_id("", &input.id)
            .map_err(|p| problems.push(p))
            .ok();
        let plan = input.plan.unwrap_or_else(|| DEFAULT_PLAN.to_owned());
        let spec = TenantSpec {
            limits: input.limits,
            quotas: input.quotas,
            features: input.features,
            security: input.security,
            frontend_url: input.frontend_url,
            oidc: input.oidc,
            storage: input.storage,
            moving_until_ms: None,
        };
        let name = input.name.trim().to_owned();
        problems.extend(validate("", &name, input.email.as_deref(), &plan, &spec));
        problems.extend(dedicated_url_problem(&spec));
        let Some(id) = id.filter(|_| problems.is_empty()) else {
            return Err(TenantsError::Invalid(problems));
        };
        let now = self.clock.now_rfc3339();
        Ok(TenantRow {
            id,
            name,
            email: input.email,
            plan,
            status: input.status.unwrap_or_default(),
            source: "api".to_owned(),
            spec,
            created_at: now.clone(),
            updated_at: now,
        })
    }

    /// Stores a new tenant with its first key, if any; the stored key.
    async fn insert_tenant(
        &self,
        row: &TenantRow,
        first: Option<&KeyInsert>,
    ) -> Result<Option<ApiKeyInfo>, TenantsError> {
        let id = &row.id;
        let stored = self
            .store
            .db()
            .insert_tenant(row, first)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => TenantsError::AlreadyExists(id.to_string()),
                other => other.into(),
            })?;
        match stored {
            Inserted::Created(key) => Ok(key.map(|k| *k)),
            Inserted::Retired => Err(TenantsError::Retired(id.to_string())),
            Inserted::OidcTaken => Err(TenantsError::Store(StoreError::Conflict(
                super::oidc::TAKEN.to_owned().into(),
            ))),
        }
    }

    /// One tenant.
    pub async fn get(&self, id: &TenantId) -> Result<Tenant, TenantsError> {
        Ok(self.row(id).await?.into())
    }

    async fn row(&self, id: &TenantId) -> Result<TenantRow, TenantsError> {
        self.store
            .db()
            .get_tenant(id)
            .await?
            .ok_or_else(|| TenantsError::NotFound(id.to_string()))
    }

    /// A page of tenants.
    pub async fn list(&self, mut filter: TenantFilter) -> Result<TenantPage, TenantsError> {
        let limit = filter.limit;
        filter.limit = limit + 1;
        let mut rows = self.store.db().list_tenants(&filter).await?;
        let more = rows.len() as u64 > limit;
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_cursor = if more {
            rows.last().map(|r| r.id.to_string())
        } else {
            None
        };
        Ok(TenantPage {
            tenants: rows.into_iter().map(Tenant::from).collect(),
            next_cursor,
        })
    }

    /// Applies a patch; every problem of the result is reported.
    pub async fn update(&self, id: &TenantId, patch: PatchTenant) -> Result<Tenant, TenantsError> {
        let mut row = self.row(id).await?;
        let placed = placement_fields(row.spec.storage.as_ref());
        patch.apply(&mut row);
        row.name = row.name.trim().to_owned();
        let mut problems = validate("", &row.name, row.email.as_deref(), &row.plan, &row.spec);
        if placement_fields(row.spec.storage.as_ref()) != placed {
            // Rebinding without copying would strand the tenant's records.
            problems.push(
                "storage: isolation, url and database change only by moving the tenant \
                 (POST /admin/tenants/{id}/move)"
                    .to_owned(),
            );
        }
        if !problems.is_empty() {
            return Err(TenantsError::Invalid(problems));
        }
        row.updated_at = self.clock.now_rfc3339();
        if !self.store.db().update_tenant(&row).await? {
            return Err(TenantsError::NotFound(id.to_string()));
        }
        self.refresh(id).await?;
        tracing::info!(tenant = %id, status = row.status.as_str(), "tenant updated");
        Ok(row.into())
    }

    /// Suspends or resumes.
    pub async fn set_status(
        &self,
        id: &TenantId,
        status: TenantState,
    ) -> Result<Tenant, TenantsError> {
        self.update(
            id,
            PatchTenant {
                status: Some(status),
                ..PatchTenant::default()
            },
        )
        .await
    }

    /// Removes the tenant and all its data.
    pub async fn delete(&self, id: &TenantId) -> Result<DeletedCounts, TenantsError> {
        // A dedicated tenant's records are in its own database: removed
        // first, so a failure there leaves the tenant (and a retry) intact.
        let row = self.row(id).await?;
        let pools = self.store.pools();
        let mut dedicated_records = 0;
        if let Some(target) =
            super::placement::target(pools.data_dir(), id, row.spec.storage.as_ref())
        {
            let own = pools.get(id, &target).await?;
            dedicated_records = crate::records::DataRows::delete_data_rows(&own, id).await?;
            pools.close_tenant(id);
        }
        let mut counts = self
            .store
            .db()
            .delete_tenant(id)
            .await?
            .ok_or_else(|| TenantsError::NotFound(id.to_string()))?;
        counts.records += dedicated_records;
        self.refresh(id).await?;
        tracing::info!(tenant = %id, records = counts.records, jobs = counts.detection_jobs,
                       api_keys = counts.api_keys, "tenant deleted with all its data");
        Ok(counts)
    }

    /// Issues a key.
    pub async fn issue_key(
        &self,
        id: &TenantId,
        input: IssueKey,
    ) -> Result<IssuedKey, TenantsError> {
        let new = input
            .validate(self.clock.now_ms())
            .map_err(|p| TenantsError::Invalid(vec![p]))?;
        let max_live = self.registry.settings(id).quotas.max_api_keys;
        let (insert, plain) = self.mint(id, new);
        let info = self
            .store
            .db()
            .insert_key(id, &insert, max_live)
            .await?
            .ok_or_else(|| TenantsError::NotFound(id.to_string()))?;
        self.refresh(id).await?;
        tracing::info!(tenant = %id, key_id = %info.id, "API key issued");
        Ok(IssuedKey {
            info,
            key: plain.expose().to_owned(),
        })
    }

    /// Keys of a tenant (never secrets or hashes).
    pub async fn list_keys(&self, id: &TenantId) -> Result<Vec<ApiKeyInfo>, TenantsError> {
        self.row(id).await?;
        Ok(self.store.db().list_keys(id).await?)
    }

    /// Revokes a key, effective on the next request to this node.
    pub async fn revoke_key(&self, id: &TenantId, key_id: &str) -> Result<(), TenantsError> {
        if !self
            .store
            .db()
            .revoke_key(id, key_id, &self.clock.now_rfc3339())
            .await?
        {
            return Err(TenantsError::KeyNotFound(crate::error::truncate_for_echo(
                key_id,
            )));
        }
        self.refresh(id).await?;
        tracing::info!(tenant = %id, key_id, "API key revoked");
        Ok(())
    }

    /// Issues a replacement for `key_id`; the old key keeps working for
    /// `grace_seconds`.
    pub async fn rotate_key(
        &self,
        id: &TenantId,
        key_id: &str,
        grace_seconds: u64,
    ) -> Result<IssuedKey, TenantsError> {
        const MAX_GRACE: u64 = 30 * 24 * 3600;
        if grace_seconds > MAX_GRACE {
            return Err(TenantsError::Invalid(vec![format!(
                "grace_seconds: at most {MAX_GRACE} (30 days)"
            )]));
        }
        let old = self
            .store
            .db()
            .list_keys(id)
            .await?
            .into_iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| TenantsError::KeyNotFound(crate::error::truncate_for_echo(key_id)))?;
        let grace_ms = i64::try_from(grace_seconds)
            .unwrap_or(0)
            .saturating_mul(1000);
        let until = rfc3339_from_ms(self.clock.now_ms().saturating_add(grace_ms));
        let (insert, plain) = self.mint(
            id,
            NewKey {
                name: old.name.clone(),
                expires_at: old.expires_at.clone(),
                scopes: old.scopes.clone(),
                limits: old.limits.clone(),
            },
        );
        let info = self
            .store
            .db()
            .rotate_key(id, key_id, &until, &insert)
            .await?
            .ok_or_else(|| TenantsError::KeyNotFound(crate::error::truncate_for_echo(key_id)))?;
        self.refresh(id).await?;
        tracing::info!(tenant = %id, old_key_id = key_id, new_key_id = %info.id, grace_seconds, "API key rotated");
        Ok(IssuedKey {
            info,
            key: plain.expose().to_owned(),
        })
    }
}

/// A dedicated tenant's `storage.url` must be a PostgreSQL URL (a SQLite
/// one lives under `data_dir/tenants/`, never where a caller says).
fn dedicated_url_problem(spec: &TenantSpec) -> Option<String> {
    let storage = spec.storage.as_ref()?;
    (storage.isolation.as_deref() == Some("dedicated")
        && storage.url.as_deref().is_some_and(|u| !is_postgres_url(u)))
    .then(|| {
        "storage.url: a postgres:// URL of the tenant's database (omit it for a \
         SQLite file under data_dir/tenants/)"
            .to_owned()
    })
}

/// The binding fields that decide where a tenant's records live.
fn placement_fields(
    storage: Option<&super::model::StorageBinding>,
) -> (bool, Option<String>, Option<String>) {
    storage.map_or((false, None, None), |s| {
        (
            s.isolation.as_deref() == Some("dedicated"),
            s.url
                .clone()
                .filter(|_| s.isolation.as_deref() == Some("dedicated")),
            s.database
                .clone()
                .filter(|_| s.isolation.as_deref() == Some("dedicated")),
        )
    })
}
