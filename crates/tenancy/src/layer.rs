//! [`TenancyLayer`]: the tower layer that decides each request's tenant,
//! and its builder.
//!
//! The tenant is decided once, here, before anything that runs as the
//! tenant (limits, metering, audit, handlers): from a verified credential,
//! the installed resolver (header, query, host, path, …), the JSON body's
//! `tenant_id` on routes declared to take one, or the policy's default
//! tenant. Nothing later resolves again, so no source can reach a tenant
//! without being limited and counted as it. A refusal is answered right
//! there (a JSON 4xx by default, see
//! [`TenancyLayerBuilder::on_refusal`]), never turned into a 500.
//!
//! The steps, in order (the request's service is in `service.rs`):
//! 1. exempt paths pass untouched, without a tenant;
//! 2. a credential, if sent, is verified ([`Authenticator`]); a bad one is
//!    401 and never falls back to weaker sources;
//! 3. a declared route's JSON body is read for its `tenant_id`;
//! 4. the resolver proposes a tenant, the credential's tenant wins (a
//!    different requested one is 403 `tenant_mismatch`), the policy
//!    validates it or applies its default;
//! 5. the [`TenantDirectory`] admits it (exists, active, address allowed,
//!    reached with a credential when it holds credentials);
//! 6. the path prefix a [`crate::PathPrefixResolver`] read is stripped, the
//!    context is put in the request's extensions and recorded as
//!    `tenant_id` on the current tracing span (declare the field as
//!    `tenant_id = tracing::field::Empty` on the request span).

use std::sync::Arc;

use axum_core::response::Response;
use http::request::Parts;
use ipnet::IpNet;

use crate::auth::Authenticator;
use crate::context::TenantContext;
use crate::directory::TenantDirectory;
use crate::error::TenancyError;
use crate::policy::{Policy, PolicyError, TenantPolicy};
use crate::resolve::{ChainResolver, HeaderResolver, TenantResolver};

/// Decides whether a route takes its tenant from the JSON body too.
pub(crate) type BodyTenantRoutes = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// Answers a refusal in the service's own way.
pub(crate) type RefusalHook = Arc<dyn Fn(TenancyError, &Parts) -> Response + Send + Sync>;

/// Largest body the layer reads for a body tenant unless told otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Paths that need no tenant by default (`*` at the end means a prefix).
pub const DEFAULT_EXEMPT_PATHS: &[&str] = &["/health*", "/openapi.json", "/docs*", "/metrics"];

/// What every request's service shares.
pub(crate) struct Shared {
    pub(crate) policy: Policy,
    pub(crate) resolver: Box<dyn TenantResolver>,
    pub(crate) exempt: Vec<ExemptPath>,
    pub(crate) authenticator: Option<Box<dyn Authenticator>>,
    pub(crate) auth_required: bool,
    pub(crate) directory: Option<Arc<dyn TenantDirectory>>,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) body_tenant: Option<BodyTenantRoutes>,
    pub(crate) body_limit: usize,
    pub(crate) on_refusal: Option<RefusalHook>,
}

pub(crate) enum ExemptPath {
    Exact(String),
    Prefix(String),
}

impl ExemptPath {
    fn parse(pattern: &str) -> Self {
        match pattern.strip_suffix('*') {
            Some(prefix) => Self::Prefix(prefix.to_owned()),
            None => Self::Exact(pattern.to_owned()),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(p) => path == p,
            Self::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

impl Shared {
    pub(crate) fn is_exempt(&self, path: &str) -> bool {
        self.exempt.iter().any(|e| e.matches(path))
    }
}

/// Resolves the tenant of every request that passes through it.
///
/// Cheap to clone (one shared `Arc`).
#[derive(Clone)]
pub struct TenancyLayer {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for TenancyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenancyLayer")
            .field("policy", self.shared.policy.config())
            .finish_non_exhaustive()
    }
}

/// Builds a [`TenancyLayer`]; see [`TenancyLayer::builder`].
///
/// ```
/// use std::sync::Arc;
/// use tower_tenancy::{ChainResolver, HeaderResolver, TenancyLayer, TenantPolicy};
///
/// let layer = TenancyLayer::builder(TenantPolicy::required())
///     // Where tenants come from (default: X-Tenant-ID, ?tenant_id=, body).
///     .resolver(ChainResolver::new().with_header(HeaderResolver::new("X-Org")?))
///     // Paths that need no tenant (default: /health*, /metrics, /docs*, /openapi.json).
///     .exempt_paths(["/health", "/version"])
///     // POST /things may name its tenant in the JSON body.
///     .body_tenant_routes(|parts| parts.method == http::Method::POST && parts.uri.path() == "/things")
///     .build()?;
/// assert!(layer.is_exempt("/version"));
/// # Ok::<(), tower_tenancy::PolicyError>(())
/// ```
pub struct TenancyLayerBuilder {
    policy: TenantPolicy,
    resolver: Option<Box<dyn TenantResolver>>,
    exempt: Vec<String>,
    authenticator: Option<Box<dyn Authenticator>>,
    auth_required: bool,
    directory: Option<Arc<dyn TenantDirectory>>,
    trusted_proxies: Vec<IpNet>,
    body_tenant: Option<BodyTenantRoutes>,
    body_limit: usize,
    on_refusal: Option<RefusalHook>,
}

impl TenancyLayerBuilder {
    /// Routes for which `declared` answers true take their tenant from the
    /// JSON body's `tenant_id` too: the layer reads the body (up to
    /// [`TenancyLayerBuilder::body_limit`]) before it decides, so limits,
    /// metering and audit see the tenant the body named, and hands the
    /// bytes on unchanged. Every other route's body is never read. Run the
    /// layer inside a timeout so a slow body cannot hold it. `declared`
    /// sees the request as it came (before a path prefix is stripped).
    pub fn body_tenant_routes(
        mut self,
        declared: impl Fn(&Parts) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.body_tenant = Some(Arc::new(declared));
        self
    }

    /// The largest body read for a body tenant (413 above it; default
    /// [`DEFAULT_BODY_LIMIT`]).
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.body_limit = bytes;
        self
    }

    /// Installs the resolver, replacing the standard chain
    /// ([`ChainResolver::standard`] with `X-Tenant-ID`: header, then
    /// query, then body).
    pub fn resolver(mut self, resolver: impl TenantResolver) -> Self {
        self.resolver = Some(Box::new(resolver));
        self
    }

    /// Replaces the paths that need no tenant (default
    /// [`DEFAULT_EXEMPT_PATHS`]); a trailing `*` makes a prefix. Handlers
    /// on them can take `Option<Tenant>`, which is `None` there.
    pub fn exempt_paths<I, S>(mut self, paths: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exempt = paths.into_iter().map(Into::into).collect();
        self
    }

    /// Verifies credentials (`Authorization: Bearer`, `x-api-key`) with
    /// `authenticator`. Without one, credentials are not looked at.
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> Self {
        self.authenticator = Some(Box::new(authenticator));
        self
    }

    /// Makes a credential mandatory on tenant routes (401 without one).
    /// `false`, the default, lets a request name its tenant without one,
    /// for trusted networks (a [`TenantDirectory`] can still demand one per
    /// tenant).
    pub fn require_credentials(mut self, required: bool) -> Self {
        self.auth_required = required;
        self
    }

    /// Checks every decided tenant against `directory` (exists, active,
    /// address allowed).
    pub fn directory(mut self, directory: Arc<dyn TenantDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// Peers whose `X-Forwarded-For` is believed when matching a tenant's
    /// IP allow-list. Anyone else's is ignored: it is client-controlled.
    pub fn trusted_proxies(mut self, proxies: Vec<IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    /// Answers the layer's refusals with `hook` instead of the default
    /// `{"detail": ..., "code": ...}` JSON ([`TenancyError`]'s
    /// `IntoResponse`). The hook gets the refusal and the request head (to
    /// vary by `Accept`, say); [`TenancyError::status`] and
    /// [`TenancyError::code`] give the standard answer, and the response
    /// still carries the [`crate::ErrorCode`] extension for outer
    /// middleware unless the hook set one.
    ///
    /// ```
    /// use axum::response::{IntoResponse, Response};
    /// use tower_tenancy::{TenancyError, TenancyLayer, TenantPolicy};
    ///
    /// let layer = TenancyLayer::builder(TenantPolicy::required())
    ///     .on_refusal(|refusal: TenancyError, _parts: &http::request::Parts| -> Response {
    ///         let body = format!("<h1>{}</h1><p>{refusal}</p>", refusal.status());
    ///         (refusal.status(), axum::response::Html(body)).into_response()
    ///     })
    ///     .build()?;
    /// # Ok::<(), tower_tenancy::PolicyError>(())
    /// ```
    pub fn on_refusal(
        mut self,
        hook: impl Fn(TenancyError, &Parts) -> Response + Send + Sync + 'static,
    ) -> Self {
        self.on_refusal = Some(Arc::new(hook));
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<TenancyLayer, PolicyError> {
        if self.auth_required && !self.policy.is_multi_tenant() {
            return Err(PolicyError::CredentialsWithoutTenants);
        }
        let resolver = match self.resolver {
            Some(r) => r,
            None => Box::new(ChainResolver::standard(HeaderResolver::default())),
        };
        let policy = Policy::new(self.policy, resolver.hint())?;
        let exempt = self.exempt.iter().map(|p| ExemptPath::parse(p)).collect();
        Ok(TenancyLayer {
            shared: Arc::new(Shared {
                policy,
                resolver,
                exempt,
                authenticator: self.authenticator,
                auth_required: self.auth_required,
                directory: self.directory,
                trusted_proxies: self.trusted_proxies,
                body_tenant: self.body_tenant,
                body_limit: self.body_limit,
                on_refusal: self.on_refusal,
            }),
        })
    }
}

impl TenancyLayer {
    /// Starts a layer that applies `policy` (there is no default: choose
    /// [`TenantPolicy::required`], [`TenantPolicy::optional`] or
    /// [`TenantPolicy::single`]) with the standard resolver chain.
    pub fn builder(policy: TenantPolicy) -> TenancyLayerBuilder {
        TenancyLayerBuilder {
            policy,
            resolver: None,
            exempt: DEFAULT_EXEMPT_PATHS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            authenticator: None,
            auth_required: false,
            directory: None,
            trusted_proxies: Vec::new(),
            body_tenant: None,
            body_limit: DEFAULT_BODY_LIMIT,
            on_refusal: None,
        }
    }

    /// A layer for `policy` with `resolver` and the default exempt paths.
    pub fn new(policy: TenantPolicy, resolver: impl TenantResolver) -> Result<Self, PolicyError> {
        Self::builder(policy).resolver(resolver).build()
    }

    /// The policy in force.
    pub fn policy(&self) -> &TenantPolicy {
        self.shared.policy.config()
    }

    /// Whether `path` needs no tenant.
    pub fn is_exempt(&self, path: &str) -> bool {
        self.shared.is_exempt(path)
    }

    /// Decides the tenant of a request from its head alone (no body
    /// tenant), with every check the layer makes: what the layer does on
    /// routes that take no body tenant, for callers that are not a tower
    /// stack (a WebSocket upgrade handled elsewhere, a benchmark).
    pub async fn resolve_parts(&self, parts: &Parts) -> Result<TenantContext, TenancyError> {
        let principal = crate::service::authenticate(&self.shared, parts).await?;
        crate::service::decide(&self.shared, parts, principal, None).await
    }
}
