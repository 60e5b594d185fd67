//! The worker pool: claims jobs fairly, runs detections on blocking
//! threads under a renewed lease, and stops gracefully.
//!
//! Guarantees, and where they come from:
//! - *No job lost*: a job is a row; a worker that dies leaves a lease that
//!   expires, and the reaper puts the job back (or fails it when out of
//!   attempts). Shutdown releases unfinished jobs without counting the
//!   attempt.
//! - *Never completed twice*: completion is guarded by status and lease
//!   owner in one transaction with the record write.
//! - *Cancelled jobs produce nothing*: cancellation clears the lease, so
//!   the guard fails; the heartbeat notices and interrupts the detection.
//! - *Fairness*: [`JobQueue::claim`] serves tenants round-robin under a
//!   per-tenant concurrency cap.

use crate::limits::QuotaSource;
use crate::store::StoreError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::Instrument;

use super::detect::{self, DetectError, Limits, Location, RepoFacts};
use super::{ClaimedJob, JobQueue};
use crate::config::JobsConfig;
use crate::records::NewRecord;

/// Handle on the running pool.
pub struct JobRunner {
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    notify: Arc<Notify>,
    grace: Duration,
}

struct Shared {
    queue: Arc<dyn JobQueue>,
    config: JobsConfig,
    notify: Arc<Notify>,
    scratch: std::path::PathBuf,
    instance: String,
    quotas: Arc<dyn QuotaSource>,
}

impl JobRunner {
    /// Starts `config.worker_count()` workers and the lease reaper.
    /// Remote clones go under `scratch` (one folder per attempt, removed after).
    pub fn start(
        queue: Arc<dyn JobQueue>,
        config: JobsConfig,
        scratch: std::path::PathBuf,
        quotas: Arc<dyn QuotaSource>,
    ) -> Self {
        let (shutdown, rx) = watch::channel(false);
        let notify = Arc::new(Notify::new());
        let grace = Duration::from_secs(config.shutdown_grace_secs);
        let workers = config.worker_count();
        let shared = Arc::new(Shared {
            queue,
            config,
            notify: notify.clone(),
            scratch,
            instance: ulid::Ulid::new().to_string(),
            quotas,
        });
        let mut tasks = JoinSet::new();
        if workers > 0 {
            tasks.spawn(reaper(shared.clone(), rx.clone()));
        }
        for index in 0..workers {
            tasks.spawn(worker(shared.clone(), index, rx.clone()));
        }
        tracing::info!(workers, "detection workers started");
        Self {
            shutdown,
            tasks,
            notify,
            grace,
        }
    }

    /// Wakes idle workers (called after a submission).
    pub fn notifier(&self) -> Arc<Notify> {
        self.notify.clone()
    }

    /// Stops claiming, lets running detections finish within the grace
    /// period, releases the rest back to the queue, and waits for workers.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.notify.notify_waiters();
        // Workers enforce the grace period themselves; this bound only
        // guards against a stuck database call.
        let deadline = self.grace + Duration::from_secs(10);
        let wait = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(deadline, wait).await.is_err() {
            tracing::warn!("detection workers did not stop in time; aborting them");
            self.tasks.abort_all();
        }
        tracing::info!("detection workers stopped");
    }
}

async fn reaper(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_millis((shared.config.lease_secs * 1000 / 4).clamp(250, 5000));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
        let backoff = Duration::from_secs(shared.config.retry_backoff_secs);
        match shared.queue.reap_expired(backoff).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::warn!(jobs = n, "requeued or failed jobs whose worker stopped");
                shared.notify.notify_waiters();
            }
            Err(e) => tracing::warn!(error = %e, "lease reaper failed"),
        }
    }
}

async fn worker(shared: Arc<Shared>, index: usize, mut shutdown: watch::Receiver<bool>) {
    let owner = format!("{}-{index}", shared.instance);
    let lease = Duration::from_secs(shared.config.lease_secs);
    let cap = i64::from(shared.config.per_tenant_concurrency);
    let poll = Duration::from_millis(shared.config.poll_interval_ms);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let notified = shared.notify.notified();
        match shared.queue.claim(&owner, lease, cap).await {
            Ok(Some(mut job)) => {
                job.quotas = shared.quotas.quotas(&job.tenant);
                let span = tracing::info_span!(
                    "job",
                    tenant_id = %job.tenant,
                    detection_id = %job.id,
                    attempt = job.attempt,
                );
                run(&shared, job, &mut shutdown).instrument(span).await;
                // More work may have become claimable for others too.
                shared.notify.notify_one();
            }
            Ok(None) => {
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "claiming a job failed");
                tokio::select! {
                    () = tokio::time::sleep(poll) => {}
                    _ = shutdown.changed() => {}
                }
            }
        }
    }
}

enum Ending {
    Done(Box<Result<RepoFacts, DetectError>>),
    Cancelled,
    Shutdown,
    TimedOut,
    Panicked,
}

async fn run(shared: &Shared, job: ClaimedJob, shutdown: &mut watch::Receiver<bool>) {
    let config = &shared.config;
    let Some(location) = detect::parse_location(&job.repository_url, config.allow_local_paths)
    else {
        finish_failed(shared, &job, "Invalid repository URL", None).await;
        return;
    };
    tracing::info!(repository_url = %crate::redact::url(&job.repository_url), "detection started");
    let interrupt = Arc::new(AtomicBool::new(false));
    let scratch = shared.scratch.join(format!("{}-{}", job.id, job.attempt));
    let limits = Limits {
        max_bytes: config.max_repo_bytes,
        max_files: config.max_files,
        ..Limits::default()
    };
    let mut task = {
        let (interrupt, scratch, location) = (interrupt.clone(), scratch.clone(), location.clone());
        tokio::task::spawn_blocking(move || {
            detect::detect(&location, &limits, &interrupt, &scratch)
        })
    };
    let ending = supervise(shared, &job, &mut task, &interrupt, shutdown).await;
    let _ = std::fs::remove_dir_all(&scratch);
    settle(shared, &job, &location, ending).await;
}

/// Waits for the detection while renewing the job's lease, and says how
/// it ended: on its own, or interrupted because the job was cancelled, it
/// ran out of time, or the worker is shutting down (after the shutdown
/// grace). An interrupted detection is still waited for, so its scratch
/// directory is no longer in use when the caller removes it.
async fn supervise(
    shared: &Shared,
    job: &ClaimedJob,
    task: &mut tokio::task::JoinHandle<Result<RepoFacts, DetectError>>,
    interrupt: &AtomicBool,
    shutdown: &mut watch::Receiver<bool>,
) -> Ending {
    let config = &shared.config;
    let lease = Duration::from_secs(config.lease_secs);
    let mut heartbeat = tokio::time::interval(lease / 3);
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let timeout = tokio::time::sleep(Duration::from_secs(config.timeout_secs));
    tokio::pin!(timeout);
    let mut grace_deadline: Option<Instant> = None;
    let mut ending: Option<Ending> = None;
    let result = loop {
        let grace = async {
            match grace_deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = &mut *task => break joined,
            _ = heartbeat.tick() => match shared.queue.heartbeat(job, lease).await {
                Ok(true) => {}
                Ok(false) => {
                    interrupt.store(true, Ordering::Relaxed);
                    ending.get_or_insert(Ending::Cancelled);
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            },
            () = &mut timeout, if ending.is_none() => {
                interrupt.store(true, Ordering::Relaxed);
                ending = Some(Ending::TimedOut);
            }
            changed = shutdown.changed(), if grace_deadline.is_none() => {
                if changed.is_err() || *shutdown.borrow() {
                    grace_deadline = Some(Instant::now() + Duration::from_secs(config.shutdown_grace_secs));
                }
            }
            () = grace, if ending.is_none() => {
                interrupt.store(true, Ordering::Relaxed);
                ending = Some(Ending::Shutdown);
            }
        }
    };
    match (ending, result) {
        (Some(e), _) => e,
        (None, Ok(done)) => Ending::Done(Box::new(done)),
        (None, Err(_)) => Ending::Panicked,
    }
}

/// Acts on how a detection ended: stores the facts, fails the job (with a
/// retry when one can help), or gives the job back to the queue.
async fn settle(shared: &Shared, job: &ClaimedJob, location: &Location, ending: Ending) {
    let config = &shared.config;
    match ending {
        Ending::Done(done) => match *done {
            Ok(facts) => store_facts(shared, job, location, facts).await,
            Err(error) => {
                let retry = error.retryable().then(|| backoff(config, job));
                finish_failed(shared, job, &error.to_string(), retry).await;
            }
        },
        Ending::Cancelled => tracing::info!("detection cancelled"),
        Ending::Shutdown => match shared.queue.release(job).await {
            Ok(()) => {
                tracing::info!("detection interrupted by shutdown; job returned to the queue")
            }
            Err(e) => tracing::warn!(error = %e, "releasing the job failed; its lease will expire"),
        },
        Ending::TimedOut => {
            let text = format!("Detection timed out after {} seconds", config.timeout_secs);
            finish_failed(shared, job, &text, Some(backoff(config, job))).await;
        }
        Ending::Panicked => {
            finish_failed(shared, job, "Detection failed with an internal error", None).await;
        }
    }
}

/// Writes the record of a finished detection and completes the job.
async fn store_facts(shared: &Shared, job: &ClaimedJob, location: &Location, facts: RepoFacts) {
    let config = &shared.config;
    let record = to_record(job, location, facts);
    match shared.queue.complete(job, record).await {
        Ok(Some(record_id)) => tracing::info!(%record_id, "detection completed"),
        Ok(None) => {
            tracing::info!("detection finished but the job was cancelled; no record written")
        }
        Err(StoreError::QuotaExceeded(quota)) => {
            // Retrying cannot help until the tenant frees space.
            finish_failed(shared, job, &quota.to_string(), None).await;
        }
        Err(StoreError::Moving { .. }) => {
            // The tenant's records are switching databases for a
            // moment: give the job back, this attempt not counted.
            if let Err(e) = shared.queue.release(job).await {
                tracing::warn!(error = %e, "releasing a job during a move failed");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "storing the detection failed");
            finish_failed(
                shared,
                job,
                "Storing the result failed",
                Some(backoff(config, job)),
            )
            .await;
        }
    }
}

fn backoff(config: &JobsConfig, job: &ClaimedJob) -> Duration {
    let exp = u32::try_from(job.attempt.saturating_sub(1).clamp(0, 10)).unwrap_or(10);
    Duration::from_secs(
        config
            .retry_backoff_secs
            .saturating_mul(1u64 << exp)
            .min(3600),
    )
}

async fn finish_failed(shared: &Shared, job: &ClaimedJob, error: &str, retry: Option<Duration>) {
    let will_retry = retry.is_some() && job.attempt < job.max_attempts;
    // A clone error may quote the repository URL, credentials included.
    let error = crate::redact::text(error);
    tracing::warn!(error, will_retry, "detection attempt failed");
    if let Err(e) = shared.queue.fail(job, &error, retry).await {
        tracing::warn!(error = %e, "recording the failure failed; the lease will expire");
    }
}

/// The `repository` record of a detection, in the job's tenant.
fn to_record(job: &ClaimedJob, location: &Location, facts: RepoFacts) -> NewRecord {
    let name = detect::repository_name(location);
    let mut tags: Vec<String> = Vec::new();
    if let Some(lang) = &facts.primary_language {
        tags.push(lang.to_lowercase());
    }
    tags.extend(facts.package_managers.iter().cloned());
    tags.truncate(64);
    let mut fields = match serde_json::to_value(&facts) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    fields.insert("detection_id".into(), Value::String(job.id.to_string()));
    if !job.metadata.is_empty() {
        fields.insert("metadata".into(), Value::Object(job.metadata.clone()));
    }
    let description = match (&facts.primary_language, &facts.license) {
        (Some(lang), Some(lic)) => format!("{lang} repository, {lic} license"),
        (Some(lang), None) => format!("{lang} repository"),
        (None, Some(lic)) => format!("Repository, {lic} license"),
        (None, None) => "Repository".to_owned(),
    };
    NewRecord {
        kind: "repository".to_owned(),
        name,
        // A clone URL's credentials do not belong in the tenant's records.
        url: crate::redact::url(&job.repository_url),
        description: Some(description),
        tags,
        fields,
    }
}
