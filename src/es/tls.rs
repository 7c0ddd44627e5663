//! TLS of every Elasticsearch and Kibana client (rustls through reqwest):
//! trusted CAs, `verification_mode`, client certificate and key, protocol
//! versions.
//!
//! `verification_mode`: `full` and `strict` check the chain and the host
//! name; `certificate` checks the chain only; `none` checks nothing (logged
//! as a warning at start-up). `cipher_suites` and `curve_types` are ignored
//! with a warning: rustls' defaults apply. Encrypted client keys
//! (`key_passphrase`) are refused at start-up rather than silently ignored.

use crate::config::ClientTls;

fn read(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

/// Applies `tls` (section name `section`, for warnings) to `b`.
pub(super) fn apply(
    mut b: reqwest::ClientBuilder,
    tls: &ClientTls,
    section: &str,
) -> Result<reqwest::ClientBuilder, String> {
    for ca in &tls.certificate_authorities {
        let pem = read(ca)?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| format!("{ca}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("{ca}: no certificate found"));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    match tls.verification_mode.as_deref().unwrap_or("full") {
        "full" | "strict" => {}
        "certificate" => b = b.danger_accept_invalid_hostnames(true),
        "none" => {
            tracing::warn!(
                "{section}.ssl.verification_mode is none: server certificates are not verified"
            );
            b = b.danger_accept_invalid_certs(true);
        }
        other => {
            return Err(format!(
                "unknown verification_mode {other:?} (full, strict, certificate, none)"
            ))
        }
    }
    match (tls.certificate.is_empty(), tls.key.is_empty()) {
        (true, true) => {}
        (false, false) => {
            if !tls.key_passphrase.is_empty() {
                return Err(
                    "encrypted client keys (key_passphrase) are not supported; decrypt the key"
                        .into(),
                );
            }
            let mut pem = read(&tls.certificate)?;
            pem.push(b'\n');
            pem.extend(read(&tls.key)?);
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("client certificate: {e}"))?;
            b = b.identity(id);
        }
        _ => return Err("certificate and key must be given together".into()),
    }
    // supported_protocols: the lowest and highest recognised versions bound the handshake.
    let mut versions: Vec<u8> = Vec::new();
    for p in &tls.supported_protocols {
        match p.as_str() {
            "TLSv1.2" => versions.push(2),
            "TLSv1.3" => versions.push(3),
            other => tracing::warn!(
                protocol = other,
                "{section}.ssl.supported_protocols: ignored (rustls supports TLSv1.2 and TLSv1.3)"
            ),
        }
    }
    let version = |v: u8| {
        if v == 3 {
            reqwest::tls::Version::TLS_1_3
        } else {
            reqwest::tls::Version::TLS_1_2
        }
    };
    if let (Some(lo), Some(hi)) = (versions.iter().min(), versions.iter().max()) {
        b = b
            .min_tls_version(version(*lo))
            .max_tls_version(version(*hi));
    }
    if !tls.cipher_suites.is_empty() || !tls.curve_types.is_empty() {
        tracing::warn!("{section}.ssl.cipher_suites / curve_types are ignored (rustls defaults)");
    }
    Ok(b)
}
