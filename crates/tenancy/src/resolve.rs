//! Where a request's tenant comes from: the [`TenantResolver`] seam and the
//! built-in resolvers (header, query, body, static, chain).
//!
//! A resolver only *finds a candidate*; it does not judge it. Validation of
//! the id format, the allow-list and the default tenant are the policy's job
//! ([`crate::TenantPolicy`]), so a custom resolver can never skip them. This
//! is the difference from seed 000, whose body override bypassed the
//! allow-list.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::HeaderName;
use http::request::Parts;

use crate::error::TenancyError;

/// Where a tenant id was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TenantSource {
    /// The configured tenant header (default `X-Tenant-ID`).
    Header,
    /// The `tenant_id` query parameter.
    Query,
    /// The `tenant_id` field of the JSON body.
    Body,
    /// A constant configured at startup ([`StaticResolver`]).
    Static,
    /// A deployment's own resolver, named by it.
    Custom(&'static str),
    /// A verified credential (API key or JWT) named it.
    Credential,
    /// No source named one; the policy's `default_tenant` applies.
    Default,
    /// Not from a request: a background task acting for a stored row's
    /// tenant (a job runs in the tenant recorded on the job).
    Stored,
}

impl fmt::Display for TenantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header => f.write_str("header"),
            Self::Query => f.write_str("query parameter 'tenant_id'"),
            Self::Body => f.write_str("body field 'tenant_id'"),
            Self::Static => f.write_str("static configuration"),
            Self::Custom(name) => write!(f, "{name} resolver"),
            Self::Credential => f.write_str("credential"),
            Self::Default => f.write_str("default tenant"),
            Self::Stored => f.write_str("stored row"),
        }
    }
}

/// A tenant id some source proposed, not yet validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    value: String,
    source: TenantSource,
}

impl Candidate {
    /// Trims `raw`; `None` when nothing but whitespace is left, so that the
    /// next source is still tried (seed 000 stopped at an empty header).
    pub fn new(raw: &str, source: TenantSource) -> Option<Self> {
        let value = raw.trim();
        if value.is_empty() {
            None
        } else {
            Some(Self {
                value: value.to_owned(),
                source,
            })
        }
    }

    /// The trimmed value.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Where it was found.
    pub fn source(&self) -> TenantSource {
        self.source
    }
}

/// What a resolver may look at: the request head and, for endpoints whose
/// body model has a `tenant_id` field, that field once the body is parsed.
#[derive(Debug, Clone, Copy)]
pub struct ResolveInput<'a> {
    /// Method, URI, headers and extensions of the request.
    pub parts: &'a Parts,
    /// The body's `tenant_id`, when the endpoint has one and it was sent.
    pub body_tenant: Option<&'a str>,
}

/// Finds the tenant a request asks for.
///
/// One implementation is installed per process at startup (seed 003's
/// `set_tenant_resolver`), through `TenancyLayer::builder().resolver(..)`.
/// Deployments with their own identity source (subdomain, path prefix, mTLS
/// subject, a gateway header) implement this trait.
#[async_trait]
pub trait TenantResolver: Send + Sync + 'static {
    /// Returns the candidate tenant, `Ok(None)` when this resolver finds
    /// none, or an error when the request is contradictory.
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError>;
}

#[async_trait]
impl<T: TenantResolver + ?Sized> TenantResolver for Box<T> {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        (**self).resolve(input).await
    }
}

#[async_trait]
impl<T: TenantResolver + ?Sized> TenantResolver for Arc<T> {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        (**self).resolve(input).await
    }
}

/// Reads the tenant from a header (matched case-insensitively, as HTTP
/// header names are). A value that is not valid UTF-8 is kept (lossily) so
/// the policy refuses it as an invalid id rather than ignoring it.
#[derive(Debug, Clone)]
pub struct HeaderResolver {
    name: HeaderName,
}

impl HeaderResolver {
    /// Reads header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }

    /// The header this resolver reads.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }

    /// Synchronous core, shared with [`ChainResolver`]'s fast path.
    fn find(&self, parts: &Parts) -> Result<Option<Candidate>, TenancyError> {
        let mut found: Option<Candidate> = None;
        for value in parts.headers.get_all(&self.name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            if let Some(candidate) = Candidate::new(&text, TenantSource::Header) {
                match &found {
                    Some(first) if first.value != candidate.value => {
                        return Err(TenancyError::Conflict {
                            first: TenantSource::Header,
                            second: TenantSource::Header,
                        });
                    }
                    Some(_) => {}
                    None => found = Some(candidate),
                }
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl TenantResolver for HeaderResolver {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        self.find(input.parts)
    }
}

/// Reads the `tenant_id` query parameter (percent-decoded). Repeating it
/// with different values is a conflict, not a silent first-wins.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryResolver;

impl QueryResolver {
    fn find(parts: &Parts) -> Result<Option<Candidate>, TenancyError> {
        let Some(query) = parts.uri.query() else {
            return Ok(None);
        };
        let mut found: Option<Candidate> = None;
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key != "tenant_id" {
                continue;
            }
            if let Some(candidate) = Candidate::new(&value, TenantSource::Query) {
                match &found {
                    Some(first) if first.value != candidate.value => {
                        return Err(TenancyError::Conflict {
                            first: TenantSource::Query,
                            second: TenantSource::Query,
                        });
                    }
                    Some(_) => {}
                    None => found = Some(candidate),
                }
            }
        }
        Ok(found)
    }
}

#[async_trait]
impl TenantResolver for QueryResolver {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        Self::find(input.parts)
    }
}

/// Reads the JSON body's `tenant_id` (handed in by the body extractor).
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

/// Always proposes the same tenant: single-tenant deployments behind a
/// gateway that already routed the request, and tests.
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

/// Asks several resolvers in order. The first candidate found is the
/// answer, but every later source is still read: one that names a
/// *different* tenant makes the request a 400 `tenant_conflict`.
pub struct ChainResolver {
    links: Vec<Link>,
}

/// The header/query links are evaluated without a boxed future: they are
/// on every request's path.
enum Link {
    Header(HeaderResolver),
    Query,
    Body,
    Dyn(Box<dyn TenantResolver>),
}

impl ChainResolver {
    /// An empty chain (finds nothing).
    pub fn new() -> Self {
        Self { links: Vec::new() }
    }

    /// The default chain of DESIGN.md section 2: header, query, body.
    pub fn standard(header: HeaderName) -> Self {
        Self::new().with_header(header).with_query().with_body()
    }

    /// Appends a header resolver.
    pub fn with_header(mut self, name: HeaderName) -> Self {
        self.links.push(Link::Header(HeaderResolver::new(name)));
        self
    }

    /// Appends the query resolver.
    pub fn with_query(mut self) -> Self {
        self.links.push(Link::Query);
        self
    }

    /// Appends the body resolver.
    pub fn with_body(mut self) -> Self {
        self.links.push(Link::Body);
        self
    }

    /// Appends any resolver.
    pub fn with(mut self, resolver: impl TenantResolver) -> Self {
        self.links.push(Link::Dyn(Box::new(resolver)));
        self
    }
}

impl Default for ChainResolver {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ChainResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainResolver")
            .field("links", &self.links.len())
            .finish()
    }
}

#[async_trait]
impl TenantResolver for ChainResolver {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        let mut found: Option<Candidate> = None;
        for link in &self.links {
            let next = match link {
                Link::Header(h) => h.find(input.parts)?,
                Link::Query => QueryResolver::find(input.parts)?,
                Link::Body => input
                    .body_tenant
                    .and_then(|v| Candidate::new(v, TenantSource::Body)),
                Link::Dyn(r) => r.resolve(input).await?,
            };
            match (&found, next) {
                (_, None) => {}
                (None, Some(c)) => found = Some(c),
                (Some(first), Some(c)) if first.value != c.value => {
                    return Err(TenancyError::Conflict {
                        first: first.source,
                        second: c.source,
                    });
                }
                (Some(_), Some(_)) => {}
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    async fn chain(parts: &Parts, body: Option<&str>) -> Result<Option<Candidate>, TenancyError> {
        let chain = ChainResolver::standard(HeaderName::from_static("x-tenant-id"));
        chain
            .resolve(&ResolveInput {
                parts,
                body_tenant: body,
            })
            .await
    }

    #[tokio::test]
    async fn header_is_case_insensitive_and_trimmed() {
        let p = parts("/", &[("X-TENANT-ID", "  acme ")]);
        let c = chain(&p, None).await.expect("ok").expect("found");
        assert_eq!((c.value(), c.source()), ("acme", TenantSource::Header));
    }

    #[tokio::test]
    async fn whitespace_header_falls_through_to_query_and_body() {
        let p = parts("/?tenant_id=q", &[("x-tenant-id", "   ")]);
        let c = chain(&p, None).await.expect("ok").expect("found");
        assert_eq!((c.value(), c.source()), ("q", TenantSource::Query));
        let p = parts("/?tenant_id=%20", &[("x-tenant-id", "\t")]);
        let c = chain(&p, Some("b")).await.expect("ok").expect("found");
        assert_eq!((c.value(), c.source()), ("b", TenantSource::Body));
        assert_eq!(chain(&p, Some("  ")).await.expect("ok"), None);
    }

    #[tokio::test]
    async fn disagreeing_sources_conflict_and_name_both() {
        let p = parts("/?tenant_id=b", &[("x-tenant-id", "a")]);
        let err = chain(&p, None).await.expect_err("conflict");
        assert_eq!(
            err,
            TenancyError::Conflict {
                first: TenantSource::Header,
                second: TenantSource::Query
            }
        );
        assert!(err.to_string().contains("header") && err.to_string().contains("query"));
        let p = parts("/", &[("x-tenant-id", "a")]);
        assert!(chain(&p, Some("b")).await.is_err());
        let p = parts("/?tenant_id=a&tenant_id=b", &[]);
        assert!(chain(&p, None).await.is_err());
    }

    #[tokio::test]
    async fn agreeing_sources_are_fine() {
        let p = parts("/?tenant_id=a", &[("x-tenant-id", " a")]);
        let c = chain(&p, Some("a ")).await.expect("ok").expect("found");
        assert_eq!(c.source(), TenantSource::Header);
    }

    #[tokio::test]
    async fn query_is_percent_decoded() {
        let p = parts("/?tenant_id=a%2Fb", &[]);
        let c = chain(&p, None).await.expect("ok").expect("found");
        assert_eq!(c.value(), "a/b");
    }

    #[tokio::test]
    async fn static_and_custom_links() {
        let p = parts("/", &[]);
        let chain = ChainResolver::new().with(StaticResolver::new("fixed"));
        let c = chain
            .resolve(&ResolveInput {
                parts: &p,
                body_tenant: None,
            })
            .await
            .expect("ok")
            .expect("found");
        assert_eq!((c.value(), c.source()), ("fixed", TenantSource::Static));
    }
}
