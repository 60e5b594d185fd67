//! [`RateLimiter`]: a store, a clock, and what to do when the store fails.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::{Bucket, Clock, Decision, RateLimitStore};
use crate::id::TenantId;

/// How often, at most, a store failure is logged.
const WARN_EVERY_MS: u64 = 10_000;

/// After a store failure, checks fail at once for this long instead of
/// each waiting out the store's timeout; the first check after it asks the
/// store again. Real time, not the limiter's clock (which tests freeze).
pub const BREAKER_MS: u64 = 1_000;

/// What a request gets when the store cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Fail open: serve the request unlimited (the default; an outage of
    /// the counter store should not become an outage of the API).
    #[default]
    Allow,
    /// Fail closed: refuse the request (503).
    Deny,
}

/// What the limiter decided for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted and counted.
    Allowed(Decision),
    /// Refused: a window is full.
    Limited(Decision),
    /// The store failed; `allowed` follows [`OnStoreError`]. A warning is
    /// logged at most once per ~10 s.
    Unavailable {
        /// Whether the request may proceed anyway.
        allowed: bool,
    },
}

/// Store + clock + error policy, shared by every request (`Arc`).
pub struct RateLimiter {
    store: Arc<dyn RateLimitStore>,
    clock: Arc<dyn Clock>,
    on_error: OnStoreError,
    /// Clock reading of the last logged store failure, plus one (0: never).
    last_warning: AtomicU64,
    /// Start of the breaker's time line.
    started: Instant,
    /// Milliseconds since `started` until which the store is not asked.
    broken_until: AtomicU64,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("store", &self.store.kind())
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter counting in `store`, reading time from `clock`.
    pub fn new(
        store: Arc<dyn RateLimitStore>,
        clock: Arc<dyn Clock>,
        on_error: OnStoreError,
    ) -> Self {
        Self {
            store,
            clock,
            on_error,
            last_warning: AtomicU64::new(0),
            started: Instant::now(),
            broken_until: AtomicU64::new(0),
        }
    }

    /// The clock checks read.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The store's kind (`"memory"`, `"redis"`).
    pub fn store_kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Checks (and, if admitted, counts) one request of `tenant` against
    /// `buckets`. No windows at all is an unlimited request: allowed, with
    /// an empty decision, without asking the store.
    pub async fn check(&self, tenant: &TenantId, buckets: &[Bucket]) -> Outcome {
        let now_ms = self.clock.now_ms();
        if buckets.iter().all(|b| b.windows.is_empty()) {
            return Outcome::Allowed(Decision {
                allowed: true,
                windows: Vec::new(),
                retry_after_secs: 0,
            });
        }
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        if elapsed < self.broken_until.load(Ordering::Relaxed) {
            return Outcome::Unavailable {
                allowed: self.on_error == OnStoreError::Allow,
            };
        }
        match self.store.check(tenant, buckets, now_ms).await {
            Ok(decision) if decision.allowed => Outcome::Allowed(decision),
            Ok(decision) => Outcome::Limited(decision),
            Err(error) => {
                let failed_at =
                    u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                self.broken_until
                    .store(failed_at.saturating_add(BREAKER_MS), Ordering::Relaxed);
                let allowed = self.on_error == OnStoreError::Allow;
                if self.should_warn(now_ms) {
                    tracing::warn!(
                        tenant_id = %tenant,
                        store = self.store.kind(),
                        %error,
                        allowed,
                        "rate-limit check failed",
                    );
                }
                Outcome::Unavailable { allowed }
            }
        }
    }

    /// True for the first failure and then at most once per
    /// [`WARN_EVERY_MS`].
    fn should_warn(&self, now_ms: u64) -> bool {
        let stamp = now_ms.saturating_add(1);
        let last = self.last_warning.load(Ordering::Relaxed);
        if last != 0 && stamp.saturating_sub(last) < WARN_EVERY_MS {
            return false;
        }
        self.last_warning
            .compare_exchange(last, stamp, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::ratelimit::{ManualClock, StoreUnavailable, Window};

    /// A store that always fails, counting how often it was asked.
    #[derive(Default)]
    struct Down(AtomicUsize);

    #[async_trait::async_trait]
    impl RateLimitStore for Down {
        async fn check(
            &self,
            _tenant: &TenantId,
            _buckets: &[Bucket],
            _now_ms: u64,
        ) -> Result<Decision, StoreUnavailable> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err(StoreUnavailable("down".to_owned()))
        }

        fn kind(&self) -> &'static str {
            "down"
        }
    }

    #[tokio::test]
    async fn after_a_failure_the_store_is_left_alone_for_a_while() {
        let store = Arc::new(Down::default());
        let limiter = RateLimiter::new(
            store.clone(),
            Arc::new(ManualClock::new(0)),
            OnStoreError::Deny,
        );
        let tenant = TenantId::new("acme").expect("valid");
        let buckets = [Bucket::tenant([Window::per_minute(10)])];
        for _ in 0..5 {
            assert_eq!(
                limiter.check(&tenant, &buckets).await,
                Outcome::Unavailable { allowed: false }
            );
        }
        // Five refusals, one store call: the rest failed fast.
        assert_eq!(store.0.load(Ordering::SeqCst), 1);
    }
}
