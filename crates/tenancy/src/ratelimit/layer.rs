//! [`RateLimitLayer`]: enforces a [`LimitPolicy`] on every request that has
//! a tenant.
//!
//! It must sit inside the [`TenancyLayer`](crate::TenancyLayer) (added to
//! the router before it, so it runs after it): it reads the
//! [`TenantContext`] the tenancy layer put in the request extensions, i.e.
//! the authenticated, resolved tenant. A client cannot move its requests
//! to another budget by changing a header that resolution did not believe.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum_core::response::{IntoResponse, Response};
use http::{HeaderValue, Request, StatusCode, header};
use tower::{Layer, Service};

use super::{Decision, LimitPolicy, Outcome, RateLimiter, Subject};
use crate::context::TenantContext;
use crate::error::error_response;

/// What the rate limiter did to a request, put in the response extensions
/// so outer layers (metrics, access logs) can count rejections. Requests
/// without a tenant get none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateLimitOutcome {
    /// Admitted and counted.
    Allowed,
    /// Refused with 429.
    Limited,
    /// The store failed; the request was served (on_error = allow) or
    /// refused with 503 (on_error = deny): see the status.
    StoreError,
    /// The policy set no limits for this request.
    Unlimited,
}

/// Applies a [`LimitPolicy`] through a [`RateLimiter`].
#[derive(Clone)]
pub struct RateLimitLayer {
    limiter: Arc<RateLimiter>,
    policy: Arc<dyn LimitPolicy>,
}

impl std::fmt::Debug for RateLimitLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A layer that asks `policy` for each request's buckets and checks
    /// them with `limiter`.
    pub fn new(limiter: Arc<RateLimiter>, policy: Arc<dyn LimitPolicy>) -> Self {
        Self { limiter, policy }
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService {
            inner,
            limiter: self.limiter.clone(),
            policy: self.policy.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] wraps around the application.
#[derive(Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
    policy: Arc<dyn LimitPolicy>,
}

impl<S, B> Service<Request<B>> for RateLimitService<S>
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
        let limiter = self.limiter.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let Some(ctx) = req.extensions().get::<TenantContext>().cloned() else {
                return inner.call(req).await;
            };
            let buckets = policy.buckets(&ctx);
            if buckets.iter().all(|b| b.windows.is_empty()) {
                let mut response = inner.call(req).await?;
                response
                    .extensions_mut()
                    .insert(RateLimitOutcome::Unlimited);
                return Ok(response);
            }
            let outcome = limiter.check(ctx.tenant_id(), &buckets).await;
            let now_ms = limiter.clock().now_ms();
            match outcome {
                Outcome::Allowed(decision) => {
                    let mut response = inner.call(req).await?;
                    decision.apply_headers(response.headers_mut(), now_ms);
                    response.extensions_mut().insert(RateLimitOutcome::Allowed);
                    Ok(response)
                }
                Outcome::Limited(decision) => {
                    tracing::debug!(tenant_id = %ctx.tenant_id(), "rate limited");
                    Ok(limited(&decision, now_ms))
                }
                Outcome::Unavailable { allowed: true } => {
                    let mut response = inner.call(req).await?;
                    response
                        .extensions_mut()
                        .insert(RateLimitOutcome::StoreError);
                    Ok(response)
                }
                Outcome::Unavailable { allowed: false } => Ok(unavailable()),
            }
        })
    }
}

/// 429 with `{"detail", "code": "rate_limited", "retry_after"}` and headers.
fn limited(decision: &Decision, now_ms: u64) -> Response {
    // The window that refused: the tightest one has no room left.
    let detail = match decision.tightest() {
        Some(state) => {
            let whose = match state.subject {
                Subject::Tenant => "",
                Subject::Key(_) => " for this API key",
            };
            format!(
                "Rate limit exceeded: {} requests per {}{whose}",
                state.window.limit,
                state.window.name()
            )
        }
        None => "Rate limit exceeded".to_owned(),
    };
    let body = serde_json::json!({
        "detail": detail,
        "code": "rate_limited",
        "retry_after": decision.retry_after_secs,
    })
    .to_string();
    // `error_response`'s body plus `retry_after`, for clients that read
    // the body rather than the header.
    let mut response = (
        StatusCode::TOO_MANY_REQUESTS,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    decision.apply_headers(response.headers_mut(), now_ms);
    response.extensions_mut().insert(RateLimitOutcome::Limited);
    response
        .extensions_mut()
        .insert(crate::ErrorCode("rate_limited".to_owned()));
    response
}

/// 503 `rate_limit_unavailable` with `Retry-After: 1`.
fn unavailable() -> Response {
    let mut response = error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "rate_limit_unavailable",
        "Rate limiting is temporarily unavailable; retry shortly",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
        .extensions_mut()
        .insert(RateLimitOutcome::StoreError);
    response
}
