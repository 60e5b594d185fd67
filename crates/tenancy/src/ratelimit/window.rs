//! [`Window`] and the sliding-window-counter arithmetic that every store
//! shares, so the memory and Redis backends decide identically.
//!
//! A window of `P` ms keeps two fixed-window counts: `curr` for the window
//! `now / P` and `prev` for the one before. With `e = now % P` elapsed in the
//! current window, the estimate of requests in the last `P` ms is
//!
//! ```text
//! estimate = prev * (P - e) / P + curr
//! ```
//!
//! and a request is admitted when `estimate + 1 <= limit`. The comparison is
//! done in integers, multiplied through by `P` (`prev * (P - e) + (curr + 1)
//! * P <= limit * P`), so there is no rounding.

use serde::{Deserialize, Serialize};

/// At most `limit` requests per `period_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Length of the window, in seconds. A zero period is treated as one
    /// second (it cannot be a divisor).
    pub period_secs: u64,
    /// Requests admitted per window. Zero admits nothing.
    pub limit: u64,
}

impl Window {
    /// `limit` requests per 60 seconds.
    pub const fn per_minute(limit: u64) -> Self {
        Self {
            period_secs: 60,
            limit,
        }
    }

    /// `limit` requests per 3,600 seconds.
    pub const fn per_hour(limit: u64) -> Self {
        Self {
            period_secs: 3_600,
            limit,
        }
    }

    /// `limit` requests per 86,400 seconds.
    pub const fn per_day(limit: u64) -> Self {
        Self {
            period_secs: 86_400,
            limit,
        }
    }

    /// The period in milliseconds (at least 1,000).
    pub const fn period_ms(&self) -> u64 {
        let secs = if self.period_secs == 0 {
            1
        } else {
            self.period_secs
        };
        secs.saturating_mul(1_000)
    }

    /// Index of the fixed window that contains `now_ms`.
    pub const fn index(&self, now_ms: u64) -> u64 {
        now_ms / self.period_ms()
    }

    /// Human name of the period: `minute`, `hour`, `day`, or `N seconds`.
    pub fn name(&self) -> String {
        match self.period_ms() / 1_000 {
            1 => "second".to_owned(),
            60 => "minute".to_owned(),
            3_600 => "hour".to_owned(),
            86_400 => "day".to_owned(),
            secs => format!("{secs} seconds"),
        }
    }

    /// Short token for headers: `minute`, `hour`, `day`, or `Ns`.
    pub(crate) fn token(&self) -> std::borrow::Cow<'static, str> {
        match self.period_ms() / 1_000 {
            1 => "second".into(),
            60 => "minute".into(),
            3_600 => "hour".into(),
            86_400 => "day".into(),
            secs => format!("{secs}s").into(),
        }
    }
}

/// The two fixed-window counts of one window, as read at `now_ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Requests counted in the current fixed window.
    pub curr: u64,
    /// Requests counted in the fixed window before it.
    pub prev: u64,
}

/// `P - e`: milliseconds left in the current fixed window (1..=P).
fn left_ms(window: &Window, now_ms: u64) -> u64 {
    let period = window.period_ms();
    period - now_ms % period
}

/// `estimate * P`, exact.
fn scaled_estimate(window: &Window, counts: Counts, now_ms: u64) -> u128 {
    let period = u128::from(window.period_ms());
    u128::from(counts.prev)
        .saturating_mul(u128::from(left_ms(window, now_ms)))
        .saturating_add(u128::from(counts.curr).saturating_mul(period))
}

/// True when one more request fits: `estimate + 1 <= limit`.
pub(crate) fn admits(window: &Window, counts: Counts, now_ms: u64) -> bool {
    let period = u128::from(window.period_ms());
    scaled_estimate(window, counts, now_ms).saturating_add(period)
        <= u128::from(window.limit).saturating_mul(period)
}

/// `floor(limit - estimate)`, at least 0.
pub(crate) fn remaining(window: &Window, counts: Counts, now_ms: u64) -> u64 {
    let period = u128::from(window.period_ms());
    let budget = u128::from(window.limit).saturating_mul(period);
    let left = budget.saturating_sub(scaled_estimate(window, counts, now_ms)) / period;
    u64::try_from(left).unwrap_or(u64::MAX)
}

/// Whole seconds until the next fixed-window boundary (at least 1).
pub(crate) fn reset_secs(window: &Window, now_ms: u64) -> u64 {
    left_ms(window, now_ms).div_ceil(1_000)
}

/// Milliseconds from `now_ms` until a request would be admitted, assuming
/// no other request arrives meanwhile (the estimate never grows by itself).
/// Zero when one is admitted now.
pub(crate) fn wait_ms(window: &Window, counts: Counts, now_ms: u64) -> u64 {
    if admits(window, counts, now_ms) {
        return 0;
    }
    let period = u128::from(window.period_ms());
    let limit = u128::from(window.limit);
    let left = u128::from(left_ms(window, now_ms));
    let elapsed = period - left;
    let (prev, curr) = (u128::from(counts.prev), u128::from(counts.curr));
    // Still in this fixed window: need prev * (P - e') <= (limit - curr - 1) * P.
    if curr < limit && prev > 0 {
        let max_left = (limit - curr - 1).saturating_mul(period) / prev;
        // e' >= P - max_left; it is in this window when e' < P.
        let target = period - max_left.min(period);
        if target < period {
            return to_u64(target.saturating_sub(elapsed).max(1));
        }
    }
    // In the next fixed window `curr` becomes `prev` and the new count is 0:
    // need curr * (P - e2) <= (limit - 1) * P.
    let e2 = if limit == 0 {
        // Nothing is ever admitted; point at the end of the next window.
        period
    } else {
        // curr == 0: admitted at the very start of the next window.
        (limit - 1)
            .saturating_mul(period)
            .checked_div(curr)
            .map_or(0, |room| period - room.min(period))
    };
    to_u64(left.saturating_add(e2))
}

fn to_u64(ms: u128) -> u64 {
    u64::try_from(ms).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Window = Window::per_minute(10);

    #[test]
    fn estimate_weights_the_previous_window() {
        // Half-way through: 10 * 0.5 + 0 = 5 used, 5 left.
        let c = Counts { curr: 0, prev: 10 };
        assert_eq!(remaining(&MIN, c, 60_000 + 30_000), 5);
        assert!(admits(&MIN, c, 90_000));
        // Just after the boundary the previous window weighs fully.
        assert!(!admits(&MIN, c, 60_000));
    }

    #[test]
    fn wait_in_the_same_window() {
        // prev 10, curr 5 at e = 0: need 10 * (60 - e')/60 <= 4 -> e' >= 36 s.
        let c = Counts { curr: 5, prev: 10 };
        assert_eq!(wait_ms(&MIN, c, 60_000), 36_000);
        assert!(admits(&MIN, c, 60_000 + 36_000));
        assert!(!admits(&MIN, c, 60_000 + 35_999));
    }

    #[test]
    fn wait_into_the_next_window() {
        // curr 10 at e = 20 s: next window starts in 40 s, then
        // 10 * (60 - e2)/60 <= 9 -> e2 >= 6 s.
        let c = Counts { curr: 10, prev: 0 };
        let now = 60_000 + 20_000;
        assert_eq!(wait_ms(&MIN, c, now), 46_000);
        assert!(admits(&MIN, Counts { curr: 0, prev: 10 }, 120_000 + 6_000));
        assert!(!admits(&MIN, Counts { curr: 0, prev: 10 }, 120_000 + 5_999));
    }

    #[test]
    fn zero_limit_and_zero_period_do_not_panic() {
        let w = Window {
            period_secs: 0,
            limit: 0,
        };
        let c = Counts::default();
        assert!(!admits(&w, c, 12_345));
        assert!(wait_ms(&w, c, 12_345) > 0);
        assert_eq!(reset_secs(&w, 12_345), 1);
        let huge = Window {
            period_secs: u64::MAX,
            limit: u64::MAX,
        };
        let c = Counts {
            curr: u64::MAX,
            prev: u64::MAX,
        };
        let _ = (admits(&huge, c, u64::MAX), wait_ms(&huge, c, u64::MAX));
        let _ = remaining(&huge, c, u64::MAX);
    }
}
