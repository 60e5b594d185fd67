//! Bad input of every kind: a clear JSON error with the right status, no
//! panic, and nothing lost or half-written.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{App, assert_error, config, ids, urlencode};

async fn post_raw(
    app: &App,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.req(Method::POST, "acme", path)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("post")
}

#[backends]
async fn unreadable_bodies() {
    let data = TestStorage::new();
    let app = TestApp::start(
        &data,
        config(data.path(), |c| c.server.max_body_bytes = 4096),
    )
    .await;
    let kept = app.create("acme", "kept", "must survive").await;

    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "/records",
            "application/json",
            b"{\"name\": ".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/records",
            "application/json",
            b"not json".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/records",
            "application/json",
            b"".to_vec(),
            400,
            "bad_request",
        ),
        (
            "/records",
            "application/json",
            vec![0xff, 0xfe, 0x00],
            400,
            "bad_request",
        ),
        (
            "/records",
            "application/json",
            b"[1,2]".to_vec(),
            422,
            "validation_failed",
        ),
        (
            "/records",
            "application/json",
            b"{}".to_vec(),
            422,
            "validation_failed",
        ),
        (
            "/records",
            "text/plain",
            b"{}".to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "/records/search",
            "application/json",
            b"{\"query\": 5}".to_vec(),
            422,
            "validation_failed",
        ),
        (
            "/records/search",
            "application/json",
            b"{\"q\": \"x\"}".to_vec(),
            422,
            "validation_failed",
        ),
        (
            "/records",
            "application/json",
            vec![b' '; 10_000],
            413,
            "payload_too_large",
        ),
    ];
    for (path, ct, body, status, code) in cases {
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(20)
            .collect::<String>();
        let resp = post_raw(&app, path, ct, body).await;
        assert_eq!(resp.status().as_u16(), status, "{path} {shown:?}");
        assert_error(resp, status, code).await;
    }

    // A valid record inside an oversize body is not half-written.
    let big =
        json!({"name": "big", "kind": "k", "url": "https://x", "description": "x".repeat(8000)});
    let resp = app
        .req(Method::POST, "acme", "/records")
        .json(&big)
        .send()
        .await
        .expect("post");
    assert_error(resp, 413, "payload_too_large").await;

    let (_, page) = app.get_json("acme", "/records").await;
    assert_eq!(ids(&page), vec![kept["id"].as_str().expect("id")]);
    app.finish().await;
}

#[backends]
async fn unknown_fields_and_invalid_values_are_422_naming_the_problem() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let base = json!({"name": "n", "kind": "service", "url": "https://x"});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let cases = [
        (with("colour", json!("red")), "colour"),
        (with("name", json!("")), "name"),
        (with("name", json!("x".repeat(257))), "name"),
        (with("kind", json!("bad kind!")), "kind"),
        (with("url", json!("has space")), "url"),
        (with("tags", json!(["ok", ""])), "tag"),
        (with("fields", json!([1])), "fields"),
        (with("description", json!(12)), "description"),
    ];
    for (body, mentions) in cases {
        let resp = app
            .req(Method::POST, "acme", "/records")
            .json(&body)
            .send()
            .await
            .expect("post");
        let detail = assert_error(resp, 422, "validation_failed").await;
        assert!(
            detail.contains(mentions),
            "{detail} should mention {mentions}"
        );
    }
    for path in [
        "/records?limit=0",
        "/records?limit=5000",
        "/records?cursor=garbage",
    ] {
        let resp = app
            .req(Method::GET, "acme", path)
            .send()
            .await
            .expect("get");
        assert_error(resp, 422, "validation_failed").await;
    }
    let resp = app
        .req(Method::GET, "acme", "/records?sort=desc")
        .send()
        .await
        .expect("get");
    let detail = assert_error(resp, 400, "bad_request").await;
    assert!(detail.contains("sort"), "{detail}");
    let (_, page) = app.get_json("acme", "/records").await;
    assert_eq!(page["total"], 0, "nothing was written");
    app.finish().await;
}

#[backends]
async fn injection_strings_are_data_not_code() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    app.create("globex", "victim", "other tenant's row").await;
    let nasty = [
        "'; DROP TABLE records; --",
        "\" OR 1=1 --",
        "x' UNION SELECT * FROM records --",
        "tenant_id:globex",
        "NEAR(victim other)",
        "victim*",
        "\"unterminated",
        "( ) AND OR NOT",
        "{tenant_hex}:*",
        "🦀 ∑ ﷽",
    ];
    for (i, text) in nasty.iter().enumerate() {
        let resp = app
            .req(Method::POST, "acme", "/records")
            .json(
                &json!({"name": format!("{text}{i}"), "kind": "k", "url": "https://x",
                          "description": text}),
            )
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 201, "{text:?}");
        let rec: Value = resp.json().await.expect("json");
        assert_eq!(rec["description"], *text, "stored verbatim");

        let (status, page) = app.search("acme", json!({"query": text})).await;
        assert!(status == 200 || status == 422, "{text:?} → {status}");
        if status == 200 {
            for hit in page["results"].as_array().expect("results") {
                assert_eq!(hit["tenant_id"], "acme", "{text:?} leaked");
            }
        } else {
            assert_eq!(page["code"], "validation_failed");
        }
        let (status, _) = app
            .get_json("acme", &format!("/records?kind={}", urlencode(text)))
            .await;
        assert!(status == 200 || status == 422, "{text:?} → {status}");
    }
    // The tables are intact and globex still has exactly its row.
    let (_, page) = app.get_json("globex", "/records").await;
    assert_eq!(page["total"], 1);
    let (_, page) = app.get_json("acme", "/records?limit=100").await;
    assert_eq!(page["total"], nasty.len());
    // Control characters are refused in names rather than stored.
    let resp = app
        .req(Method::POST, "acme", "/records")
        .json(&json!({"name": "a\u{0}b", "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    assert_error(resp, 422, "validation_failed").await;
    let (status, _) = app.search("acme", json!({"query": "\u{0}\u{1}"})).await;
    assert!(status == 200 || status == 422);
    let long = "a ".repeat(20_000);
    let (status, _) = app.search("acme", json!({"query": long})).await;
    assert_eq!(status, 422, "overlong queries are refused, not run");
    app.finish().await;
}

#[backends]
async fn routes_ids_and_methods() {
    let data = TestStorage::new();
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    for id in [
        "nope",
        "rec_",
        "rec_zzzzzzzzzzzzzzzzzzzzzzzzzz",
        "%00",
        "rec_01JD6ZK8Q3V2N4M5P6R7S8T9VW",
    ] {
        let resp = app
            .req(Method::GET, "acme", &format!("/records/{id}"))
            .send()
            .await
            .expect("get");
        assert_error(resp, 404, "not_found").await;
    }
    let resp = app
        .req(Method::GET, "acme", "/no/such/route")
        .send()
        .await
        .expect("get");
    assert_error(resp, 404, "not_found").await;
    let resp = app
        .req(Method::PATCH, "acme", "/records")
        .send()
        .await
        .expect("patch");
    assert!(resp.headers().contains_key("allow"));
    assert_error(resp, 405, "method_not_allowed").await;
    app.finish().await;
}

#[backends]
async fn a_dead_database_is_503_and_recovers_nothing_wrongly() {
    let data = TestStorage::new();
    let cfg = config(data.path(), |_| {});
    let server = tenantd::Server::build(cfg.clone(), None)
        .await
        .expect("build");
    let state = server.state().clone();
    let app = TestApp::serve(&data, &cfg, server);
    app.create("acme", "before", "written while healthy").await;

    state.store.close().await;
    let resp = app
        .req(Method::POST, "acme", "/records")
        .json(&json!({"name": "after", "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    let detail = assert_error(resp, 503, "unavailable").await;
    assert!(detail.contains("changed nothing"), "{detail}");
    let resp = app
        .req(Method::GET, "acme", "/records")
        .send()
        .await
        .expect("get");
    assert_error(resp, 503, "unavailable").await;
    let resp = app
        .client
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .expect("get");
    assert_error(resp, 503, "unavailable").await;
    let resp = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200, "liveness is not readiness");
    app.finish().await;

    // Restarted on the same directory: the healthy write is there, the
    // refused one is not.
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    let (_, page) = app.get_json("acme", "/records").await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["results"][0]["name"], "before");
    app.finish().await;
}

#[backends]
async fn a_deleted_data_directory_is_503_not_a_silent_loss() {
    let data = TestStorage::new();
    let dir = data.path().to_path_buf();
    let app = TestApp::start(&data, config(&dir, |_| {})).await;
    app.create("acme", "before", "x").await;
    if crate::support::on_postgres() {
        // The database goes away under the server: no new connections,
        // and every open one is killed.
        let db = crate::support::postgres::db_for(&dir);
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.base)
            .await
            .expect("superuser");
        for sql in [
            format!("ALTER DATABASE \"{}\" ALLOW_CONNECTIONS false", db.name),
            format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{}'",
                db.name
            ),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await
                .expect("kill the database");
        }
    } else {
        std::fs::remove_dir_all(&dir).expect("rm");
    }
    let resp = app
        .req(Method::POST, "acme", "/records")
        .json(&json!({"name": "after", "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    assert_error(resp, 503, "unavailable").await;
    let resp = app
        .client
        .get(format!("{}/health/ready", app.base))
        .send()
        .await
        .expect("get");
    assert_error(resp, 503, "unavailable").await;
    // Stopped without the invariant checks: the storage is gone on purpose.
    app.stop().await;
}
