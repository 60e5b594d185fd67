//! The tenant registry: tenants as objects an operator
//! manages through the admin API, the CLI, or static configuration.
//!
//! - [`model`]: the tenant, its limits, quotas, security and OIDC settings;
//! - [`TenantRepo`]: storage (administrative, explicitly cross-tenant);
//! - [`registry::Registry`]: the in-memory view the request path reads
//!   (status, IP allow-list, key hashes), refreshed on every change;
//! - [`service::TenantAdmin`]: the operations both the HTTP API and the
//!   CLI perform;
//! - [`statics`]: tenants from `tenants:` / `TENANTD_TENANT_CONFIGS`;
//! - [`oidc`]: the rule that an OIDC issuer and client id pair belongs to
//!   one tenant.

pub mod admin_key;
pub mod cli;
pub mod http;
pub mod model;
pub mod moves;
pub mod oidc;
pub mod placement;
pub mod registry;
mod repo;
pub mod service;
pub mod statics;

use async_trait::async_trait;
use serde::Serialize;
use tenancy::TenantId;
use utoipa::ToSchema;

use crate::keys::{ApiKeyInfo, KeyInsert};
use crate::store::StoreError;

pub use model::{Tenant, TenantRow, TenantSpec, TenantState};
pub(crate) use repo::{is_retired, lock_registry, refuse_taken_oidc};

/// Why a tenant operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// No such tenant.
    #[error("Tenant '{0}' not found")]
    NotFound(String),
    /// No such key in this tenant.
    #[error("API key {0} not found")]
    KeyNotFound(String),
    /// The id is taken.
    #[error("Tenant '{0}' already exists")]
    AlreadyExists(String),
    /// The id belonged to a deleted tenant (409): its audit trail and
    /// usage are kept, so it is never given to another tenant.
    #[error(
        "Tenant id {0} belonged to a deleted tenant whose audit trail and usage are kept; choose another id"
    )]
    Retired(String),
    /// A move of this tenant is under way (409).
    #[error("Tenant '{0}' is being moved; try again when the move has finished")]
    Moving(String),
    /// Fields are invalid; every problem is listed.
    #[error("{}", .0.join("; "))]
    Invalid(Vec<String>),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What [`TenantRepo::insert_tenant`] did.
#[derive(Debug)]
pub enum Inserted {
    /// The tenant was created, with its first key when one was asked for.
    Created(Option<Box<ApiKeyInfo>>),
    /// Nothing was written: the id belonged to a deleted tenant, whose
    /// audit trail and usage are kept.
    Retired,
    /// Nothing was written: another tenant holds the row's OIDC issuer
    /// and client id ([`oidc`]).
    OidcTaken,
}

/// Filter and page of `GET /admin/tenants`.
#[derive(Debug, Clone, Default)]
pub struct TenantFilter {
    /// Only this status.
    pub status: Option<TenantState>,
    /// Only this plan.
    pub plan: Option<String>,
    /// Ids after this one (the cursor).
    pub after: Option<TenantId>,
    /// Page size.
    pub limit: u64,
}

/// What `DELETE /admin/tenants/{id}` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeletedCounts {
    /// Records removed.
    pub records: u64,
    /// Detection jobs removed.
    pub detection_jobs: u64,
    /// API keys removed.
    pub api_keys: u64,
}

/// What the request path needs of a tenant.
#[derive(Debug, Clone)]
pub struct DirectoryRow {
    /// Id.
    pub id: TenantId,
    /// Status.
    pub status: TenantState,
    /// CIDR allow-list as stored.
    pub allowed_ips: Vec<String>,
    /// OIDC issuer and client id, when the tenant has OIDC login: tokens
    /// from that issuer are verified against its JWKS.
    pub oidc: Option<(String, String)>,
    /// Plan name.
    pub plan: String,
    /// The tenant's own rate-limit overrides.
    pub limits: model::Limits,
    /// The tenant's own quota overrides.
    pub quotas: model::Quotas,
    /// Where its records live.
    pub storage: Option<model::StorageBinding>,
    /// A move's write freeze, until (unix ms).
    pub moving_until_ms: Option<i64>,
    /// The operator let a header alone reach this tenant although it holds
    /// credentials (`security.header_access`).
    pub header_access: bool,
}

/// Tenant storage. Administrative by nature (a tenant is not inside
/// itself); implemented once, on [`crate::store::Db`], and reached
/// through [`crate::store::AdminStore::db`].
#[async_trait]
pub trait TenantRepo: Send + Sync {
    /// Inserts a new tenant (and its first key) atomically; a taken id is
    /// [`StoreError::Conflict`], a taken OIDC pair [`Inserted::OidcTaken`].
    async fn insert_tenant(
        &self,
        row: &TenantRow,
        first_key: Option<&KeyInsert>,
    ) -> Result<Inserted, StoreError>;
    /// Creates or updates the static tenants of the configuration; refused
    /// ([`StoreError::Conflict`], naming both tenants) when one's OIDC pair
    /// is another's.
    async fn upsert_static_tenants(&self, rows: &[TenantRow]) -> Result<(), StoreError>;
    /// One tenant.
    async fn get_tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, StoreError>;
    /// A page of tenants in id order.
    async fn list_tenants(&self, filter: &TenantFilter) -> Result<Vec<TenantRow>, StoreError>;
    /// Writes a changed tenant; `false` if it is gone. An OIDC pair newly
    /// given to it that another tenant holds is [`StoreError::Conflict`]
    /// with [`oidc::TAKEN`].
    async fn update_tenant(&self, row: &TenantRow) -> Result<bool, StoreError>;
    /// Removes a tenant and all its data in one transaction.
    async fn delete_tenant(&self, id: &TenantId) -> Result<Option<DeletedCounts>, StoreError>;
    /// A counter bumped by every change to tenants or keys.
    async fn registry_version(&self) -> Result<i64, StoreError>;
    /// How many tenant ids are retired (deleted tenants whose trail is
    /// kept).
    async fn retired_count(&self) -> Result<i64, StoreError>;
    /// Status and allow-list of every tenant (or one).
    async fn load_directory(&self, id: Option<&TenantId>) -> Result<Vec<DirectoryRow>, StoreError>;
}
