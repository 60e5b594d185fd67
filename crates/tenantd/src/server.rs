//! Starting and stopping the server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tenancy::{TenancyLayer, TenantResolver};
use tokio::net::TcpListener;

use std::time::Duration;

use tenancy::KeyHasher;
use tenancy::ratelimit::{
    Clock as ClockSource, MemoryStore, RateLimitLayer, RateLimitStore, RateLimiter, RedisStore,
    SystemClock,
};

use crate::app::{AppParts, AppState, router, tenancy_layer};
use crate::audit::{AuditLog, SweepOptions};
use crate::billing::BillingWorker;
use crate::clock::Clock;
use crate::config::{Config, ConfigErrors, LimitStoreKind};
use crate::jobs::worker::JobRunner;
use crate::keys::auth::CredentialVerifier;
use crate::keys::jwks::OidcVerifier;
use crate::keys::jwt::JwtVerifier;
use crate::keys::pepper;
use crate::limits::PlanBook;
use crate::limits::policy::RegistryLimits;
use crate::metrics::Metrics;
use crate::store::{AdminStore, DataUpgrades, Store};
use crate::task::OwnedTask;
use crate::tenants::TenantRepo;
use crate::tenants::admin_key::AuthFailures;
use crate::tenants::registry::Registry;
use crate::tenants::service::TenantAdmin;
use crate::tenants::statics;
use crate::usage::UsageBook;
use crate::usage::UsageRecorder;

/// How often the audit writer chains events left in outboxes.
const OUTBOX_SWEEP_EVERY: Duration = Duration::from_secs(2);
/// Beyond the request timeout, how old a parked event must be before a
/// sweep chains it (its request has ended by then, answered or not).
const OUTBOX_SWEEP_MARGIN: Duration = Duration::from_secs(5);

/// How long each background task may take to finish its last flush at
/// shutdown (a storage pool wait is 5 s).
const FLUSH_DEADLINE: Duration = Duration::from_secs(15);

/// A configured application, ready to serve.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    jobs: JobRunner,
    registry: OwnedTask,
    recorder: OwnedTask,
    audit: OwnedTask,
    billing: OwnedTask,
}

/// The rate limiter the configuration asks for, or `None` when limits
/// are off.
fn limiter(config: &Config, clock: &Clock) -> anyhow::Result<Option<Arc<RateLimiter>>> {
    let limits = &config.limits;
    if !limits.enabled {
        return Ok(None);
    }
    let store: Arc<dyn RateLimitStore> = match limits.store {
        LimitStoreKind::Memory => Arc::new(MemoryStore::new()),
        LimitStoreKind::Redis => {
            let url = limits
                .redis_url
                .as_deref()
                .context("limits.redis_url is required with limits.store: redis")?;
            Arc::new(RedisStore::connect(
                url,
                &limits.redis_namespace,
                Duration::from_millis(limits.redis_timeout_ms),
            )?)
        }
    };
    tracing::info!(store = store.kind(), on_store_error = ?limits.on_store_error, "rate limits on");
    Ok(Some(Arc::new(RateLimiter::new(
        store,
        clock.source(),
        limits.on_store_error,
    ))))
}

/// The data upgrades the features supply, in the order they run on each
/// SQLite database the server opens (see `store::upgrade`).
pub fn data_upgrades() -> DataUpgrades {
    DataUpgrades::new(vec![crate::records::reindex_search()])
}

impl Server {
    /// Opens storage and binds the listener (`server.bind`; port 0 picks a
    /// free port).
    pub async fn build(
        config: Config,
        resolver: Option<Box<dyn TenantResolver>>,
    ) -> anyhow::Result<Self> {
        Self::build_with_clock(config, resolver, Arc::new(SystemClock)).await
    }

    /// [`Server::build`] with every component reading `clock`: the
    /// registry and key validity, JWT times, the rate limiter, usage,
    /// audit, billing, moves and the handlers (tests drive a `ManualClock`
    /// instead of sleeping). The storage layer still reads the system
    /// clock for the times it stamps itself.
    pub async fn build_with_clock(
        config: Config,
        resolver: Option<Box<dyn TenantResolver>>,
        clock: Arc<dyn ClockSource>,
    ) -> anyhow::Result<Self> {
        let clock = Clock::new(clock);
        let store = Store::open(
            &config.storage,
            config.storage.max_connections,
            clock.clone(),
            data_upgrades(),
        )
        .await?;
        let pepper =
            pepper::load_or_create(&config.storage.data_dir, config.auth.key_pepper.as_deref())?;
        let hasher = KeyHasher::new(&pepper);
        store_static_tenants(&store.admin(), &config, &clock).await?;
        let (store, registry) = load_registry(store, &config, &clock).await?;
        let admin_store = store.admin();
        let maintenance = registry.maintain(
            admin_store.clone(),
            Duration::from_millis(config.auth.registry_poll_ms),
            Duration::from_secs(config.auth.last_used_flush_secs),
        );
        let (tenancy, ratelimit) = request_layers(&config, resolver, &registry, &hasher, &clock)?;
        let writers = Writers::start(&admin_store, &registry, &config, &clock);
        let metrics = Arc::new(Metrics::new(config.metrics.top_tenants));
        let admin = TenantAdmin::new(admin_store, registry.clone(), hasher, clock.clone());
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("server.bind {}: cannot listen", config.server.bind))?;
        let scratch = config.storage.data_dir.join("tmp").join("clones");
        let jobs = JobRunner::start(
            crate::jobs::system_queue(&store),
            config.jobs.clone(),
            scratch,
            registry,
        );
        let usage_book = UsageBook::new(
            writers.usage.clone(),
            admin.store().clone(),
            admin.registry().plans().clone(),
        );
        let state = AppState::new(AppParts {
            trusted_proxies: config.trusted_proxies().into(),
            admin_auth: Arc::new(AuthFailures::new(config.admin.max_auth_failures_per_minute)),
            store,
            config: Arc::new(config),
            jobs_notify: jobs.notifier(),
            admin,
            usage_book,
            usage: writers.usage,
            audit: writers.audit,
            metrics,
            billing: writers.billing,
            clock,
        });
        let router = router(state.clone(), tenancy, ratelimit);
        Ok(Self {
            listener,
            router,
            state,
            jobs,
            registry: maintenance,
            recorder: writers.recorder,
            audit: writers.audit_task,
            billing: writers.billing_task,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// The shared state (tests reach the store through it).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then drains in-flight requests and
    /// closes storage.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        let config = &self.state.config;
        tracing::info!(
            %addr,
            multi_tenancy = config.tenant.enabled,
            data_dir = %config.storage.data_dir.display(),
            "tenantd listening"
        );
        let limits = ConnectionLimits {
            header_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
            per_ip: config.server.max_connections_per_ip,
            grace: Duration::from_secs(config.server.shutdown_grace_secs),
        };
        let served = serve(self.listener, self.router, limits, shutdown)
            .await
            .context("server error");
        // HTTP is drained; now let running detections finish (or go back
        // to the queue) before storage closes.
        self.jobs.shutdown().await;
        // Every counted request and every audit event reaches storage
        // before it closes.
        // Each gets a deadline: one stuck on a storage that stopped
        // answering must not keep the process from exiting.
        self.recorder.stop_within(FLUSH_DEADLINE).await;
        self.audit.stop_within(FLUSH_DEADLINE).await;
        self.billing.stop_within(FLUSH_DEADLINE).await;
        // Last writes of API keys' last_used_at, then close storage.
        self.registry.stop_within(FLUSH_DEADLINE).await;
        self.state.store.close().await;
        served?;
        tracing::info!("tenantd stopped");
        Ok(())
    }
}

/// Checks the tenants declared in the configuration (a configuration built
/// in code has not been through [`statics::load_config`]) and writes them to
/// storage, so the registry loaded next sees them like any other tenant.
async fn store_static_tenants(
    admin_store: &AdminStore,
    config: &Config,
    clock: &Clock,
) -> anyhow::Result<()> {
    let problems = statics::validate_all(&config.tenants);
    if !problems.is_empty() {
        return Err(ConfigErrors(problems).into());
    }
    let static_rows = statics::rows(&config.tenants, clock);
    for row in &static_rows {
        tracing::info!("Initializing tenant: {}", row.id);
    }
    admin_store
        .db()
        .upsert_static_tenants(&static_rows)
        .await
        .context("storing the static tenants")
}

/// Builds the tenant registry, hands it to the store (quotas and
/// placement are read from it), loads it and opens the dedicated pools.
/// Returns the store that knows the registry.
async fn load_registry(
    store: Store,
    config: &Config,
    clock: &Clock,
) -> anyhow::Result<(Store, Arc<Registry>)> {
    let plans = Arc::new(PlanBook::from_config(config));
    let registry = Arc::new(
        Registry::new(config.tenant.registry, plans, clock.clone())
            .with_data_dir(&config.storage.data_dir),
    );
    let store = store
        .with_quotas(registry.clone())
        .with_placement(registry.clone());
    registry
        .reload(&store.admin())
        .await
        .context("loading the tenant registry")?;
    tracing::info!(tenants = registry.tenant_count(), "tenant registry loaded");
    open_dedicated_pools(&store, &registry, config.storage.eager).await;
    Ok((store, registry))
}

/// The tenancy layer (who is calling, for which tenant) and the rate
/// limit layer, when limits are on.
fn request_layers(
    config: &Config,
    resolver: Option<Box<dyn TenantResolver>>,
    registry: &Arc<Registry>,
    hasher: &KeyHasher,
    clock: &Clock,
) -> anyhow::Result<(TenancyLayer, Option<RateLimitLayer>)> {
    let oidc = OidcVerifier::from_config(registry.clone(), &config.auth.jwt, clock.clone());
    let verifier = CredentialVerifier::new(
        registry.clone(),
        hasher.clone(),
        JwtVerifier::from_config(&config.auth.jwt, clock.clone()),
        oidc,
    );
    let tenancy = tenancy_layer(config, resolver, verifier, registry.clone())?;
    let ratelimit = limiter(config, clock)?.map(|limiter| {
        RateLimitLayer::new(limiter, Arc::new(RegistryLimits::new(registry.clone())))
    });
    Ok((tenancy, ratelimit))
}

/// The background writers requests hand work to (usage counts, audit
/// events, billing), each with the task that owns its flushing.
struct Writers {
    usage: Arc<UsageRecorder>,
    recorder: OwnedTask,
    audit: AuditLog,
    audit_task: OwnedTask,
    billing: BillingWorker,
    billing_task: OwnedTask,
}

impl Writers {
    /// Starts the usage recorder, the audit writer and the billing worker,
    /// in that order, all reading `clock`.
    fn start(
        admin_store: &AdminStore,
        registry: &Arc<Registry>,
        config: &Config,
        clock: &Clock,
    ) -> Self {
        let usage = Arc::new(UsageRecorder::new());
        let recorder = usage.start(
            admin_store.clone(),
            Duration::from_millis(config.usage.flush_ms),
        );
        let (audit, audit_task) = AuditLog::start(
            admin_store.clone(),
            SweepOptions {
                every: OUTBOX_SWEEP_EVERY,
                // A parked event younger than a request can live may still
                // be chained by its request, with its status.
                min_age: Duration::from_secs(config.server.request_timeout_secs)
                    + OUTBOX_SWEEP_MARGIN,
            },
            clock.clone(),
        );
        let billing = BillingWorker::new(
            admin_store.clone(),
            registry.clone(),
            config.billing.clone(),
            clock.clone(),
        );
        let billing_task = billing.start();
        Self {
            usage,
            recorder,
            audit,
            audit_task,
            billing,
            billing_task,
        }
    }
}

/// Accepts connections until `shutdown`, then lets the open ones finish
/// their requests. Unlike `axum::serve`, a connection must send a whole
/// request head within `header_timeout` of being opened or of its previous
/// response (hyper's timer is installed), so clients that connect and say
/// nothing, trickle headers, or idle between requests do not hold
/// connections forever; bodies are bounded by the request timeout inside
/// the router. HTTP/1.1 only: detecting cleartext HTTP/2 would wait for the
/// client's first bytes without a deadline (terminate HTTP/2 in a proxy).
async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let per_ip = Arc::new(PerIp::new(limits.per_ip));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off, the
                    // connections already open keep being served.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = per_ip.enter(peer.ip()) else {
            // Over this address's cap: closed at once, nothing read.
            tracing::debug!(peer = %peer.ip(), "connection refused: too many from this address");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        let connection = builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        // Connections still open are left to die with the process; what
        // matters (usage, audit, billing) is flushed after this returns.
        tracing::warn!(
            grace_secs = limits.grace.as_secs(),
            "shutdown grace over: closing the connections still open"
        );
    }
    Ok(())
}

/// What [`serve`] bounds.
struct ConnectionLimits {
    header_timeout: Duration,
    per_ip: u32,
    grace: Duration,
}

/// Open connections per client address, so one address cannot take every
/// file descriptor. A connection holds its [`PerIpSlot`] until it ends.
struct PerIp {
    cap: u32,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
}

impl PerIp {
    fn new(cap: u32) -> Self {
        Self {
            cap,
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or `None` at the cap.
    fn enter(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<PerIpSlot> {
        if self.cap == 0 {
            return Some(PerIpSlot(None));
        }
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(ip).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(PerIpSlot(Some((self.clone(), ip))))
    }
}

/// One open connection of an address; released on drop.
struct PerIpSlot(Option<(Arc<PerIp>, std::net::IpAddr)>);

impl Drop for PerIpSlot {
    fn drop(&mut self) {
        if let Some((per_ip, ip)) = &self.0 {
            let mut open = per_ip
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(count) = open.get_mut(ip) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    open.remove(ip);
                }
            }
        }
    }
}

/// Completes on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

/// Dedicated tenants' pools: with `storage.eager`, opens each at startup
/// (one `Initializing tenant` line per tenant; a tenant whose database
/// cannot be opened is logged and shown by `/health/tenants`, it does not
/// stop the server).
/// Then closes idle pools in the background for as long as the store
/// lives.
async fn open_dedicated_pools(store: &Store, registry: &Registry, eager: bool) {
    let dedicated = registry.dedicated_tenants();
    if eager {
        for (tenant, target) in &dedicated {
            tracing::info!("Initializing tenant: {}", tenant.as_str());
            if let Err(e) = store.pools().get(tenant, target).await {
                tracing::error!(tenant = %tenant.as_str(), error = %e, "tenant storage failed to open");
            }
        }
    }
    if !dedicated.is_empty() {
        tracing::info!(
            dedicated = dedicated.len(),
            open = store.pools().open_count(),
            "dedicated tenant pools"
        );
    }
    let pools = Arc::downgrade(store.pools());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(15));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pools) = pools.upgrade() else { break };
            let closed = pools.sweep_idle();
            if closed > 0 {
                tracing::debug!(closed, "closed idle tenant pools");
            }
        }
    });
}
