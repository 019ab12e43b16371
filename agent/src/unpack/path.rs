//! The one validator every archive path goes through before any filesystem call.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// Splits a tar entry name into the components it names beneath the unpack root.
///
/// Empty and `.` components are dropped (`./a//b` is `a/b`). An absolute name or any `..`
/// component is refused outright rather than cleaned: the original joined `../x` onto the root
/// and wrote outside it (deploy-tools A1), and a legitimate layer never needs either.
pub(crate) fn enclosed_components(name: &[u8]) -> Result<Vec<OsString>, &'static str> {
    if name.starts_with(b"/") {
        return Err("absolute paths are not allowed");
    }
    let mut out = Vec::new();
    for part in name.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("paths with '..' are not allowed"),
            _ if part.contains(&0) => return Err("NUL byte in path"),
            _ => out.push(OsString::from_vec(part.to_vec())),
        }
    }
    Ok(out)
}

/// Printable form of a raw entry name for error messages (invalid UTF-8 becomes U+FFFD).
pub(crate) fn display_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_and_benign_names() {
        let table: &[(&str, Option<&[&str]>)] = &[
            ("a/b.txt", Some(&["a", "b.txt"])),
            ("./a//b/", Some(&["a", "b"])),
            ("./", Some(&[])),
            ("a/./b", Some(&["a", "b"])),
            ("../escaped.txt", None),
            ("a/../../x", None),
            ("a/../b", None),
            ("..", None),
            ("/abs.txt", None),
            ("//etc/passwd", None),
            ("...", Some(&["..."])),
            ("..a/b..", Some(&["..a", "b.."])),
        ];
        for (input, want) in table {
            let got = enclosed_components(input.as_bytes()).ok();
            let want: Option<Vec<OsString>> = want.map(|w| w.iter().map(OsString::from).collect());
            assert_eq!(got, want, "input {input:?}");
        }
    }
}
