//! Billing events: one per tenant and month, signed, retried with backoff
//! until accepted, never duplicated, surviving a restart.

use crate::support::{TestApp, TestStorage};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tenantd_testing::backends;

use axum::http::{HeaderMap, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd::billing::sign;
use tenantd::clock::{Clock, month_of_ms};

use super::{App, admin_config, assert_error, eventually};

const SECRET: &str = "whsec-0123456789abcdef0123456789abcdef";

/// One delivery attempt as the receiver saw it.
#[derive(Debug, Clone)]
struct Attempt {
    idempotency_key: String,
    signature: String,
    body: String,
    accepted: bool,
}

/// A webhook receiver that refuses the first `fail_first` attempts.
struct Receiver {
    url: String,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(fail_first: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve(listener, fail_first)
    }

    fn serve(listener: tokio::net::TcpListener, fail_first: usize) -> Receiver {
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let attempts: Arc<Mutex<Vec<Attempt>>> = Arc::default();
        let seen = attempts.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let seen = seen.clone();
                async move {
                    let mut seen = seen.lock().expect("lock");
                    let accepted = seen.len() >= fail_first;
                    let text = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    seen.push(Attempt {
                        idempotency_key: text("idempotency-key"),
                        signature: text("x-tenantd-signature"),
                        body,
                        accepted,
                    });
                    if accepted {
                        StatusCode::OK
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            attempts,
            task,
        }
    }

    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn billing_config(dir: &std::path::Path, url: &str) -> tenantd::Config {
    admin_config(dir, |c| {
        c.billing.webhook_url = Some(url.to_owned());
        c.billing.webhook_secret = Some(SECRET.to_owned());
        c.billing.retry_base_ms = 20;
        c.billing.retry_max_ms = 100;
        c.billing.poll_ms = 20;
    })
}

fn this_month() -> String {
    // The server under test reads the system clock too.
    month_of_ms(Clock::system().now_ms())
}

async fn close(app: &App, month: &str) -> Value {
    let resp = app
        .admin(
            Method::POST,
            &format!("/admin/billing/close?month={month}&force=true"),
        )
        .send()
        .await
        .expect("close");
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json")
}

#[backends]
async fn a_receiver_failing_twice_accepts_exactly_one_signed_event_per_tenant() {
    let receiver = Receiver::start(2).await;
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, billing_config(dir.path(), &receiver.url)).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    for i in 0..3 {
        app.create_record("acme", &format!("r{i}")).await;
    }
    let month = this_month();
    let report = close(&app, &month).await;
    assert_eq!(report, json!({"month": month, "created": 1, "existing": 0}));

    let attempts = eventually(10, || async {
        let a = receiver.attempts();
        a.iter().any(|x| x.accepted).then_some(a)
    })
    .await;
    assert_eq!(attempts.len(), 3, "two refusals then one acceptance");
    assert_eq!(attempts.iter().filter(|a| a.accepted).count(), 1);
    let key = &attempts[0].idempotency_key;
    assert!(key.starts_with("evt_"), "{key}");
    for a in &attempts {
        assert_eq!(&a.idempotency_key, key, "every retry is the same event");
        assert_eq!(a.body, attempts[0].body, "and the same body");
        // The signature verifies with the shared secret.
        let t: i64 = a
            .signature
            .strip_prefix("t=")
            .and_then(|rest| rest.split(',').next())
            .and_then(|t| t.parse().ok())
            .expect("t=");
        assert_eq!(a.signature, sign(SECRET, t, &a.body));
    }
    let event: Value = serde_json::from_str(&attempts[0].body).expect("json");
    assert_eq!(event["id"], key.as_str());
    assert_eq!(event["type"], "usage.month_closed");
    assert_eq!(event["tenant_id"], "acme");
    assert_eq!(event["month"], month);
    assert_eq!(event["usage"]["records_written"], 3);

    // Closing again creates nothing and sends nothing more.
    let again = close(&app, &month).await;
    assert_eq!(again["created"], 0);
    assert_eq!(again["existing"], 1);
    let outbox: Value = app
        .admin_json(&format!("/admin/billing/events?month={month}"))
        .await;
    let events = outbox.as_array().expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["status"], "delivered");
    assert_eq!(events[0]["attempts"], 3);
    // Give a wrongly re-sent event the time to arrive (not a timing
    // assertion: the count must simply stay the same).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.attempts().len(), 3);
    app.finish().await;
}

#[backends]
async fn undelivered_events_survive_a_restart() {
    // Reserve a port, then close it: deliveries fail until a receiver
    // listens there.
    let parked = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = parked.local_addr().expect("addr");
    drop(parked);
    let url = format!("http://{addr}/hook");
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, billing_config(dir.path(), &url)).await;
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    app.create_tenant(json!({"id": "beta", "name": "Beta"}))
        .await;
    let month = this_month();
    assert_eq!(close(&app, &month).await["created"], 2);
    eventually(10, || async {
        let outbox: Value = app.admin_json("/admin/billing/events").await;
        outbox
            .as_array()
            .is_some_and(|e| e.iter().all(|x| x["attempts"].as_u64() >= Some(1)))
            .then_some(())
    })
    .await;
    app.finish().await;

    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let receiver = Receiver::serve(listener, 0);
    let app = TestApp::start(&dir, billing_config(dir.path(), &url)).await;
    let attempts = eventually(10, || async {
        let a = receiver.attempts();
        (a.len() >= 2).then_some(a)
    })
    .await;
    let mut tenants: Vec<String> = attempts
        .iter()
        .map(|a| {
            let v: Value = serde_json::from_str(&a.body).expect("json");
            v["tenant_id"].as_str().expect("tenant").to_owned()
        })
        .collect();
    tenants.sort();
    assert_eq!(tenants, ["acme", "beta"]);
    app.finish().await;
}

#[backends]
async fn an_open_month_needs_force_and_bad_months_are_refused() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let resp = app
        .admin(
            Method::POST,
            &format!("/admin/billing/close?month={}", this_month()),
        )
        .send()
        .await
        .expect("close");
    assert_error(resp, 409, "conflict").await;
    let resp = app
        .admin(Method::POST, "/admin/billing/close?month=2026-1")
        .send()
        .await
        .expect("close");
    assert_error(resp, 422, "validation_failed").await;
    let resp = app
        .req(Method::POST, "acme", "/admin/billing/close?month=2020-01")
        .send()
        .await
        .expect("close");
    assert_error(resp, 401, "unauthorized").await;
    // A tenant created after a month ended is not billed for it.
    app.create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    assert_eq!(close(&app, "2020-01").await["created"], 0);
    // Without a webhook the events wait in the outbox.
    assert_eq!(close(&app, &this_month()).await["created"], 1);
    let outbox: Value = app.admin_json("/admin/billing/events").await;
    assert_eq!(outbox[0]["status"], "pending");
    assert_eq!(outbox[0]["attempts"], 0);
    app.finish().await;
}

#[backends]
async fn a_close_over_more_tenants_than_one_page_writes_every_event_once() {
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    // 1,005 header-only tenants with usage (the registry stays empty).
    for i in 0..1_005 {
        let resp = app
            .req(Method::GET, &format!("t{i}"), "/records")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
    }
    let month = this_month();
    let report = close(&app, &month).await;
    assert_eq!(report["created"], 1_005, "{report}");
    let again = close(&app, &month).await;
    assert_eq!(
        (again["created"].as_u64(), again["existing"].as_u64()),
        (Some(0), Some(1_005))
    );
    let outbox: Value = app
        .admin_json(&format!("/admin/billing/events?month={month}"))
        .await;
    let events = outbox.as_array().expect("events");
    assert_eq!(events.len(), 1_005);
    let ids: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 1_005, "one distinct event per tenant");
    app.finish().await;
}
