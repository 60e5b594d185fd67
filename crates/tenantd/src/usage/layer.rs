//! The tenant routes' accounting middleware: sits inside the tenancy layer
//! (so it knows the authenticated tenant) and outside the rate limiter (so
//! refused requests are counted too). It records usage and tells the outer
//! observer who the request was for.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tenancy::{PrincipalKind, TenantContext, TenantId};

use super::RouteClass;
use super::UsageRecorder;
use crate::clock::Clock;
use crate::routes::RouteFacts;

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

/// The tenant a request was decided for, shared with the audit observer
/// before the request runs: a request that times out or panics gets its
/// response from outer layers, without [`Accounted`], and must still be
/// audited as its tenant.
#[derive(Debug, Clone, Default)]
pub struct DecidedTenant(Arc<OnceLock<TenantContext>>);

impl DecidedTenant {
    /// The decided tenant, once the accounting layer saw it.
    pub fn get(&self) -> Option<TenantContext> {
        self.0.get().cloned()
    }
}

/// Counts a request that never completed (its future was dropped by the
/// timeout, or it panicked) as a 503 of its tenant.
struct Unfinished<'a> {
    usage: &'a UsageRecorder,
    ctx: &'a TenantContext,
    class: RouteClass,
    started: Instant,
    at_ms: i64,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.usage.record(
                self.ctx.tenant_id(),
                self.class,
                503,
                self.started.elapsed(),
                self.at_ms,
            );
        }
    }
}

/// What the accounting layer holds: the recorder and the clock (a narrow
/// state, so a request clones two handles, not the application's state).
#[derive(Clone)]
pub struct AccountState {
    /// Where API calls are counted.
    pub usage: Arc<UsageRecorder>,
    /// When a request arrived.
    pub clock: Clock,
}

/// Counts the request in its tenant's usage and marks the response with
/// [`Accounted`].
pub async fn account(
    State(AccountState { usage, clock }): State<AccountState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let Some(ctx) = request.extensions().get::<TenantContext>().cloned() else {
        return next.run(request).await;
    };
    if let Some(decided) = request.extensions().get::<DecidedTenant>() {
        let _ = decided.0.set(ctx.clone());
    }
    let class = request
        .extensions()
        .get::<RouteFacts>()
        .map_or(RouteClass::Other, |facts| facts.usage);
    let mut unfinished = Unfinished {
        usage: &usage,
        ctx: &ctx,
        class,
        started: Instant::now(),
        at_ms: clock.now_ms(),
        done: false,
    };
    let mut response = next.run(request).await;
    unfinished.done = true;
    usage.record(
        ctx.tenant_id(),
        class,
        response.status().as_u16(),
        unfinished.started.elapsed(),
        unfinished.at_ms,
    );
    drop(unfinished);
    response.extensions_mut().insert(Accounted(ctx));
    response
}
