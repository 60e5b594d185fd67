//! API keys (`{tenant}_sk_…`): issue, list, revoke, rotate, and
//! the authenticator that turns a presented key or JWT into a principal.
//!
//! Keys are stored only as HMAC-SHA-256 under the server's pepper
//! ([`tenancy::KeyHasher`]); the registry cache holds those hashes, so
//! authentication is a hash-map probe plus a constant-time comparison.

pub mod auth;
pub mod http;
pub mod jwks;
pub mod jwt;
mod model;
pub mod pepper;
mod repo;

pub(crate) use repo::insert_key_row;

use async_trait::async_trait;
use tenancy::{KeyHash, TenantId};

use crate::store::StoreError;
use crate::tenants::model::Limits;

pub use model::{ApiKeyInfo, IssueKey, IssuedKey, KeyRow, NewKey, RotateKey, new_key_id};

/// A key row to insert.
#[derive(Debug, Clone)]
pub struct KeyInsert {
    /// `key_…`.
    pub id: String,
    /// Label.
    pub name: String,
    /// Display prefix.
    pub prefix: String,
    /// HMAC of the key.
    pub hash: KeyHash,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Expiry.
    pub expires_at: Option<String>,
    /// The key's own rate limits (empty: only the tenant's apply).
    pub limits: Limits,
}

/// Key storage. Administrative: every method names its tenant explicitly;
/// implemented once, on [`crate::store::Db`], and reached through
/// [`crate::store::AdminStore::db`].
#[async_trait]
pub trait KeyRepo: Send + Sync {
    /// Adds a key to an existing tenant (`None` if the tenant is absent).
    /// With `max_live`, refuses ([`StoreError::QuotaExceeded`]) when the
    /// tenant already has that many live keys, checked in the insert's
    /// transaction so concurrent issues cannot overshoot.
    async fn insert_key(
        &self,
        tenant: &TenantId,
        key: &KeyInsert,
        max_live: Option<u64>,
    ) -> Result<Option<ApiKeyInfo>, StoreError>;
    /// Keys of `tenant` that still work or are inside a rotation grace.
    async fn list_keys(&self, tenant: &TenantId) -> Result<Vec<ApiKeyInfo>, StoreError>;
    /// Live keys of `tenant` (for quota checks).
    async fn count_live_keys(&self, tenant: &TenantId) -> Result<u64, StoreError>;
    /// Makes a key stop working at `at` (or earlier if already set);
    /// `false` if `tenant` has no such key.
    async fn revoke_key(&self, tenant: &TenantId, id: &str, at: &str) -> Result<bool, StoreError>;
    /// Issues `new` and makes `old_id` stop at `old_until`, atomically;
    /// `None` if `tenant` has no live key `old_id`.
    async fn rotate_key(
        &self,
        tenant: &TenantId,
        old_id: &str,
        old_until: &str,
        new: &KeyInsert,
    ) -> Result<Option<ApiKeyInfo>, StoreError>;
    /// Every key that may still authenticate, for the registry cache.
    async fn load_keys(&self, tenant: Option<&TenantId>) -> Result<Vec<KeyRow>, StoreError>;
    /// Records last use times (a batch, from the registry).
    async fn touch_keys(&self, uses: &[(TenantId, String, String)]) -> Result<(), StoreError>;
}
