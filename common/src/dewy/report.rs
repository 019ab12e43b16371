//! Identifiers a deploy reports (spec dewy.md 1.2, 4): the response ID of a registry answer
//! and the audit file a successful deploy leaves next to the artifact ("shipped to ...").
//! The audit names are read by people and scripts that watch a release's assets, so their
//! shape is part of the compatibility contract.

use time::{OffsetDateTime, UtcOffset};

/// What a deploy ran as; the audit text and the gRPC `ReportRequest.command` carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `server` mode.
    Server,
    /// `assets` mode.
    Assets,
    /// `container` mode.
    Container,
}

impl Command {
    /// The word Dewy uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Server => "server",
            Command::Assets => "assets",
            Command::Container => "container",
        }
    }
}

/// The `ID` ghr/s3/gs put in a response: `now` (the local time, with its offset) as Go's
/// `20060102T150405Z0700`, e.g. `20260719T163215+0900`, or `...Z` in UTC.
pub fn response_id(now: OffsetDateTime) -> String {
    format!("{}{}", compact(now), zone(now.offset()))
}

/// The audit text: `shipped to <lower-cased hostname> <command> at <UTC now>` with the time
/// as `20060102T150405.000000000Z0700` (always nine fraction digits, e.g.
/// `20260719T073215.123456789Z`). The ghr audit asset's body is this text.
pub fn audit_info(hostname: &str, command: Command, now: OffsetDateTime) -> String {
    let now = now.to_offset(UtcOffset::UTC);
    format!(
        "shipped to {} {} at {}.{:09}Z",
        hostname.to_lowercase(),
        command.as_str(),
        compact(now),
        now.nanosecond()
    )
}

/// The audit file's name: [`audit_info`] with spaces as `_`, plus `.txt`, e.g.
/// `shipped_to_web-01_server_at_20260719T073215.123456789Z.txt`. s3/gs write it empty at
/// `<prefix><tag>/<name>`; the `.txt` keeps automatic artifact selection away from it.
pub fn audit_file_name(info: &str) -> String {
    format!("{}.txt", info.replace(' ', "_"))
}

fn compact(t: OffsetDateTime) -> String {
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Go's `Z0700`: `Z` for UTC, else `±hhmm` (seconds of the offset dropped).
fn zone(off: UtcOffset) -> String {
    if off.is_utc() {
        return "Z".to_string();
    }
    let secs = off.whole_seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let m = secs.unsigned_abs() / 60;
    format!("{sign}{:02}{:02}", m / 60, m % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn response_ids() {
        assert_eq!(
            response_id(datetime!(2026-07-19 16:32:15.7 +09:00)),
            "20260719T163215+0900"
        );
        assert_eq!(
            response_id(datetime!(2026-07-19 07:32:15 UTC)),
            "20260719T073215Z"
        );
        assert_eq!(
            response_id(datetime!(2026-07-19 02:02:15 -05:30)),
            "20260719T020215-0530"
        );
    }

    #[test]
    fn audit_names() {
        let info = audit_info(
            "Web-01",
            Command::Server,
            datetime!(2026-07-19 16:32:15.123456789 +09:00),
        );
        assert_eq!(
            info,
            "shipped to web-01 server at 20260719T073215.123456789Z"
        );
        assert_eq!(
            audit_file_name(&info),
            "shipped_to_web-01_server_at_20260719T073215.123456789Z.txt"
        );
        let info = audit_info("h", Command::Assets, datetime!(2026-01-02 03:04:05 UTC));
        assert_eq!(info, "shipped to h assets at 20260102T030405.000000000Z");
        assert_eq!(Command::Container.as_str(), "container");
        assert!(!super::super::artifact::is_archive(&audit_file_name(&info)));
    }
}
