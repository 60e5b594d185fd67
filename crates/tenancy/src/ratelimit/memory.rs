//! [`MemoryStore`]: counters in this process, for a single instance.
//!
//! # Layout and cost
//!
//! 64 shards, chosen by a hash of the tenant id, each a `Mutex` over
//! `tenant -> subject -> counters`. One check takes one shard lock for its
//! whole duration (so it is atomic across buckets and windows) and never
//! awaits while holding it; tenants on other shards are not blocked.
//!
//! Memory per active tenant with one subject and three windows is about
//! 0.4 KiB (the tenant's slot in the shard map, a small subject map, and
//! 32 bytes per window), so 100,000 active tenants take ~40 MB. Each
//! further subject (API key with its own bucket) adds about 0.15 KiB.
//!
//! # Bounded memory
//!
//! A subject idle for longer than twice its longest period has counts that
//! can no longer matter (both fixed windows have passed) and is dropped.
//! Every [`SWEEP_EVERY`] new entries in a shard, that shard is swept while
//! its lock is held anyway (amortised O(1) per insert); [`MemoryStore::sweep`]
//! sweeps everything, for a periodic task.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use super::decision::{Slot, admits_all};
use super::window::{Counts, Window};
use super::{Bucket, Decision, RateLimitStore, StoreUnavailable, Subject};
use crate::id::TenantId;

const SHARDS: usize = 64;

/// New entries in a shard between two sweeps of it.
pub const SWEEP_EVERY: u32 = 1_024;

/// One window's counters.
#[derive(Clone, Copy, Debug)]
struct Counter {
    period_ms: u64,
    /// Fixed-window index `curr` belongs to.
    index: u64,
    curr: u64,
    prev: u64,
}

impl Counter {
    fn new(window: &Window, now_ms: u64) -> Self {
        Self {
            period_ms: window.period_ms(),
            index: window.index(now_ms),
            curr: 0,
            prev: 0,
        }
    }

    /// Rolls the counter forward to the fixed window of `now_ms`. A clock
    /// that went backwards keeps the newer window (counts stay put).
    fn roll(&mut self, now_index: u64) {
        if now_index <= self.index {
            return;
        }
        self.prev = if now_index == self.index + 1 {
            self.curr
        } else {
            0
        };
        self.curr = 0;
        self.index = now_index;
    }
}

/// All counters of one subject of one tenant.
#[derive(Debug, Default)]
struct Entry {
    counters: Vec<Counter>,
    last_seen_ms: u64,
}

impl Entry {
    fn counter(&mut self, window: &Window, now_ms: u64) -> &mut Counter {
        let period_ms = window.period_ms();
        let at = match self.counters.iter().position(|c| c.period_ms == period_ms) {
            Some(at) => at,
            None => {
                self.counters.push(Counter::new(window, now_ms));
                self.counters.len() - 1
            }
        };
        let counter = &mut self.counters[at];
        counter.roll(window.index(now_ms));
        counter
    }

    fn idle(&self, now_ms: u64) -> bool {
        let longest = self.counters.iter().map(|c| c.period_ms).max().unwrap_or(0);
        now_ms.saturating_sub(self.last_seen_ms) > longest.saturating_mul(2)
    }
}

#[derive(Debug, Default)]
struct Shard {
    tenants: HashMap<TenantId, HashMap<Subject, Entry>>,
    inserts: u32,
}

impl Shard {
    fn sweep(&mut self, now_ms: u64) {
        self.tenants.retain(|_, subjects| {
            subjects.retain(|_, entry| !entry.idle(now_ms));
            !subjects.is_empty()
        });
        self.inserts = 0;
    }

    fn entry(&mut self, tenant: &TenantId, subject: &Subject) -> &mut Entry {
        let fresh = match self.tenants.get(tenant.as_str()) {
            Some(subjects) => !subjects.contains_key(subject),
            None => true,
        };
        if fresh {
            self.inserts += 1;
        }
        self.tenants
            .entry(tenant.clone())
            .or_default()
            .entry(subject.clone())
            .or_default()
    }

    fn check(&mut self, tenant: &TenantId, buckets: &[Bucket], now_ms: u64) -> Decision {
        if self.inserts >= SWEEP_EVERY {
            self.sweep(now_ms);
        }
        let mut slots = Vec::with_capacity(buckets.iter().map(|b| b.windows.len()).sum());
        for bucket in buckets {
            let entry = self.entry(tenant, &bucket.subject);
            entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
            for window in &bucket.windows {
                let c = entry.counter(window, now_ms);
                slots.push(Slot {
                    subject: bucket.subject.clone(),
                    window: *window,
                    counts: Counts {
                        curr: c.curr,
                        prev: c.prev,
                    },
                });
            }
        }
        let allowed = admits_all(&slots, now_ms);
        if allowed {
            self.count(tenant, buckets, now_ms);
        }
        Decision::build(slots, now_ms, allowed)
    }

    /// Adds one to every distinct counter the buckets name (a window listed
    /// twice shares its counter and is counted once).
    fn count(&mut self, tenant: &TenantId, buckets: &[Bucket], now_ms: u64) {
        let mut done: Vec<(&Subject, u64)> = Vec::new();
        for bucket in buckets {
            for window in &bucket.windows {
                let key = (&bucket.subject, window.period_ms());
                if done.contains(&key) {
                    continue;
                }
                done.push(key);
                let counter = self.entry(tenant, &bucket.subject).counter(window, now_ms);
                counter.curr = counter.curr.saturating_add(1);
            }
        }
    }

    fn len(&self) -> usize {
        self.tenants.values().map(HashMap::len).sum()
    }
}

/// Rate-limit counters in this process's memory (see the module docs for
/// cost and eviction). Counts are per instance: with several instances
/// behind a load balancer each admits its own `limit`; use `RedisStore`
/// for one shared budget.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, tenant: &TenantId) -> MutexGuard<'_, Shard> {
        let hash = self.hasher.hash_one(tenant.as_str());
        // `SHARDS` fits in u64 and the remainder is below it.
        let at = usize::try_from(hash % SHARDS as u64).unwrap_or(0);
        let shard = &self.shards[at % self.shards.len()];
        // A panic while holding the lock cannot leave counters
        // inconsistent in a way that matters (at worst one request is
        // miscounted), so a poisoned lock is used as is.
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The same check as [`RateLimitStore::check`], synchronously.
    pub fn check_now(&self, tenant: &TenantId, buckets: &[Bucket], now_ms: u64) -> Decision {
        self.shard(tenant).check(tenant, buckets, now_ms)
    }

    /// Drops every subject idle for longer than twice its longest period.
    pub fn sweep(&self, now_ms: u64) {
        for shard in self.shards.iter() {
            shard
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .sweep(now_ms);
        }
    }

    /// Number of (tenant, subject) entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// True when no counters are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl RateLimitStore for MemoryStore {
    async fn check(
        &self,
        tenant: &TenantId,
        buckets: &[Bucket],
        now_ms: u64,
    ) -> Result<Decision, StoreUnavailable> {
        Ok(self.check_now(tenant, buckets, now_ms))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
