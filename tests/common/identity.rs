//! The accounting identity read from outside: Prometheus `/metrics` text (or
//! the binary's `shutdown complete` log line) parsed into [`Identity`], and a
//! scrape loop that waits until every accepted event has an end.

use apm_rs::telemetry::Accounting;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Deref;
use std::time::{Duration, Instant};

/// The accounting counters of one server (the library's [`Accounting`], read
/// from outside) with the rejections and failures by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub totals: Accounting,
    /// `events_rejected_total` by reason.
    pub rejected_by: BTreeMap<String, u64>,
    /// `events_failed_total` by reason.
    pub failed_by: BTreeMap<String, u64>,
}

fn label(line: &str) -> String {
    line.split("reason=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string()
}

impl Identity {
    /// From Prometheus text exposition.
    pub fn parse(text: &str) -> Identity {
        let mut id = Identity::default();
        let t = &mut id.totals;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(v) = value.trim().parse::<f64>() else {
                continue;
            };
            let v = v as u64;
            let metric = name.split('{').next().unwrap_or("");
            match metric {
                "apm_rs_events_received_total" => t.received = v,
                "apm_rs_events_accepted_total" => t.accepted = v,
                "apm_rs_events_indexed_total" => t.indexed = v,
                "apm_rs_events_rejected_total" => {
                    t.rejected += v;
                    *id.rejected_by.entry(label(name)).or_default() += v;
                }
                "apm_rs_events_failed_total" => {
                    t.failed += v;
                    *id.failed_by.entry(label(name)).or_default() += v;
                }
                "apm_rs_events_discarded_total" => t.discarded += v,
                "apm_rs_aggregation_documents_total" => t.produced += v,
                _ => {}
            }
        }
        id
    }

    /// From the fields of the binary's JSON `shutdown complete` log line.
    pub fn from_log_fields(f: &serde_json::Value) -> Identity {
        let g = |k: &str| f[k].as_u64().unwrap_or(0);
        Identity {
            totals: Accounting {
                received: g("received"),
                rejected: g("rejected"),
                accepted: g("accepted"),
                indexed: g("indexed"),
                failed: g("failed"),
                discarded: g("discarded"),
                produced: g("aggregated"),
            },
            ..Default::default()
        }
    }

    /// received (+ aggregated documents produced) = rejected + indexed +
    /// failed (+ discarded by design).
    pub fn holds(&self) -> bool {
        self.received + self.produced == self.rejected + self.indexed + self.failed + self.discarded
    }

    /// Every received event answered and every accepted one ended.
    pub fn drained(&self) -> bool {
        self.balanced() && self.in_flight() == 0
    }

    /// The `IDENTITY | case | ...` line.
    pub fn line(&self, case: &str) -> String {
        let mut discarded = if self.discarded > 0 {
            format!(" discarded={}", self.discarded)
        } else {
            String::new()
        };
        if self.produced > 0 {
            discarded.push_str(&format!(" aggregated={}", self.produced));
        }
        let detail = |m: &BTreeMap<String, u64>| {
            m.iter()
                .filter(|(_, v)| **v > 0)
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "IDENTITY | {case} | received={} rejected={} indexed={} failed={}{discarded} | {} | rejected[{}] failed[{}]",
            self.received,
            self.rejected,
            self.indexed,
            self.failed,
            if self.holds() { "holds" } else { "BROKEN" },
            detail(&self.rejected_by),
            detail(&self.failed_by),
        )
    }

    /// Prints the identity line and asserts that it holds.
    pub fn check(&self, case: &str) {
        let line = self.line(case);
        println!("{line}");
        assert!(self.holds(), "{line}\n{self:?}");
    }
}

/// The totals are read as the identity's own fields (`id.failed`).
impl Deref for Identity {
    type Target = Accounting;
    fn deref(&self) -> &Accounting {
        &self.totals
    }
}

/// `GET /metrics` on the metrics listener.
pub async fn scrape(addr: SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// Scrapes until the counters are drained and unchanged over two scrapes
/// 100 ms apart; panics after `timeout` with the last reading.
pub async fn scrape_until_drained(addr: SocketAddr, timeout: Duration) -> Identity {
    let t0 = Instant::now();
    let mut last = Identity::default();
    loop {
        let id = Identity::parse(&scrape(addr).await);
        if id.drained() && id == last {
            return id;
        }
        assert!(
            t0.elapsed() < timeout,
            "counters not drained after {timeout:?}: {id:?}"
        );
        last = id;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
