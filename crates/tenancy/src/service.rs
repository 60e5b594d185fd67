//! [`TenancyService`]: the per-request side of [`crate::TenancyLayer`], and
//! the steps it runs (see the layer's module documentation for the order).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::OriginalUri;
use axum_core::response::{IntoResponse, Response};
use bytes::Bytes;
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Uri};
use http_body::Body as HttpBody;
use tower::{Layer, Service};

use crate::auth::{AuthError, Credential, Principal};
use crate::context::TenantContext;
use crate::directory::TenantStatus;
use crate::error::{ErrorCode, TenancyError};
use crate::layer::{Shared, TenancyLayer};
use crate::resolve::{Candidate, ResolveInput, TenantSource};

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
            if shared.is_exempt(req.uri().path()) {
                return inner.call(req).await;
            }
            let (mut parts, body) = req.into_parts();
            match admit_request(&shared, &mut parts, body).await {
                Ok((ctx, body)) => {
                    record_on_span(&ctx);
                    strip_path_prefix(&shared, &mut parts);
                    parts.extensions.insert(ctx);
                    inner.call(Request::from_parts(parts, body)).await
                }
                Err(refusal) => Ok(refuse(&shared, refusal, &parts)),
            }
        })
    }
}

/// Steps 2 to 5: the credential, the body tenant, the decision, the
/// directory. The body comes back unchanged (re-assembled when it was read).
async fn admit_request<B>(
    shared: &Shared,
    parts: &mut Parts,
    body: B,
) -> Result<(TenantContext, B), TenancyError>
where
    B: HttpBody<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The credential is checked from the head, before any body is read: an
    // anonymous client on a route that needs one is refused without the
    // server buffering what it sends.
    let principal = authenticate(shared, parts).await?;
    if principal.is_none() && shared.auth_required && shared.policy.enabled() {
        return Err(AuthError::Missing.into());
    }
    let reads_body = shared
        .body_tenant
        .as_ref()
        .is_some_and(|declared| declared(parts));
    let (body, body_tenant) = if reads_body {
        parts.extensions.insert(BodyTenantRead);
        crate::body::read_body_tenant(shared.policy.enabled(), shared.body_limit, parts, body)
            .await?
    } else {
        (body, None)
    };
    let ctx = decide(shared, parts, principal, body_tenant.as_deref()).await?;
    Ok((ctx, body))
}

/// Answers a refusal: the service's hook, or the default JSON. Either way
/// the response carries the refusal's [`ErrorCode`].
fn refuse(shared: &Shared, refusal: TenancyError, parts: &Parts) -> Response {
    tracing::debug!(code = refusal.code(), "tenant refused");
    let code = refusal.code();
    let mut response = match &shared.on_refusal {
        Some(hook) => hook(refusal, parts),
        None => refusal.into_response(),
    };
    if response.extensions().get::<ErrorCode>().is_none() {
        response.extensions_mut().insert(ErrorCode(code.to_owned()));
    }
    response
}

/// Decides the tenant of a request whose credential (if any) was already
/// verified as `principal`.
pub(crate) async fn decide(
    shared: &Shared,
    parts: &Parts,
    principal: Option<Principal>,
    body_tenant: Option<&str>,
) -> Result<TenantContext, TenancyError> {
    if let Some(single) = shared.policy.single_context() {
        return Ok(single);
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

/// Verifies the request's credential, if the policy lets requests choose
/// their tenant, an authenticator is installed and one was sent. A bad
/// credential is an error, never "none". A single-tenant policy does not
/// look at credentials.
pub(crate) async fn authenticate(
    shared: &Shared,
    parts: &Parts,
) -> Result<Option<Principal>, TenancyError> {
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

/// The credential's tenant wins; a request naming another is 403. The
/// allow-list still applies to it.
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

/// The directory must know the tenant, it must be active, the client's
/// address must be in its allow-list (if it has one), and a tenant that
/// holds credentials is reached only with one (a header naming it is not
/// proof of anything).
fn admit(shared: &Shared, parts: &Parts, ctx: &TenantContext) -> Result<(), TenancyError> {
    let Some(directory) = &shared.directory else {
        return Ok(());
    };
    if !shared.policy.enabled() || !directory.enforced() {
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

/// Hands the inner service the path without the tenant prefix the
/// resolver read (`/t/acme/records?x=1` → `/records?x=1`), keeping the
/// full URI as axum's [`OriginalUri`] unless an outer router set it.
fn strip_path_prefix(shared: &Shared, parts: &mut Parts) {
    let Some(inner) = shared.resolver.inner_path(parts.uri.path()) else {
        return;
    };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{inner}?{query}"),
        None => inner.to_owned(),
    };
    let mut uri = parts.uri.clone().into_parts();
    // The pieces come from a URI that parsed, so these cannot fail; were
    // one to, the request keeps its path rather than losing it.
    let Ok(path_and_query) = PathAndQuery::try_from(path_and_query) else {
        return;
    };
    uri.path_and_query = Some(path_and_query);
    let Ok(stripped) = Uri::from_parts(uri) else {
        return;
    };
    if parts.extensions.get::<OriginalUri>().is_none() {
        parts.extensions.insert(OriginalUri(parts.uri.clone()));
    }
    parts.uri = stripped;
}

fn record_on_span(ctx: &TenantContext) {
    tracing::Span::current().record("tenant_id", ctx.tenant_id().as_str());
}
