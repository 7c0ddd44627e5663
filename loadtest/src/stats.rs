//! Measurement: per-request outcomes folded into totals, a latency histogram
//! (microseconds, hdrhistogram) and a per-second time series; rendered as a
//! text table and as JSON.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// How one request ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// An HTTP answer: status and the events the server said it accepted.
    Http { status: u16, accepted: u64 },
    /// No HTTP answer (connect error, reset, timeout): the error kind.
    Error(&'static str),
}

/// One finished request.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Seconds since the run started, when the request finished.
    pub at: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    pub events: u64,
    pub wire_bytes: u64,
    pub raw_bytes: u64,
}

fn hist() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

#[derive(Debug)]
struct Second {
    requests: u64,
    events_sent: u64,
    events_accepted: u64,
    wire_bytes: u64,
    non_2xx: u64,
    hist: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Second {
            requests: 0,
            events_sent: 0,
            events_accepted: 0,
            wire_bytes: 0,
            non_2xx: 0,
            hist: hist(),
        }
    }
}

/// Accumulates samples.
#[derive(Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
    seconds: Vec<Second>,
    status: BTreeMap<String, u64>,
    requests: u64,
    events_sent: u64,
    events_accepted: u64,
    wire_bytes: u64,
    raw_bytes: u64,
    /// Fixed-rate mode: requests that started later than their slot.
    pub late_starts: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            hist: hist(),
            seconds: Vec::new(),
            status: BTreeMap::new(),
            requests: 0,
            events_sent: 0,
            events_accepted: 0,
            wire_bytes: 0,
            raw_bytes: 0,
            late_starts: 0,
        }
    }
}

impl Recorder {
    pub fn record(&mut self, s: &Sample) {
        let us = (s.latency.as_micros() as u64).clamp(1, 600_000_000);
        let _ = self.hist.record(us);
        let sec = s.at.as_secs() as usize;
        while self.seconds.len() <= sec {
            self.seconds.push(Second::new());
        }
        let b = &mut self.seconds[sec];
        let _ = b.hist.record(us);
        b.requests += 1;
        b.events_sent += s.events;
        b.wire_bytes += s.wire_bytes;
        let (key, accepted) = match &s.outcome {
            Outcome::Http { status, accepted } => (status.to_string(), *accepted),
            Outcome::Error(kind) => (format!("error:{kind}"), 0),
        };
        if !matches!(
            s.outcome,
            Outcome::Http {
                status: 200..=299,
                ..
            }
        ) {
            b.non_2xx += 1;
        }
        b.events_accepted += accepted;
        *self.status.entry(key).or_default() += 1;
        self.requests += 1;
        self.events_sent += s.events;
        self.events_accepted += accepted;
        self.wire_bytes += s.wire_bytes;
        self.raw_bytes += s.raw_bytes;
    }

    /// The final report; `elapsed` is the wall time of the run.
    pub fn report(&self, elapsed: Duration, settings: serde_json::Value) -> Report {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |h: &Histogram<u64>, p: f64| ms(h.value_at_quantile(p));
        let latency = Latency {
            min: ms(self.hist.min()),
            mean: self.hist.mean() / 1000.0,
            p50: q(&self.hist, 0.50),
            p90: q(&self.hist, 0.90),
            p99: q(&self.hist, 0.99),
            p999: q(&self.hist, 0.999),
            max: ms(self.hist.max()),
        };
        let series = self
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| Point {
                t: t as u64,
                requests: s.requests,
                events_sent: s.events_sent,
                events_accepted: s.events_accepted,
                wire_mb: s.wire_bytes as f64 / 1e6,
                non_2xx: s.non_2xx,
                p50_ms: if s.requests > 0 { q(&s.hist, 0.5) } else { 0.0 },
                p99_ms: if s.requests > 0 {
                    q(&s.hist, 0.99)
                } else {
                    0.0
                },
            })
            .collect();
        Report {
            settings,
            elapsed_s: secs,
            requests: self.requests,
            events_sent: self.events_sent,
            events_accepted: self.events_accepted,
            events_not_accepted: self.events_sent - self.events_accepted.min(self.events_sent),
            status: self.status.clone(),
            late_starts: self.late_starts,
            events_per_s: self.events_sent as f64 / secs,
            accepted_per_s: self.events_accepted as f64 / secs,
            requests_per_s: self.requests as f64 / secs,
            wire_mb_per_s: self.wire_bytes as f64 / 1e6 / secs,
            raw_mb_per_s: self.raw_bytes as f64 / 1e6 / secs,
            wire_bytes: self.wire_bytes,
            raw_bytes: self.raw_bytes,
            latency_ms: latency,
            series,
        }
    }
}

/// Request latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// One second of the run (by request completion time).
#[derive(Debug, Serialize)]
pub struct Point {
    pub t: u64,
    pub requests: u64,
    pub events_sent: u64,
    pub events_accepted: u64,
    pub wire_mb: f64,
    pub non_2xx: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Everything the generator measured (also written as JSON).
#[derive(Debug, Serialize)]
pub struct Report {
    pub settings: serde_json::Value,
    pub elapsed_s: f64,
    pub requests: u64,
    pub events_sent: u64,
    pub events_accepted: u64,
    pub events_not_accepted: u64,
    /// Requests per HTTP status (`"202"`, `"503"`, …) or `"error:<kind>"`.
    pub status: BTreeMap<String, u64>,
    pub late_starts: u64,
    pub events_per_s: f64,
    pub accepted_per_s: f64,
    pub requests_per_s: f64,
    /// Compressed bytes on the wire per second (MB = 10^6 bytes).
    pub wire_mb_per_s: f64,
    /// Uncompressed ndjson bytes per second.
    pub raw_mb_per_s: f64,
    pub wire_bytes: u64,
    pub raw_bytes: u64,
    pub latency_ms: Latency,
    pub series: Vec<Point>,
}

impl Report {
    /// A human-readable summary table.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let l = &self.latency_ms;
        let _ = writeln!(s, "{:<26}{:>14}", "metric", "value");
        let _ = writeln!(s, "{:-<40}", "");
        let rows: Vec<(&str, String)> = vec![
            ("elapsed (s)", format!("{:.2}", self.elapsed_s)),
            ("requests", self.requests.to_string()),
            ("events sent", self.events_sent.to_string()),
            ("events accepted", self.events_accepted.to_string()),
            ("events not accepted", self.events_not_accepted.to_string()),
            ("events/s (sent)", format!("{:.0}", self.events_per_s)),
            ("events/s (accepted)", format!("{:.0}", self.accepted_per_s)),
            ("requests/s", format!("{:.1}", self.requests_per_s)),
            (
                "MB/s on the wire (gzip)",
                format!("{:.2}", self.wire_mb_per_s),
            ),
            ("MB/s ndjson", format!("{:.2}", self.raw_mb_per_s)),
            ("latency p50 (ms)", format!("{:.2}", l.p50)),
            ("latency p90 (ms)", format!("{:.2}", l.p90)),
            ("latency p99 (ms)", format!("{:.2}", l.p99)),
            ("latency p99.9 (ms)", format!("{:.2}", l.p999)),
            ("latency max (ms)", format!("{:.2}", l.max)),
            ("late starts (fixed rate)", self.late_starts.to_string()),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "{k:<26}{v:>14}");
        }
        let _ = writeln!(s, "{:-<40}", "");
        for (k, v) in &self.status {
            let _ = writeln!(s, "{:<26}{:>14}", format!("status {k}"), v);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_samples() {
        let mut r = Recorder::default();
        for (i, st) in [202u16, 202, 503].iter().enumerate() {
            r.record(&Sample {
                at: Duration::from_millis(1000 * i as u64),
                latency: Duration::from_millis(10),
                outcome: Outcome::Http {
                    status: *st,
                    accepted: if *st == 202 { 10 } else { 3 },
                },
                events: 10,
                wire_bytes: 100,
                raw_bytes: 1000,
            });
        }
        let rep = r.report(Duration::from_secs(2), serde_json::json!({}));
        assert_eq!(rep.events_sent, 30);
        assert_eq!(rep.events_accepted, 23);
        assert_eq!(rep.status["503"], 1);
        assert_eq!(rep.series.len(), 3);
        assert_eq!(rep.series[2].non_2xx, 1);
        assert!((rep.latency_ms.p99 - 10.0).abs() < 0.1);
    }
}
