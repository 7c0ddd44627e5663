//! Self-monitoring: the Prometheus endpoint on its own listener
//! (`monitoring.metrics_host`) and the apm-server-compatible expvar
//! document on the main port (`apm-server.expvar.*`). Metric names are
//! documented in `docs/metrics.md`.
//!
//! Invariants: neither endpoint authenticates or changes any state besides
//! sampling gauges; the metrics listener is separate from the intake
//! listener so a scrape never competes with agents for connection slots and
//! is never exposed where agents can reach it unless configured so; expvar
//! values are derived only from counters whose meaning matches the
//! apm-server variable (the mapping table is in `docs/metrics.md`).

use super::AppState;
use crate::pipeline::Pipeline;
use crate::telemetry::Telemetry;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use prometheus::core::Collector;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;

/// Prometheus text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running metrics listener.
pub struct MetricsServer {
    pub addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Stops the listener and waits for its thread.
    pub fn stop(mut self) {
        let stop = self.handle.stop(false);
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Scrape {
    telemetry: Arc<Telemetry>,
    pipeline: Arc<Pipeline>,
}

async fn scrape(s: web::Data<Scrape>) -> HttpResponse {
    s.pipeline.sample_gauges();
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE))
        .body(s.telemetry.render())
}

async fn not_found() -> HttpResponse {
    HttpResponse::NotFound()
        .insert_header((CONTENT_TYPE, "text/plain; charset=utf-8"))
        .body("404 page not found\n")
}

/// `monitoring.metrics_host` as a bind address (`host:port`; an optional
/// `http://` prefix and trailing `/` are ignored).
fn listen_addr(host: &str) -> String {
    host.trim()
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string()
}

/// Starts `GET /metrics` on `host` (one worker, its own thread and actix
/// system). Returns once listening.
pub fn start(
    host: &str,
    telemetry: Arc<Telemetry>,
    pipeline: Arc<Pipeline>,
) -> std::io::Result<MetricsServer> {
    let addr = listen_addr(host);
    let data = web::Data::new(Scrape {
        telemetry,
        pipeline,
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            let sys = actix_rt::System::new();
            sys.block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .route("/metrics", web::get().to(scrape))
                        .default_service(web::route().to(not_found))
                })
                .workers(1)
                .disable_signals()
                .shutdown_timeout(1)
                .bind(&addr);
                let server = match server {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let addrs = server.addrs();
                let running = server.run();
                let _ = tx.send(Ok((addrs, running.handle())));
                if let Err(e) = running.await {
                    tracing::error!(error = %e, "metrics listener stopped with an error");
                }
            });
        })?;
    let (addrs, handle) = rx
        .recv()
        .map_err(|_| std::io::Error::other("metrics thread exited early"))??;
    let addr = addrs
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("no metrics listen address"))?;
    tracing::info!(%addr, "metrics listening on /metrics");
    Ok(MetricsServer {
        addr,
        handle,
        thread: Some(thread),
    })
}

/// Intake routes (apm-server's `apm-server.server.*` registry).
const INTAKE_ROUTES: &[&str] = &[
    "/intake/v2/events",
    "/intake/v2/rum/events",
    "/intake/v3/rum/events",
];
/// Agent config routes (apm-server's `apm-server.acm.*` registry).
const ACM_ROUTES: &[&str] = &["/config/v1/agents", "/config/v1/rum/agents"];

/// Per-status response counts of `routes`.
fn responses(t: &Telemetry, routes: &[&str]) -> Vec<(u16, u64)> {
    let mut out: Vec<(u16, u64)> = Vec::new();
    for mf in t.requests.collect() {
        for m in mf.get_metric() {
            let mut route = "";
            let mut status = 0u16;
            for l in m.get_label() {
                match l.name() {
                    "route" => route = l.value(),
                    "status" => status = l.value().parse().unwrap_or(0),
                    _ => {}
                }
            }
            if routes.contains(&route) {
                let n = m.get_counter().get_value() as u64;
                match out.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, v)) => *v += n,
                    None => out.push((status, n)),
                }
            }
        }
    }
    out
}

fn response_vars(out: &mut Map<String, Value>, prefix: &str, counts: &[(u16, u64)]) {
    let sum = |f: &dyn Fn(u16) -> bool| -> u64 {
        counts.iter().filter(|(s, _)| f(*s)).map(|(_, n)| n).sum()
    };
    let mut put = |k: &str, v: u64| {
        out.insert(format!("{prefix}.{k}"), Value::from(v));
    };
    put("request.count", sum(&|_| true));
    put("response.count", sum(&|_| true));
    put("response.valid.count", sum(&|s| s < 400));
    put("response.valid.ok", sum(&|s| s == 200));
    put("response.valid.accepted", sum(&|s| s == 202));
    put("response.valid.notmodified", sum(&|s| s == 304));
    put("response.errors.count", sum(&|s| s >= 400));
    put("response.errors.unauthorized", sum(&|s| s == 401));
    put("response.errors.forbidden", sum(&|s| s == 403));
    put("response.errors.ratelimit", sum(&|s| s == 429));
    put("response.errors.internal", sum(&|s| s == 500));
}

/// The expvar document: apm-server variable names mapped from our counters.
pub fn expvar_vars(t: &Telemetry) -> Value {
    let mut m = Map::new();
    let rejected = |reason: &str| -> u64 {
        t.events_rejected
            .get_metric_with_label_values(&[reason])
            .map(|c| c.get())
            .unwrap_or(0)
    };
    let acc = t.accounting();
    use crate::telemetry::reject;
    let mut put = |k: &str, v: u64| {
        m.insert(k.to_string(), Value::from(v));
    };
    put("apm-server.processor.stream.accepted", acc.accepted);
    put(
        "apm-server.processor.stream.errors.invalid",
        rejected(reject::INVALID),
    );
    put(
        "apm-server.processor.stream.errors.toolarge",
        rejected(reject::TOO_LARGE),
    );
    put(
        "apm-server.processor.stream.errors.queue",
        rejected(reject::QUEUE_FULL),
    );
    put(
        "apm-server.processor.stream.errors.closed",
        rejected(reject::SHUTTING_DOWN),
    );
    put(
        "apm-server.processor.stream.errors.server",
        rejected(reject::INTERNAL),
    );
    put("libbeat.output.events.acked", acc.indexed);
    put("libbeat.output.events.failed", acc.failed);
    put(
        "libbeat.output.events.active",
        acc.in_flight().max(0) as u64,
    );
    response_vars(&mut m, "apm-server.server", &responses(t, INTAKE_ROUTES));
    let acm = responses(t, ACM_ROUTES);
    response_vars(&mut m, "apm-server.acm", &acm);
    // On the agent config routes these statuses have exactly one cause each.
    for (key, status) in [
        ("invalidquery", 400u16),
        ("method", 405),
        ("unavailable", 503),
    ] {
        let n: u64 = acm
            .iter()
            .filter(|(s, _)| *s == status)
            .map(|(_, n)| n)
            .sum();
        m.insert(
            format!("apm-server.acm.response.errors.{key}"),
            Value::from(n),
        );
    }
    Value::Object(m)
}

/// `apm-server.expvar.url` on the main port: no auth, any method.
pub async fn expvar(_req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let body = serde_json::to_string_pretty(&expvar_vars(&state.telemetry))
        .unwrap_or_else(|_| "{}".into());
    super::response::builder(StatusCode::OK)
        .insert_header((CONTENT_TYPE, "application/json; charset=utf-8"))
        .body(body + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expvar_mapping() {
        let t = Telemetry::new();
        t.events_received.inc_by(5);
        t.events_accepted.inc_by(3);
        t.reject(crate::telemetry::reject::INVALID, 1);
        t.reject(crate::telemetry::reject::TOO_LARGE, 1);
        t.requests
            .with_label_values(&["/intake/v2/events", "202"])
            .inc();
        t.requests
            .with_label_values(&["/intake/v2/events", "400"])
            .inc();
        t.requests
            .with_label_values(&["/config/v1/agents", "304"])
            .inc();
        let v = expvar_vars(&t);
        assert_eq!(v["apm-server.processor.stream.accepted"], 3);
        assert_eq!(v["apm-server.processor.stream.errors.invalid"], 1);
        assert_eq!(v["apm-server.processor.stream.errors.toolarge"], 1);
        assert_eq!(v["apm-server.server.response.count"], 2);
        assert_eq!(v["apm-server.server.response.valid.count"], 1);
        assert_eq!(v["apm-server.server.response.errors.count"], 1);
        assert_eq!(v["apm-server.acm.response.valid.notmodified"], 1);
        assert_eq!(v["apm-server.acm.response.errors.invalidquery"], 0);
        assert_eq!(v["libbeat.output.events.active"], 3);
    }
}
