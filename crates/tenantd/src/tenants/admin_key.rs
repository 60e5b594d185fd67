//! The admin key on the request path: the [`Admin`] extractor that every
//! operator handler takes, and [`AuthFailures`], which slows down guessing.
//!
//! A wrong or missing admin key is a 401, written to the operator's audit
//! chain by the observer. After `admin.max_auth_failures_per_minute`
//! failures from one client address within a minute, every admin request
//! from that address is a 429 until the minute is over, whatever key it
//! carries: a guesser cannot learn whether its next guess was right.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::error::ApiError;

/// Proof that the request carried the admin key (`Authorization: Bearer`
/// or `x-admin-key`), compared in constant time. Handlers that take it
/// cannot run without it.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // An unreadable forwarded chain leaves the address unknown: such
        // requests share one failure budget.
        let ip = tenancy::client_ip(&state.trusted_proxies, parts)
            .ok()
            .flatten();
        let now_ms = crate::clock::now_ms();
        if let Some(retry_after_secs) = state.admin_auth.locked(ip, now_ms) {
            return Err(ApiError::TooManyAuthFailures { retry_after_secs });
        }
        if state.config.admin.key.is_none() {
            state.admin_auth.record(ip, now_ms);
            return Err(ApiError::Unauthorized(
                "The admin API is disabled: set TENANTD_ADMIN_KEY".to_owned(),
            ));
        }
        if presents_admin_key(&parts.headers, &state.config) {
            Ok(Admin)
        } else {
            state.admin_auth.record(ip, now_ms);
            Err(ApiError::Unauthorized(
                "Invalid or missing admin key".to_owned(),
            ))
        }
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
/// expired windows are dropped, and if that is not enough the table starts
/// over (an attacker spraying addresses gets a fresh budget per address
/// anyway; memory must not grow with them).
#[derive(Debug)]
pub struct AuthFailures {
    limit: u32,
    windows: Mutex<HashMap<Option<IpAddr>, (i64, u32)>>,
}

const WINDOW_MS: i64 = 60_000;

impl AuthFailures {
    /// Addresses tracked at most.
    pub const MAX_ADDRESSES: usize = 10_000;

    /// Allows `limit` failures per address and minute (0: no lockout).
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            windows: Mutex::new(HashMap::new()),
        }
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
        let &(start, count) = table.get(&ip)?;
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
        let mut table = self.table();
        if table.len() >= Self::MAX_ADDRESSES && !table.contains_key(&ip) {
            table.retain(|_, (start, _)| now_ms < *start + WINDOW_MS);
            if table.len() >= Self::MAX_ADDRESSES {
                table.clear();
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
}
