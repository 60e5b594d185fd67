//! The shapes a tenant's configuration shares with the tenants feature: its
//! state, and the rate-limit and quota overrides. Defined here, below both,
//! because the configuration's plans and static tenants use them and
//! `config` imports no feature; the tenants model re-exports them.
//!
//! Overrides are `Option` fields: a plan or a tenant sets only what differs
//! from the level below it (global defaults < plan < tenant).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Whether a tenant may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum TenantState {
    /// Serves requests.
    #[default]
    Active,
    /// Every request is 403 `tenant_suspended`; data is kept.
    Suspended,
}

impl TenantState {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

/// Rate limits per minute, hour and day; unset = the
/// plan's or the global default. Enforced by the rate-limit feature.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<u64>,
    /// Requests per hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_hour: Option<u64>,
    /// Requests per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_day: Option<u64>,
}

impl Limits {
    /// No window set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Quotas; unset = the plan's or the global default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// Records stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_records: Option<u64>,
    /// Megabytes of stored records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_storage_mb: Option<u64>,
    /// Detections per calendar month.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_detections_per_month: Option<u64>,
    /// Live API keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_api_keys: Option<u64>,
}
