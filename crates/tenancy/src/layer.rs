//! [`TenancyLayer`]: the tower layer that decides each request's tenant,
//! and the [`Tenant`] extractor that hands it to handlers.
//!
//! The tenant is decided once, here, before anything that runs as the
//! tenant (limits, metering, audit, handlers): from a verified credential,
//! the header, the query, the JSON body's `tenant_id` on routes declared
//! to take one ([`TenancyLayerBuilder::body_tenant_routes`]), or the
//! policy's default tenant. Nothing later resolves again, so no source can
//! reach a tenant without being limited and counted as it.
//!
//! A refusal is answered right there as the JSON error of DESIGN.md
//! section 3, never turned into a 500.
//!
//! With an [`Authenticator`] installed, a credential is verified first and
//! its tenant wins (a different requested tenant is 403 `tenant_mismatch`);
//! with a [`TenantDirectory`], the decided tenant must exist, be active,
//! admit the client's address, and, when it holds credentials, have been
//! reached with one (DESIGN.md section 2, steps 2, 4 and 6).
//!
//! Once decided, the tenant is recorded as `tenant_id` on the current
//! tracing span, so the request span must declare that field
//! (`tenant_id = tracing::field::Empty`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Request;
use http::request::Parts;
use http_body::Body as HttpBody;
use tower::{Layer, Service};

use ipnet::IpNet;

use crate::auth::{AuthError, Authenticator, Credential, Principal};
use crate::context::TenantContext;
use crate::directory::{TenantDirectory, TenantStatus};
use crate::error::TenancyError;
use crate::policy::{Policy, PolicyError, TenantPolicy};
use crate::resolve::{Candidate, ChainResolver, ResolveInput, TenantResolver, TenantSource};

/// Decides whether a route takes its tenant from the JSON body too.
type BodyTenantRoutes = Arc<dyn Fn(&Parts) -> bool + Send + Sync>;

/// Largest body the layer reads for a body tenant unless told otherwise.
pub const DEFAULT_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// Paths that need no tenant by default (`*` at the end means a prefix).
pub const DEFAULT_EXEMPT_PATHS: &[&str] = &["/health*", "/openapi.json", "/docs*", "/metrics"];

struct Shared {
    policy: Policy,
    resolver: Box<dyn TenantResolver>,
    exempt: Vec<ExemptPath>,
    authenticator: Option<Box<dyn Authenticator>>,
    auth_required: bool,
    directory: Option<Arc<dyn TenantDirectory>>,
    trusted_proxies: Vec<IpNet>,
    body_tenant: Option<BodyTenantRoutes>,
    body_limit: usize,
}

enum ExemptPath {
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

/// Resolves the tenant of every request that passes through it.
#[derive(Clone)]
pub struct TenancyLayer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for TenancyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenancyLayer")
            .field("policy", &self.shared.policy)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TenancyLayer`]; see [`TenancyLayer::builder`].
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
}

impl TenancyLayerBuilder {
    /// Routes for which `declared` answers true take their tenant from the
    /// JSON body's `tenant_id` too: the layer reads the body (up to
    /// [`TenancyLayerBuilder::body_limit`]) before it decides, so limits,
    /// metering and audit see the tenant the body named. Every other
    /// route's body is never read. Run the layer inside a timeout so a slow
    /// body cannot hold it.
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

    /// Installs the process's resolver, replacing the standard chain
    /// (header, then query, then body).
    pub fn resolver(mut self, resolver: impl TenantResolver) -> Self {
        self.resolver = Some(Box::new(resolver));
        self
    }

    /// Replaces the paths that need no tenant (default
    /// [`DEFAULT_EXEMPT_PATHS`]); a trailing `*` makes a prefix.
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
    /// `false` keeps seed 000's header-only mode for trusted networks.
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

    /// Validates the policy and builds the layer.
    pub fn build(self) -> Result<TenancyLayer, PolicyError> {
        let policy = Policy::new(self.policy)?;
        let resolver = match self.resolver {
            Some(r) => r,
            None => Box::new(ChainResolver::standard(policy.header().clone())),
        };
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
            }),
        })
    }
}

impl TenancyLayer {
    /// Starts a layer for `policy` with the standard resolver chain.
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
        }
    }

    /// A layer for `policy` with `resolver` and the default exempt paths.
    pub fn new(policy: TenantPolicy, resolver: impl TenantResolver) -> Result<Self, PolicyError> {
        Self::builder(policy).resolver(resolver).build()
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// Whether `path` needs no tenant.
    pub fn is_exempt(&self, path: &str) -> bool {
        self.shared.exempt.iter().any(|e| e.matches(path))
    }

    /// Decides the tenant of a request from its head alone (no body
    /// tenant): what the layer does for routes that take none.
    pub async fn resolve_parts(&self, parts: &Parts) -> Result<TenantContext, TenancyError> {
        let principal = authenticate(&self.shared, parts).await?;
        decide(&self.shared, parts, principal, None).await
    }
}

/// Decides the tenant of a request whose credential (if any) was already
/// verified as `principal`.
async fn decide(
    shared: &Shared,
    parts: &Parts,
    principal: Option<Principal>,
    body_tenant: Option<&str>,
) -> Result<TenantContext, TenancyError> {
    if !shared.policy.enabled() {
        return Ok(shared.policy.default_context());
    }
    let input = ResolveInput { parts, body_tenant };
    let candidate = shared.resolver.resolve(&input).await?;
    let ctx = match principal {
        Some(principal) => reconcile(shared, principal, candidate.as_ref())?,
        None if shared.auth_required => return Err(AuthError::Missing.into()),
        None => shared.policy.decide(candidate)?,
    };
    admit(shared, parts, &ctx)?;
    Ok(ctx)
}

/// Step 2: verifies the request's credential, if multi-tenancy is on, an
/// authenticator is installed and one was sent. A bad credential is an
/// error, never "none". With multi-tenancy off every request runs in the
/// default tenant and credentials are not looked at.
async fn authenticate(shared: &Shared, parts: &Parts) -> Result<Option<Principal>, TenancyError> {
    let Some(authenticator) = &shared.authenticator else {
        return Ok(None);
    };
    if !shared.policy.enabled() {
        return Ok(None);
    }
    let Some(credential) = Credential::from_parts(parts)? else {
        return Ok(None);
    };
    Ok(Some(authenticator.authenticate(&credential).await?))
}

/// Step 4: the credential's tenant wins; a request naming another is 403.
/// The allow-list still applies to it.
fn reconcile(
    shared: &Shared,
    principal: Principal,
    requested: Option<&Candidate>,
) -> Result<TenantContext, TenancyError> {
    if requested.is_some_and(|c| c.value() != principal.tenant_id().as_str()) {
        return Err(TenancyError::Mismatch);
    }
    let own = Candidate::new(principal.tenant_id().as_str(), TenantSource::Credential)
        .ok_or(TenancyError::Mismatch)?;
    Ok(shared.policy.decide(Some(own))?.with_principal(principal))
}

/// Step 6: the registry must know the tenant, it must be active, the
/// client's address must be in its allow-list (if it has one), and a tenant
/// that holds credentials is reached only with one (a header naming it is
/// not proof of anything).
fn admit(shared: &Shared, parts: &Parts, ctx: &TenantContext) -> Result<(), TenancyError> {
    let Some(directory) = &shared.directory else {
        return Ok(());
    };
    let enforced = shared
        .policy
        .config()
        .registry
        .unwrap_or_else(|| directory.enforced());
    if !shared.policy.enabled() || !enforced {
        return Ok(());
    }
    let tenant = ctx.tenant_id();
    match directory.status(tenant) {
        TenantStatus::Unknown => Err(TenancyError::UnknownTenant {
            tenant: tenant.to_string(),
        }),
        TenantStatus::Suspended => Err(TenancyError::Suspended {
            tenant: tenant.to_string(),
        }),
        status => {
            if status.requires_credential() && ctx.principal().is_none() {
                return Err(AuthError::Missing.into());
            }
            if status.admits(crate::forwarded::client_ip(&shared.trusted_proxies, parts)?) {
                Ok(())
            } else {
                Err(TenancyError::IpNotAllowed {
                    tenant: tenant.to_string(),
                })
            }
        }
    }
}

fn record_on_span(ctx: &TenantContext) {
    tracing::Span::current().record("tenant_id", ctx.tenant_id().as_str());
}

impl<S> Layer<S> for TenancyLayer {
    type Service = TenancyService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TenancyService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service [`TenancyLayer`] wraps around the application.
#[derive(Clone)]
pub struct TenancyService<S> {
    inner: S,
    shared: Arc<Shared>,
}

/// Marks a request whose JSON body the layer read for its `tenant_id`
/// (the route was declared to take a body tenant). A body extractor that
/// finds a `tenant_id` without this mark is on a route that was not
/// declared: the tenant was decided without the body, so it must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTenantRead;

impl<S, B> Service<Request<B>> for TenancyService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The clone that was polled ready is the one that serves.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move {
            if shared.exempt.iter().any(|e| e.matches(req.uri().path())) {
                return inner.call(req).await;
            }
            let (mut parts, body) = req.into_parts();
            // The credential is checked from the head, before any body is
            // read: an anonymous client on a route that needs one is refused
            // without the server buffering what it sends.
            let principal = match authenticate(&shared, &parts).await {
                Ok(None) if shared.auth_required && shared.policy.enabled() => {
                    return Ok(TenancyError::from(AuthError::Missing).into_response());
                }
                Ok(principal) => principal,
                Err(refusal) => return Ok(refusal.into_response()),
            };
            let reads_body = shared
                .body_tenant
                .as_ref()
                .is_some_and(|declared| declared(&parts));
            let (body, body_tenant) = if reads_body {
                parts.extensions.insert(BodyTenantRead);
                match crate::body::read_body_tenant(
                    shared.policy.enabled(),
                    shared.body_limit,
                    &parts,
                    body,
                )
                .await
                {
                    Ok(read) => read,
                    Err(refusal) => return Ok(refusal),
                }
            } else {
                (body, None)
            };
            match decide(&shared, &parts, principal, body_tenant.as_deref()).await {
                Err(refusal) => {
                    tracing::debug!(code = refusal.code(), "tenant refused");
                    Ok(refusal.into_response())
                }
                Ok(ctx) => {
                    record_on_span(&ctx);
                    parts.extensions.insert(ctx);
                    inner.call(Request::from_parts(parts, body)).await
                }
            }
        })
    }
}

/// Extractor for the request's tenant, as the [`TenancyLayer`] decided it
/// (from the credential, header, query, a declared route's body, or the
/// default tenant). Without the layer it refuses with a 500: a route that
/// asks for a tenant must sit behind it.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantContext);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = TenancyError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .map(Tenant)
            .ok_or(TenancyError::NotConfigured)
    }
}

impl std::ops::Deref for Tenant {
    type Target = TenantContext;

    fn deref(&self) -> &TenantContext {
        &self.0
    }
}
