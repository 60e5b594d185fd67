//! Usage: counted off the request path, flushed on shutdown, reported per
//! month (with cost) and per day, never mixing tenants.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{admin_config, assert_error};

#[backends]
async fn a_graceful_stop_loses_no_counted_request() {
    let dir = TestStorage::new();
    // Never flushed while running: only the shutdown flush can save them.
    let config = || admin_config(dir.path(), |c| c.usage.flush_ms = 3_600_000);
    let app = TestApp::start(&dir, config()).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta"}))
        .await;
    for i in 0..20 {
        assert_eq!(
            app.create_record("acme", &format!("r{i}")).await.status(),
            201
        );
    }
    for _ in 0..7 {
        let resp = app
            .req(Method::GET, "acme", "/records/01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 404);
    }
    app.req(Method::GET, "beta", "/records")
        .send()
        .await
        .expect("get");
    // Nothing written yet, but the tenant sees its calls as of now.
    let (_, me) = app.get_json("acme", "/tenant").await;
    assert_eq!(me["usage"]["api_calls"]["total"], 27, "{me}");
    app.finish().await;

    let app = TestApp::start(&dir, config()).await;
    let usage = app.admin_json("/admin/tenants/acme/usage").await;
    // 27 calls, plus the GET /tenant above.
    assert_eq!(usage["api_calls"]["total"], 28, "{usage}");
    assert_eq!(
        usage["api_calls"]["by_class"]["records"]["2xx"], 20,
        "{usage}"
    );
    assert_eq!(
        usage["api_calls"]["by_class"]["records"]["4xx"], 7,
        "{usage}"
    );
    assert_eq!(usage["records_written"], 20);
    assert_eq!(usage["records"], 20);
    let beta = app.admin_json("/admin/tenants/beta/usage").await;
    assert_eq!(beta["api_calls"]["total"], 1, "{beta}");
    assert_eq!(beta["records_written"], 0);
    app.finish().await;
}

#[backends]
async fn usage_report_prices_each_line_by_plan() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            let mut pro = tenantd::config::PlanConfig::default();
            pro.prices.currency = Some("EUR".to_owned());
            pro.prices.base = Some("10".parse().expect("decimal"));
            pro.prices.api_call = Some("0.01".parse().expect("decimal"));
            pro.prices.record_written = Some("0.5".parse().expect("decimal"));
            c.plans.insert("pro".to_owned(), pro);
        }),
    )
    .await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "plan": "pro"}))
        .await;
    for i in 0..3 {
        app.create_record("acme", &format!("r{i}")).await;
    }
    app.req(Method::GET, "acme", "/records")
        .send()
        .await
        .expect("get");
    let usage = app.admin_json("/admin/tenants/acme/usage").await;
    assert_eq!(usage["plan"], "pro");
    let cost = &usage["cost"];
    assert_eq!(cost["currency"], "EUR");
    let amount = |item: &str| -> f64 {
        cost["lines"]
            .as_array()
            .expect("lines")
            .iter()
            .find(|l| l["item"] == item)
            .unwrap_or_else(|| panic!("no line {item}: {cost}"))["amount"]
            .as_str()
            .expect("decimal string")
            .parse()
            .expect("number")
    };
    assert!((amount("base") - 10.0).abs() < 1e-9);
    assert!((amount("api_calls") - 0.04).abs() < 1e-9);
    assert!((amount("records_written") - 1.5).abs() < 1e-9);
    let total: f64 = cost["total"].as_str().expect("total").parse().expect("n");
    assert!((total - 11.54).abs() < 1e-9, "{cost}");

    // A month with nothing: zero figures, base price only.
    let old = app
        .admin_json("/admin/tenants/acme/usage?month=2020-01")
        .await;
    assert_eq!(old["api_calls"]["total"], 0);
    // Bad month, unknown tenant.
    let resp = app
        .admin(Method::GET, "/admin/tenants/acme/usage?month=2020-13")
        .send()
        .await
        .expect("get");
    assert_error(resp, 422, "validation_failed").await;
    let resp = app
        .admin(Method::GET, "/admin/tenants/ghost/usage")
        .send()
        .await
        .expect("get");
    assert_error(resp, 404, "not_found").await;
    // Tenants cannot reach it.
    let resp = app
        .req(Method::GET, "acme", "/admin/tenants/acme/usage")
        .send()
        .await
        .expect("get");
    assert_error(resp, 401, "unauthorized").await;
    app.finish().await;
}

#[backends]
async fn daily_metrics_count_requests_errors_and_latency() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta"}))
        .await;
    for _ in 0..4 {
        app.req(Method::GET, "acme", "/records")
            .send()
            .await
            .expect("get");
    }
    let resp = app
        .req(Method::POST, "acme", "/records")
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 400);
    app.req(Method::GET, "beta", "/records")
        .send()
        .await
        .expect("get");

    let m: Value = app.admin_json("/admin/tenants/acme/metrics").await;
    assert_eq!(m["requests"]["total"], 5, "{m}");
    assert_eq!(m["requests"]["errors"], 1, "{m}");
    assert_eq!(m["requests"]["server_errors"], 0, "{m}");
    assert!(m["latency"]["p50_ms"].as_f64().expect("p50") > 0.0);
    assert!(m["latency"]["p99_ms"].as_f64() >= m["latency"]["p50_ms"].as_f64());
    let days = m["days"].as_array().expect("days");
    assert_eq!(
        days.iter()
            .map(|d| d["requests"]["total"].as_u64().unwrap_or(0))
            .sum::<u64>(),
        5
    );
    let resp = app
        .admin(Method::GET, "/admin/tenants/acme/metrics?start=2026-02-30")
        .send()
        .await
        .expect("get");
    assert_error(resp, 422, "validation_failed").await;
    app.finish().await;
}
