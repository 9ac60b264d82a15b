//! The result of a run, as a short text summary or one line of JSON.

use std::fmt::Write as _;
use std::time::Duration;

use crate::runner::Outcome;

pub struct Report<'a> {
    pub workload: &'a str,
    pub endpoints: &'a [String],
    pub clients: usize,
    pub conns: usize,
    /// What the histogram counts: `requests`, or e.g. `events`.
    pub unit: &'a str,
    pub outcome: &'a Outcome,
    /// Workload-specific figures, printed after the latencies.
    pub extra: &'a [Extra],
}

/// One workload-specific figure: a text label and a JSON field.
pub struct Extra {
    pub label: &'static str,
    pub field: &'static str,
    pub value: Value,
}

pub enum Value {
    Count(u64),
    /// A number printed with this many decimals.
    Real(f64, usize),
    Text(String),
}

impl Extra {
    pub fn new(label: &'static str, field: &'static str, value: Value) -> Self {
        Extra {
            label,
            field,
            value,
        }
    }

    fn text(&self) -> String {
        match &self.value {
            Value::Count(n) => n.to_string(),
            Value::Real(x, decimals) => format!("{x:.decimals$}"),
            Value::Text(t) => t.clone(),
        }
    }

    fn json(&self) -> String {
        match &self.value {
            Value::Text(t) => quote(t),
            Value::Real(x, _) if !x.is_finite() => "null".into(),
            _ => self.text(),
        }
    }
}

/// The latency figures reported, as (label, JSON field, quantile); `None`
/// quantiles are the mean and the extremes, which are exact.
const LATENCIES: [(&str, &str, Option<f64>); 7] = [
    ("fastest", "fastest_ms", Some(0.0)),
    ("average", "avg_ms", None),
    ("p50", "p50_ms", Some(0.5)),
    ("p90", "p90_ms", Some(0.9)),
    ("p99", "p99_ms", Some(0.99)),
    ("p99.9", "p999_ms", Some(0.999)),
    ("slowest", "slowest_ms", Some(1.0)),
];

impl Report<'_> {
    fn ok(&self) -> u64 {
        self.outcome.latencies.count()
    }

    fn total(&self) -> u64 {
        self.ok() + self.outcome.error_count()
    }

    /// Successful requests per second of wall time, as etcd's tool counts.
    fn rps(&self) -> f64 {
        match self.outcome.elapsed.as_secs_f64() {
            0.0 => 0.0,
            secs => self.ok() as f64 / secs,
        }
    }

    fn latency(&self, q: Option<f64>) -> Duration {
        let h = &self.outcome.latencies;
        q.map_or_else(|| h.mean(), |q| h.quantile(q))
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} clients over {} conns to {}",
            self.workload,
            self.clients,
            self.conns,
            self.endpoints.join(",")
        );
        let _ = writeln!(
            s,
            "  total         {} {} ({} failed)",
            self.total(),
            self.unit,
            self.outcome.error_count()
        );
        let _ = writeln!(
            s,
            "  duration      {:.3} s",
            self.outcome.elapsed.as_secs_f64()
        );
        let per_sec = format!("{}/sec", self.unit);
        let _ = writeln!(s, "  {per_sec:<13} {:.1}", self.rps());
        let _ = writeln!(s, "  latency (ms)");
        for (label, _, q) in LATENCIES {
            let _ = writeln!(s, "    {label:<8} {:>10.3}", ms(self.latency(q)));
        }
        for extra in self.extra {
            let _ = writeln!(s, "  {:<22} {}", extra.label, extra.text());
        }
        if !self.outcome.errors.is_empty() {
            let _ = writeln!(s, "  errors");
            for (kind, n) in &self.outcome.errors {
                let _ = writeln!(s, "    {n:>8} x {kind}");
            }
        }
        s
    }

    pub fn json(&self) -> String {
        let mut s = String::from("{");
        let _ = write!(s, "\"workload\":{}", quote(self.workload));
        let _ = write!(s, ",\"endpoints\":{}", quote(&self.endpoints.join(",")));
        let _ = write!(s, ",\"clients\":{},\"conns\":{}", self.clients, self.conns);
        let _ = write!(s, ",\"total\":{},\"ok\":{}", self.total(), self.ok());
        let _ = write!(s, ",\"errors\":{}", self.outcome.error_count());
        let secs = self.outcome.elapsed.as_secs_f64();
        let _ = write!(s, ",\"duration_s\":{secs:.6},\"rps\":{:.3}", self.rps());
        for (_, field, q) in LATENCIES {
            let _ = write!(s, ",\"{field}\":{:.6}", ms(self.latency(q)));
        }
        for extra in self.extra {
            let _ = write!(s, ",\"{}\":{}", extra.field, extra.json());
        }
        let first_error = self.outcome.errors.keys().next();
        if let Some(kind) = first_error {
            let _ = write!(s, ",\"first_error\":{}", quote(kind));
        }
        s.push('}');
        s
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A JSON string literal.
fn quote(raw: &str) -> String {
    let mut s = String::with_capacity(raw.len() + 2);
    s.push('"');
    for c in raw.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_escapes_what_json_requires() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(quote("héllo"), "\"héllo\"");
    }

    #[test]
    fn extras_appear_in_text_and_json() {
        let mut outcome = Outcome {
            latencies: crate::histogram::Histogram::default(),
            errors: Default::default(),
            elapsed: Duration::from_secs(2),
        };
        outcome.latencies.record(Duration::from_millis(3));
        outcome.errors.insert("missing events".into(), 4);
        let extra = [
            Extra::new("watchers", "watchers", Value::Count(10)),
            Extra::new("puts/sec", "puts_per_s", Value::Real(1.5, 2)),
            Extra::new("mode", "mode", Value::Text("lock\"step".into())),
        ];
        let endpoints = ["http://h:1".to_string()];
        let report = Report {
            workload: "watch-latency",
            endpoints: &endpoints,
            clients: 1,
            conns: 2,
            unit: "events",
            outcome: &outcome,
            extra: &extra,
        };
        let text = report.text();
        assert!(text.contains("total         5 events (4 failed)"), "{text}");
        assert!(text.contains("events/sec    0.5"), "{text}");
        assert!(text.contains("puts/sec               1.50"), "{text}");
        let json = report.json();
        assert!(
            json.contains(r#","watchers":10,"puts_per_s":1.50,"mode":"lock\"step""#),
            "{json}"
        );
        assert!(json.contains(r#""errors":4,"#), "{json}");
    }
}
