//! Fairness, restarts, graceful shutdown, and the tenant of a job's record.

use crate::support::{TestApp, TestStorage};
use std::time::Duration;
use tenantd_testing::backends;

use serde_json::{Value, json};

use super::config;
use super::fixture::tiny;
use super::support::Proc;

#[backends]
async fn a_quiet_tenant_is_not_starved_by_a_busy_one() {
    let data = TestStorage::new();
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = tiny(repos.path(), "shared").display().to_string();
    // Queue first (no workers), so the order is exactly: 200 of A, then B.
    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.workers = Some(0))).await;
    for _ in 0..200 {
        app.submit_ok("tenant-a", &repo).await;
    }
    let b = app.submit_ok("tenant-b", &repo).await;
    app.finish().await;

    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.workers = Some(2))).await;
    let b_job = app.wait_final("tenant-b", &b).await;
    assert_eq!(b_job["status"], "completed");
    let b_done = b_job["finished_at"].as_str().expect("finished").to_owned();
    let (_, a_page) = app
        .get_json("tenant-a", "/detect?status=completed&limit=1000")
        .await;
    let before_b = a_page["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|j| {
            j["finished_at"]
                .as_str()
                .is_some_and(|t| t < b_done.as_str())
        })
        .count();
    eprintln!("fairness: {before_b} of A's 200 jobs completed before B's one job");
    assert!(
        before_b < 10,
        "{before_b} of A's jobs completed before B's one job"
    );
    app.finish().await;
}

#[backends]
async fn the_record_belongs_to_the_jobs_tenant_not_the_current_default() {
    let data = TestStorage::new();
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = tiny(repos.path(), "inherited").display().to_string();
    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.workers = Some(0))).await;
    let id = app.submit_ok("acme", &repo).await;
    app.finish().await;

    // Restarted with another default tenant and tenants optional: a
    // request without a tenant now lands in "other", but the job's record
    // must still be acme's.
    let app = TestApp::start(
        &data,
        config(data.path(), |c| {
            c.tenant.default_tenant = "other".parse().expect("valid");
            c.tenant.tenant_required = false;
        }),
    )
    .await;
    let job = app.wait_final("acme", &id).await;
    assert_eq!(job["status"], "completed");
    let record_id = job["record_id"].as_str().expect("record");
    let (status, record) = app.get_json("acme", &format!("/records/{record_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(record["tenant_id"], "acme");
    let resp = app
        .client
        .get(format!("{}/records/{record_id}", app.base))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 404, "not in the default tenant");
    app.finish().await;
}

#[backends]
async fn graceful_shutdown_loses_nothing_and_runs_nothing_twice() {
    let data = TestStorage::new();
    let repos = tempfile::tempdir().expect("tempdir");
    let repo = tiny(repos.path(), "graceful").display().to_string();
    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.workers = Some(1))).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.submit_ok("acme", &repo).await);
    }
    app.finish().await;
    // After a graceful stop no job is left running.
    let app = TestApp::start(&data, config(data.path(), |c| c.jobs.workers = Some(0))).await;
    let (_, running) = app.get_json("acme", "/detect?status=running").await;
    assert_eq!(running["total"], 0, "{running}");
    app.finish().await;
    // And every job completes after a restart, each on one attempt.
    let app = TestApp::start(&data, config(data.path(), |_| {})).await;
    for id in &ids {
        let job = app.wait_final("acme", id).await;
        assert_eq!(job["status"], "completed");
        assert_eq!(job["attempts"], 1, "{job}");
    }
    app.finish().await;
}

/// The environment of the kill/restart test: short leases, fast polling.
fn queue_env(workers: &str) -> [(&'static str, String); 6] {
    [
        ("TENANTD_TENANT_ENABLED", "true".to_owned()),
        ("TENANTD_JOBS__WORKERS", workers.to_owned()),
        ("TENANTD_JOBS__LEASE_SECS", "1".to_owned()),
        ("TENANTD_JOBS__RETRY_BACKOFF_SECS", "0".to_owned()),
        ("TENANTD_JOBS__POLL_INTERVAL_MS", "50".to_owned()),
        ("TENANTD_LOG__LEVEL", "warn".to_owned()),
    ]
}

async fn spawn(data: &std::path::Path, workers: &str) -> Proc {
    let env = queue_env(workers);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Proc::start(data, &env, &[]).await
}

#[backends]
async fn killed_mid_queue_every_job_finishes_exactly_once_after_restart() {
    let data = TestStorage::new();
    let repos = tempfile::tempdir().expect("tempdir");
    let tenants = ["t1", "t2", "t3"];
    let urls: Vec<String> = (0..4)
        .map(|i| {
            tiny(repos.path(), &format!("repo{i}"))
                .display()
                .to_string()
        })
        .collect();
    let client = reqwest::Client::new();
    // One slow-ish worker, so the queue is still full when the process dies.
    let server = spawn(data.path(), "1").await;
    let base = server.base.clone();
    // Batches of 36 submitted concurrently until the worker is behind: on
    // a loaded machine one batch may be drained before the check, and the
    // kill must land mid-queue.
    let mut jobs = Vec::new();
    let mut done = 0;
    for _batch in 0..10 {
        let mut submits = Vec::new();
        for i in 0..36 {
            let tenant = tenants[i % tenants.len()];
            let (client, base, url) = (client.clone(), base.clone(), urls[i % urls.len()].clone());
            submits.push(tokio::spawn(async move {
                let resp: Value = client
                    .post(format!("{base}/detect/submit"))
                    .header("X-Tenant-ID", tenant)
                    .json(&json!({"repository_url": url}))
                    .send()
                    .await
                    .expect("submit")
                    .json()
                    .await
                    .expect("json");
                (
                    tenant,
                    resp["detection_id"].as_str().expect("id").to_owned(),
                )
            }));
        }
        for submit in submits {
            jobs.push(submit.await.expect("join"));
        }
        done = 0;
        for tenant in tenants {
            let page: Value = client
                .get(format!("{base}/detect?status=completed"))
                .header("X-Tenant-ID", tenant)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            done += page["total"].as_u64().expect("total");
        }
        if done < jobs.len() as u64 {
            break;
        }
    }
    assert!(
        done < jobs.len() as u64,
        "the kill must land mid-queue ({done} of {} already done)",
        jobs.len()
    );
    drop(server); // SIGKILL: no graceful anything.

    let server = spawn(data.path(), "2").await;
    let base = server.base.clone();
    for (tenant, id) in &jobs {
        let mut last = Value::Null;
        for _ in 0..400 {
            last = client
                .get(format!("{base}/detect/{id}/status"))
                .header("X-Tenant-ID", *tenant)
                .send()
                .await
                .expect("status")
                .json()
                .await
                .expect("json");
            if last["status"] == "completed" {
                break;
            }
            assert_ne!(last["status"], "failed", "{last}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(last["status"], "completed", "{last}");
        assert!(last["record_id"].is_string());
    }
    // One record per (tenant, repository): completions were not duplicated.
    for tenant in tenants {
        let page: Value = client
            .get(format!("{base}/records?kind=repository"))
            .header("X-Tenant-ID", tenant)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(page["total"], 4, "{tenant}: {page}");
    }
    drop(server);
}
