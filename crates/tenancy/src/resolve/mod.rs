//! Where a request's tenant comes from: the [`TenantResolver`] seam and the
//! built-in resolvers.
//!
//! A resolver only *finds a candidate*; it does not judge it. Validation of
//! the id format, the allow-list and the default tenant are the policy's job
//! ([`crate::TenantPolicy`]), so a custom resolver can never skip them: a
//! body, a host name or a path segment is held to the same rules as a
//! header.
//!
//! | resolver | reads | source |
//! |---|---|---|
//! | [`HeaderResolver`] | a header (`X-Tenant-ID` by default) | [`TenantSource::Header`] |
//! | [`QueryResolver`] | the `tenant_id` query parameter | [`TenantSource::Query`] |
//! | [`BodyResolver`] | the JSON body's `tenant_id`, on declared routes | [`TenantSource::Body`] |
//! | [`SubdomainResolver`] | `{tenant}.example.com` | [`TenantSource::Host`] |
//! | [`PathPrefixResolver`] | `/t/{tenant}/…` (and strips it) | [`TenantSource::Path`] |
//! | [`StaticResolver`] | a constant | [`TenantSource::Static`] |
//! | [`ChainResolver`] | several of the above; disagreement is a 400 | the first that found one |

mod chain;
mod host;
mod path;
mod request;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use http::request::Parts;

use crate::error::TenancyError;

pub use chain::ChainResolver;
pub use host::SubdomainResolver;
pub use path::PathPrefixResolver;
pub use request::{BodyResolver, HeaderResolver, QueryResolver, StaticResolver};

/// Where a tenant id was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TenantSource {
    /// A header ([`HeaderResolver`], `X-Tenant-ID` by default).
    Header,
    /// The `tenant_id` query parameter.
    Query,
    /// The `tenant_id` field of the JSON body.
    Body,
    /// The host name's first label ([`SubdomainResolver`]).
    Host,
    /// The path segment after a prefix ([`PathPrefixResolver`]).
    Path,
    /// A constant configured at startup ([`StaticResolver`]).
    Static,
    /// A service's own resolver, named by it.
    Custom(&'static str),
    /// A verified credential (API key or JWT) named it.
    Credential,
    /// No source named one (or the policy serves a single tenant): the
    /// policy's default tenant applies.
    Default,
}

impl fmt::Display for TenantSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Header => f.write_str("header"),
            Self::Query => f.write_str("query parameter 'tenant_id'"),
            Self::Body => f.write_str("body field 'tenant_id'"),
            Self::Host => f.write_str("host name"),
            Self::Path => f.write_str("path prefix"),
            Self::Static => f.write_str("static configuration"),
            Self::Custom(name) => write!(f, "{name} resolver"),
            Self::Credential => f.write_str("credential"),
            Self::Default => f.write_str("default tenant"),
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
    /// next source is still tried (an empty header is no tenant, not an
    /// invalid one).
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

/// What a resolver may look at: the request head and, on routes declared
/// to take a body tenant, the JSON body's `tenant_id`.
#[derive(Debug, Clone, Copy)]
pub struct ResolveInput<'a> {
    /// Method, URI, headers and extensions of the request.
    pub parts: &'a Parts,
    /// The body's `tenant_id`, when the route takes one and it was sent.
    pub body_tenant: Option<&'a str>,
}

/// Finds the tenant a request asks for.
///
/// One resolver is installed per layer
/// ([`crate::TenancyLayerBuilder::resolver`]); the default is
/// [`ChainResolver::standard`] (header, then query, then body). Implement
/// this trait for an identity source of your own (an mTLS subject, a
/// gateway header, a cookie): return a [`Candidate`] and the policy judges
/// it like any other.
///
/// ```
/// use async_trait::async_trait;
/// use tower_tenancy::{Candidate, ResolveInput, TenancyError, TenantResolver, TenantSource};
///
/// /// The tenant is the `org` cookie.
/// struct OrgCookie;
///
/// #[async_trait]
/// impl TenantResolver for OrgCookie {
///     async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
///         let cookies = input.parts.headers.get_all(http::header::COOKIE);
///         Ok(cookies
///             .iter()
///             .filter_map(|v| v.to_str().ok())
///             .flat_map(|v| v.split(';'))
///             .find_map(|pair| pair.trim().strip_prefix("org="))
///             .and_then(|org| Candidate::new(org, TenantSource::Custom("org cookie"))))
///     }
///
///     fn hint(&self) -> Option<String> {
///         Some("the cookie 'org'".to_owned())
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let (parts, ()) = http::Request::builder()
///     .header("cookie", "theme=dark; org=acme")
///     .body(())?
///     .into_parts();
/// let found = OrgCookie.resolve(&ResolveInput { parts: &parts, body_tenant: None }).await?;
/// assert_eq!(found.map(|c| c.value().to_owned()).as_deref(), Some("acme"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
#[async_trait]
pub trait TenantResolver: Send + Sync + 'static {
    /// Returns the candidate tenant, `Ok(None)` when this resolver finds
    /// none, or an error when the request is contradictory.
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError>;

    /// Where a client should name its tenant for this resolver ("header
    /// 'X-Tenant-ID'"): the `tenant_required` refusal lists it, so the
    /// message tells the client what this service reads. `None` says
    /// nothing.
    fn hint(&self) -> Option<String> {
        None
    }

    /// The path the inner service should see for a request whose path is
    /// `path`, when this resolver reads the tenant from the path itself
    /// ([`PathPrefixResolver`]): the layer rewrites the URI to it once the
    /// tenant is decided, so routes are written without the prefix. `None`
    /// (the default) leaves the path alone.
    fn inner_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        let _ = path;
        None
    }
}

#[async_trait]
impl<T: TenantResolver + ?Sized> TenantResolver for Box<T> {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        (**self).resolve(input).await
    }

    fn hint(&self) -> Option<String> {
        (**self).hint()
    }

    fn inner_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        (**self).inner_path(path)
    }
}

#[async_trait]
impl<T: TenantResolver + ?Sized> TenantResolver for Arc<T> {
    async fn resolve(&self, input: &ResolveInput<'_>) -> Result<Option<Candidate>, TenancyError> {
        (**self).resolve(input).await
    }

    fn hint(&self) -> Option<String> {
        (**self).hint()
    }

    fn inner_path<'a>(&self, path: &'a str) -> Option<&'a str> {
        (**self).inner_path(path)
    }
}

/// Keeps the first of several candidates from one source, refusing a
/// second that names another tenant (a repeated header or parameter with
/// two values is a conflict, not a silent first-wins).
pub(crate) fn merge_same_source(
    found: &mut Option<Candidate>,
    next: Candidate,
) -> Result<(), TenancyError> {
    match found {
        Some(first) if first.value != next.value => Err(TenancyError::Conflict {
            first: first.source,
            second: next.source,
        }),
        Some(_) => Ok(()),
        None => {
            *found = Some(next);
            Ok(())
        }
    }
}
