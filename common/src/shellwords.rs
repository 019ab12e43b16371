//! Console line splitting exactly as go-shellwords v1.0.10 `Parse` (env and backtick expansion
//! off), spec 1.7, and the inverse: quoting a word so that `split` gives it back unchanged.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command line string")]
pub struct SplitError;

/// Splits a console line into words. `;&|<>` outside quotes silently end the line.
pub fn split(line: &str) -> Result<Vec<String>, SplitError> {
    let _ = line;
    todo!()
}

/// Quotes one word so that `split(&quote(w)) == [w]` for every `w`, including empty words and
/// words holding quotes, spaces, `;&|<>`, backslashes or a leading `-`. deployctl sends every
/// argument through this (fixes the original's injection bug, spec A10).
pub fn quote(word: &str) -> String {
    let _ = word;
    todo!()
}

/// `quote` each word and join with single spaces.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}
