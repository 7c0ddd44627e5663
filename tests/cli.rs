//! The `apm-rs` command line: `config` prints the effective, redacted
//! configuration; bad configuration stops start-up naming the key.

use std::process::Command;

fn apm_rs(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_apm-rs"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run apm-rs")
}

#[test]
fn config_prints_effective_settings_with_secrets_redacted() {
    let out = apm_rs(&[
        "config",
        "-E",
        "apm-server.auth.secret_token=hunter2",
        "-E",
        "apm-server.max_event_size=1234",
        "--pipeline",
        "low-memory",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("max_event_size: 1234"), "{text}");
    assert!(
        text.contains("secret_token: '[redacted]'")
            || text.contains("secret_token: \"[redacted]\"")
            || text.contains("secret_token: '[redacted]'"),
        "{text}"
    );
    assert!(!text.contains("hunter2"));
    // the low-memory profile was applied over the embedded default
    assert!(text.contains("memory_budget: 16MiB"), "{text}");
}

#[test]
fn config_file_and_env_layers() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("apm-rs.yml");
    std::fs::write(
        &f,
        "apm-server:\n  host: 0.0.0.0:9999\napm-server.rum.enabled: true\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_apm-rs"))
        .args([
            "config",
            "-c",
            f.to_str().unwrap(),
            "-E",
            "apm-server.rum.allow_origins=[\"https://x\"]",
        ])
        .env("APM_RS__APM_SERVER__MAX_EVENT_SIZE", "4321")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("host: 0.0.0.0:9999"), "{text}");
    assert!(text.contains("max_event_size: 4321"), "{text}");
    assert!(text.contains("https://x"), "{text}");
}

#[test]
fn unknown_or_invalid_keys_stop_start_up() {
    let out = apm_rs(&["-E", "apm-server.rum.enabeld=true"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("apm-server.rum.enabeld"), "{err}");
    let out = apm_rs(&["-E", "apm-server.read_timeout=soon"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("apm-server.read_timeout"));
    let out = apm_rs(&["--pipeline", "no-such-profile"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn config_redacts_url_user_info_and_credential_headers() {
    let out = apm_rs(&[
        "config",
        "-E",
        "output.elasticsearch.hosts=[\"https://elastic:hunter2@es.example:9200\"]",
        "-E",
        "output.elasticsearch.proxy_url=http://proxyuser:proxypass@proxy:3128",
        "-E",
        "output.elasticsearch.headers={\"Authorization\":\"Basic c2VjcmV0\",\"X-Api-Key\":\"k3y\",\"X-Team\":\"blue\"}",
        "-E",
        "apm-server.kibana.headers={\"Authorization\":\"ApiKey a2liYW5h\"}",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in [
        "hunter2",
        "proxypass",
        "c2VjcmV0",
        "k3y",
        "a2liYW5h",
        "proxyuser",
    ] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(
        text.contains("https://[redacted]@es.example:9200"),
        "{text}"
    );
    assert!(text.contains("http://[redacted]@proxy:3128"), "{text}");
    assert!(text.contains("X-Team: blue"), "{text}");
}
