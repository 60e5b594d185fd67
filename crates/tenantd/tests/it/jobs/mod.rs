//! Detection jobs end to end: real git repositories in temp dirs, a real
//! server on port 0, durable queue, fairness, restarts.

mod fixture;
mod lifecycle;
mod scheduling;

use std::time::Duration;

use serde_json::{Value, json};

use crate::support;

pub(crate) use support::{App, assert_error, config};

impl App {
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
