//! The records API over HTTP: the README tour, isolation on every endpoint,
//! tenant policy, and bad input of every kind answered with the JSON error
//! shape and without losing data.

use crate::support;
use crate::support::{TestApp, TestStorage};
use tenantd_testing::backends;

mod bad_input;
mod isolation;
mod policy;
mod search;

use serde_json::{Value, json};
pub(crate) use support::{App, assert_error, config};

/// The body `App::create` sends: a record of `tenant` named `name` whose
/// description is `description`.
pub(crate) fn record_body(tenant: &str, name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "kind": "service",
        "url": format!("https://example.com/{name}"),
        "description": description,
        "tags": ["t1"],
        "fields": {"owner": tenant},
    })
}

impl App {
    /// Creates a record as `tenant`, asserting 201; returns it.
    pub(crate) async fn create(&self, tenant: &str, name: &str, description: &str) -> Value {
        let resp = self
            .req(reqwest::Method::POST, tenant, "/records")
            .json(&record_body(tenant, name, description))
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), 201);
        resp.json().await.expect("json")
    }

    /// Searches as `tenant`; status and body.
    pub(crate) async fn search(&self, tenant: &str, body: Value) -> (u16, Value) {
        let resp = self
            .req(reqwest::Method::POST, tenant, "/records/search")
            .json(&body)
            .send()
            .await
            .expect("search");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }
}

/// The ids in a search or list page.
pub(crate) fn ids(page: &Value) -> Vec<String> {
    page["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect()
}

#[backends]
async fn the_readme_tour_works() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;

    let a = app
        .create("acme", "billing", "invoices and payment runs")
        .await;
    assert_eq!(a["tenant_id"], "acme");
    assert!(a["id"].as_str().expect("id").starts_with("rec_"));
    assert_eq!(a["fields"]["owner"], "acme");
    let b = app
        .create("globex", "billing", "globex billing service")
        .await;

    let (status, page) = app.search("acme", json!({"query": "billing"})).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&page), vec![a["id"].as_str().expect("id")]);
    assert!(page["results"][0]["score"].is_number());
    let (_, page) = app.search("globex", json!({"query": "billing"})).await;
    assert_eq!(ids(&page), vec![b["id"].as_str().expect("id")]);

    let (status, got) = app
        .get_json(
            "acme",
            &format!("/records/{}", a["id"].as_str().expect("id")),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(got, a);

    // Replace, then list with filters, then delete.
    let id = a["id"].as_str().expect("id");
    let resp = app
        .req(reqwest::Method::PUT, "acme", &format!("/records/{id}"))
        .json(
            &json!({"name": "billing", "kind": "service", "url": "https://e.com/b",
                      "tags": ["t2"], "description": "renamed"}),
        )
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), 200);
    let replaced: Value = resp.json().await.expect("json");
    assert_eq!(replaced["tags"], json!(["t2"]));
    assert_eq!(replaced["created_at"], a["created_at"]);

    let (_, listed) = app.get_json("acme", "/records?tags=t2&kind=service").await;
    assert_eq!(ids(&listed), vec![id]);
    let (_, listed) = app.get_json("acme", "/records?tags=t1").await;
    assert!(ids(&listed).is_empty());

    let resp = app
        .req(reqwest::Method::DELETE, "acme", &format!("/records/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status(), 204);
    let resp = app
        .req(reqwest::Method::GET, "acme", &format!("/records/{id}"))
        .send()
        .await
        .expect("get");
    assert_error(resp, 404, "not_found").await;
    app.finish().await;
}

#[backends]
async fn lists_page_with_cursors_newest_first() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let mut created = Vec::new();
    for i in 0..7 {
        let r = app.create("acme", &format!("svc-{i}"), "paged").await;
        created.push(r["id"].as_str().expect("id").to_owned());
    }
    created.reverse();
    let mut seen = Vec::new();
    let mut path = "/records?limit=3".to_owned();
    loop {
        let (status, page) = app.get_json("acme", &path).await;
        assert_eq!(status, 200);
        assert_eq!(page["total"], 7);
        seen.extend(ids(&page));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/records?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, created);
    app.finish().await;
}

#[backends]
async fn exempt_paths_need_no_tenant() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    for path in ["/health", "/health/ready", "/openapi.json"] {
        let resp = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200, "{path}");
    }
    let spec: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    for path in [
        "/records",
        "/records/{id}",
        "/records/search",
        "/detect/submit",
    ] {
        assert!(spec["paths"][path].is_object(), "{path} documented");
    }
    app.finish().await;
}

/// Percent-encodes everything but ASCII letters and digits.
pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
