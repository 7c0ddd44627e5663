//! Server TLS with rustls (`apm-server.ssl.*`; see docs/security.md).
//!
//! [`server_config`] turns `apm-server.ssl.*` into a `rustls::ServerConfig`
//! (ring provider) for actix-web's `bind_rustls_0_23`:
//! * certificate chain and key from PEM files; keys may be PKCS#8, PKCS#1
//!   (RSA) or SEC1 (EC), and PKCS#8 keys may be encrypted (`ENCRYPTED
//!   PRIVATE KEY`, PBES2 with PBKDF2 or scrypt and AES-CBC) with
//!   `key_passphrase`. Legacy OpenSSL-encrypted PEM (`Proc-Type:
//!   4,ENCRYPTED`) is refused with a conversion hint;
//! * `supported_protocols`: `TLSv1.2`, `TLSv1.3` (default both); `TLSv1.0`,
//!   `TLSv1` and `TLSv1.1` are refused as not supported by rustls;
//! * `cipher_suites`: Go/Elastic names (`ECDHE-RSA-AES-128-GCM-SHA256`) or
//!   IANA names (`TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`), case-insensitive.
//!   They restrict TLS 1.2 only; TLS 1.3 suites are always all enabled (as
//!   in Go). Names of suites rustls does not implement (CBC, RC4, 3DES,
//!   RSA key exchange) are refused naming the suite;
//! * `curve_types`: `X25519`, `P-256`, `P-384` (`P-521` is refused);
//! * `client_authentication`: `none` | `optional` | `required`, verified
//!   against `certificate_authorities`; the default is `required` when CAs
//!   are set and `none` otherwise. `optional`/`required` without CAs is an
//!   error (there is no system client-CA store);
//! * ALPN `h2` then `http/1.1`.
//!
//! Invariants: every error names the file or setting at fault; nothing
//! panics on file contents.

use crate::config::ServerTls;
use rustls::crypto::ring as provider;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite, SupportedProtocolVersion};
use std::sync::Arc;

/// Invalid or unusable TLS settings (start-up error).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("invalid PEM in {what} {path}: {message}")]
    Pem {
        what: &'static str,
        path: String,
        message: String,
    },
    #[error("no certificate found in {what} {path}")]
    NoCertificate { what: &'static str, path: String },
    #[error("no private key found in {path} (expected a PEM PKCS#8, PKCS#1 RSA or SEC1 EC key)")]
    NoKey { path: String },
    #[error("key {path} is encrypted but `apm-server.ssl.key_passphrase` is empty")]
    PassphraseMissing { path: String },
    #[error("cannot decrypt key {path}: wrong `apm-server.ssl.key_passphrase` or unsupported encryption ({message})")]
    Decrypt { path: String, message: String },
    #[error("key {path} uses legacy OpenSSL PEM encryption (Proc-Type: 4,ENCRYPTED), which is not supported; convert it to encrypted PKCS#8, e.g. `openssl pkcs8 -topk8 -v2 aes-256-cbc -in old.pem -out new.pem`")]
    LegacyEncryptedKey { path: String },
    #[error("certificate {certificate} and key {key} cannot be used: {message}")]
    CertKey {
        certificate: String,
        key: String,
        message: String,
    },
    #[error(
        "`apm-server.ssl.certificate` and `apm-server.ssl.key` are required when TLS is enabled"
    )]
    MissingFiles,
    #[error("TLS version {0:?} in `apm-server.ssl.supported_protocols` is not supported by rustls (supported: TLSv1.2, TLSv1.3)")]
    UnsupportedProtocol(String),
    #[error("unknown TLS version {0:?} in `apm-server.ssl.supported_protocols` (expected TLSv1.2 or TLSv1.3)")]
    UnknownProtocol(String),
    #[error("cipher suite {0:?} in `apm-server.ssl.cipher_suites` is not supported by rustls (supported: {SUPPORTED_SUITES})")]
    UnsupportedCipherSuite(String),
    #[error("unknown cipher suite {0:?} in `apm-server.ssl.cipher_suites` (supported: {SUPPORTED_SUITES})")]
    UnknownCipherSuite(String),
    #[error("curve {0:?} in `apm-server.ssl.curve_types` is not supported by rustls (supported: X25519, P-256, P-384)")]
    UnsupportedCurve(String),
    #[error(
        "unknown curve {0:?} in `apm-server.ssl.curve_types` (expected X25519, P-256 or P-384)"
    )]
    UnknownCurve(String),
    #[error("invalid `apm-server.ssl.client_authentication`: {0}")]
    ClientAuth(String),
    #[error("invalid certificate authority {path}: {message}")]
    Ca { path: String, message: String },
    #[error("invalid TLS settings: {0}")]
    Config(String),
}

const SUPPORTED_SUITES: &str = "ECDHE-ECDSA-AES-128-GCM-SHA256, ECDHE-ECDSA-AES-256-GCM-SHA384, ECDHE-ECDSA-CHACHA20-POLY1305, ECDHE-RSA-AES-128-GCM-SHA256, ECDHE-RSA-AES-256-GCM-SHA384, ECDHE-RSA-CHACHA20-POLY1305";

/// Suites rustls implements: (names, suite). TLS 1.3 names are accepted and
/// always enabled.
fn known_suites() -> Vec<(&'static [&'static str], SupportedCipherSuite)> {
    use provider::cipher_suite as cs;
    vec![
        (
            &[
                "ECDHE-ECDSA-AES-128-GCM-SHA256",
                "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
            ],
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            &[
                "ECDHE-ECDSA-AES-256-GCM-SHA384",
                "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
            ],
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            &[
                "ECDHE-ECDSA-CHACHA20-POLY1305",
                "ECDHE-ECDSA-CHACHA20-POLY1205",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305",
            ],
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            &[
                "ECDHE-RSA-AES-128-GCM-SHA256",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
            ],
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            &[
                "ECDHE-RSA-AES-256-GCM-SHA384",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
            ],
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ),
        (
            &[
                "ECDHE-RSA-CHACHA20-POLY1305",
                "ECDHE-RSA-CHACHA20-POLY1205",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            ],
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ),
        (
            &["TLS-AES-128-GCM-SHA256", "TLS_AES_128_GCM_SHA256"],
            cs::TLS13_AES_128_GCM_SHA256,
        ),
        (
            &["TLS-AES-256-GCM-SHA384", "TLS_AES_256_GCM_SHA384"],
            cs::TLS13_AES_256_GCM_SHA384,
        ),
        (
            &[
                "TLS-CHACHA20-POLY1305-SHA256",
                "TLS_CHACHA20_POLY1305_SHA256",
            ],
            cs::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ]
}

/// Names Go accepts for suites rustls does not implement.
const UNSUPPORTED_SUITES: &[&str] = &[
    "RSA-RC4-128-SHA",
    "RSA-3DES-CBC3-SHA",
    "RSA-AES-128-CBC-SHA",
    "RSA-AES-256-CBC-SHA",
    "RSA-AES-128-CBC-SHA256",
    "RSA-AES-128-GCM-SHA256",
    "RSA-AES-256-GCM-SHA384",
    "ECDHE-ECDSA-RC4-128-SHA",
    "ECDHE-ECDSA-AES-128-CBC-SHA",
    "ECDHE-ECDSA-AES-256-CBC-SHA",
    "ECDHE-ECDSA-AES-128-CBC-SHA256",
    "ECDHE-RSA-RC4-128-SHA",
    "ECDHE-RSA-3DES-CBC3-SHA",
    "ECDHE-RSA-AES-128-CBC-SHA",
    "ECDHE-RSA-AES-256-CBC-SHA",
    "ECDHE-RSA-AES-128-CBC-SHA256",
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

fn cipher_suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, TlsError> {
    let known = known_suites();
    let mut tls12 = Vec::new();
    for name in names {
        let n = name.trim();
        if let Some((_, s)) = known
            .iter()
            .find(|(aliases, _)| aliases.iter().any(|a| a.eq_ignore_ascii_case(n)))
        {
            if s.version() == &rustls::version::TLS12 && !tls12.contains(s) {
                tls12.push(*s);
            }
        } else if UNSUPPORTED_SUITES.iter().any(|a| a.eq_ignore_ascii_case(n)) {
            return Err(TlsError::UnsupportedCipherSuite(name.clone()));
        } else {
            return Err(TlsError::UnknownCipherSuite(name.clone()));
        }
    }
    // TLS 1.3 suites are not configurable (Go), TLS 1.2 ones in the given order.
    let mut suites: Vec<SupportedCipherSuite> = provider::ALL_CIPHER_SUITES
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    suites.extend(tls12);
    Ok(suites)
}

fn protocol_versions(names: &[String]) -> Result<Vec<&'static SupportedProtocolVersion>, TlsError> {
    if names.is_empty() {
        return Ok(vec![&rustls::version::TLS12, &rustls::version::TLS13]);
    }
    let mut out: Vec<&'static SupportedProtocolVersion> = Vec::new();
    for name in names {
        let v = match name.trim() {
            "TLSv1.2" => &rustls::version::TLS12,
            "TLSv1.3" => &rustls::version::TLS13,
            "TLSv1.0" | "TLSv1" | "TLSv1.1" | "SSLv3" => {
                return Err(TlsError::UnsupportedProtocol(name.clone()))
            }
            _ => return Err(TlsError::UnknownProtocol(name.clone())),
        };
        if !out.contains(&v) {
            out.push(v);
        }
    }
    Ok(out)
}

fn kx_groups(
    names: &[String],
) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, TlsError> {
    if names.is_empty() {
        return Ok(provider::DEFAULT_KX_GROUPS.to_vec());
    }
    let mut out: Vec<&'static dyn rustls::crypto::SupportedKxGroup> = Vec::new();
    for name in names {
        let g = match name.trim().to_ascii_uppercase().as_str() {
            "X25519" => provider::kx_group::X25519,
            "P-256" | "P256" | "SECP256R1" | "CURVEP256" => provider::kx_group::SECP256R1,
            "P-384" | "P384" | "SECP384R1" | "CURVEP384" => provider::kx_group::SECP384R1,
            "P-521" | "P521" | "SECP521R1" | "CURVEP521" => {
                return Err(TlsError::UnsupportedCurve(name.clone()))
            }
            _ => return Err(TlsError::UnknownCurve(name.clone())),
        };
        if !out.iter().any(|x| x.name() == g.name()) {
            out.push(g);
        }
    }
    Ok(out)
}

fn read(what: &'static str, path: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_string(),
        source,
    })
}

/// All certificates of a PEM file (at least one).
pub fn load_certs(
    what: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            what,
            path: path.to_string(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_string(),
        });
    }
    Ok(certs)
}

/// The PEM block `label` of `text`, if present (whole BEGIN…END text).
fn pem_block<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)?;
    let stop = text[start..].find(&end)? + start + end.len();
    Some(&text[start..stop])
}

/// The private key of a PEM file, decrypting encrypted PKCS#8 with `passphrase`.
pub fn load_key(path: &str, passphrase: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    let text = String::from_utf8_lossy(&pem);
    if let Some(block) = pem_block(&text, "ENCRYPTED PRIVATE KEY") {
        if passphrase.is_empty() {
            return Err(TlsError::PassphraseMissing {
                path: path.to_string(),
            });
        }
        let (_, der) =
            pkcs8::der::pem::decode_vec(block.as_bytes()).map_err(|e| TlsError::Pem {
                what: "key",
                path: path.to_string(),
                message: e.to_string(),
            })?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(der.as_slice()).map_err(|e| {
            TlsError::Pem {
                what: "key",
                path: path.to_string(),
                message: e.to_string(),
            }
        })?;
        let doc = info.decrypt(passphrase).map_err(|e| TlsError::Decrypt {
            path: path.to_string(),
            message: e.to_string(),
        })?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            doc.as_bytes().to_vec(),
        )));
    }
    if text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::LegacyEncryptedKey {
            path: path.to_string(),
        });
    }
    match rustls_pemfile::private_key(&mut pem.as_slice()) {
        Ok(Some(k)) => Ok(k),
        Ok(None) => Err(TlsError::NoKey {
            path: path.to_string(),
        }),
        Err(e) => Err(TlsError::Pem {
            what: "key",
            path: path.to_string(),
            message: e.to_string(),
        }),
    }
}

/// Client-certificate policy after the default rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Optional,
    Required,
}

/// `client_authentication`, defaulting to `required` when CAs are set.
pub fn client_auth(cfg: &ServerTls) -> Result<ClientAuth, TlsError> {
    match cfg.client_authentication.as_deref().map(str::trim) {
        None if cfg.certificate_authorities.is_empty() => Ok(ClientAuth::None),
        None => Ok(ClientAuth::Required),
        Some("none") => Ok(ClientAuth::None),
        Some("optional") => Ok(ClientAuth::Optional),
        Some("required") => Ok(ClientAuth::Required),
        Some(other) => Err(TlsError::ClientAuth(format!(
            "{other:?} is not one of none, optional, required"
        ))),
    }
}

/// Builds the server's rustls configuration from `apm-server.ssl.*`.
pub fn server_config(cfg: &ServerTls) -> Result<ServerConfig, TlsError> {
    if cfg.certificate.trim().is_empty() || cfg.key.trim().is_empty() {
        return Err(TlsError::MissingFiles);
    }
    let versions = protocol_versions(&cfg.supported_protocols)?;
    let mut crypto: CryptoProvider = provider::default_provider();
    if !cfg.cipher_suites.is_empty() {
        crypto.cipher_suites = cipher_suites(&cfg.cipher_suites)?;
    }
    crypto.kx_groups = kx_groups(&cfg.curve_types)?;
    let crypto = Arc::new(crypto);

    let certs = load_certs("certificate", &cfg.certificate)?;
    let key = load_key(&cfg.key, cfg.key_passphrase.expose())?;

    let builder = ServerConfig::builder_with_provider(crypto.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| {
            TlsError::Config(format!("{e} (check supported_protocols and cipher_suites)"))
        })?;

    let mode = client_auth(cfg)?;
    let builder = if mode == ClientAuth::None {
        builder.with_no_client_auth()
    } else {
        if cfg.certificate_authorities.is_empty() {
            return Err(TlsError::ClientAuth(
                "`optional` and `required` need `apm-server.ssl.certificate_authorities`".into(),
            ));
        }
        let mut roots = RootCertStore::empty();
        for path in &cfg.certificate_authorities {
            for c in load_certs("certificate authority", path)? {
                roots.add(c).map_err(|e| TlsError::Ca {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            }
        }
        let vb = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crypto);
        let vb = if mode == ClientAuth::Optional {
            vb.allow_unauthenticated()
        } else {
            vb
        };
        let verifier = vb
            .build()
            .map_err(|e| TlsError::ClientAuth(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::CertKey {
            certificate: cfg.certificate.clone(),
            key: cfg.key.clone(),
            message: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use rustls::pki_types::ServerName;
    use rustls::{ClientConfig, ClientConnection, ServerConnection};
    use std::path::{Path, PathBuf};

    fn corpus() -> Option<PathBuf> {
        let dir = std::env::var_os("APM_CORPUS")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
        let tls = dir.join("tls");
        if tls.join("certificate.pem").exists() {
            Some(tls)
        } else {
            println!(
                "SKIPPED: corpus not found at {} (set APM_CORPUS)",
                dir.display()
            );
            eprintln!(
                "SKIPPED: corpus not found at {} (set APM_CORPUS)",
                dir.display()
            );
            None
        }
    }

    /// Test PKI written to a temp dir: CA, server cert for `localhost`, client cert.
    struct Pki {
        dir: tempfile::TempDir,
        ca_der: CertificateDer<'static>,
        client_chain: Vec<CertificateDer<'static>>,
        client_key: PrivateKeyDer<'static>,
        server_key_der: Vec<u8>,
    }

    impl Pki {
        fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let ca_key = KeyPair::generate().unwrap();
            let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_cert = ca_params.self_signed(&ca_key).unwrap();
            let issuer = Issuer::new(ca_params, ca_key);
            let srv_key = KeyPair::generate().unwrap();
            let srv = CertificateParams::new(vec!["localhost".to_string()])
                .unwrap()
                .signed_by(&srv_key, &issuer)
                .unwrap();
            let cli_key = KeyPair::generate().unwrap();
            let cli = CertificateParams::new(vec!["client".to_string()])
                .unwrap()
                .signed_by(&cli_key, &issuer)
                .unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
            std::fs::write(dir.path().join("server.pem"), srv.pem()).unwrap();
            std::fs::write(dir.path().join("server.key"), srv_key.serialize_pem()).unwrap();
            Pki {
                ca_der: ca_cert.der().clone(),
                client_chain: vec![cli.der().clone()],
                client_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cli_key.serialize_der())),
                server_key_der: srv_key.serialize_der(),
                dir,
            }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        fn write(&self, name: &str, content: &[u8]) -> String {
            std::fs::write(self.dir.path().join(name), content).unwrap();
            self.path(name)
        }

        fn tls(&self) -> ServerTls {
            ServerTls {
                certificate: self.path("server.pem"),
                key: self.path("server.key"),
                ..Default::default()
            }
        }

        fn client(
            &self,
            with_cert: bool,
            versions: &[&'static SupportedProtocolVersion],
        ) -> Arc<ClientConfig> {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            client_config(
                roots,
                versions,
                with_cert.then(|| (self.client_chain.clone(), self.client_key.clone_key())),
            )
        }
    }

    fn client_config(
        roots: RootCertStore,
        versions: &[&'static SupportedProtocolVersion],
        cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Arc<ClientConfig> {
        let b = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        let mut c = match cert {
            Some((chain, key)) => b.with_client_auth_cert(chain, key).unwrap(),
            None => b.with_no_client_auth(),
        };
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(c)
    }

    const BOTH: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12, &rustls::version::TLS13];

    /// In-memory handshake; Ok with the server side when both ends finished.
    fn handshake(
        server: ServerConfig,
        client: Arc<ClientConfig>,
        name: &str,
    ) -> Result<ServerConnection, rustls::Error> {
        let mut s = ServerConnection::new(Arc::new(server))?;
        let mut c = ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap())?;
        for _ in 0..50 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = buf.as_slice();
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            if !s.is_handshaking() && !c.is_handshaking() && !c.wants_write() && !s.wants_write() {
                return Ok(s);
            }
        }
        Err(rustls::Error::General("handshake did not finish".into()))
    }

    #[test]
    fn corpus_rsa_pkcs8_and_pkcs1() {
        let Some(dir) = corpus() else { return };
        let p = |f: &str| dir.join(f).display().to_string();
        let cfg = ServerTls {
            certificate: p("certificate.pem"),
            key: p("key.pem"),
            ..Default::default()
        };
        let server = server_config(&cfg).unwrap();
        assert_eq!(
            server.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let mut roots = RootCertStore::empty();
        for c in load_certs("ca", &p("ca.crt.pem")).unwrap() {
            roots.add(c).unwrap();
        }
        let s = handshake(
            server,
            client_config(roots.clone(), BOTH, None),
            "apm-server",
        )
        .unwrap();
        assert_eq!(s.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
        // the same RSA key as PKCS#1 (`RSA PRIVATE KEY`)
        let pkcs8 = match load_key(&p("key.pem"), "").unwrap() {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            other => panic!("expected PKCS#8, got {other:?}"),
        };
        let info = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_slice()).unwrap();
        let pkcs1 = pkcs8::der::pem::encode_string(
            "RSA PRIVATE KEY",
            pkcs8::LineEnding::LF,
            info.private_key,
        )
        .unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let kpath = tmp.path().join("rsa1.pem");
        std::fs::write(&kpath, pkcs1).unwrap();
        let cfg = ServerTls {
            key: kpath.display().to_string(),
            supported_protocols: vec!["TLSv1.2".into()],
            cipher_suites: vec!["ECDHE-RSA-AES-256-GCM-SHA384".into()],
            ..cfg
        };
        let s = handshake(
            server_config(&cfg).unwrap(),
            client_config(roots, BOTH, None),
            "apm-server",
        )
        .unwrap();
        assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        assert_eq!(
            s.negotiated_cipher_suite().map(|c| c.suite()),
            Some(rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)
        );
    }

    #[test]
    fn ecdsa_pkcs8_and_sec1() {
        let pki = Pki::new();
        handshake(
            server_config(&pki.tls()).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
        // SEC1 `EC PRIVATE KEY`: the inner key of the PKCS#8 document
        let info = pkcs8::PrivateKeyInfo::try_from(pki.server_key_der.as_slice()).unwrap();
        let sec1 = pkcs8::der::pem::encode_string(
            "EC PRIVATE KEY",
            pkcs8::LineEnding::LF,
            info.private_key,
        )
        .unwrap();
        let cfg = ServerTls {
            key: pki.write("sec1.key", sec1.as_bytes()),
            ..pki.tls()
        };
        handshake(
            server_config(&cfg).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
    }

    #[test]
    fn encrypted_pkcs8_key() {
        let pki = Pki::new();
        let info = pkcs8::PrivateKeyInfo::try_from(pki.server_key_der.as_slice()).unwrap();
        let params =
            pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, b"saltsalt", &[7u8; 16])
                .unwrap();
        let enc = info.encrypt_with_params(params, "hunter2").unwrap();
        let pem = enc
            .to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF)
            .unwrap();
        let key = pki.write("enc.key", pem.as_bytes());
        let cfg = ServerTls {
            key: key.clone(),
            key_passphrase: Secret::new("hunter2"),
            ..pki.tls()
        };
        handshake(
            server_config(&cfg).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
        let wrong = ServerTls {
            key_passphrase: Secret::new("wrong"),
            ..cfg.clone()
        };
        let e = server_config(&wrong).unwrap_err().to_string();
        assert!(e.contains("cannot decrypt key") && e.contains(&key), "{e}");
        assert!(
            !e.contains("wrong\""),
            "passphrase must not be printed: {e}"
        );
        let none = ServerTls {
            key_passphrase: Secret::default(),
            ..cfg
        };
        let e = server_config(&none).unwrap_err().to_string();
        assert!(e.contains("is encrypted") && e.contains(&key), "{e}");
    }

    #[test]
    fn legacy_encrypted_pem_refused() {
        let pki = Pki::new();
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let cfg = ServerTls {
            key: pki.write("legacy.key", legacy.as_bytes()),
            key_passphrase: Secret::new("x"),
            ..pki.tls()
        };
        let e = server_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("legacy OpenSSL PEM encryption"), "{e}");
    }

    #[test]
    fn bad_files_name_the_file() {
        let pki = Pki::new();
        let missing = ServerTls {
            certificate: "/nonexistent/cert.pem".into(),
            ..pki.tls()
        };
        let e = server_config(&missing).unwrap_err().to_string();
        assert!(
            e.contains("cannot read certificate /nonexistent/cert.pem"),
            "{e}"
        );
        let garbage = ServerTls {
            certificate: pki.write("garbage.pem", b"not a pem"),
            ..pki.tls()
        };
        let e = server_config(&garbage).unwrap_err().to_string();
        assert!(
            e.contains("no certificate found") && e.contains("garbage.pem"),
            "{e}"
        );
        let nokey = ServerTls {
            key: pki.path("server.pem"),
            ..pki.tls()
        };
        let e = server_config(&nokey).unwrap_err().to_string();
        assert!(
            e.contains("no private key found in") && e.contains("server.pem"),
            "{e}"
        );
        // a key that does not match the certificate
        let other = KeyPair::generate().unwrap();
        let mismatch = ServerTls {
            key: pki.write("other.key", other.serialize_pem().as_bytes()),
            ..pki.tls()
        };
        let e = server_config(&mismatch).unwrap_err().to_string();
        assert!(e.contains("server.pem") && e.contains("other.key"), "{e}");
        assert!(matches!(
            server_config(&ServerTls::default()),
            Err(TlsError::MissingFiles)
        ));
    }

    #[test]
    fn protocols() {
        let pki = Pki::new();
        for bad in ["TLSv1.0", "TLSv1", "TLSv1.1"] {
            let cfg = ServerTls {
                supported_protocols: vec!["TLSv1.2".into(), bad.into()],
                ..pki.tls()
            };
            let e = server_config(&cfg).unwrap_err().to_string();
            assert!(
                e.contains("not supported by rustls") && e.contains(bad),
                "{e}"
            );
        }
        let cfg = ServerTls {
            supported_protocols: vec!["TLS1.4".into()],
            ..pki.tls()
        };
        assert!(matches!(
            server_config(&cfg),
            Err(TlsError::UnknownProtocol(_))
        ));
        // TLSv1.3 only: a TLS 1.2-only client fails
        let cfg = ServerTls {
            supported_protocols: vec!["TLSv1.3".into()],
            ..pki.tls()
        };
        assert!(handshake(
            server_config(&cfg).unwrap(),
            pki.client(false, &[&rustls::version::TLS12]),
            "localhost"
        )
        .is_err());
        let s = handshake(
            server_config(&cfg).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
        assert_eq!(s.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    }

    #[test]
    fn cipher_suite_names() {
        let pki = Pki::new();
        let cfg = ServerTls {
            supported_protocols: vec!["TLSv1.2".into()],
            cipher_suites: vec!["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".into()],
            ..pki.tls()
        };
        let s = handshake(
            server_config(&cfg).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
        assert_eq!(
            s.negotiated_cipher_suite().map(|c| c.suite()),
            Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256)
        );
        let cfg = ServerTls {
            cipher_suites: vec!["ecdhe-ecdsa-aes-128-gcm-sha256".into()],
            ..cfg
        };
        let s = handshake(
            server_config(&cfg).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
        assert_eq!(
            s.negotiated_cipher_suite().map(|c| c.suite()),
            Some(rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        );
        let bad = ServerTls {
            cipher_suites: vec!["NOPE-SUITE".into()],
            ..pki.tls()
        };
        let e = server_config(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown cipher suite \"NOPE-SUITE\""), "{e}");
        let cbc = ServerTls {
            cipher_suites: vec!["ECDHE-RSA-AES-128-CBC-SHA".into()],
            ..pki.tls()
        };
        let e = server_config(&cbc).unwrap_err().to_string();
        assert!(
            e.contains("ECDHE-RSA-AES-128-CBC-SHA") && e.contains("not supported by rustls"),
            "{e}"
        );
        // TLS 1.3 names are accepted (1.3 suites are always on)
        let t13 = ServerTls {
            cipher_suites: vec!["TLS_AES_128_GCM_SHA256".into()],
            ..pki.tls()
        };
        assert!(server_config(&t13).is_ok());
        // only TLS 1.3 names with TLSv1.2 only: nothing usable
        let none = ServerTls {
            supported_protocols: vec!["TLSv1.2".into()],
            ..t13
        };
        assert!(matches!(server_config(&none), Err(TlsError::Config(_))));
    }

    #[test]
    fn curves() {
        let pki = Pki::new();
        let cfg = ServerTls {
            curve_types: vec!["P-384".into()],
            ..pki.tls()
        };
        handshake(
            server_config(&cfg).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
        let cfg = ServerTls {
            curve_types: vec!["P-521".into()],
            ..pki.tls()
        };
        assert!(matches!(
            server_config(&cfg),
            Err(TlsError::UnsupportedCurve(_))
        ));
        let cfg = ServerTls {
            curve_types: vec!["brainpool".into()],
            ..pki.tls()
        };
        assert!(matches!(
            server_config(&cfg),
            Err(TlsError::UnknownCurve(_))
        ));
    }

    #[test]
    fn client_authentication_j88() {
        let pki = Pki::new();
        let base = pki.tls();
        assert_eq!(client_auth(&base).unwrap(), ClientAuth::None);
        let with_ca = ServerTls {
            certificate_authorities: vec![pki.path("ca.pem")],
            ..pki.tls()
        };
        assert_eq!(client_auth(&with_ca).unwrap(), ClientAuth::Required);
        let mode = |m: &str| ServerTls {
            client_authentication: Some(m.into()),
            ..with_ca.clone()
        };
        assert_eq!(client_auth(&mode("none")).unwrap(), ClientAuth::None);
        assert_eq!(
            client_auth(&mode("optional")).unwrap(),
            ClientAuth::Optional
        );
        assert!(client_auth(&mode("sometimes")).is_err());

        // required (default with CAs): no client cert → fails; with cert → ok
        for proto in [&rustls::version::TLS12, &rustls::version::TLS13] {
            assert!(
                handshake(
                    server_config(&with_ca).unwrap(),
                    pki.client(false, &[proto]),
                    "localhost"
                )
                .is_err(),
                "{proto:?}"
            );
            let s = handshake(
                server_config(&with_ca).unwrap(),
                pki.client(true, &[proto]),
                "localhost",
            )
            .unwrap();
            assert!(s.peer_certificates().is_some_and(|c| !c.is_empty()));
        }
        // a client cert from another CA is refused
        let other = Pki::new();
        assert!(handshake(
            server_config(&with_ca).unwrap(),
            {
                let mut roots = RootCertStore::empty();
                roots.add(pki.ca_der.clone()).unwrap();
                client_config(
                    roots,
                    BOTH,
                    Some((other.client_chain.clone(), other.client_key.clone_key())),
                )
            },
            "localhost"
        )
        .is_err());
        // optional: both work
        let s = handshake(
            server_config(&mode("optional")).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
        assert!(s.peer_certificates().is_none());
        handshake(
            server_config(&mode("optional")).unwrap(),
            pki.client(true, BOTH),
            "localhost",
        )
        .unwrap();
        // none with CAs: no client cert needed
        handshake(
            server_config(&mode("none")).unwrap(),
            pki.client(false, BOTH),
            "localhost",
        )
        .unwrap();
        // required without CAs is a config error
        let no_ca = ServerTls {
            client_authentication: Some("required".into()),
            ..pki.tls()
        };
        assert!(matches!(
            server_config(&no_ca),
            Err(TlsError::ClientAuth(_))
        ));
        // a CA file without certificates
        let bad_ca = ServerTls {
            certificate_authorities: vec![pki.write("empty-ca.pem", b"")],
            ..pki.tls()
        };
        let e = server_config(&bad_ca).unwrap_err().to_string();
        assert!(e.contains("empty-ca.pem"), "{e}");
    }
}
