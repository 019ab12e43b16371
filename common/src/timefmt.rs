//! Go time layouts used on the wire and in the console, always UTC.

pub use time::OffsetDateTime;
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

fn utc(t: OffsetDateTime) -> OffsetDateTime {
    // Out of the representable range only at the very ends of the calendar: keep the
    // original offset's wall clock then rather than panic.
    t.checked_to_offset(UtcOffset::UTC).unwrap_or(t)
}

/// Go writes years with at least 4 digits and a leading `-` for negative ones.
fn push_date_time(out: &mut String, t: OffsetDateTime) {
    let y = t.year();
    if y < 0 {
        out.push('-');
    }
    out.push_str(&format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        y.unsigned_abs(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ));
}

/// `2006-01-02T15:04:05Z07:00` for a UTC time: `2026-11-22T07:26:19Z`.
pub fn rfc3339_secs(t: OffsetDateTime) -> String {
    let t = utc(t);
    let mut s = String::with_capacity(20);
    push_date_time(&mut s, t);
    s.push('Z');
    s
}

/// slog's text handler time, RFC 3339 with milliseconds: `2026-11-22T07:26:24.249Z`.
pub fn rfc3339_millis(t: OffsetDateTime) -> String {
    let t = utc(t);
    let mut s = String::with_capacity(24);
    push_date_time(&mut s, t);
    s.push_str(&format!(".{:03}Z", t.millisecond()));
    s
}

/// Go's RFC3339Nano with trailing zeros of the fraction trimmed (and no `.` when it is 0):
/// `2026-11-22T07:26:24.24956739Z`.
pub fn rfc3339_nano(t: OffsetDateTime) -> String {
    let t = utc(t);
    let mut s = String::with_capacity(30);
    push_date_time(&mut s, t);
    let ns = t.nanosecond();
    if ns != 0 {
        let frac = format!("{ns:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// A cursor over the ASCII text of a timestamp.
struct Cursor<'a> {
    s: &'a [u8],
}

impl Cursor<'_> {
    fn expect(&mut self, c: u8) -> Option<()> {
        let (&first, rest) = self.s.split_first()?;
        if first != c {
            return None;
        }
        self.s = rest;
        Some(())
    }
    /// Exactly `n` decimal digits.
    fn fixed(&mut self, n: usize) -> Option<u32> {
        if self.s.len() < n || !self.s[..n].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = self.s[..n]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'));
        self.s = &self.s[n..];
        Some(v)
    }
    /// One or two digits, as Go 1.19's `getnum(value, false)` accepts for the hour.
    fn one_or_two(&mut self) -> Option<u32> {
        match self.s {
            [a, b, ..] if a.is_ascii_digit() && b.is_ascii_digit() => self.fixed(2),
            [a, ..] if a.is_ascii_digit() => self.fixed(1),
            _ => None,
        }
    }
}

/// Parses any RFC3339 time (with or without fraction, any offset) into UTC.
///
/// Accepts what Go 1.19's `time.Parse(time.RFC3339, s)` accepts for well-formed input: a `.`
/// or `,` fraction of any length (digits past the ninth are dropped), a one-digit hour, `Z` or
/// `±hh:mm`. Like Go ≥ 1.20 it refuses Go 1.19's accidents: offsets past ±25:59, signs inside
/// the offset (`++2:00`), and a fraction without seconds digits (`07:26:.9Z`).
pub fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    let mut c = Cursor { s: s.as_bytes() };
    let year = c.fixed(4)?;
    c.expect(b'-')?;
    let month = c.fixed(2)?;
    c.expect(b'-')?;
    let day = c.fixed(2)?;
    c.expect(b'T')?;
    let hour = c.one_or_two()?;
    c.expect(b':')?;
    let minute = c.fixed(2)?;
    c.expect(b':')?;
    let second = c.fixed(2)?;
    let mut nanos = 0u32;
    if let [b'.' | b',', d, ..] = c.s
        && d.is_ascii_digit()
    {
        c.s = &c.s[1..];
        let digits = c.s.iter().take_while(|b| b.is_ascii_digit()).count();
        let mut scale = 100_000_000u32;
        for &d in &c.s[..digits.min(9)] {
            nanos += u32::from(d - b'0') * scale;
            scale /= 10;
        }
        c.s = &c.s[digits..];
    }
    let offset_secs: i32 = match c.s.first()? {
        b'Z' => {
            c.s = &c.s[1..];
            0
        }
        sign @ (b'+' | b'-') => {
            let negative = *sign == b'-';
            c.s = &c.s[1..];
            let hh = c.fixed(2)?;
            c.expect(b':')?;
            let mm = c.fixed(2)?;
            let secs = i32::try_from(hh * 3600 + mm * 60).ok()?;
            if negative { -secs } else { secs }
        }
        _ => return None,
    };
    if !c.s.is_empty() {
        return None;
    }
    let month = Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?).ok()?;
    let time = Time::from_hms_nano(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    let offset = UtcOffset::from_whole_seconds(offset_secs).ok()?;
    PrimitiveDateTime::new(date, time)
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)
}

/// Now, in UTC.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn secs_layout() {
        assert_eq!(
            rfc3339_secs(datetime!(2026-11-22 07:26:19.817675717 UTC)),
            "2026-11-22T07:26:19Z"
        );
    }

    #[test]
    fn secs_converts_to_utc() {
        assert_eq!(
            rfc3339_secs(datetime!(2026-11-22 09:26:19 +02:00)),
            "2026-11-22T07:26:19Z"
        );
    }

    #[test]
    fn nano_trims_trailing_zeros() {
        assert_eq!(
            rfc3339_nano(datetime!(2026-11-22 07:26:24.249567390 UTC)),
            "2026-11-22T07:26:24.24956739Z"
        );
        assert_eq!(
            rfc3339_nano(datetime!(2026-11-22 07:26:24.5 UTC)),
            "2026-11-22T07:26:24.5Z"
        );
        assert_eq!(
            rfc3339_nano(datetime!(2026-11-22 07:26:24.000000001 UTC)),
            "2026-11-22T07:26:24.000000001Z"
        );
    }

    #[test]
    fn nano_without_fraction_has_no_dot() {
        assert_eq!(
            rfc3339_nano(datetime!(2026-11-22 07:26:24 UTC)),
            "2026-11-22T07:26:24Z"
        );
    }

    #[test]
    fn go_zero_time() {
        assert_eq!(
            rfc3339_nano(datetime!(0001-01-01 00:00:00 UTC)),
            "0001-01-01T00:00:00Z"
        );
    }

    #[test]
    fn millis_keep_three_digits() {
        let t = |s| rfc3339_millis(parse_rfc3339(s).unwrap());
        assert_eq!(
            t("2026-11-22T07:26:29.184481867Z"),
            "2026-11-22T07:26:29.184Z"
        );
        assert_eq!(t("2026-11-22T07:26:19Z"), "2026-11-22T07:26:19.000Z");
        assert_eq!(
            t("2026-11-22T09:26:19.05+02:00"),
            "2026-11-22T07:26:19.050Z"
        );
    }

    #[test]
    fn parse_round_trips_nano() {
        for s in [
            "2026-11-22T07:26:29.184481867Z",
            "2026-11-22T07:26:19Z",
            "0001-01-01T00:00:00Z",
        ] {
            assert_eq!(rfc3339_nano(parse_rfc3339(s).unwrap()), s);
        }
    }

    #[test]
    fn parse_offsets_into_utc() {
        let t = parse_rfc3339("2026-11-22T09:26:19.5+02:00").unwrap();
        assert_eq!(rfc3339_nano(t), "2026-11-22T07:26:19.5Z");
        assert_eq!(t.offset(), UtcOffset::UTC);
        let t = parse_rfc3339("2026-11-21T23:00:00-08:30").unwrap();
        assert_eq!(rfc3339_secs(t), "2026-11-22T07:30:00Z");
    }

    #[test]
    fn parse_drops_digits_past_nanoseconds_and_accepts_comma() {
        let t = parse_rfc3339("2026-11-22T07:26:19.1234567899Z").unwrap();
        assert_eq!(t.nanosecond(), 123_456_789);
        let t = parse_rfc3339("2026-11-22T07:26:19,5Z").unwrap();
        assert_eq!(t.nanosecond(), 500_000_000);
    }

    #[test]
    fn parse_refuses_malformed() {
        for s in [
            "",
            "2026-11-22",
            "2026-11-22 07:26:19Z",
            "2026-11-22T07:26:19",
            "2026-13-22T07:26:19Z",
            "2026-02-30T07:26:19Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T07:60:00Z",
            "2026-11-22T07:26:60Z",
            "2026-11-22T07:26:19Zjunk",
            "2026-11-22T07:26:19.Z",
            "2026-11-22T07:26:19+0200",
            "26-11-22T07:26:19Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?}");
        }
    }
}
