//! The tenant registry, admin API, API keys and authenticated resolution,
//! over HTTP against a real server.

use crate::support;

mod auth;
mod keys;
mod tenants;

use reqwest::Method;
use serde_json::{Value, json};
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

impl App {
    /// Creates a record with `key`; returns its id.
    pub(crate) async fn record_with_key(&self, key: &str, name: &str) -> String {
        let resp = self
            .with_key(Method::POST, key, "/records")
            .json(&json!({"name": name, "kind": "k", "url": "https://x"}))
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 201);
        let rec: Value = resp.json().await.expect("json");
        rec["id"].as_str().expect("id").to_owned()
    }
}
