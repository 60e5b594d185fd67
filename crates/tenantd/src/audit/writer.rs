//! The appender: a group commit. A request hands its event to the writer
//! task and waits for the commit, at most until its own deadline; events
//! arriving while a transaction is being written go together into the
//! next one.
//!
//! What it guarantees, and what it does when storage fails (see
//! `docs/architecture.md`, "Audit events and the outbox"):
//!
//! - An event whose request committed a write is parked in an outbox with
//!   that write ([`crate::store::outbox`]); appending it takes it out. Such
//!   an event is never lost: if the writer cannot chain it, a sweep does
//!   later, from the outbox.
//! - A request never waits past its deadline for the writer. When the
//!   database failed the last attempt, the writer answers new events at
//!   once (not written yet) and keeps them for the next attempt, a short
//!   backoff later, instead of making every request wait out a pool
//!   timeout of its own.
//! - Kept events are bounded ([`RETRY_LIMIT`]): past it, an event that is
//!   not parked anywhere is dropped with an error log (a request that
//!   wrote nothing, refused during a long outage).

use std::collections::VecDeque;
use std::time::Duration;

use crate::task::OwnedTask;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{NewEvent, OutboxPlace};
use crate::clock::Clock;
use crate::store::AdminStore;

/// Most events in one transaction.
const MAX_BATCH: usize = 256;
/// Most events kept for another attempt while the database is failing.
const RETRY_LIMIT: usize = 10_000;
/// First wait after a failed attempt; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait between attempts while the database is failing.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

type Waiter = oneshot::Sender<bool>;

/// How the writer sweeps outboxes.
#[derive(Debug, Clone, Copy)]
pub struct SweepOptions {
    /// How often.
    pub every: Duration,
    /// Only events that arrived longer ago than this: a younger one may
    /// still be in its request, about to be chained with its status. The
    /// server uses its request timeout plus a margin.
    pub min_age: Duration,
}

/// Where events are appended (cheap to clone).
#[derive(Debug, Clone)]
pub struct AuditLog {
    sender: mpsc::Sender<(NewEvent, Waiter)>,
}

impl AuditLog {
    /// Starts the writer over `store`; a sweep takes parked events older
    /// than `sweep.min_age` by `clock` (the clock events are stamped with).
    pub fn start(store: AdminStore, sweep: SweepOptions, clock: Clock) -> (Self, OwnedTask) {
        let (sender, receiver) = mpsc::channel(4096);
        let writer = Writer {
            store,
            sweep,
            clock,
            retry: VecDeque::new(),
            failing_until: None,
            backoff: FIRST_BACKOFF,
        };
        let task = OwnedTask::spawn("audit writer", move |cancel| writer.run(receiver, cancel));
        (Self { sender }, task)
    }

    /// Appends `event`, waiting for its commit until `deadline`. Returns
    /// whether it was committed by then; an event not committed yet is
    /// still written later when it reached the writer, and always when it
    /// is parked in an outbox. The caller's response is not changed.
    pub async fn append(&self, event: NewEvent, deadline: Instant) -> bool {
        let (done, wait) = oneshot::channel();
        let parked = event.outbox.is_some();
        let outcome = tokio::time::timeout_at(deadline, async {
            if self.sender.send((event, done)).await.is_err() {
                tracing::error!("audit writer is stopped; an audit event was not recorded");
                return false;
            }
            wait.await.unwrap_or(false)
        })
        .await;
        match outcome {
            Ok(written) => written,
            Err(_) => {
                tracing::warn!(
                    parked,
                    "audit event not committed within the request's deadline; answering anyway"
                );
                false
            }
        }
    }
}

/// The writer task's state.
struct Writer {
    store: AdminStore,
    sweep: SweepOptions,
    clock: Clock,
    /// Events a failed attempt left, oldest first (their waiters were
    /// answered).
    retry: VecDeque<NewEvent>,
    /// The database failed the last attempt: until then, events are kept,
    /// not tried.
    failing_until: Option<Instant>,
    backoff: Duration,
}

impl Writer {
    async fn run(
        mut self,
        mut receiver: mpsc::Receiver<(NewEvent, Waiter)>,
        cancel: CancellationToken,
    ) {
        let mut sweep = tokio::time::interval(self.sweep.every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let retry_at = self.failing_until.filter(|_| !self.retry.is_empty());
            let batch = tokio::select! {
                () = cancel.cancelled() => break,
                next = receiver.recv() => match next {
                    Some(first) => take_batch(first, &mut receiver),
                    None => break,
                },
                () = sleep_until(retry_at), if retry_at.is_some() => {
                    self.failing_until = None;
                    Vec::new()
                }
                _ = sweep.tick() => {
                    if self.failing_until.is_none() {
                        self.sweep_outboxes().await;
                    }
                    continue;
                }
            };
            self.write(batch).await;
        }
        // Shutdown: one last attempt at whatever is queued or kept.
        receiver.close();
        let mut rest = Vec::new();
        while let Some(p) = receiver.recv().await {
            rest.push(p);
        }
        self.failing_until = None;
        self.write(rest).await;
        let lost = self.retry.iter().filter(|e| e.outbox.is_none()).count();
        if lost > 0 {
            tracing::error!(lost, "audit events could not be written before shutdown");
        }
    }

    /// Writes the kept events and `batch`, or keeps them all when the
    /// database is failing.
    async fn write(&mut self, batch: Vec<(NewEvent, Waiter)>) {
        let failing = self.failing_until.is_some_and(|t| Instant::now() < t);
        if failing {
            for (event, waiter) in batch {
                let _ = waiter.send(false);
                self.keep(event);
            }
            return;
        }
        let mut events: Vec<(NewEvent, Option<Waiter>)> =
            self.retry.drain(..).map(|e| (e, None)).collect();
        events.extend(batch.into_iter().map(|(e, w)| (e, Some(w))));
        let mut chunks = events.into_iter().peekable();
        while chunks.peek().is_some() {
            let chunk: Vec<(NewEvent, Option<Waiter>)> = chunks.by_ref().take(MAX_BATCH).collect();
            let (events, waiters): (Vec<NewEvent>, Vec<Option<Waiter>>) = chunk.into_iter().unzip();
            match self.store.audit().append_events(&events).await {
                Ok(()) => {
                    for waiter in waiters.into_iter().flatten() {
                        let _ = waiter.send(true);
                    }
                    self.unpark_dedicated(&events).await;
                    self.failing_until = None;
                    self.backoff = FIRST_BACKOFF;
                }
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        kept = events.len(),
                        "writing audit events failed; keeping them for the next attempt"
                    );
                    for waiter in waiters.into_iter().flatten() {
                        let _ = waiter.send(false);
                    }
                    for event in events {
                        self.keep(event);
                    }
                    // Whatever is left of this round waits too.
                    for (event, waiter) in chunks.by_ref() {
                        if let Some(waiter) = waiter {
                            let _ = waiter.send(false);
                        }
                        self.keep(event);
                    }
                    self.failing_until = Some(Instant::now() + self.backoff);
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Keeps `event` for the next attempt, within [`RETRY_LIMIT`]. A
    /// parked event past the limit is left to the sweep.
    fn keep(&mut self, event: NewEvent) {
        if self.retry.len() < RETRY_LIMIT {
            self.retry.push_back(event);
        } else if event.outbox.is_none() {
            tracing::error!(
                action = %event.action,
                "audit event lost: the database has been failing too long to keep more"
            );
        }
    }

    /// Takes events chained just now out of dedicated tenants' outboxes.
    /// A failure is left to the sweep, whose append finds the event
    /// chained already and only takes it out.
    async fn unpark_dedicated(&self, events: &[NewEvent]) {
        for event in events {
            let Some(outbox) = &event.outbox else {
                continue;
            };
            if outbox.place != OutboxPlace::Dedicated {
                continue;
            }
            let result = match self.store.dedicated_outbox(&event.tenant).await {
                Ok(Some(db)) => db.unpark(&outbox.chain, &event.id).await,
                Ok(None) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "taking a chained event out of a tenant's outbox failed");
            }
        }
    }

    /// Chains events left in outboxes (a crash between a write and its
    /// answer, an outage), with [`super::UNANSWERED`] as their status: the
    /// shared database's and every open dedicated one's.
    async fn sweep_outboxes(&mut self) {
        let min_age = i64::try_from(self.sweep.min_age.as_millis()).unwrap_or(i64::MAX);
        let before_ms = self.clock.now_ms().saturating_sub(min_age);
        for db in self.store.outboxes() {
            loop {
                let due = match db.due_events(before_ms, MAX_BATCH as i64).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading an audit outbox failed");
                        break;
                    }
                };
                if due.is_empty() {
                    break;
                }
                let full = due.len() == MAX_BATCH;
                tracing::warn!(
                    events = due.len(),
                    "chaining audit events left in an outbox (their answers were not recorded)"
                );
                if let Err(e) = self.store.audit().append_events(&due).await {
                    tracing::warn!(error = %e, "chaining parked audit events failed");
                    break;
                }
                if db.outbox_place() == OutboxPlace::Dedicated {
                    for event in &due {
                        if let Err(e) = db.unpark(&event.tenant, &event.id).await {
                            tracing::warn!(error = %e, "taking a chained event out of a tenant's outbox failed");
                        }
                    }
                }
                if !full {
                    break;
                }
            }
        }
    }
}

/// `first` and whatever else is queued now, up to [`MAX_BATCH`].
fn take_batch(
    first: (NewEvent, Waiter),
    receiver: &mut mpsc::Receiver<(NewEvent, Waiter)>,
) -> Vec<(NewEvent, Waiter)> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
