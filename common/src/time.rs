//! Timestamps: stored as Unix milliseconds in both dialects, formatted at the edge.

use time::{OffsetDateTime, format_description::FormatItem, macros::format_description};

const SQL_DATETIME: &[FormatItem<'static>] = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
const ISO_DATETIME: &[FormatItem<'static>] = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, as the ClawXmtp family shows times.
pub fn format_sql_datetime(ms: i64) -> String {
    datetime(ms).format(SQL_DATETIME).unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC.
pub fn format_iso_datetime(ms: i64) -> String {
    datetime(ms).format(ISO_DATETIME).unwrap_or_default()
}

/// RFC 3339 with a `Z` suffix, whole seconds.
pub fn format_rfc3339(ms: i64) -> String {
    format!("{}Z", format_iso_datetime(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_in_utc() {
        assert_eq!(format_sql_datetime(1_704_067_200_000), "2024-01-01 00:00:00");
        assert_eq!(format_iso_datetime(1_704_110_400_500), "2024-01-01T12:00:00");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
