//! Text inputs: a NUL anywhere is a 422 naming the field on both backends,
//! and nothing the database refuses becomes a 500.

use crate::support::{TestApp, TestStorage};
use reqwest::Method;
use serde_json::{Value, json};
use tenantd_testing::backends;

use super::{admin_config, assert_error};

/// One request carrying a NUL in one text input, and the field the 422
/// must name.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    admin: bool,
    field: &'static str,
}

fn tenant(method: Method, path: &str, body: Option<Value>, field: &'static str) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body,
        admin: false,
        field,
    }
}

fn admin(method: Method, path: &str, body: Option<Value>, field: &'static str) -> Case {
    Case {
        admin: true,
        ..tenant(method, path, body, field)
    }
}

fn record(patch: Value) -> Value {
    let mut r = json!({"name": "r", "kind": "service", "url": "https://example.com/r"});
    if let (Some(r), Some(p)) = (r.as_object_mut(), patch.as_object()) {
        r.extend(p.clone());
    }
    r
}

/// Every text input a client can send, with a NUL in it.
fn cases(record_id: &str) -> Vec<Case> {
    use Method as M;
    vec![
        // The issue's requests.
        tenant(
            M::POST,
            "/records",
            Some(record(json!({"description": "a\u{0}b"}))),
            "description",
        ),
        tenant(
            M::POST,
            "/records/search",
            Some(json!({"query": "x", "kind": "a\u{0}"})),
            "kind",
        ),
        tenant(M::GET, "/records?kind=%00", None, "kind"),
        tenant(M::GET, "/audit?action=%00", None, "action"),
        tenant(M::GET, "/audit?actor=%00", None, "actor"),
        // Records: every field, nested ones by their path.
        tenant(
            M::POST,
            "/records",
            Some(record(json!({"name": "a\u{0}"}))),
            "name",
        ),
        tenant(
            M::POST,
            "/records",
            Some(record(json!({"kind": "a\u{0}"}))),
            "kind",
        ),
        tenant(
            M::POST,
            "/records",
            Some(record(json!({"url": "https://e/\u{0}"}))),
            "url",
        ),
        tenant(
            M::POST,
            "/records",
            Some(record(json!({"tags": ["ok", "b\u{0}"]}))),
            "tags[1]",
        ),
        tenant(
            M::POST,
            "/records",
            Some(record(json!({"fields": {"lang": "r\u{0}"}}))),
            "fields.lang",
        ),
        tenant(
            M::POST,
            "/records",
            Some(record(json!({"fields": {"a": {"b": ["\u{0}"]}}}))),
            "fields.a.b[0]",
        ),
        tenant(
            M::POST,
            "/records",
            Some(record(json!({"fields": {"k\u{0}": 1}}))),
            "fields.k\\u0000",
        ),
        tenant(
            M::PUT,
            &format!("/records/{record_id}"),
            Some(record(json!({"description": "\u{0}"}))),
            "description",
        ),
        tenant(
            M::POST,
            "/records/search",
            Some(json!({"query": "a\u{0}"})),
            "query",
        ),
        tenant(
            M::POST,
            "/records/search",
            Some(json!({"query": "", "tags": ["\u{0}"]})),
            "tags[0]",
        ),
        tenant(
            M::POST,
            "/records/search",
            Some(json!({"query": "", "cursor": "\u{0}"})),
            "cursor",
        ),
        tenant(M::GET, "/records?tags=a,%00", None, "tags"),
        tenant(M::GET, "/records?cursor=%00", None, "cursor"),
        // Audit filters.
        tenant(M::GET, "/audit?since=%00", None, "since"),
        tenant(M::GET, "/audit?cursor=%00", None, "cursor"),
        // Jobs.
        tenant(
            M::POST,
            "/detect/submit",
            Some(json!({"repository_url": "https://e/\u{0}"})),
            "repository_url",
        ),
        tenant(
            M::POST,
            "/detect/submit",
            Some(
                json!({"repository_url": "https://example.com/r.git", "metadata": {"team": "\u{0}"}}),
            ),
            "metadata.team",
        ),
        tenant(M::GET, "/detect?status=%00", None, "status"),
        tenant(M::GET, "/detect?cursor=%00", None, "cursor"),
        // The admin API.
        admin(
            M::POST,
            "/admin/tenants",
            Some(json!({"id": "n1", "name": "a\u{0}"})),
            "name",
        ),
        admin(
            M::POST,
            "/admin/tenants",
            Some(json!({"id": "n2", "name": "n", "email": "a\u{0}@example.com"})),
            "email",
        ),
        admin(
            M::POST,
            "/admin/tenants",
            Some(json!({"id": "n3", "name": "n", "plan": "free\u{0}"})),
            "plan",
        ),
        admin(
            M::POST,
            "/admin/tenants",
            Some(json!({"id": "n4", "name": "n", "features": {"beta": "\u{0}"}})),
            "features.beta",
        ),
        admin(
            M::POST,
            "/admin/tenants",
            Some(
                json!({"id": "n5", "name": "n", "storage": {"isolation": "dedicated", "url": "postgres://h/\u{0}"}}),
            ),
            "storage.url",
        ),
        admin(
            M::POST,
            "/admin/tenants",
            Some(json!({"id": "n6", "name": "n", "storage": {"redis_addr": "\u{0}"}})),
            "storage.redis_addr",
        ),
        admin(
            M::POST,
            "/admin/tenants",
            Some(json!({"id": "n7", "name": "n", "frontend_url": "https://e/\u{0}"})),
            "frontend_url",
        ),
        admin(
            M::POST,
            "/admin/tenants",
            Some(json!({"id": "n8", "name": "n", "security": {"allowed_ips": ["10.0.0.1\u{0}"]}})),
            "security.allowed_ips[0]",
        ),
        admin(
            M::POST,
            "/admin/tenants",
            Some(json!({"id": "n\u{0}", "name": "n"})),
            "id",
        ),
        admin(
            M::PATCH,
            "/admin/tenants/acme",
            Some(json!({"name": "a\u{0}"})),
            "name",
        ),
        admin(
            M::PATCH,
            "/admin/tenants/acme",
            Some(json!({"features": {"x": ["\u{0}"]}})),
            "features.x[0]",
        ),
        admin(
            M::POST,
            "/admin/tenants/acme/api-keys",
            Some(json!({"name": "k\u{0}"})),
            "name",
        ),
        admin(
            M::POST,
            "/admin/tenants/acme/api-keys",
            Some(json!({"scopes": ["records:read\u{0}"]})),
            "scopes[0]",
        ),
        admin(
            M::POST,
            "/admin/tenants/acme/api-keys",
            Some(json!({"expires_at": "2999-01-01T00:00:00Z\u{0}"})),
            "expires_at",
        ),
        admin(
            M::POST,
            "/admin/tenants/acme/move",
            Some(json!({"to": "dedicated", "url": "postgres://h/\u{0}"})),
            "url",
        ),
        admin(M::GET, "/admin/tenants?plan=%00", None, "plan"),
        admin(M::GET, "/admin/tenants?cursor=%00", None, "cursor"),
        admin(
            M::GET,
            "/admin/audit?tenant=acme&action=%00",
            None,
            "action",
        ),
        admin(M::GET, "/admin/audit?actor=%00", None, "actor"),
        admin(M::GET, "/admin/tenants/acme/usage?month=%00", None, "month"),
        admin(
            M::GET,
            "/admin/tenants/acme/metrics?start=%00",
            None,
            "start",
        ),
        admin(M::GET, "/admin/billing/events?month=%00", None, "month"),
        admin(M::GET, "/health/tenants?cursor=%00", None, "cursor"),
    ]
}

#[backends]
async fn a_nul_in_any_text_input_is_a_422_naming_the_field_and_stores_nothing() {
    // One of the inputs is a move's (see `support::one_move_at_a_time`).
    let _moves = crate::support::one_move_at_a_time().await;
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, admin_config(dir.path(), |_| {})).await;
    let (_, key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let created: Value = app
        .with_key(Method::POST, &key, "/records")
        .json(&record(json!({"name": "kept", "description": "before"})))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();

    for case in cases(&id) {
        let mut req = if case.admin {
            app.admin(case.method.clone(), &case.path)
        } else {
            app.with_key(case.method.clone(), &key, &case.path)
        };
        if let Some(body) = &case.body {
            req = req.json(body);
        }
        let resp = req.send().await.expect("send");
        let what = format!("{} {} {:?}", case.method, case.path, case.body);
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("JSON error");
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(body["code"], "validation_failed", "{what}: {body}");
        let detail = body["detail"].as_str().expect("detail");
        assert!(
            detail.contains(&format!("{}: ", case.field)) && detail.contains("NUL"),
            "{what}: the detail names {}: {detail}",
            case.field
        );
    }

    // Nothing was stored: the one record as it was, one tenant, its one
    // key, no job.
    let records: Value = app
        .with_key(Method::GET, &key, "/records")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(records["total"], 1, "{records}");
    assert_eq!(records["results"][0]["description"], "before");
    let jobs: Value = app
        .with_key(Method::GET, &key, "/detect")
        .send()
        .await
        .expect("jobs")
        .json()
        .await
        .expect("json");
    assert_eq!(jobs["total"], 0, "{jobs}");
    let tenants: Value = app
        .admin(Method::GET, "/admin/tenants")
        .send()
        .await
        .expect("tenants")
        .json()
        .await
        .expect("json");
    let tenants = tenants["tenants"].as_array().expect("tenants");
    assert_eq!(tenants.len(), 1, "{tenants:?}");
    assert_eq!(tenants[0]["name"], "Acme");
    assert!(
        tenants[0]["features"]
            .as_object()
            .expect("features")
            .is_empty()
    );
    let keys: Value = app
        .admin(Method::GET, "/admin/tenants/acme/api-keys")
        .send()
        .await
        .expect("keys")
        .json()
        .await
        .expect("json");
    assert_eq!(keys.as_array().map(Vec::len), Some(1), "{keys}");
    app.finish().await;
}

/// Defence in depth: a value the database itself refuses (here a record
/// whose search index would pass PostgreSQL's 1 MB tsvector limit, SQLSTATE
/// 54000) is the client's doing, answered 422, never a 500; nothing is
/// stored. SQLite has no such limit and stores it.
#[backends]
async fn a_value_the_database_refuses_is_a_422_not_a_500() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.server.max_body_bytes = 4 << 20;
        }),
    )
    .await;
    let (_, key) = app
        .create_tenant(json!({"id": "acme", "name": "Acme"}))
        .await;
    let words: Vec<String> = (0..150_000).map(|i| format!("w{i:05}")).collect();
    let resp = app
        .with_key(Method::POST, &key, "/records")
        .json(&record(json!({"fields": {"words": words.join(" ")}})))
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    if super::support::on_postgres() {
        let detail = assert_error(resp, 422, "validation_failed").await;
        assert!(detail.contains("cannot be stored"), "{detail}");
        let records: Value = app
            .with_key(Method::GET, &key, "/records")
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(records["total"], 0, "{records}");
    } else {
        assert_eq!(status, 201);
    }
    app.finish().await;
}
