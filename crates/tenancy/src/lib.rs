//! Multi-tenancy for axum/tower services: every request belongs to exactly
//! one tenant, decided once, before your handlers run.
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_tenancy::{Tenant, TenancyLayer, TenantPolicy};
//!
//! let app: Router = Router::new()
//!     .route("/whoami", get(|Tenant(ctx): Tenant| async move { ctx.tenant_id().to_string() }))
//!     // Every request must name its tenant (X-Tenant-ID or ?tenant_id=);
//!     // refusals are JSON 4xx: {"detail": "...", "code": "tenant_required"}.
//!     .layer(TenancyLayer::builder(TenantPolicy::required()).build()?);
//! # Ok::<(), tower_tenancy::PolicyError>(())
//! ```
//!
//! The pieces, each replaceable:
//!
//! - [`TenantId`]: a validated tenant name, safe in SQL, paths, logs and
//!   keys.
//! - [`TenantResolver`]: where a request's tenant comes from: header,
//!   query, JSON body, host name ([`SubdomainResolver`]), path prefix
//!   ([`PathPrefixResolver`]), a constant, a chain of them, or your own.
//! - [`TenantPolicy`]: required, optional with a default, or a single
//!   tenant; an allow-list. There is no default policy.
//! - [`Authenticator`], [`PlainKey`], [`KeyHasher`]: credentials (API keys
//!   in the `{tenant}_sk_…` format, JWTs) proving a request's tenant; a
//!   credential's tenant wins over every tenant the request names.
//! - [`TenantDirectory`]: your list of tenants as the request path sees it
//!   (exists, active, IP allow-list).
//! - [`TenancyLayer`], the [`Tenant`] extractor and (feature `json`)
//!   `TenantJson`: the tower/axum glue that answers refusals (as JSON,
//!   or your way with [`TenancyLayerBuilder::on_refusal`]) and hands
//!   handlers a [`TenantContext`], which only the layer can make.
//! - [`ratelimit`]: per-tenant and per-key rate limits (sliding window
//!   counter, in memory or Redis with feature `redis`) and the layer that
//!   enforces them.
//!
//! It holds no SQL and no server: storage and routes are yours, reached
//! through a [`TenantContext`].
//!
//! Cargo features: `json` (`TenantJson`, `BodyTenant`), `redis`
//! (`ratelimit::RedisStore`), `testing` (`TenantContext::for_testing`, for
//! dev-dependencies only).

mod auth;
mod body;
mod context;
mod directory;
mod error;
mod extract;
mod forwarded;
mod id;
mod keys;
mod layer;
mod policy;
pub mod ratelimit;
mod resolve;
mod service;

pub use auth::{AuthError, Authenticator, Credential, Principal, PrincipalKind, bearer_token};
pub use body::is_json_content_type;
pub use context::TenantContext;
pub use directory::{TenantDirectory, TenantStatus};
pub use error::{ErrorCode, TenancyError, error_response};
pub use extract::Tenant;
#[cfg(feature = "json")]
pub use extract::{BodyTenant, TenantJson, TenantJsonRejection};
pub use forwarded::client_ip;
pub use id::{InvalidTenantId, MAX_TENANT_ID_LEN, TENANT_ID_RULE, TenantId, is_valid};
pub use ipnet::IpNet;
pub use keys::{
    KEY_MARKER, KeyHash, KeyHasher, PlainKey, SECRET_LEN, random_base62, secrets_match,
};
pub use layer::{DEFAULT_BODY_LIMIT, DEFAULT_EXEMPT_PATHS, TenancyLayer, TenancyLayerBuilder};
pub use policy::{PolicyError, TenantPolicy};
pub use resolve::{
    BodyResolver, Candidate, ChainResolver, HeaderResolver, PathPrefixResolver, QueryResolver,
    ResolveInput, StaticResolver, SubdomainResolver, TenantResolver, TenantSource,
};
pub use service::{BodyTenantRead, TenancyService};

/// The README's examples, compiled (and run where they do not serve) as
/// doctests, so the front page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
