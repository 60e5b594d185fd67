//! [`TenantContext`]: the decided tenant of one request, handed to handlers
//! and from them to storage.

use std::sync::Arc;

use crate::auth::Principal;
use crate::id::TenantId;
use crate::resolve::TenantSource;

/// The tenant a request (or a background task) acts for, and how that was
/// decided. Storage is reachable only through one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    tenant_id: TenantId,
    source: TenantSource,
    principal: Option<Arc<Principal>>,
}

impl TenantContext {
    /// A context for `tenant_id`, found by `source`.
    ///
    /// Request contexts are made by the tenancy layer; background work
    /// builds one with [`TenantSource::Stored`] from the row it acts on, so
    /// a job's output inherits the job's tenant, never a request's.
    pub fn new(tenant_id: TenantId, source: TenantSource) -> Self {
        Self {
            tenant_id,
            source,
            principal: None,
        }
    }

    /// This context, acting as `principal` (whose tenant it must be).
    pub fn with_principal(mut self, principal: Principal) -> Self {
        debug_assert_eq!(principal.tenant_id(), &self.tenant_id);
        self.principal = Some(Arc::new(principal));
        self
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
