//! Every records endpoint, tried by a tenant on another tenant's data:
//! nothing is read, listed, found, changed or deleted, and the answer is the
//! same 404 an absent record gets.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::json;
use tenantd_testing::backends;

use super::{assert_error, config, ids};

async fn two_tenants() -> (std::sync::Arc<TestStorage>, TestApp, String) {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let secret = app
        .create("acme", "payroll", "acme payroll secret-project")
        .await;
    app.create("globex", "website", "globex marketing").await;
    (data, app, secret["id"].as_str().expect("id").to_owned())
}

#[backends]
async fn another_tenant_reads_a_404_identical_to_an_absent_record() {
    let (_data, app, id) = two_tenants().await;
    let theirs = app
        .req(Method::GET, "globex", &format!("/records/{id}"))
        .send()
        .await
        .expect("get");
    let theirs = assert_error(theirs, 404, "not_found").await;
    let absent_id = "rec_01JD6ZK8Q3V2N4M5P6R7S8T9VW";
    let absent = app
        .req(Method::GET, "globex", &format!("/records/{absent_id}"))
        .send()
        .await
        .expect("get");
    let absent = assert_error(absent, 404, "not_found").await;
    assert_eq!(theirs.replace(&id, "ID"), absent.replace(absent_id, "ID"));
    app.finish().await;
}

#[backends]
async fn another_tenant_cannot_list_or_search() {
    let (_data, app, id) = two_tenants().await;
    let (_, page) = app.get_json("globex", "/records").await;
    assert!(!ids(&page).contains(&id));
    assert_eq!(page["total"], 1);
    for query in [
        "payroll",
        "secret-project",
        "acme",
        &id,
        "payroll OR website",
        "pay*",
    ] {
        let (status, page) = app.search("globex", json!({"query": query})).await;
        assert_eq!(status, 200, "{query}");
        assert!(!ids(&page).contains(&id), "{query} leaked");
        for hit in page["results"].as_array().expect("results") {
            assert_eq!(hit["tenant_id"], "globex");
        }
    }
    // The owner still finds it.
    let (_, page) = app.search("acme", json!({"query": "payroll"})).await;
    assert_eq!(ids(&page), vec![id]);
    app.finish().await;
}

#[backends]
async fn another_tenant_cannot_change_or_delete() {
    let (_data, app, id) = two_tenants().await;
    let (_, before) = app.get_json("acme", &format!("/records/{id}")).await;

    let put = app
        .req(Method::PUT, "globex", &format!("/records/{id}"))
        .json(&json!({"name": "pwned", "kind": "service", "url": "https://evil"}))
        .send()
        .await
        .expect("put");
    assert_error(put, 404, "not_found").await;
    let del = app
        .req(Method::DELETE, "globex", &format!("/records/{id}"))
        .send()
        .await
        .expect("delete");
    assert_error(del, 404, "not_found").await;

    let (status, after) = app.get_json("acme", &format!("/records/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(after, before);
    app.finish().await;
}

#[backends]
async fn names_are_unique_per_tenant_only() {
    let (_data, app, _id) = two_tenants().await;
    // globex may use acme's name: the conflict check does not reveal it.
    app.create("globex", "payroll", "globex payroll").await;
    let dup = app
        .req(Method::POST, "acme", "/records")
        .json(&json!({"name": "payroll", "kind": "service", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    assert_error(dup, 409, "conflict").await;
    app.finish().await;
}

#[backends]
async fn a_body_cannot_write_into_another_tenant() {
    let (_data, app, _id) = two_tenants().await;
    let resp = app
        .req(Method::POST, "globex", "/records")
        .json(&json!({"name": "x", "kind": "k", "url": "https://x", "tenant_id": "acme"}))
        .send()
        .await
        .expect("post");
    assert_error(resp, 400, "tenant_conflict").await;
    let (_, page) = app.get_json("acme", "/records").await;
    assert_eq!(page["total"], 1);
    app.finish().await;
}
