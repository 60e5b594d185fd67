//! Moving tenants between tiers: over HTTP with writers running, and by
//! the CLI killed at every phase.

use crate::support::{TestApp, TestStorage};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tenantd_testing::backends;

use reqwest::Method;
use serde_json::{Value, json};

use super::{App, assert_error, rows_in_file, rows_in_shared, support, tier_config};

async fn move_to(app: &App, tenant: &str, body: Value) -> (u16, Value) {
    let resp = app
        .admin(Method::POST, &format!("/admin/tenants/{tenant}/move"))
        .json(&body)
        .send()
        .await
        .expect("move");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json"))
}

#[backends]
async fn a_move_there_and_back_keeps_every_record_and_leaves_no_copy_behind() {
    // Moves are one at a time per process (see `support::one_move_at_a_time`).
    let _moves = crate::support::one_move_at_a_time().await;
    let dir = TestStorage::new();
    let app = TestApp::start(&dir, tier_config(dir.path(), |_| {})).await;
    app.tenant("acme", None).await;
    app.tenant("other", None).await;
    for i in 0..25 {
        assert_eq!(
            app.put_record("acme", &format!("r{i:02}")).await.status(),
            201
        );
    }
    assert_eq!(app.put_record("other", "theirs").await.status(), 201);
    let before = app.names("acme").await;

    let (status, report) = move_to(&app, "acme", json!({"to": "dedicated"})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["records"], 25);
    assert_eq!(report["from"], "shared");
    assert_eq!(report["already_there"], false);
    assert_eq!(report["removed_from_source"], 25);
    assert_eq!(report["sha256"].as_str().expect("sha").len(), 64);
    assert_eq!(rows_in_shared(dir.path(), "acme").await, 0);
    assert_eq!(rows_in_file(dir.path(), "acme").await, 25);
    assert_eq!(app.names("acme").await, before);
    assert_eq!(
        app.names("other").await,
        ["theirs"],
        "the neighbour is untouched"
    );
    let tenant: Value = app
        .admin(Method::GET, "/admin/tenants/acme")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(tenant["storage"]["isolation"], "dedicated");

    // Search still works there, and writes go to the new place.
    let found: Value = app
        .req(Method::POST, "acme", "/records/search")
        .json(&json!({"query": "moving"}))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(found["total"], 25);
    assert_eq!(app.put_record("acme", "after").await.status(), 201);
    assert_eq!(rows_in_file(dir.path(), "acme").await, 26);

    // Moving again to where it is changes nothing.
    let (status, again) = move_to(&app, "acme", json!({"to": "dedicated"})).await;
    assert_eq!(status, 200);
    assert_eq!(again["already_there"], true);
    assert_eq!(again["records"], 26);

    let (status, back) = move_to(&app, "acme", json!({"to": "shared"})).await;
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["records"], 26);
    assert_ne!(back["sha256"], report["sha256"], "26 records, not 25");
    assert_eq!(rows_in_shared(dir.path(), "acme").await, 26);
    assert_eq!(rows_in_file(dir.path(), "acme").await, 0);
    assert_eq!(app.names("acme").await.len(), 26);

    // Bad requests.
    let (status, _) = move_to(&app, "nobody", json!({"to": "dedicated"})).await;
    assert_eq!(status, 404);
    let resp = app
        .admin(Method::POST, "/admin/tenants/acme/move")
        .json(&json!({"to": "dedicated", "url": "mongodb://x"}))
        .send()
        .await
        .expect("move");
    assert_error(resp, 422, "validation_failed").await;
    let resp = app
        .admin(Method::POST, "/admin/tenants/acme/move")
        .json(&json!({"to": "elsewhere"}))
        .send()
        .await
        .expect("move");
    assert_eq!(resp.status(), 422);
    let resp = app
        .client
        .post(format!("{}/admin/tenants/acme/move", app.base))
        .json(&json!({"to": "dedicated"}))
        .send()
        .await
        .expect("move");
    assert_error(resp, 401, "unauthorized").await;
    // A PATCH cannot rebind (it would strand the records).
    let resp = app
        .admin(Method::PATCH, "/admin/tenants/acme")
        .json(&json!({"storage": {"isolation": "dedicated"}}))
        .send()
        .await
        .expect("patch");
    assert_error(resp, 422, "validation_failed").await;
    app.finish().await;
}

/// Writers run through the whole move: during the switch they get 503
/// `tenant_moving` with Retry-After, never anything else; readers never
/// fail; and every write that was accepted is there afterwards.
#[backends]
async fn writes_pause_with_503_only_during_the_switch_and_none_is_lost() {
    // Moves are one at a time per process (see `support::one_move_at_a_time`).
    let _moves = crate::support::one_move_at_a_time().await;
    let dir = TestStorage::new();
    let app = Arc::new(TestApp::start(&dir, tier_config(dir.path(), |_| {})).await);
    app.tenant("busy", None).await;
    for i in 0..200 {
        assert_eq!(
            app.put_record("busy", &format!("seed{i:03}"))
                .await
                .status(),
            201
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut accepted, mut paused, mut n) = (Vec::new(), 0u32, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{n:05}");
                n += 1;
                let resp = app.put_record("busy", &name).await;
                match resp.status().as_u16() {
                    201 => accepted.push(name),
                    503 => {
                        assert!(resp.headers().contains_key("retry-after"));
                        let body: Value = resp.json().await.expect("json");
                        assert_eq!(body["code"], "tenant_moving", "{body}");
                        paused += 1;
                    }
                    other => panic!("write answered {other}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            (accepted, paused)
        })
    };
    let reader = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let resp = app
                    .req(Method::POST, "busy", "/records/search")
                    .json(&json!({"query": "seed001"}))
                    .send()
                    .await
                    .expect("search");
                assert_eq!(resp.status(), 200, "reads go on during a move");
                reads += 1;
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            reads
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, report) = move_to(&app, "busy", json!({"to": "dedicated"})).await;
    assert_eq!(status, 200, "{report}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (accepted, paused) = writer.await.expect("writer");
    let reads = reader.await.expect("reader");
    assert!(paused > 0, "the switch paused some writes");
    assert!(reads > 0);
    let names = app.names("busy").await;
    assert_eq!(
        names.len(),
        200 + accepted.len(),
        "every accepted write is there, once"
    );
    for name in &accepted {
        assert!(names.binary_search(name).is_ok(), "{name} was lost");
    }
    assert_eq!(rows_in_shared(dir.path(), "busy").await, 0);
    assert!(report["writes_paused_ms"].as_u64().expect("ms") > 0);
    match Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}

fn cli_move(dir: &Path, tenant: &str, to: &str, crash_at: Option<&str>) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantd"));
    cmd.args(["tenants", "move", tenant, "--to", to, "--data-dir"])
        .arg(dir)
        .env_remove("TENANTD_CONFIG")
        .env(
            "TENANTD_KEY_PEPPER",
            "pepper-for-the-move-tests-0123456789abcdef",
        )
        .envs(support::backend_env(dir));
    if let Some(phase) = crash_at {
        cmd.env("TENANTD_TEST_MOVE_CRASH_AT", phase);
    }
    let out = cmd.output().expect("run tenantd");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A move killed after each phase leaves the tenant whole in exactly the
/// place its binding names (every record readable, none twice), and
/// running the move again finishes it with no copy left behind.
#[backends]
async fn a_move_killed_at_any_phase_leaves_the_tenant_whole_in_one_place() {
    // Moves are one at a time per process (see `support::one_move_at_a_time`).
    let _moves = crate::support::one_move_at_a_time().await;
    for (to, phase) in [
        ("dedicated", "copied"),
        ("dedicated", "frozen"),
        ("dedicated", "verified"),
        ("dedicated", "switched"),
        ("dedicated", "cleaned"),
        ("shared", "copied"),
        ("shared", "switched"),
    ] {
        let dir = TestStorage::new();
        let cfg = || {
            tier_config(dir.path(), |c| {
                c.auth.key_pepper = Some("pepper-for-the-move-tests-0123456789abcdef".to_owned());
            })
        };
        let app = TestApp::start(&dir, cfg()).await;
        app.tenant("acme", None).await;
        for i in 0..30 {
            assert_eq!(
                app.put_record("acme", &format!("r{i:02}")).await.status(),
                201
            );
        }
        let expected = app.names("acme").await;
        if to == "shared" {
            let (status, _) = move_to(&app, "acme", json!({"to": "dedicated"})).await;
            assert_eq!(status, 200);
        }
        app.finish().await;

        let (ok, out) = cli_move(dir.path(), "acme", to, Some(phase));
        assert!(!ok, "{to}/{phase}: the process was killed: {out}");
        assert!(
            out.contains(&format!("crashing the move after {phase}")),
            "{out}"
        );

        // Whole, once, wherever the binding says.
        let app = TestApp::start(&dir, cfg()).await;
        assert_eq!(
            app.names("acme").await,
            expected,
            "{to}/{phase}: readable and whole"
        );
        let in_file = rows_in_file(dir.path(), "acme").await;
        let in_shared = rows_in_shared(dir.path(), "acme").await;
        let bound: Value = app
            .admin(Method::GET, "/admin/tenants/acme")
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let dedicated = bound["storage"]["isolation"] == "dedicated";
        let (here, there) = if dedicated {
            (in_file, in_shared)
        } else {
            (in_shared, in_file)
        };
        assert_eq!(here, 30, "{to}/{phase}: all in the bound place");
        assert!(
            there == 0 || there == 30,
            "{to}/{phase}: a stale copy is whole or absent"
        );
        app.finish().await;

        // Running it again finishes the job.
        let (ok, out) = cli_move(dir.path(), "acme", to, None);
        assert!(ok, "{to}/{phase}: {out}");
        let app = TestApp::start(&dir, cfg()).await;
        assert_eq!(app.names("acme").await, expected);
        let (file, shared) = (
            rows_in_file(dir.path(), "acme").await,
            rows_in_shared(dir.path(), "acme").await,
        );
        if to == "dedicated" {
            assert_eq!((file, shared), (30, 0), "{to}/{phase}");
        } else {
            assert_eq!((file, shared), (0, 30), "{to}/{phase}");
        }
        // Writes work again (a crashed freeze does not outlive its lease:
        // the re-run replaced it).
        assert_eq!(app.put_record("acme", "after").await.status(), 201);
        app.finish().await;
    }
}
