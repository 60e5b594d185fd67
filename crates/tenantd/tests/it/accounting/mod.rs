//! Rate limits, quotas, usage, billing, audit and metrics over HTTP
//! against a real server (issue 5). Rate-limit windows are driven by a
//! `ManualClock`, never by sleeping.

use crate::support;

mod audit;
mod billing;
mod limits;
mod metrics;
mod quotas;
mod usage;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
pub(crate) use support::{ADMIN_KEY, App, assert_error, config};

/// A test config with the admin API on and the background writers fast.
pub(crate) fn admin_config(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut tenantd::Config),
) -> tenantd::Config {
    config(dir, |c| {
        c.admin.key = Some(ADMIN_KEY.to_owned());
        c.auth.last_used_flush_secs = 3600;
        c.usage.flush_ms = 50;
        c.billing.auto_close = false;
        tweak(c);
    })
}

/// The URL of the test Redis. CI always sets it; a missing URL is a
/// failure, not a skip.
pub(crate) fn redis_url() -> String {
    std::env::var("TENANTD_TEST_REDIS_URL").expect(
        "TENANTD_TEST_REDIS_URL must point at a Redis (e.g. redis://127.0.0.1:6379); .ci/run sets it",
    )
}

/// A namespace no other test uses.
pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", ulid::Ulid::new().to_string().to_lowercase())
}

impl App {
    /// Creates a record as `tenant` (by header); returns the status.
    pub(crate) async fn create_record(&self, tenant: &str, name: &str) -> reqwest::Response {
        self.req(Method::POST, tenant, "/records")
            .json(&json!({"name": name, "kind": "k", "url": "https://example.com"}))
            .send()
            .await
            .expect("post")
    }

    /// An admin GET's JSON.
    pub(crate) async fn admin_json(&self, path: &str) -> Value {
        let resp = self.admin(Method::GET, path).send().await.expect("get");
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.expect("json")
    }
}

/// Polls `probe` every 20 ms until it returns `Some`, for at most `secs`
/// seconds (a guard against hanging, not a timing assertion).
pub(crate) async fn eventually<T, F, Fut>(secs: u64, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not reached within {secs}s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
