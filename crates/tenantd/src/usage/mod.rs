//! Usage: what each tenant did, per month and per day (the monthly usage
//! report and the daily tenant metrics).
//!
//! Two sources feed the same counters:
//! - writes a quota limits (records written, detections) are counted in
//!   the write's own transaction ([`count_in`]), so the figure that
//!   enforces `max_detections_per_month` is the figure billed;
//! - API calls are counted by [`UsageRecorder`] off the request path and
//!   written in batches (every `usage.flush_ms`, and on shutdown).

mod histogram;
pub mod http;
pub mod layer;
mod recorder;
mod repo;
pub mod report;
mod routed;

use async_trait::async_trait;
use tenancy::TenantId;

use crate::store::{StoreError, TenantStore};

pub use histogram::Histogram;
pub use recorder::{RouteClass, StatusClass, UsageRecorder};
pub use repo::{count_in, counter_in};
pub(crate) use routed::merge_counters;
pub use routed::{RoutedUsage, admin_usage};

/// A count as stored (saturating).
pub(crate) fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored count (a negative one reads as 0).
pub(crate) fn as_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The stored latency histogram text `stored` (none yet, or unreadable:
/// empty) with `added` merged in, as text to store.
pub(crate) fn merged_latency(
    stored: Option<&str>,
    added: &Histogram,
) -> Result<String, StoreError> {
    let mut latency: Histogram = stored
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    latency.merge(added);
    serde_json::to_string(&latency).map_err(|e| StoreError::Internal(e.to_string().into()))
}

/// A stored latency histogram, read back for a report.
pub(crate) fn parse_latency(stored: &str) -> Result<Histogram, StoreError> {
    serde_json::from_str(stored)
        .map_err(|_| StoreError::Internal("corrupt usage_daily latency".to_owned().into()))
}

/// Names of the monthly counters.
pub mod metric {
    /// Records created or replaced (by the API or by detections).
    pub const RECORDS_WRITTEN: &str = "records_written";
    /// Detections submitted (what `max_detections_per_month` limits).
    pub const DETECTIONS: &str = "detections";
    /// Prefix of API call counters: `api_calls:<route class>:<status class>`.
    pub const API_CALLS: &str = "api_calls";
}

/// One tenant's requests on one day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DayStats {
    /// Requests answered.
    pub requests: u64,
    /// Of which 4xx.
    pub client_errors: u64,
    /// Of which 5xx.
    pub server_errors: u64,
    /// Latency distribution.
    pub latency: Histogram,
}

impl DayStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &DayStats) {
        self.requests += other.requests;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.latency.merge(&other.latency);
    }
}

/// A batch of recorded usage, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct UsageBatch {
    /// `(tenant, month, metric, increment)`.
    pub counters: Vec<(TenantId, String, String, u64)>,
    /// `(tenant, day, figures to add)`.
    pub days: Vec<(TenantId, String, DayStats)>,
}

/// Usage storage. Administrative: the recorder writes many tenants at
/// once; reads name their tenant (tenant routes pass their own, through
/// [`TenantStore`]).
#[async_trait]
pub trait UsageRepo: Send + Sync {
    /// Adds a batch atomically.
    async fn add_usage(&self, batch: &UsageBatch) -> Result<(), StoreError>;
    /// Every counter of `tenant` in `month` (`YYYY-MM`).
    async fn month_counters(
        &self,
        tenant: &TenantId,
        month: &str,
    ) -> Result<Vec<(String, u64)>, StoreError>;
    /// Records stored and their bytes, now.
    async fn current_size(&self, tenant: &TenantId) -> Result<(u64, u64), StoreError>;
    /// Daily figures of `tenant` for days `start..=end` (`YYYY-MM-DD`).
    async fn daily(
        &self,
        tenant: &TenantId,
        start: &str,
        end: &str,
    ) -> Result<Vec<(String, DayStats)>, StoreError>;
    /// Tenants with any counter in `month`.
    async fn tenants_with_usage(&self, month: &str) -> Result<Vec<TenantId>, StoreError>;
}

/// A tenant's own usage (for `GET /tenant`).
impl TenantStore {
    /// This tenant's counters for `month`.
    pub async fn month_counters(&self, month: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let (scope, shared) = self.shared();
        let counters = shared.month_counters(scope.tenant(), month).await?;
        // A dedicated tenant's record writes are counted in its database.
        if !self.is_dedicated() {
            return Ok(counters);
        }
        let (scope, own) = self.records_db().await?;
        let own = own.month_counters(scope.tenant(), month).await?;
        Ok(merge_counters(counters, own))
    }

    /// This tenant's stored records and bytes (where its records are).
    pub async fn current_size(&self) -> Result<(u64, u64), StoreError> {
        let (scope, db) = self.records_db().await?;
        db.current_size(scope.tenant()).await
    }
}

/// The usage report of `tenant` (on `plan`) for `month`, from storage: the
/// month's counters and the records stored now.
pub async fn month_report(
    store: &crate::store::AdminStore,
    plans: &crate::limits::PlanBook,
    tenant: &TenantId,
    plan: &str,
    month: &str,
) -> Result<report::UsageReport, StoreError> {
    let usage = admin_usage(store);
    let counters = usage.month_counters(tenant, month).await?;
    let size = usage.current_size(tenant).await?;
    Ok(report::UsageReport::build(
        tenant.as_str(),
        month,
        plan,
        &counters,
        size,
        &plans.prices(plan),
    ))
}

/// What the report handlers (usage, billing, tenant views) read usage
/// through: the recorder is flushed first, so a report read next includes
/// the calls counted so far.
#[derive(Clone)]
pub struct UsageBook {
    recorder: std::sync::Arc<UsageRecorder>,
    store: crate::store::AdminStore,
    plans: std::sync::Arc<crate::limits::PlanBook>,
}

impl UsageBook {
    /// A book over `recorder`'s counters and `store`, priced by `plans`.
    pub fn new(
        recorder: std::sync::Arc<UsageRecorder>,
        store: crate::store::AdminStore,
        plans: std::sync::Arc<crate::limits::PlanBook>,
    ) -> Self {
        Self {
            recorder,
            store,
            plans,
        }
    }

    /// Writes the API calls counted so far. A failure is logged: the
    /// figures stay queued for the next flush and the report is only
    /// slightly behind.
    pub async fn flush(&self) {
        if let Err(e) = self.recorder.flush(&self.store).await {
            tracing::warn!(error = %e, "flushing usage counters failed; they stay queued");
        }
    }

    /// The usage report of `tenant` on `plan` for `month`.
    pub async fn report(
        &self,
        tenant: &TenantId,
        plan: &str,
        month: &str,
    ) -> Result<report::UsageReport, StoreError> {
        month_report(&self.store, &self.plans, tenant, plan, month).await
    }
}
