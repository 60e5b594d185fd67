//! [`TenantPolicy`]: the service's rules for which tenant a request runs
//! in, chosen explicitly (there is no default policy), and `Policy`, its
//! checked form inside the layer.

use std::collections::HashSet;

use crate::context::TenantContext;
use crate::error::TenancyError;
use crate::id::TenantId;
use crate::resolve::{Candidate, TenantSource};

/// What the layer does with the tenant a request names (or does not).
///
/// There is deliberately no `Default`: a service states whether it needs a
/// tenant on every request, falls back to one, or serves a single tenant,
/// so that installing the layer never quietly puts every request in one
/// tenant.
///
/// ```
/// use tower_tenancy::{TenantId, TenantPolicy};
///
/// // Every request names its tenant (400 `tenant_required` otherwise),
/// // and only these two exist.
/// let strict = TenantPolicy::required()
///     .allow(["acme".parse::<TenantId>()?, "globex".parse()?]);
/// assert!(strict.is_multi_tenant());
///
/// // Requests naming none run in `public`.
/// let lenient = TenantPolicy::optional("public".parse()?);
///
/// // Multi-tenancy off: everything runs in `main`, tenant inputs are ignored.
/// let single = TenantPolicy::single("main".parse()?);
/// assert!(!single.is_multi_tenant());
/// # Ok::<(), tower_tenancy::InvalidTenantId>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantPolicy {
    mode: Mode,
    allowed: Vec<TenantId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    Required,
    Optional(TenantId),
    Single(TenantId),
}

impl TenantPolicy {
    /// Every request must name a tenant; one that names none is refused
    /// (400 `tenant_required`).
    pub fn required() -> Self {
        Self {
            mode: Mode::Required,
            allowed: Vec::new(),
        }
    }

    /// A request that names no tenant runs in `default`.
    pub fn optional(default: TenantId) -> Self {
        Self {
            mode: Mode::Optional(default),
            allowed: Vec::new(),
        }
    }

    /// Multi-tenancy off: every request runs in `tenant`, and tenant
    /// inputs (headers, credentials' tenants, bodies) are not looked at.
    /// The allow-list does not apply.
    pub fn single(tenant: TenantId) -> Self {
        Self {
            mode: Mode::Single(tenant),
            allowed: Vec::new(),
        }
    }

    /// Only these tenants may be used (403 `tenant_not_allowed` for any
    /// other; the list is never disclosed). Empty, the default, allows all.
    pub fn allow(mut self, tenants: impl IntoIterator<Item = TenantId>) -> Self {
        self.allowed = tenants.into_iter().collect();
        self
    }

    /// Whether requests choose their tenant (false for [`Self::single`]).
    pub fn is_multi_tenant(&self) -> bool {
        !matches!(self.mode, Mode::Single(_))
    }

    /// The tenant of requests that name none, if they have one.
    pub fn default_tenant(&self) -> Option<&TenantId> {
        match &self.mode {
            Mode::Required => None,
            Mode::Optional(tenant) | Mode::Single(tenant) => Some(tenant),
        }
    }

    /// The allow-list (empty: every tenant).
    pub fn allowed(&self) -> &[TenantId] {
        &self.allowed
    }

    /// Checks that the policy can be applied. The layer builder runs it;
    /// a configuration loader can call it to report the problem early.
    pub fn check(&self) -> Result<(), PolicyError> {
        match &self.mode {
            Mode::Optional(default)
                if !self.allowed.is_empty() && !self.allowed.contains(default) =>
            {
                Err(PolicyError::DefaultNotAllowed(default.to_string()))
            }
            _ => Ok(()),
        }
    }
}

/// A configuration the layer cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// A tenant header name is not a legal HTTP header name.
    #[error("'{0}' is not a valid HTTP header name")]
    InvalidHeader(String),
    /// Requests without a tenant would land in a tenant the allow-list
    /// refuses: every such request would fail, which is never intended.
    #[error(
        "the default tenant '{0}' is not in the allow-list, so every request that names no tenant would be refused"
    )]
    DefaultNotAllowed(String),
    /// Credentials are required, but the policy serves a single tenant,
    /// where credentials are not looked at: the combination would serve
    /// without authentication.
    #[error(
        "credentials are required, but a single-tenant policy does not look at them (credentials select the tenant)"
    )]
    CredentialsWithoutTenants,
    /// A [`crate::SubdomainResolver`] base is not a DNS name.
    #[error("'{0}' is not a domain name (letters, digits, '-' and dots, no port)")]
    InvalidDomain(String),
    /// A [`crate::PathPrefixResolver`] prefix is not plain path segments.
    #[error("'{0}' is not a path prefix (segments of letters, digits, '-', '_', '.', '~')")]
    InvalidPathPrefix(String),
}

/// A checked policy, ready to decide requests: the one place a request
/// context is made from a candidate.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    config: TenantPolicy,
    allowed: HashSet<TenantId>,
    required_error: TenancyError,
    default_context: Option<TenantContext>,
}

impl Policy {
    /// Checks `config`; `hint` says where clients name a tenant (from the
    /// installed resolver), for the `tenant_required` message.
    pub(crate) fn new(config: TenantPolicy, hint: Option<String>) -> Result<Self, PolicyError> {
        config.check()?;
        let allowed = config.allowed.iter().cloned().collect();
        let default_context = config
            .default_tenant()
            .map(|tenant| TenantContext::new(tenant.clone(), TenantSource::Default));
        Ok(Self {
            config,
            allowed,
            required_error: TenancyError::Required {
                hint: hint.unwrap_or_default(),
            },
            default_context,
        })
    }

    pub(crate) fn config(&self) -> &TenantPolicy {
        &self.config
    }

    /// Whether requests choose their tenant.
    pub(crate) fn enabled(&self) -> bool {
        self.config.is_multi_tenant()
    }

    /// The context of every request when the policy serves one tenant.
    pub(crate) fn single_context(&self) -> Option<TenantContext> {
        match self.config.mode {
            Mode::Single(_) => self.default_context.clone(),
            Mode::Required | Mode::Optional(_) => None,
        }
    }

    /// Decides the tenant of a request from the candidate its resolver
    /// found: validation of the id, the default, the allow-list.
    pub(crate) fn decide(
        &self,
        candidate: Option<Candidate>,
    ) -> Result<TenantContext, TenancyError> {
        if let Some(single) = self.single_context() {
            return Ok(single);
        }
        let Some(candidate) = candidate else {
            return self
                .default_context
                .clone()
                .ok_or_else(|| self.required_error.clone());
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

    const HINT: &str = "header 'X-Tenant-ID' or query parameter 'tenant_id'";

    fn id(s: &str) -> TenantId {
        TenantId::new(s).expect("valid test id")
    }

    fn policy(enabled: bool, required: bool, allowed: &[&str]) -> Policy {
        let config = match (enabled, required) {
            (false, _) => TenantPolicy::single(id("default")),
            (true, true) => TenantPolicy::required(),
            (true, false) => TenantPolicy::optional(id("default")),
        };
        Policy::new(
            config.allow(allowed.iter().map(|s| id(s))),
            Some(HINT.to_owned()),
        )
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
            TenantSource::Host,
            TenantSource::Path,
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
    fn required_message_names_where_to_put_the_tenant() {
        let p = Policy::new(
            TenantPolicy::required(),
            Some("header 'X-Custom-Tenant' or query parameter 'tenant_id'".to_owned()),
        )
        .expect("valid");
        let err = p.decide(None).expect_err("required");
        assert_eq!(
            err.to_string(),
            "Tenant ID required. Use header 'X-Custom-Tenant' or query parameter 'tenant_id'"
        );
        let quiet = Policy::new(TenantPolicy::required(), None).expect("valid");
        assert_eq!(
            quiet.decide(None).expect_err("required").to_string(),
            "Tenant ID required"
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
    fn an_unreachable_default_is_a_config_error() {
        let unreachable_default = TenantPolicy::optional(id("default")).allow([id("a")]);
        assert!(matches!(
            unreachable_default.check(),
            Err(PolicyError::DefaultNotAllowed(_))
        ));
        assert!(Policy::new(unreachable_default, None).is_err());
        // Required and single policies have no default to reach.
        assert!(TenantPolicy::required().allow([id("a")]).check().is_ok());
        assert!(
            TenantPolicy::single(id("default"))
                .allow([id("a")])
                .check()
                .is_ok()
        );
    }

    #[test]
    fn each_constructor_states_its_mode() {
        let required = TenantPolicy::required();
        assert!(required.is_multi_tenant());
        assert_eq!(required.default_tenant(), None);
        assert!(required.allowed().is_empty());
        let optional = TenantPolicy::optional(id("public"));
        assert!(optional.is_multi_tenant());
        assert_eq!(optional.default_tenant(), Some(&id("public")));
        let single = TenantPolicy::single(id("main"));
        assert!(!single.is_multi_tenant());
        assert_eq!(single.default_tenant(), Some(&id("main")));
    }
}
