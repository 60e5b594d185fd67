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
//! Once decided, the tenant is recorded as `tenant_id` on the current
//! tracing span, so the request span must declare that field
//! (`tenant_id = tracing::field::Empty`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::extract::FromRequestParts;
use axum_core::response::{IntoResponse, Response};
use http::Request;
use http::request::Parts;
use tower::{Layer, Service};

use crate::context::TenantContext;
use crate::error::TenancyError;
use crate::policy::{Policy, PolicyError, TenantPolicy};
use crate::resolve::{ChainResolver, ResolveInput, TenantResolver};

/// Paths that need no tenant by default (`*` at the end means a prefix).
pub const DEFAULT_EXEMPT_PATHS: &[&str] = &["/health*", "/openapi.json", "/docs*", "/metrics"];

struct Shared {
    policy: Policy,
    resolver: Box<dyn TenantResolver>,
    exempt: Vec<ExemptPath>,
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
    let input = ResolveInput {
        parts,
        body_tenant: None,
    };
    match shared.resolver.resolve(&input).await? {
        None => Ok(None),
        Some(candidate) => shared.policy.decide(Some(candidate)).map(Some),
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
    let input = ResolveInput { parts, body_tenant };
    let candidate = shared.resolver.resolve(&input).await?;
    let ctx = shared.policy.decide(candidate)?;
    record_on_span(&ctx);
    Ok(ctx)
}

fn head_decision(shared: &Shared, parts: &Parts) -> Result<TenantContext, TenancyError> {
    if let Some(ctx) = parts.extensions.get::<TenantContext>() {
        return Ok(ctx.clone());
    }
    let ctx = shared.policy.decide(None)?;
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
