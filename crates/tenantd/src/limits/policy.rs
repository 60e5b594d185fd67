//! The rate-limit policy of tenantd: a tenant's windows come from its
//! plan and overrides (held by the registry); an API key that sets its own
//! limits gets a second bucket inside its tenant's.

use std::sync::Arc;

use tenancy::ratelimit::{Bucket, LimitPolicy};
use tenancy::{PrincipalKind, TenantContext};

use crate::tenants::registry::Registry;

/// [`LimitPolicy`] backed by the registry cache (no I/O per request).
#[derive(Debug, Clone)]
pub struct RegistryLimits {
    registry: Arc<Registry>,
}

impl RegistryLimits {
    /// Limits as the registry knows them.
    pub fn new(registry: Arc<Registry>) -> Self {
        Self { registry }
    }
}

impl LimitPolicy for RegistryLimits {
    fn buckets(&self, ctx: &TenantContext) -> Vec<Bucket> {
        let tenant = ctx.tenant_id();
        let settings = self.registry.settings(tenant);
        let mut buckets = Vec::with_capacity(2);
        if !settings.windows.is_empty() {
            buckets.push(Bucket::tenant(settings.windows.clone()));
        }
        if let Some(principal) = ctx.principal()
            && let PrincipalKind::ApiKey { key_id } = principal.kind()
            && let Some(windows) = self.registry.key_windows(tenant, key_id)
        {
            buckets.push(Bucket::key(key_id, windows.to_vec()));
        }
        buckets
    }
}
