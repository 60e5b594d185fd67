//! Shared by the integration suites: a real server on a random port over a
//! temporary data directory, and assertions on the error shape.
//!
//! Included with `#[path]` by each suite, so not every suite uses every
//! helper.
#![allow(dead_code, reason = "each suite uses a different subset")]

pub mod postgres;

use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tenantd::{Config, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The log level `TEST_LOG` asks for: `1` is `info`, any other value an
/// `EnvFilter` directive (`debug`, `tenantd=trace`); unset or `0`, none.
fn test_log() -> Option<String> {
    let value = std::env::var("TEST_LOG").ok()?;
    match value.as_str() {
        "" | "0" => None,
        "1" => Some("info".to_owned()),
        _ => Some(value),
    }
}

/// With `TEST_LOG`, the in-process servers log through the test harness's
/// capture: a failing test shows its server's logs, a passing one does not.
fn init_test_log() {
    if let Some(level) = test_log() {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::new(level))
            .try_init();
    }
}

/// A server on a random port over `data_dir`, stopped gracefully on `stop`.
pub struct App {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// A client without default headers.
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The backend the suites run against: `TENANTD_TEST_BACKEND` (`sqlite`,
/// the default, or `postgres`). `scripts/test` runs the suites once per
/// backend.
pub fn backend() -> tenantd::config::Backend {
    match std::env::var("TENANTD_TEST_BACKEND").as_deref() {
        Ok("postgres") => tenantd::config::Backend::Postgres,
        Ok("sqlite") | Ok("") | Err(_) => tenantd::config::Backend::Sqlite,
        Ok(other) => panic!("TENANTD_TEST_BACKEND={other}: expected sqlite or postgres"),
    }
}

/// Whether the suites run against PostgreSQL.
pub fn on_postgres() -> bool {
    backend() == tenantd::config::Backend::Postgres
}

/// Points `storage` at the backend under test for a server over
/// `data_dir` (on PostgreSQL: that directory's own database).
pub fn use_backend(storage: &mut tenantd::config::StorageConfig, data_dir: &Path) {
    storage.data_dir = data_dir.to_path_buf();
    storage.backend = backend();
    if on_postgres() {
        let db = postgres::db_for(data_dir);
        storage.url = Some(db.app_url());
        storage.admin_url = Some(db.admin_url());
        storage.migrate_url = Some(db.owner_url());
    }
}

/// The environment that points a `tenantd` child process at the backend
/// under test (empty on SQLite).
pub fn backend_env(data_dir: &Path) -> Vec<(String, String)> {
    if !on_postgres() {
        return Vec::new();
    }
    let db = postgres::db_for(data_dir);
    vec![
        ("TENANTD_STORAGE_BACKEND".into(), "postgres".into()),
        ("TENANTD_STORAGE_URL".into(), db.app_url()),
        ("TENANTD_STORAGE_ADMIN_URL".into(), db.admin_url()),
        ("TENANTD_STORAGE_MIGRATE_URL".into(), db.owner_url()),
    ]
}

/// A test configuration: multi-tenancy on, fast job polling, port 0, the
/// backend under test.
pub fn config(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".parse().expect("addr");
    use_backend(&mut c.storage, data_dir);
    c.tenant.enabled = true;
    c.jobs.workers = Some(2);
    c.jobs.poll_interval_ms = 50;
    c.jobs.retry_backoff_secs = 0;
    c.jobs.lease_secs = 5;
    c.jobs.shutdown_grace_secs = 5;
    // The job fixtures are local repositories (off by default).
    c.jobs.allow_local_paths = true;
    tweak(&mut c);
    c
}

impl App {
    /// Builds and serves `config` in the background.
    pub async fn start(config: Config) -> App {
        init_test_log();
        let server = Server::build(config, None).await.expect("server builds");
        Self::serve(server)
    }

    /// Like [`App::start`], with the rate limiter reading `clock`.
    pub async fn start_with_clock(
        config: Config,
        clock: std::sync::Arc<dyn tenancy::ratelimit::Clock>,
    ) -> App {
        init_test_log();
        let server = Server::build_with_clock(config, None, clock)
            .await
            .expect("server builds");
        Self::serve(server)
    }

    /// Serves an already built server in the background.
    pub fn serve(server: Server) -> App {
        init_test_log();
        let addr = server.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async move {
            let _ = rx.await;
        }));
        App {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful stop: HTTP drained, running jobs finished or released.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server ran cleanly");
        }
    }

    /// A request to `path` as `tenant` (by header).
    pub fn req(
        &self,
        method: reqwest::Method,
        tenant: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("X-Tenant-ID", tenant)
    }

    /// GET `path` as `tenant`; status and JSON body.
    pub async fn get_json(&self, tenant: &str, path: &str) -> (u16, Value) {
        let resp = self
            .req(reqwest::Method::GET, tenant, path)
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }
}

/// The admin key the suites configure (`admin.key`).
pub const ADMIN_KEY: &str = "admin-key-for-tests-0123456789";

impl App {
    /// An admin request.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN_KEY)
    }

    /// Creates a tenant through the admin API; returns (tenant, first key;
    /// empty with `"issue_key": false`).
    ///
    /// The suites reach most tenants by header although they hold a key, so
    /// the tenant is opted into header access unless `body` says
    /// `security.header_access` itself (the security suite says `false` where
    /// it checks that a key is required).
    pub async fn create_tenant(&self, mut body: Value) -> (Value, String) {
        if let Some(object) = body.as_object_mut() {
            let security = object
                .entry("security")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(security) = security.as_object_mut() {
                security.entry("header_access").or_insert(Value::Bool(true));
            }
        }
        let resp = self
            .admin(reqwest::Method::POST, "/admin/tenants")
            .json(&body)
            .send()
            .await
            .expect("create");
        assert_eq!(resp.status(), 201, "{body}");
        let out: Value = resp.json().await.expect("json");
        let key = out["api_key"]["key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        (out["tenant"].clone(), key)
    }

    /// A request authenticated with `key`.
    pub fn with_key(
        &self,
        method: reqwest::Method,
        key: &str,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", key)
    }
}

/// Asserts an error response's status, its JSON shape and code; returns its
/// detail.
pub async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status().as_u16(), status, "for code {code}");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let body: Value = resp.json().await.expect("JSON error");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(2),
        "only detail and code: {body}"
    );
    body["detail"].as_str().expect("detail").to_owned()
}

/// A real `tenantd serve` child process on a free port. Dropping it kills
/// it (SIGKILL: no graceful anything); [`Proc::stop`] sends SIGTERM.
pub struct Proc {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Proc {
    /// Starts the binary on `data_dir` with `env` and extra `serve` flags,
    /// and waits until it answers `/health`. Its stderr is captured.
    pub async fn start(data_dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> Proc {
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantd"));
        cmd.arg("serve")
            .arg("--bind")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env_remove("RUST_LOG")
            // The job fixtures are local repositories (off by default).
            .env("TENANTD_JOBS_ALLOW_LOCAL_PATHS", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in backend_env(data_dir) {
            cmd.env(k, v);
        }
        if let Some(level) = test_log() {
            cmd.env("RUST_LOG", level);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn tenantd");
        let proc = Proc {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/health", proc.base)).send().await
                && r.status().is_success()
            {
                return proc;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("tenantd did not become healthy");
    }

    /// SIGTERM, wait, and return (exit success, stderr).
    pub fn stop(mut self) -> (bool, String) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.child.wait().expect("wait");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.success(), err)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // With TEST_LOG, a failing test shows the child's logs too.
        if test_log().is_some()
            && std::thread::panicking()
            && let Some(mut e) = self.child.stderr.take()
        {
            let mut err = String::new();
            let _ = e.read_to_string(&mut err);
            eprintln!("--- tenantd stderr ---\n{err}");
        }
    }
}
