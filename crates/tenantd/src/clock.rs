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

#[cfg(test)]
mod tests {
    #[test]
    fn fixed_width_utc() {
        let at = time::macros::datetime!(2026-01-02 03:04:05.5 +02:00);
        assert_eq!(super::rfc3339(at), "2026-01-02T01:04:05.500000Z");
    }
}
