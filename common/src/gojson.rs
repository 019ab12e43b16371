//! JSON bytes as Go's `encoding/json` produces them: HTML-safe escaping (`<`, `>`, `&`,
//! U+2028, U+2029 as `\u....`), and `json.Encoder.SetIndent("", "\t")` layout with a trailing newline.

/// Serializes `value` the way `json.NewEncoder(w); enc.SetIndent("", "\t"); enc.Encode(v)` does.
pub fn to_indented<T: serde::Serialize>(value: &T) -> String {
    let _ = value;
    todo!()
}

/// Serializes `value` the way `json.Marshal` does (compact, HTML-safe escaping, no newline).
pub fn to_compact<T: serde::Serialize>(value: &T) -> String {
    let _ = value;
    todo!()
}
