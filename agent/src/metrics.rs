//! Prometheus metrics (spec dewy.md 9.7 names, Prometheus form): a small registry of counter,
//! gauge and histogram families with dynamic labels, rendered in the text exposition format.
//!
//! Hand-written rather than `prometheus-client`: that crate wants a typed label set per
//! family, registered up front, while the modes here name families and label sets at the
//! call site (container names and proxy ports appear at run time), and container gauges are
//! replaced by whole snapshots (`clear` then `set`), which it has no call for. The format is
//! a hundred lines; the tests below parse back what `render` writes.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// A family stops growing here: labels carry run-time values (container names, ports) and a
/// bug that mints a new one per tick must not eat the agent's memory.
const MAX_SERIES_PER_FAMILY: usize = 10_000;
/// Families are named by our own code; this only bounds a misuse.
const MAX_FAMILIES: usize = 1_000;

/// All metrics of one run. Cheap to share (`Arc`), internally synchronised.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<BTreeMap<String, Family>>,
}

/// Label pairs, e.g. `&[("command", "server")]`.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// Label pairs sorted by name: one key per series whatever order the caller wrote them in.
type SeriesKey = Vec<(String, String)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

struct Family {
    help: String,
    kind: Kind,
    /// Histogram upper bounds, sorted, finite; `+Inf` is implied.
    bounds: Vec<f64>,
    series: BTreeMap<SeriesKey, Value>,
}

enum Value {
    Counter(u64),
    Gauge(f64),
    Histogram {
        /// Per-bucket (not cumulative) counts, one per bound, then the `+Inf` overflow.
        counts: Vec<u64>,
        sum: f64,
    },
}

/// Prometheus names are `[a-zA-Z_:][a-zA-Z0-9_:]*` (labels without `:`); anything else
/// would make the whole scrape unparsable, so it is replaced rather than trusted.
fn sanitize(name: &str, colon: bool) -> String {
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic()
            || c == '_'
            || (colon && c == ':')
            || (i > 0 && c.is_ascii_digit());
        out.push(if ok { c } else { '_' });
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

fn key(labels: Labels<'_>) -> SeriesKey {
    let mut k: SeriesKey = labels
        .iter()
        .map(|(n, v)| (sanitize(n, false), (*v).to_string()))
        .collect();
    k.sort();
    k.dedup_by(|a, b| a.0 == b.0);
    k
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Runs `f` on the series `labels` of family `name`, creating both as needed. A call
    /// whose kind differs from the family's first registration is dropped: metrics must
    /// never take the agent down, and mixing kinds would render an invalid scrape.
    fn with_series(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        bounds: &[f64],
        labels: Labels<'_>,
        f: impl FnOnce(&mut Value, &[f64]),
    ) {
        let name = sanitize(name, true);
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if !families.contains_key(&name) && families.len() >= MAX_FAMILIES {
            return;
        }
        let family = families.entry(name).or_insert_with(|| {
            let mut b: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
            b.sort_by(f64::total_cmp);
            b.dedup();
            Family {
                help: help.to_string(),
                kind,
                bounds: if kind == Kind::Histogram {
                    b
                } else {
                    Vec::new()
                },
                series: BTreeMap::new(),
            }
        });
        if family.kind != kind {
            tracing::debug!(
                kind = kind.name(),
                "metric family registered with another kind"
            );
            return;
        }
        let k = key(labels);
        if !family.series.contains_key(&k) && family.series.len() >= MAX_SERIES_PER_FAMILY {
            return;
        }
        let Family { bounds, series, .. } = family;
        let value = series.entry(k).or_insert_with(|| match kind {
            Kind::Counter => Value::Counter(0),
            Kind::Gauge => Value::Gauge(0.0),
            Kind::Histogram => Value::Histogram {
                counts: vec![0; bounds.len() + 1],
                sum: 0.0,
            },
        });
        f(value, bounds);
    }

    /// Adds `v` to a counter (`name` in Prometheus form, ending in `_total`).
    pub fn inc(&self, name: &str, help: &str, labels: Labels<'_>, v: u64) {
        self.with_series(name, help, Kind::Counter, &[], labels, |value, _| {
            if let Value::Counter(c) = value {
                *c = c.saturating_add(v);
            }
        });
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, help: &str, labels: Labels<'_>, v: f64) {
        self.with_series(name, help, Kind::Gauge, &[], labels, |value, _| {
            if let Value::Gauge(g) = value {
                *g = v;
            }
        });
    }

    /// Removes every series of a gauge family (before re-setting a fresh snapshot).
    pub fn clear(&self, name: &str) {
        let name = sanitize(name, true);
        let mut families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = families.get_mut(&name) {
            f.series.clear();
        }
    }

    /// Observes a value into a histogram with the given upper bounds (the bounds of the
    /// first call for a family are kept).
    pub fn observe(&self, name: &str, help: &str, buckets: &[f64], labels: Labels<'_>, v: f64) {
        if v.is_nan() {
            return;
        }
        self.with_series(
            name,
            help,
            Kind::Histogram,
            buckets,
            labels,
            |value, bounds| {
                if let Value::Histogram { counts, sum } = value {
                    // `le` is inclusive: a value equal to a bound belongs to that bucket.
                    let i = bounds.iter().position(|b| v <= *b).unwrap_or(bounds.len());
                    counts[i] += 1;
                    *sum += v;
                }
            },
        );
    }

    /// Convenience: a duration in seconds into a histogram.
    pub fn observe_duration(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
        labels: Labels<'_>,
        d: Duration,
    ) {
        self.observe(name, help, buckets, labels, d.as_secs_f64());
    }

    /// The text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        for (name, f) in families.iter().filter(|(_, f)| !f.series.is_empty()) {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&f.help));
            let _ = writeln!(out, "# TYPE {name} {}", f.kind.name());
            for (labels, value) in &f.series {
                match value {
                    Value::Counter(c) => sample(&mut out, name, "", labels, None, &c.to_string()),
                    Value::Gauge(g) => sample(&mut out, name, "", labels, None, &number(*g)),
                    Value::Histogram { counts, sum } => {
                        let mut cumulative = 0u64;
                        for (i, n) in counts.iter().enumerate() {
                            cumulative += n;
                            let le = f
                                .bounds
                                .get(i)
                                .map_or_else(|| "+Inf".to_string(), |b| number(*b));
                            sample(
                                &mut out,
                                name,
                                "_bucket",
                                labels,
                                Some(&le),
                                &cumulative.to_string(),
                            );
                        }
                        sample(&mut out, name, "_sum", labels, None, &number(*sum));
                        sample(
                            &mut out,
                            name,
                            "_count",
                            labels,
                            None,
                            &cumulative.to_string(),
                        );
                    }
                }
            }
        }
        out
    }
}

fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &SeriesKey,
    le: Option<&str>,
    value: &str,
) {
    out.push_str(name);
    out.push_str(suffix);
    let extra = le.map(|le| ("le", le));
    let mut pairs = labels
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(extra)
        .peekable();
    if pairs.peek().is_some() {
        out.push('{');
        for (i, (n, v)) in pairs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{n}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(value);
    out.push('\n');
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)` spells infinities as Prometheus wants; Rust
/// does not.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// One sample line read back: name, labels, value.
    #[derive(Debug, PartialEq)]
    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// A strict reader of the 0.0.4 text format: every line is a comment or a sample, and
    /// each sample's family was announced by `# TYPE` before it.
    fn read(text: &str) -> (Vec<(String, String, String)>, Vec<Sample>) {
        let mut meta = Vec::new();
        let mut samples = Vec::new();
        assert!(text.is_empty() || text.ends_with('\n'));
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let (k, n, t) = (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                );
                assert!(k == "HELP" || k == "TYPE", "{line}");
                meta.push((k.to_string(), n.to_string(), t.to_string()));
                continue;
            }
            let (head, value) = line.rsplit_once(' ').unwrap();
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
            };
            let (name, labels) = match head.split_once('{') {
                None => (head.to_string(), BTreeMap::new()),
                Some((name, rest)) => (
                    name.to_string(),
                    read_labels(rest.strip_suffix('}').unwrap()),
                ),
            };
            assert!(
                meta.iter()
                    .any(|(k, n, _)| k == "TYPE" && name.starts_with(n.as_str())),
                "sample before its TYPE: {line}"
            );
            samples.push(Sample {
                name,
                labels,
                value,
            });
        }
        (meta, samples)
    }

    fn read_labels(mut s: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        while !s.is_empty() {
            let (name, rest) = s.split_once("=\"").unwrap();
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next().unwrap() {
                    (_, '\\') => match chars.next().unwrap().1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => panic!("bad escape \\{c}"),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            out.insert(name.to_string(), value);
            s = &rest[end + 1..];
            s = s.strip_prefix(',').unwrap_or(s);
        }
        out
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn metrics_empty_registry_renders_nothing() {
        assert_eq!(Metrics::new().render(), "");
    }

    #[test]
    fn metrics_counter_and_gauge_round_trip() {
        let m = Metrics::new();
        m.inc(
            "dewy_deployments_total",
            "Deployments.",
            &[("command", "server")],
            1,
        );
        m.inc(
            "dewy_deployments_total",
            "Deployments.",
            &[("command", "server")],
            2,
        );
        m.inc(
            "dewy_deployments_total",
            "Deployments.",
            &[("command", "assets")],
            1,
        );
        m.set(
            "dewy_container_replicas",
            "Replicas.",
            &[("app", "web")],
            3.0,
        );
        m.set(
            "dewy_container_replicas",
            "Replicas.",
            &[("app", "web")],
            2.5,
        );
        let (meta, samples) = read(&m.render());
        assert_eq!(
            meta,
            vec![
                (
                    "HELP".into(),
                    "dewy_container_replicas".into(),
                    "Replicas.".into()
                ),
                (
                    "TYPE".into(),
                    "dewy_container_replicas".into(),
                    "gauge".into()
                ),
                (
                    "HELP".into(),
                    "dewy_deployments_total".into(),
                    "Deployments.".into()
                ),
                (
                    "TYPE".into(),
                    "dewy_deployments_total".into(),
                    "counter".into()
                ),
            ]
        );
        assert_eq!(
            samples,
            vec![
                Sample {
                    name: "dewy_container_replicas".into(),
                    labels: labels(&[("app", "web")]),
                    value: 2.5
                },
                Sample {
                    name: "dewy_deployments_total".into(),
                    labels: labels(&[("command", "assets")]),
                    value: 1.0
                },
                Sample {
                    name: "dewy_deployments_total".into(),
                    labels: labels(&[("command", "server")]),
                    value: 3.0
                },
            ]
        );
    }

    #[test]
    fn metrics_label_order_does_not_split_series() {
        let m = Metrics::new();
        m.set("g", "h", &[("b", "2"), ("a", "1")], 1.0);
        m.set("g", "h", &[("a", "1"), ("b", "2")], 7.0);
        assert_eq!(
            m.render(),
            "# HELP g h\n# TYPE g gauge\ng{a=\"1\",b=\"2\"} 7\n"
        );
    }

    #[test]
    fn metrics_escaping_round_trips() {
        let m = Metrics::new();
        let nasty = "a\"b\\c\nd}e,f=\"";
        m.set(
            "dewy_container_info",
            "Info with \\ and\nnewline.",
            &[("image", nasty), ("app", "x")],
            1.0,
        );
        let text = m.render();
        assert_eq!(
            text.lines().count(),
            3,
            "escaped newlines stay on one line: {text}"
        );
        assert!(text.contains("# HELP dewy_container_info Info with \\\\ and\\nnewline.\n"));
        let (_, samples) = read(&text);
        assert_eq!(samples[0].labels, labels(&[("app", "x"), ("image", nasty)]));
    }

    #[test]
    fn metrics_histogram_is_cumulative_with_inf_sum_count() {
        let m = Metrics::new();
        let b = [5.0, 1.0, 10.0];
        let l: Labels<'_> = &[("command", "server")];
        for v in [0.5, 1.0, 3.0, 7.0, 20.0, 30.0] {
            m.observe("dewy_deployment_duration_seconds", "Deploy time.", &b, l, v);
        }
        m.observe_duration(
            "dewy_deployment_duration_seconds",
            "Deploy time.",
            &b,
            l,
            Duration::from_millis(4500),
        );
        let (meta, samples) = read(&m.render());
        assert_eq!(meta[1].2, "histogram");
        let got: Vec<(String, Option<String>, f64)> = samples
            .iter()
            .map(|s| (s.name.clone(), s.labels.get("le").cloned(), s.value))
            .collect();
        let n = "dewy_deployment_duration_seconds";
        assert_eq!(
            got,
            vec![
                (format!("{n}_bucket"), Some("1".into()), 2.0),
                (format!("{n}_bucket"), Some("5".into()), 4.0),
                (format!("{n}_bucket"), Some("10".into()), 5.0),
                (format!("{n}_bucket"), Some("+Inf".into()), 7.0),
                (format!("{n}_sum"), None, 66.0),
                (format!("{n}_count"), None, 7.0),
            ]
        );
        assert!(
            samples
                .iter()
                .all(|s| s.labels.get("command").map(String::as_str) == Some("server"))
        );
    }

    #[test]
    fn metrics_cleared_family_then_reset() {
        let m = Metrics::new();
        m.set(
            "dewy_container_status",
            "State.",
            &[("container", "a"), ("state", "running")],
            1.0,
        );
        m.set(
            "dewy_container_status",
            "State.",
            &[("container", "b"), ("state", "running")],
            1.0,
        );
        m.set("other", "Other.", &[], 4.0);
        m.clear("dewy_container_status");
        let (_, samples) = read(&m.render());
        assert_eq!(samples.len(), 1, "a cleared family renders nothing");
        assert_eq!(samples[0].name, "other");
        m.set(
            "dewy_container_status",
            "State.",
            &[("container", "c"), ("state", "exited")],
            1.0,
        );
        let (meta, samples) = read(&m.render());
        assert_eq!(meta.iter().filter(|(k, _, _)| k == "TYPE").count(), 2);
        let status: Vec<_> = samples
            .iter()
            .filter(|s| s.name == "dewy_container_status")
            .collect();
        assert_eq!(status.len(), 1);
        assert_eq!(
            status[0].labels,
            labels(&[("container", "c"), ("state", "exited")])
        );
    }

    #[test]
    fn metrics_kind_mismatch_and_bad_names_keep_the_scrape_valid() {
        let m = Metrics::new();
        m.inc("x_total", "A counter.", &[], 1);
        m.set("x_total", "Now a gauge?", &[], 9.0);
        m.observe("x_total", "Now a histogram?", &[1.0], &[], 0.5);
        m.set("bad name.1", "h", &[("bad-label", "v"), ("9x", "w")], 1.0);
        let text = m.render();
        let (meta, samples) = read(&text);
        assert!(meta.contains(&("TYPE".into(), "x_total".into(), "counter".into())));
        assert!(
            samples
                .iter()
                .any(|s| s.name == "x_total" && s.value == 1.0)
        );
        assert!(
            text.contains("bad_name_1{_x=\"w\",bad_label=\"v\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn metrics_series_are_bounded() {
        let m = Metrics::new();
        for i in 0..MAX_SERIES_PER_FAMILY + 5 {
            m.set("g", "h", &[("i", &i.to_string())], 1.0);
        }
        let (_, samples) = read(&m.render());
        assert_eq!(samples.len(), MAX_SERIES_PER_FAMILY);
    }

    #[test]
    fn metrics_special_values() {
        let m = Metrics::new();
        m.set("g", "h", &[("k", "inf")], f64::INFINITY);
        m.set("g", "h", &[("k", "neg")], f64::NEG_INFINITY);
        m.set("g", "h", &[("k", "frac")], 0.25);
        let text = m.render();
        assert!(
            text.contains("g{k=\"inf\"} +Inf\n") && text.contains("g{k=\"neg\"} -Inf\n"),
            "{text}"
        );
        assert!(text.contains("g{k=\"frac\"} 0.25\n"));
    }

    #[test]
    fn metrics_concurrent_increments_all_count() {
        let m = Arc::new(Metrics::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        m.inc("c_total", "h", &[("p", "80")], 1);
                        m.observe("hist", "h", &[1.0], &[], 2.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (_, samples) = read(&m.render());
        let find = |n: &str| samples.iter().find(|s| s.name == n).unwrap().value;
        assert_eq!(find("c_total"), 4000.0);
        assert_eq!(find("hist_count"), 4000.0);
        assert_eq!(find("hist_sum"), 8000.0);
    }
}
