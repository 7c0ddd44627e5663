//! `es-double --listen 127.0.0.1:9200 [--fast]`: runs the Elasticsearch test
//! double until interrupted. Faults are set over HTTP (`POST /_double/faults`).

use clap::Parser;
use std::net::SocketAddr;

#[derive(Parser, Debug)]
#[command(name = "es-double", about = "Elasticsearch test double for apm-rs")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9200")]
    listen: SocketAddr,
    /// Only count bulk documents (load tests).
    #[arg(long)]
    fast: bool,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Serve HTTPS with this certificate (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_certificate: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-certificate.
    #[arg(long, requires = "tls_certificate")]
    tls_key: Option<std::path::PathBuf>,
}

fn main() {
    let args = Args::parse();
    let es = match es_double::EsDouble::start_with(es_double::Options {
        listen: args.listen,
        fast: args.fast,
        workers: args.workers,
        tls: match (args.tls_certificate, args.tls_key) {
            (Some(certificate), Some(key)) => Some(es_double::TlsFiles {
                certificate,
                key,
                client_ca: None,
            }),
            _ => None,
        },
    }) {
        Ok(es) => es,
        Err(e) => {
            eprintln!("es-double: cannot listen on {}: {e}", args.listen);
            std::process::exit(1);
        }
    };
    eprintln!(
        "es-double listening on {}{}",
        es.url(),
        if args.fast { " (fast mode)" } else { "" }
    );
    loop {
        std::thread::park();
    }
}
