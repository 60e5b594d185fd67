//! Reports built from the counters: the monthly usage report with cost
//! (`GET /admin/tenants/{id}/usage`) and per-day request metrics
//! (`GET /admin/tenants/{id}/metrics`).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{DayStats, Histogram, metric};
use crate::config::Prices;

/// API calls of a month.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApiCalls {
    /// All calls.
    pub total: u64,
    /// Calls that count towards the price: all but those refused by a rate
    /// limit (429), which the tenant did not get served.
    pub billable: u64,
    /// Route class → status class (`2xx`, `4xx`, …) → calls.
    pub by_class: BTreeMap<String, BTreeMap<String, u64>>,
}

/// One priced line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CostLine {
    /// `base`, `api_calls`, `records_written`, `detections`, `storage_gb`.
    pub item: String,
    /// Units counted.
    #[schema(value_type = String)]
    pub quantity: Decimal,
    /// Price per unit.
    #[schema(value_type = String)]
    pub unit_price: Decimal,
    /// quantity × unit price.
    #[schema(value_type = String)]
    pub amount: Decimal,
}

/// The cost of a month under the tenant's plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Cost {
    /// Currency of every amount.
    pub currency: String,
    /// Priced lines (only items the plan prices).
    pub lines: Vec<CostLine>,
    /// Sum of the lines.
    #[schema(value_type = String)]
    pub total: Decimal,
}

/// A tenant's usage in one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UsageReport {
    /// The tenant.
    pub tenant_id: String,
    /// `YYYY-MM` (UTC).
    pub month: String,
    /// The plan the cost is computed with.
    pub plan: String,
    /// Calls to tenant routes.
    pub api_calls: ApiCalls,
    /// Records created or replaced.
    pub records_written: u64,
    /// Detections submitted.
    pub detections: u64,
    /// Records stored now.
    pub records: u64,
    /// Bytes of stored records now.
    pub storage_bytes: u64,
    /// Cost, when the plan has prices.
    pub cost: Option<Cost>,
}

const GIB: u64 = 1 << 30;

impl UsageReport {
    /// Builds the report from a month's counters and the current size.
    pub fn build(
        tenant_id: &str,
        month: &str,
        plan: &str,
        counters: &[(String, u64)],
        (records, storage_bytes): (u64, u64),
        prices: &Prices,
    ) -> Self {
        let counted = Counted::sum(counters);
        let cost = Cost::of(&counted, storage_bytes, prices);
        Self {
            tenant_id: tenant_id.to_owned(),
            month: month.to_owned(),
            plan: plan.to_owned(),
            api_calls: counted.api_calls,
            records_written: counted.records_written,
            detections: counted.detections,
            records,
            storage_bytes,
            cost,
        }
    }
}

/// A month's counters, read by name.
struct Counted {
    api_calls: ApiCalls,
    records_written: u64,
    detections: u64,
}

impl Counted {
    /// Reads `counters`: records written, detections, and the API calls
    /// (`api_calls:<class>:<status>`) by class and status; other names
    /// are ignored.
    fn sum(counters: &[(String, u64)]) -> Self {
        let mut counted = Self {
            api_calls: ApiCalls::default(),
            records_written: 0,
            detections: 0,
        };
        for (name, value) in counters {
            match name.as_str() {
                metric::RECORDS_WRITTEN => counted.records_written = *value,
                metric::DETECTIONS => counted.detections = *value,
                other => {
                    let mut parts = other.splitn(3, ':');
                    if parts.next() == Some(metric::API_CALLS)
                        && let (Some(class), Some(status)) = (parts.next(), parts.next())
                    {
                        counted.api_calls.add(class, status, *value);
                    }
                }
            }
        }
        counted
    }
}

impl ApiCalls {
    /// Counts `value` calls of route class `class` answered `status`; a
    /// 429 is not billable.
    fn add(&mut self, class: &str, status: &str, value: u64) {
        self.total += value;
        if status != "429" {
            self.billable += value;
        }
        *self
            .by_class
            .entry(class.to_owned())
            .or_default()
            .entry(status.to_owned())
            .or_default() += value;
    }
}

impl Cost {
    /// The cost of `counted` and `storage_bytes` under `prices`: one line
    /// per item the plan prices, `None` when it prices none.
    fn of(counted: &Counted, storage_bytes: u64, prices: &Prices) -> Option<Self> {
        let storage_gb = Decimal::from(storage_bytes) / Decimal::from(GIB);
        let quantities = [
            ("base", Decimal::ONE, prices.base),
            (
                "api_calls",
                Decimal::from(counted.api_calls.billable),
                prices.api_call,
            ),
            (
                "records_written",
                Decimal::from(counted.records_written),
                prices.record_written,
            ),
            (
                "detections",
                Decimal::from(counted.detections),
                prices.detection,
            ),
            ("storage_gb", storage_gb.round_dp(6), prices.storage_gb),
        ];
        let lines: Vec<CostLine> = quantities
            .into_iter()
            .filter_map(|(item, quantity, price)| {
                let unit_price = price?;
                Some(CostLine {
                    item: item.to_owned(),
                    quantity: quantity.normalize(),
                    unit_price: unit_price.normalize(),
                    amount: (quantity * unit_price).round_dp(6).normalize(),
                })
            })
            .collect();
        (!lines.is_empty()).then(|| Self {
            currency: prices.currency.clone().unwrap_or_else(|| "USD".to_owned()),
            total: lines
                .iter()
                .map(|l| l.amount)
                .sum::<Decimal>()
                .round_dp(6)
                .normalize(),
            lines,
        })
    }
}

/// Request totals over a range.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RequestTotals {
    /// Requests answered.
    pub total: u64,
    /// 4xx and 5xx.
    pub errors: u64,
    /// 5xx only.
    pub server_errors: u64,
}

/// Latency quantiles in milliseconds (bucket upper bounds, ≤ 19% high).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Latency {
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

/// One day of metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DayMetrics {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Requests.
    pub requests: RequestTotals,
    /// Latency.
    pub latency: Latency,
}

/// `GET /admin/tenants/{id}/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsReport {
    /// The tenant.
    pub tenant_id: String,
    /// First day (inclusive).
    pub start: String,
    /// Last day (inclusive).
    pub end: String,
    /// Over the whole range.
    pub requests: RequestTotals,
    /// Over the whole range.
    pub latency: Latency,
    /// Days with traffic, in order.
    pub days: Vec<DayMetrics>,
}

fn totals(stats: &DayStats) -> RequestTotals {
    RequestTotals {
        total: stats.requests,
        errors: stats.client_errors + stats.server_errors,
        server_errors: stats.server_errors,
    }
}

fn latency(h: &Histogram) -> Latency {
    Latency {
        p50_ms: h.quantile_ms(0.5),
        p99_ms: h.quantile_ms(0.99),
    }
}

impl MetricsReport {
    /// Builds the report from daily figures.
    pub fn build(tenant_id: &str, start: &str, end: &str, days: &[(String, DayStats)]) -> Self {
        let mut all = DayStats::default();
        for (_, d) in days {
            all.merge(d);
        }
        Self {
            tenant_id: tenant_id.to_owned(),
            start: start.to_owned(),
            end: end.to_owned(),
            requests: totals(&all),
            latency: latency(&all.latency),
            days: days
                .iter()
                .map(|(date, d)| DayMetrics {
                    date: date.clone(),
                    requests: totals(d),
                    latency: latency(&d.latency),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn usage_report_counts_and_prices() {
        let counters = vec![
            ("api_calls:records:2xx".to_owned(), 900),
            ("api_calls:records:4xx".to_owned(), 50),
            ("api_calls:search:2xx".to_owned(), 50),
            ("detections".to_owned(), 3),
            ("records_written".to_owned(), 40),
        ];
        let prices = Prices {
            currency: Some("EUR".to_owned()),
            base: Some(Decimal::from(10)),
            api_call: Some(Decimal::from_str("0.001").expect("decimal")),
            record_written: None,
            detection: Some(Decimal::from_str("0.5").expect("decimal")),
            storage_gb: Some(Decimal::from(2)),
        };
        let r = UsageReport::build("acme", "2026-11", "pro", &counters, (40, GIB / 2), &prices);
        assert_eq!(r.api_calls.total, 1000);
        assert_eq!(r.api_calls.by_class["records"]["4xx"], 50);
        assert_eq!(r.detections, 3);
        assert_eq!(r.records_written, 40);
        let cost = r.cost.expect("priced");
        assert_eq!(cost.currency, "EUR");
        let amounts: Vec<(String, String)> = cost
            .lines
            .iter()
            .map(|l| (l.item.clone(), l.amount.to_string()))
            .collect();
        assert_eq!(
            amounts,
            vec![
                ("base".to_owned(), "10".to_owned()),
                ("api_calls".to_owned(), "1".to_owned()),
                ("detections".to_owned(), "1.5".to_owned()),
                ("storage_gb".to_owned(), "1".to_owned()),
            ]
        );
        assert_eq!(cost.total.to_string(), "13.5");
        let unpriced = UsageReport::build(
            "acme",
            "2026-11",
            "free",
            &counters,
            (0, 0),
            &Prices::default(),
        );
        assert!(unpriced.cost.is_none());
    }
}
