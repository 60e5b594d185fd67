//! Prometheus metrics (`GET /metrics`).
//!
//! Route-level series are labelled by route *template* (`/records/{id}`),
//! never by raw path, so their number is fixed by the router. Per-tenant
//! series are bounded too: at most `metrics.top_tenants` tenants get a
//! label of their own, every other tenant is counted under `other`, so a
//! million tenants still make `top_tenants + 1` series per metric.
//!
//! # Which tenants get a label
//!
//! Requests of unlabelled tenants are tallied in a candidate table of at
//! most [`CANDIDATES`] entries (further tenants are not tallied until the
//! next round). Every [`ROUND`] requests, the busiest candidates take the
//! free label slots and the table is cleared. A label, once given, is kept
//! for the life of the process: a counter series must not jump between
//! tenants, or `rate()` over it would be meaningless. So labels go to the
//! busiest tenants seen early; restart to re-rank.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tenancy::TenantId;

/// Most unlabelled tenants tallied per round.
pub const CANDIDATES: usize = 4_096;
/// Requests between two promotion rounds.
pub const ROUND: u64 = 1_000;

/// The label of every tenant without its own.
pub const OTHER: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteOnly {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantOnly {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Default)]
struct Ranking {
    labelled: HashSet<TenantId>,
    candidates: HashMap<TenantId, u64>,
    seen: u64,
}

/// What one answered request contributes.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Method.
    pub method: &'a str,
    /// Route template, or `unmatched`.
    pub route: &'a str,
    /// Status.
    pub status: u16,
    /// Time to answer.
    pub latency: Duration,
    /// The tenant, for tenant routes.
    pub tenant: Option<&'a TenantId>,
    /// The error code of an error response (`rate_limited`,
    /// `quota_exceeded`, `unavailable`, …).
    pub code: Option<&'a str>,
}

/// Every series tenantd exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteLabels, Counter>,
    latency: Family<RouteOnly, Histogram>,
    tenant_requests: Family<TenantLabels, Counter>,
    rate_limited: Family<TenantOnly, Counter>,
    quota_rejections: Family<TenantOnly, Counter>,
    store_errors: Counter,
    limiter_store_errors: Counter,
    jobs: Family<StateLabel, Gauge>,
    top: usize,
    ranking: Mutex<Ranking>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~16 s.
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

impl Metrics {
    /// Series with at most `top_tenants` tenant labels (plus `other`).
    pub fn new(top_tenants: usize) -> Self {
        let mut registry = Registry::with_prefix("tenantd");
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests answered, by route template, method and status",
            requests.clone(),
        );
        let latency: Family<RouteOnly, Histogram> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer, by route template and method",
            latency.clone(),
        );
        let tenant_requests = Family::<TenantLabels, Counter>::default();
        registry.register(
            "tenant_requests",
            "Tenant requests by tenant (top tenants, others as \"other\") and status class",
            tenant_requests.clone(),
        );
        let rate_limited = Family::<TenantOnly, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit (429), by tenant (top tenants, others as \"other\")",
            rate_limited.clone(),
        );
        let quota_rejections = Family::<TenantOnly, Counter>::default();
        registry.register(
            "quota_rejections",
            "Writes refused by a quota (403 quota_exceeded), by tenant",
            quota_rejections.clone(),
        );
        let store_errors = Counter::default();
        registry.register(
            "store_errors",
            "Requests that failed because storage was unavailable or failed (503/500)",
            store_errors.clone(),
        );
        let limiter_store_errors = Counter::default();
        registry.register(
            "ratelimit_store_errors",
            "Rate-limit checks the store (Redis) could not answer",
            limiter_store_errors.clone(),
        );
        let jobs = Family::<StateLabel, Gauge>::default();
        registry.register(
            "jobs",
            "Detection jobs waiting (pending) and running",
            jobs.clone(),
        );
        Self {
            registry,
            requests,
            latency,
            tenant_requests,
            rate_limited,
            quota_rejections,
            store_errors,
            limiter_store_errors,
            jobs,
            top: top_tenants,
            ranking: Mutex::new(Ranking::default()),
        }
    }

    fn ranking(&self) -> std::sync::MutexGuard<'_, Ranking> {
        // Poisoned only by a panic while counting; the tables stay usable.
        self.ranking
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The label of `tenant`: its id when it has a slot, else `other`.
    fn tenant_label(&self, tenant: &TenantId) -> String {
        let mut r = self.ranking();
        if r.labelled.contains(tenant.as_str()) {
            return tenant.as_str().to_owned();
        }
        if r.labelled.len() < self.top {
            let room = r.candidates.len() < CANDIDATES;
            if let Some(n) = r.candidates.get_mut(tenant.as_str()) {
                *n += 1;
            } else if room {
                r.candidates.insert(tenant.clone(), 1);
            }
            r.seen += 1;
            // The first round is promoted at once so a quiet deployment
            // still gets labels; then every ROUND requests.
            if r.labelled.is_empty() || r.seen >= ROUND {
                promote(&mut r, self.top);
                if r.labelled.contains(tenant.as_str()) {
                    return tenant.as_str().to_owned();
                }
            }
        }
        OTHER.to_owned()
    }

    /// Counts one answered request.
    pub fn observe(&self, o: &Observation<'_>) {
        let method = method_label(o.method);
        self.requests
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: o.route.to_owned(),
                status: o.status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteOnly {
                method: method.to_owned(),
                route: o.route.to_owned(),
            })
            .observe(o.latency.as_secs_f64());
        if let Some("unavailable" | "internal") = o.code {
            self.store_errors.inc();
        }
        let Some(tenant) = o.tenant else {
            return;
        };
        let label = self.tenant_label(tenant);
        let status_class = crate::usage::StatusClass::of(o.status).as_str();
        self.tenant_requests
            .get_or_create(&TenantLabels {
                tenant: label.clone(),
                status_class,
            })
            .inc();
        match o.code {
            Some("rate_limited") => {
                self.rate_limited
                    .get_or_create(&TenantOnly { tenant: label })
                    .inc();
            }
            Some("quota_exceeded") => {
                self.quota_rejections
                    .get_or_create(&TenantOnly { tenant: label })
                    .inc();
            }
            _ => {}
        }
    }

    /// Counts a rate-limit check the store could not answer.
    pub fn limiter_store_error(&self) {
        self.limiter_store_errors.inc();
    }

    /// Sets the job gauges.
    pub fn set_jobs(&self, pending: u64, running: u64) {
        self.jobs
            .get_or_create(&StateLabel { state: "pending" })
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.jobs
            .get_or_create(&StateLabel { state: "running" })
            .set(i64::try_from(running).unwrap_or(i64::MAX));
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("encoding metrics failed");
        }
        out
    }
}

/// Records every request's method, route, status, latency, tenant and
/// error code (the middleware around every route, outside the audit
/// observer, so an audited request's time includes its audit append).
pub async fn observe(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let template = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || crate::routes::UNMATCHED.to_owned(),
            |p| p.as_str().to_owned(),
        );
    let response = next.run(request).await;
    if response
        .extensions()
        .get::<tenancy::ratelimit::RateLimitOutcome>()
        == Some(&tenancy::ratelimit::RateLimitOutcome::StoreError)
    {
        metrics.limiter_store_error();
    }
    let tenant = response
        .extensions()
        .get::<crate::usage::layer::Accounted>()
        .map(crate::usage::layer::Accounted::tenant);
    let code = response
        .extensions()
        .get::<tenancy::ErrorCode>()
        .map(|c| c.0.as_str());
    metrics.observe(&Observation {
        method: method.as_str(),
        route: &template,
        status: response.status().as_u16(),
        latency: started.elapsed(),
        tenant,
        code,
    });
    response
}

/// `GET /metrics` (admin key required: the series name the busiest
/// tenants, which no tenant may learn about another).
pub fn routes() -> crate::routes::Routes {
    crate::routes::Routes::new().get(
        "/metrics",
        crate::routes::RouteFacts::admin().named("metrics.scrape"),
        scrape,
    )
}

async fn scrape(
    _: crate::tenants::http::Admin,
    axum::extract::State(store): axum::extract::State<crate::store::Store>,
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    match store.system_job_queue().depth().await {
        Ok((pending, running)) => metrics.set_jobs(pending, running),
        Err(e) => tracing::warn!(error = %e, "job queue depth unavailable for metrics"),
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}

/// The method label: the standard methods by name, anything else `other`
/// (a client may send any token as a method; labels must stay bounded).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// Gives free label slots to the busiest candidates and starts a new round.
fn promote(r: &mut Ranking, top: usize) {
    let free = top.saturating_sub(r.labelled.len());
    let mut ranked: Vec<(TenantId, u64)> = r.candidates.drain().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
    for (tenant, _) in ranked.into_iter().take(free) {
        r.labelled.insert(tenant);
    }
    r.seen = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observe(m: &Metrics, tenant: &str) {
        let id = TenantId::new(tenant).expect("valid id");
        m.observe(&Observation {
            method: "GET",
            route: "/records",
            status: 200,
            latency: Duration::from_millis(3),
            tenant: Some(&id),
            code: None,
        });
    }

    fn tenant_labels(text: &str) -> HashSet<String> {
        text.lines()
            .filter(|l| l.starts_with("tenantd_tenant_requests_total{"))
            .filter_map(|l| l.split("tenant=\"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn tenant_labels_stay_bounded_whatever_the_number_of_tenants() {
        let m = Metrics::new(5);
        for i in 0..20_000 {
            observe(&m, &format!("t{i}"));
        }
        let labels = tenant_labels(&m.encode());
        assert!(labels.len() <= 6, "{} labels: {labels:?}", labels.len());
        assert!(labels.contains(OTHER));
    }

    #[test]
    fn the_busiest_tenants_get_the_labels() {
        let m = Metrics::new(2);
        // Spread: every round, "hot" and "warm" dominate.
        for round in 0..3 {
            for i in 0..ROUND {
                let t = match i % 10 {
                    0..=4 => "hot".to_owned(),
                    5..=7 => "warm".to_owned(),
                    _ => format!("cold{round}x{i}"),
                };
                observe(&m, &t);
            }
        }
        let labels = tenant_labels(&m.encode());
        assert!(labels.contains("hot"), "{labels:?}");
        assert!(labels.contains("warm") || labels.len() == 3, "{labels:?}");
        assert!(labels.len() <= 3, "{labels:?}");
    }

    #[test]
    fn invented_methods_share_one_label() {
        let m = Metrics::new(1);
        for i in 0..100 {
            m.observe(&Observation {
                method: &format!("X{i}"),
                route: "unmatched",
                status: 405,
                latency: Duration::from_millis(1),
                tenant: None,
                code: None,
            });
        }
        let text = m.encode();
        assert!(
            text.contains("method=\"other\",route=\"unmatched\",status=\"405\"} 100"),
            "{text}"
        );
        assert!(!text.contains("X1"), "{text}");
    }

    #[test]
    fn route_series_use_templates_and_the_job_gauge_is_exported() {
        let m = Metrics::new(1);
        observe(&m, "a");
        m.set_jobs(4, 1);
        let text = m.encode();
        assert!(
            text.contains(
                "tenantd_http_requests_total{method=\"GET\",route=\"/records\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("tenantd_jobs{state=\"pending\"} 4"), "{text}");
        assert!(
            text.contains("tenantd_http_request_duration_seconds_bucket"),
            "{text}"
        );
    }
}
