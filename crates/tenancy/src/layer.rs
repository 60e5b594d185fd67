//! [`TenancyLayer`]: the tower layer that resolves each request's tenant,
//! and the [`Tenant`] extractor that hands it to handlers.
//!
//! The layer runs the installed [`TenantResolver`] over the request head and
//! applies the [`Policy`]. A refusal is answered right there as the JSON
//! error of DESIGN.md section 3, never turned into a 500 (seed 000's
//! middleware did that). A request that names no tenant in its head is not
//! refused yet: its JSON body may still carry `tenant_id`, so the decision
//! is left to the extractor ([`Tenant`] for head-only endpoints,
//! [`resolve_with_body`] for endpoints whose body has the field).
//!
//! With an [`Authenticator`] installed, a credential is verified first and
//! its tenant wins (a different requested tenant is 403 `tenant_mismatch`);
//! with a [`TenantDirectory`], the decided tenant must exist, be active, and
//! admit the client's address (DESIGN.md section 2, steps 2, 4 and 6).
//!
//! Once decided, the tenant is recorded as `tenant_id` on the current
//! tracing span, so the request span must declare that field
//! (`tenant_id = tracing::field::Empty`).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::Request;
use http::request::Parts;
use tower::{Layer, Service};

use axum::extract::ConnectInfo;
use ipnet::IpNet;

use crate::auth::{AuthError, Authenticator, Credential, Principal};
use crate::context::TenantContext;
use crate::directory::{TenantDirectory, TenantStatus};
use crate::error::TenancyError;
use crate::policy::{Policy, PolicyError, TenantPolicy};
use crate::resolve::{Candidate, ChainResolver, ResolveInput, TenantResolver, TenantSource};

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
}

impl TenancyLayerBuilder {
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

    /// Resolves a request head: `Ok(Some)` when decided, `Ok(None)` when
    /// the head names no tenant (the body may still), `Err` when refused.
    pub async fn resolve_parts(
        &self,
        parts: &Parts,
    ) -> Result<Option<TenantContext>, TenancyError> {
        resolve_head(&self.shared, parts).await
    }
}

async fn resolve_head(
    shared: &Shared,
    parts: &Parts,
) -> Result<Option<TenantContext>, TenancyError> {
    if !shared.policy.enabled() {
        return Ok(Some(shared.policy.default_context()));
    }
    let principal = authenticate(shared, parts).await?;
    let input = ResolveInput {
        parts,
        body_tenant: None,
    };
    let candidate = shared.resolver.resolve(&input).await?;
    let ctx = match principal {
        Some(principal) => reconcile(shared, principal, candidate.as_ref())?,
        None if shared.auth_required => return Err(AuthError::Missing.into()),
        None => match candidate {
            None => return Ok(None),
            Some(candidate) => shared.policy.decide(Some(candidate))?,
        },
    };
    admit(shared, parts, &ctx)?;
    Ok(Some(ctx))
}

/// Step 2: verifies the request's credential, if an authenticator is
/// installed and one was sent. A bad credential is an error, never "none".
async fn authenticate(shared: &Shared, parts: &Parts) -> Result<Option<Principal>, TenancyError> {
    let Some(authenticator) = &shared.authenticator else {
        return Ok(None);
    };
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

/// Step 6: the registry must know the tenant, it must be active, and the
/// client's address must be in its allow-list (if it has one).
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
            if status.admits(client_ip(&shared.trusted_proxies, parts)) {
                Ok(())
            } else {
                Err(TenancyError::IpNotAllowed {
                    tenant: tenant.to_string(),
                })
            }
        }
    }
}

/// The client's address: the TCP peer, or, when the peer is a trusted
/// proxy, the right-most `X-Forwarded-For` entry that is not itself a
/// trusted proxy (entries further left are client-controlled).
pub fn client_ip(trusted_proxies: &[IpNet], parts: &Parts) -> Option<IpAddr> {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())?;
    let trusted = |ip: &IpAddr| trusted_proxies.iter().any(|net| net.contains(ip));
    if !trusted(&peer) {
        return Some(peer);
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in parts.headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            return Some(peer);
        };
        for hop in text.split(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(ip),
                // A garbled chain is not evidence of anything.
                Err(_) => return Some(peer),
            }
        }
    }
    Some(
        hops.iter()
            .rev()
            .find(|ip| !trusted(ip))
            .or(hops.first())
            .copied()
            .unwrap_or(peer),
    )
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

/// Handle stored in request extensions so extractors reach the policy and
/// resolver of the layer that saw the request.
#[derive(Clone)]
struct Installed(Arc<Shared>);

impl<S, B> Service<Request<B>> for TenancyService<S>
where
    S: Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
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
            match resolve_head(&shared, &parts).await {
                Err(refusal) => {
                    tracing::debug!(code = refusal.code(), "tenant refused");
                    return Ok(refusal.into_response());
                }
                Ok(Some(ctx)) => {
                    record_on_span(&ctx);
                    parts.extensions.insert(ctx);
                }
                Ok(None) => {}
            }
            parts.extensions.insert(Installed(shared));
            inner.call(Request::from_parts(parts, body)).await
        })
    }
}

/// Decides the tenant of a request whose JSON body carried `body_tenant`
/// (trimmed; blank counts as absent). The body is resolved by the same
/// resolver and judged by the same policy as the head, so a body cannot
/// bypass the allow-list, and a body that disagrees with the header is a
/// 400 `tenant_conflict`.
pub async fn resolve_with_body(
    parts: &Parts,
    body_tenant: Option<&str>,
) -> Result<TenantContext, TenancyError> {
    let Some(Installed(shared)) = parts.extensions.get::<Installed>().cloned() else {
        return parts
            .extensions
            .get::<TenantContext>()
            .cloned()
            .ok_or(TenancyError::NotConfigured);
    };
    let body_tenant = body_tenant.filter(|b| !b.trim().is_empty());
    if !shared.policy.enabled() || body_tenant.is_none() {
        return head_decision(&shared, parts);
    }
    if let Some(ctx) = parts.extensions.get::<TenantContext>()
        && ctx.principal().is_some()
    {
        // The credential decided; the body may only agree with it.
        let input = ResolveInput { parts, body_tenant };
        let requested = shared.resolver.resolve(&input).await?;
        if requested.is_some_and(|c| c.value() != ctx.tenant_id().as_str()) {
            return Err(TenancyError::Mismatch);
        }
        return Ok(ctx.clone());
    }
    let input = ResolveInput { parts, body_tenant };
    let candidate = shared.resolver.resolve(&input).await?;
    let ctx = shared.policy.decide(candidate)?;
    admit(&shared, parts, &ctx)?;
    record_on_span(&ctx);
    Ok(ctx)
}

fn head_decision(shared: &Shared, parts: &Parts) -> Result<TenantContext, TenancyError> {
    if let Some(ctx) = parts.extensions.get::<TenantContext>() {
        return Ok(ctx.clone());
    }
    let ctx = shared.policy.decide(None)?;
    admit(shared, parts, &ctx)?;
    record_on_span(&ctx);
    Ok(ctx)
}

/// Extractor for the request's tenant, for endpoints whose body does not
/// name one. Refuses with the policy's error when no tenant was given and
/// one is required.
#[derive(Debug, Clone)]
pub struct Tenant(pub TenantContext);

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = TenancyError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ctx) = parts.extensions.get::<TenantContext>() {
            return Ok(Tenant(ctx.clone()));
        }
        let Some(Installed(shared)) = parts.extensions.get::<Installed>() else {
            return Err(TenancyError::NotConfigured);
        };
        let ctx = head_decision(shared, parts)?;
        parts.extensions.insert(ctx.clone());
        Ok(Tenant(ctx))
    }
}

impl std::ops::Deref for Tenant {
    type Target = TenantContext;

    fn deref(&self) -> &TenantContext {
        &self.0
    }
}
