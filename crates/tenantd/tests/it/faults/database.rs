//! A PostgreSQL that stops answering: readiness says so within its one
//! second deadline (orchestrators' probes time out at 1 s), not after the
//! 5 s pool wait, and is ready again when the database is back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::App;
use super::relay::Relay;
use crate::support::postgres;

async fn ready_within(app: &App, deadline: Duration) -> (u16, Duration) {
    let started = Instant::now();
    let status = tokio::time::timeout(
        deadline,
        app.client.get(format!("{}/health/ready", app.base)).send(),
    )
    .await
    .unwrap_or_else(|_| panic!("/health/ready did not answer within {deadline:?}"))
    .expect("ready")
    .status()
    .as_u16();
    (status, started.elapsed())
}

#[tokio::test]
async fn readiness_answers_within_its_deadline_while_postgres_is_gone() {
    let Some(base) = postgres::superuser_url() else {
        println!("SKIPPED: TENANTD_TEST_POSTGRES_URL is not set");
        return;
    };
    let base_url = url::Url::parse(&base).expect("URL");
    let upstream = format!(
        "{}:{}",
        base_url.host_str().unwrap_or("127.0.0.1"),
        base_url.port().unwrap_or(5432)
    );
    let relay = Relay::start(upstream).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = postgres::create_db();
    let app = App::start(super::config(dir.path(), |c| {
        c.storage.backend = tenantd::config::Backend::Postgres;
        c.storage.url = Some(relay.route(&db.app_url()));
        c.storage.admin_url = Some(relay.route(&db.admin_url()));
        c.storage.migrate_url = Some(db.owner_url());
    }))
    .await;
    assert_eq!(ready_within(&app, Duration::from_secs(10)).await.0, 200);

    relay.frozen.store(true, Ordering::Release);
    for _ in 0..2 {
        // One second, plus a generous margin for a loaded machine; the pool
        // alone would wait five.
        let (status, took) = ready_within(&app, Duration::from_secs(4)).await;
        assert_eq!(status, 503, "after {took:?}");
    }

    relay.frozen.store(false, Ordering::Release);
    let mut back = false;
    for _ in 0..50 {
        if ready_within(&app, Duration::from_secs(10)).await.0 == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(back, "readiness did not come back with the database");
    app.stop().await;
}
