//! The shape of one static tenant (the configuration's `tenants:` list and
//! `TENANTD_TENANT_CONFIGS`). Only the shape lives here: checking the list
//! and turning it into tenants is the tenants feature's
//! (its `statics` module), which the server and `config check` call.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Limits, Quotas, TenantState};

/// One static tenant: the flat configuration shape plus tenantd's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StaticTenant {
    /// Id (required).
    pub tenant_id: Option<String>,
    /// Display name (required).
    pub name: Option<String>,
    /// Contact address.
    pub email: Option<String>,
    /// Plan (default `free`).
    pub plan: Option<String>,
    /// `active` (default) or `suspended`.
    pub status: Option<TenantState>,
    /// A dedicated database URL.
    pub mongo_uri: Option<String>,
    /// The dedicated database's name.
    pub mongo_database: Option<String>,
    /// Redis address.
    pub redis_addr: Option<String>,
    /// Redis database 0..=15.
    pub redis_db: Option<u8>,
    /// Frontend URL.
    pub frontend_url: Option<String>,
    /// OIDC issuer; makes the other OIDC fields required.
    pub oidc_issuer: Option<String>,
    /// OIDC client id.
    pub oidc_client_id: Option<String>,
    /// OIDC client secret.
    pub oidc_client_secret: Option<String>,
    /// OIDC callback URL.
    pub oidc_redirect_url: Option<String>,
    /// OIDC scopes (space-separated).
    pub oidc_scopes: Option<String>,
    /// CIDR allow-list.
    pub allowed_ips: Vec<String>,
    /// Rate-limit overrides.
    pub limits: Limits,
    /// Quota overrides.
    pub quotas: Quotas,
    /// Feature flags.
    pub features: Map<String, Value>,
}
