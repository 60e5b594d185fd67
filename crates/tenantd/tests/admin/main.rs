//! The tenant registry, admin API, API keys and authenticated resolution,
//! over HTTP against a real server.

#[path = "../support/mod.rs"]
mod support;

mod auth;
mod keys;
mod tenants;

use reqwest::Method;
use serde_json::{Value, json};
pub(crate) use support::{App, assert_error, config};

pub(crate) const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";

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
    /// An admin request.
    pub(crate) fn admin(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY)
    }

    /// Creates a tenant; returns (tenant, first key).
    pub(crate) async fn create_tenant(&self, body: Value) -> (Value, String) {
        let resp = self
            .admin(Method::POST, "/admin/tenants")
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), 201, "{body}");
        let out: Value = resp.json().await.expect("json");
        let key = out["api_key"]["key"].as_str().expect("key").to_owned();
        (out["tenant"].clone(), key)
    }

    /// A request authenticated with `key`.
    pub(crate) fn with_key(
        &self,
        method: Method,
        key: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", key)
    }

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
