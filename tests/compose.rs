//! Structure of `docker-compose.yml`, `Dockerfile` and `.env.example`,
//! checked without a Docker engine: services and images, health checks,
//! `depends_on` conditions, published ports, every `${VAR}` defined in
//! `.env.example`, and the apm-rs settings the compose file gives (its `-E`
//! flags and `APM_RS__*` variables) loaded through the real config loader.

use serde_yaml_ng::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(root().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn compose() -> Value {
    serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses")
}

fn env_example() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn service<'a>(c: &'a Value, name: &str) -> &'a Value {
    let s = &c["services"][name];
    assert!(s.is_mapping(), "service {name} missing");
    s
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `${VAR}`, `${VAR:-x}`, `${VAR:?x}` references that compose interpolates (not `$${…}`).
fn compose_vars(text: &str) -> Vec<String> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < b.len() {
        if b[i] == b'$' && b[i + 1] == b'$' {
            i += 2;
            continue;
        }
        if b[i] == b'$' && b[i + 1] == b'{' {
            let rest = &text[i + 2..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            out.push(rest[..end].to_string());
            i += 2 + end;
            continue;
        }
        i += 1;
    }
    out
}

#[test]
fn services_images_and_build() {
    let c = compose();
    let es = service(&c, "elasticsearch");
    assert_eq!(
        es["image"].as_str(),
        Some("docker.elastic.co/elasticsearch/elasticsearch:${STACK_VERSION}")
    );
    let kb = service(&c, "kibana");
    assert_eq!(
        kb["image"].as_str(),
        Some("docker.elastic.co/kibana/kibana:${STACK_VERSION}")
    );
    let setup = service(&c, "setup");
    assert_eq!(setup["image"], es["image"]);
    assert_eq!(setup["restart"].as_str(), Some("no"));
    let apm = service(&c, "apm-rs");
    assert_eq!(apm["build"]["context"].as_str(), Some("."));
    let dockerfile = apm["build"]["dockerfile"].as_str().expect("dockerfile");
    assert!(root().join(dockerfile).is_file());
}

#[test]
fn elasticsearch_single_node_with_security_and_password_from_env() {
    let c = compose();
    let env = str_list(&service(&c, "elasticsearch")["environment"]);
    for want in [
        "discovery.type=single-node",
        "xpack.security.enabled=true",
        "ELASTIC_PASSWORD=${ELASTIC_PASSWORD}",
    ] {
        assert!(
            env.iter().any(|e| e == want),
            "elasticsearch env lacks {want}"
        );
    }
}

#[test]
fn healthchecks_and_start_order() {
    let c = compose();
    for name in ["elasticsearch", "kibana", "apm-rs"] {
        let hc = &service(&c, name)["healthcheck"];
        let test = str_list(&hc["test"]);
        assert!(
            test.first().map(String::as_str) == Some("CMD-SHELL") && test.len() == 2,
            "{name}: healthcheck test must be [CMD-SHELL, cmd]"
        );
        assert!(
            hc["interval"].is_string() && hc["retries"].is_number(),
            "{name}"
        );
    }
    let want: &[(&str, &str, &str)] = &[
        ("setup", "elasticsearch", "service_healthy"),
        ("kibana", "elasticsearch", "service_healthy"),
        ("kibana", "setup", "service_completed_successfully"),
        ("apm-rs", "elasticsearch", "service_healthy"),
    ];
    for (svc, dep, cond) in want {
        assert_eq!(
            service(&c, svc)["depends_on"][*dep]["condition"].as_str(),
            Some(*cond),
            "{svc} depends_on {dep}"
        );
    }
    // every dependency exists; service_healthy only on services with a health check
    let services = c["services"].as_mapping().expect("services");
    for (name, s) in services {
        let Some(deps) = s["depends_on"].as_mapping() else {
            continue;
        };
        for (dep, spec) in deps {
            let dep_name = dep.as_str().expect("name");
            let target = &c["services"][dep_name];
            assert!(
                target.is_mapping(),
                "{name:?} depends on unknown {dep_name}"
            );
            if spec["condition"].as_str() == Some("service_healthy") {
                assert!(
                    target["healthcheck"].is_mapping(),
                    "{dep_name} has no healthcheck"
                );
            }
        }
    }
}

#[test]
fn ports() {
    let c = compose();
    let ports = |s: &str| str_list(&service(&c, s)["ports"]);
    assert_eq!(ports("elasticsearch"), vec!["127.0.0.1:${ES_PORT}:9200"]);
    assert_eq!(ports("kibana"), vec!["127.0.0.1:${KIBANA_PORT}:5601"]);
    assert_eq!(
        ports("apm-rs"),
        vec!["${APM_PORT}:8200", "${APM_GRPC_PORT}:4317"]
    );
}

#[test]
fn every_variable_is_in_env_example() {
    let vars = env_example();
    // only values are interpolated (comments are not)
    fn strings(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Sequence(s) => s.iter().for_each(|x| strings(x, out)),
            Value::Mapping(m) => m.iter().for_each(|(k, x)| {
                strings(k, out);
                strings(x, out)
            }),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(&compose(), &mut all);
    let used: Vec<String> = all.iter().flat_map(|s| compose_vars(s)).collect();
    assert!(!used.is_empty());
    for v in &used {
        assert!(
            vars.contains_key(v),
            "${{{v}}} is not defined in .env.example"
        );
    }
    for k in vars.keys() {
        assert!(used.contains(k), "{k} in .env.example is unused");
    }
    assert!(vars["KIBANA_ENCRYPTION_KEY"].len() >= 32);
}

#[test]
fn apm_rs_settings_load_as_in_the_container() {
    let c = compose();
    let apm = service(&c, "apm-rs");
    let vars = env_example();
    // compose interpolation: ${VAR} from .env, $${ → ${ for the container
    let interpolate = |s: &str| {
        let mut out = s.replace("$${", "\u{0}");
        for (k, v) in &vars {
            out = out.replace(&format!("${{{k}}}"), v);
        }
        out.replace('\u{0}', "${")
    };
    let cmd: Vec<String> = str_list(&apm["command"])
        .iter()
        .map(|s| interpolate(s))
        .collect();
    let mut overrides = Vec::new();
    let mut it = cmd.iter();
    while let Some(a) = it.next() {
        assert_eq!(a, "-E", "command is a list of -E key=value pairs");
        overrides.push(it.next().expect("-E value").clone());
    }
    assert!(overrides
        .iter()
        .any(|o| o == "apm-server.host=0.0.0.0:8200"));
    // the container's environment, set for this process (the only test here that reads it)
    for e in str_list(&apm["environment"]) {
        let e = interpolate(&e);
        let (k, v) = e.split_once('=').expect("KEY=value");
        std::env::set_var(k, v);
    }
    let cfg = apm_rs::config::load(&apm_rs::config::LoadOptions {
        overrides,
        read_env: true,
        ..Default::default()
    })
    .expect("apm-rs accepts the compose settings");
    assert_eq!(cfg.listen_addr(), "0.0.0.0:8200");
    assert_eq!(cfg.grpc_listen_addr().as_deref(), Some("0.0.0.0:4317"));
    assert!(cfg.elasticsearch_output_enabled());
    let es = cfg.output.elasticsearch.as_ref().expect("es output");
    assert_eq!(
        es.client.hosts,
        vec!["http://elasticsearch:9200".to_string()]
    );
    assert_eq!(es.client.username, "elastic");
    assert_eq!(es.client.password.expose(), vars["ELASTIC_PASSWORD"]);
    assert_eq!(
        cfg.apm_server.auth.secret_token.expose(),
        vars["APM_SECRET_TOKEN"]
    );
    apm_rs::output::elasticsearch::EsSettings::from_config(es).expect("output settings resolve");
}

#[test]
fn dockerfile_multi_stage_slim_rustls() {
    let d = read("Dockerfile");
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "builder + runtime");
    assert!(froms[0].contains("rust:") && froms[0].contains(" AS builder"));
    assert!(froms[1].contains("-slim"));
    assert!(d.contains("COPY --from=builder"));
    assert!(d.contains("EXPOSE 8200"));
    assert!(d.contains("apm-server.host=0.0.0.0:8200"));
    assert!(d.contains("EXPOSE 8200 4317"));
    assert!(d.contains("apm-server.otlp.grpc.host=0.0.0.0:4317"));
    assert!(
        !d.contains("libssl") && !d.contains("openssl"),
        "no OpenSSL in the image"
    );
    let ignore = read(".dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target/"));
    assert!(
        ignore.lines().any(|l| l.trim() == ".env"),
        "secrets stay out of the build context"
    );
}
