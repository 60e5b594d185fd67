//! The database stops under a running server (a PostgreSQL cluster of the
//! test's own, crashed with `pg_ctl stop -m immediate`), and the server is
//! killed under load (SIGKILL, on SQLite):
//!
//! - every request is answered within its timeout, whatever the audit
//!   writer is doing;
//! - no acknowledged write is without its audit event: the event commits
//!   with the write, and what the writer could not chain is chained from
//!   the outbox once the database is back (or the process restarted);
//! - the server recovers without a restart, and the audit chains verify.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::cluster::Cluster;
use super::relay::Relay;
use super::{ADMIN_KEY, App, config};
use crate::support::Proc;

/// The request timeout these tests configure.
const TIMEOUT_SECS: u64 = 3;

/// A record create as `acme`; `None` when the request itself failed.
async fn create(client: &reqwest::Client, base: &str, name: &str) -> Option<u16> {
    client
        .post(format!("{base}/records"))
        .header("X-Tenant-ID", "acme")
        .json(&json!({"name": name, "kind": "service", "url": "https://example.com"}))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn create_acme(client: &reqwest::Client, base: &str) {
    let resp = client
        .post(format!("{base}/admin/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"id": "acme", "name": "Acme", "security": {"header_access": true}}))
        .send()
        .await
        .expect("create tenant");
    assert_eq!(resp.status(), 201);
}

/// Every event of `acme`'s chain (the admin path, paged).
async fn events(client: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/admin/audit?tenant=acme&limit=500");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client
            .get(url)
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("audit")
            .json()
            .await
            .expect("json");
        all.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

/// Names of records whose create has an event in `acme`'s chain.
fn audited_creates(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .filter(|e| e["action"] == "records.create")
        .filter_map(|e| e["params"]["body"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// Waits until every name in `names` has its event (the outbox sweep runs
/// every 2 s on events older than the request timeout plus 5 s).
async fn wait_for_events(client: &reqwest::Client, base: &str, names: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let audited = audited_creates(&events(client, base).await);
        let missing: Vec<&String> = names.difference(&audited).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} committed writes have no audit event: {missing:?}",
            missing.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Writers creating records until `stop`, each with a unique name;
/// returns the names answered 201.
fn writers(
    app_base: &str,
    count: usize,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..count)
        .map(|w| {
            let base = app_base.to_owned();
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(TIMEOUT_SECS + 10))
                    .build()
                    .expect("client");
                let mut acknowledged = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Acquire) {
                    let name = format!("w{w}-{i}");
                    i += 1;
                    if create(&client, &base, &name).await == Some(201) {
                        acknowledged.push(name);
                    }
                }
                acknowledged
            })
        })
        .collect()
}

async fn start_on(cluster: &Cluster, dir: &Path) -> App {
    App::start(config(dir, |c| {
        cluster.configure(&mut c.storage);
        c.admin.key = Some(ADMIN_KEY.to_owned());
        c.server.request_timeout_secs = TIMEOUT_SECS;
    }))
    .await
}

/// The case: with the database gone, writes used to take the pool
/// wait, then the audit writer's three attempts of five seconds each (16 s
/// with a 10 s timeout). Each is now answered within its timeout, and the
/// server serves again once the database is back, without a restart.
#[tokio::test]
async fn requests_are_answered_within_their_timeout_while_the_database_is_down() {
    let cluster = Cluster::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = start_on(&cluster, dir.path()).await;
    create_acme(&app.client, &app.base).await;
    assert_eq!(create(&app.client, &app.base, "before").await, Some(201));

    cluster.crash();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let requests = (0..6).map(|i| {
        let (client, base) = (client.clone(), app.base.clone());
        async move {
            let started = Instant::now();
            let status = create(&client, &base, &format!("during{i}")).await;
            (status, started.elapsed())
        }
    });
    for (status, took) in futures_util::future::join_all(requests).await {
        let status = status.expect("an answer, not a dropped connection");
        assert_eq!(status, 503, "a write while the database is down");
        // The timeout plus a generous margin for a loaded machine.
        assert!(
            took < Duration::from_secs(TIMEOUT_SECS + 3),
            "answered after {took:?} with a {TIMEOUT_SECS} s request timeout"
        );
    }

    cluster.up();
    let mut back = false;
    for _ in 0..60 {
        if create(&client, &app.base, "after").await == Some(201) {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(back, "writes did not recover once the database was back");
    let names: BTreeSet<String> = ["before", "after"].map(str::to_owned).into();
    wait_for_events(&client, &app.base, &names).await;
    app.stop().await;
}

/// The database dies between writes and their answers. The audit writer's
/// path to the database (the admin role's connections) stops answering,
/// so four writes commit and wait for their events; then the database
/// crashes. Each write is still answered within its timeout, with 201
/// (its write committed), and once the database is back every one of them
/// has its event: it was committed with the write. Before, the events were
/// lost after the writer's attempts, and the answers waited on the writer
/// without a deadline. The chains verify.
#[tokio::test]
async fn no_acknowledged_write_loses_its_event_when_the_database_dies_before_the_answer() {
    let cluster = Cluster::start().await;
    let admin_path = Relay::start(cluster.address()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = App::start(config(dir.path(), |c| {
        cluster.configure(&mut c.storage);
        c.storage.admin_url = Some(admin_path.route(&cluster.url("admin", "tenantd")));
        c.admin.key = Some(ADMIN_KEY.to_owned());
        c.server.request_timeout_secs = TIMEOUT_SECS;
    }))
    .await;
    create_acme(&app.client, &app.base).await;
    assert_eq!(create(&app.client, &app.base, "before").await, Some(201));

    admin_path.frozen.store(true, Ordering::Release);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(TIMEOUT_SECS + 20))
        .build()
        .expect("client");
    let writes = (0..4).map(|i| {
        let (client, base) = (client.clone(), app.base.clone());
        tokio::spawn(async move {
            let name = format!("in-flight{i}");
            let started = Instant::now();
            let status = create(&client, &base, &name).await;
            (name, status, started.elapsed())
        })
    });
    let writes: Vec<_> = writes.collect();
    // The writes commit (their own path is up) and wait for the writer:
    // crash once all four are in the database.
    let mut db =
        <sqlx::PgConnection as sqlx::Connection>::connect(&cluster.url("postgres", "tenantd"))
            .await
            .expect("superuser connection");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM records WHERE tenant_id = 'acme' AND name LIKE 'in-flight%'",
        )
        .fetch_one(&mut db)
        .await
        .expect("count");
        if stored == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the writes did not commit: {stored} of 4"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(db);
    cluster.crash();
    let mut acknowledged: BTreeSet<String> = ["before".to_owned()].into();
    for write in writes {
        let (name, status, took) = write.await.expect("write");
        assert_eq!(
            status,
            Some(201),
            "{name}: its write committed before the crash"
        );
        assert!(
            took < Duration::from_secs(TIMEOUT_SECS + 3),
            "{name}: answered after {took:?} with a {TIMEOUT_SECS} s request timeout"
        );
        acknowledged.insert(name);
    }

    cluster.up();
    admin_path.frozen.store(false, Ordering::Release);
    wait_for_events(&app.client, &app.base, &acknowledged).await;
    app.stop().await;
    verify_chains(
        dir.path(),
        &[
            ("TENANTD_STORAGE__BACKEND", "postgres"),
            ("TENANTD_STORAGE__URL", &cluster.url("app", "tenantd")),
            (
                "TENANTD_STORAGE__ADMIN_URL",
                &cluster.url("admin", "tenantd"),
            ),
        ],
    );
}

/// `tenantd audit verify` over the server's storage: every chain intact.
fn verify_chains(data_dir: &Path, env: &[(&str, &str)]) {
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_tenantd"))
        .args(["audit", "--data-dir"])
        .arg(data_dir)
        .arg("verify")
        .envs(env.iter().copied())
        .output()
        .expect("audit verify");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// kill -9 under write load on SQLite: a write that committed but whose
/// answer never left (the process died in between) has its event after a
/// restart, as does every write that was answered; the chain verifies.
#[tokio::test]
async fn a_write_whose_answer_never_left_has_its_event_after_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("TENANTD_TENANT_ENABLED", "true"),
        ("TENANTD_ADMIN_KEY", ADMIN_KEY),
        ("TENANTD_SERVER__REQUEST_TIMEOUT_SECS", "3"),
    ];
    let server = Proc::start(dir.path(), &env, &[]).await;
    let client = reqwest::Client::new();
    create_acme(&client, &server.base).await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = writers(&server.base, 8, stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(server); // SIGKILL
    stop.store(true, Ordering::Release);
    let mut acknowledged = BTreeSet::new();
    for writer in running {
        acknowledged.extend(writer.await.expect("writer"));
    }
    assert!(
        acknowledged.len() > 10,
        "too few writes: {}",
        acknowledged.len()
    );

    let server = Proc::start(dir.path(), &env, &[]).await;
    // Every stored record, answered or not, must have its event.
    let mut stored = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/records?limit=100", server.base);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = client
            .get(url)
            .header("X-Tenant-ID", "acme")
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        for record in page["results"].as_array().cloned().unwrap_or_default() {
            stored.extend(record["name"].as_str().map(str::to_owned));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let missing: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    // Stored includes writes that committed but were never answered.
    wait_for_events(&client, &server.base, &stored).await;
    let (clean, log) = server.stop();
    assert!(clean, "{log}");
    verify_chains(dir.path(), &[]);
}
