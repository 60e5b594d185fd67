//! [`TenantContext`]: the decided tenant of one request, handed to handlers
//! and from them to storage.

use crate::id::TenantId;
use crate::resolve::TenantSource;

/// The tenant a request (or a background task) acts for, and how that was
/// decided. Storage is reachable only through one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantContext {
    tenant_id: TenantId,
    source: TenantSource,
}

impl TenantContext {
    /// A context for `tenant_id`, found by `source`.
    ///
    /// Request contexts are made by the tenancy layer; background work
    /// builds one with [`TenantSource::Stored`] from the row it acts on, so
    /// a job's output inherits the job's tenant, never a request's.
    pub fn new(tenant_id: TenantId, source: TenantSource) -> Self {
        Self { tenant_id, source }
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
