//! Owned background tasks: the usage flush, the audit writer, the billing
//! worker, the registry's maintenance. Each is started with a cancellation
//! token, and stopped by cancelling it and joining, within a deadline: a
//! task stuck on storage at shutdown must not keep the process from
//! exiting (see `docs/architecture.md`, "Background tasks").

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A spawned task the server owns and stops.
#[derive(Debug)]
pub struct OwnedTask {
    name: &'static str,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl OwnedTask {
    /// Spawns `run` with the token that asks it to finish (it does its
    /// last work, a final flush say, after the token is cancelled).
    pub fn spawn<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(cancel.clone()));
        Self { name, cancel, task }
    }

    /// Asks the task to finish and waits for it, at most `deadline`; a task
    /// still running then is aborted. Returns whether it finished by
    /// itself. A panic in the task is logged, not propagated.
    pub async fn stop_within(self, deadline: Duration) -> bool {
        self.cancel.cancel();
        let mut task = self.task;
        match tokio::time::timeout(deadline, &mut task).await {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(task = self.name, error = %e, "background task ended abnormally");
                false
            }
            Err(_) => {
                task.abort();
                tracing::error!(
                    task = self.name,
                    ?deadline,
                    "background task did not stop in time; aborted"
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_does_its_last_work_after_the_cancel() {
        let (done, finished) = tokio::sync::oneshot::channel();
        let task = OwnedTask::spawn("test", |cancel| async move {
            cancel.cancelled().await;
            let _ = done.send("flushed");
        });
        assert!(task.stop_within(Duration::from_secs(5)).await);
        assert_eq!(finished.await.ok(), Some("flushed"));
    }

    #[tokio::test]
    async fn a_stuck_task_is_aborted_at_the_deadline() {
        let task = OwnedTask::spawn("stuck", |_cancel| async move {
            std::future::pending::<()>().await;
        });
        let started = std::time::Instant::now();
        assert!(!task.stop_within(Duration::from_millis(50)).await);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_panic_is_reported_not_propagated() {
        let task = OwnedTask::spawn("panics", |_cancel| async move {
            panic!("boom");
        });
        assert!(!task.stop_within(Duration::from_secs(5)).await);
    }
}
