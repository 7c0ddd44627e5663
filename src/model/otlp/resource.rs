//! Resource (and scope) attributes → the per-request parts of an event:
//! service, agent, host, process, container, Kubernetes, cloud, labels.
//!
//! Invariants: `service.name` falls back to `unknown` (other characters
//! than letters, digits, space, `_`, `-` become `_`); `agent.name` is
//! `<telemetry.sdk.name or otlp>[/<language>[/<telemetry.distro.name>]]`,
//! `agent.version` the SDK's (the distro's with a distro) or `unknown`;
//! `service.language.name` falls back to `unknown`; attributes without a
//! dedicated field become labels; only mobile agents (`android/…`,
//! `iOS/…`) get `client.ip`/`source.ip` (from the request).

use super::super::event::{Agent, Client, Labels, MetaInner, Metadata, Service, Shared};
use super::super::RequestBase;
use super::{as_int, as_str, attrs, set_label};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::sync::Arc;

/// The metadata every event of one resource (and scope) shares.
pub(crate) fn metadata(
    resource: Option<&Resource>,
    scope: Option<&InstrumentationScope>,
    base: &RequestBase,
) -> Metadata {
    let mut sh = Shared::default();
    let mut service = Service::default();
    let mut agent = Agent::default();
    let mut labels = Labels::default();
    let mut sdk_name = String::new();
    let (mut distro_name, mut distro_version) = (String::new(), String::new());
    let empty = Vec::new();
    for (k, v) in attrs(resource.map_or(&empty, |r| &r.attributes)) {
        let s = || as_str(v).unwrap_or_default().to_owned();
        match k {
            "service.name" => service.name = clean_service_name(as_str(v).unwrap_or_default()),
            "service.version" => service.version = s(),
            "service.instance.id" => service.node_name = s(),
            "deployment.environment" | "deployment.environment.name" => service.environment = s(),
            "telemetry.sdk.language" => service.language.name = s(),
            "telemetry.sdk.name" => sdk_name = s(),
            "telemetry.distro.name" => distro_name = s(),
            "telemetry.distro.version" => distro_version = s(),
            "telemetry.sdk.version" => agent.version = s(),
            "process.runtime.name" => service.runtime.name = s(),
            "process.runtime.version" => service.runtime.version = s(),
            "host.name" => sh.host_hostname = s(),
            "host.id" => sh.host_id = s(),
            "host.arch" => sh.host_architecture = s(),
            "os.type" => sh.host_os_platform = s(),
            "process.pid" => sh.process_pid = as_int(v),
            "process.parent_pid" => sh.process_ppid = as_int(v),
            "process.executable.name" => sh.process_title = s(),
            "container.id" => sh.container_id = s(),
            "k8s.namespace.name" => sh.k8s_namespace = s(),
            "k8s.node.name" => sh.k8s_node_name = s(),
            "k8s.pod.name" => sh.k8s_pod_name = s(),
            "k8s.pod.uid" => sh.k8s_pod_uid = s(),
            "cloud.provider" => sh.cloud.provider = s(),
            "cloud.region" => sh.cloud.region = s(),
            "cloud.availability_zone" => sh.cloud.availability_zone = s(),
            "cloud.account.id" => sh.cloud.account_id = s(),
            "cloud.platform" => sh.cloud.service_name = s(),
            "host.type" => sh.cloud.machine_type = s(),
            _ => set_label(&mut labels, k, v),
        }
    }
    if let Some(sc) = scope {
        service.framework.name = sc.name.clone();
        service.framework.version = sc.version.clone();
    }
    if service.name.is_empty() {
        service.name = "unknown".into();
    }
    agent.name = if sdk_name.is_empty() {
        "otlp".into()
    } else {
        sdk_name
    };
    if agent.version.is_empty() {
        agent.version = "unknown".into();
    }
    if !distro_name.is_empty() {
        let lang = if service.language.name.is_empty() {
            "unknown"
        } else {
            &service.language.name
        };
        agent.name = format!("{}/{lang}/{distro_name}", agent.name);
        agent.version = if distro_version.is_empty() {
            "unknown".into()
        } else {
            distro_version
        };
    } else if !service.language.name.is_empty() {
        agent.name = format!("{}/{}", agent.name, service.language.name);
    }
    if service.language.name.is_empty() {
        service.language.name = "unknown".into();
    }
    if !sh.k8s_node_name.is_empty() {
        sh.host_hostname = sh.k8s_node_name.clone();
    }
    if sh.host_name.is_empty() {
        sh.host_name = sh.host_hostname.clone();
    }
    if service.node_name.is_empty() {
        service.node_name = if sh.container_id.is_empty() {
            sh.host_name.clone()
        } else {
            sh.container_id.clone()
        };
    }
    // Mobile SDKs report from the user's device: its address is the
    // client's, as for RUM (the forwarding headers' IP, the peer as NAT).
    let mut client = Client::default();
    if agent.name.starts_with("android/") || agent.name.starts_with("iOS/") {
        client.client_ip = base.client_ip;
        client.source_ip = base.client_ip;
        client.nat_ip = base.nat_ip;
    }
    Metadata {
        inner: Arc::new(MetaInner {
            base: base.clone(),
            shared: Arc::new(sh),
            service: Arc::new(service),
            agent: Arc::new(agent),
            user: Arc::default(),
            labels: Arc::new(labels),
            client,
        }),
    }
}

/// `service.name` as apm-data keeps it: characters other than ASCII
/// letters, digits, space, `_` and `-` become `_`.
fn clean_service_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
