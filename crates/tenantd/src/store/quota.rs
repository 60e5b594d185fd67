//! Quotas as storage enforces them: the limits a [`super::TenantScope`]
//! carries into every write's transaction, and the refusal when a write
//! would cross one. Resolving them (global, plan, tenant) is the limits
//! feature's business; storage only reads the result.

use serde::Serialize;
use tenancy::TenantId;
use utoipa::ToSchema;

/// The quotas in force for one tenant (`None` = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct QuotaLimits {
    /// Records stored.
    pub max_records: Option<u64>,
    /// Megabytes (MiB) of stored records.
    pub max_storage_mb: Option<u64>,
    /// Detections submitted per calendar month (UTC).
    pub max_detections_per_month: Option<u64>,
    /// Live (not revoked) API keys.
    pub max_api_keys: Option<u64>,
}

impl QuotaLimits {
    /// `max_storage_mb` in bytes.
    pub fn max_storage_bytes(&self) -> Option<u64> {
        self.max_storage_mb.map(|mb| mb.saturating_mul(1024 * 1024))
    }
}

/// A write refused because it would cross a quota.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Quota exceeded: {quota} is {limit}")]
pub struct QuotaExceeded {
    /// The quota's name (`max_records`, …).
    pub quota: &'static str,
    /// Its limit.
    pub limit: u64,
}

/// Where a [`crate::store::TenantScope`] learns its tenant's quotas.
pub trait QuotaSource: Send + Sync + 'static {
    /// The quotas in force for `tenant`.
    fn quotas(&self, tenant: &TenantId) -> QuotaLimits;
}

/// No quotas (tools, tests, and the store before the registry exists).
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

impl QuotaSource for Unlimited {
    fn quotas(&self, _tenant: &TenantId) -> QuotaLimits {
        QuotaLimits::default()
    }
}
