//! HTTP/2 abuse against the HTTPS listener (HTTP/2 is offered through ALPN
//! there; the plain listener is HTTP/1.1 only): rapid reset, many stalled
//! streams, SETTINGS and PING floods, a CONTINUATION flood. After each, a
//! fresh client is still answered `202` on `/intake/v2/events` and the
//! process's RSS grew by a bounded amount.

mod common;
use common::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// RSS growth allowed over one test's flood.
const RSS_BOUND: u64 = 256 << 20;

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

struct Tls {
    srv: TestServer,
    connector: tokio_rustls::TlsConnector,
}

fn tls_server(test: &str) -> Option<Tls> {
    let tls = corpus(test)?.join("tls");
    let o = [
        format!(
            "apm-server.ssl.certificate={}",
            tls.join("certificate.pem").display()
        ),
        format!("apm-server.ssl.key={}", tls.join("key.pem").display()),
    ];
    let refs: Vec<&str> = o.iter().map(String::as_str).collect();
    let srv = TestServer::start(&refs);
    let ca = std::fs::read(tls.join("ca.crt.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Some(Tls {
        srv,
        connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
    })
}

impl Tls {
    fn addr(&self) -> std::net::SocketAddr {
        self.srv.server.as_ref().unwrap().addr
    }

    async fn connect(&self) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(self.addr()).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("apm-server").unwrap();
        let conn = self.connector.connect(name, tcp).await.unwrap();
        assert_eq!(conn.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        conn
    }

    /// A fresh HTTP/2 connection is answered `202` on `/intake/v2/events`.
    async fn still_serves(&self) {
        let conn = self.connect().await;
        let (client, connection) = h2::client::handshake(conn).await.unwrap();
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut c = client.ready().await.unwrap();
        let (resp, mut body) = c.send_request(intake_request(), false).unwrap();
        body.send_data(errors_payload(2, "h2", "python").into(), true)
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("answered in time")
            .unwrap();
        assert_eq!(resp.status().as_u16(), 202);
        driver.abort();
    }
}

fn intake_request() -> http::Request<()> {
    http::Request::post("https://apm-server/intake/v2/events")
        .header("content-type", "application/x-ndjson")
        .body(())
        .unwrap()
}

/// One raw HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Writes `frames` after the preface and an empty SETTINGS, in chunks, until
/// the server closes the connection or everything is written; then reads
/// until the close (or 10 s). Returns true when the server closed early.
async fn flood(t: &Tls, frames: impl Iterator<Item = Vec<u8>>) -> bool {
    let conn = t.connect().await;
    let (mut rd, mut wr) = tokio::io::split(conn);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 << 10];
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    });
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    let mut closed = false;
    for f in frames {
        out.extend(f);
        if out.len() >= 64 << 10 {
            if wr.write_all(&out).await.is_err() {
                closed = true;
                break;
            }
            out.clear();
        }
    }
    if !closed && wr.write_all(&out).await.is_err() {
        closed = true;
    }
    let _ = reader.await;
    closed
}

/// Rapid reset (CVE-2023-44487): up to 100,000 requests each cancelled right
/// after it was opened. The server ends such a connection (`GOAWAY
/// ENHANCE_YOUR_CALM`) before the client is done; it keeps serving others
/// and does not grow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_of_many_streams_leaves_the_server_serving() {
    let Some(t) = tls_server("rapid_reset_of_many_streams_leaves_the_server_serving") else {
        return;
    };
    let start = rss();
    let conn = t.connect().await;
    let (mut client, connection) = h2::client::handshake(conn).await.unwrap();
    let driver = tokio::spawn(connection);
    let mut sent = 0;
    for _ in 0..100_000 {
        let Ok(mut c) = client.clone().ready().await else {
            break;
        };
        let Ok((_resp, mut body)) = c.send_request(intake_request(), false) else {
            break;
        };
        body.send_reset(h2::Reason::CANCEL);
        sent += 1;
        client = c;
    }
    let ended = tokio::time::timeout(Duration::from_secs(10), driver).await;
    eprintln!("rapid reset: {sent} streams opened and reset; connection: {ended:?}");
    assert!(
        sent < 100_000,
        "the server let one connection reset {sent} streams"
    );
    t.still_serves().await;
    let grown = rss().saturating_sub(start);
    assert!(grown < RSS_BOUND, "RSS grew by {grown} bytes");
}

/// 500 concurrent streams (on 5 connections), each sending part of a body
/// and then nothing: every stream is held by the flow-control windows; a
/// fresh client is still served while they stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_slow_streams_leave_the_server_serving() {
    let Some(t) = tls_server("many_concurrent_slow_streams_leave_the_server_serving") else {
        return;
    };
    let start = rss();
    let mut held = Vec::new();
    let line = errors_payload(1, "h2", "python");
    for _ in 0..5 {
        let conn = t.connect().await;
        let (client, connection) = h2::client::handshake(conn).await.unwrap();
        held.push(tokio::spawn(async move {
            let _ = connection.await;
        }));
        for _ in 0..100 {
            let mut c = client.clone().ready().await.unwrap();
            let (resp, mut body) = c.send_request(intake_request(), false).unwrap();
            body.send_data(bytes::Bytes::from(line.clone()), false)
                .unwrap();
            held.push(tokio::spawn(async move {
                let _keep = body;
                let _ = resp.await;
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    t.still_serves().await;
    let grown = rss().saturating_sub(start);
    eprintln!("500 stalled streams: RSS grew by {grown} bytes");
    assert!(grown < RSS_BOUND, "RSS grew by {grown} bytes");
    for h in held {
        h.abort();
    }
}

/// 200,000 SETTINGS frames and 200,000 PINGs on one connection: each needs
/// an acknowledgement the client never reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_leave_the_server_serving() {
    let Some(t) = tls_server("settings_and_ping_floods_leave_the_server_serving") else {
        return;
    };
    let start = rss();
    let settings = (0..200_000).map(|_| frame(0x4, 0, 0, &[]));
    let closed = flood(&t, settings).await;
    eprintln!("SETTINGS flood: closed by the server early: {closed}");
    let pings = (0..200_000u64).map(|i| frame(0x6, 0, 0, &i.to_be_bytes()));
    let closed = flood(&t, pings).await;
    eprintln!("PING flood: closed by the server early: {closed}");
    t.still_serves().await;
    let grown = rss().saturating_sub(start);
    assert!(grown < RSS_BOUND, "RSS grew by {grown} bytes");
}

/// A HEADERS frame without END_HEADERS followed by 200,000 CONTINUATION
/// frames (CVE-2024-27316 family): the header block is never complete.
/// The `h2` crate cannot send this, so the frames are written raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuation_flood_leaves_the_server_serving() {
    let Some(t) = tls_server("continuation_flood_leaves_the_server_serving") else {
        return;
    };
    let start = rss();
    // ":method: POST" indexed (0x83), then literal headers without indexing
    let headers = std::iter::once(frame(0x1, 0, 1, &[0x83]));
    let block = [0x00, 0x01, b'x', 0x10]
        .into_iter()
        .chain(std::iter::repeat_n(b'a', 16))
        .collect::<Vec<u8>>();
    let continuations = (0..200_000).map(move |_| frame(0x9, 0, 1, &block));
    let closed = flood(&t, headers.chain(continuations)).await;
    eprintln!("CONTINUATION flood: closed by the server early: {closed}");
    t.still_serves().await;
    let grown = rss().saturating_sub(start);
    eprintln!("CONTINUATION flood: RSS grew by {grown} bytes");
    assert!(grown < RSS_BOUND, "RSS grew by {grown} bytes");
}

/// The HPACK "bomb": one 4 KB header enters the dynamic table, then header
/// blocks of 16,000 one-byte references to it would each decode to 64 MB
/// of headers, on 200 streams. The decoder stops at the header-list limit
/// and the connection or streams are refused; memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpack_table_references_that_expand_to_huge_header_lists_leave_the_server_serving() {
    let Some(t) = tls_server(
        "hpack_table_references_that_expand_to_huge_header_lists_leave_the_server_serving",
    ) else {
        return;
    };
    let start = rss();
    // literal header with incremental indexing, new name "x", 4000-byte value
    // (HPACK integers: 0x40 literal-with-indexing, name length 1, value
    // length 4000 = 127 + 3873 in 7-bit prefix continuation bytes)
    let mut first = vec![0x83, 0x40, 0x01, b'x', 0x7f];
    let mut rest = 4000 - 127;
    while rest >= 128 {
        first.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    first.push(rest as u8);
    first.extend(std::iter::repeat_n(b'a', 4000));
    // END_HEADERS (0x4); the entry is index 62, the first dynamic one (0xbe)
    let setup = std::iter::once(frame(0x1, 0x4, 1, &first));
    let mut bomb = vec![0x83];
    bomb.extend(std::iter::repeat_n(0xbe, 16_000));
    let streams = (1..=200u32).map(move |i| frame(0x1, 0x4, 1 + 2 * i, &bomb));
    let closed = flood(&t, setup.chain(streams)).await;
    eprintln!("HPACK bomb: closed by the server early: {closed}");
    t.still_serves().await;
    let grown = rss().saturating_sub(start);
    eprintln!("HPACK bomb: RSS grew by {grown} bytes");
    assert!(grown < RSS_BOUND, "RSS grew by {grown} bytes");
}

/// 200,000 WINDOW_UPDATE frames, on the connection and on a stream that
/// never sends its body: flow-control bookkeeping stays bounded and other
/// clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_update_flood_leaves_the_server_serving() {
    let Some(t) = tls_server("window_update_flood_leaves_the_server_serving") else {
        return;
    };
    let start = rss();
    // a request whose body never comes keeps stream 1 open
    let open = std::iter::once(frame(0x1, 0x4, 1, &[0x83]));
    let updates =
        (0..200_000u32).map(|i| frame(0x8, 0, if i % 2 == 0 { 0 } else { 1 }, &1u32.to_be_bytes()));
    let closed = flood(&t, open.chain(updates)).await;
    eprintln!("WINDOW_UPDATE flood: closed by the server early: {closed}");
    t.still_serves().await;
    let grown = rss().saturating_sub(start);
    eprintln!("WINDOW_UPDATE flood: RSS grew by {grown} bytes");
    assert!(grown < RSS_BOUND, "RSS grew by {grown} bytes");
}
