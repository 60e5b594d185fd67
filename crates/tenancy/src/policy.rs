//! [`TenantPolicy`]: the operator's rules for which tenant a request runs
//! in (seed 000's `tenant:` section), and [`Policy`], its checked form.

use std::collections::HashSet;

use http::HeaderName;
use serde::{Deserialize, Serialize};

use crate::context::TenantContext;
use crate::error::TenancyError;
use crate::id::TenantId;
use crate::resolve::{Candidate, TenantSource};

/// Seed 000's tenant configuration, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantPolicy {
    /// Whether multi-tenancy is on. Off: every request runs in
    /// `default_tenant` and tenant inputs are ignored (backward compatible).
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
    /// Whether the installed [`crate::TenantDirectory`] is consulted
    /// (unknown → 404, suspended → 403, IP allow-lists). Unset: the
    /// directory decides (tenantd: once any tenant is registered).
    pub registry: Option<bool>,
}

/// The name of the tenant everything belongs to by default.
pub const DEFAULT_TENANT: &str = "default";

impl Default for TenantPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            // "default" matches the id rule; covered by the unit tests.
            default_tenant: TenantId::new(DEFAULT_TENANT).unwrap_or_else(|_| unreachable!()),
            tenant_header: "X-Tenant-ID".to_owned(),
            tenant_required: true,
            allowed_tenants: Vec::new(),
            registry: None,
        }
    }
}

/// A [`TenantPolicy`] that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `tenant_header` is not a legal HTTP header name.
    #[error("tenant.tenant_header: '{0}' is not a valid HTTP header name")]
    InvalidHeader(String),
    /// Requests without a tenant would land in a tenant the allow-list
    /// refuses: every such request would fail, which is never intended.
    #[error(
        "tenant.default_tenant: '{0}' is not in tenant.allowed_tenants, but tenant_required is false so requests without a tenant would use it"
    )]
    DefaultNotAllowed(String),
}

/// A validated policy, ready to decide requests.
#[derive(Debug, Clone)]
pub struct Policy {
    config: TenantPolicy,
    header: HeaderName,
    allowed: HashSet<TenantId>,
    required_error: TenancyError,
    default_context: TenantContext,
}

impl Policy {
    /// Checks `config` and prepares the lookups it needs.
    pub fn new(config: TenantPolicy) -> Result<Self, PolicyError> {
        let header = HeaderName::try_from(config.tenant_header.trim())
            .map_err(|_| PolicyError::InvalidHeader(config.tenant_header.clone()))?;
        let allowed: HashSet<TenantId> = config.allowed_tenants.iter().cloned().collect();
        if config.enabled
            && !config.tenant_required
            && !allowed.is_empty()
            && !allowed.contains(&config.default_tenant)
        {
            return Err(PolicyError::DefaultNotAllowed(
                config.default_tenant.to_string(),
            ));
        }
        let required_error = TenancyError::Required {
            header: config.tenant_header.trim().to_owned(),
        };
        let default_context =
            TenantContext::new(config.default_tenant.clone(), TenantSource::Default);
        Ok(Self {
            config,
            header,
            allowed,
            required_error,
            default_context,
        })
    }

    /// The configuration this policy was built from.
    pub fn config(&self) -> &TenantPolicy {
        &self.config
    }

    /// The parsed tenant header name.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Whether multi-tenancy is on.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The context of a request that runs in the default tenant.
    pub fn default_context(&self) -> TenantContext {
        self.default_context.clone()
    }

    /// Decides the tenant of a request from the candidate its resolver
    /// found (DESIGN.md section 2, step 5).
    pub fn decide(&self, candidate: Option<Candidate>) -> Result<TenantContext, TenancyError> {
        if !self.config.enabled {
            return Ok(self.default_context());
        }
        let Some(candidate) = candidate else {
            return if self.config.tenant_required {
                Err(self.required_error.clone())
            } else {
                Ok(self.default_context())
            };
        };
        let source = candidate.source();
        let tenant = TenantId::new(candidate.value())
            .map_err(|_| TenancyError::InvalidTenantId { from: source })?;
        if !self.allowed.is_empty() && !self.allowed.contains(&tenant) {
            return Err(TenancyError::NotAllowed {
                tenant: tenant.to_string(),
            });
        }
        Ok(TenantContext::new(tenant, source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> TenantId {
        TenantId::new(s).expect("valid test id")
    }

    fn policy(enabled: bool, required: bool, allowed: &[&str]) -> Policy {
        Policy::new(TenantPolicy {
            enabled,
            default_tenant: id("default"),
            tenant_header: "X-Tenant-ID".into(),
            tenant_required: required,
            allowed_tenants: allowed.iter().map(|s| id(s)).collect(),
            registry: None,
        })
        .expect("valid policy")
    }

    fn cand(v: &str, s: TenantSource) -> Option<Candidate> {
        Candidate::new(v, s)
    }

    /// The full matrix: enabled × required × allow-list × source × value
    /// (absent, whitespace, valid allowed, valid not allowed, invalid).
    #[test]
    fn decision_matrix() {
        let sources = [
            TenantSource::Header,
            TenantSource::Query,
            TenantSource::Body,
        ];
        let values: [&str; 6] = ["", "   ", "a", " a\t", "z", "a/b"];
        for enabled in [false, true] {
            for required in [false, true] {
                for allowed in [&[][..], &["a", "default"][..]] {
                    let p = policy(enabled, required, allowed);
                    for source in sources {
                        for value in values {
                            let got = p.decide(cand(value, source));
                            let trimmed = value.trim();
                            let expected: Result<(&str, TenantSource), &str> = if !enabled {
                                Ok(("default", TenantSource::Default))
                            } else if trimmed.is_empty() {
                                if required {
                                    Err("tenant_required")
                                } else {
                                    Ok(("default", TenantSource::Default))
                                }
                            } else if trimmed == "a/b" {
                                Err("invalid_tenant_id")
                            } else if !allowed.is_empty() && !allowed.contains(&trimmed) {
                                Err("tenant_not_allowed")
                            } else {
                                Ok((trimmed, source))
                            };
                            let got = got
                                .as_ref()
                                .map(|c| (c.tenant_id().as_str(), c.source()))
                                .map_err(|e| e.code());
                            assert_eq!(
                                got, expected,
                                "enabled={enabled} required={required} allowed={allowed:?} source={source:?} value={value:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn required_message_names_the_configured_header() {
        let p = Policy::new(TenantPolicy {
            enabled: true,
            tenant_header: "X-Custom-Tenant".into(),
            ..TenantPolicy::default()
        })
        .expect("valid");
        let err = p.decide(None).expect_err("required");
        assert_eq!(
            err.to_string(),
            "Tenant ID required. Use header 'X-Custom-Tenant' or query parameter 'tenant_id'"
        );
    }

    #[test]
    fn not_allowed_message_does_not_disclose_the_list() {
        let p = policy(true, true, &["secret-customer"]);
        let err = p
            .decide(cand("intruder", TenantSource::Header))
            .expect_err("refused");
        assert_eq!(err.to_string(), "Tenant 'intruder' not authorized");
        assert_eq!(err.status(), http::StatusCode::FORBIDDEN);
    }

    #[test]
    fn invalid_header_name_and_unreachable_default_are_config_errors() {
        let bad = TenantPolicy {
            tenant_header: "X Tenant".into(),
            ..TenantPolicy::default()
        };
        assert!(matches!(
            Policy::new(bad),
            Err(PolicyError::InvalidHeader(_))
        ));
        let unreachable_default = TenantPolicy {
            enabled: true,
            tenant_required: false,
            allowed_tenants: vec![id("a")],
            ..TenantPolicy::default()
        };
        assert!(matches!(
            Policy::new(unreachable_default),
            Err(PolicyError::DefaultNotAllowed(_))
        ));
    }

    #[test]
    fn defaults_match_seed_000() {
        let d = TenantPolicy::default();
        assert!(!d.enabled);
        assert_eq!(d.default_tenant.as_str(), "default");
        assert_eq!(d.tenant_header, "X-Tenant-ID");
        assert!(d.tenant_required);
        assert!(d.allowed_tenants.is_empty());
    }
}
