//! [`TenantContext`]: the decided tenant of one request, handed to handlers
//! and from them to storage.

use std::sync::Arc;

use crate::auth::Principal;
use crate::id::TenantId;
use crate::resolve::TenantSource;

/// The tenant a request acts for, and how that was decided.
///
/// Only the tenancy layer makes one (through the policy, after the
/// resolver, the credential and the directory had their say), so holding a
/// `TenantContext` proves the request was admitted for that tenant: a
/// storage layer that takes one, rather than a bare [`TenantId`], cannot be
/// handed a tenant nobody checked. Handlers get it from the
/// [`crate::Tenant`] extractor; it is cheap to clone into work that
/// outlives the request.
///
/// Tests build one with `TenantContext::for_testing` (cargo feature
/// `testing`; enable it in `[dev-dependencies]` only).
///
/// ```
/// use axum::{Router, routing::get};
/// use tower_tenancy::{Tenant, TenancyLayer, TenantPolicy, TenantSource};
///
/// async fn whoami(Tenant(ctx): Tenant) -> String {
///     let how = match ctx.source() {
///         TenantSource::Credential => "proven by a credential",
///         TenantSource::Default => "the default tenant",
///         _ => "named by the request",
///     };
///     format!("{} ({how})", ctx.tenant_id())
/// }
///
/// let layer = TenancyLayer::builder(TenantPolicy::required()).build()?;
/// let app: Router = Router::new().route("/whoami", get(whoami)).layer(layer);
/// # Ok::<(), tower_tenancy::PolicyError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    tenant_id: TenantId,
    source: TenantSource,
    principal: Option<Arc<Principal>>,
}

impl TenantContext {
    /// A context for `tenant_id`, found by `source`: made by the policy
    /// only.
    pub(crate) fn new(tenant_id: TenantId, source: TenantSource) -> Self {
        Self {
            tenant_id,
            source,
            principal: None,
        }
    }

    /// This context, acting as `principal` (whose tenant it is: the layer
    /// decided the tenant from it).
    pub(crate) fn with_principal(mut self, principal: Principal) -> Self {
        debug_assert_eq!(principal.tenant_id(), &self.tenant_id);
        self.principal = Some(Arc::new(principal));
        self
    }

    /// A context for `tenant_id` as if `source` had named it, for tests of
    /// code that takes a context (storage, handlers called directly).
    /// Behind the `testing` feature so that production code cannot mint
    /// one.
    #[cfg(feature = "testing")]
    pub fn for_testing(tenant_id: TenantId, source: TenantSource) -> Self {
        Self::new(tenant_id, source)
    }

    /// A context acting as `principal`, in its tenant, as if its
    /// credential had been verified.
    #[cfg(feature = "testing")]
    pub fn for_testing_as(principal: Principal) -> Self {
        Self::new(principal.tenant_id().clone(), TenantSource::Credential).with_principal(principal)
    }

    /// The authenticated principal, when the request carried a credential.
    pub fn principal(&self) -> Option<&Principal> {
        self.principal.as_deref()
    }

    /// The tenant.
    pub fn tenant_id(&self) -> &TenantId {
        &self.tenant_id
    }

    /// How the tenant was found.
    pub fn source(&self) -> TenantSource {
        self.source
    }
}
