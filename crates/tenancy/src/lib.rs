//! Multi-tenancy for axum/tower services.
//!
//! Every request belongs to exactly one tenant. This crate decides which:
//!
//! - [`TenantId`]: a validated tenant name, safe in SQL, paths, logs and keys.
//! - [`TenantResolver`]: where a request's tenant comes from (header, query,
//!   body, a constant, a chain, or a deployment's own resolver).
//! - [`TenantPolicy`]: the operator's rules (enabled, default tenant,
//!   required, allow-list), checked into a [`Policy`].
//! - [`Authenticator`], [`PlainKey`], [`KeyHasher`]: credentials (API keys
//!   in seed 002's `{tenant}_sk_…` format, JWTs) proving a request's tenant.
//! - [`TenantDirectory`]: the registry's view on the request path (exists,
//!   active, IP allow-list).
//! - [`TenancyLayer`] and the [`Tenant`] extractor: the tower/axum glue that
//!   answers refusals with JSON errors and hands handlers a
//!   [`TenantContext`].
//! - [`ratelimit`]: per-tenant and per-key rate limits (sliding window
//!   counter, in memory or Redis) and the layer that enforces them.
//!
//! It holds no SQL and no server: storage and HTTP routes are the
//! embedding service's, reached only through a [`TenantContext`].
//!
//! ```
//! use tenancy::{TenancyLayer, TenantPolicy};
//! let layer = TenancyLayer::builder(TenantPolicy { enabled: true, ..Default::default() })
//!     .build()?;
//! assert!(layer.is_exempt("/health/ready"));
//! # Ok::<(), tenancy::PolicyError>(())
//! ```

mod auth;
mod body;
mod context;
mod directory;
mod error;
mod forwarded;
mod id;
mod keys;
mod layer;
mod policy;
pub mod ratelimit;
mod resolve;

pub use auth::{AuthError, Authenticator, Credential, Principal, PrincipalKind, bearer_token};
pub use body::is_json_content_type;
pub use context::TenantContext;
pub use directory::{TenantDirectory, TenantStatus};
pub use error::{ErrorCode, TenancyError, error_response};
pub use forwarded::client_ip;
pub use id::{InvalidTenantId, MAX_TENANT_ID_LEN, TENANT_ID_RULE, TenantId, is_valid};
pub use ipnet::IpNet;
pub use keys::{
    KEY_MARKER, KeyHash, KeyHasher, PlainKey, SECRET_LEN, random_base62, secrets_match,
};
pub use layer::{
    BodyTenantRead, DEFAULT_BODY_LIMIT, DEFAULT_EXEMPT_PATHS, TenancyLayer, TenancyLayerBuilder,
    TenancyService, Tenant,
};
pub use policy::{DEFAULT_TENANT, Policy, PolicyError, TenantPolicy};
pub use resolve::{
    BodyResolver, Candidate, ChainResolver, HeaderResolver, QueryResolver, ResolveInput,
    StaticResolver, TenantResolver, TenantSource,
};
