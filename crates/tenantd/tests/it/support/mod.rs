//! Shared by the integration tests: [`TestApp`], a real server on a random
//! port over storage of its own ([`TestStorage`]: a temporary directory
//! and, on PostgreSQL, a database), checked for invariants when the test
//! finishes it; the backend selection behind `#[backends]`; assertions on
//! the error shape; [`Proc`] for the real binary.

pub mod postgres;

use std::io::Read as _;
use std::ops::Deref;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
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

pub use tenantd::config::Backend;

tokio::task_local! {
    /// The backend of the running test, set by [`run_on`].
    static BACKEND: Backend;
}

/// Runs a test body on `backend`: what `#[backends]` expands to, once per
/// backend. On PostgreSQL without `TENANTD_TEST_POSTGRES_URL` the body does
/// not run: a loud line on stderr says so and the test passes (CI always
/// sets the URL). `None` when skipped.
pub async fn run_on<T>(backend: Backend, body: impl Future<Output = T>) -> Option<T> {
    if backend == Backend::Postgres && postgres::superuser_url().is_none() {
        skipped(postgres::URL_VAR);
        return None;
    }
    Some(BACKEND.scope(backend, body).await)
}

/// Held by every test that moves a tenant through its server. tenantd
/// allows one move per tenant id per process (a process-wide claim: one
/// server per process in production), and the tests run many servers in
/// one process, using the same tenant ids (both backends' variants of a
/// test run side by side): without this, a move would be refused with 409
/// because another test's server is moving its own tenant of that name.
pub async fn one_move_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static MOVES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    MOVES.lock().await
}

/// Says on the real stderr, past the harness's capture (which shows a
/// passing test's output to nobody), that a PostgreSQL variant did not run.
pub fn skipped(var: &str) {
    use std::io::Write as _;
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    let _ = writeln!(std::io::stderr(), "SKIPPED ({var} is not set): {test}");
}

/// The backend of the running test: the one [`run_on`] set, SQLite for a
/// plain `#[tokio::test]` or `#[test]`.
pub fn backend() -> Backend {
    BACKEND.try_with(|b| *b).unwrap_or(Backend::Sqlite)
}

/// Whether the running test is on PostgreSQL. Only for real, documented
/// backend differences: a behaviour test asserts the same on both.
pub fn on_postgres() -> bool {
    backend() == Backend::Postgres
}

/// A data directory and, on PostgreSQL, the database of the server over
/// it: the storage a [`TestApp`] runs on. Created for the running test's
/// backend; both go away when the last owner drops it (the directory
/// removed, the database dropped). Shared (`Arc`) so a test can restart a
/// server, or run the CLI, on the same data.
pub struct TestStorage {
    // Declared first: the database goes before the directory.
    db: Option<postgres::DbGuard>,
    dir: tempfile::TempDir,
}

impl TestStorage {
    /// A fresh directory (and database) for the running test's backend.
    pub fn new() -> std::sync::Arc<TestStorage> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = on_postgres().then(|| {
            let db = postgres::create_db();
            postgres::register(dir.path(), &db);
            db
        });
        std::sync::Arc::new(TestStorage { db, dir })
    }

    /// The data directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestStorage {
    fn drop(&mut self) {
        if self.db.is_some() {
            postgres::unregister(self.dir.path());
        }
    }
}

/// Points `storage` at the backend under test for a server over
/// `data_dir` (on PostgreSQL: the database of that directory's
/// [`TestStorage`]).
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
/// under test for `data_dir` (empty on SQLite).
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

/// A server under test that owns (shares) its storage: the server over a
/// [`TestStorage`], started from a config built for that storage's
/// directory (`support::config(dir.path(), …)` or a suite's wrapper).
/// Derefs to [`App`] for requests.
///
/// End it with [`TestApp::finish`]: a graceful stop, then the invariants
/// every test must leave behind (every audit chain verifies, no job is
/// left running). [`TestApp::stop`] stops without them, for a test that
/// breaks an invariant on purpose. Dropped without either (a failing
/// test), the server task is abandoned and the storage released.
pub struct TestApp {
    app: Option<App>,
    /// Held, never read: the directory and database live at least as
    /// long as the server over them.
    #[allow(dead_code, reason = "held for its Drop")]
    storage: Arc<TestStorage>,
    config: tenantd::config::StorageConfig,
}

impl TestApp {
    /// Builds and serves `config` over `storage`.
    pub async fn start(storage: &Arc<TestStorage>, config: Config) -> TestApp {
        Self::check_dir(storage, &config);
        let stored = config.storage.clone();
        let app = App::start(config).await;
        Self::own(storage, stored, app)
    }

    /// Like [`TestApp::start`], with the rate limiter reading `clock`.
    pub async fn start_with_clock(
        storage: &Arc<TestStorage>,
        config: Config,
        clock: Arc<dyn tenancy::ratelimit::Clock>,
    ) -> TestApp {
        Self::check_dir(storage, &config);
        let stored = config.storage.clone();
        let app = App::start_with_clock(config, clock).await;
        Self::own(storage, stored, app)
    }

    /// Serves a server already built from `config` over `storage`.
    pub fn serve(storage: &Arc<TestStorage>, config: &Config, server: Server) -> TestApp {
        Self::check_dir(storage, config);
        Self::own(storage, config.storage.clone(), App::serve(server))
    }

    fn check_dir(storage: &TestStorage, config: &Config) {
        assert_eq!(
            config.storage.data_dir,
            storage.path(),
            "the config is for another data directory than the TestApp's storage"
        );
    }

    fn own(
        storage: &Arc<TestStorage>,
        config: tenantd::config::StorageConfig,
        app: App,
    ) -> TestApp {
        TestApp {
            app: Some(app),
            storage: Arc::clone(storage),
            config,
        }
    }

    /// Graceful stop without the invariant checks.
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }

    /// Graceful stop, then the invariants: every audit chain verifies and
    /// no job is left `running` (a graceful stop finishes or releases
    /// them). Read through the store, as `tenantd audit verify` does.
    pub async fn finish(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        check_invariants(&self.config).await;
    }
}

impl Deref for TestApp {
    type Target = App;
    fn deref(&self) -> &App {
        self.app.as_ref().expect("a running server")
    }
}

/// The invariants [`TestApp::finish`] checks, on the stopped server's
/// storage.
async fn check_invariants(storage: &tenantd::config::StorageConfig) {
    let store = tenantd::store::Store::open(
        storage,
        1,
        tenantd::clock::Clock::system(),
        tenantd::store::DataUpgrades::none(),
    )
    .await
    .expect("reopen the store to check invariants");
    use tenantd::audit::AuditRepo as _;
    let (_, running) = tenantd::jobs::system_queue(&store)
        .depth()
        .await
        .expect("job queue depth");
    assert_eq!(running, 0, "jobs left running after a graceful stop");
    let admin = store.admin();
    let chains = admin.db().chains().await.expect("audit chains");
    for chain in chains {
        let report = admin
            .db()
            .verify_chain(&chain)
            .await
            .expect("verify an audit chain");
        assert!(
            report.problem.is_none(),
            "audit chain {chain:?} does not verify: {:?}",
            report.problem
        );
    }
    store.close().await;
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
    /// Drains the child's stderr as it is written: a pipe nobody reads
    /// fills up (64 KiB; trace logs on PostgreSQL get there) and blocks
    /// the child's next log line, request and shutdown alike.
    stderr: Option<std::thread::JoinHandle<String>>,
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
        let mut child = cmd.spawn().expect("spawn tenantd");
        let stderr = child.stderr.take().map(|mut pipe| {
            std::thread::spawn(move || {
                let mut err = String::new();
                let _ = pipe.read_to_string(&mut err);
                err
            })
        });
        let proc = Proc {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stderr,
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
        (status.success(), self.take_stderr())
    }

    /// Everything the child wrote to stderr (once it has exited).
    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // With TEST_LOG, a failing test shows the child's logs too.
        if test_log().is_some() && std::thread::panicking() {
            let err = self.take_stderr();
            eprintln!("--- tenantd stderr ---\n{err}");
        }
    }
}
