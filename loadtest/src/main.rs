//! `apm-loadgen`: behaves like many Elastic APM agents against one APM server
//! on this machine (loopback only).
//!
//! N concurrent streams each loop: build an ndjson body (metadata line +
//! `--events-per-request` events replayed from the corpus with fresh ids and
//! timestamps), gzip it, POST it (chunked like the Node.js agent, or with
//! `Content-Length` like Python and RUM) over a keep-alive connection, and
//! record latency and outcome. Max-rate mode (`--rate 0`) sends as fast as
//! the server answers; fixed-rate mode spreads request starts evenly so the
//! whole run offers `--rate` events per second. The run stops by itself at
//! `--duration` or after `--max-events`, whichever comes first.
//!
//! The `otlp` mix sends OTLP/HTTP protobuf export requests instead (see
//! `otlp.rs`), with `Content-Length`, counting `partial_success` refusals.
//!
//! Output: a table on stdout, `--json FILE` with the totals and a per-second
//! series, `--plot FILE.png` with throughput and latency over time.

mod corpus;
mod driver;
mod grpc;
mod otlp;
mod plot;
mod stats;

use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Command line.
#[derive(Parser, Debug, Clone, serde::Serialize)]
#[command(
    name = "apm-loadgen",
    about = "Agent-like load generator for APM intake servers (loopback only)"
)]
pub struct Args {
    /// Server base URL (must resolve to a loopback address).
    #[arg(long, default_value = "http://127.0.0.1:8200")]
    pub url: String,
    /// Corpus root (default: $APM_CORPUS, else ../shared/corpus).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// Event mix: node (bench/ Node.js capture), intake (intake-v2 files),
    /// rum-v2, rum-v3, otlp (OTLP/HTTP protobuf traces, metrics and logs in
    /// turn, to /v1/*). RUM mixes go to the RUM routes, anonymously.
    #[arg(long, default_value = "node")]
    pub mix: String,
    /// Concurrent streams (agents).
    #[arg(long, default_value_t = 16)]
    pub streams: usize,
    /// Events per request (after the metadata line).
    #[arg(long, default_value_t = 100)]
    pub events_per_request: usize,
    /// Offered load in events per second over all streams; 0 = max rate.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Stop issuing requests after this long.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub duration: Duration,
    /// Stop after this many events (0 = no bound besides --duration).
    #[arg(long, default_value_t = 0)]
    pub max_events: u64,
    /// Per-request timeout (counted as error:timeout).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub timeout: Duration,
    /// gzip level for request bodies (Node's zlib default is 6; 1 keeps the
    /// generator cheap).
    #[arg(long, default_value_t = 1)]
    pub gzip_level: u32,
    /// Send with Content-Length instead of chunked transfer encoding
    /// (Python and RUM agents do; Node streams chunked). RUM mixes default to it.
    #[arg(long)]
    pub content_length: bool,
    /// Chunk size of the chunked body in (compressed) bytes.
    #[arg(long, default_value_t = 16384)]
    pub chunk_size: usize,
    /// Pause between chunks, to mimic Node's long-lived streaming request.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub chunk_interval: Duration,
    /// Pre-build this many distinct bodies and cycle through them (cheap
    /// generator for max-rate runs; ids repeat once the pool wraps).
    /// 0 = build and gzip a fresh body, with fresh ids, for every request.
    #[arg(long, default_value_t = 0)]
    pub pool: usize,
    /// Secret token (`Authorization: Bearer`).
    #[arg(long)]
    #[serde(skip)]
    pub secret_token: Option<String>,
    /// API key, base64 of id:key (`Authorization: ApiKey`).
    #[arg(long)]
    #[serde(skip)]
    pub api_key: Option<String>,
    /// With `--mix otlp`: send the exports over OTLP/gRPC to this URL (the
    /// server's `apm-server.otlp.grpc.host`, e.g. http://127.0.0.1:4317)
    /// instead of OTLP/HTTP to --url.
    #[arg(long)]
    pub grpc: Option<String>,
    /// Force the route: backend, rum-v2 or rum-v3 (default: from the mix).
    #[arg(long)]
    pub route: Option<String>,
    /// RUM: number of distinct client IPs sent in X-Forwarded-For (0 = none).
    #[arg(long, default_value_t = 1000)]
    pub client_ips: u32,
    /// Extra request header `Name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw throughput and latency over time into this PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Print a progress line every this often (0s = never).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(with = "humantime_serde_compat")]
    pub progress: Duration,
}

/// Serialises durations as humantime strings in the JSON report.
mod humantime_serde_compat {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("apm-loadgen: cannot start runtime: {e}");
            std::process::exit(2);
        }
    };
    let code = rt.block_on(async move {
        match driver::run(args).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("apm-loadgen: {e}");
                2
            }
        }
    });
    std::process::exit(code);
}
