//! The backend-neutral half of audit storage: how stored rows decode, how
//! a group of new events is placed in its chains, the listing's SQL (the
//! same on both backends but for the placeholder sign), and the paged
//! chain walk of `verify`. The SQLite and PostgreSQL repositories only
//! run the statements.

use std::collections::HashMap;
use std::future::Future;

use sqlx::{ColumnIndex, Decode, FromRow, Row, Type};

use super::{
    AuditEvent, AuditFilter, ChainReport, ChainWalk, GENESIS, HashInput, NewEvent, OutboxPlace,
};
use crate::store::StoreError;
use crate::store::outbox::{CHAINED_SQL, UNPARK_SQL};

/// The stored columns, in the order [`StoredEvent`] decodes them.
pub(crate) const COLUMNS: &str = "tenant_id, seq, id, at, actor, action, target, request_id, ip, \
     user_agent, status, duration_ms, params, prev_hash, hash";

/// Events read per page by [`walk_chain`].
const VERIFY_PAGE: i64 = 1000;

/// A stored row, with params as the exact stored text (what the hash
/// covers).
pub(crate) struct StoredEvent {
    tenant: String,
    seq: i64,
    id: String,
    at: String,
    actor: String,
    action: String,
    target: Option<String>,
    request_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    status: i64,
    duration_ms: i64,
    params: String,
    prev_hash: String,
    hash: String,
}

/// Decodes a row selected as [`COLUMNS`], on any backend.
impl<'r, R> FromRow<'r, R> for StoredEvent
where
    R: Row,
    usize: ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            tenant: row.try_get(0)?,
            seq: row.try_get(1)?,
            id: row.try_get(2)?,
            at: row.try_get(3)?,
            actor: row.try_get(4)?,
            action: row.try_get(5)?,
            target: row.try_get(6)?,
            request_id: row.try_get(7)?,
            ip: row.try_get(8)?,
            user_agent: row.try_get(9)?,
            status: row.try_get(10)?,
            duration_ms: row.try_get(11)?,
            params: row.try_get(12)?,
            prev_hash: row.try_get(13)?,
            hash: row.try_get(14)?,
        })
    }
}

impl StoredEvent {
    fn hash_input(&self) -> HashInput<'_> {
        HashInput {
            tenant: &self.tenant,
            seq: u64::try_from(self.seq).unwrap_or(0),
            id: &self.id,
            at: &self.at,
            actor: &self.actor,
            action: &self.action,
            target: self.target.as_deref(),
            request_id: self.request_id.as_deref(),
            ip: self.ip.as_deref(),
            user_agent: self.user_agent.as_deref(),
            status: u16::try_from(self.status).unwrap_or(0),
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            params: &self.params,
            prev_hash: &self.prev_hash,
        }
    }

    /// The event as the API shows it.
    pub(crate) fn into_event(self) -> AuditEvent {
        AuditEvent {
            id: self.id,
            seq: u64::try_from(self.seq).unwrap_or(0),
            tenant_id: (self.tenant != super::SYSTEM_CHAIN).then_some(self.tenant),
            at: self.at,
            actor: self.actor,
            action: self.action,
            target: self.target,
            request_id: self.request_id,
            ip: self.ip,
            user_agent: self.user_agent,
            status: u16::try_from(self.status).unwrap_or(0),
            duration_ms: u64::try_from(self.duration_ms).unwrap_or(0),
            params: serde_json::from_str(&self.params).unwrap_or(serde_json::Value::Null),
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// A new event placed in its chain: the row a backend inserts.
#[derive(Debug)]
pub(crate) struct Placed<'a> {
    /// What happened.
    pub(crate) event: &'a NewEvent,
    /// Its position in the chain.
    pub(crate) seq: u64,
    /// Its id (the event's own, made when the request arrived).
    pub(crate) id: String,
    /// The hash of the event before it.
    pub(crate) prev_hash: String,
    /// Its own hash.
    pub(crate) hash: String,
}

impl Placed<'_> {
    /// `seq` as stored.
    pub(crate) fn seq_i64(&self) -> i64 {
        i64::try_from(self.seq).unwrap_or(i64::MAX)
    }

    /// `duration_ms` as stored.
    pub(crate) fn duration_i64(&self) -> i64 {
        i64::try_from(self.event.duration_ms).unwrap_or(i64::MAX)
    }
}

/// How an append tells whether a parked event is still to be chained: the
/// statement for its outbox, with the chain it was parked under. `None`
/// for an event that was never parked.
///
/// - Parked in the shared database (the one the chain is in): taking the
///   row out is the claim. Of two appenders of one event (the writer with
///   the response's status, a sweep after a crash), the one whose delete
///   removes the row chains it; the other's removes nothing.
/// - Parked in a dedicated tenant's database: the row is taken out there
///   after this append commits, so a crash in between leaves it parked
///   though chained; the append looks for the event in its chain first.
pub(crate) fn still_parked_sql(event: &NewEvent) -> Option<(OutboxPlace, &'static str, &str)> {
    let outbox = event.outbox.as_ref()?;
    Some(match outbox.place {
        OutboxPlace::Shared => (OutboxPlace::Shared, UNPARK_SQL, outbox.chain.as_str()),
        OutboxPlace::Dedicated => (OutboxPlace::Dedicated, CHAINED_SQL, event.tenant.as_str()),
    })
}

/// The distinct chains of `events`, sorted: the order a backend that
/// locks chain heads takes the locks in (one order for every writer, so
/// two of them cannot deadlock).
pub(crate) fn chains_of<'a>(events: &[&'a NewEvent]) -> Vec<&'a str> {
    let mut chains: Vec<&str> = events.iter().map(|e| e.tenant.as_str()).collect();
    chains.sort_unstable();
    chains.dedup();
    chains
}

/// A chain's stored head (`(seq, hash)`), or the genesis of a chain that
/// has none yet.
pub(crate) fn head_or_genesis(head: Option<(i64, String)>) -> (u64, String) {
    head.map_or((0, GENESIS.to_owned()), |(seq, hash)| {
        (u64::try_from(seq).unwrap_or(0), hash)
    })
}

/// Places `events`, in order, after the heads of their chains (`heads`
/// holds every chain of `events`, as read inside the appending
/// transaction; a chain missing from it starts at genesis). Returns the
/// rows to insert and each chain's new head (`(chain, seq, hash)`).
pub(crate) fn place<'a>(
    events: &[&'a NewEvent],
    mut heads: HashMap<&'a str, (u64, String)>,
) -> (Vec<Placed<'a>>, Vec<(&'a str, u64, String)>) {
    let mut placed = Vec::with_capacity(events.len());
    for &event in events {
        let (seq, prev) = heads
            .entry(event.tenant.as_str())
            .or_insert_with(|| (0, GENESIS.to_owned()));
        let next = *seq + 1;
        let id = event.id.clone();
        let hash = HashInput {
            tenant: &event.tenant,
            seq: next,
            id: &id,
            at: &event.at,
            actor: &event.actor,
            action: &event.action,
            target: event.target.as_deref(),
            request_id: event.request_id.as_deref(),
            ip: event.ip.as_deref(),
            user_agent: event.user_agent.as_deref(),
            status: event.status,
            duration_ms: event.duration_ms,
            params: &event.params,
            prev_hash: prev,
        }
        .hash();
        let prev_hash = std::mem::replace(prev, hash.clone());
        *seq = next;
        placed.push(Placed {
            event,
            seq: next,
            id,
            prev_hash,
            hash,
        });
    }
    let mut heads: Vec<(&str, u64, String)> = heads
        .into_iter()
        .map(|(chain, (seq, hash))| (chain, seq, hash))
        .collect();
    heads.sort_unstable_by(|a, b| a.0.cmp(b.0));
    (placed, heads)
}

/// The listing of one chain: `p` is the placeholder sign (`?` for
/// SQLite, `$` for PostgreSQL). Parameters, always bound in this order:
/// 1 chain, 2 after_seq, 3 action, 4 actor, 5 since_ms, 6 until_ms,
/// 7 limit. Only the filters given become predicates, so a time range is
/// a plain range on `(tenant_id, at_ms)` that its index serves.
pub(crate) fn list_sql(filter: &AuditFilter, p: char) -> String {
    let mut sql =
        format!("SELECT {COLUMNS} FROM audit_events WHERE tenant_id = {p}1 AND seq > {p}2");
    if filter.action.is_some() {
        sql.push_str(&format!(" AND action = {p}3"));
    }
    if filter.actor.is_some() {
        sql.push_str(&format!(" AND actor = {p}4"));
    }
    if filter.since_ms.is_some() {
        sql.push_str(&format!(" AND at_ms >= {p}5"));
    }
    if filter.until_ms.is_some() {
        sql.push_str(&format!(" AND at_ms < {p}6"));
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT {p}7"));
    sql
}

/// A page of [`walk_chain`]: parameters 1 chain, 2 first seq, 3 limit,
/// 4 last seq.
pub(crate) fn verify_page_sql(p: char) -> String {
    format!(
        "SELECT {COLUMNS} FROM audit_events WHERE tenant_id = {p}1 AND seq >= {p}2 \
         AND seq <= {p}4 ORDER BY seq LIMIT {p}3"
    )
}

/// Walks `tenant`'s chain and reports the first break. `head` is the
/// chain's stored head, read before the walk: the walk stops at it, so
/// events appended while a live server keeps writing are past the head
/// and are not mistaken for tampering. `page(from_seq, upto_seq, limit)`
/// reads stored events in `seq` order ([`verify_page_sql`]).
pub(crate) async fn walk_chain<F, Fut>(
    tenant: &str,
    head: Option<(i64, String)>,
    mut page: F,
) -> Result<ChainReport, StoreError>
where
    F: FnMut(i64, i64, i64) -> Fut,
    Fut: Future<Output = Result<Vec<StoredEvent>, StoreError>>,
{
    let report = |walk: &ChainWalk, problem: Option<String>| ChainReport {
        tenant: tenant.to_owned(),
        events: walk.events(),
        problem,
    };
    let upto = head.as_ref().map_or(i64::MAX, |(seq, _)| *seq);
    let mut walk = ChainWalk::default();
    loop {
        let from = i64::try_from(walk.events() + 1).unwrap_or(i64::MAX);
        let rows = page(from, upto, VERIFY_PAGE).await?;
        let done = rows.len() < usize::try_from(VERIFY_PAGE).unwrap_or(usize::MAX);
        for row in &rows {
            if let Err(problem) = walk.step(&row.hash_input(), &row.hash) {
                return Ok(report(&walk, Some(problem)));
            }
        }
        if done {
            break;
        }
    }
    let head = head.map(|(seq, hash)| (u64::try_from(seq).unwrap_or(0), hash));
    let problem = walk
        .finish(head.as_ref().map(|(seq, hash)| (*seq, hash.as_str())))
        .err();
    Ok(report(&walk, problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tenant: &str, action: &str) -> NewEvent {
        NewEvent {
            id: crate::store::outbox::new_event_id(),
            outbox: None,
            tenant: tenant.to_owned(),
            at: "2026-01-01T00:00:00Z".to_owned(),
            at_ms: 1_767_225_600_000,
            actor: "admin".to_owned(),
            action: action.to_owned(),
            target: None,
            request_id: None,
            ip: None,
            user_agent: None,
            status: 200,
            duration_ms: 1,
            params: "{}".to_owned(),
        }
    }

    #[test]
    fn place_links_each_chain_after_its_head() {
        let owned = [event("b", "x"), event("a", "y"), event("b", "z")];
        let events: Vec<&NewEvent> = owned.iter().collect();
        let heads = HashMap::from([("b", (7, "h7".to_owned()))]);
        let (placed, heads) = place(&events, heads);
        assert_eq!(placed[0].seq, 8);
        assert_eq!(placed[0].prev_hash, "h7");
        assert_eq!(placed[1].seq, 1);
        assert_eq!(placed[1].prev_hash, GENESIS);
        assert_eq!(placed[2].seq, 9);
        assert_eq!(placed[2].prev_hash, placed[0].hash);
        assert_eq!(placed[1].id, owned[1].id, "an event keeps its own id");
        assert_eq!(
            heads,
            [
                ("a", 1, placed[1].hash.clone()),
                ("b", 9, placed[2].hash.clone())
            ]
        );
        assert_eq!(chains_of(&events), ["a", "b"]);
    }

    #[test]
    fn list_sql_has_only_the_filters_given() {
        let filter = AuditFilter {
            actor: Some("admin".to_owned()),
            until_ms: Some(5),
            ..AuditFilter::default()
        };
        let sql = list_sql(&filter, '$');
        assert!(sql.ends_with(
            "WHERE tenant_id = $1 AND seq > $2 AND actor = $4 AND at_ms < $6 ORDER BY seq LIMIT $7"
        ));
    }
}
