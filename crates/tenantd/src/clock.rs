//! Timestamps: RFC 3339 UTC with a fixed width (microseconds), so stored
//! text sorts in time order.

use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use time::macros::format_description;

const FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Formats `at` (converted to UTC).
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

/// Now, formatted.
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// Now, as unix milliseconds (lease deadlines, key validity windows).
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// Unix milliseconds of a stored RFC 3339 time; `None` if unreadable.
pub fn parse_ms(text: &str) -> Option<i64> {
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Formats unix milliseconds (now, if out of range).
pub fn rfc3339_from_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map(rfc3339)
        .unwrap_or_else(|_| now_rfc3339())
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_width_utc() {
        let at = time::macros::datetime!(2026-01-02 03:04:05.5 +02:00);
        assert_eq!(super::rfc3339(at), "2026-01-02T01:04:05.500000Z");
        let ms = super::parse_ms("2026-01-02T01:04:05.500000Z").expect("parses");
        assert_eq!(super::rfc3339_from_ms(ms), "2026-01-02T01:04:05.500000Z");
    }
}
