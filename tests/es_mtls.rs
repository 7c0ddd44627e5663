//! Every Elasticsearch caller of the real server — output bulk, API-key
//! check, source-map upload, agent configuration — talks to an
//! Elasticsearch double served over TLS that requires a client certificate,
//! with the TLS settings of `output.elasticsearch` (which the API-key check,
//! the source-map store and agent configuration fall back to). Before the
//! one client in `src/es/`, agent configuration ignored the client
//! certificate and `ssl.verification_mode`.

mod common;

use base64::Engine;
use common::{post, TestServer};
use es_double::{ApiKeyAnswer, EsDouble};
use reqwest::Method;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const AGENT_INDEX: &str = ".apm-agent-configuration";
const BOUNDARY: &str = "----apmrsmtls";

/// Server certificate files from the corpus (DNS name `apm-server`, not
/// 127.0.0.1, signed by `ca.crt.pem`).
fn corpus_tls(test: &str) -> Option<PathBuf> {
    let p = common::corpus(test)?.join("tls");
    p.join("ca.crt.pem").is_file().then_some(p)
}

/// A client CA and a client certificate signed by it, written to `dir`:
/// (client CA, client certificate, client key).
fn client_identity(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["apm-rs".to_string()]).expect("params");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).expect("client certificate");
    let paths = (
        dir.join("client-ca.pem"),
        dir.join("client.pem"),
        dir.join("client-key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write");
    std::fs::write(&paths.1, cert.pem()).expect("write");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write");
    paths
}

struct Rig {
    es: EsDouble,
    corpus: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    _dir: tempfile::TempDir,
}

fn rig(test: &str) -> Option<Rig> {
    let corpus = corpus_tls(test)?;
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_ca, client_cert, client_key) = client_identity(dir.path());
    let es = EsDouble::start_with(es_double::Options {
        tls: Some(es_double::TlsFiles {
            certificate: corpus.join("certificate.pem"),
            key: corpus.join("key.pem"),
            client_ca: Some(client_ca),
        }),
        ..Default::default()
    })
    .expect("TLS double");
    es.put_doc(
        AGENT_INDEX,
        "1",
        serde_json::json!({"service": {"name": "opbeans"}, "etag": "e1",
            "settings": {"transaction_sample_rate": "0.5"}}),
    );
    Some(Rig {
        es,
        corpus,
        client_cert,
        client_key,
        _dir: dir,
    })
}

impl Rig {
    /// A server whose only Elasticsearch settings are `output.elasticsearch`
    /// (trusting the corpus CA), plus `extra`.
    fn server(&self, with_client_cert: bool, extra: &[&str]) -> TestServer {
        let mut ov = common::es_output_overrides(
            &format!("https://{}", self.es.host()),
            &[
                &format!(
                    "output.elasticsearch.ssl.certificate_authorities=[\"{}\"]",
                    self.corpus.join("ca.crt.pem").display()
                ),
                "apm-server.agent.config.cache.expiration=1s",
                "apm-server.auth.api_key.enabled=true",
                "apm-server.rum.enabled=true",
            ],
        );
        if with_client_cert {
            ov.push(format!(
                "output.elasticsearch.ssl.certificate={}",
                self.client_cert.display()
            ));
            ov.push(format!(
                "output.elasticsearch.ssl.key={}",
                self.client_key.display()
            ));
        }
        ov.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = ov.iter().map(String::as_str).collect();
        TestServer::start(&refs)
    }
}

fn api_key(id: &str) -> String {
    format!(
        "ApiKey {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:k"))
    )
}

/// Polls agent configuration for `opbeans` for up to `wait`; the last status
/// and body.
async fn agent_config(srv: &TestServer, auth: &str, wait: Duration) -> (u16, String) {
    let url = format!("{}/config/v1/agents?service.name=opbeans", srv.url);
    let until = Instant::now() + wait;
    loop {
        let headers: &[(&str, &str)] = if auth.is_empty() {
            &[]
        } else {
            &[("authorization", auth)]
        };
        let r = common::send(Method::GET, &url, Vec::new(), headers).await;
        if r.status == 200 || Instant::now() >= until {
            return (r.status, r.body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn multipart(map: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for (k, v) in [
        ("service_name", "apm-agent-js"),
        ("service_version", "1.0.1"),
        ("bundle_filepath", "/b.js"),
    ] {
        b.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    b.extend_from_slice(
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"sourcemap\"; filename=\"b.js.map\"\r\nContent-Type: application/json\r\n\r\n").as_bytes(),
    );
    b.extend_from_slice(map);
    b.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_elasticsearch_caller_presents_the_client_certificate() {
    let Some(rig) = rig("every_elasticsearch_caller_presents_the_client_certificate") else {
        return;
    };
    rig.es.set_api_key(
        "agent",
        "k",
        ApiKeyAnswer::granted(
            "u",
            &["config_agent:read", "event:write", "sourcemap:write"],
        ),
    );
    let srv = rig.server(
        true,
        &["output.elasticsearch.ssl.verification_mode=certificate"],
    );
    let auth = api_key("agent");

    // agent configuration, read from Elasticsearch (API key checked there too)
    let (status, body) = agent_config(&srv, &auth, Duration::from_secs(15)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("transaction_sample_rate"), "{body}");
    assert!(rig.es.has_privileges_calls() >= 1);

    // output bulk
    let r = post(
        &format!("{}/intake/v2/events", srv.url),
        common::errors_payload(3, "opbeans", "go"),
        &[
            ("content-type", "application/x-ndjson"),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let until = Instant::now() + Duration::from_secs(15);
    while rig.es.doc_count() < 3 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rig.es.doc_count() >= 3, "events indexed over mTLS");

    // source-map upload (document PUT)
    let map = br#"{"version":3,"sources":["a.js"],"names":[],"mappings":"AAAA","file":"b.js"}"#;
    let r = post(
        &format!("{}/assets/v1/sourcemaps", srv.url),
        multipart(map),
        &[
            (
                "content-type",
                &format!("multipart/form-data; boundary={BOUNDARY}"),
            ),
            ("authorization", &auth),
        ],
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(rig.es.docs(".apm-source-map").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_client_certificate_nothing_reaches_elasticsearch() {
    let Some(rig) = rig("without_the_client_certificate_nothing_reaches_elasticsearch") else {
        return;
    };
    rig.es.set_api_key(
        "agent",
        "k",
        ApiKeyAnswer::granted(
            "u",
            &["config_agent:read", "event:write", "sourcemap:write"],
        ),
    );
    let srv = rig.server(
        false,
        &["output.elasticsearch.ssl.verification_mode=certificate"],
    );
    let (status, body) = agent_config(&srv, &api_key("agent"), Duration::from_secs(3)).await;
    assert_ne!(status, 200, "{body}");
    assert_eq!(rig.es.has_privileges_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_config_honours_full_verification_mode() {
    let Some(rig) = rig("agent_config_honours_full_verification_mode") else {
        return;
    };
    // Anonymous agent config (no API key) so that only the refresh talks to
    // Elasticsearch: the certificate names `apm-server`, we dial 127.0.0.1.
    let srv = rig.server(
        true,
        &[
            "apm-server.auth.api_key.enabled=false",
            "output.elasticsearch.ssl.verification_mode=full",
        ],
    );
    let (status, body) = agent_config(&srv, "", Duration::from_secs(3)).await;
    assert_eq!(
        status, 503,
        "full verification refuses the host name: {body}"
    );

    let srv = rig.server(
        true,
        &[
            "apm-server.auth.api_key.enabled=false",
            "output.elasticsearch.ssl.verification_mode=certificate",
        ],
    );
    let (status, body) = agent_config(&srv, "", Duration::from_secs(15)).await;
    assert_eq!(status, 200, "{body}");
}

/// Kibana (here the same TLS double: it has no Kibana route, so it answers
/// the agent-configuration search 404, which Kibana's client reads as "no
/// configuration") is asked while Elasticsearch is unreachable. Its client
/// is built by the same code: the client certificate must be presented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kibana_fallback_presents_the_client_certificate() {
    let Some(rig) = rig("kibana_fallback_presents_the_client_certificate") else {
        return;
    };
    let kibana = |with_cert: bool| {
        let mut ov = vec![
            "output.elasticsearch.hosts=[\"http://127.0.0.1:9\"]".to_string(),
            "apm-server.kibana.enabled=true".to_string(),
            format!("apm-server.kibana.host=https://{}", rig.es.host()),
            format!(
                "apm-server.kibana.ssl.certificate_authorities=[\"{}\"]",
                rig.corpus.join("ca.crt.pem").display()
            ),
            "apm-server.kibana.ssl.verification_mode=certificate".to_string(),
        ];
        if with_cert {
            ov.push(format!(
                "apm-server.kibana.ssl.certificate={}",
                rig.client_cert.display()
            ));
            ov.push(format!(
                "apm-server.kibana.ssl.key={}",
                rig.client_key.display()
            ));
        }
        let refs: Vec<&str> = ov.iter().map(String::as_str).collect();
        TestServer::start(&refs)
    };
    let srv = kibana(true);
    let (status, body) = agent_config(&srv, "", Duration::from_secs(5)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "{}");

    let srv = kibana(false);
    let (status, body) = agent_config(&srv, "", Duration::from_secs(2)).await;
    assert_eq!(
        status, 503,
        "no client certificate, no answer from Kibana: {body}"
    );
}
