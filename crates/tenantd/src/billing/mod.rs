//! Billing events: when a month closes, one event per tenant with its
//! usage report, written to a durable outbox and delivered to
//! `billing.webhook_url`.
//!
//! # Exactly one event per tenant and month
//!
//! The outbox's primary key is `(tenant, month)` and events are inserted
//! with `ON CONFLICT DO NOTHING`, so closing a month twice (by the
//! scheduler, by `POST /admin/billing/close`, by two instances) never
//! makes a second event. The event id is fixed when the row is written and sent as the
//! `Idempotency-Key` of every attempt, so a receiver that saw an attempt
//! whose answer was lost recognises the retry as the same event.
//!
//! # Delivery
//!
//! [`BillingWorker`] POSTs due events with an HMAC-SHA-256 signature
//! (`X-Tenantd-Signature: t=<unix seconds>,v1=<hex>` over `"{t}.{body}"`,
//! Stripe's scheme: the timestamp lets receivers refuse replays). A
//! non-2xx answer or a transport error schedules a retry after
//! `retry_base_ms × 2^(attempts-1)` (capped at `retry_max_ms`); the
//! schedule is in the row, so retries survive a restart. After
//! `max_attempts` failures the event is `failed` and stays for an operator.
//! Under PostgreSQL, where several instances may share the outbox, reading
//! the due events claims them for a few seconds (see
//! [`BillingRepo::due_events`]).

pub mod http;
mod repo;
mod worker;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tenancy::TenantId;
use utoipa::ToSchema;

use crate::store::StoreError;

pub use worker::{BillingWorker, sign};

/// Event type of a month close.
pub const EVENT_TYPE: &str = "usage.month_closed";

/// Delivery state of an outbox event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Waiting for its (next) delivery attempt.
    Pending,
    /// Accepted by the webhook (2xx).
    Delivered,
    /// Gave up after `max_attempts`.
    Failed,
}

impl EventStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// From the stored name (unknown text reads as `failed`, the state that
    /// needs a person).
    pub fn parse(text: &str) -> Self {
        match text {
            "pending" => Self::Pending,
            "delivered" => Self::Delivered,
            _ => Self::Failed,
        }
    }
}

/// An event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BillingEvent {
    /// Event id (`evt_<ULID>`), also the delivery's `Idempotency-Key`.
    pub id: String,
    /// The tenant billed.
    pub tenant_id: String,
    /// The month (`YYYY-MM`).
    pub month: String,
    /// Delivery state.
    pub status: EventStatus,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// When the next attempt is due (unix ms).
    pub next_attempt_ms: i64,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the event was written (RFC 3339).
    pub created_at: String,
    /// When the webhook accepted it.
    pub delivered_at: Option<String>,
    /// The body sent (JSON text).
    #[serde(skip)]
    pub payload: String,
}

/// A new outbox row.
#[derive(Debug, Clone)]
pub struct NewBillingEvent {
    /// Tenant.
    pub tenant: TenantId,
    /// Event id.
    pub id: String,
    /// JSON body.
    pub payload: String,
}

/// The outbox. Administrative: a month close concerns every tenant.
#[async_trait]
pub trait BillingRepo: Send + Sync {
    /// Whether `month` has been closed.
    async fn month_closed(&self, month: &str) -> Result<bool, StoreError>;
    /// Writes `events` (ignoring tenants that already have one for
    /// `month`) and, with `mark_closed`, marks the month closed, in one
    /// transaction. Returns how many were new.
    async fn close_month(
        &self,
        month: &str,
        events: &[NewBillingEvent],
        now_ms: i64,
        mark_closed: bool,
    ) -> Result<u64, StoreError>;
    /// Pending events due at `now_ms`, oldest first. A backend that
    /// several instances share claims what it returns (PostgreSQL: the
    /// rows are locked `SKIP LOCKED` and their `next_attempt_ms` is pushed
    /// a few seconds ahead as a lease), so instances do not attempt the
    /// same event at once; the attempt's outcome replaces the lease.
    async fn due_events(&self, now_ms: i64, limit: u32) -> Result<Vec<BillingEvent>, StoreError>;
    /// Records a successful delivery.
    async fn mark_delivered(&self, tenant: &str, id: &str, attempts: u32)
    -> Result<(), StoreError>;
    /// Records a failed attempt; `next_attempt_ms = None` gives up.
    async fn mark_attempt_failed(
        &self,
        tenant: &str,
        id: &str,
        attempts: u32,
        next_attempt_ms: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError>;
    /// Events of `month` (all months when `None`), by tenant.
    async fn list_billing_events(
        &self,
        month: Option<&str>,
    ) -> Result<Vec<BillingEvent>, StoreError>;
    /// The earliest due time of a pending event.
    async fn next_due_ms(&self) -> Result<Option<i64>, StoreError>;
}

/// What a close did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CloseReport {
    /// The month closed.
    pub month: String,
    /// Events written now.
    pub created: u64,
    /// Tenants that already had an event for the month.
    pub existing: u64,
}
