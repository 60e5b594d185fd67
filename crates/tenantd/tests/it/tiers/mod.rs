//! The dedicated tier and moves between tiers, over HTTP against a real
//! server (on the backend under test for the shared database; dedicated
//! tenants here get SQLite files of their own).

use crate::support;

mod dedicated;
mod moves;
mod outbox;
mod search_upgrade;

use std::path::Path;

use reqwest::Method;
use serde_json::{Value, json};
pub(crate) use support::{ADMIN_KEY, App, assert_error, config};

/// A test config with the admin API on and a fast registry poll.
pub(crate) fn tier_config(dir: &Path, tweak: impl FnOnce(&mut tenantd::Config)) -> tenantd::Config {
    config(dir, |c| {
        c.admin.key = Some(ADMIN_KEY.to_owned());
        c.auth.registry_poll_ms = 200;
        c.jobs.workers = Some(0);
        tweak(c);
    })
}

impl App {
    /// Creates a tenant (no key) with an optional storage binding.
    pub(crate) async fn tenant(&self, id: &str, storage: Option<Value>) {
        let mut body = json!({"id": id, "name": id, "issue_key": false});
        if let Some(s) = storage {
            body["storage"] = s;
        }
        let resp = self
            .admin(Method::POST, "/admin/tenants")
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(
            resp.status(),
            201,
            "{}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// Creates a record as `tenant` (by header); the response.
    pub(crate) async fn put_record(&self, tenant: &str, name: &str) -> reqwest::Response {
        self.req(Method::POST, tenant, "/records")
            .json(&json!({"name": name, "kind": "k", "url": "https://example.com", "description": "moving words"}))
            .send()
            .await
            .expect("post")
    }

    /// The names of `tenant`'s records, sorted (every page).
    pub(crate) async fn names(&self, tenant: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut body = json!({"query": "", "limit": 1000});
            if let Some(c) = &cursor {
                body["cursor"] = json!(c);
            }
            let resp = self
                .req(Method::POST, tenant, "/records/search")
                .json(&body)
                .send()
                .await
                .expect("search");
            assert_eq!(resp.status(), 200);
            let page: Value = resp.json().await.expect("json");
            for hit in page["results"].as_array().expect("results") {
                let name = hit["record"]["name"]
                    .as_str()
                    .or_else(|| hit["name"].as_str())
                    .expect("name");
                names.push(name.to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        names.sort();
        names
    }

    /// `GET /health/tenants` (all pages).
    pub(crate) async fn tenant_health(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/health/tenants?limit=1000&cursor={c}"),
                None => "/health/tenants?limit=1000".to_owned(),
            };
            let resp = self.admin(Method::GET, &path).send().await.expect("get");
            assert_eq!(resp.status(), 200);
            let page: Value = resp.json().await.expect("json");
            out.extend(page["tenants"].as_array().expect("tenants").iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        out
    }
}

/// Record rows of `tenant` stored directly in the dedicated SQLite file
/// under `dir` (0 when the file does not exist).
pub(crate) async fn rows_in_file(dir: &Path, tenant: &str) -> i64 {
    let file = dir.join("tenants").join(format!("{tenant}.db"));
    if !file.exists() {
        return 0;
    }
    let url = format!("sqlite://{}?mode=ro", file.display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("open the tenant file");
    sqlx::query_scalar("SELECT count(*) FROM records WHERE tenant_id = ?1")
        .bind(tenant)
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

/// Record rows of `tenant` stored directly in the shared database.
pub(crate) async fn rows_in_shared(dir: &Path, tenant: &str) -> i64 {
    if support::on_postgres() {
        let db = support::postgres::db_for(dir);
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.superuser_url())
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT count(*) FROM records WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&mut conn)
            .await
            .expect("count")
    } else {
        let url = format!("sqlite://{}?mode=ro", dir.join("tenantd.db").display());
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
            .await
            .expect("open");
        sqlx::query_scalar("SELECT count(*) FROM records WHERE tenant_id = ?1")
            .bind(tenant)
            .fetch_one(&mut conn)
            .await
            .expect("count")
    }
}
