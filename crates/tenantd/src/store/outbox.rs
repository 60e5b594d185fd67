//! The audit outbox: a request's audit event committed in the same
//! transaction as the first write the request makes, in the database that
//! write goes to (the shared one, or a dedicated tenant's own).
//!
//! Why: the audit writer chains events after the handler has answered its
//! storage call. Were the event only in memory until then, a database that
//! stops (or a process killed) between the write's commit and the chain
//! append would leave an acknowledged write with no event. Parked here,
//! the event is as durable as the write; the writer then moves it into its
//! chain with the response's status, and a sweep chains whatever is left
//! behind by a crash or an outage (see `docs/architecture.md`, "Audit
//! events and the outbox").
//!
//! How a write finds its event: the request's observer runs the handler
//! inside [`with_pending`], and [`super::Conn::commit`] asks
//! [`pending`] for the event (there is none outside a request, so the
//! job worker, the usage flush and the writer itself park nothing). The
//! outbox rows carry the event's columns, so SQL for them is written once
//! here for both dialects (`$N` placeholders; sqlx accepts them on SQLite
//! too).

use std::future::Future;
use std::sync::Arc;

use super::StoreError;
use super::sql::{Row, Sql, sql};

/// A stored event's id: a ULID, made when the request arrives, so the
/// outbox row and the chained event are the same event.
pub fn new_event_id() -> String {
    ulid::Ulid::new().to_string()
}

/// What happened, before it is placed in its chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// The event's id (see [`new_event_id`]).
    pub id: String,
    /// The chain: a tenant id, or the system chain (`""`).
    pub tenant: String,
    /// RFC 3339 time the request arrived.
    pub at: String,
    /// Unix ms of `at` (for range filters).
    pub at_ms: i64,
    /// `admin`, `key:<id>`, `jwt:<subject>`, or `anonymous`.
    pub actor: String,
    /// `records.create`, `tenants.delete`, …
    pub action: String,
    /// The path acted on.
    pub target: Option<String>,
    /// `X-Request-Id`.
    pub request_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// `User-Agent`.
    pub user_agent: Option<String>,
    /// Response status; [`UNANSWERED`] for an event chained from the
    /// outbox whose response was never recorded.
    pub status: u16,
    /// Time to answer (for an unanswered event: time to the commit).
    pub duration_ms: u64,
    /// Query and body parameters with secrets redacted (JSON text).
    pub params: String,
    /// Where the event is parked, when a write committed it to an outbox:
    /// appending it also takes it out of there.
    pub outbox: Option<OutboxRef>,
}

/// The status of an event whose write committed but whose response was
/// never recorded (the process died, or the database stopped before the
/// event reached its chain).
pub const UNANSWERED: u16 = 0;

/// Which outbox holds a parked event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxPlace {
    /// The shared database: the append takes the row out in the same
    /// transaction.
    Shared,
    /// The tenant's own database: the row is taken out after the append
    /// commits (the append first checks the event is not chained yet).
    Dedicated,
}

/// A parked event's outbox row: its place, and the chain it was parked
/// under (the row's key with the event's id; an operator's create is
/// parked under the system chain and chained under the tenant it made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRef {
    /// Where.
    pub place: OutboxPlace,
    /// The row's `tenant_id`.
    pub chain: String,
}

/// The request's side of parking: the event as known at the moment of a
/// commit, and the note that it was parked.
pub trait PendingAudit: Send + Sync {
    /// The event to park with a write committing now, or `None` when this
    /// request records nothing or has parked its event already.
    fn event(&self) -> Option<NewEvent>;
    /// The event went into an outbox with a committed write.
    fn parked(&self, outbox: OutboxRef);
}

tokio::task_local! {
    static PENDING: Arc<dyn PendingAudit>;
}

/// Runs `request` (a handler and the layers inside the observer) with
/// `pending` as the event its first write parks.
pub async fn with_pending<F: Future>(pending: Arc<dyn PendingAudit>, request: F) -> F::Output {
    PENDING.scope(pending, request).await
}

/// The event a commit happening now must park, and whom to tell.
pub(crate) fn pending() -> Option<(Arc<dyn PendingAudit>, NewEvent)> {
    let pending = PENDING.try_with(Arc::clone).ok()?;
    let event = pending.event()?;
    Some((pending, event))
}

/// Parks an event: its chain, id, at, at_ms, actor, action, target,
/// request id, ip, user agent, status, duration and params, bound in that
/// order. The status is [`UNANSWERED`] until the event reaches its chain.
pub(crate) const PARK_SQL: &str = "INSERT INTO audit_outbox (tenant_id, id, at, at_ms, actor, \
     action, target, request_id, ip, user_agent, status, duration_ms, params) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)";

/// Takes a parked event out (`$1` chain, `$2` id); the rows it removed
/// tell whether the event was still parked (a claim: of two appenders of
/// one event, one finds it).
pub(crate) const UNPARK_SQL: &str = "DELETE FROM audit_outbox WHERE tenant_id = $1 AND id = $2";

/// Parked events older than `$1` (unix ms), oldest first, at most `$2`:
/// what a sweep chains. No index serves it: the outbox holds only events
/// in flight or left behind, a handful of rows.
pub(crate) const DUE_SQL: &str = "SELECT tenant_id, id, at, at_ms, actor, action, target, \
     request_id, ip, user_agent, duration_ms, params FROM audit_outbox \
     WHERE at_ms < $1 ORDER BY at_ms LIMIT $2";

/// Whether an event is chained already (`$1` chain, `$2` at_ms, `$3` id;
/// the `(tenant_id, at_ms)` index finds it).
pub(crate) const CHAINED_SQL: &str =
    "SELECT 1 FROM audit_events WHERE tenant_id = $1 AND at_ms = $2 AND id = $3";

/// The statement parking `event` (see [`PARK_SQL`]).
pub(crate) fn park(event: &NewEvent) -> Sql {
    sql(PARK_SQL)
        .bind(&event.tenant)
        .bind(&event.id)
        .bind(&event.at)
        .bind(event.at_ms)
        .bind(&event.actor)
        .bind(&event.action)
        .bind(event.target.as_deref())
        .bind(event.request_id.as_deref())
        .bind(event.ip.as_deref())
        .bind(event.user_agent.as_deref())
        .bind(i64::from(event.status))
        .bind(i64::try_from(event.duration_ms).unwrap_or(i64::MAX))
        .bind(&event.params)
}

/// The event of a row of [`DUE_SQL`], parked at `place`.
pub(crate) fn due_event(row: &Row, place: OutboxPlace) -> Result<NewEvent, StoreError> {
    let tenant: String = row.get(0)?;
    let duration: i64 = row.get(10)?;
    Ok(NewEvent {
        outbox: Some(OutboxRef {
            place,
            chain: tenant.clone(),
        }),
        id: row.get(1)?,
        tenant,
        at: row.get(2)?,
        at_ms: row.get(3)?,
        actor: row.get(4)?,
        action: row.get(5)?,
        target: row.get(6)?,
        request_id: row.get(7)?,
        ip: row.get(8)?,
        user_agent: row.get(9)?,
        status: UNANSWERED,
        duration_ms: u64::try_from(duration).unwrap_or(0),
        params: row.get(11)?,
    })
}

/// The outbox of one database.
#[async_trait::async_trait]
pub trait OutboxRepo: Send + Sync {
    /// Which outbox this database's is.
    fn outbox_place(&self) -> OutboxPlace;
    /// Parked events that arrived before `before_ms`, at most `limit`.
    async fn due_events(&self, before_ms: i64, limit: i64) -> Result<Vec<NewEvent>, StoreError>;
    /// Takes one parked event out (after it was chained elsewhere).
    async fn unpark(&self, chain: &str, id: &str) -> Result<(), StoreError>;
}
