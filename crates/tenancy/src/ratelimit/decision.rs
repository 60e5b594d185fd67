//! [`Decision`]: what a check decided, per window, and its HTTP headers.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::Subject;
use super::window::{self, Counts, Window};

/// State of one window after a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowState {
    /// Whose budget the window counts.
    pub subject: Subject,
    /// The window.
    pub window: Window,
    /// Requests still admitted now (after counting this one, if admitted).
    pub remaining: u64,
    /// Seconds until the window's count resets (next fixed-window boundary).
    pub reset_secs: u64,
}

/// Result of a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request was admitted (and counted).
    pub allowed: bool,
    /// Every window of every bucket, in the order the buckets listed them.
    pub windows: Vec<WindowState>,
    /// 0 when allowed; else whole seconds (>= 1) until a request would be
    /// admitted, if no other request arrives meanwhile.
    pub retry_after_secs: u64,
}

/// One window's counts as read by a store, before this request.
#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub subject: Subject,
    pub window: Window,
    pub counts: Counts,
}

/// True when every slot admits one more request.
pub(crate) fn admits_all(slots: &[Slot], now_ms: u64) -> bool {
    slots
        .iter()
        .all(|s| window::admits(&s.window, s.counts, now_ms))
}

impl Decision {
    /// The decision for counts read before this request; `allowed` says
    /// whether the store counted it (each distinct counter once, so every
    /// slot's current count grew by one).
    pub(crate) fn build(slots: Vec<Slot>, now_ms: u64, allowed: bool) -> Self {
        let retry_ms = if allowed {
            0
        } else {
            slots
                .iter()
                .map(|s| window::wait_ms(&s.window, s.counts, now_ms))
                .max()
                .unwrap_or(0)
        };
        let windows = slots
            .into_iter()
            .map(|s| {
                let mut counts = s.counts;
                if allowed {
                    counts.curr = counts.curr.saturating_add(1);
                }
                WindowState {
                    remaining: window::remaining(&s.window, counts, now_ms),
                    reset_secs: window::reset_secs(&s.window, now_ms),
                    window: s.window,
                    subject: s.subject,
                }
            })
            .collect();
        Self {
            allowed,
            windows,
            retry_after_secs: if allowed {
                0
            } else {
                retry_ms.div_ceil(1_000).max(1)
            },
        }
    }

    /// The window with the fewest remaining requests (ties: the shorter
    /// period, then the first listed).
    pub fn tightest(&self) -> Option<&WindowState> {
        self.windows
            .iter()
            .min_by_key(|w| (w.remaining, w.window.period_ms()))
    }

    /// Sets `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
    /// `X-RateLimit-Reset` (Unix epoch seconds) for the tightest window, the
    /// draft-ietf-httpapi-ratelimit-headers fields `RateLimit-Policy` (every
    /// window, e.g. `"minute";q=100;w=60, "hour";q=1000;w=3600`) and
    /// `RateLimit` (the tightest, e.g. `"minute";r=42;t=17`), and
    /// `Retry-After` when denied. Windows of an API key's own bucket are
    /// named with a `key-` prefix (`"key-minute"`); the key id is not sent.
    /// Without windows nothing is set.
    pub fn apply_headers(&self, headers: &mut HeaderMap, now_ms: u64) {
        let Some(tight) = self.tightest() else {
            return;
        };
        use std::fmt::Write as _;
        let reset_at = (now_ms / 1_000).saturating_add(tight.reset_secs);
        // Built with one buffer each (this runs on every limited request).
        let mut policy = String::with_capacity(32 * self.windows.len());
        for (i, w) in self.windows.iter().enumerate() {
            if i > 0 {
                policy.push_str(", ");
            }
            let _ = write!(
                policy,
                "\"{}\";q={};w={}",
                PolicyName(w),
                w.window.limit,
                w.window.period_ms() / 1_000
            );
        }
        let mut current = String::with_capacity(32);
        let _ = write!(
            current,
            "\"{}\";r={};t={}",
            PolicyName(tight),
            tight.remaining,
            tight.reset_secs
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(tight.window.limit),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(tight.remaining),
        );
        headers.insert(
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from(reset_at),
        );
        set(headers, "ratelimit-policy", policy);
        set(headers, "ratelimit", current);
        if !self.allowed {
            headers.insert(
                HeaderName::from_static("retry-after"),
                HeaderValue::from(self.retry_after_secs),
            );
        }
    }
}

/// The window's name in the IETF fields: `minute`, or `key-minute` for an
/// API key's own bucket (the key id is not sent).
struct PolicyName<'a>(&'a WindowState);

impl std::fmt::Display for PolicyName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if matches!(self.0.subject, Subject::Key(_)) {
            f.write_str("key-")?;
        }
        f.write_str(&self.0.window.token())
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: String) {
    // Every value is built from digits, ASCII names and punctuation, so it is
    // always a valid header value; a failure would only drop the header.
    if let Ok(value) = HeaderValue::try_from(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}
