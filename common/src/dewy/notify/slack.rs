//! `slack://<channel>?title=&url=&thread=&quiet=` (spec dewy.md 7.2) and the attachments Dewy
//! posts: one per message, coloured per host, and a detailed one per hook result.
//!
//! Difference from Dewy: `slack://#general` names the channel `general`. Go's `url.Parse`
//! takes everything after `#` as a fragment, so Dewy posts to its default channel instead
//! (and drops any query after it).

use md5::{Digest, Md5};
use serde::Serialize;

use super::HookResult;
use crate::dewy::goquery::{self, Kind, Value};
use crate::goflag::format_duration;

/// Dewy's default channel when the URL names none (sic: its users may have created it).
pub const DEFAULT_CHANNEL: &str = "randam";
/// The poster's name.
pub const USERNAME: &str = "Dewy";
pub const ICON_URL: &str =
    "https://raw.githubusercontent.com/linyows/dewy/main/misc/dewy-icon.512.png";
pub const FOOTER_ICON: &str =
    "https://raw.githubusercontent.com/linyows/dewy/main/misc/dewy-icon.32.png";
/// Hook attachments: success and failure colours.
pub const HOOK_OK_COLOR: &str = "#36a64f";
pub const HOOK_FAILED_COLOR: &str = "#dd0000";

/// Output fields keep at most this many lines...
const MAX_LINES: usize = 50;
/// ...and this many bytes (Slack refuses fields much above 3000).
const MAX_FIELD_LEN: usize = 2000;

/// A parsed `slack://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackConfig {
    /// Name or ID, as chat.postMessage takes it.
    pub channel: String,
    /// Footer title (`?title=`) and its link (`?url=`).
    pub title: String,
    pub title_url: String,
    /// Post into the thread named by `.slack-thread-ts`.
    pub thread: bool,
    pub quiet: bool,
}

impl SlackConfig {
    /// Parses `slack://…`; the error names the offending key (never a value).
    pub fn parse(url: &str) -> Result<SlackConfig, String> {
        let Some(rest) = url.strip_prefix("slack://") else {
            return Err("not a slack:// URL".into());
        };
        let rest = rest.strip_prefix('#').unwrap_or(rest);
        // Dewy hands the remainder to url.Parse as a relative reference, so the channel is
        // its path; an empty authority in front gives goquery the same split.
        let synthetic = format!("slack:///{rest}");
        let parsed = goquery::parse(&synthetic).map_err(|e| strip_raw(&e, &synthetic))?;
        let fields = [
            ("title", Kind::Str),
            ("url", Kind::Str),
            ("thread", Kind::Bool),
            ("quiet", Kind::Bool),
        ];
        let mut cfg = SlackConfig {
            channel: parsed
                .path
                .strip_prefix('/')
                .unwrap_or(&parsed.path)
                .to_string(),
            title: String::new(),
            title_url: String::new(),
            thread: false,
            quiet: false,
        };
        for (name, value) in goquery::decode(&parsed.query, &fields)? {
            match (name, value) {
                ("title", Value::Str(s)) => cfg.title = s,
                ("url", Value::Str(s)) => cfg.title_url = s,
                ("thread", Value::Bool(b)) => cfg.thread = b,
                ("quiet", Value::Bool(b)) => cfg.quiet = b,
                _ => {}
            }
        }
        if cfg.channel.is_empty() {
            cfg.channel = DEFAULT_CHANNEL.into();
        }
        Ok(cfg)
    }

    /// `<url|title>/<host>`, `title/<host>` or `<host>`.
    pub fn footer(&self, hostname: &str) -> String {
        match (self.title.is_empty(), self.title_url.is_empty()) {
            (false, false) => format!("<{}|{}>/{hostname}", self.title_url, self.title),
            (false, true) => format!("{}/{hostname}", self.title),
            _ => hostname.to_string(),
        }
    }
}

/// goquery's errors quote the whole URL; ours must not (a URL can carry a password), and the
/// synthetic one would confuse anyway.
pub(super) fn strip_raw(err: &str, raw: &str) -> String {
    let prefix = format!("parse {}: ", crate::gostr::quote(raw));
    err.strip_prefix(&prefix).unwrap_or(err).to_string()
}

/// One attachment field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub title: String,
    pub value: String,
    pub short: bool,
}

/// A legacy message attachment, as chat.postMessage documents it (empty parts left out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub color: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub title: String,
    pub text: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
    pub footer: String,
    pub footer_icon: String,
    /// Unix seconds.
    pub ts: i64,
}

/// The attachment of an ordinary message.
pub fn message_attachment(cfg: &SlackConfig, msg: &str, hostname: &str, now: i64) -> Attachment {
    Attachment {
        color: host_color(hostname),
        title: String::new(),
        text: msg.to_string(),
        fields: Vec::new(),
        footer: cfg.footer(hostname),
        footer_icon: FOOTER_ICON.into(),
        ts: now,
    }
}

/// The attachment of a hook result: the command, its output, exit code and duration.
pub fn hook_attachment(cfg: &SlackConfig, r: &HookResult, hostname: &str, now: i64) -> Attachment {
    let mut fields = Vec::new();
    for (title, out) in [("Stdout", &r.stdout), ("Stderr", &r.stderr)] {
        if !out.is_empty() {
            fields.push(Field {
                title: title.into(),
                value: format_output(out),
                short: false,
            });
        }
    }
    fields.push(Field {
        title: "Exit Code".into(),
        value: format!("`{}`", r.exit_code),
        short: true,
    });
    fields.push(Field {
        title: "Duration".into(),
        value: format_duration(r.duration),
        short: true,
    });
    Attachment {
        color: if r.success {
            HOOK_OK_COLOR
        } else {
            HOOK_FAILED_COLOR
        }
        .into(),
        title: format!("{} Hook", r.kind.title()),
        text: format!("```\n{}\n```", r.command),
        fields,
        footer: cfg.footer(hostname),
        footer_icon: FOOTER_ICON.into(),
        ts: now,
    }
}

/// Dewy's `formatOutput`: at most 50 lines, then at most ~1900 bytes cut at a line end when
/// there is one, each cut saying how much went; code-fenced.
pub fn format_output(output: &str) -> String {
    let lines: Vec<&str> = output.split('\n').collect();
    let mut text = if lines.len() > MAX_LINES {
        let mut kept = lines[..MAX_LINES].join("\n");
        kept.push_str(&format!(
            "\n... ({} more lines truncated)",
            lines.len() - MAX_LINES
        ));
        kept
    } else {
        output.to_string()
    };
    if text.len() > MAX_FIELD_LEN {
        let budget = MAX_FIELD_LEN - 100;
        // Dewy looks for the last newline at or before the budget; a cut inside a UTF-8
        // sequence is moved back to its start (Go would send broken UTF-8).
        let cut = match text.as_bytes()[..=budget].iter().rposition(|&b| b == b'\n') {
            Some(i) if i > 0 => i,
            _ => floor_char_boundary(&text, budget),
        };
        text.truncate(cut);
        text.push_str(&format!(
            "\n... ({} more characters truncated)",
            output.len() - cut
        ));
    }
    format!("```\n{text}\n```")
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// `#RRGGBB` from the first three bytes of md5(hostname), so each host keeps one colour; a
/// red-ish one (it would read as a failure) is turned 35° round the hue circle.
pub fn host_color(hostname: &str) -> String {
    let hash = Md5::digest(hostname.as_bytes());
    let (mut r, mut g, mut b) = (hash[0], hash[1], hash[2]);
    if r >= 0xCC && g <= 0x33 && b <= 0x33 {
        let (h, s, l) = rgb_to_hsl(r, g, b);
        let h = if h + 35.0 >= 360.0 {
            h + 35.0 - 360.0
        } else {
            h + 35.0
        };
        (r, g, b) = hsl_to_rgb(h, s, l);
    }
    format!("#{r:02X}{g:02X}{b:02X}")
}

fn rgb_to_hsl(r: u8, g: u8, b: u8) -> (f64, f64, f64) {
    let (r, g, b) = (
        f64::from(r) / 255.0,
        f64::from(g) / 255.0,
        f64::from(b) / 255.0,
    );
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let l = (max + min) / 2.0;
    if max == min {
        return (0.0, 0.0, l);
    }
    let d = max - min;
    let s = if l > 0.5 {
        d / (2.0 - max - min)
    } else {
        d / (max + min)
    };
    let h = if max == r {
        (g - b) / d + if g < b { 6.0 } else { 0.0 }
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    };
    (h * 60.0, s, l)
}

fn hsl_to_rgb(h: f64, s: f64, l: f64) -> (u8, u8, u8) {
    let (r, g, b) = if s == 0.0 {
        (l, l, l)
    } else {
        let q = if l < 0.5 {
            l * (1.0 + s)
        } else {
            l + s - l * s
        };
        let p = 2.0 * l - q;
        let h = h / 360.0;
        (
            hue_to_rgb(p, q, h + 1.0 / 3.0),
            hue_to_rgb(p, q, h),
            hue_to_rgb(p, q, h - 1.0 / 3.0),
        )
    };
    // Go's uint8(x*255 + 0.5): truncation after adding one half; values stay within 0..=255.
    let to_u8 = |x: f64| (x * 255.0 + 0.5) as u8;
    (to_u8(r), to_u8(g), to_u8(b))
}

fn hue_to_rgb(p: f64, q: f64, mut t: f64) -> f64 {
    if t < 0.0 {
        t += 1.0;
    }
    if t > 1.0 {
        t -= 1.0;
    }
    if t < 1.0 / 6.0 {
        p + (q - p) * 6.0 * t
    } else if t < 0.5 {
        q
    } else if t < 2.0 / 3.0 {
        p + (q - p) * (2.0 / 3.0 - t) * 6.0
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::dewy::notify::HookKind;

    fn p(url: &str) -> SlackConfig {
        SlackConfig::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn channel_and_options() {
        let c = p("slack://deploys?title=web&url=https://example.com/ci&thread=true&quiet=1");
        assert_eq!(c.channel, "deploys");
        assert_eq!(c.title, "web");
        assert_eq!(c.title_url, "https://example.com/ci");
        assert!(c.thread && c.quiet);
        let c = p("slack://C0123ABC");
        assert_eq!(c.channel, "C0123ABC");
        assert!(!c.thread && !c.quiet);
        assert_eq!(p("slack://dev%2Dops?TITLE=a+b").title, "a b");
        assert_eq!(p("slack://dev%2Dops").channel, "dev-ops");
    }

    #[test]
    fn empty_channel_is_dewys_default() {
        assert_eq!(p("slack://").channel, "randam");
        assert_eq!(p("slack://?title=x").channel, "randam");
    }

    #[test]
    fn leading_hash_names_the_channel() {
        let c = p("slack://#general?title=x");
        assert_eq!((c.channel.as_str(), c.title.as_str()), ("general", "x"));
        // Elsewhere `#` starts a fragment, which Go ignores.
        assert_eq!(p("slack://general#x?title=y").title, "");
    }

    #[test]
    fn bad_keys_and_values_are_errors() {
        assert_eq!(
            SlackConfig::parse("slack://c?channel=x").unwrap_err(),
            "schema: invalid path \"channel\""
        );
        assert_eq!(
            SlackConfig::parse("slack://c?thread=maybe").unwrap_err(),
            "schema: error converting value for \"thread\""
        );
        assert_eq!(
            SlackConfig::parse("slack://c%zz").unwrap_err(),
            "invalid URL escape \"%zz\""
        );
        assert!(SlackConfig::parse("mail://c").is_err());
    }

    #[test]
    fn footer_variants() {
        let mut c = p("slack://c");
        assert_eq!(c.footer("web-1"), "web-1");
        c.title = "shop".into();
        assert_eq!(c.footer("web-1"), "shop/web-1");
        c.title_url = "https://x.test/".into();
        assert_eq!(c.footer("web-1"), "<https://x.test/|shop>/web-1");
        // A link without a title is not shown.
        c.title.clear();
        assert_eq!(c.footer("web-1"), "web-1");
    }

    #[test]
    fn colour_per_host() {
        // Expected values from md5 and Python's colorsys (an independent HSL).
        assert_eq!(host_color("web-1"), "#A2E3A9");
        assert_eq!(host_color("localhost"), "#421AA9");
        // md5 starts d5001f / fa071b: red-ish, turned 35°.
        assert_eq!(host_color("host-85"), "#D55D00");
        assert_eq!(host_color("host-119"), "#FA8107");
    }

    #[test]
    fn message_attachment_json() {
        let c = p("slack://c?title=shop");
        let a = message_attachment(&c, "Downloaded artifact for `v1`", "web-1", 1700000000);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "color": "#A2E3A9",
                "text": "Downloaded artifact for `v1`",
                "footer": "shop/web-1",
                "footer_icon": FOOTER_ICON,
                "ts": 1700000000,
            })
        );
    }

    fn hook(success: bool, stdout: &str, stderr: &str) -> HookResult {
        HookResult {
            kind: HookKind::AfterDeploy,
            command: "make restart".into(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            exit_code: if success { 0 } else { 2 },
            duration: Duration::from_millis(1500),
            success,
        }
    }

    #[test]
    fn hook_attachment_fields() {
        let c = p("slack://c");
        let a = hook_attachment(&c, &hook(false, "out\n", "bad"), "web-1", 5);
        assert_eq!(a.color, HOOK_FAILED_COLOR);
        assert_eq!(a.title, "After Deploy Hook");
        assert_eq!(a.text, "```\nmake restart\n```");
        let f: Vec<(&str, &str, bool)> = a
            .fields
            .iter()
            .map(|f| (f.title.as_str(), f.value.as_str(), f.short))
            .collect();
        assert_eq!(
            f,
            [
                ("Stdout", "```\nout\n\n```", false),
                ("Stderr", "```\nbad\n```", false),
                ("Exit Code", "`2`", true),
                ("Duration", "1.5s", true),
            ]
        );
        let a = hook_attachment(&c, &hook(true, "", ""), "web-1", 5);
        assert_eq!(a.color, HOOK_OK_COLOR);
        assert_eq!(a.fields.len(), 2);
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(v["fields"][0]["title"], "Exit Code");
        assert_eq!(v["title"], "After Deploy Hook");
    }

    #[test]
    fn output_truncated_by_lines() {
        let out: String = (1..=60).map(|i| format!("l{i}\n")).collect();
        let f = format_output(&out);
        // 61 parts after the split (the last one empty): 50 kept, 11 reported.
        let expected: String = (1..=50).map(|i| format!("l{i}\n")).collect();
        assert_eq!(
            f,
            format!("```\n{expected}... (11 more lines truncated)\n```")
        );
        assert_eq!(format_output("a\nb"), "```\na\nb\n```");
    }

    #[test]
    fn output_truncated_by_bytes() {
        // 40 lines of 99 bytes + newline: 4000 bytes; the cut is the last newline at or
        // before byte 1900, i.e. after 19 lines (index 1899).
        let out: String = (0..40).map(|_| format!("{}\n", "x".repeat(99))).collect();
        let f = format_output(&out);
        let kept: String = (0..19).map(|_| format!("{}\n", "x".repeat(99))).collect();
        let kept = kept.trim_end_matches('\n');
        assert_eq!(
            f,
            format!("```\n{kept}\n... (2101 more characters truncated)\n```")
        );
        // No newline at all: a hard cut at 1900 bytes, moved back to a char boundary.
        let f = format_output(&"é".repeat(1500));
        let kept = "é".repeat(950);
        assert_eq!(
            f,
            format!("```\n{kept}\n... (1100 more characters truncated)\n```")
        );
    }
}
