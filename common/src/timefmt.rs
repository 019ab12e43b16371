//! Go time layouts used on the wire and in the console, always UTC.

pub use time::OffsetDateTime;

/// `2006-01-02T15:04:05Z07:00` for a UTC time: `2026-11-22T07:26:19Z`.
pub fn rfc3339_secs(t: OffsetDateTime) -> String {
    let _ = t;
    todo!()
}

/// Go's RFC3339Nano with trailing zeros of the fraction trimmed (and no `.` when it is 0):
/// `2026-11-22T07:26:24.24956739Z`.
pub fn rfc3339_nano(t: OffsetDateTime) -> String {
    let _ = t;
    todo!()
}

/// Parses any RFC3339 time (with or without fraction, any offset) into UTC.
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    let _ = s;
    todo!()
}

/// Now, in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}
