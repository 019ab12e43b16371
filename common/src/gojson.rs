//! JSON bytes as Go's `encoding/json` produces them: HTML-safe escaping (`<`, `>`, `&`,
//! U+2028, U+2029 as `\u....`), and `json.Encoder.SetIndent("", "\t")` layout with a trailing newline.

use std::io::{self, Write};

use serde_json::ser::{CharEscape, CompactFormatter, Formatter, PrettyFormatter};

/// Wraps a serde_json formatter and changes only string escaping, to Go 1.19's rules:
/// `\"`, `\\`, `\n`, `\r`, `\t`, every other control byte as `\u00xx` (Go 1.19 has no `\b`/`\f`),
/// and `<`, `>`, `&`, U+2028, U+2029 as `\u....`.
struct GoEscapes<F>(F);

const HEX: &[u8; 16] = b"0123456789abcdef";

impl<F: Formatter> Formatter for GoEscapes<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            let esc: &[u8] = match ch {
                '<' => b"\\u003c",
                '>' => b"\\u003e",
                '&' => b"\\u0026",
                '\u{2028}' => b"\\u2028",
                '\u{2029}' => b"\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc)?;
            start = i + ch.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }

    fn write_char_escape<W: ?Sized + Write>(
        &mut self,
        w: &mut W,
        escape: CharEscape,
    ) -> io::Result<()> {
        let byte = match escape {
            CharEscape::Quote => return w.write_all(b"\\\""),
            CharEscape::ReverseSolidus => return w.write_all(b"\\\\"),
            CharEscape::LineFeed => return w.write_all(b"\\n"),
            CharEscape::CarriageReturn => return w.write_all(b"\\r"),
            CharEscape::Tab => return w.write_all(b"\\t"),
            CharEscape::Solidus => b'/',
            CharEscape::Backspace => 0x08,
            CharEscape::FormFeed => 0x0c,
            CharEscape::AsciiControl(b) => b,
        };
        if byte == b'/' {
            return w.write_all(b"/");
        }
        w.write_all(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ])
    }

    // Everything else is delegated unchanged.
    fn write_null<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.write_null(w)
    }
    fn write_bool<W: ?Sized + Write>(&mut self, w: &mut W, v: bool) -> io::Result<()> {
        self.0.write_bool(w, v)
    }
    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

fn write<T: serde::Serialize, F: Formatter>(value: &T, formatter: F) -> String {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoEscapes(formatter));
    // Our callers serialize plain structs of strings, times and vectors, which cannot fail;
    // should a caller pass a map with non-string keys, the JSON written so far is returned.
    let _ = value.serialize(&mut ser);
    // serde_json writes only valid UTF-8, and our escapes are ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Serializes `value` the way `json.NewEncoder(w); enc.SetIndent("", "\t"); enc.Encode(v)` does.
pub fn to_indented<T: serde::Serialize>(value: &T) -> String {
    let mut s = write(value, PrettyFormatter::with_indent(b"\t"));
    s.push('\n');
    s
}

/// Serializes `value` the way `json.Marshal` does (compact, HTML-safe escaping, no newline).
pub fn to_compact<T: serde::Serialize>(value: &T) -> String {
    write(value, CompactFormatter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn html_characters_escaped_as_go() {
        assert_eq!(to_compact(&"a<b>&c"), r#""a\u003cb\u003e\u0026c""#);
    }

    #[test]
    fn line_and_paragraph_separators_escaped() {
        assert_eq!(to_compact(&"x\u{2028}y\u{2029}z"), r#""x\u2028y\u2029z""#);
    }

    #[test]
    fn control_characters_as_go_1_19() {
        assert_eq!(
            to_compact(&"\"\\\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}/"),
            "\"\\\"\\\\\\n\\r\\t\\u0008\\u000c\\u0001\\u001f\u{7f}/\""
        );
    }

    #[test]
    fn non_ascii_kept_as_is() {
        assert_eq!(to_compact(&"héllo ✓ 😀"), "\"héllo ✓ 😀\"");
    }

    #[test]
    fn indented_layout_uses_tabs_and_trailing_newline() {
        let v = json!({"A": "x", "B": [1, {"C": []}], "D": {}});
        assert_eq!(
            to_indented(&v),
            "{\n\t\"A\": \"x\",\n\t\"B\": [\n\t\t1,\n\t\t{\n\t\t\t\"C\": []\n\t\t}\n\t],\n\t\"D\": {}\n}\n"
        );
    }

    #[test]
    fn compact_has_no_whitespace() {
        assert_eq!(
            to_compact(&json!({"A": ["x", null, true]})),
            r#"{"A":["x",null,true]}"#
        );
    }
}
