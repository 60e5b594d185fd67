//! Route facts, declared where each route is declared: who may call it
//! (public, the operator, or a tenant credential holding a scope) and
//! whether its JSON body may name the tenant.
//!
//! Feature modules build their routes with [`Routes`], whose only way to
//! add a route takes its [`RouteFacts`]: a route without facts cannot be
//! written. [`RouteTable`] keeps them by (method, path template), and the
//! outermost middleware ([`tag_request`]) puts each request's facts in its
//! extensions, where the tenancy layer (body tenant), the scope check and
//! the audit observer read them. Nothing infers what a route is from its
//! path string. See `docs/architecture.md`, "Route facts".

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use tenancy::{Principal, PrincipalKind, TenantContext};

use crate::app::AppState;
use crate::error::ApiError;
use crate::usage::RouteClass;

/// The route label of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The action of a route that was given none (a unit test keeps every
/// route named).
pub const UNNAMED: &str = "unnamed";

/// What a tenant credential may do. A key with scopes may call exactly the
/// routes whose scope it holds (`<resource>:write` includes
/// `<resource>:read`); a key without scopes is unrestricted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Read, list and search records.
    RecordsRead,
    /// Create, replace and delete records.
    RecordsWrite,
    /// List detection jobs and read their status.
    DetectionsRead,
    /// Submit and cancel detection jobs.
    DetectionsWrite,
    /// Read the tenant's own profile, limits, quotas and usage.
    TenantRead,
    /// Read the tenant's audit log.
    AuditRead,
}

impl Scope {
    /// Every scope, in the order the docs list them.
    pub const ALL: [Scope; 6] = [
        Scope::RecordsRead,
        Scope::RecordsWrite,
        Scope::DetectionsRead,
        Scope::DetectionsWrite,
        Scope::TenantRead,
        Scope::AuditRead,
    ];

    /// The scope's name as keys carry it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::RecordsRead => "records:read",
            Self::RecordsWrite => "records:write",
            Self::DetectionsRead => "detections:read",
            Self::DetectionsWrite => "detections:write",
            Self::TenantRead => "tenant:read",
            Self::AuditRead => "audit:read",
        }
    }

    /// The scope named `name`, if it is one of ours.
    pub fn parse(name: &str) -> Option<Scope> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether holding `self` allows a route that needs `needed`.
    fn grants(self, needed: Scope) -> bool {
        self == needed
            || matches!(
                (self, needed),
                (Self::RecordsWrite, Self::RecordsRead)
                    | (Self::DetectionsWrite, Self::DetectionsRead)
            )
    }

    /// Whether the scope allows changes (routes needing it are audited).
    pub const fn writes(self) -> bool {
        matches!(self, Self::RecordsWrite | Self::DetectionsWrite)
    }

    /// Every scope's name, for error messages and docs.
    pub fn vocabulary() -> String {
        Self::ALL.map(Scope::as_str).join(", ")
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, the API description).
    Public,
    /// The operator, with the admin key. Every call is audited.
    Admin,
    /// A tenant, with a credential that holds the scope (when the
    /// credential is restricted at all).
    Tenant(Scope),
}

/// The facts of one route (method and path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteFacts {
    /// Who may call it.
    pub access: Access,
    /// Whether the JSON body's `tenant_id` names the tenant (read by the
    /// tenancy layer before anything runs as the tenant).
    pub body_tenant: bool,
    /// The audit action of a call (`<resource>.<verb>`: `records.create`,
    /// `api_keys.rotate`), named with the route ([`RouteFacts::named`]).
    pub action: &'static str,
    /// Which usage counter a tenant's call adds to.
    pub usage: RouteClass,
}

impl RouteFacts {
    /// A route anyone may call.
    pub const fn public() -> Self {
        Self {
            access: Access::Public,
            body_tenant: false,
            action: UNNAMED,
            usage: RouteClass::Other,
        }
    }

    /// An operator route (admin key).
    pub const fn admin() -> Self {
        Self {
            access: Access::Admin,
            body_tenant: false,
            action: UNNAMED,
            usage: RouteClass::Other,
        }
    }

    /// A tenant route needing `scope`; its calls count as the usage class
    /// of the scope's resource.
    pub const fn tenant(scope: Scope) -> Self {
        Self {
            access: Access::Tenant(scope),
            body_tenant: false,
            action: UNNAMED,
            usage: match scope {
                Scope::RecordsRead | Scope::RecordsWrite => RouteClass::Records,
                Scope::DetectionsRead | Scope::DetectionsWrite => RouteClass::Detections,
                Scope::TenantRead | Scope::AuditRead => RouteClass::Account,
            },
        }
    }

    /// The route's JSON body may name the tenant (`tenant_id`).
    pub const fn body_tenant(mut self) -> Self {
        self.body_tenant = true;
        self
    }

    /// The route's audit action (`<resource>.<verb>`).
    pub const fn named(mut self, action: &'static str) -> Self {
        self.action = action;
        self
    }

    /// Counts the route's calls as `usage` instead of its scope's class.
    pub const fn counted_as(mut self, usage: RouteClass) -> Self {
        self.usage = usage;
        self
    }

    /// The scope a tenant credential needs, for tenant routes.
    pub const fn scope(&self) -> Option<Scope> {
        match self.access {
            Access::Tenant(scope) => Some(scope),
            Access::Public | Access::Admin => None,
        }
    }

    /// Whether calls are written to the audit log: every operator call,
    /// and tenant calls that change something.
    pub const fn audited(&self) -> bool {
        match self.access {
            Access::Admin => true,
            Access::Tenant(scope) => scope.writes(),
            Access::Public => false,
        }
    }
}

/// Routes with their facts; the only way features add routes.
pub struct Routes {
    router: Router<AppState>,
    facts: Vec<(Method, &'static str, RouteFacts)>,
}

impl Default for Routes {
    fn default() -> Self {
        Self::new()
    }
}

impl Routes {
    /// No routes yet.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            facts: Vec::new(),
        }
    }

    fn add<H, T>(mut self, method: Method, path: &'static str, facts: RouteFacts, h: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        let filter = match method {
            Method::GET => MethodFilter::GET,
            Method::POST => MethodFilter::POST,
            Method::PUT => MethodFilter::PUT,
            Method::PATCH => MethodFilter::PATCH,
            _ => MethodFilter::DELETE,
        };
        self.router = self.router.route(path, on(filter, h));
        self.facts.push((method, path, facts));
        self
    }

    /// `GET path` (and `HEAD`).
    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        facts: RouteFacts,
        h: H,
    ) -> Self {
        self.add(Method::GET, path, facts, h)
    }

    /// `POST path`.
    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        facts: RouteFacts,
        h: H,
    ) -> Self {
        self.add(Method::POST, path, facts, h)
    }

    /// `PUT path`.
    pub fn put<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        facts: RouteFacts,
        h: H,
    ) -> Self {
        self.add(Method::PUT, path, facts, h)
    }

    /// `PATCH path`.
    pub fn patch<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        facts: RouteFacts,
        h: H,
    ) -> Self {
        self.add(Method::PATCH, path, facts, h)
    }

    /// `DELETE path`.
    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        facts: RouteFacts,
        h: H,
    ) -> Self {
        self.add(Method::DELETE, path, facts, h)
    }

    /// Both sets of routes.
    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.facts.extend(other.facts);
        self
    }

    /// The router and the facts of its routes.
    pub fn into_parts(self) -> (Router<AppState>, RouteTable) {
        let mut table = RouteTable::default();
        for (method, path, facts) in self.facts {
            table.0.entry(path).or_default().push((method, facts));
        }
        (self.router, table)
    }
}

/// The facts of every route, by (method, path template).
#[derive(Debug, Default, Clone)]
pub struct RouteTable(HashMap<&'static str, Vec<(Method, RouteFacts)>>);

impl RouteTable {
    /// The facts of `method` on `template` (`HEAD` is served by `GET`).
    pub fn get(&self, method: &Method, template: &str) -> Option<RouteFacts> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.0
            .get(template)?
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, facts)| *facts)
    }

    /// Adds `other`'s routes.
    pub fn extend(&mut self, other: RouteTable) {
        for (path, methods) in other.0 {
            self.0.entry(path).or_default().extend(methods);
        }
    }

    /// Every route with its facts.
    pub fn iter(&self) -> impl Iterator<Item = (&Method, &'static str, &RouteFacts)> {
        self.0
            .iter()
            .flat_map(|(path, methods)| methods.iter().map(move |(m, f)| (m, *path, f)))
    }
}

/// Puts the matched route's [`RouteFacts`] in the request extensions. It
/// runs outermost, so every later layer reads the same facts.
pub async fn tag_request(table: Arc<RouteTable>, mut request: Request, next: Next) -> Response {
    let facts = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| table.get(request.method(), p.as_str()));
    if let Some(facts) = facts {
        request.extensions_mut().insert(facts);
    }
    next.run(request).await
}

/// Whether `principal` may call a route needing `needed`. API keys with
/// scopes are held to them. A JWT is held to the tenantd scopes in its
/// `scope` claim; one that carries none of ours (an identity provider's
/// `openid profile`) is unrestricted, as a key without scopes is.
pub fn permits(principal: &Principal, needed: Option<Scope>) -> bool {
    let mut held = principal
        .scopes()
        .iter()
        .map(|s| (s, Scope::parse(s)))
        .peekable();
    if held.peek().is_none() {
        return true;
    }
    let jwt = matches!(principal.kind(), PrincipalKind::Jwt { .. });
    let ours: Vec<Scope> = held.filter_map(|(_, parsed)| parsed).collect();
    if jwt && ours.is_empty() {
        return true;
    }
    // A restricted credential on a route without a scope: refuse.
    needed.is_some_and(|needed| ours.iter().any(|s| s.grants(needed)))
}

/// Refuses a request whose credential lacks the route's scope (403
/// `insufficient_scope`). Runs inside the tenancy layer, the metering and
/// the rate limiter, so a refused call still counts as the tenant's.
pub async fn require_scope(request: Request, next: Next) -> Response {
    let needed = request
        .extensions()
        .get::<RouteFacts>()
        .and_then(RouteFacts::scope);
    let principal = request
        .extensions()
        .get::<TenantContext>()
        .and_then(TenantContext::principal);
    if let Some(principal) = principal
        && !permits(principal, needed)
    {
        return ApiError::InsufficientScope(needed.map(Scope::as_str)).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenancy::TenantId;

    fn key(scopes: &[&str]) -> Principal {
        Principal::new(
            TenantId::new("acme").unwrap_or_else(|_| unreachable!()),
            PrincipalKind::ApiKey {
                key_id: "key_1".into(),
            },
            scopes.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
    }

    fn jwt(scopes: &[&str]) -> Principal {
        Principal::new(
            TenantId::new("acme").unwrap_or_else(|_| unreachable!()),
            PrincipalKind::Jwt { subject: None },
            scopes.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
    }

    #[test]
    fn scopes_round_trip_and_write_includes_read() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert!(Scope::RecordsWrite.grants(Scope::RecordsRead));
        assert!(!Scope::RecordsRead.grants(Scope::RecordsWrite));
        assert!(!Scope::RecordsWrite.grants(Scope::DetectionsRead));
    }

    #[test]
    fn keys_are_held_to_their_scopes() {
        assert!(permits(&key(&[]), Some(Scope::RecordsWrite)));
        assert!(permits(&key(&[]), None));
        let read = key(&["records:read"]);
        assert!(permits(&read, Some(Scope::RecordsRead)));
        assert!(!permits(&read, Some(Scope::RecordsWrite)));
        assert!(!permits(&read, Some(Scope::AuditRead)));
        assert!(!permits(&read, None));
        // A key whose only scope is unknown can do nothing.
        assert!(!permits(&key(&["everything"]), Some(Scope::RecordsRead)));
    }

    #[test]
    fn tokens_without_our_scopes_are_unrestricted() {
        assert!(permits(
            &jwt(&["openid", "profile"]),
            Some(Scope::RecordsWrite)
        ));
        let read = jwt(&["openid", "records:read"]);
        assert!(permits(&read, Some(Scope::RecordsRead)));
        assert!(!permits(&read, Some(Scope::RecordsWrite)));
    }
}
