//! object_store's errors sorted by what the agent should do, with S3's own error code
//! (`NoSuchBucket`, `AccessDenied`, `SlowDown`) in the text.

use reqwest::StatusCode;

use crate::SourceError;
use crate::http::is_transient;

/// How object_store's (private) request error renders an HTTP error answer:
/// `Server returned non-2xx status code: 404 Not Found: <body>`. Its types are not public,
/// so the status and body are read back from this text.
const STATUS_PREFIX: &str = "Server returned non-2xx status code: ";

/// `store` is `s3://<region>/<bucket>`, `key` the key or prefix the request was about.
pub fn classify(e: object_store::Error, store: &str, key: &str) -> SourceError {
    let answer = http_answer(&e);
    let status = answer.as_ref().map(|(s, _)| *s);
    let code = answer
        .as_ref()
        .map(|(_, body)| s3_code(body))
        .unwrap_or_default();
    let at = if key.is_empty() {
        store.to_string()
    } else {
        format!("{store}/{key}")
    };
    let message = match (status, code.is_empty()) {
        (Some(s), false) => format!("{at}: HTTP {}: {code}", s.as_u16()),
        (Some(s), true) => format!("{at}: HTTP {}", s.as_u16()),
        (None, _) => format!("{at}: {}", chain(&e)),
    };
    let transient = match status {
        Some(s) => is_transient(s),
        // No HTTP answer: connect/timeout/reset, or a body cut short.
        None => is_transport(&e),
    };
    if transient {
        SourceError::Transient {
            message,
            retry_after: None,
        }
    } else {
        SourceError::Permanent(message)
    }
}

/// The status and body of the HTTP error answer somewhere in `e`'s source chain.
fn http_answer(e: &object_store::Error) -> Option<(StatusCode, String)> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if let Some(found) = parse_status_text(&c.to_string()) {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

fn parse_status_text(text: &str) -> Option<(StatusCode, String)> {
    let rest = text.strip_prefix(STATUS_PREFIX)?;
    let status = StatusCode::from_u16(rest.get(..3)?.parse().ok()?).ok()?;
    let body = rest.split_once(": ").map(|(_, b)| b).unwrap_or_default();
    Some((status, body.to_string()))
}

fn is_transport(e: &object_store::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<object_store::client::HttpError>()
            || c.is::<reqwest::Error>()
            || c.is::<std::io::Error>()
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// `<Code>X</Code>: <Message>Y</Message>` of an S3 error body, bounded for the log.
fn s3_code(body: &str) -> String {
    let tag = |name: &str| -> Option<&str> {
        let open = format!("<{name}>");
        let start = body.find(&open)? + open.len();
        let len = body[start..].find(&format!("</{name}>"))?;
        Some(&body[start..start + len])
    };
    let mut out = match (tag("Code"), tag("Message")) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => String::new(),
    };
    if out.len() > 300 {
        let mut cut = 300;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_and_message_from_the_body() {
        let body = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified \
                    bucket does not exist</Message><BucketName>b</BucketName></Error>";
        assert_eq!(
            s3_code(body),
            "NoSuchBucket: The specified bucket does not exist"
        );
        assert_eq!(s3_code("<html>"), "");
    }

    #[test]
    fn status_from_object_stores_text() {
        let (s, body) = parse_status_text(
            "Server returned non-2xx status code: 503 Service Unavailable: <Error><Code>SlowDown</Code></Error>",
        )
        .unwrap();
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(s3_code(&body), "SlowDown");
        assert!(is_transient(s));
        assert_eq!(parse_status_text("Error performing GET"), None);
    }
}
