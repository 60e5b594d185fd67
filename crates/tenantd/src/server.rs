//! Starting and stopping the server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use tenancy::TenantResolver;
use tokio::net::TcpListener;

use crate::app::{AppState, router, tenancy_layer};
use crate::config::{Backend, Config};
use crate::jobs::worker::JobRunner;
use crate::store::{Store, open_sqlite};

/// A configured application, ready to serve.
pub struct Server {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    jobs: JobRunner,
}

impl Server {
    /// Opens storage and binds the listener (`server.bind`; port 0 picks a
    /// free port).
    pub async fn build(
        config: Config,
        resolver: Option<Box<dyn TenantResolver>>,
    ) -> anyhow::Result<Self> {
        let store = match config.storage.backend {
            Backend::Sqlite => Store::new(Arc::new(
                open_sqlite(&config.storage.data_dir, config.storage.max_connections).await?,
            )),
        };
        let tenancy = tenancy_layer(&config, resolver)?;
        let listener = TcpListener::bind(config.server.bind)
            .await
            .with_context(|| format!("server.bind {}: cannot listen", config.server.bind))?;
        let scratch = config.storage.data_dir.join("tmp").join("clones");
        let jobs = JobRunner::start(store.system_job_queue(), config.jobs.clone(), scratch);
        let state = AppState {
            store,
            config: Arc::new(config),
            jobs_notify: jobs.notifier(),
        };
        let router = router(state.clone(), tenancy);
        Ok(Self {
            listener,
            router,
            state,
            jobs,
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
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .context("server error");
        // HTTP is drained; now let running detections finish (or go back
        // to the queue) before storage closes.
        self.jobs.shutdown().await;
        self.state.store.close().await;
        served?;
        tracing::info!("tenantd stopped");
        Ok(())
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
