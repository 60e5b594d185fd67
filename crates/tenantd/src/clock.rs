//! Time: the one injected clock, and timestamps as RFC 3339 UTC text with
//! a fixed width (microseconds), so stored text sorts in time order.
//!
//! Every wall-clock reading of the server goes through a [`Clock`] handed
//! down from [`crate::server::Server::build_with_clock`]: the store, the
//! registry, key validity, jobs, usage, audit and the rate limiter read the
//! same clock, so a test moves time with a `ManualClock` instead of
//! sleeping (see `docs/architecture.md`, "Time").

use std::sync::Arc;

use tenancy::ratelimit::{Clock as ClockSource, SystemClock};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// The process's clock: cheap to clone, shared by every component.
#[derive(Clone)]
pub struct Clock(Arc<dyn ClockSource>);

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Clock").field(&self.now_ms()).finish()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Self {
        Self(Arc::new(SystemClock))
    }

    /// A clock reading `source` (a `ManualClock` in tests).
    pub fn new(source: Arc<dyn ClockSource>) -> Self {
        Self(source)
    }

    /// The source, for the rate limiter (which takes the library's trait).
    pub fn source(&self) -> Arc<dyn ClockSource> {
        self.0.clone()
    }

    /// Now, as unix milliseconds.
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.0.now_ms()).unwrap_or(i64::MAX)
    }

    /// Now, formatted as stored.
    pub fn now_rfc3339(&self) -> String {
        rfc3339_from_ms(self.now_ms())
    }
}

/// Formats `at` (converted to UTC).
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Unix milliseconds of a stored RFC 3339 time; `None` if unreadable.
pub fn parse_ms(text: &str) -> Option<i64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats unix milliseconds (the epoch, if out of range).
pub fn rfc3339_from_ms(ms: i64) -> String {
    rfc3339(utc_of_ms(ms))
}

fn utc_of_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The UTC calendar month of unix milliseconds, `YYYY-MM` (usage months).
pub fn month_of_ms(ms: i64) -> String {
    let at = utc_of_ms(ms);
    format!("{:04}-{:02}", at.year(), u8::from(at.month()))
}

/// The UTC day of unix milliseconds, `YYYY-MM-DD`.
pub fn day_of_ms(ms: i64) -> String {
    let at = utc_of_ms(ms);
    format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    )
}

/// Checks a `YYYY-MM` month; `None` if it is not one.
pub fn parse_month(text: &str) -> Option<(i32, u8)> {
    let (y, m) = text.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let year: i32 = y.parse().ok()?;
    let month: u8 = m.parse().ok()?;
    (1..=12).contains(&month).then_some((year, month))
}

/// Checks a `YYYY-MM-DD` day; `None` if it is not a real date.
pub fn parse_day(text: &str) -> Option<time::Date> {
    time::Date::parse(text, format_description!("[year]-[month]-[day]")).ok()
}

/// The month before `YYYY-MM`.
pub fn previous_month(month: &str) -> Option<String> {
    let (year, m) = parse_month(month)?;
    Some(if m == 1 {
        format!("{:04}-12", year - 1)
    } else {
        format!("{year:04}-{:02}", m - 1)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn months_and_days() {
        let ms = super::parse_ms("2026-01-31T23:59:59.999000Z").expect("parses");
        assert_eq!(super::month_of_ms(ms), "2026-01");
        assert_eq!(super::day_of_ms(ms), "2026-01-31");
        assert_eq!(super::month_of_ms(ms + 1), "2026-02");
        assert_eq!(super::previous_month("2026-01").as_deref(), Some("2025-12"));
        assert_eq!(super::previous_month("2026-11").as_deref(), Some("2026-10"));
        assert!(super::parse_month("2026-13").is_none());
        assert!(super::parse_month("2026-1").is_none());
        assert!(super::parse_day("2026-02-30").is_none());
        assert!(super::parse_day("2026-02-28").is_some());
    }

    #[test]
    fn fixed_width_utc() {
        let at = time::macros::datetime!(2026-01-02 03:04:05.5 +02:00);
        assert_eq!(super::rfc3339(at), "2026-01-02T01:04:05.500000Z");
        let ms = super::parse_ms("2026-01-02T01:04:05.500000Z").expect("parses");
        assert_eq!(super::rfc3339_from_ms(ms), "2026-01-02T01:04:05.500000Z");
    }
}
