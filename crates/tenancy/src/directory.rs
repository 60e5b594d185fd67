//! [`TenantDirectory`]: the service's list of tenants as the request path
//! sees it: does the tenant exist, is it active, may this address use it.
//!
//! Lookups are synchronous on purpose: an implementation answers from
//! memory (a cache it refreshes on its own schedule), never with a
//! database round trip per request.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::id::TenantId;

/// What the directory knows of a tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantStatus {
    /// No such tenant.
    Unknown,
    /// It exists and may be used (from addresses in `allowed_ips`, if that
    /// list is non-empty).
    Active {
        /// CIDR allow-list; empty means any address.
        allowed_ips: Arc<[IpNet]>,
        /// The tenant holds credentials (API keys, an identity provider):
        /// a request that names it without presenting one is refused, since
        /// anyone can write a header. Directories set it `false` only for
        /// tenants without credentials, or that opted into header access.
        credential_required: bool,
    },
    /// It exists but is suspended: every request is 403.
    Suspended,
}

impl TenantStatus {
    /// Whether `ip` may act for this tenant (`None` = address unknown, which
    /// only passes when there is no allow-list).
    pub fn admits(&self, ip: Option<IpAddr>) -> bool {
        match self {
            Self::Active { allowed_ips, .. } => {
                allowed_ips.is_empty()
                    || ip.is_some_and(|ip| allowed_ips.iter().any(|net| net.contains(&ip)))
            }
            Self::Unknown | Self::Suspended => false,
        }
    }

    /// Whether a request must carry a credential to act for this tenant.
    pub fn requires_credential(&self) -> bool {
        matches!(
            self,
            Self::Active {
                credential_required: true,
                ..
            }
        )
    }
}

/// The tenants that exist, read by the tenancy layer for every decided
/// tenant ([`crate::TenancyLayerBuilder::directory`]): unknown is 404
/// `tenant_not_found`, suspended 403 `tenant_suspended`, an address
/// outside the allow-list 403 `ip_not_allowed`.
pub trait TenantDirectory: Send + Sync + 'static {
    /// Whether checks apply at all right now. A directory may answer
    /// `false` while it holds no tenant, so that a new deployment serves
    /// requests before its first tenant is created.
    fn enforced(&self) -> bool {
        true
    }

    /// The status of `tenant`, from memory.
    fn status(&self, tenant: &TenantId) -> TenantStatus;
}
