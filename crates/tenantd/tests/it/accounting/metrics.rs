//! `GET /metrics`: route templates, rejections, job gauge, and a bounded
//! number of tenant labels.

use crate::support::{TestApp, TestStorage};
use std::collections::HashSet;
use std::sync::Arc;
use tenantd_testing::backends;

use reqwest::Method;
use tenancy::ratelimit::ManualClock;

use super::{App, admin_config, assert_error};

async fn scrape(app: &App) -> String {
    let resp = app
        .admin(Method::GET, "/metrics")
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("text")
}

fn tenant_labels(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|l| l.starts_with("tenantd_tenant_requests_total{"))
        .filter_map(|l| l.split("tenant=\"").nth(1))
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_owned)
        .collect()
}

#[backends]
async fn series_by_route_template_rejections_and_a_bounded_tenant_set() {
    let dir = TestStorage::new();
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let app = TestApp::start_with_clock(
        &dir,
        admin_config(dir.path(), |c| {
            c.metrics.top_tenants = 3;
            c.limits.enabled = true;
            c.limits.requests_per_minute = Some(2);
            c.quotas.max_records = Some(1);
        }),
        clock,
    )
    .await;
    // 30 tenants (header-only: the registry is empty), 3 requests each: 2
    // admitted, 1 rate limited.
    for i in 0..30 {
        let tenant = format!("t{i}");
        assert_eq!(app.create_record(&tenant, "r").await.status(), 201);
        let resp = app.create_record(&tenant, "again").await;
        assert_error(resp, 403, "quota_exceeded").await;
        let resp = app
            .req(Method::GET, &tenant, "/records")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 429);
    }
    let text = scrape(&app).await;
    let labels = tenant_labels(&text);
    assert!(
        labels.len() <= 4,
        "{} tenant labels: {labels:?}",
        labels.len()
    );
    assert!(labels.contains("other"), "{labels:?}");
    assert!(
        text.contains(
            "tenantd_http_requests_total{method=\"POST\",route=\"/records\",status=\"201\"} 30"
        ),
        "{text}"
    );
    assert!(
        text.contains("route=\"/records\",status=\"429\"} 30"),
        "{text}"
    );
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next())
            .filter_map(|v| v.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(sum("tenantd_rate_limited_total{"), 30.0);
    assert_eq!(sum("tenantd_quota_rejections_total{"), 30.0);
    assert!(text.contains("tenantd_jobs{state=\"pending\"} 0"), "{text}");
    assert!(
        text.contains("tenantd_http_request_duration_seconds_bucket{"),
        "{text}"
    );
    // A raw id never becomes a route label.
    let resp = app
        .req(Method::GET, "t1", "/records/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 429);
    let text = scrape(&app).await;
    assert!(text.contains("route=\"/records/{id}\""), "{text}");
    assert!(!text.contains("01ARZ3NDEKTSV4RRFFQ69G5FAV"));

    // Only the operator may scrape: the series name tenants.
    let resp = app
        .req(Method::GET, "t1", "/metrics")
        .send()
        .await
        .expect("get");
    assert_error(resp, 401, "unauthorized").await;
    app.finish().await;
}
