//! The observer: the middleware around every route that feeds the metrics
//! and appends audit events.
//!
//! # What is audited
//!
//! - every mutating tenant request (`POST`, `PUT`, `PATCH`, `DELETE`)
//!   except `POST /records/search`, which only reads, once its tenant is
//!   known (a request refused before resolution acted on no tenant, and
//!   letting anonymous traffic write audit chains would let it flood them);
//! - every admin request (`/admin/…`) that carries the admin key, reads
//!   included: who looked at a tenant's keys or usage matters as much as
//!   who changed them. Requests without the key acted on nothing and are
//!   not written (they are in the request log and the metrics), so
//!   anonymous traffic can neither forge "admin" events into a tenant's
//!   chain nor grow the log.
//! - a request refused by the rate limiter is not written either: a
//!   tenant flooding over its limit must not load the audit writer.
//!
//! The event is appended before the response leaves (group-committed with
//! concurrent requests), so a client that saw its answer can rely on the
//! event being there.

use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tenancy::ratelimit::RateLimitOutcome;
use tenancy::{ErrorCode, TenantId};

use super::{NewEvent, SYSTEM_CHAIN, redact_params};
use crate::app::AppState;
use crate::clock::{now_ms, rfc3339_from_ms};
use crate::error::ApiError;
use crate::metrics::Observation;
use crate::usage::layer::Accounted;

/// Route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

fn mutating(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// Whether a request to `template` with `method` is audited.
pub fn audited(method: &Method, template: &str) -> bool {
    if template.starts_with("/admin/") || template == "/admin" {
        return true;
    }
    template != UNMATCHED && template != "/records/search" && mutating(method)
}

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

/// The chain of an admin event: the tenant acted on, when the request names
/// one that is a valid id; else the system chain.
fn admin_chain(template: &str, path: &str, body: &[u8]) -> String {
    let named = path_param(template, path, "id").or_else(|| {
        (template == "/admin/tenants")
            .then(|| serde_json::from_slice::<serde_json::Value>(body).ok())
            .flatten()
            .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
    });
    named
        .and_then(|id| TenantId::new(&id).ok())
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
    if !audited(&method, &template) {
        let response = next.run(request).await;
        observe_metrics(&state, &method, &template, &response, started);
        return response;
    }

    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    let request_id = header_text(&request, "x-request-id");
    let user_agent = header_text(&request, header::USER_AGENT.as_str());
    let (parts, body) = request.into_parts();
    let ip = tenancy::client_ip(&state.trusted_proxies, &parts).map(|ip| ip.to_string());
    // The body limit applies here as it would in the handler; the bytes are
    // handed on unchanged.
    let bytes: Bytes = match axum::body::to_bytes(body, state.config.server.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let response = ApiError::PayloadTooLarge(format!(
                "Request body is larger than {} bytes",
                state.config.server.max_body_bytes
            ))
            .into_response();
            observe_metrics(&state, &method, &template, &response, started);
            return response;
        }
    };
    let params = redact_params(query.as_deref(), &bytes);
    let admin_chain = (template.starts_with("/admin")
        && crate::tenants::http::presents_admin_key(&parts.headers, &state.config))
    .then(|| admin_chain(&template, &path, &bytes));
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    let status = response.status().as_u16();

    let limited =
        response.extensions().get::<RateLimitOutcome>() == Some(&RateLimitOutcome::Limited);
    let (chain, actor) = match (response.extensions().get::<Accounted>(), admin_chain) {
        (Some(accounted), _) if !limited => {
            (accounted.tenant().as_str().to_owned(), accounted.actor())
        }
        (None, Some(chain)) => (chain, "admin".to_owned()),
        _ => {
            observe_metrics(&state, &method, &template, &response, started);
            return response;
        }
    };
    let event = NewEvent {
        tenant: chain,
        at: rfc3339_from_ms(at_ms),
        at_ms,
        actor,
        action: action(&method, &template),
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
    fn reads_and_search_of_tenants_are_not_audited_admin_reads_are() {
        assert!(!audited(&Method::GET, "/records/{id}"));
        assert!(!audited(&Method::POST, "/records/search"));
        assert!(audited(&Method::POST, "/records"));
        assert!(audited(&Method::GET, "/admin/tenants"));
        assert!(!audited(&Method::POST, UNMATCHED));
    }

    #[test]
    fn admin_events_go_to_the_chain_of_the_tenant_acted_on() {
        assert_eq!(
            admin_chain(
                "/admin/tenants/{id}/api-keys",
                "/admin/tenants/acme/api-keys",
                b""
            ),
            "acme"
        );
        assert_eq!(
            admin_chain("/admin/tenants", "/admin/tenants", br#"{"id":"beta"}"#),
            "beta"
        );
        assert_eq!(
            admin_chain("/admin/tenants", "/admin/tenants", br#"{"id":"../x"}"#),
            SYSTEM_CHAIN
        );
        assert_eq!(
            admin_chain("/admin/billing/close", "/admin/billing/close", b""),
            SYSTEM_CHAIN
        );
    }
}
