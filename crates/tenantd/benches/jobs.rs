//! Detection job figures (issue: "Benchmark (a figure, not a test)").
//!
//! 1. Throughput: jobs/s of the default worker pool (one per core) on a
//!    small fixture repository, queue pre-filled, measured from the first
//!    claim to the last completion.
//! 2. Fairness: tenant A holds `FAIR_A_JOBS` (default 10,000) queued jobs,
//!    then tenant B submits one; how many of A's jobs complete before B's
//!    (target: at most the worker count).
//!
//! Run: `cargo bench -p tenantd --bench jobs` (env `THROUGHPUT_JOBS`,
//! `FAIR_A_JOBS` to change the sizes).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Map;
use tenancy::{TenantContext, TenantId, TenantSource};
use tenantd::jobs::{JobStatus, NewJob};
use tenantd::store::Store;
use tenantd::{Config, Server};

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@example.com")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@example.com")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "git {args:?} failed");
}

/// A small but realistic repository: 40 source files in 4 languages, a
/// manifest, a license, 10 commits.
fn fixture(root: &Path) -> String {
    let dir = root.join("fixture-repo");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("Cargo.toml"), "[package]\nname=\"x\"\n").expect("write");
    std::fs::write(
        dir.join("LICENSE"),
        "Permission is hereby granted, free of charge, to any person",
    )
    .expect("write");
    for commit in 0..10 {
        for (i, ext) in ["rs", "py", "ts", "go"].iter().enumerate() {
            let body = format!("// file {commit}-{i}\n").repeat(50);
            std::fs::write(dir.join(format!("src/f{commit}_{i}.{ext}")), body).expect("write");
        }
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-q", "-m", &format!("c{commit}")]);
    }
    dir.display().to_string()
}

fn config(data: &Path, workers: Option<usize>) -> Config {
    let mut c = Config::default();
    c.server.bind = "127.0.0.1:0".parse().expect("addr");
    c.storage.data_dir = data.to_path_buf();
    c.tenant.enabled = true;
    c.jobs.workers = workers;
    c.jobs.poll_interval_ms = 20;
    c.log.level = "warn".into();
    c
}

fn ctx(tenant: &str) -> TenantContext {
    TenantContext::for_testing(TenantId::new(tenant).expect("valid"), TenantSource::Static)
}

async fn enqueue(
    store: &Store,
    tenant: &str,
    url: &str,
    n: usize,
) -> Vec<tenantd::jobs::DetectionId> {
    let scoped = store.scoped(&ctx(tenant));
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let job = scoped
            .submit_job(
                NewJob {
                    repository_url: url.to_owned(),
                    priority: 0,
                    metadata: Map::new(),
                },
                3,
            )
            .await
            .expect("submit");
        ids.push(job.detection_id);
    }
    ids
}

/// Builds a server (its store is what we need) with `workers`, runs it in
/// the background, and returns the store and a stop handle.
async fn start(
    data: &Path,
    workers: Option<usize>,
) -> (
    Store,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let server = Server::build(config(data, workers), None)
        .await
        .expect("server");
    let store = server.state().store.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async move {
                let _ = rx.await;
            })
            .await
            .expect("run");
    });
    (store, tx, task)
}

async fn throughput(url: &str, n: usize) {
    let data = tempfile::tempdir().expect("tempdir");
    let (store, stop, task) = start(data.path(), Some(0)).await;
    let ids = enqueue(&store, "bench", url, n).await;
    let _ = stop.send(());
    task.await.expect("join");

    let workers = Config::default().jobs.worker_count();
    let started = Instant::now();
    let (store, stop, task) = start(data.path(), None).await;
    let scoped = store.scoped(&ctx("bench"));
    let last = ids.last().expect("at least one job").clone();
    loop {
        let job = scoped.get_job(&last).await.expect("job");
        if job.status.is_final() {
            let page = scoped
                .list_jobs(Some(JobStatus::Completed), 1, None)
                .await
                .expect("list");
            if page.total as usize == n {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    task.await.expect("join");
    println!(
        "throughput: {n} detections with {workers} workers in {:.2}s = {:.1} jobs/s",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
}

async fn fairness(url: &str, a_jobs: usize) {
    let data = tempfile::tempdir().expect("tempdir");
    let (store, stop, task) = start(data.path(), Some(0)).await;
    enqueue(&store, "tenant-a", url, a_jobs).await;
    let b = enqueue(&store, "tenant-b", url, 1).await.remove(0);
    let _ = stop.send(());
    task.await.expect("join");

    let workers = Config::default().jobs.worker_count();
    let (store, stop, task) = start(data.path(), None).await;
    let b_store = store.scoped(&ctx("tenant-b"));
    let b_done = loop {
        let job = b_store.get_job(&b).await.expect("job");
        if job.status.is_final() {
            break job.finished_at.expect("finished");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let a_page = store
        .scoped(&ctx("tenant-a"))
        .list_jobs(Some(JobStatus::Completed), 1000, None)
        .await
        .expect("list");
    let before = a_page
        .results
        .iter()
        .filter(|j| {
            j.finished_at
                .as_deref()
                .is_some_and(|t| t < b_done.as_str())
        })
        .count();
    let _ = stop.send(());
    task.await.expect("join");
    println!(
        "fairness: tenant A had {a_jobs} queued jobs; {before} of them completed before tenant B's one job (workers: {workers}, target <= {workers})"
    );
}

fn main() {
    let n: usize = std::env::var("THROUGHPUT_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let a: usize = std::env::var("FAIR_A_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let repos = tempfile::tempdir().expect("tempdir");
    let url = fixture(repos.path());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        throughput(&url, n).await;
        fairness(&url, a).await;
    });
}
