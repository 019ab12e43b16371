//! Console line splitting exactly as go-shellwords v1.0.10 `Parse` (env and backtick expansion
//! off), spec 1.7, and the inverse: quoting a word so that `split` gives it back unchanged.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid command line string")]
pub struct SplitError;

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Splits a console line into words. `;&|<>` outside quotes silently end the line.
///
/// Quirks kept from go-shellwords on purpose (the console must read lines as the original did):
/// an escaped character does not by itself start a word (`\a` alone gives no word, and in
/// `x \a b` the `a` joins `b`); a word of digits right before `>` is dropped (`2>f`); `)`
/// outside quotes toggles the `$( … )` state, so an odd number of them is an error.
pub fn split(line: &str) -> Result<Vec<String>, SplitError> {
    let mut args = Vec::new();
    let mut buf = String::new();
    let (mut escaped, mut double, mut single, mut back, mut dollar) =
        (false, false, false, false, false);
    // Whether `buf` holds a word (it may hold text that is not yet one, see above).
    let mut got = false;

    for c in line.chars() {
        if escaped {
            buf.push(c);
            escaped = false;
            continue;
        }
        if c == '\\' {
            if single {
                buf.push(c);
            } else {
                escaped = true;
            }
            continue;
        }
        if is_space(c) {
            if single || double || back || dollar {
                buf.push(c);
            } else if got {
                args.push(std::mem::take(&mut buf));
                got = false;
            }
            continue;
        }
        match c {
            '`' if !single && !double && !dollar => back = !back,
            ')' if !single && !double && !back => dollar = !dollar,
            '(' if !single && !double && !back => {
                if !dollar && buf.ends_with('$') {
                    dollar = true;
                    buf.push('(');
                    continue;
                }
                return Err(SplitError);
            }
            '"' if !single && !dollar => {
                if double {
                    got = true;
                }
                double = !double;
                continue;
            }
            '\'' if !double && !dollar => {
                if single {
                    got = true;
                }
                single = !single;
                continue;
            }
            ';' | '&' | '|' | '<' | '>' if !(single || double || back || dollar) => {
                if c == '>' && buf.as_bytes().first().is_some_and(u8::is_ascii_digit) {
                    got = false;
                }
                break;
            }
            _ => {}
        }
        got = true;
        buf.push(c);
    }
    if got {
        args.push(buf);
    }
    if escaped || single || double || back || dollar {
        return Err(SplitError);
    }
    Ok(args)
}

/// Characters that never mean anything to `split`: a word made only of them is sent as is.
fn is_safe(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | ':' | '@' | '=' | '+' | ',' | '-')
}

/// Quotes one word so that `split(&quote(w)) == [w]` for every `w`, including empty words and
/// words holding quotes, spaces, `;&|<>`, backslashes or a leading `-`. deployctl sends every
/// argument through this (fixes the original's injection bug, spec A10).
///
/// Single quotes keep everything literal; an embedded `'` is closed, escaped and reopened
/// (`'\''`). The word opens with a quote, so the word exists even when it starts with `\'`.
pub fn quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_safe) {
        return word.to_string();
    }
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// `quote` each word and join with single spaces.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Vec<String> {
        split(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    #[test]
    fn split_table() {
        let rows: &[(&str, &[&str])] = &[
            ("", &[]),
            ("   \t\r\n ", &[]),
            ("a", &["a"]),
            ("showconf -name p", &["showconf", "-name", "p"]),
            ("  a \t b\r\nc  ", &["a", "b", "c"]),
            ("'a b'", &["a b"]),
            ("\"a b\"", &["a b"]),
            ("a\"b c\"d", &["ab cd"]),
            ("a'b c'd", &["ab cd"]),
            ("\"\"", &[""]),
            ("''", &[""]),
            ("a '' b", &["a", "", "b"]),
            ("a \"\" b", &["a", "", "b"]),
            ("'\\n'", &["\\n"]),
            ("\"\\n\"", &["n"]),
            ("\"a\\\"b\"", &["a\"b"]),
            ("\"a'b\"", &["a'b"]),
            ("'a\"b'", &["a\"b"]),
            ("a\\ b", &["a b"]),
            ("a\\;b", &["a;b"]),
            ("x \\'y", &["x", "'y"]),
            ("a;rm -rf /", &["a"]),
            ("a ; b", &["a"]),
            ("a&b", &["a"]),
            ("a|b", &["a"]),
            ("a<b", &["a"]),
            ("a>b", &["a"]),
            ("a 2>/dev/null", &["a"]),
            ("a 12x>f", &["a"]),
            ("a b2>f", &["a", "b2"]),
            (";", &[]),
            ("'a;b' \"c|d\"", &["a;b", "c|d"]),
            ("`echo a b`", &["`echo a b`"]),
            ("x`a;b`y", &["x`a;b`y"]),
            ("$(echo a b)", &["$(echo a b)"]),
            ("a$(b ; c)d e", &["a$(b ; c)d", "e"]),
            ("$(a'b)", &["$(a'b)"]),
            ("a)b)", &["a)b)"]),
            ("\"(\" '(' x\\(", &["(", "(", "x("]),
            ("'\\'", &["\\"]),
            ("héllo wörld", &["héllo", "wörld"]),
            ("-name=x -force", &["-name=x", "-force"]),
            ("\"x -force\"", &["x -force"]),
            // An escaped character alone does not make a word (go-shellwords quirk).
            ("\\a", &[]),
            ("x \\a b", &["x", "ab"]),
            ("x \\a", &["x"]),
            ("\\a\"\"", &["a"]),
            ("'a''b'", &["ab"]),
        ];
        for (line, want) in rows {
            assert_eq!(ok(line), *want, "line {line:?}");
        }
    }

    #[test]
    fn split_errors() {
        for line in [
            "(", "a(b", "a (b)", "$((a))", "a)", "'", "\"", "a 'b", "a \"b", "\\", "a\\", "`a",
            "$(a", "a`b", "\"a\" 'b",
        ] {
            assert_eq!(split(line), Err(SplitError), "line {line:?}");
        }
        assert_eq!(SplitError.to_string(), "invalid command line string");
    }

    #[test]
    fn error_before_a_terminator_still_counts_but_after_does_not() {
        assert_eq!(split("a( ; b"), Err(SplitError));
        assert_eq!(ok("a ; ("), vec!["a"]);
        assert_eq!(ok("a ; 'unterminated"), vec!["a"]);
    }

    #[test]
    fn quote_leaves_safe_words_alone() {
        for w in ["addver", "-name=x", "a.b/c:d@e+f,g_h-1", "v01"] {
            assert_eq!(quote(w), w);
        }
    }

    #[test]
    fn quote_uses_single_quotes() {
        assert_eq!(quote(""), "''");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote("-name=x -force"), "'-name=x -force'");
    }

    const TRICKY: &[&str] = &[
        "",
        " ",
        "  ",
        "'",
        "''",
        "\"",
        "\"\"",
        "\\",
        "\\\\",
        "\\'",
        "'\\",
        "a b",
        "\t",
        "\n",
        "\r\n",
        "a\tb\nc",
        ";",
        "&",
        "|",
        "<",
        ">",
        "(",
        ")",
        "$",
        "$(",
        "$(x)",
        "`",
        "``",
        "`x`",
        "2>x",
        "1",
        "-",
        "--",
        "-force",
        "x -force",
        "-name=x -force",
        "a;rm -rf /",
        "$HOME",
        "${X}",
        "*",
        "?",
        "~",
        "#",
        "!",
        "{}",
        "[]",
        "%",
        "héllo",
        "日本語",
        "😀",
        "\u{a0}",
        "\u{2028}",
        "'\"'\"",
        "\"'\"'",
        "a'b\"c\\d",
        "'\\''",
        "=",
        "@",
        ")(",
        "\\a",
        "\\\"",
        "end\\",
    ];

    #[test]
    fn quote_round_trips_every_tricky_word() {
        for w in TRICKY {
            assert_eq!(
                split(&quote(w)),
                Ok(vec![w.to_string()]),
                "word {w:?} quoted as {:?}",
                quote(w)
            );
        }
    }

    #[test]
    fn quote_round_trips_pairs_of_tricky_words() {
        // Concatenations catch interactions between neighbouring characters.
        for a in TRICKY {
            for b in TRICKY {
                let w = format!("{a}{b}");
                assert_eq!(split(&quote(&w)), Ok(vec![w.clone()]), "word {w:?}");
            }
        }
    }

    #[test]
    fn join_round_trips_word_lists() {
        let words: Vec<String> = TRICKY.iter().map(|w| w.to_string()).collect();
        assert_eq!(split(&join(&words)), Ok(words));
    }

    #[test]
    fn quote_round_trips_every_ascii_and_some_unicode_char() {
        let mut chars: Vec<char> = (0u8..=127).map(char::from).collect();
        chars.extend(['é', '\u{85}', '\u{2029}', '\u{feff}', '\u{10ffff}']);
        for c in chars {
            for w in [
                c.to_string(),
                format!("a{c}"),
                format!("{c}b"),
                format!("{c}{c}"),
            ] {
                assert_eq!(split(&quote(&w)), Ok(vec![w.clone()]), "word {w:?}");
            }
        }
    }
}
