//! The admin key on the request path: the [`Admin`] extractor that every
//! operator handler takes, and [`AuthFailures`], which slows down guessing.
//!
//! A wrong or missing admin key is a 401, written to the operator's audit
//! chain by the observer (at most [`AuthFailures::AUDITED_PER_MINUTE`] such
//! events a minute in all, so address spraying cannot flood the chain).
//! After `admin.max_auth_failures_per_minute` failures from one client
//! address (an IPv6 /64 counts as one) within a minute, wrong keys from it
//! are 429 until the minute is over, neither checked further nor audited.
//! The right key is still accepted: anyone behind the operator's address
//! (a load balancer without `trusted_proxies`) could otherwise lock the
//! operator out, and an admin key (16 characters or more) is not guessed
//! in ten tries a minute anyway.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use crate::clock::Clock;
use crate::config::Config;
use crate::error::ApiError;

/// Proof that the request carried the admin key (`Authorization: Bearer`
/// or `x-admin-key`), compared in constant time. Handlers that take it
/// cannot run without it.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

/// What the admin check reads: a substate of the application's state.
#[derive(Clone)]
pub struct AdminGate {
    /// The effective configuration (the admin key).
    pub config: Arc<Config>,
    /// The lockout's window.
    pub clock: Clock,
    /// Failed admin authentications per client address.
    pub admin_auth: Arc<AuthFailures>,
    /// `server.trusted_proxies`, parsed once (whose address is locked out).
    pub trusted_proxies: Arc<[tenancy::IpNet]>,
}

impl<S> FromRequestParts<S> for Admin
where
    S: Send + Sync,
    AdminGate: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let state = AdminGate::from_ref(state);
        // An unreadable forwarded chain leaves the address unknown: such
        // requests share one failure budget.
        let ip = tenancy::client_ip(&state.trusted_proxies, parts)
            .ok()
            .flatten();
        if presents_admin_key(&parts.headers, &state.config) {
            return Ok(Admin);
        }
        let now_ms = state.clock.now_ms();
        if let Some(retry_after_secs) = state.admin_auth.locked(ip, now_ms) {
            return Err(ApiError::TooManyAuthFailures { retry_after_secs });
        }
        state.admin_auth.record(ip, now_ms);
        if state.config.admin.key.is_none() {
            return Err(ApiError::Unauthorized(
                "The admin API is disabled: set TENANTD_ADMIN_KEY".to_owned(),
            ));
        }
        Err(ApiError::Unauthorized(
            "Invalid or missing admin key".to_owned(),
        ))
    }
}

/// Whether `headers` carry the configured admin key (`x-admin-key`, or
/// `Authorization: Bearer`), compared in constant time. A malformed
/// Authorization header counts as no key.
pub(crate) fn presents_admin_key(headers: &axum::http::HeaderMap, config: &crate::Config) -> bool {
    let Some(expected) = config.admin.key.as_deref() else {
        return false;
    };
    let presented = match headers.get("x-admin-key") {
        Some(v) => v.to_str().ok().map(str::trim),
        None => tenancy::bearer_token(headers).ok().flatten(),
    };
    presented.is_some_and(|key| tenancy::secrets_match(key, expected))
}

/// Failed admin authentications per client address, in fixed one-minute
/// windows. Bounded: past [`AuthFailures::MAX_ADDRESSES`] addresses the
/// expired windows are dropped, and if that is not enough one tracked
/// address is forgotten per new one (an attacker spraying addresses gets a
/// fresh budget per address anyway; memory must not grow with them).
#[derive(Debug)]
pub struct AuthFailures {
    limit: u32,
    windows: Mutex<HashMap<Option<IpAddr>, (i64, u32)>>,
    /// (window start, failures audited in it), across all addresses.
    audited: Mutex<(i64, u32)>,
}

/// The address failures are counted under: IPv6 clients by their /64 (one
/// host usually holds a whole /64).
fn bucket(ip: Option<IpAddr>) -> Option<IpAddr> {
    match ip {
        Some(IpAddr::V6(v6)) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            Some(IpAddr::from(octets))
        }
        other => other,
    }
}

const WINDOW_MS: i64 = 60_000;

impl AuthFailures {
    /// Addresses tracked at most.
    pub const MAX_ADDRESSES: usize = 10_000;
    /// Failed authentications written to the audit log per minute, from
    /// all addresses together.
    pub const AUDITED_PER_MINUTE: u32 = 600;

    /// Allows `limit` failures per address and minute (0: no lockout).
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: Mutex::new(HashMap::new()),
            audited: Mutex::new((0, 0)),
        }
    }

    /// Whether one more failed authentication may be written to the audit
    /// log this minute (the rest are counted in the metrics only).
    pub fn audit_permit(&self, now_ms: i64) -> bool {
        let mut audited = self
            .audited
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if now_ms >= audited.0 + WINDOW_MS {
            *audited = (now_ms, 0);
        }
        audited.1 = audited.1.saturating_add(1);
        audited.1 <= Self::AUDITED_PER_MINUTE
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Option<IpAddr>, (i64, u32)>> {
        // A panic while holding this lock leaves counts, not invariants.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds until `ip` may try again, if it is locked out.
    pub fn locked(&self, ip: Option<IpAddr>, now_ms: i64) -> Option<u64> {
        if self.limit == 0 {
            return None;
        }
        let table = self.table();
        let &(start, count) = table.get(&bucket(ip))?;
        let ends = start + WINDOW_MS;
        (count >= self.limit && now_ms < ends).then(|| {
            u64::try_from((ends - now_ms + 999) / 1000)
                .unwrap_or(1)
                .max(1)
        })
    }

    /// Counts one failure of `ip`.
    pub fn record(&self, ip: Option<IpAddr>, now_ms: i64) {
        if self.limit == 0 {
            return;
        }
        let ip = bucket(ip);
        let mut table = self.table();
        if table.len() >= Self::MAX_ADDRESSES && !table.contains_key(&ip) {
            table.retain(|_, (start, _)| now_ms < *start + WINDOW_MS);
            if table.len() >= Self::MAX_ADDRESSES
                && let Some(evicted) = table.keys().next().copied()
            {
                table.remove(&evicted);
            }
        }
        let entry = table.entry(ip).or_insert((now_ms, 0));
        if now_ms >= entry.0 + WINDOW_MS {
            *entry = (now_ms, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_limit_until_the_window_ends() {
        let f = AuthFailures::new(3);
        let ip = Some(IpAddr::from([203, 0, 113, 9]));
        let other = Some(IpAddr::from([203, 0, 113, 10]));
        for _ in 0..2 {
            f.record(ip, 1_000);
        }
        assert_eq!(f.locked(ip, 1_000), None);
        f.record(ip, 1_500);
        assert_eq!(f.locked(ip, 2_000), Some(59));
        assert_eq!(f.locked(other, 2_000), None);
        assert_eq!(f.locked(ip, 61_000), None);
        f.record(ip, 61_000);
        assert_eq!(f.locked(ip, 61_001), None, "a new window starts over");
    }

    #[test]
    fn the_table_is_bounded() {
        let f = AuthFailures::new(1);
        for i in 0..(AuthFailures::MAX_ADDRESSES as u32 + 5) {
            f.record(Some(IpAddr::from(i.to_be_bytes())), 0);
        }
        assert!(f.table().len() <= AuthFailures::MAX_ADDRESSES);
        assert_eq!(AuthFailures::new(0).locked(None, 0), None);
    }

    #[test]
    fn an_ipv6_host_counts_once_per_slash_64() {
        let f = AuthFailures::new(2);
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        f.record(Some(a), 0);
        f.record(Some(b), 0);
        assert!(f.locked(Some(a), 1).is_some());
        assert!(f.locked(Some(other), 1).is_none());
    }

    #[test]
    fn audited_failures_are_capped_per_minute() {
        let f = AuthFailures::new(10);
        let permitted = (0..AuthFailures::AUDITED_PER_MINUTE + 50)
            .filter(|_| f.audit_permit(5))
            .count();
        assert_eq!(permitted, AuthFailures::AUDITED_PER_MINUTE as usize);
        assert!(f.audit_permit(60_005), "a new minute");
    }
}
