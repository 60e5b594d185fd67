//! A Redis that goes away and comes back: through a TCP proxy the test
//! controls, the limiter follows `on_store_error` (refused connections,
//! then a Redis that accepts but never answers) and recovers. Needs
//! `TENANTD_TEST_REDIS_URL`; built only with the `redis` feature.

#[path = "redis_support/mod.rs"]
mod redis_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::ConnectionAddr;
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::AbortHandle;
use tower_tenancy::TenantId;
use tower_tenancy::ratelimit::{
    Bucket, Decision, ManualClock, OnStoreError, Outcome, RateLimitStore, RateLimiter, RedisStore,
    Window,
};

use redis_support::*;

/// A TCP proxy in front of the real Redis that the test can break: `kill`
/// drops every connection and stops listening (connections are refused),
/// `black_hole` accepts connections but never answers, `revive` forwards
/// again, on the same port.
struct Proxy {
    addr: SocketAddr,
    upstream: String,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start() -> Self {
        let info = redis::Client::open(redis_url())
            .expect("valid Redis URL")
            .get_connection_info()
            .clone();
        let upstream = match info.addr() {
            ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            other => panic!("the proxy test needs a plain TCP Redis URL, got {other:?}"),
        };
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let addr = socket.local_addr().expect("local addr");
        drop(socket);
        let proxy = Self {
            addr,
            upstream,
            tasks: Arc::default(),
        };
        proxy.revive().await;
        proxy
    }

    /// The Redis URL with the proxy's address instead of Redis's (user,
    /// password and database kept).
    fn url(&self) -> String {
        let url = redis_url();
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (authority, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let userinfo = authority
            .rsplit_once('@')
            .map(|(u, _)| format!("{u}@"))
            .unwrap_or_default();
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }

    async fn listen(&self, forward: bool) {
        // Binding right after `kill` may briefly find the old socket.
        let mut tries = 0;
        let listener = loop {
            let socket = TcpSocket::new_v4().expect("socket");
            socket.set_reuseaddr(true).expect("SO_REUSEADDR");
            match socket.bind(self.addr).and_then(|()| socket.listen(64)) {
                Ok(listener) => break listener,
                Err(e) if tries < 50 => {
                    tries += 1;
                    eprintln!("proxy: re-binding {}: {e}", self.addr);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("proxy cannot listen on {} again: {e}", self.addr),
            }
        };
        let upstream = self.upstream.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if forward {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    } else {
                        // Hold the connection open and swallow everything.
                        let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
                        std::future::pending::<()>().await;
                    }
                });
                tasks.lock().expect("proxy tasks").push(conn.abort_handle());
            }
        });
        self.tasks
            .lock()
            .expect("proxy tasks")
            .push(accept.abort_handle());
    }

    async fn revive(&self) {
        self.kill().await;
        self.listen(true).await;
    }

    async fn black_hole(&self) {
        self.kill().await;
        self.listen(false).await;
    }

    async fn kill(&self) {
        // Twice: a connection accepted while the first round ran is
        // registered after it.
        for _ in 0..2 {
            let tasks = std::mem::take(&mut *self.tasks.lock().expect("proxy tasks"));
            for task in tasks {
                task.abort();
            }
            // Let the aborted tasks drop their sockets.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `check` on both limiters, each bounded by a guard far above the store
/// timeout (a hang fails the test instead of blocking it).
async fn both(
    allow: &RateLimiter,
    deny: &RateLimiter,
    t: &TenantId,
    buckets: &[Bucket],
) -> (Outcome, Outcome, Duration) {
    let started = Instant::now();
    let guard = Duration::from_secs(3);
    let a = tokio::time::timeout(guard, allow.check(t, buckets))
        .await
        .expect("check (allow) hung");
    let d = tokio::time::timeout(guard, deny.check(t, buckets))
        .await
        .expect("check (deny) hung");
    (a, d, started.elapsed())
}

async fn until_allowed(
    limiter: &RateLimiter,
    t: &TenantId,
    buckets: &[Bucket],
    phase: &str,
) -> Decision {
    let mut last = None;
    for _ in 0..50 {
        let outcome = tokio::time::timeout(Duration::from_secs(3), limiter.check(t, buckets))
            .await
            .expect("check hung");
        match outcome {
            Outcome::Allowed(d) => return d,
            other => last = Some(other),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{phase}: checks never succeeded again; last outcome {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_follows_on_store_error_and_recovers() {
    let ns = namespace();
    let proxy = Proxy::start().await;
    let timeout = Duration::from_millis(200);
    let store: Arc<dyn RateLimitStore> =
        Arc::new(RedisStore::connect(&proxy.url(), &ns, timeout).expect("valid URL"));
    let clock = Arc::new(ManualClock::new(DAY_START + 1_000));
    let allow = RateLimiter::new(store.clone(), clock.clone(), OnStoreError::Allow);
    let deny = RateLimiter::new(store, clock.clone(), OnStoreError::Deny);
    let buckets = [Bucket::tenant([Window::per_minute(1_000)])];
    let acme = tenant("acme");

    // Up: both limiters reach Redis through the proxy.
    let (a, d, _) = both(&allow, &deny, &acme, &buckets).await;
    assert!(matches!(a, Outcome::Allowed(_)), "before the outage: {a:?}");
    assert!(matches!(d, Outcome::Allowed(_)), "before the outage: {d:?}");

    // Killed: connections dropped, new ones refused.
    proxy.kill().await;
    for i in 0..5 {
        let (a, d, took) = both(&allow, &deny, &acme, &buckets).await;
        eprintln!("killed, check {i}: {a:?} / {d:?} in {took:?}");
        assert_eq!(
            a,
            Outcome::Unavailable { allowed: true },
            "on_store_error allow, check {i}"
        );
        assert_eq!(
            d,
            Outcome::Unavailable { allowed: false },
            "on_store_error deny, check {i}"
        );
    }

    // Revived on the same port: the connection manager reconnects.
    proxy.revive().await;
    let back = until_allowed(&allow, &acme, &buckets, "after revive").await;
    assert!(back.windows[0].remaining < 1_000);
    // Each limiter probes again once its own breaker (1 s) has passed.
    until_allowed(&deny, &acme, &buckets, "deny after revive").await;

    // Hanging: connections accepted, nothing answered. Each check gives up
    // after about the store timeout.
    proxy.black_hole().await;
    for i in 0..3 {
        let (a, d, took) = both(&allow, &deny, &acme, &buckets).await;
        eprintln!("black hole, check {i}: {a:?} / {d:?} in {took:?}");
        assert_eq!(
            a,
            Outcome::Unavailable { allowed: true },
            "black hole, allow, check {i}"
        );
        assert_eq!(
            d,
            Outcome::Unavailable { allowed: false },
            "black hole, deny, check {i}"
        );
    }

    proxy.revive().await;
    until_allowed(&deny, &acme, &buckets, "after the black hole").await;
    proxy.kill().await;
    cleanup(&ns).await;
}
