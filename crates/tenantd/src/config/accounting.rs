//! Configuration of limits, quotas, plans, usage, billing and metrics.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
pub use tenancy::ratelimit::OnStoreError;

use super::{Limits, Quotas};

/// Where rate-limit counters live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitStoreKind {
    /// In this process (one instance, or per-instance budgets).
    #[default]
    Memory,
    /// In Redis: every instance shares one budget per tenant.
    Redis,
}

/// Rate limits: where counters live, and the global default windows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Turns rate limiting off entirely (no counters, no headers).
    pub enabled: bool,
    /// `memory` (default) or `redis`.
    pub store: LimitStoreKind,
    /// Redis URL when `store: redis` (`TENANTD_REDIS_URL`).
    pub redis_url: Option<String>,
    /// Prefix of every Redis key: `<namespace>:{<tenant>}:rl:…`.
    pub redis_namespace: String,
    /// A Redis call slower than this counts as a store error.
    pub redis_timeout_ms: u64,
    /// What a request gets when the counter store fails: `allow` (with a
    /// warning) or `deny` (503).
    pub on_store_error: OnStoreError,
    /// Global default: requests per minute (overridden by the plan, then
    /// by the tenant). Unset: no limit.
    pub requests_per_minute: Option<u64>,
    /// Global default: requests per hour.
    pub requests_per_hour: Option<u64>,
    /// Global default: requests per day.
    pub requests_per_day: Option<u64>,
}

impl LimitsConfig {
    /// The global default windows.
    pub fn defaults(&self) -> Limits {
        Limits {
            requests_per_minute: self.requests_per_minute,
            requests_per_hour: self.requests_per_hour,
            requests_per_day: self.requests_per_day,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            store: LimitStoreKind::Memory,
            redis_url: None,
            redis_namespace: "tenantd".to_owned(),
            redis_timeout_ms: 100,
            on_store_error: OnStoreError::Allow,
            requests_per_minute: None,
            requests_per_hour: None,
            requests_per_day: None,
        }
    }
}

/// Prices of a plan, per unit, in `currency`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Prices {
    /// ISO currency code shown on usage reports.
    pub currency: Option<String>,
    /// Fixed monthly fee.
    pub base: Option<Decimal>,
    /// Per API call.
    pub api_call: Option<Decimal>,
    /// Per record written (created or replaced).
    pub record_written: Option<Decimal>,
    /// Per detection.
    pub detection: Option<Decimal>,
    /// Per gibibyte of stored records at the end of the month.
    pub storage_gb: Option<Decimal>,
}

/// A plan: default limits, quotas and prices for the tenants on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanConfig {
    /// Rate limits of the plan.
    pub limits: Limits,
    /// Quotas of the plan.
    pub quotas: Quotas,
    /// Prices; none means usage is reported without cost.
    pub prices: Prices,
}

/// Plans by name (`free`, `pro`, …).
pub type Plans = BTreeMap<String, PlanConfig>;

/// Usage recording.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// Counted requests are written in batches this often (and on
    /// shutdown).
    pub flush_ms: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self { flush_ms: 1000 }
    }
}

/// Billing events and their webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    /// Where month-close events are POSTed. Unset: events wait in the
    /// outbox until it is set.
    pub webhook_url: Option<String>,
    /// HMAC-SHA-256 key of the `X-Tenantd-Signature` header
    /// (`TENANTD_BILLING_WEBHOOK_SECRET`, at least 32 characters).
    pub webhook_secret: Option<String>,
    /// Close the previous month automatically once it has ended.
    pub auto_close: bool,
    /// First retry delay; doubled on each failure up to `retry_max_ms`.
    pub retry_base_ms: u64,
    /// Longest delay between attempts.
    pub retry_max_ms: u64,
    /// After this many failed attempts an event is marked `failed` (it
    /// stays in the outbox and can be retried by an operator).
    pub max_attempts: u32,
    /// Timeout of one delivery.
    pub timeout_ms: u64,
    /// How often the outbox is scanned for due events (a close wakes it
    /// at once).
    pub poll_ms: u64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_secret: None,
            auto_close: true,
            retry_base_ms: 5_000,
            retry_max_ms: 3_600_000,
            max_attempts: 25,
            timeout_ms: 10_000,
            poll_ms: 5_000,
        }
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics`.
    pub enabled: bool,
    /// Tenants with their own label (the busiest); the rest are `other`,
    /// so the series count stays bounded whatever the number of tenants.
    pub top_tenants: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            top_tenants: 20,
        }
    }
}
