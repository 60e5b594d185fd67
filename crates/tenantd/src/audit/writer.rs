//! The appender: a group commit. A request hands its event to the writer
//! task and waits for the commit; events arriving while a transaction is
//! being written go together into the next one.

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::NewEvent;
use crate::store::AdminStore;

/// Most events in one transaction.
const MAX_BATCH: usize = 256;
/// Attempts at writing a batch before its events are reported lost.
const ATTEMPTS: u32 = 3;

type Pending = (NewEvent, oneshot::Sender<bool>);

/// Where events are appended (cheap to clone).
#[derive(Debug, Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the writer over `store`.
    pub fn start(store: AdminStore) -> (Self, AuditTask) {
        let (sender, receiver) = mpsc::channel(4096);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(write_loop(store, receiver, cancel.clone()));
        (Self { sender }, AuditTask { cancel, task })
    }

    /// Appends `event` and waits until it is committed. Returns whether it
    /// was (a failure is logged; the caller's response is not changed).
    pub async fn append(&self, event: NewEvent) -> bool {
        let (done, wait) = oneshot::channel();
        if self.sender.send((event, done)).await.is_err() {
            tracing::error!("audit writer is stopped; an audit event was not recorded");
            return false;
        }
        wait.await.unwrap_or(false)
    }
}

async fn write_batch(store: &AdminStore, batch: Vec<Pending>) {
    let (events, waiters): (Vec<NewEvent>, Vec<oneshot::Sender<bool>>) = batch.into_iter().unzip();
    let mut ok = false;
    for attempt in 1..=ATTEMPTS {
        match store.audit().append_events(&events).await {
            Ok(()) => {
                ok = true;
                break;
            }
            Err(e) if attempt < ATTEMPTS => {
                tracing::warn!(error = %e, attempt, "writing audit events failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => {
                tracing::error!(error = %e, lost = events.len(), "writing audit events failed");
            }
        }
    }
    for waiter in waiters {
        let _ = waiter.send(ok);
    }
}

async fn write_loop(
    store: AdminStore,
    mut receiver: mpsc::Receiver<Pending>,
    cancel: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = cancel.cancelled() => break,
            next = receiver.recv() => match next {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        write_batch(&store, batch).await;
    }
    // Shutdown: write whatever is still queued.
    receiver.close();
    let mut rest = Vec::new();
    while let Some(p) = receiver.recv().await {
        rest.push(p);
        if rest.len() == MAX_BATCH {
            write_batch(&store, std::mem::take(&mut rest)).await;
        }
    }
    if !rest.is_empty() {
        write_batch(&store, rest).await;
    }
}

/// The writer task.
#[derive(Debug)]
pub struct AuditTask {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl AuditTask {
    /// Writes what is queued, then stops.
    pub async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}
