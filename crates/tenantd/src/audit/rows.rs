//! The rows of audit storage: how stored rows decode, how a group of new
//! events is placed in its chains (the one copy of the chaining), the
//! listing's SQL, and the paged chain walk of `verify`. The repository
//! ([`super::repo`]) runs the statements.

use std::collections::HashMap;
use std::future::Future;

use super::{
    AuditEvent, AuditFilter, ChainReport, ChainWalk, GENESIS, HashInput, NewEvent, OutboxPlace,
};
use crate::store::outbox::{CHAINED_SQL, UNPARK_SQL};
use crate::store::{Row, Sql, StoreError, sql};

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

impl StoredEvent {
    /// Decodes a row selected as [`COLUMNS`].
    pub(crate) fn from_row(row: &Row) -> Result<Self, StoreError> {
        Ok(Self {
            tenant: row.get(0)?,
            seq: row.get(1)?,
            id: row.get(2)?,
            at: row.get(3)?,
            actor: row.get(4)?,
            action: row.get(5)?,
            target: row.get(6)?,
            request_id: row.get(7)?,
            ip: row.get(8)?,
            user_agent: row.get(9)?,
            status: row.get(10)?,
            duration_ms: row.get(11)?,
            params: row.get(12)?,
            prev_hash: row.get(13)?,
            hash: row.get(14)?,
        })
    }

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
/// statement for its outbox, bound. `None` for an event that was never
/// parked.
///
/// - Parked in the shared database (the one the chain is in): taking the
///   row out is the claim. Of two appenders of one event (the writer with
///   the response's status, a sweep after a crash), the one whose delete
///   removes the row chains it; the other's removes nothing.
/// - Parked in a dedicated tenant's database: the row is taken out there
///   after this append commits, so a crash in between leaves it parked
///   though chained; the append looks for the event in its chain first.
pub(crate) fn still_parked_sql(event: &NewEvent) -> Option<(OutboxPlace, Sql)> {
    let outbox = event.outbox.as_ref()?;
    Some(match outbox.place {
        OutboxPlace::Shared => (
            OutboxPlace::Shared,
            sql(UNPARK_SQL).bind(&outbox.chain).bind(&event.id),
        ),
        OutboxPlace::Dedicated => (
            OutboxPlace::Dedicated,
            sql(CHAINED_SQL)
                .bind(&event.tenant)
                .bind(event.at_ms)
                .bind(&event.id),
        ),
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

/// The listing of one chain's page. Parameters, always bound in this
/// order: 1 chain, 2 after_seq, 3 action, 4 actor, 5 since_ms,
/// 6 until_ms, 7 limit. Only the filters given become predicates, so a
/// time range is a plain range on `(tenant_id, at_ms)` that its index
/// serves.
pub(crate) fn list_sql(tenant: &str, filter: &AuditFilter) -> Sql {
    let mut text = format!("SELECT {COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq > $2");
    if filter.action.is_some() {
        text.push_str(" AND action = $3");
    }
    if filter.actor.is_some() {
        text.push_str(" AND actor = $4");
    }
    if filter.since_ms.is_some() {
        text.push_str(" AND at_ms >= $5");
    }
    if filter.until_ms.is_some() {
        text.push_str(" AND at_ms < $6");
    }
    text.push_str(" ORDER BY seq LIMIT $7");
    Sql::owned(text)
        .bind(tenant)
        .bind(i64::try_from(filter.after_seq).unwrap_or(i64::MAX))
        .bind(filter.action.as_deref())
        .bind(filter.actor.as_deref())
        .bind(filter.since_ms)
        .bind(filter.until_ms)
        .bind(i64::try_from(filter.limit).unwrap_or(i64::MAX))
}

/// A page of [`walk_chain`]: `tenant`'s events `from..=upto`, at most
/// `limit`.
pub(crate) fn verify_page_sql(tenant: &str, from: i64, upto: i64, limit: i64) -> Sql {
    Sql::owned(format!(
        "SELECT {COLUMNS} FROM audit_events WHERE tenant_id = $1 AND seq >= $2 \
         AND seq <= $3 ORDER BY seq LIMIT $4"
    ))
    .bind(tenant)
    .bind(from)
    .bind(upto)
    .bind(limit)
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
        let sql = list_sql("a", &filter);
        assert!(sql.text().ends_with(
            "WHERE tenant_id = $1 AND seq > $2 AND actor = $4 AND at_ms < $6 ORDER BY seq LIMIT $7"
        ));
    }
}
