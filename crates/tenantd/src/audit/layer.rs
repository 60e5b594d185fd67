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
//! concurrent requests), within the request's deadline. A request that
//! commits a write parks its event in the same transaction (see
//! [`crate::store::outbox`]), so a client that saw a write acknowledged can
//! rely on its event, even if the database or the process stops before the
//! event reaches its chain.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use tenancy::TenantId;
use tenancy::ratelimit::RateLimitOutcome;

use super::AuditLog;
use super::{NewEvent, OutboxRef, SYSTEM_CHAIN, UNANSWERED, capture, new_event_id, redact_params};
use crate::clock::rfc3339_from_ms;
use crate::routes::{Access, RouteFacts};
use crate::store::outbox::{self, PendingAudit};
use crate::tenants::admin_key::AdminGate;
use crate::tenants::admin_key::presents_admin_key;
use crate::usage::layer::{Accounted, DecidedTenant};

/// The tenant an operator request acted on, when a handler names it in
/// its response (a create, whose id is in the body, not the path).
#[derive(Debug, Clone)]
pub struct AuditTenant(pub TenantId);

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

fn header_text(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(512).collect())
}

/// What the observer knows of an audited request before its handler runs,
/// and the request's side of parking its event with a write (see
/// [`crate::store::outbox`]).
struct RequestAudit {
    id: String,
    at_ms: i64,
    started: Instant,
    action: String,
    path: String,
    template: String,
    query: Option<String>,
    request_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    operator: bool,
    seen: capture::Seen,
    /// The redacted parameters, made once: at the first write's commit
    /// (the handler has read its body by then) or after the response.
    params: std::sync::OnceLock<String>,
    decided: DecidedTenant,
    parked: std::sync::Mutex<Option<OutboxRef>>,
}

impl RequestAudit {
    fn parked(&self) -> Option<OutboxRef> {
        self.parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The event with `chain`, `actor` and `action`, answered `status`.
    fn event(&self, chain: String, actor: String, action: String, status: u16) -> NewEvent {
        NewEvent {
            id: self.id.clone(),
            tenant: chain,
            at: rfc3339_from_ms(self.at_ms),
            at_ms: self.at_ms,
            actor,
            action,
            target: Some(self.path.clone()),
            request_id: self.request_id.clone(),
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
            status,
            duration_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            params: self
                .params
                .get_or_init(|| redact_params(self.query.as_deref(), &self.seen.bytes()))
                .clone(),
            outbox: self.parked(),
        }
    }

    /// The chain and actor a write committing now is recorded under: the
    /// decided tenant's, or for an operator the tenant of the path (a
    /// create's new tenant is only known from its response: the system
    /// chain until then).
    fn provisional(&self) -> Option<(String, String)> {
        if self.operator {
            let chain = path_param(&self.template, &self.path, "id")
                .and_then(|id| TenantId::new(&id).ok())
                .map_or_else(|| SYSTEM_CHAIN.to_owned(), |t| t.as_str().to_owned());
            return Some((chain, "admin".to_owned()));
        }
        let accounted = Accounted(self.decided.get()?);
        Some((accounted.tenant().as_str().to_owned(), accounted.actor()))
    }
}

impl PendingAudit for RequestAudit {
    fn event(&self) -> Option<NewEvent> {
        if self.parked().is_some() {
            return None;
        }
        let (chain, actor) = self.provisional()?;
        Some(self.event(chain, actor, self.action.clone(), UNANSWERED))
    }

    fn parked(&self, outbox: OutboxRef) {
        *self
            .parked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(outbox);
    }
}

/// What the observer reads: a substate of the application's state.
#[derive(Clone)]
pub struct ObserverState {
    /// The admin check's view (configuration, clock, lockout, proxies).
    pub gate: AdminGate,
    /// The appender.
    pub audit: AuditLog,
}

impl RequestAudit {
    /// Starts the audit of `request` (arrived at `at_ms`, `started`): its
    /// body is teed for the parameters, and the slot the accounting layer
    /// fills with the decided tenant goes into its extensions. Returns the
    /// audit and the request to run.
    fn begin(
        state: &ObserverState,
        request: Request<Body>,
        facts: RouteFacts,
        at_ms: i64,
        started: Instant,
    ) -> (Arc<Self>, Request<Body>) {
        let template = request.extensions().get::<MatchedPath>().map_or_else(
            || crate::routes::UNMATCHED.to_owned(),
            |p| p.as_str().to_owned(),
        );
        let (parts, body) = request.into_parts();
        let admin_key =
            facts.access == Access::Admin && presents_admin_key(&parts.headers, &state.gate.config);
        let (body, seen) = capture::tee(body, state.gate.config.server.max_body_bytes);
        // Filled by the accounting layer as soon as the tenant is decided,
        // so a request that then timed out or panicked (its response made
        // outside that layer) is still audited as its tenant.
        let decided = DecidedTenant::default();
        let audit = Arc::new(Self {
            id: new_event_id(),
            at_ms,
            started,
            action: facts.action.to_owned(),
            path: parts.uri.path().to_owned(),
            template,
            query: parts.uri.query().map(str::to_owned),
            request_id: header_text(&parts.headers, "x-request-id"),
            ip: tenancy::client_ip(&state.gate.trusted_proxies, &parts)
                .ok()
                .flatten()
                .map(|ip| ip.to_string()),
            user_agent: header_text(&parts.headers, header::USER_AGENT.as_str()),
            operator: admin_key,
            seen,
            params: std::sync::OnceLock::new(),
            decided: decided.clone(),
            parked: std::sync::Mutex::new(None),
        });
        let mut request = Request::from_parts(parts, body);
        request.extensions_mut().insert(decided);
        (audit, request)
    }

    /// The chain, actor and action the answered request is recorded
    /// under, or `None` when it is not recorded. `admin_route`: the route
    /// is an operator route (whether or not the admin key came with it).
    fn attribution(
        &self,
        state: &ObserverState,
        admin_route: bool,
        response: &Response,
    ) -> Option<(String, String, String)> {
        let status = response.status().as_u16();
        let limited =
            response.extensions().get::<RateLimitOutcome>() == Some(&RateLimitOutcome::Limited);
        let accounted = response
            .extensions()
            .get::<Accounted>()
            .cloned()
            .or_else(|| self.decided.get().map(Accounted));
        match accounted {
            Some(accounted) if !admin_route && !limited => Some((
                accounted.tenant().as_str().to_owned(),
                accounted.actor(),
                self.action.clone(),
            )),
            _ if self.operator => Some((
                admin_chain(&self.template, &self.path, response),
                "admin".to_owned(),
                self.action.clone(),
            )),
            _ if admin_route
                && status == 401
                && state
                    .gate
                    .admin_auth
                    .audit_permit(state.gate.clock.now_ms()) =>
            {
                Some((
                    SYSTEM_CHAIN.to_owned(),
                    "anonymous".to_owned(),
                    "admin.auth_failed".to_owned(),
                ))
            }
            // A request that parked its event with a write is always
            // chained.
            _ => self
                .provisional()
                .filter(|_| self.parked().is_some())
                .map(|(chain, actor)| (chain, actor, self.action.clone())),
        }
    }
}

/// Metrics for every request; an audit event for audited ones.
///
/// The event is appended before the response leaves, but never past the
/// request's deadline (arrival plus the request timeout): an event the
/// writer has not committed by then is written later, and one whose
/// request committed a write is already durable in an outbox.
pub async fn observe(
    State(state): State<ObserverState>,
    request: Request<Body>,
    next: Next,
) -> Response {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started)
        + std::time::Duration::from_secs(state.gate.config.server.request_timeout_secs);
    let at_ms = state.gate.clock.now_ms();
    let facts = request.extensions().get::<RouteFacts>().copied();
    let Some(facts) = facts.filter(RouteFacts::audited) else {
        return next.run(request).await;
    };
    let admin_route = facts.access == Access::Admin;
    let (audit, request) = RequestAudit::begin(&state, request, facts, at_ms, started);
    let response = outbox::with_pending(audit.clone(), next.run(request)).await;
    if let Some((chain, actor, action)) = audit.attribution(&state, admin_route, &response) {
        let event = audit.event(chain, actor, action, response.status().as_u16());
        state.audit.append(event, deadline).await;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

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
