//! The JWKS of each tenant issuer, fetched through its discovery document
//! and cached per issuer.
//!
//! Every issuer has its own entry, and an entry's fetch is single-flight:
//! concurrent requests for an issuer whose keys are missing or stale share
//! one fetch, while requests for any other issuer never wait for it (no
//! lock is held across the network except that issuer's own). A fetch is
//! bounded by `auth.jwt.jwks_timeout_ms` as a whole (discovery document and
//! JWKS together), its responses by [`MAX_BODY`], and a failure is
//! remembered for `auth.jwt.jwks_failure_ttl_secs`: meanwhile that issuer's
//! tokens are checked against its last good keys, or refused at once, with
//! no new fetch. Only issuers some tenant binds reach this cache (the
//! verifier refuses the others first), and the number of entries is
//! bounded by [`MAX_ISSUERS`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;
use tenancy::AuthError;

/// A token from a key id we do not know triggers a refetch at most this
/// often per issuer (a flood of forged kids cannot hammer the issuer).
const REFETCH_AFTER: Duration = Duration::from_secs(30);
/// Largest discovery document or JWKS read (real ones are a few KiB).
const MAX_BODY: usize = 256 * 1024;
/// Most issuers cached at once; beyond it, idle entries are dropped (a
/// refetch is their only cost).
const MAX_ISSUERS: usize = 4096;
const UNAVAILABLE: AuthError = AuthError::InvalidToken("issuer keys unavailable");

/// Per-issuer JWKS cache.
pub(super) struct JwksCache {
    client: reqwest::Client,
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    ttl: Duration,
    timeout: Duration,
    failure_ttl: Duration,
}

/// One issuer: what is known, and the turn to fetch.
#[derive(Default)]
struct Entry {
    /// Read and written briefly, never across an await.
    state: Mutex<State>,
    /// Held by the one request fetching this issuer's keys.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    keys: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
    failed: Option<Instant>,
}

/// What the cached state allows.
enum Cached {
    Use(Arc<JwkSet>),
    Unavailable,
    Fetch,
}

impl State {
    fn decide(&self, want_kid: Option<&str>, ttl: Duration, failure_ttl: Duration) -> Cached {
        if let (Some(keys), Some(at)) = (&self.keys, self.fetched) {
            let age = at.elapsed();
            let has_kid = want_kid.is_none_or(|k| keys.find(k).is_some());
            if age < ttl && (has_kid || age < REFETCH_AFTER) {
                return Cached::Use(keys.clone());
            }
        }
        if self.failed.is_some_and(|at| at.elapsed() < failure_ttl) {
            // A stale set is better than none while the issuer is down.
            return self.keys.clone().map_or(Cached::Unavailable, Cached::Use);
        }
        Cached::Fetch
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The state is always left whole (plain assignments), so a poisoned
    // lock still holds usable data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl JwksCache {
    /// A cache trusting fetched keys for `ttl`, giving a fetch `timeout`,
    /// and remembering a failure for `failure_ttl`.
    pub(super) fn new(ttl: Duration, timeout: Duration, failure_ttl: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .unwrap_or_default();
        Self {
            client,
            entries: Mutex::new(HashMap::new()),
            ttl,
            timeout,
            failure_ttl,
        }
    }

    fn entry(&self, issuer: &str) -> Arc<Entry> {
        let mut entries = lock(&self.entries);
        if let Some(entry) = entries.get(issuer) {
            return entry.clone();
        }
        if entries.len() >= MAX_ISSUERS {
            entries.retain(|_, e| Arc::strong_count(e) > 1);
        }
        if entries.len() >= MAX_ISSUERS
            && let Some(any) = entries.keys().next().cloned()
        {
            entries.remove(&any);
        }
        entries.entry(issuer.to_owned()).or_default().clone()
    }

    fn decide(&self, entry: &Entry, want_kid: Option<&str>) -> Cached {
        lock(&entry.state).decide(want_kid, self.ttl, self.failure_ttl)
    }

    /// The issuer's keys: cached ones while fresh (and, with `want_kid`
    /// missing from them, for [`REFETCH_AFTER`]), else fetched once for
    /// all concurrent callers.
    pub(super) async fn keys(
        &self,
        issuer: &str,
        want_kid: Option<&str>,
    ) -> Result<Arc<JwkSet>, AuthError> {
        let entry = self.entry(issuer);
        match self.decide(&entry, want_kid) {
            Cached::Use(keys) => return Ok(keys),
            Cached::Unavailable => return Err(UNAVAILABLE),
            Cached::Fetch => {}
        }
        // Waiting for another caller's fetch of this issuer takes at most
        // about that fetch's own timeout.
        let Ok(_turn) = tokio::time::timeout(self.timeout, entry.fetching.lock()).await else {
            return lock(&entry.state).keys.clone().ok_or(UNAVAILABLE);
        };
        // The fetch this caller waited for may have settled it.
        match self.decide(&entry, want_kid) {
            Cached::Use(keys) => return Ok(keys),
            Cached::Unavailable => return Err(UNAVAILABLE),
            Cached::Fetch => {}
        }
        let outcome = match tokio::time::timeout(self.timeout, self.fetch(issuer)).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
        };
        let mut state = lock(&entry.state);
        match outcome {
            Ok(set) => {
                let keys = Arc::new(set);
                state.keys = Some(keys.clone());
                state.fetched = Some(Instant::now());
                state.failed = None;
                Ok(keys)
            }
            Err(error) => {
                tracing::warn!(
                    issuer,
                    error,
                    retry_after_secs = self.failure_ttl.as_secs(),
                    "fetching the issuer's JWKS failed"
                );
                state.failed = Some(Instant::now());
                state.keys.clone().ok_or(UNAVAILABLE)
            }
        }
    }

    async fn fetch(&self, issuer: &str) -> Result<JwkSet, String> {
        let discovery = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.get_json(&discovery, "discovery document").await?;
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
            .ok_or("the discovery document has no http(s) jwks_uri")?;
        let set = self.get_json(jwks_uri, "JWKS").await?;
        serde_json::from_value(set).map_err(|e| format!("JWKS: {e}"))
    }

    /// GETs `url` as JSON, reading at most [`MAX_BODY`] bytes.
    async fn get_json(&self, url: &str, what: &str) -> Result<Value, String> {
        let failed = |e: reqwest::Error| format!("{what}: {}", e.without_url());
        let mut resp = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(failed)?;
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(failed)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(format!("{what}: larger than {MAX_BODY} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{what}: not JSON ({e})"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A listener that accepts connections and never answers; counts them.
    async fn black_hole() -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn one_fetch_for_concurrent_callers_then_the_failure_is_remembered() {
        let (issuer, accepted) = black_hole().await;
        let cache = Arc::new(JwksCache::new(
            Duration::from_secs(600),
            Duration::from_millis(300),
            Duration::from_secs(60),
        ));
        let started = Instant::now();
        let calls: Vec<_> = (0..5)
            .map(|_| {
                let cache = cache.clone();
                let issuer = issuer.clone();
                tokio::spawn(async move { cache.keys(&issuer, Some("k")).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.expect("join").err(), Some(UNAVAILABLE));
        }
        assert!(started.elapsed() < Duration::from_secs(3), "bounded");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "single flight");
        // Remembered: refused at once, with no new connection.
        let again = Instant::now();
        assert_eq!(cache.keys(&issuer, None).await.err(), Some(UNAVAILABLE));
        assert!(again.elapsed() < Duration::from_millis(100));
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }
}
