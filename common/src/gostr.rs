//! Go's `%q` (`strconv.Quote`).

mod isprint;

/// Go 1.19's `strconv.IsPrint`: letters, marks, numbers, punctuation, symbols and U+0020.
pub fn is_print(c: char) -> bool {
    let c = u32::from(c);
    let i = isprint::PRINTABLE.partition_point(|&(_, hi)| hi < c);
    isprint::PRINTABLE.get(i).is_some_and(|&(lo, _)| lo <= c)
}

/// `strconv.Quote(s)`: double quotes, `\"` `\\` `\n` `\t` ..., non-printables as `\x..`/`\u....`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_just_quoted() {
        assert_eq!(quote("project1"), r#""project1""#);
        assert_eq!(quote(""), r#""""#);
    }

    #[test]
    fn quotes_and_backslashes_escaped() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("it's"), r#""it's""#);
    }

    #[test]
    fn short_escapes() {
        assert_eq!(quote("\u{7}\u{8}\u{c}\n\r\t\u{b}"), r#""\a\b\f\n\r\t\v""#);
    }

    #[test]
    fn other_ascii_controls_as_hex() {
        assert_eq!(quote("\u{0}\u{1b}\u{7f}"), r#""\x00\x1b\x7f""#);
    }

    #[test]
    fn printable_unicode_kept() {
        assert_eq!(quote("héllo ✓ 日本 😀"), "\"héllo ✓ 日本 😀\"");
    }

    #[test]
    fn non_printable_unicode_escaped() {
        // NBSP, soft hyphen, C1 control, zero-width space, line separator, BOM: not printable in Go.
        assert_eq!(
            quote("\u{a0}\u{ad}\u{85}\u{200b}\u{2028}\u{feff}"),
            r#""\u00a0\u00ad\u0085\u200b\u2028\ufeff""#
        );
        // Private use and unassigned planes.
        assert_eq!(
            quote("\u{e000}\u{f0000}\u{10ffff}"),
            r#""\ue000\U000f0000\U0010ffff""#
        );
    }

    #[test]
    fn is_print_table_edges() {
        assert!(is_print(' '));
        assert!(is_print('~'));
        assert!(!is_print('\u{7f}'));
        assert!(is_print('\u{a1}'));
        assert!(!is_print('\u{ad}'));
        assert!(is_print('\u{e01ef}'));
        assert!(!is_print('\u{e01f0}'));
    }
}
