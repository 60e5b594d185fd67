//! [`ChainResolver`]: several sources, one answer, and a 400 when they
//! disagree.

use std::fmt;

use async_trait::async_trait;

use super::request::{HeaderResolver, QueryResolver};
use super::{Candidate, ResolveInput, TenantResolver, TenantSource};
use crate::error::TenancyError;

/// Asks several resolvers in order. The first candidate found is the
/// answer, but every later source is still read: one that names a
/// *different* tenant makes the request a 400 `tenant_conflict`, so a
/// client cannot send one tenant to the part of a system that reads the
/// header and another to the part that reads the body.
///
/// ```
/// use tower_tenancy::{ChainResolver, HeaderResolver, SubdomainResolver};
///
/// // The host name first; a header may repeat it, never contradict it.
/// let resolver = ChainResolver::new()
///     .with(SubdomainResolver::new("example.com")?)
///     .with_header(HeaderResolver::new("X-Org")?);
/// # Ok::<(), tower_tenancy::PolicyError>(())
/// ```
pub struct ChainResolver {
    links: Vec<Link>,
}

/// The header/query/body links are evaluated without a boxed future: they
/// are on every request's path.
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

    /// The layer's default chain: `header`, then the `tenant_id` query
    /// parameter, then the JSON body's `tenant_id` on declared routes.
    pub fn standard(header: HeaderResolver) -> Self {
        Self::new().with_header(header).with_query().with_body()
    }

    /// Appends a header resolver.
    pub fn with_header(mut self, header: HeaderResolver) -> Self {
        self.links.push(Link::Header(header));
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
                (Some(first), Some(c)) if first.value() != c.value() => {
                    return Err(TenancyError::Conflict {
                        first: first.source(),
                        second: c.source(),
                    });
                }
                (Some(_), Some(_)) => {}
            }
        }
        Ok(found)
    }

    /// The links' hints joined with "or" (the body is left out: only
    /// declared routes read it).
    fn hint(&self) -> Option<String> {
        let hints: Vec<String> = self
            .links
            .iter()
            .filter_map(|link| match link {
                Link::Header(h) => Some(h.describe()),
                Link::Query => Some(QueryResolver::HINT.to_owned()),
                Link::Body => None,
                Link::Dyn(r) => r.hint(),
            })
            .collect();
        (!hints.is_empty()).then(|| hints.join(" or "))
    }

    /// The first link that reads the path decides the inner path.
    fn inner_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        self.links.iter().find_map(|link| match link {
            Link::Dyn(r) => r.inner_path(path),
            Link::Header(_) | Link::Query | Link::Body => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::StaticResolver;
    use http::Request;
    use http::request::Parts;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).expect("valid request").into_parts().0
    }

    async fn chain(parts: &Parts, body: Option<&str>) -> Result<Option<Candidate>, TenancyError> {
        let chain = ChainResolver::standard(HeaderResolver::default());
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

    #[test]
    fn hints_name_what_the_chain_reads() {
        let standard = ChainResolver::standard(HeaderResolver::new("X-Org").expect("valid"));
        assert_eq!(
            standard.hint().as_deref(),
            Some("header 'X-Org' or query parameter 'tenant_id'")
        );
        assert_eq!(ChainResolver::new().with_body().hint(), None);
    }
}
