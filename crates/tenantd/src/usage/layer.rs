//! The tenant routes' accounting middleware: sits inside the tenancy layer
//! (so it knows the authenticated tenant) and outside the rate limiter (so
//! refused requests are counted too). It records usage and tells the outer
//! observer who the request was for.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tenancy::{PrincipalKind, TenantContext, TenantId};

use super::RouteClass;
use crate::app::AppState;
use crate::clock::now_ms;

/// The tenant context a request ran in, put in the response extensions
/// for the metrics and audit observer (a clone of the context: two `Arc`s,
/// no per-request formatting; the actor name is derived only when an event
/// is written).
#[derive(Debug, Clone)]
pub struct Accounted(pub TenantContext);

impl Accounted {
    /// The resolved (and, with credentials, authenticated) tenant.
    pub fn tenant(&self) -> &TenantId {
        self.0.tenant_id()
    }

    /// `key:<id>`, `jwt:<subject>`, or `anonymous` (tenant by header).
    pub fn actor(&self) -> String {
        actor_of(&self.0)
    }
}

/// The actor name of a tenant request.
pub fn actor_of(ctx: &TenantContext) -> String {
    match ctx.principal().map(|p| p.kind()) {
        Some(PrincipalKind::ApiKey { key_id }) => format!("key:{key_id}"),
        Some(PrincipalKind::Jwt {
            subject: Some(subject),
        }) => format!("jwt:{subject}"),
        Some(PrincipalKind::Jwt { subject: None }) => "jwt".to_owned(),
        None => "anonymous".to_owned(),
    }
}

/// Counts the request in its tenant's usage and marks the response with
/// [`Accounted`].
pub async fn account(
    State(state): State<AppState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let Some(ctx) = request.extensions().get::<TenantContext>().cloned() else {
        return next.run(request).await;
    };
    let class = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(RouteClass::Other, |p| RouteClass::of(p.as_str()));
    let started = Instant::now();
    let at_ms = now_ms();
    let mut response = next.run(request).await;
    state.usage.record(
        ctx.tenant_id(),
        class,
        response.status().as_u16(),
        started.elapsed(),
        at_ms,
    );
    response.extensions_mut().insert(Accounted(ctx));
    response
}
