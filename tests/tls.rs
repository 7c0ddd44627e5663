//! TLS through the real server with the corpus certificates: HTTPS works,
//! plain HTTP to the TLS port fails cleanly, a required client certificate
//! is enforced, a bad certificate stops start-up.

mod common;
use common::*;
use std::time::Duration;

/// A server with the corpus certificate and key from `tls`, plus `extra`.
fn tls_server(tls: &std::path::Path, extra: &[&str]) -> TestServer {
    let mut o = vec![
        format!(
            "apm-server.ssl.certificate={}",
            tls.join("certificate.pem").display()
        ),
        format!("apm-server.ssl.key={}", tls.join("key.pem").display()),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = o.iter().map(String::as_str).collect();
    TestServer::start(&refs)
}

fn tls_client(
    ca: &[u8],
    addr: std::net::SocketAddr,
    identity: Option<reqwest::Identity>,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
        .resolve("apm-server", addr)
        .timeout(Duration::from_secs(5));
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().unwrap()
}

#[tokio::test]
async fn https_with_corpus_certificates() {
    let Some(c) = corpus("https_with_corpus_certificates") else {
        return;
    };
    let tls = c.join("tls");
    let srv = tls_server(&tls, &[]);
    let server = srv.server.as_ref().unwrap();
    let addr = server.addr;
    let ca = std::fs::read(tls.join("ca.crt.pem")).unwrap();
    let client = tls_client(&ca, addr, None);
    let r = client
        .post(format!(
            "https://apm-server:{}/intake/v2/events?verbose",
            addr.port()
        ))
        .header("content-type", "application/x-ndjson")
        .body(errors_payload(3, "tls", "python"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // plain HTTP to the TLS port fails cleanly (no hang, no 2xx)
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    match plain.get(format!("http://{addr}/")).send().await {
        Ok(r) => assert!(!r.status().is_success(), "plain HTTP must not succeed"),
        Err(e) => assert!(!e.is_timeout(), "plain HTTP must fail fast: {e}"),
    }
}

#[tokio::test]
async fn required_client_certificate_is_enforced() {
    let Some(c) = corpus("required_client_certificate_is_enforced") else {
        return;
    };
    let tls = c.join("tls");
    // A client CA and a client certificate made for this test.
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let client_ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let cli_key = KeyPair::generate().unwrap();
    let mut cli_params = CertificateParams::new(vec!["client".to_string()]).unwrap();
    cli_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cli = cli_params.signed_by(&cli_key, &issuer).unwrap();
    let ca_path = dir.path().join("client-ca.pem");
    std::fs::write(&ca_path, client_ca.pem()).unwrap();

    // certificate_authorities without client_authentication → required
    let srv = tls_server(
        &tls,
        &[&format!(
            "apm-server.ssl.certificate_authorities=[\"{}\"]",
            ca_path.display()
        )],
    );
    let addr = srv.server.as_ref().unwrap().addr;
    let ca = std::fs::read(tls.join("ca.crt.pem")).unwrap();
    let url = format!("https://apm-server:{}/", addr.port());
    let err = tls_client(&ca, addr, None).get(&url).send().await;
    assert!(
        err.is_err(),
        "a client without a certificate must fail the handshake"
    );
    let pem = format!("{}{}", cli.pem(), cli_key.serialize_pem());
    let id = reqwest::Identity::from_pem(pem.as_bytes()).unwrap();
    let r = tls_client(&ca, addr, Some(id))
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

#[test]
fn bad_certificate_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_apm-rs"))
        .args([
            "-E",
            "apm-server.host=127.0.0.1:0",
            "-E",
            &format!("apm-server.ssl.certificate={}", bad.display()),
            "-E",
            &format!("apm-server.ssl.key={}", bad.display()),
            "-E",
            &format!("output.file.path={}", dir.path().display()),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.pem"), "{err}");
}

/// The connection watchdog (src/http/limits.rs) reaches the socket under TLS
/// too: a kept-alive HTTPS connection whose second request head trickles in
/// one byte at a time is shut down after `idle_timeout + read_timeout`
/// instead of being kept open for as long as the client keeps trickling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_second_request_over_tls_is_closed_by_the_watchdog() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(c) = corpus("trickled_second_request_over_tls_is_closed_by_the_watchdog") else {
        return;
    };
    let tls = c.join("tls");
    let srv = tls_server(
        &tls,
        &["apm-server.read_timeout=1s", "apm-server.idle_timeout=1s"],
    );
    let addr = srv.server.as_ref().unwrap().addr;

    let mut roots = rustls::RootCertStore::empty();
    let ca = std::fs::read(tls.join("ca.crt.pem")).unwrap();
    for cert in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("apm-server").unwrap();
    let mut conn = connector.connect(name, tcp).await.unwrap();

    // a first request, answered, keeps the connection alive
    let body = errors_payload(1, "tls", "python");
    let mut first = format!(
        "POST /intake/v2/events HTTP/1.1\r\nHost: apm-server\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    first.extend_from_slice(&body);
    conn.write_all(&first).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("first answer in time")
            .unwrap();
        assert!(n > 0, "closed before the first answer");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    assert!(head.starts_with("HTTP/1.1 202"), "{head}");

    // the second head, one byte every 300 ms: the server must close within
    // a few seconds (limit 2 s), long before the 20 s of trickling end
    let (mut rd, mut wr) = tokio::io::split(conn);
    let trickle = tokio::spawn(async move {
        for b in b"POST /intake/v2/events HTTP/1.1\r\nHost: apm-server\r\nX-Slow: "
            .iter()
            .cycle()
            .take(66)
        {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let started = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(12), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // e.g. a 408 before the close
            }
        }
    })
    .await;
    trickle.abort();
    assert!(
        closed.is_ok(),
        "the TLS connection was still open after {:?}",
        started.elapsed()
    );
}
