//! A PostgreSQL that stops answering: readiness says so within its one
//! second deadline (orchestrators' probes time out at 1 s), not after the
//! 5 s pool wait, and is ready again when the database is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::App;
use crate::support::postgres;

/// A TCP relay to the test PostgreSQL that can be frozen: while frozen it
/// passes no byte either way, as a database host that stopped answering.
struct Relay {
    port: u16,
    frozen: Arc<AtomicBool>,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while frozen.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let frozen = Arc::new(AtomicBool::new(false));
        let flag = frozen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, flag.clone()));
                tokio::spawn(pump(sr, cw, flag.clone()));
            }
        });
        Relay { port, frozen }
    }

    /// `url` with its host and port replaced by the relay's.
    fn route(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).expect("URL");
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.port)).expect("port");
        url.to_string()
    }
}

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
    let db = postgres::db_for(dir.path());
    let app = App::start(crate::config(dir.path(), |c| {
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
