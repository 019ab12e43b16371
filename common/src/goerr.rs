//! Go's texts for OS errors, which the original's messages embed (`open x: no such file or
//! directory`, `dial tcp a: connection refused`) and scripts grep for.

/// The text Go prints for `e`: Rust's description without its ` (os error N)` suffix, first
/// letter lower-cased (`No such file or directory` → `no such file or directory`).
pub fn errno_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    let s = match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    };
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Error;

    #[test]
    fn os_errors_read_as_go_prints_them() {
        assert_eq!(
            errno_text(&Error::from_raw_os_error(2)),
            "no such file or directory"
        );
        assert_eq!(
            errno_text(&Error::from_raw_os_error(111)),
            "connection refused"
        );
        assert_eq!(errno_text(&Error::other("Boom")), "boom");
        assert_eq!(errno_text(&Error::other("")), "");
    }
}
