//! The run: validates the target, loads the corpus, starts the streams,
//! stops them by duration or event count, and writes the report.
//!
//! Every network result in the request loop is counted, never unwrapped:
//! transport errors become `error:<kind>` outcomes in the status table.

use crate::corpus::{self, Cursor, Route, Source};
use crate::otlp;
use crate::stats::{Outcome, Recorder, Sample};
use crate::{plot, Args};
use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A ready-to-send request body.
#[derive(Clone)]
struct Payload {
    gz: Bytes,
    events: u64,
    raw_len: u64,
    /// The OTLP signal of an `otlp` mix body (`None`: intake ndjson).
    signal: Option<otlp::Signal>,
    /// An `otlp` mix body uncompressed (what a gRPC call carries).
    raw: Bytes,
}

/// State shared by all streams.
struct Shared {
    args: Args,
    url: String,
    /// The server's base URL (OTLP bodies go to `<base>/v1/<signal>`).
    base: String,
    otlp: bool,
    /// `--grpc`: OTLP bodies go to the gRPC listener instead.
    grpc: Option<crate::grpc::GrpcSender>,
    sources: Vec<Source>,
    pool: Vec<Payload>,
    client: reqwest::Client,
    headers: reqwest::header::HeaderMap,
    rum: bool,
    chunked: bool,
    start: Instant,
    deadline: Instant,
    reserved: AtomicU64,
    slots: AtomicU64,
    requests: AtomicU64,
    rec: Mutex<Recorder>,
}

/// Refuses any target that is not on this machine's loopback.
async fn check_loopback(url: &url::Url) -> Result<(), String> {
    let host = url.host_str().ok_or("URL has no host")?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() || !addrs.iter().all(|ip| ip.is_loopback()) {
        return Err(format!(
            "refusing target {url}: load is only sent to loopback addresses (resolved {addrs:?})"
        ));
    }
    Ok(())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn gzip(raw: &[u8], level: u32) -> Bytes {
    let mut enc = GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        Compression::new(level.min(9)),
    );
    // writing into a Vec cannot fail
    let _ = enc.write_all(raw);
    Bytes::from(enc.finish().unwrap_or_default())
}

fn make_payload(sources: &[Source], cur: &mut Cursor, n: usize, level: u32) -> Payload {
    let mut raw = Vec::with_capacity(n * 2048 + 1024);
    let events = corpus::build_body(sources, cur, n, now_us(), &mut raw);
    Payload {
        gz: gzip(&raw, level),
        events: events as u64,
        raw_len: raw.len() as u64,
        signal: None,
        raw: Bytes::new(),
    }
}

/// The `seq`-th body of the `otlp` mix (signals in turn).
fn make_otlp_payload(seq: u64, n: usize, level: u32) -> Payload {
    let signal = otlp::Signal::nth(seq);
    let raw = otlp::body(signal, seq, n, (now_us().max(0) as u64) * 1000);
    Payload {
        gz: gzip(&raw, level),
        events: n.max(1) as u64,
        raw_len: raw.len() as u64,
        signal: Some(signal),
        raw: Bytes::from(raw),
    }
}

fn build_headers(args: &Args, rum: bool, otlp: bool) -> Result<reqwest::header::HeaderMap, String> {
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static(if otlp {
            "application/x-protobuf"
        } else {
            "application/x-ndjson"
        }),
    );
    h.insert("content-encoding", HeaderValue::from_static("gzip"));
    h.insert(
        "user-agent",
        HeaderValue::from_static(if rum {
            "Mozilla/5.0 (X11; Linux x86_64) apm-loadgen"
        } else if otlp {
            "OTel-OTLP-Exporter-Java/1.44.1 apm-loadgen"
        } else {
            "apm-agent-nodejs/3.29.0 (opbeans-node 1.0.0) apm-loadgen"
        }),
    );
    let auth = match (&args.api_key, &args.secret_token) {
        (Some(k), _) => Some(format!("ApiKey {k}")),
        (None, Some(t)) => Some(format!("Bearer {t}")),
        _ => None,
    };
    if let Some(a) = auth {
        if rum {
            eprintln!("apm-loadgen: note: sending credentials on a RUM route");
        }
        h.insert(
            "authorization",
            HeaderValue::from_str(&a).map_err(|_| "credential is not a valid header value")?,
        );
    }
    if rum {
        h.insert("origin", HeaderValue::from_static("http://localhost"));
    }
    for kv in &args.headers {
        let (k, v) = kv
            .split_once(':')
            .ok_or_else(|| format!("header {kv:?} is not `Name: value`"))?;
        let name = HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| format!("bad header name {k:?}"))?;
        let value =
            HeaderValue::from_str(v.trim()).map_err(|_| format!("bad header value for {k:?}"))?;
        h.insert(name, value);
    }
    Ok(h)
}

/// Runs the load as configured; prints and writes the report.
pub async fn run(args: Args) -> Result<(), String> {
    let base = url::Url::parse(&args.url).map_err(|e| format!("bad --url: {e}"))?;
    check_loopback(&base).await?;
    let otlp_mix = args.mix == "otlp";
    let (mix_route, files) = if otlp_mix {
        (Route::Backend, &[][..])
    } else {
        corpus::mix_files(&args.mix).ok_or_else(|| {
            format!(
                "unknown mix {:?} (node, intake, rum-v2, rum-v3, otlp)",
                args.mix
            )
        })?
    };
    let route = match args.route.as_deref() {
        None => mix_route,
        Some("backend") => Route::Backend,
        Some("rum-v2") => Route::RumV2,
        Some("rum-v3") => Route::RumV3,
        Some(r) => return Err(format!("unknown route {r:?}")),
    };
    let root = corpus::corpus_root(args.corpus.clone());
    let sources = files
        .iter()
        .map(|f| corpus::load_source(&root.join(f)))
        .collect::<Result<Vec<_>, _>>()?;
    for s in &sources {
        eprintln!("apm-loadgen: source {} ({} events)", s.name, s.events.len());
    }
    let rum = route != Route::Backend;
    // OpenTelemetry SDKs send a Content-Length body
    let chunked = !(args.content_length || rum || otlp_mix);
    let mut url = base.clone();
    url.set_path(route.path());
    let streams = args.streams.max(1);
    let n = args.events_per_request.max(1);

    let pool: Vec<Payload> = if args.pool > 0 {
        let t = Instant::now();
        let mut cur = Cursor::new(&sources, 0);
        let p: Vec<Payload> = (0..args.pool)
            .map(|i| {
                if otlp_mix {
                    make_otlp_payload(i as u64, n, args.gzip_level)
                } else {
                    make_payload(&sources, &mut cur, n, args.gzip_level)
                }
            })
            .collect();
        eprintln!(
            "apm-loadgen: built a pool of {} bodies ({} events each) in {:.2?}",
            p.len(),
            n,
            t.elapsed()
        );
        p
    } else {
        Vec::new()
    };

    let client = reqwest::Client::builder()
        .http1_only()
        .no_proxy()
        .no_gzip()
        .pool_max_idle_per_host(streams)
        .timeout(args.timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| format!("cannot build http client: {e}"))?;
    let headers = build_headers(&args, rum, otlp_mix)?;
    let grpc = match &args.grpc {
        Some(_) if !otlp_mix => return Err("--grpc needs --mix otlp".into()),
        Some(g) => {
            let u = url::Url::parse(g).map_err(|e| format!("bad --grpc: {e}"))?;
            check_loopback(&u).await?;
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Some(
                crate::grpc::GrpcSender::connect(
                    g,
                    auth.as_deref(),
                    args.gzip_level > 0,
                    args.timeout,
                )
                .await?,
            )
        }
        None => None,
    };
    let start = Instant::now();
    let shared = Arc::new(Shared {
        url: url.to_string(),
        base: base.as_str().trim_end_matches('/').to_owned(),
        otlp: otlp_mix,
        grpc,
        deadline: start + args.duration,
        args: args.clone(),
        sources,
        pool,
        client,
        headers,
        rum,
        chunked,
        start,
        reserved: AtomicU64::new(0),
        slots: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        rec: Mutex::new(Recorder::default()),
    });
    eprintln!(
        "apm-loadgen: {} streams × {} events/request → {} ({}, {}, {})",
        streams,
        n,
        args.grpc.as_deref().unwrap_or(&shared.url),
        args.mix,
        if args.grpc.is_some() {
            "OTLP/gRPC"
        } else if chunked {
            "chunked"
        } else {
            "content-length"
        },
        if args.rate > 0.0 {
            format!("{} events/s", args.rate)
        } else {
            "max rate".into()
        }
    );

    let progress = if args.progress > Duration::ZERO {
        let sh = Arc::clone(&shared);
        Some(tokio::spawn(async move {
            let mut last = (0u64, 0u64);
            let mut tick = tokio::time::interval(sh.args.progress);
            tick.tick().await;
            loop {
                tick.tick().await;
                let (req, ev) = match sh.rec.lock() {
                    Ok(r) => {
                        let rep = r.report(sh.start.elapsed(), serde_json::Value::Null);
                        (rep.requests, rep.events_accepted)
                    }
                    Err(_) => break,
                };
                eprintln!(
                    "  t={:>5.1}s  requests {:>7} (+{:<5})  accepted events {:>9} ({:.0}/s)",
                    sh.start.elapsed().as_secs_f64(),
                    req,
                    req - last.0,
                    ev,
                    (ev - last.1) as f64 / sh.args.progress.as_secs_f64()
                );
                last = (req, ev);
            }
        }))
    } else {
        None
    };

    let tasks: Vec<_> = (0..streams)
        .map(|i| tokio::spawn(stream_loop(Arc::clone(&shared), i as u64)))
        .collect();
    for t in tasks {
        if let Err(e) = t.await {
            eprintln!("apm-loadgen: a stream task failed: {e}");
        }
    }
    let elapsed = start.elapsed();
    if let Some(p) = progress {
        p.abort();
    }

    let settings = serde_json::to_value(&args).unwrap_or(serde_json::Value::Null);
    let report = match shared.rec.lock() {
        Ok(r) => r.report(elapsed, settings),
        Err(_) => return Err("recorder poisoned".into()),
    };
    print!("{}", report.table());
    if let Some(p) = &args.json {
        let s = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        std::fs::write(p, s).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        eprintln!("apm-loadgen: wrote {}", p.display());
    }
    if let Some(p) = &args.plot {
        let title = format!(
            "apm-loadgen: {} streams, {} ev/req, {}",
            streams,
            n,
            if args.rate > 0.0 {
                format!("{} ev/s offered", args.rate)
            } else {
                "max rate".into()
            }
        );
        plot::draw(&report, &title, p)?;
        eprintln!("apm-loadgen: wrote {}", p.display());
    }
    Ok(())
}

/// Classifies a transport error for the status table.
fn error_kind(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_request() {
        "request"
    } else if e.is_decode() {
        "decode"
    } else {
        "other"
    }
}

/// Events the server reports as accepted in an error body (`{"accepted": N, …}`).
fn accepted_from_body(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("accepted").and_then(|a| a.as_u64()))
        .unwrap_or(0)
}

fn client_ip(seq: u64, n: u32) -> String {
    // RFC 2544 benchmarking range 198.18.0.0/15: header values only, never dialled.
    let i = (crate::corpus::mix64(seq) % u64::from(n.max(1))) as u32;
    format!("198.{}.{}.{}", 18 + (i >> 16) % 2, (i >> 8) & 255, i & 255)
}

async fn stream_loop(sh: Arc<Shared>, stream: u64) {
    let args = &sh.args;
    let n = args.events_per_request.max(1) as u64;
    let mut cur = Cursor::new(&sh.sources, stream + 1);
    let mut pool_i = (stream as usize * 7919) % sh.pool.len().max(1);
    loop {
        if Instant::now() >= sh.deadline {
            break;
        }
        // event-count bound: reserve this request's events
        let mut want = n;
        if args.max_events > 0 {
            let prev = sh.reserved.fetch_add(n, Ordering::Relaxed);
            if prev >= args.max_events {
                break;
            }
            want = n.min(args.max_events - prev);
        }
        // fixed rate: wait for this request's slot
        if args.rate > 0.0 {
            let slot = sh.slots.fetch_add(1, Ordering::Relaxed);
            let at = sh.start + Duration::from_secs_f64(slot as f64 * n as f64 / args.rate);
            if at >= sh.deadline {
                break;
            }
            let now = Instant::now();
            if at > now {
                tokio::time::sleep_until(at.into()).await;
            } else if now - at > Duration::from_millis(10) {
                if let Ok(mut r) = sh.rec.lock() {
                    r.late_starts += 1;
                }
            }
        }
        let payload = if sh.otlp && (sh.pool.is_empty() || want != n) {
            let seq = sh.requests.load(Ordering::Relaxed);
            make_otlp_payload(seq, want as usize, args.gzip_level)
        } else if sh.pool.is_empty() || want != n {
            make_payload(&sh.sources, &mut cur, want as usize, args.gzip_level)
        } else {
            pool_i = (pool_i + 1) % sh.pool.len();
            sh.pool[pool_i].clone()
        };
        let seq = sh.requests.fetch_add(1, Ordering::Relaxed);
        let sample = send(&sh, &payload, seq).await;
        match sh.rec.lock() {
            Ok(mut r) => r.record(&sample),
            Err(_) => break,
        }
    }
}

async fn send(sh: &Shared, p: &Payload, seq: u64) -> Sample {
    if let (Some(g), Some(signal)) = (&sh.grpc, p.signal) {
        let t0 = Instant::now();
        let outcome = g.export(signal, p.raw.clone(), p.events).await;
        let done = Instant::now();
        return Sample {
            at: done.saturating_duration_since(sh.start),
            latency: done - t0,
            outcome,
            events: p.events,
            wire_bytes: p.raw.len() as u64,
            raw_bytes: p.raw_len,
        };
    }
    let args = &sh.args;
    let mut req = match p.signal {
        Some(signal) => sh.client.post(format!("{}{}", sh.base, signal.path())),
        None => sh.client.post(&sh.url),
    }
    .headers(sh.headers.clone());
    if sh.rum && args.client_ips > 0 {
        req = req.header("x-forwarded-for", client_ip(seq, args.client_ips));
    }
    let body = if sh.chunked {
        let chunk = args.chunk_size.max(1);
        let gz = p.gz.clone();
        let pieces: Vec<Bytes> = (0..gz.len())
            .step_by(chunk)
            .map(|o| gz.slice(o..(o + chunk).min(gz.len())))
            .collect();
        let pause = args.chunk_interval;
        let stream = futures_util::stream::unfold(
            (pieces.into_iter(), true),
            move |(mut it, first)| async move {
                let next = it.next()?;
                if !first && pause > Duration::ZERO {
                    tokio::time::sleep(pause).await;
                }
                Some((Ok::<Bytes, std::io::Error>(next), (it, false)))
            },
        );
        reqwest::Body::wrap_stream(stream)
    } else {
        reqwest::Body::from(p.gz.clone())
    };
    let t0 = Instant::now();
    let outcome = match req.body(body).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            match resp.bytes().await {
                Ok(b) => Outcome::Http {
                    status,
                    accepted: match p.signal {
                        Some(signal) if status == 200 => {
                            p.events.saturating_sub(signal.rejected(&b))
                        }
                        Some(_) => 0,
                        None if status == 202 => p.events,
                        None => accepted_from_body(&b),
                    },
                },
                Err(e) => Outcome::Error(error_kind(&e)),
            }
        }
        Err(e) => Outcome::Error(error_kind(&e)),
    };
    let done = Instant::now();
    Sample {
        at: done.saturating_duration_since(sh.start),
        latency: done - t0,
        outcome,
        events: p.events,
        wire_bytes: p.gz.len() as u64,
        raw_bytes: p.raw_len,
    }
}
