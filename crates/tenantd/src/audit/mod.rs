//! The audit log: every mutating request and
//! every admin action, append-only and hash-chained per tenant.
//!
//! Each event stores the hash of the previous event of its chain, and its
//! own hash covers every stored field plus that link, so changing,
//! removing or reordering an event breaks the chain; the chain's head
//! (last sequence number and hash) is stored apart, so removing the newest
//! events is detected too. `tenantd audit verify` walks the chains.
//!
//! Events are written before the response leaves (a group commit: the
//! events of concurrent requests share one transaction).

mod capture;
pub mod cli;
pub mod http;
pub mod layer;
mod repo;
mod rows;
mod writer;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tenancy::TenantId;
use utoipa::ToSchema;

use crate::store::{StoreError, TenantScope};

pub use crate::redact::params as redact_params;
pub use crate::store::outbox::{NewEvent, OutboxPlace, OutboxRef, UNANSWERED, new_event_id};
pub use writer::{AuditLog, SweepOptions};

/// The chain of admin actions that concern no single tenant.
pub const SYSTEM_CHAIN: &str = "";

/// `prev_hash` of a chain's first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEvent {
    /// Unique id (ULID).
    pub id: String,
    /// Position in its chain, from 1.
    pub seq: u64,
    /// The tenant (`null` for admin actions on no tenant).
    pub tenant_id: Option<String>,
    /// Time (RFC 3339, UTC).
    pub at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Client IP.
    pub ip: Option<String>,
    /// User agent.
    pub user_agent: Option<String>,
    /// HTTP status of the result.
    pub status: u16,
    /// Milliseconds to answer.
    pub duration_ms: u64,
    /// Parameters, secrets redacted.
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    /// Hash of the previous event in the chain.
    pub prev_hash: String,
    /// This event's hash.
    pub hash: String,
}

/// The stored fields an event's hash covers, in a fixed order.
#[derive(Debug, Clone, Copy)]
pub struct HashInput<'a> {
    /// Chain.
    pub tenant: &'a str,
    /// Sequence.
    pub seq: u64,
    /// Id.
    pub id: &'a str,
    /// Time.
    pub at: &'a str,
    /// Actor.
    pub actor: &'a str,
    /// Action.
    pub action: &'a str,
    /// Target.
    pub target: Option<&'a str>,
    /// Request id.
    pub request_id: Option<&'a str>,
    /// IP.
    pub ip: Option<&'a str>,
    /// User agent.
    pub user_agent: Option<&'a str>,
    /// Status.
    pub status: u16,
    /// Duration.
    pub duration_ms: u64,
    /// Params as stored (text).
    pub params: &'a str,
    /// Link.
    pub prev_hash: &'a str,
}

impl HashInput<'_> {
    /// SHA-256 (hex) of the fields as one JSON array: unambiguous, since
    /// every string is quoted and escaped.
    pub fn hash(&self) -> String {
        let line = serde_json::json!([
            self.tenant,
            self.seq,
            self.id,
            self.at,
            self.actor,
            self.action,
            self.target,
            self.request_id,
            self.ip,
            self.user_agent,
            self.status,
            self.duration_ms,
            self.params,
            self.prev_hash,
        ]);
        hex::encode(Sha256::digest(line.to_string().as_bytes()))
    }
}

/// The checks of one chain, in order: `tenantd audit verify` walks stored
/// events with it, an import walks the rows of a dump.
#[derive(Debug, Clone)]
pub struct ChainWalk {
    prev: String,
    next_seq: u64,
}

impl Default for ChainWalk {
    fn default() -> Self {
        Self {
            prev: GENESIS.to_owned(),
            next_seq: 1,
        }
    }
}

impl ChainWalk {
    /// Events accepted so far.
    pub fn events(&self) -> u64 {
        self.next_seq - 1
    }

    /// Checks the next event (`event` as stored, `hash` its stored hash):
    /// its place, its link to the previous one, and its own hash.
    pub fn step(&mut self, event: &HashInput<'_>, hash: &str) -> Result<(), String> {
        let expected = self.next_seq;
        if event.seq != expected {
            return Err(format!(
                "event {expected} is missing (next is {})",
                event.seq
            ));
        }
        if event.prev_hash != self.prev {
            return Err(format!(
                "event {} ({}) does not follow event {}: removed or reordered",
                event.seq,
                event.id,
                expected - 1
            ));
        }
        if event.hash() != hash {
            return Err(format!("event {} ({}) was modified", event.seq, event.id));
        }
        self.prev = hash.to_owned();
        self.next_seq += 1;
        Ok(())
    }

    /// Checks the chain's stored head (`(seq, hash)`) against the last
    /// event walked, so removing the newest events is detected too.
    pub fn finish(&self, head: Option<(u64, &str)>) -> Result<(), String> {
        let last = self.events();
        match head {
            Some((seq, hash)) if seq == last && hash == self.prev => Ok(()),
            Some((seq, _)) if seq > last => Err(format!(
                "the chain ends at event {last} but its head is event {seq}: newest events removed"
            )),
            Some(_) => Err("the chain's head does not match its last event".to_owned()),
            None if last == 0 => Ok(()),
            None => Err("the chain has events but no head".to_owned()),
        }
    }
}

/// Filters of an audit listing.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact action.
    pub action: Option<String>,
    /// Exact actor.
    pub actor: Option<String>,
    /// From (unix ms, inclusive).
    pub since_ms: Option<i64>,
    /// Until (unix ms, exclusive).
    pub until_ms: Option<i64>,
    /// Events after this sequence number (the cursor).
    pub after_seq: u64,
    /// Page size.
    pub limit: u64,
}

/// What verification found in one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// The chain (`""` = system).
    pub tenant: String,
    /// Events checked.
    pub events: u64,
    /// The first problem, if any.
    pub problem: Option<String>,
}

/// Audit storage: appends (a group of events, chained inside one
/// transaction), reads and chain walks. Administrative reads name their
/// chain; a tenant reads its own through its scope.
#[async_trait]
pub trait AuditRepo: Send + Sync {
    /// Appends events, each after the current head of its chain.
    async fn append_events(&self, events: &[NewEvent]) -> Result<(), StoreError>;
    /// A page of one chain, oldest first (the administrative path).
    async fn list_events(
        &self,
        tenant: &str,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// A page of the chain of `scope`'s tenant, oldest first: the tenant
    /// path, confined to that tenant like every other scoped read (under
    /// PostgreSQL by row-level security as well).
    async fn list_scoped_events(
        &self,
        scope: &TenantScope,
        filter: &AuditFilter,
    ) -> Result<Vec<AuditEvent>, StoreError>;
    /// Chains present (tenant ids and/or the system chain).
    async fn chains(&self) -> Result<Vec<String>, StoreError>;
    /// Walks one chain and reports the first break.
    async fn verify_chain(&self, tenant: &str) -> Result<ChainReport, StoreError>;
}

/// The chain name of a tenant.
pub fn chain_of(tenant: Option<&TenantId>) -> String {
    tenant.map_or_else(|| SYSTEM_CHAIN.to_owned(), |t| t.as_str().to_owned())
}

/// A tenant's own audit log, read through its scope.
impl crate::store::TenantStore {
    /// A page of this tenant's events.
    pub async fn audit_events(&self, filter: &AuditFilter) -> Result<Vec<AuditEvent>, StoreError> {
        let (scope, db) = self.shared();
        db.list_scoped_events(scope, filter).await
    }
}
