//! The application: shared state, the router, and the middleware stack.
//!
//! Order of the stack, outermost first (`docs/architecture.md`, "The
//! request pipeline"):
//! request id → trace span (with `request_id`, later `tenant_id`) → panic
//! catcher → JSON-error normaliser → body limit → route facts → observer
//! (metrics, audit) → panic catcher → timeout → routes, where the tenant
//! routes sit behind the [`TenancyLayer`], the usage accounting, the rate
//! limiter and the scope check.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::extract::FromRef;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tenancy::{TenancyLayer, TenantResolver};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::audit::AuditLog;
use crate::billing::BillingWorker;
use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;
use crate::keys::auth::CredentialVerifier;
use crate::metrics::Metrics;
use crate::routes::{RouteFacts, Routes};
use crate::store::Store;
use crate::tenants::admin_key::{AdminGate, AuthFailures};
use crate::tenants::registry::Registry;
use crate::tenants::service::TenantAdmin;
use crate::usage::UsageBook;
use crate::usage::UsageRecorder;
use crate::{audit, billing, health, jobs, keys, limits, openapi, records, tenants, usage};

/// Everything the handlers and middleware can reach, shared: axum clones
/// the router's state for every request, so it is one reference count
/// ([`AppParts`] behind an `Arc`). Each handler takes only the parts it
/// needs (`State<Store>`, `State<TenantAdmin>`, …): every field is its own
/// substate.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    /// The shared state over `parts`.
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// Each field of [`AppParts`] as a substate of [`AppState`].
macro_rules! substates {
    ($($field:ident: $ty:ty),* $(,)?) => {
        $(
            impl FromRef<AppState> for $ty {
                fn from_ref(state: &AppState) -> Self {
                    state.$field.clone()
                }
            }
        )*
    };
}

substates! {
    store: Store,
    config: Arc<Config>,
    jobs_notify: Arc<tokio::sync::Notify>,
    admin: TenantAdmin,
    usage: Arc<UsageRecorder>,
    usage_book: UsageBook,
    audit: AuditLog,
    metrics: Arc<Metrics>,
    billing: BillingWorker,
    trusted_proxies: Arc<[tenancy::IpNet]>,
    admin_auth: Arc<AuthFailures>,
    clock: Clock,
}

/// What [`AppState`] shares.
pub struct AppParts {
    /// Storage; handlers use it only through `store.scoped(&tenant)`.
    pub store: Store,
    /// The effective configuration.
    pub config: Arc<Config>,
    /// Wakes idle detection workers when a job is submitted.
    pub jobs_notify: Arc<tokio::sync::Notify>,
    /// Tenant and key administration (admin API).
    pub admin: TenantAdmin,
    /// API calls counted off the request path, written in batches.
    pub usage: Arc<UsageRecorder>,
    /// Usage figures as reports read them (the recorder flushed first).
    pub usage_book: UsageBook,
    /// The audit appender.
    pub audit: AuditLog,
    /// Prometheus series.
    pub metrics: Arc<Metrics>,
    /// Month closing and billing webhook delivery.
    pub billing: BillingWorker,
    /// `server.trusted_proxies`, parsed once (the observer reads it on
    /// every audited request).
    pub trusted_proxies: Arc<[tenancy::IpNet]>,
    /// Failed admin authentications per client address (lockout).
    pub admin_auth: Arc<AuthFailures>,
    /// The one clock: every wall-clock reading of a handler or middleware.
    pub clock: Clock,
}

impl FromRef<AppState> for AdminGate {
    fn from_ref(state: &AppState) -> Self {
        Self {
            config: state.config.clone(),
            clock: state.clock.clone(),
            admin_auth: state.admin_auth.clone(),
            trusted_proxies: state.trusted_proxies.clone(),
        }
    }
}

impl FromRef<AppState> for audit::layer::ObserverState {
    fn from_ref(state: &AppState) -> Self {
        Self {
            gate: AdminGate::from_ref(state),
            audit: state.audit.clone(),
        }
    }
}

/// Request ids are ULIDs: sortable, and unique without coordination.
#[derive(Clone, Copy, Default)]
struct MakeUlid;

impl MakeRequestId for MakeUlid {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::new().to_string())
            .ok()
            .map(RequestId::new)
    }
}

fn request_span(request: &Request<Body>) -> Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        tenant_id = tracing::field::Empty,
    )
}

fn log_response<B>(response: &axum::http::Response<B>, latency: Duration, _span: &Span) {
    tracing::info!(
        status = response.status().as_u16(),
        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
        "request finished"
    );
}

/// Gives every error response the JSON shape, including those made by
/// layers and the framework (405, timeouts, panics) that know nothing of
/// it.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return response;
    }
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "No such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "Method not allowed on this route")
        }
        StatusCode::PAYLOAD_TOO_LARGE => (
            "payload_too_large",
            "Request body is larger than the configured limit",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            ("unavailable", "The request took too long and was abandoned")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "Unsupported content type")
        }
        s if s.is_server_error() => ("internal", "Internal server error"),
        _ => ("bad_request", "The request could not be read"),
    };
    let mut out = tenancy::error_response(status, code, detail);
    if let Some(allow) = response.headers().get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

fn panic_response(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let text = cause
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| cause.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::Internal(format!("handler panicked: {text}")).into_response()
}

async fn not_found() -> ApiError {
    ApiError::NotFound("No such route".to_owned())
}

/// Builds the tenancy layer from the configured policy, the credential
/// verifier, the registry, and an optional custom resolver (the default is
/// header → query → body).
pub fn tenancy_layer(
    config: &Config,
    resolver: Option<Box<dyn TenantResolver>>,
    verifier: CredentialVerifier,
    registry: Arc<Registry>,
) -> anyhow::Result<TenancyLayer> {
    let resolver = match resolver {
        Some(resolver) => resolver,
        None => Box::new(config.tenant.resolver()?),
    };
    let builder = TenancyLayer::builder(config.tenant.policy())
        .resolver(resolver)
        .authenticator(verifier)
        .require_credentials(config.auth.required)
        .directory(registry)
        .trusted_proxies(config.trusted_proxies())
        .body_limit(config.server.max_body_bytes)
        .body_tenant_routes(|parts| {
            parts
                .extensions
                .get::<RouteFacts>()
                .is_some_and(|facts| facts.body_tenant)
        });
    Ok(builder.build()?)
}

/// Every route with its facts: tenant routes (behind the tenancy layer)
/// and the rest.
fn all_routes(state: &AppState) -> (Routes, Routes) {
    let tenant = records::http::routes()
        .merge(jobs::http::routes())
        .merge(limits::http::routes())
        .merge(audit::http::tenant_routes());
    let mut other = health::routes()
        .merge(tenants::http::routes())
        .merge(keys::http::routes())
        .merge(usage::http::routes())
        .merge(billing::http::routes())
        .merge(audit::http::admin_routes());
    if state.config.metrics.enabled {
        other = other.merge(crate::metrics::routes());
    }
    (tenant, other)
}

/// The whole HTTP application. `ratelimit` is `None` when limits are off.
///
/// Tenant routes, outermost first: tenancy (decide the tenant, from the
/// body too on routes declared so, and authenticate) → accounting (usage;
/// sees refused requests too) → rate limit → scope check → handler.
/// Around every route, outermost first: route facts → metrics → audit
/// observer → timeout (bodies are read inside it) → routes.
pub fn router(
    state: AppState,
    tenancy: TenancyLayer,
    ratelimit: Option<tenancy::ratelimit::RateLimitLayer>,
) -> Router {
    let max_body = state.config.server.max_body_bytes;
    let timeout = Duration::from_secs(state.config.server.request_timeout_secs);
    let (tenant_routes, other_routes) = all_routes(&state);
    let (tenant_routes, mut table) = tenant_routes.into_parts();
    let (other_routes, other_table) = other_routes.into_parts();
    table.extend(other_table);
    // The API description is made from every route's facts, its own
    // included.
    let (docs_route, docs_table) = openapi::routes(&table).into_parts();
    table.extend(docs_table);
    let other_routes = other_routes.merge(docs_route);
    let table = Arc::new(table);
    let mut tenant_routes =
        tenant_routes.route_layer(axum::middleware::from_fn(crate::routes::require_scope));
    if let Some(ratelimit) = ratelimit {
        tenant_routes = tenant_routes.route_layer(ratelimit);
    }
    let tenant_routes = tenant_routes
        .route_layer(axum::middleware::from_fn_with_state(
            usage::layer::AccountState {
                usage: state.usage.clone(),
                clock: state.clock.clone(),
            },
            usage::layer::account,
        ))
        .route_layer(tenancy);
    let app = other_routes.merge(tenant_routes);
    app.fallback(not_found)
        // Inside the observer, so a timed-out or panicking request is still
        // counted, metered and audited with the status it got; around every
        // body read (the tenancy layer's and the handlers'), so a slow body
        // is bounded too.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        // Each middleware holds only its own state: a request clones a few
        // handles, not the whole application state.
        .layer(axum::middleware::from_fn_with_state(
            audit::layer::ObserverState::from_ref(&state),
            audit::layer::observe,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::observe,
        ))
        .layer(axum::middleware::from_fn(move |request, next| {
            crate::routes::tag_request(table.clone(), request, next)
        }))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeUlid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_request(())
                        .on_response(log_response)
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                // A last resort for a panic in the observer itself.
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(axum::middleware::map_response(json_errors)),
        )
}
