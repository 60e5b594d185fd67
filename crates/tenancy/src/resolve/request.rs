//! Resolvers that read what the client sent with the request: a header, the
//! query string, the JSON body; and the constant [`StaticResolver`].

use async_trait::async_trait;
use http::HeaderName;
use http::request::Parts;

use super::{Candidate, ResolveInput, TenantResolver, TenantSource, merge_same_source};
use crate::error::TenancyError;
use crate::policy::PolicyError;

/// The header [`HeaderResolver::default`] reads.
const DEFAULT_HEADER: &str = "X-Tenant-ID";

/// Reads the tenant from a header (matched case-insensitively, as HTTP
/// header names are). A value that is not valid UTF-8 is kept (lossily) so
/// the policy refuses it as an invalid id rather than ignoring it.
#[derive(Debug, Clone)]
pub struct HeaderResolver {
    name: HeaderName,
    /// The name as the service spelled it, for messages to clients.
    label: Box<str>,
}

impl HeaderResolver {
    /// Reads header `name` (surrounding whitespace ignored); an error when
    /// it is not a legal header name.
    pub fn new(name: &str) -> Result<Self, PolicyError> {
        let label = name.trim();
        let name =
            HeaderName::try_from(label).map_err(|_| PolicyError::InvalidHeader(name.to_owned()))?;
        Ok(Self {
            name,
            label: label.into(),
        })
    }

    /// The header this resolver reads.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Synchronous core, shared with [`super::ChainResolver`]'s fast path.
    pub(super) fn find(&self, parts: &Parts) -> Result<Option<Candidate>, TenancyError> {
        let mut found: Option<Candidate> = None;
        for value in parts.headers.get_all(&self.name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            if let Some(candidate) = Candidate::new(&text, TenantSource::Header) {
                merge_same_source(&mut found, candidate)?;
            }
        }
        Ok(found)
    }

    pub(super) fn describe(&self) -> String {
        format!("header '{}'", self.label)
    }
}

impl Default for HeaderResolver {
    /// Reads `X-Tenant-ID`.
    fn default() -> Self {
        Self {
            name: HeaderName::from_static("x-tenant-id"),
            label: DEFAULT_HEADER.into(),
        }
    }
}

#[async_trait]
impl TenantResolver for HeaderResolver {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        self.find(input.parts)
    }

    fn hint(&self) -> Option<String> {
        Some(self.describe())
    }
}

/// Reads the `tenant_id` query parameter (percent-decoded). Repeating it
/// with different values is a conflict, not a silent first-wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryResolver;

impl QueryResolver {
    pub(super) fn find(parts: &Parts) -> Result<Option<Candidate>, TenancyError> {
        let Some(query) = parts.uri.query() else {
            return Ok(None);
        };
        let mut found: Option<Candidate> = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key != "tenant_id" {
                continue;
            }
            if let Some(candidate) = Candidate::new(&value, TenantSource::Query) {
                merge_same_source(&mut found, candidate)?;
            }
        }
        Ok(found)
    }

    pub(super) const HINT: &'static str = "query parameter 'tenant_id'";
}

#[async_trait]
impl TenantResolver for QueryResolver {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        Self::find(input.parts)
    }

    fn hint(&self) -> Option<String> {
        Some(Self::HINT.to_owned())
    }
}

/// Reads the JSON body's `tenant_id`, which the layer hands in on the
/// routes declared with [`crate::TenancyLayerBuilder::body_tenant_routes`]
/// (on every other route it finds nothing).
#[derive(Debug, Clone, Copy, Default)]
pub struct BodyResolver;

#[async_trait]
impl TenantResolver for BodyResolver {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        Ok(input
            .body_tenant
            .and_then(|value| Candidate::new(value, TenantSource::Body)))
    }
}

/// Always proposes the same tenant: a deployment behind a gateway that
/// already routed the request, and tests.
#[derive(Debug, Clone)]
pub struct StaticResolver {
    value: String,
}

impl StaticResolver {
    /// Proposes `tenant` for every request (still checked by the policy).
    pub fn new(tenant: impl Into<String>) -> Self {
        Self {
            value: tenant.into(),
        }
    }
}

#[async_trait]
impl TenantResolver for StaticResolver {
    async fn resolve(&self, _input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        Ok(Candidate::new(&self.value, TenantSource::Static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_name_is_checked_and_keeps_its_spelling() {
        assert!(matches!(
            HeaderResolver::new("X Tenant"),
            Err(PolicyError::InvalidHeader(name)) if name == "X Tenant"
        ));
        let org = HeaderResolver::new(" X-Org ").expect("valid");
        assert_eq!(org.name().as_str(), "x-org");
        assert_eq!(org.hint().as_deref(), Some("header 'X-Org'"));
        let default = HeaderResolver::default();
        assert_eq!(default.name().as_str(), "x-tenant-id");
        assert_eq!(default.hint().as_deref(), Some("header 'X-Tenant-ID'"));
    }
}
