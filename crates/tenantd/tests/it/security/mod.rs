//! Regression tests for the classes of holes an outside attack found
//! (a tenant's valid credentials in the attacker's hands). Each module is
//! one class; every test runs on both backends (`#[backends]`).

use crate::support;

pub(crate) use support::{ADMIN_KEY, App, assert_error, config};

/// A test config with the admin API on.
pub(crate) fn admin_config(
    dir: &std::path::Path,
    tweak: impl FnOnce(&mut tenantd::Config),
) -> tenantd::Config {
    config(dir, |c| {
        c.admin.key = Some(ADMIN_KEY.to_owned());
        c.auth.last_used_flush_secs = 3600;
        tweak(c);
    })
}

mod body_tenant;
mod dumps;
mod forwarded;
mod header_access;
mod input;
mod oidc;
mod operator_log;
mod redaction;
mod scopes;
mod timeouts;

impl App {
    /// An admin GET's JSON body (the status must be 200).
    pub(crate) async fn admin_get(&self, path: &str) -> serde_json::Value {
        let resp = self
            .admin(reqwest::Method::GET, path)
            .send()
            .await
            .expect("admin get");
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.expect("json")
    }
}

/// The statuses of a page of audit events, in order.
pub(crate) fn event_statuses(page: &serde_json::Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["status"].as_u64())
        .collect()
}
