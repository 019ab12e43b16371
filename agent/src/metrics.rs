//! Prometheus metrics (spec dewy.md 9.7 names, Prometheus form): a small registry of counter,
//! gauge and histogram families with dynamic labels, rendered in the text exposition format.
//!
//! STUB: the interface is frozen; the implementation is being written.

use std::time::Duration;

/// All metrics of one run. Cheap to share (`Arc`), internally synchronised.
#[derive(Default)]
pub struct Metrics {
    _private: (),
}

/// Label pairs, e.g. `&[("command", "server")]`.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Adds `v` to a counter (`name` in Prometheus form, ending in `_total`).
    pub fn inc(&self, name: &str, help: &str, labels: Labels<'_>, v: u64) {
        let _ = (name, help, labels, v);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, help: &str, labels: Labels<'_>, v: f64) {
        let _ = (name, help, labels, v);
    }

    /// Removes every series of a gauge family (before re-setting a fresh snapshot).
    pub fn clear(&self, name: &str) {
        let _ = name;
    }

    /// Observes a value into a histogram with the given upper bounds.
    pub fn observe(&self, name: &str, help: &str, buckets: &[f64], labels: Labels<'_>, v: f64) {
        let _ = (name, help, buckets, labels, v);
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
        String::new()
    }
}
