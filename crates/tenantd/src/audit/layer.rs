//! The observer: the middleware around every route that feeds the metrics
//! and appends audit events.
//!
//! # What is audited
//!
//! What a route is comes from its declared [`RouteFacts`], never from its
//! path:
//!
//! - every tenant request on a route that changes something (a `:write`
//!   scope), once its tenant is decided, in that tenant's chain (a request
//!   refused before a tenant was decided acted on no tenant, and letting
//!   anonymous traffic write audit chains would let it flood them);
//! - every operator request (admin routes) that carries the admin key,
//!   reads included: who looked at a tenant's keys or usage matters as much
//!   as who changed them. A success goes to the chain of the tenant acted
//!   on; a refusal (any 4xx/5xx) to the operator's chain only, so a tenant
//!   never reads what someone else tried against it (a duplicate create's
//!   rejected body, say);
//! - every failed admin authentication (401 on an admin route), in the
//!   operator's chain as `admin.auth_failed`. The admin-key lockout bounds
//!   how many one address can cause.
//! - a request refused by the rate limiter is not written: a tenant
//!   flooding over its limit must not load the audit writer.
//!
//! The request body is never read here: the handler (or the tenancy layer)
//! reads it inside the request timeout, and the observer keeps a bounded
//! copy of what was read for the event's redacted parameters.
//!
//! The event is appended before the response leaves (group-committed with
//! concurrent requests), so a client that saw its answer can rely on the
//! event being there.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use tenancy::ratelimit::RateLimitOutcome;
use tenancy::{ErrorCode, TenantId};

use super::{NewEvent, SYSTEM_CHAIN, capture, redact_params};
use crate::app::AppState;
use crate::clock::{now_ms, rfc3339_from_ms};
use crate::metrics::Observation;
use crate::routes::{Access, RouteFacts};
use crate::tenants::admin_key::presents_admin_key;
use crate::usage::layer::{Accounted, DecidedTenant};

/// Route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The tenant an operator request acted on, when a handler names it in
/// its response (a create, whose id is in the body, not the path).
#[derive(Debug, Clone)]
pub struct AuditTenant(pub TenantId);

/// The action name of a route: `<resource>.<verb>`, e.g. `records.create`,
/// `api_keys.rotate`, `usage.read`.
pub fn action(method: &Method, template: &str) -> String {
    let literals: Vec<&str> = template
        .split('/')
        .filter(|s| !s.is_empty() && !s.starts_with('{') && *s != "admin")
        .collect();
    let resource_name = |s: &str| match s {
        "detect" => "detections".to_owned(),
        other => other.replace('-', "_"),
    };
    match literals.as_slice() {
        [
            ..,
            resource,
            verb @ ("submit" | "cancel" | "rotate" | "close"),
        ] => {
            format!("{}.{verb}", resource_name(resource))
        }
        [.., resource] => {
            let verb = match *method {
                Method::POST => "create",
                Method::PUT => "replace",
                Method::PATCH => "update",
                Method::DELETE => {
                    if template.ends_with("{key_id}") {
                        "revoke"
                    } else {
                        "delete"
                    }
                }
                _ => "read",
            };
            let verb = if *resource == "api-keys" && *method == Method::POST {
                "issue"
            } else {
                verb
            };
            format!("{}.{verb}", resource_name(resource))
        }
        [] => format!("{}.root", method.as_str().to_ascii_lowercase()),
    }
}

/// The `{id}` segment of an admin path, when the template has one.
fn path_param(template: &str, path: &str, name: &str) -> Option<String> {
    let placeholder = format!("{{{name}}}");
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(t, _)| *t == placeholder)
        .map(|(_, p)| p.to_owned())
}

/// The chain of an operator event: the tenant acted on when the request
/// succeeded (named by the handler, or the `{id}` of the path), else the
/// operator's own chain.
fn admin_chain(template: &str, path: &str, response: &Response) -> String {
    if response.status().is_client_error() || response.status().is_server_error() {
        return SYSTEM_CHAIN.to_owned();
    }
    response
        .extensions()
        .get::<AuditTenant>()
        .map(|t| t.0.clone())
        .or_else(|| path_param(template, path, "id").and_then(|id| TenantId::new(&id).ok()))
        .map_or_else(|| SYSTEM_CHAIN.to_owned(), |id| id.as_str().to_owned())
}

fn header_text(request: &Request<Body>, name: &str) -> Option<String> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect())
}

/// Metrics for every request; an audit event for audited ones.
pub async fn observe(
    State(state): State<AppState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    let at_ms = now_ms();
    let method = request.method().clone();
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |p| p.as_str().to_owned());
    let facts = request.extensions().get::<RouteFacts>().copied();
    let Some(facts) = facts.filter(RouteFacts::audited) else {
        let response = next.run(request).await;
        observe_metrics(&state, &method, &template, &response, started);
        return response;
    };

    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let request_id = header_text(&request, "x-request-id");
    let user_agent = header_text(&request, header::USER_AGENT.as_str());
    let (parts, body) = request.into_parts();
    let ip = tenancy::client_ip(&state.trusted_proxies, &parts)
        .ok()
        .flatten()
        .map(|ip| ip.to_string());
    let operator = facts.access == Access::Admin;
    let admin_key = operator && presents_admin_key(&parts.headers, &state.config);
    let (body, seen) = capture::tee(body, state.config.server.max_body_bytes);
    let mut request = Request::from_parts(parts, body);
    // Filled by the accounting layer as soon as the tenant is decided, so a
    // request that then timed out or panicked (its response made outside
    // that layer) is still audited as its tenant.
    let decided = DecidedTenant::default();
    request.extensions_mut().insert(decided.clone());
    let response = next.run(request).await;
    let status = response.status().as_u16();

    let limited =
        response.extensions().get::<RateLimitOutcome>() == Some(&RateLimitOutcome::Limited);
    let accounted = response
        .extensions()
        .get::<Accounted>()
        .cloned()
        .or_else(|| decided.get().map(Accounted));
    let (chain, actor, action) = match accounted {
        Some(accounted) if !operator && !limited => (
            accounted.tenant().as_str().to_owned(),
            accounted.actor(),
            action(&method, &template),
        ),
        _ if admin_key => (
            admin_chain(&template, &path, &response),
            "admin".to_owned(),
            action(&method, &template),
        ),
        _ if operator && status == 401 && state.admin_auth.audit_permit(now_ms()) => (
            SYSTEM_CHAIN.to_owned(),
            "anonymous".to_owned(),
            "admin.auth_failed".to_owned(),
        ),
        _ => {
            observe_metrics(&state, &method, &template, &response, started);
            return response;
        }
    };
    let params = redact_params(query.as_deref(), &seen.bytes());
    let event = NewEvent {
        tenant: chain,
        at: rfc3339_from_ms(at_ms),
        at_ms,
        actor,
        action,
        target: Some(path),
        request_id,
        ip,
        user_agent,
        status,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        params,
    };
    state.audit.append(event).await;
    observe_metrics(&state, &method, &template, &response, started);
    response
}

fn observe_metrics(
    state: &AppState,
    method: &Method,
    template: &str,
    response: &Response,
    started: Instant,
) {
    if response.extensions().get::<RateLimitOutcome>() == Some(&RateLimitOutcome::StoreError) {
        state.metrics.limiter_store_error();
    }
    let tenant = response
        .extensions()
        .get::<Accounted>()
        .map(Accounted::tenant);
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.as_str());
    state.metrics.observe(&Observation {
        method: method.as_str(),
        route: template,
        status: response.status().as_u16(),
        latency: started.elapsed(),
        tenant,
        code,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_are_named_by_resource_and_verb() {
        let cases = [
            (Method::POST, "/records", "records.create"),
            (Method::PUT, "/records/{id}", "records.replace"),
            (Method::DELETE, "/records/{id}", "records.delete"),
            (Method::POST, "/detect/submit", "detections.submit"),
            (Method::POST, "/detect/{id}/cancel", "detections.cancel"),
            (Method::POST, "/admin/tenants", "tenants.create"),
            (Method::PATCH, "/admin/tenants/{id}", "tenants.update"),
            (Method::DELETE, "/admin/tenants/{id}", "tenants.delete"),
            (Method::GET, "/admin/tenants/{id}", "tenants.read"),
            (
                Method::POST,
                "/admin/tenants/{id}/api-keys",
                "api_keys.issue",
            ),
            (
                Method::DELETE,
                "/admin/tenants/{id}/api-keys/{key_id}",
                "api_keys.revoke",
            ),
            (
                Method::POST,
                "/admin/tenants/{id}/api-keys/{key_id}/rotate",
                "api_keys.rotate",
            ),
            (Method::POST, "/admin/billing/close", "billing.close"),
            (Method::GET, "/admin/tenants/{id}/usage", "usage.read"),
        ];
        for (method, template, expected) in cases {
            assert_eq!(action(&method, template), expected, "{method} {template}");
        }
    }

    #[test]
    fn operator_refusals_go_to_the_operator_chain() {
        let ok = Response::new(Body::empty());
        assert_eq!(
            admin_chain(
                "/admin/tenants/{id}/api-keys",
                "/admin/tenants/acme/api-keys",
                &ok
            ),
            "acme"
        );
        let mut created = Response::new(Body::empty());
        created
            .extensions_mut()
            .insert(AuditTenant(TenantId::new("beta").expect("valid")));
        assert_eq!(
            admin_chain("/admin/tenants", "/admin/tenants", &created),
            "beta"
        );
        let mut refused = Response::new(Body::empty());
        *refused.status_mut() = axum::http::StatusCode::CONFLICT;
        assert_eq!(
            admin_chain("/admin/tenants/{id}", "/admin/tenants/acme", &refused),
            SYSTEM_CHAIN
        );
        assert_eq!(
            admin_chain("/admin/billing/close", "/admin/billing/close", &ok),
            SYSTEM_CHAIN
        );
    }
}
