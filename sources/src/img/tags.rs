//! The tags list (`GET /v2/<repo>/tags/list`) and its `Link: <...>; rel="next"` pagination.

use serde::Deserialize;

use crate::SourceError;
use crate::http::Url;

#[derive(Deserialize)]
struct Page {
    // distribution answers `"tags": null` for a repository whose tags were all deleted.
    #[serde(default)]
    tags: Option<Vec<String>>,
}

/// The tags of one page body.
pub fn parse_page(body: &[u8]) -> Result<Vec<String>, SourceError> {
    let page: Page = serde_json::from_slice(body)
        .map_err(|e| SourceError::Permanent(format!("tags list: {e}")))?;
    Ok(page.tags.unwrap_or_default())
}

/// The `rel="next"` target of a `Link` header, resolved against `current`. A link to another
/// origin is refused: we would send it our registry token.
pub fn next_link(link: &str, current: &Url) -> Result<Option<Url>, SourceError> {
    for part in link.split(',') {
        let part = part.trim();
        let Some(rest) = part.strip_prefix('<') else {
            continue;
        };
        let Some((target, params)) = rest.split_once('>') else {
            continue;
        };
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            p.strip_prefix("rel=")
                .map(|v| v.trim_matches('"').split_whitespace().any(|r| r == "next"))
                .unwrap_or(false)
        });
        if !is_next {
            continue;
        }
        let next = current.join(target).map_err(|e| {
            SourceError::Permanent(format!("tags list: bad Link target {target:?}: {e}"))
        })?;
        if next.origin() != current.origin() {
            return Err(SourceError::Permanent(format!(
                "tags list: Link to another origin refused: {}",
                crate::http::redact(&next)
            )));
        }
        return Ok(Some(next));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links() {
        let cur = Url::parse("https://reg.example/v2/a/b/tags/list").unwrap();
        assert_eq!(
            next_link(r#"</v2/a/b/tags/list?last=v9&n=100>; rel="next""#, &cur)
                .unwrap()
                .unwrap()
                .as_str(),
            "https://reg.example/v2/a/b/tags/list?last=v9&n=100"
        );
        assert_eq!(
            next_link(
                r#"<https://reg.example/x?p=1>; rel="prev", <https://reg.example/x?p=3>; rel=next"#,
                &cur
            )
            .unwrap()
            .unwrap()
            .as_str(),
            "https://reg.example/x?p=3"
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#, &cur).unwrap(), None);
        assert!(next_link(r#"<https://evil.example/x>; rel="next""#, &cur).is_err());
        assert!(next_link(r#"<http://reg.example/x>; rel="next""#, &cur).is_err());
    }

    #[test]
    fn pages() {
        assert_eq!(
            parse_page(br#"{"name":"a","tags":["v1","v2"]}"#).unwrap(),
            ["v1", "v2"]
        );
        assert!(
            parse_page(br#"{"name":"a","tags":null}"#)
                .unwrap()
                .is_empty()
        );
        assert!(parse_page(b"<html>").is_err());
    }
}
