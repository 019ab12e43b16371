//! Go's `%q` (`strconv.Quote`).

/// `strconv.Quote(s)`: double quotes, `\"` `\\` `\n` `\t` ..., non-printables as `\x..`/`\u....`.
pub fn quote(s: &str) -> String {
    let _ = s;
    todo!()
}
