//! Per-tenant and per-key rate limits: a sliding window counter over a
//! pluggable store, and the tower layer that enforces it.
//!
//! # Algorithm
//!
//! Each [`Window`] (`limit` requests per `period`) keeps two fixed-window
//! counts: the current fixed window (`now / period`) and the previous one.
//! The number of requests in the last `period` is estimated as
//! `prev * (1 - elapsed / period) + curr` (the weighted two-window estimate
//! Cloudflare describes), and a request is admitted when `estimate + 1 <=
//! limit` for every window of every [`Bucket`]. Only then is it counted, in
//! all of them, under one lock (memory) or one Lua script (Redis): a request
//! refused by the minute window does not use up the hour.
//!
//! # Accuracy
//!
//! - A burst inside one fixed window is counted exactly: at most `limit`
//!   requests are admitted, whatever the concurrency.
//! - Across a boundary the estimate assumes the previous window's requests
//!   were spread evenly. It never admits more than `limit` requests in any
//!   single fixed window, so any sliding interval of length `period` (which
//!   overlaps at most two fixed windows) holds at most `2 * limit` admitted
//!   requests; that worst case needs the previous window's requests packed
//!   at its very end. With evenly spread traffic the error is small
//!   (Cloudflare measured 0.003 % of requests wrongly allowed or limited).
//!
//! # Stores
//!
//! [`MemoryStore`] (one process) and, with the `redis` feature,
//! `RedisStore` (a budget shared by every instance). Callers pass the time
//! (`now_ms`), so tests drive a [`ManualClock`] and never sleep; with Redis
//! the instances' clocks are assumed NTP-synced (a skew of `s` seconds moves
//! window boundaries by `s`).

mod clock;
mod decision;
mod layer;
mod limiter;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod window;

use crate::context::TenantContext;
use crate::id::TenantId;

pub use clock::{Clock, ManualClock, SystemClock};
pub use decision::{Decision, WindowState};
pub use layer::{RateLimitLayer, RateLimitOutcome, RateLimitService};
pub use limiter::{OnStoreError, Outcome, RateLimiter};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisStore;
pub use window::Window;

/// Whose budget: the tenant's as a whole, or one API key's own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Subject {
    /// The tenant's shared budget.
    Tenant,
    /// One API key's own budget, by key id (never the secret).
    Key(Box<str>),
}

impl Subject {
    /// The subject's part of a storage key: `t`, or `k.<key id>`.
    pub fn storage_label(&self) -> String {
        match self {
            Self::Tenant => "t".to_owned(),
            Self::Key(id) => format!("k.{id}"),
        }
    }
}

/// Windows applied to one subject of a tenant.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// Whose budget these windows count.
    pub subject: Subject,
    /// All must admit a request.
    pub windows: Vec<Window>,
}

impl Bucket {
    /// The tenant-wide bucket with `windows`.
    pub fn tenant(windows: impl Into<Vec<Window>>) -> Self {
        Self {
            subject: Subject::Tenant,
            windows: windows.into(),
        }
    }

    /// The bucket of API key `key_id` with `windows`.
    pub fn key(key_id: &str, windows: impl Into<Vec<Window>>) -> Self {
        Self {
            subject: Subject::Key(key_id.into()),
            windows: windows.into(),
        }
    }
}

/// The store could not be reached or answered garbage. The message names
/// the failure, never a credential.
#[derive(Debug, thiserror::Error)]
#[error("rate-limit store unavailable: {0}")]
pub struct StoreUnavailable(pub String);

/// A place where counters live. `check` is atomic across all buckets and
/// windows: a request is counted in all of them or in none.
#[async_trait::async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Decides one request of `tenant` at `now_ms` (Unix epoch
    /// milliseconds) and, when admitted, counts it in every window.
    async fn check(
        &self,
        tenant: &TenantId,
        buckets: &[Bucket],
        now_ms: u64,
    ) -> Result<Decision, StoreUnavailable>;

    /// `"memory"` or `"redis"` (for logs and metrics).
    fn kind(&self) -> &'static str;
}

/// What limits apply to a request: the embedding service knows plans,
/// tenant overrides and per-key limits. No buckets means unlimited.
pub trait LimitPolicy: Send + Sync + 'static {
    /// The buckets that must all admit a request made in `ctx`.
    fn buckets(&self, ctx: &TenantContext) -> Vec<Bucket>;
}

/// The same buckets for every request (handy in tests and simple setups).
#[derive(Clone, Debug, Default)]
pub struct StaticLimits(pub Vec<Bucket>);

impl LimitPolicy for StaticLimits {
    fn buckets(&self, _ctx: &TenantContext) -> Vec<Bucket> {
        self.0.clone()
    }
}
