//! The `tenant:` section: tenantd's multi-tenancy switch and rules, and
//! their translation into the tenancy library's policy and resolver.
//!
//! tenantd keeps multi-tenancy off by default (every request in
//! `default_tenant`, as before the switch existed); the library has no
//! default policy, so the choice is made here, explicitly.

use serde::{Deserialize, Serialize};
use tenancy::{ChainResolver, HeaderResolver, TenantId, TenantPolicy};

/// The name of the tenant everything belongs to by default.
pub const DEFAULT_TENANT: &str = "default";

/// The `tenant:` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantConfig {
    /// Whether multi-tenancy is on. Off: every request runs in
    /// `default_tenant` and tenant inputs are ignored.
    pub enabled: bool,
    /// The tenant of requests that name none (when not required), and of
    /// everything while multi-tenancy is off.
    pub default_tenant: TenantId,
    /// Header the tenant is read from (matched case-insensitively).
    pub tenant_header: String,
    /// Whether a request must name a tenant (400 `tenant_required` if not).
    pub tenant_required: bool,
    /// Tenants that may be used; empty means all.
    pub allowed_tenants: Vec<TenantId>,
    /// Whether the tenant registry is consulted (unknown → 404, suspended
    /// → 403, IP allow-lists). Unset: once any tenant is registered.
    pub registry: Option<bool>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            // "default" matches the id rule; covered by the unit test below.
            default_tenant: TenantId::new(DEFAULT_TENANT).unwrap_or_else(|_| unreachable!()),
            tenant_header: "X-Tenant-ID".to_owned(),
            tenant_required: true,
            allowed_tenants: Vec::new(),
            registry: None,
        }
    }
}

impl TenantConfig {
    /// The library policy these settings describe.
    pub fn policy(&self) -> TenantPolicy {
        let mode = match (self.enabled, self.tenant_required) {
            (false, _) => TenantPolicy::single(self.default_tenant.clone()),
            (true, true) => TenantPolicy::required(),
            (true, false) => TenantPolicy::optional(self.default_tenant.clone()),
        };
        mode.allow(self.allowed_tenants.iter().cloned())
    }

    /// The standard resolver (the configured header, the query, declared
    /// routes' bodies).
    pub fn resolver(&self) -> Result<ChainResolver, tenancy::PolicyError> {
        Ok(ChainResolver::standard(HeaderResolver::new(
            &self.tenant_header,
        )?))
    }

    /// The section's problem, if any, in the configuration's words.
    pub(super) fn problem(&self) -> Option<String> {
        if let Err(e) = HeaderResolver::new(&self.tenant_header) {
            return Some(format!("tenant.tenant_header: {e}"));
        }
        self.policy().check().err().map(|_| {
            format!(
                "tenant.default_tenant: '{}' is not in tenant.allowed_tenants, but tenant_required is false so requests without a tenant would use it",
                self.default_tenant
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_keep_multi_tenancy_off() {
        let d = TenantConfig::default();
        assert!(!d.enabled);
        assert_eq!(d.default_tenant.as_str(), DEFAULT_TENANT);
        assert_eq!(d.tenant_header, "X-Tenant-ID");
        assert!(d.tenant_required);
        assert!(d.allowed_tenants.is_empty());
        let policy = d.policy();
        assert!(!policy.is_multi_tenant());
        assert_eq!(
            policy.default_tenant().map(TenantId::as_str),
            Some(DEFAULT_TENANT)
        );
    }

    #[test]
    fn the_switch_and_required_choose_the_policy() {
        let on = TenantConfig {
            enabled: true,
            ..TenantConfig::default()
        };
        assert!(on.policy().is_multi_tenant());
        assert_eq!(on.policy().default_tenant(), None);
        let optional = TenantConfig {
            tenant_required: false,
            ..on
        };
        assert_eq!(
            optional.policy().default_tenant().map(TenantId::as_str),
            Some(DEFAULT_TENANT)
        );
    }

    #[test]
    fn problems_name_the_key() {
        let bad_header = TenantConfig {
            tenant_header: "X Tenant".into(),
            ..TenantConfig::default()
        };
        assert!(
            bad_header
                .problem()
                .is_some_and(|p| p.starts_with("tenant.tenant_header"))
        );
        let unreachable_default = TenantConfig {
            enabled: true,
            tenant_required: false,
            allowed_tenants: vec!["a".parse().expect("valid")],
            ..TenantConfig::default()
        };
        assert!(
            unreachable_default
                .problem()
                .is_some_and(|p| p.starts_with("tenant.default_tenant"))
        );
        assert_eq!(TenantConfig::default().problem(), None);
    }
}
