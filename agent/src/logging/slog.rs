//! Go `slog`'s layouts for Dewy's command words (spec dewy.md 8.7), so that log pipelines
//! built for Dewy (logfmt or JSON parsers keyed on `time`, `level`, `msg`) read ours:
//!
//! - text: `time=2026-11-23T14:17:04.123Z level=INFO msg="Create symlink" to=/srv/app/…`
//! - JSON: `{"time":"2026-11-23T14:17:04.123456789Z","level":"INFO","msg":"Create symlink",…}`
//!
//! Values are quoted as slog quotes them: only when they hold a space, `=`, `"`, a control
//! character, or nothing.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// slog's text or JSON handler.
pub struct Slog {
    pub json: bool,
}

impl<S, N> FormatEvent<S, N> for Slog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let now = common::timefmt::now();
        let level = level_name(*event.metadata().level());
        let line = if self.json {
            json_line(&now, level, &fields)
        } else {
            text_line(&now, level, &fields)
        };
        writeln!(w, "{line}")
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARN",
        Level::INFO => "INFO",
        // slog has no TRACE; its DEBUG is the lowest.
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// A field's value: JSON keeps numbers and booleans as such.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Text(String),
    Int(i128),
    Float(f64),
    Bool(bool),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Int(n) => write!(f, "{n}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// The event's message and its other fields, in order.
#[derive(Debug, Default)]
struct Fields {
    msg: String,
    attrs: Vec<(&'static str, Value)>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.attrs.push((field.name(), value));
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Text(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Int(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Int(value.into()));
    }
    fn record_i128(&mut self, field: &Field, value: i128) {
        self.put(field, Value::Int(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::Float(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Text(value.to_string()));
    }
    // `%x` fields arrive here with a Debug that is their Display, and the message as
    // `format_args!`: both print as they should.
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Text(format!("{value:?}")));
    }
}

fn text_line(t: &common::timefmt::OffsetDateTime, level: &str, fields: &Fields) -> String {
    let mut line = format!(
        "time={} level={level} msg=",
        common::timefmt::rfc3339_millis(*t)
    );
    push_text(&mut line, &fields.msg);
    for (key, value) in &fields.attrs {
        line.push(' ');
        push_text(&mut line, key);
        line.push('=');
        push_text(&mut line, &value.to_string());
    }
    line
}

/// `s` as slog's text handler writes a key or a value.
fn push_text(out: &mut String, s: &str) {
    if !needs_quoting(s) {
        out.push_str(s);
        return;
    }
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn needs_quoting(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c == '=' || c == '"' || c.is_whitespace() || c.is_control())
}

/// slog's JSON: `time`, `level`, `msg` first, then the fields in order (a map would sort them).
fn json_line(t: &common::timefmt::OffsetDateTime, level: &str, fields: &Fields) -> String {
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    let mut line = format!(
        "{{\"time\":{},\"level\":{},\"msg\":{}",
        quoted(&common::timefmt::rfc3339_nano(*t)),
        quoted(level),
        quoted(&fields.msg)
    );
    for (key, value) in &fields.attrs {
        let v = match value {
            Value::Text(s) => quoted(s),
            Value::Int(n) => n.to_string(),
            Value::Float(x) if x.is_finite() => x.to_string(),
            Value::Float(x) => quoted(&x.to_string()),
            Value::Bool(b) => b.to_string(),
        };
        let _ = write!(line, ",{}:{v}", quoted(key));
    }
    line.push('}');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> common::timefmt::OffsetDateTime {
        common::timefmt::parse_rfc3339("2026-11-23T14:17:04.123456789Z").unwrap()
    }

    fn fields(msg: &str, attrs: Vec<(&'static str, Value)>) -> Fields {
        Fields {
            msg: msg.to_string(),
            attrs,
        }
    }

    #[test]
    fn text_quotes_as_slog_does() {
        let f = fields(
            "Create symlink",
            vec![
                ("to", Value::Text("/srv/app/releases/x".into())),
                ("n", Value::Int(3)),
                ("ok", Value::Bool(true)),
                ("empty", Value::Text(String::new())),
                ("err", Value::Text("say \"hi\"\nthen=go\\".into())),
            ],
        );
        assert_eq!(
            text_line(&at(), "INFO", &f),
            r#"time=2026-11-23T14:17:04.123Z level=INFO msg="Create symlink" to=/srv/app/releases/x n=3 ok=true empty="" err="say \"hi\"\nthen=go\\""#
        );
        assert_eq!(
            text_line(&at(), "WARN", &fields("plain", vec![])),
            "time=2026-11-23T14:17:04.123Z level=WARN msg=plain"
        );
        assert_eq!(
            text_line(&at(), "ERROR", &fields("a\u{1}b", vec![])),
            r#"time=2026-11-23T14:17:04.123Z level=ERROR msg="a\u0001b""#
        );
    }

    #[test]
    fn json_keeps_types_and_order_of_the_standard_keys() {
        let f = fields(
            "Deploy skipped",
            vec![
                ("tag", Value::Text("v1.0.0".into())),
                ("attempts", Value::Int(2)),
                ("ratio", Value::Float(0.5)),
            ],
        );
        let line = json_line(&at(), "DEBUG", &f);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2026-11-23T14:17:04.123456789Z");
        assert_eq!(v["level"], "DEBUG");
        assert_eq!(v["msg"], "Deploy skipped");
        assert_eq!(v["tag"], "v1.0.0");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["ratio"], 0.5);
        assert!(line.starts_with(r#"{"time":"#), "{line}");
    }
}
