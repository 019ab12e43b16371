//! The one validator every archive path goes through before any filesystem call.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

const MAX_PATH_BYTES: usize = 4096;
const MAX_DEPTH: usize = 256;

/// Splits a tar entry name into the components it names beneath the unpack root.
///
/// Empty and `.` components are dropped (`./a//b` is `a/b`). An absolute name or any `..`
/// component is refused outright rather than cleaned: the original joined `../x` onto the root
/// and wrote outside it (deploy-tools A1), and a legitimate layer never needs either.
pub(crate) fn enclosed_components(name: &[u8]) -> Result<Vec<OsString>, &'static str> {
    // Linux's PATH_MAX, and a depth no real tree reaches: every entry costs one `openat` per
    // component, so these bound the work a hostile name can cause.
    if name.len() > MAX_PATH_BYTES {
        return Err("path longer than 4096 bytes");
    }
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
    if out.len() > MAX_DEPTH {
        return Err("path deeper than 256 directories");
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
        let deep = "d/".repeat(257);
        assert_eq!(
            enclosed_components(deep.as_bytes()),
            Err("path deeper than 256 directories")
        );
        assert_eq!(
            enclosed_components("d/".repeat(256).as_bytes()).map(|c| c.len()),
            Ok(256)
        );
        assert_eq!(
            enclosed_components(&[b'x'; 4097]),
            Err("path longer than 4096 bytes")
        );
        for (input, want) in table {
            let got = enclosed_components(input.as_bytes()).ok();
            let want: Option<Vec<OsString>> = want.map(|w| w.iter().map(OsString::from).collect());
            assert_eq!(got, want, "input {input:?}");
        }
    }
}
