//! Counting requests off the request path.
//!
//! A request adds to an in-memory cell (one short mutex hold, no I/O); a
//! background task writes the cells in one transaction every
//! `usage.flush_ms`. A failed write puts the figures back, and
//! [`UsageRecorder::stop`] flushes once more after the HTTP server has
//! drained, so a graceful shutdown loses no counted request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::task::OwnedTask;
use tenancy::TenantId;

use super::{DayStats, UsageBatch, UsageRepo, admin_usage, metric};
use crate::clock::{day_of_ms, month_of_ms};
use crate::store::{AdminStore, StoreError};

const DAY_MS: i64 = 86_400_000;

/// What kind of route a call hit (usage is reported per class), as the
/// route declares it ([`crate::routes::RouteFacts::usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `/records` create/read/replace/delete/list.
    Records,
    /// `/records/search`.
    Search,
    /// `/detect…`.
    Detections,
    /// `/tenant`, `/audit`: the tenant's own account.
    Account,
    /// Anything else.
    Other,
}

impl RouteClass {
    const ALL: [RouteClass; 5] = [
        Self::Records,
        Self::Search,
        Self::Detections,
        Self::Account,
        Self::Other,
    ];

    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Records => "records",
            Self::Search => "search",
            Self::Detections => "detections",
            Self::Account => "account",
            Self::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// `2xx`, `3xx`, `4xx`, `5xx`, and `429` apart (1xx counts as 2xx: nothing
/// here sends it). Rate-limited calls are their own class so a report can
/// show them and a price need not charge for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// Success.
    Success,
    /// Redirection.
    Redirect,
    /// Client error other than 429.
    ClientError,
    /// Server error.
    ServerError,
    /// Refused by a rate limit (429).
    RateLimited,
}

impl StatusClass {
    const ALL: [StatusClass; 5] = [
        Self::Success,
        Self::Redirect,
        Self::ClientError,
        Self::ServerError,
        Self::RateLimited,
    ];

    /// Of a status code.
    pub fn of(status: u16) -> Self {
        match status {
            500.. => Self::ServerError,
            429 => Self::RateLimited,
            400..=499 => Self::ClientError,
            300..=399 => Self::Redirect,
            _ => Self::Success,
        }
    }

    /// `2xx` …
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "2xx",
            Self::Redirect => "3xx",
            Self::ClientError => "4xx",
            Self::ServerError => "5xx",
            Self::RateLimited => "429",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default)]
struct Cell {
    calls: [[u64; 5]; 5],
    day: DayStats,
}

type Pending = HashMap<(TenantId, i64), Cell>;

/// The batched request counter.
#[derive(Debug, Default)]
pub struct UsageRecorder {
    pending: Mutex<Pending>,
    /// Serialises flushes so a batch put back after a failure cannot race
    /// a newer one.
    flushing: tokio::sync::Mutex<()>,
}

impl UsageRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock means a panic while adding integers; the map is
        // still consistent enough to count with.
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one answered request of `tenant` at unix ms `at_ms`.
    pub fn record(
        &self,
        tenant: &TenantId,
        class: RouteClass,
        status: u16,
        latency: Duration,
        at_ms: i64,
    ) {
        let status_class = StatusClass::of(status);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut pending = self.lock();
        let cell = pending
            .entry((tenant.clone(), at_ms.div_euclid(DAY_MS)))
            .or_default();
        cell.calls[class.index()][status_class.index()] += 1;
        cell.day.requests += 1;
        match status_class {
            StatusClass::ClientError | StatusClass::RateLimited => cell.day.client_errors += 1,
            StatusClass::ServerError => cell.day.server_errors += 1,
            _ => {}
        }
        cell.day.latency.record(micros);
    }

    /// API-call counters of `tenant` in `month` not yet written, named as
    /// stored (added to the stored ones, they give the figures as of now;
    /// a batch being written at that moment is briefly in neither).
    pub fn pending_counters(&self, tenant: &TenantId, month: &str) -> Vec<(String, u64)> {
        let pending = self.lock();
        let mut out = Vec::new();
        for ((t, day), cell) in pending.iter() {
            if t != tenant || month_of_ms(day * DAY_MS) != month {
                continue;
            }
            for class in RouteClass::ALL {
                for status in StatusClass::ALL {
                    let n = cell.calls[class.index()][status.index()];
                    if n > 0 {
                        out.push((
                            format!(
                                "{}:{}:{}",
                                metric::API_CALLS,
                                class.as_str(),
                                status.as_str()
                            ),
                            n,
                        ));
                    }
                }
            }
        }
        out
    }

    /// Requests waiting to be written.
    pub fn pending_requests(&self) -> u64 {
        self.lock().values().map(|c| c.day.requests).sum()
    }

    fn batch(pending: &Pending) -> UsageBatch {
        let mut batch = UsageBatch::default();
        for ((tenant, day), cell) in pending {
            let ms = day * DAY_MS;
            let month = month_of_ms(ms);
            for class in RouteClass::ALL {
                for status in StatusClass::ALL {
                    let n = cell.calls[class.index()][status.index()];
                    if n > 0 {
                        batch.counters.push((
                            tenant.clone(),
                            month.clone(),
                            format!(
                                "{}:{}:{}",
                                metric::API_CALLS,
                                class.as_str(),
                                status.as_str()
                            ),
                            n,
                        ));
                    }
                }
            }
            batch
                .days
                .push((tenant.clone(), day_of_ms(ms), cell.day.clone()));
        }
        batch
    }

    /// Writes everything counted so far. On failure the figures are kept
    /// for the next attempt.
    pub async fn flush(&self, store: &AdminStore) -> Result<(), StoreError> {
        let _turn = self.flushing.lock().await;
        let taken = std::mem::take(&mut *self.lock());
        if taken.is_empty() {
            return Ok(());
        }
        let batch = Self::batch(&taken);
        match admin_usage(store).add_usage(&batch).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let mut pending = self.lock();
                for (key, cell) in taken {
                    let mine = pending.entry(key).or_default();
                    for (row, theirs) in mine.calls.iter_mut().zip(cell.calls) {
                        for (a, b) in row.iter_mut().zip(theirs) {
                            *a += b;
                        }
                    }
                    mine.day.merge(&cell.day);
                }
                Err(e)
            }
        }
    }

    /// Starts the periodic flush; stopping the task flushes a last time.
    pub fn start(self: &Arc<Self>, store: AdminStore, every: Duration) -> OwnedTask {
        let recorder = self.clone();
        OwnedTask::spawn("usage recorder", move |token| async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = recorder.flush(&store).await {
                            tracing::warn!(error = %e, "writing usage counters failed; kept for the next flush");
                        }
                    }
                }
            }
            if let Err(e) = recorder.flush(&store).await {
                tracing::error!(error = %e, lost_requests = recorder.pending_requests(), "writing usage counters at shutdown failed");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(204), StatusClass::Success);
        assert_eq!(StatusClass::of(429), StatusClass::RateLimited);
        assert_eq!(StatusClass::of(404), StatusClass::ClientError);
        assert_eq!(StatusClass::of(503), StatusClass::ServerError);
    }

    #[test]
    fn batches_split_by_day_and_month() {
        let r = UsageRecorder::new();
        let t = TenantId::new("acme").expect("id");
        let last_ms_of_jan = crate::clock::parse_ms("2026-01-31T23:59:59.999000Z").expect("ms");
        r.record(
            &t,
            RouteClass::Records,
            201,
            Duration::from_millis(2),
            last_ms_of_jan,
        );
        r.record(
            &t,
            RouteClass::Records,
            500,
            Duration::from_millis(2),
            last_ms_of_jan + 1,
        );
        let batch = UsageRecorder::batch(&r.lock());
        let mut months: Vec<_> = batch
            .counters
            .iter()
            .map(|(_, m, metric, n)| (m.as_str(), metric.as_str(), *n))
            .collect();
        months.sort_unstable();
        assert_eq!(
            months,
            vec![
                ("2026-01", "api_calls:records:2xx", 1),
                ("2026-02", "api_calls:records:5xx", 1)
            ]
        );
        assert_eq!(batch.days.len(), 2);
        assert_eq!(r.pending_requests(), 2);
    }
}
