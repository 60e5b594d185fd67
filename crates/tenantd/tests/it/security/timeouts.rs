//! Slow clients: a body sent a byte at a time, on any route, is cut off by
//! the request timeout; a request head sent a byte at a time, by the
//! header-read timeout.

use crate::support::{TestApp, TestStorage};
use std::time::{Duration, Instant};
use tenantd_testing::backends;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{ADMIN_KEY, admin_config, event_statuses};

/// Sends the head of a POST with `Content-Length: 200`, then a byte a
/// second; returns the status line and when it came, or `None` if the
/// server said nothing within `give_up`.
async fn trickle_body(
    base: &str,
    path: &str,
    extra: &str,
    give_up: Duration,
) -> Option<(String, Duration)> {
    let addr = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra}Content-Length: 200\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await.expect("head");
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    while started.elapsed() < give_up {
        tokio::select! {
            read = stream.read(&mut buf) => {
                let n = read.unwrap_or(0);
                if n == 0 {
                    return Some(("closed".to_owned(), started.elapsed()));
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let line = text.lines().next().unwrap_or_default().to_owned();
                return Some((line, started.elapsed()));
            }
            () = tokio::time::sleep(Duration::from_secs(1)) => {
                // One more byte of a body that never ends in time.
                if stream.write_all(b" ").await.is_err() {
                    return Some(("closed".to_owned(), started.elapsed()));
                }
            }
        }
    }
    None
}

#[backends]
async fn a_slow_body_is_bounded_by_the_request_timeout_on_every_route() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.server.request_timeout_secs = 2;
        }),
    )
    .await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "issue_key": false}))
        .await;
    let admin = format!("Authorization: Bearer {ADMIN_KEY}\r\n");
    let cases = [
        ("/records", "X-Tenant-ID: acme\r\n"),
        ("/records", ""),
        ("/records/search", ""),
        ("/admin/tenants", admin.as_str()),
    ];
    for (path, extra) in cases {
        let (line, after) = trickle_body(&app.base, path, extra, Duration::from_secs(12))
            .await
            .unwrap_or_else(|| panic!("{path}: no answer within 12 s"));
        // The timeout is 2 s; the margin is generous (a loaded machine).
        assert!(
            after < Duration::from_secs(8),
            "{path}: answered after {after:?}"
        );
        assert!(line.contains("503"), "{path} {extra:?}: {line}");
    }
    app.finish().await;
}

#[backends]
async fn a_connection_that_says_nothing_is_closed() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.server.header_read_timeout_secs = 1;
        }),
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    for first_bytes in [&b""[..], b"P", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"] {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream.write_all(first_bytes).await.expect("write");
        let started = Instant::now();
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        assert!(
            read.is_ok(),
            "{:?}: the connection was held for 10 s",
            String::from_utf8_lossy(first_bytes)
        );
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }
    app.finish().await;
}

#[backends]
async fn a_slow_request_head_is_cut_off() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.server.header_read_timeout_secs = 1;
        }),
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("partial head");
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        tokio::select! {
            read = stream.read(&mut buf) => {
                // EOF, a reset, or hyper's 408: the connection is done.
                let _ = read;
                closed = true;
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                if stream.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    closed = true;
                    break;
                }
            }
        }
    }
    assert!(closed, "a trickled head held the connection for 10 s");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    // The server still serves others.
    let resp = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .expect("health");
    assert_eq!(resp.status(), 200);
    app.finish().await;
}

/// Holds the storage the records live in busy for `hold`, so a write
/// waits on it past the request timeout.
async fn hold_storage(dir: &std::path::Path, hold: Duration) -> tokio::task::JoinHandle<()> {
    use sqlx::Connection as _;
    if crate::support::on_postgres() {
        let url = crate::support::postgres::db_for(dir).superuser_url();
        let mut conn = sqlx::PgConnection::connect(&url).await.expect("connect");
        sqlx::raw_sql("BEGIN; LOCK TABLE records IN ACCESS EXCLUSIVE MODE")
            .execute(&mut conn)
            .await
            .expect("lock");
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let _ = sqlx::raw_sql("COMMIT").execute(&mut conn).await;
        })
    } else {
        let url = format!("sqlite://{}", dir.join("tenantd.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url)
            .await
            .expect("connect");
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .expect("lock");
        tokio::spawn(async move {
            tokio::time::sleep(hold).await;
            let _ = sqlx::raw_sql("COMMIT").execute(&mut conn).await;
        })
    }
}

#[backends]
async fn a_request_that_times_out_in_its_tenant_is_still_metered_and_audited() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.server.request_timeout_secs = 1;
            c.usage.flush_ms = 50;
        }),
    )
    .await;
    app.create_tenant(json!({"id": "acme", "name": "Acme", "issue_key": false}))
        .await;
    let held = hold_storage(dir.path(), Duration::from_secs(3)).await;
    let resp = app
        .req(reqwest::Method::POST, "acme", "/records")
        .json(&json!({"name": "slow", "kind": "k", "url": "https://x"}))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 503);
    held.await.expect("released");
    let usage = app.admin_get("/admin/tenants/acme/usage").await;
    assert_eq!(usage["api_calls"]["total"], 1, "{usage}");
    let audit = app
        .admin_get("/admin/audit?tenant=acme&action=records.create")
        .await;
    let statuses = event_statuses(&audit);
    assert_eq!(statuses, [503], "{audit}");
    app.finish().await;
}

#[backends]
async fn one_address_cannot_hold_every_connection() {
    let dir = TestStorage::new();
    let app = TestApp::start(
        &dir,
        admin_config(dir.path(), |c| {
            c.server.max_connections_per_ip = 3;
        }),
    )
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // Give the server a moment to have accepted all three.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut fourth = TcpStream::connect(&addr).await.expect("connect");
    let _ = fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buf))
        .await
        .expect("closed at once, not held");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the fourth was served: {read:?}"
    );
    // A held connection still works, and one closing frees a place.
    let mut first = held.remove(0);
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    first.read_to_end(&mut answer).await.expect("read");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    drop(first);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = app
        .client
        .get(format!("{}/health", app.base))
        .send()
        .await
        .expect("a place was freed");
    assert_eq!(resp.status(), 200);
    drop(held);
    app.finish().await;
}

#[backends]
async fn sigterm_with_a_stuck_client_still_exits_and_flushes_usage() {
    let dir = TestStorage::new();
    let config = dir.path().join("tenantd.yaml");
    std::fs::write(
        &config,
        "server:\n  request_timeout_secs: 120\n  shutdown_grace_secs: 1\nusage:\n  flush_ms: 600000\n",
    )
    .expect("config");
    let env = [
        ("TENANTD_TENANT_ENABLED", "true"),
        ("TENANTD_ADMIN_KEY", ADMIN_KEY),
    ];
    let config_arg = config.display().to_string();
    let proc = crate::support::Proc::start(dir.path(), &env, &["--config", &config_arg]).await;
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{}/admin/tenants", proc.base))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"id": "acme", "name": "Acme", "issue_key": false}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    for _ in 0..5 {
        let resp = client
            .get(format!("{}/records", proc.base))
            .header("X-Tenant-ID", "acme")
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status(), 200);
    }
    // A client that never finishes its body, and would keep the old
    // shutdown waiting for as long as it likes.
    let addr = proc.base.trim_start_matches("http://").to_owned();
    let mut stuck = TcpStream::connect(&addr).await.expect("connect");
    stuck
        .write_all(
            b"POST /records HTTP/1.1\r\nHost: x\r\nX-Tenant-ID: acme\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await
        .expect("head");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (clean, stderr) = tokio::task::spawn_blocking(move || proc.stop())
        .await
        .expect("join");
    assert!(clean, "{stderr}");
    // Grace is 1 s; the margin is generous (a loaded machine).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert!(stderr.contains("shutdown grace over"), "{stderr}");
    drop(stuck);
    // The five calls were written at shutdown (the periodic flush is 10 min).
    let proc = crate::support::Proc::start(dir.path(), &env, &["--config", &config_arg]).await;
    let usage: serde_json::Value = client
        .get(format!("{}/admin/tenants/acme/usage", proc.base))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("usage")
        .json()
        .await
        .expect("json");
    assert_eq!(usage["api_calls"]["total"], 5, "{usage}");
    drop(proc);
}
