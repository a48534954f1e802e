//! The result of one workload run, printed for people or as one JSON object.

use crate::hist::Histogram;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// What one workload run measured. Errors are counted, grouped by message, and always shown.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Workload name, e.g. `put`.
    pub name: String,
    /// Operations that succeeded (their latencies are in `hist`).
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
    /// Failed operations by error message.
    pub error_kinds: BTreeMap<String, u64>,
    /// Wall time of the measured phase.
    pub elapsed: Duration,
    /// Latency of every successful operation.
    pub hist: Histogram,
    /// Workload-specific figures (conflicts, keys loaded, events received, ...), in order.
    pub extra: Vec<(String, Value)>,
    /// Remarks worth reading next to the figures.
    pub notes: Vec<String>,
}

/// Formats a duration in the unit that suits it (µs, ms or s).
pub fn fmt_dur(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.3} s", ns / 1e9)
    }
}

/// Milliseconds as a float, for JSON.
pub fn ms(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1e6
}

impl Report {
    /// An empty report for workload `name`.
    pub fn new(name: &str) -> Self {
        Report {
            name: name.to_string(),
            ..Default::default()
        }
    }

    /// Successful operations per second of wall time.
    pub fn rps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }

    /// Counts one failed operation.
    pub fn add_error(&mut self, msg: String) {
        self.errors += 1;
        *self.error_kinds.entry(msg).or_default() += 1;
    }

    /// Adds every count of `other` (operations, errors, latencies) to this report.
    pub fn absorb(&mut self, other: &Report) {
        self.ok += other.ok;
        self.errors += other.errors;
        for (k, v) in &other.error_kinds {
            *self.error_kinds.entry(k.clone()).or_default() += v;
        }
        self.hist.merge(&other.hist);
    }

    /// Appends a workload-specific figure.
    pub fn push_extra(&mut self, key: &str, v: impl Into<Value>) {
        self.extra.push((key.to_string(), v.into()));
    }

    /// A workload-specific figure by name.
    pub fn extra(&self, key: &str) -> Option<&Value> {
        self.extra.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let h = &self.hist;
        let mut extra = Map::new();
        for (k, v) in &self.extra {
            extra.insert(k.clone(), v.clone());
        }
        let buckets: Vec<Value> = h
            .log2_buckets()
            .iter()
            .map(|b| json!({"ge_ms": b.lo as f64 / 1e6, "lt_ms": b.hi as f64 / 1e6, "count": b.count}))
            .collect();
        json!({
            "workload": self.name,
            "ok": self.ok,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "requests_per_sec": self.rps(),
            "latency_ms": {
                "min": ms(h.min()),
                "mean": ms(h.mean()),
                "p50": ms(h.quantile(0.5)),
                "p90": ms(h.quantile(0.9)),
                "p99": ms(h.quantile(0.99)),
                "p99_9": ms(h.quantile(0.999)),
                "max": ms(h.max()),
            },
            "histogram": buckets,
            "extra": extra,
            "notes": self.notes,
        })
    }

    /// The report as text: summary, percentiles, a log-bucket histogram, extras, errors.
    pub fn to_text(&self) -> String {
        let h = &self.hist;
        let mut s = String::new();
        let _ = writeln!(s, "Summary ({}):", self.name);
        let _ = writeln!(s, "  Total:        {:.4} s", self.elapsed.as_secs_f64());
        let _ = writeln!(s, "  Succeeded:    {}", self.ok);
        let _ = writeln!(s, "  Errors:       {}", self.errors);
        let _ = writeln!(s, "  Requests/sec: {:.1}", self.rps());
        if h.count() > 0 {
            let _ = writeln!(s, "  Slowest:      {}", fmt_dur(h.max()));
            let _ = writeln!(s, "  Fastest:      {}", fmt_dur(h.min()));
            let _ = writeln!(s, "  Average:      {}", fmt_dur(h.mean()));
            let _ = writeln!(s, "\nLatency percentiles:");
            for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
                let _ = writeln!(s, "  {label:<6} {}", fmt_dur(h.quantile(q)));
            }
            let _ = writeln!(s, "  {:<6} {}", "max", fmt_dur(h.max()));
            let _ = writeln!(s, "\nLatency histogram (log2 buckets):");
            let rows = h.log2_buckets();
            let most = rows.iter().map(|r| r.count).max().unwrap_or(1).max(1);
            for r in rows {
                let bar = "∎".repeat(((r.count * 40).div_ceil(most)) as usize);
                let _ = writeln!(
                    s,
                    "  {:>10} – {:<10} [{:>8}] {bar}",
                    fmt_dur(Duration::from_nanos(r.lo)),
                    fmt_dur(Duration::from_nanos(r.hi)),
                    r.count
                );
            }
        }
        if !self.extra.is_empty() {
            let _ = writeln!(s, "\nDetails:");
            for (k, v) in &self.extra {
                let _ = writeln!(s, "  {k}: {v}");
            }
        }
        if !self.error_kinds.is_empty() {
            let _ = writeln!(s, "\nError distribution:");
            for (k, v) in &self.error_kinds {
                let _ = writeln!(s, "  [{v}] {k}");
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "\nNote: {n}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_counts_errors_and_percentiles() {
        let mut r = Report::new("put");
        for us in 1..=100 {
            r.hist.record(Duration::from_micros(us));
            r.ok += 1;
        }
        r.add_error("Unavailable: leader changed".into());
        r.add_error("Unavailable: leader changed".into());
        r.elapsed = Duration::from_secs(2);
        r.push_extra("conflicts", 3);
        let j = r.to_json();
        assert_eq!(j["ok"], 100);
        assert_eq!(j["errors"], 2);
        assert_eq!(j["error_kinds"]["Unavailable: leader changed"], 2);
        assert_eq!(j["requests_per_sec"], 50.0);
        assert_eq!(j["extra"]["conflicts"], 3);
        let p50 = j["latency_ms"]["p50"].as_f64().unwrap();
        assert!((0.050..=0.052).contains(&p50), "{p50}");
        assert_eq!(j["latency_ms"]["max"], 0.1);
        let total: u64 = j["histogram"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 100);
        let text = r.to_text();
        assert!(text.contains("Errors:       2"));
        assert!(text.contains("[2] Unavailable: leader changed"));
    }

    #[test]
    fn absorb_adds_everything() {
        let mut a = Report::new("x");
        let mut b = Report::new("x");
        a.ok = 1;
        a.hist.record_ns(10);
        b.ok = 2;
        b.hist.record_ns(20);
        b.hist.record_ns(30);
        b.add_error("e".into());
        a.absorb(&b);
        assert_eq!((a.ok, a.errors, a.hist.count()), (3, 1, 3));
        assert_eq!(a.error_kinds["e"], 1);
    }

    #[test]
    fn durations_format_in_a_fitting_unit() {
        assert_eq!(fmt_dur(Duration::from_nanos(1500)), "1.5 µs");
        assert_eq!(fmt_dur(Duration::from_micros(2500)), "2.50 ms");
        assert_eq!(fmt_dur(Duration::from_millis(2500)), "2.500 s");
    }
}
