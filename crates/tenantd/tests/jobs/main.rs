//! Detection jobs end to end: real git repositories in temp dirs, a real
//! server on port 0, durable queue, fairness, restarts.

mod fixture;
mod lifecycle;
mod scheduling;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tenantd::{Config, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server on a random port over `data_dir`, stopped gracefully on `stop`.
pub(crate) struct App {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

pub(crate) fn config(data_dir: &Path, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".parse().expect("addr");
    c.storage.data_dir = data_dir.to_path_buf();
    c.tenant.enabled = true;
    c.jobs.workers = Some(2);
    c.jobs.poll_interval_ms = 50;
    c.jobs.retry_backoff_secs = 0;
    c.jobs.lease_secs = 5;
    c.jobs.shutdown_grace_secs = 5;
    tweak(&mut c);
    c
}

impl App {
    pub(crate) async fn start(config: Config) -> App {
        let server = Server::build(config, None).await.expect("server builds");
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
    pub(crate) async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("server ran cleanly");
        }
    }

    pub(crate) async fn submit(&self, tenant: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}/detect/submit", self.base))
            .header("X-Tenant-ID", tenant)
            .json(&body)
            .send()
            .await
            .expect("submit")
    }

    /// Submits `url` and returns the detection id (asserting 202).
    pub(crate) async fn submit_ok(&self, tenant: &str, url: &str) -> String {
        let resp = self.submit(tenant, json!({ "repository_url": url })).await;
        assert_eq!(resp.status(), 202);
        let job: Value = resp.json().await.expect("json");
        assert_eq!(job["status"], "pending");
        assert_eq!(job["tenant_id"], tenant);
        job["detection_id"].as_str().expect("id").to_owned()
    }

    pub(crate) async fn status(&self, tenant: &str, id: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/detect/{id}/status", self.base))
            .header("X-Tenant-ID", tenant)
            .send()
            .await
            .expect("status")
    }

    pub(crate) async fn get_json(&self, tenant: &str, path: &str) -> (u16, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header("X-Tenant-ID", tenant)
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("json"))
    }

    /// Polls until the job is final (bounded), returning it.
    pub(crate) async fn wait_final(&self, tenant: &str, id: &str) -> Value {
        for _ in 0..600 {
            let job: Value = self.status(tenant, id).await.json().await.expect("json");
            if matches!(
                job["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} did not finish");
    }
}

/// Asserts an error response's status and code; returns its detail.
pub(crate) async fn assert_error(resp: reqwest::Response, status: u16, code: &str) -> String {
    assert_eq!(resp.status().as_u16(), status);
    let body: Value = resp.json().await.expect("JSON error");
    assert_eq!(body["code"], code, "{body}");
    body["detail"].as_str().expect("detail").to_owned()
}
