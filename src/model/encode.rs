//! Document encoding (documents.md §4, §5.8, §6–§11): writes the bulk action
//! line and the `_source` document for one event straight into the caller's
//! buffer with a small hand-written JSON writer.
//!
//! Invariants: empty strings and empty objects are never written (the
//! writer truncates an object that received no field), except the few fields
//! documented as always present; label, mark and custom keys have `.`, `*`
//! and `"` replaced by `_`; output is always valid JSON.

use super::event::*;
use super::routing::{all_samples_internal, route};
use super::timestamp::write_timestamp;
use std::io::Write;
use std::net::IpAddr;

/// Server-side facts written into every document.
#[derive(Clone, Debug)]
pub struct EncodeContext {
    /// `observer.hostname`.
    pub observer_hostname: String,
    /// `observer.version`.
    pub observer_version: String,
    /// `data_stream.namespace`.
    pub namespace: String,
}

// ---------------------------------------------------------------------------
// JSON writer

struct Level {
    start: usize,
    empty: bool,
    parent_was_empty: bool,
}

/// Minimal streaming JSON writer that drops containers left empty.
pub(crate) struct W<'a> {
    out: &'a mut Vec<u8>,
    stack: Vec<Level>,
}

/// True when any byte of the 8-byte word needs JSON escaping
/// (`< 0x20`, `"` or `\\`).
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let lt_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (lt_space | has_zero(w ^ (ONES * b'"' as u64)) | has_zero(w ^ (ONES * b'\\' as u64))) != 0
}

#[inline]
fn byte_needs_escape(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\'
}

/// Index of the first byte at or after `from` that needs escaping.
#[inline]
fn next_escape(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i + 8 <= b.len() {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[i..i + 8]);
        if word_needs_escape(u64::from_le_bytes(a)) {
            break;
        }
        i += 8;
    }
    while i < b.len() && !byte_needs_escape(b[i]) {
        i += 1;
    }
    i
}

fn escape_into(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let b = s.as_bytes();
    let mut last = 0;
    loop {
        let i = next_escape(b, last);
        out.extend_from_slice(&b[last..i]);
        let Some(&c) = b.get(i) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                let _ = write!(out, "\\u{:04x}", c);
            }
        }
        last = i + 1;
    }
    out.push(b'"');
}

fn sanitize_key(k: &str) -> std::borrow::Cow<'_, str> {
    if k.contains(['.', '*', '"']) {
        std::borrow::Cow::Owned(k.replace(['.', '*', '"'], "_"))
    } else {
        std::borrow::Cow::Borrowed(k)
    }
}

fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_f64(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        let _ = write!(out, "{f}");
    } else {
        out.push(b'0');
    }
}

impl<'a> W<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        W {
            out,
            stack: vec![Level {
                start: 0,
                empty: true,
                parent_was_empty: true,
            }],
        }
    }
    fn finish(self) {
        self.out.push(b'}');
    }
    fn sep(&mut self) {
        if let Some(l) = self.stack.last_mut() {
            if !l.empty {
                self.out.push(b',');
            }
            l.empty = false;
        }
    }
    fn key(&mut self, k: &str) {
        self.sep();
        let b = k.as_bytes();
        if b.iter().all(|&c| !byte_needs_escape(c)) {
            self.out.reserve(b.len() + 3);
            self.out.push(b'"');
            self.out.extend_from_slice(b);
            self.out.extend_from_slice(b"\":");
        } else {
            escape_into(self.out, k);
            self.out.push(b':');
        }
    }
    fn push_level(&mut self, start: usize, parent_was_empty: bool, open: u8) {
        self.out.push(open);
        self.stack.push(Level {
            start,
            empty: true,
            parent_was_empty,
        });
    }
    /// Opens `"k":{`; dropped again by [`Self::close`] when nothing was written.
    fn open(&mut self, k: &str) {
        let start = self.out.len();
        let pe = self.stack.last().is_none_or(|l| l.empty);
        self.key(k);
        self.push_level(start, pe, b'{');
    }
    fn open_arr(&mut self, k: &str) {
        let start = self.out.len();
        let pe = self.stack.last().is_none_or(|l| l.empty);
        self.key(k);
        self.push_level(start, pe, b'[');
    }
    /// Opens an object element inside an array.
    fn open_elem(&mut self) {
        let start = self.out.len();
        let pe = self.stack.last().is_none_or(|l| l.empty);
        self.sep();
        self.push_level(start, pe, b'{');
    }
    fn close_with(&mut self, c: u8, keep_empty: bool) {
        if let Some(l) = self.stack.pop() {
            if l.empty && !keep_empty {
                self.out.truncate(l.start);
                if let Some(p) = self.stack.last_mut() {
                    p.empty = l.parent_was_empty;
                }
            } else {
                self.out.push(c);
            }
        }
    }
    fn close(&mut self) {
        self.close_with(b'}', false)
    }
    fn close_keep(&mut self) {
        self.close_with(b'}', true)
    }
    fn close_arr(&mut self) {
        self.close_with(b']', false)
    }
    fn str(&mut self, k: &str, v: &str) {
        if !v.is_empty() {
            self.str_always(k, v);
        }
    }
    fn str_always(&mut self, k: &str, v: &str) {
        self.key(k);
        escape_into(self.out, v);
    }
    fn elem_str(&mut self, v: &str) {
        self.sep();
        escape_into(self.out, v);
    }
    fn i64(&mut self, k: &str, v: i64) {
        self.key(k);
        write_i64(self.out, v);
    }
    fn opt_i64(&mut self, k: &str, v: Option<i64>) {
        if let Some(v) = v {
            self.i64(k, v);
        }
    }
    fn f64(&mut self, k: &str, v: f64) {
        self.key(k);
        write_f64(self.out, v);
    }
    fn opt_f64(&mut self, k: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.f64(k, v);
        }
    }
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
    }
    fn opt_bool(&mut self, k: &str, v: Option<bool>) {
        if let Some(v) = v {
            self.bool(k, v);
        }
    }
    fn ip(&mut self, k: &str, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.key(k);
            let _ = write!(self.out, "\"{ip}\"");
        }
    }
    fn str_list(&mut self, k: &str, v: &[String]) {
        if v.is_empty() {
            return;
        }
        self.open_arr(k);
        for s in v {
            self.elem_str(s);
        }
        self.close_arr();
    }
    fn headers(&mut self, k: &str, h: &Headers) {
        if h.is_empty() {
            return;
        }
        self.open(k);
        for (name, vals) in h {
            if !vals.is_empty() {
                self.key(name);
                self.out.push(b'[');
                for (i, v) in vals.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    escape_into(self.out, v);
                }
                self.out.push(b']');
            }
        }
        self.close();
    }
    /// Writes a cleaned JSON value (empty containers and nulls dropped).
    fn json(&mut self, k: &str, v: &Json, sanitize_top: bool) {
        match v {
            Json::Null => {}
            Json::Bool(b) => self.bool(k, *b),
            Json::Num(n) => self.f64(k, *n),
            Json::Str(s) => self.str_always(k, s),
            Json::Arr(a) => {
                self.open_arr(k);
                for e in a {
                    self.json_elem(e);
                }
                self.close_arr();
            }
            Json::Obj(o) => {
                self.open(k);
                for (ck, cv) in o {
                    if sanitize_top {
                        self.json(&sanitize_key(ck), cv, false);
                    } else {
                        self.json(ck, cv, false);
                    }
                }
                self.close();
            }
        }
    }
    fn json_elem(&mut self, v: &Json) {
        match v {
            Json::Null => {}
            Json::Bool(b) => {
                self.sep();
                self.out
                    .extend_from_slice(if *b { b"true" } else { b"false" });
            }
            Json::Num(n) => {
                self.sep();
                write_f64(self.out, *n);
            }
            Json::Str(s) => self.elem_str(s),
            Json::Arr(a) => {
                let start = self.out.len();
                let pe = self.stack.last().is_none_or(|l| l.empty);
                self.sep();
                self.push_level(start, pe, b'[');
                for e in a {
                    self.json_elem(e);
                }
                self.close_arr();
            }
            Json::Obj(o) => {
                self.open_elem();
                for (ck, cv) in o {
                    self.json(ck, cv, false);
                }
                self.close();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// documents

/// Appends `{"create":{"_index":…}}\n{document}\n` for `ev` to `out`.
/// Returns false and writes nothing when the event is dropped by design
/// (unsampled non-RUM transaction, documents.md §12.2).
pub fn encode(ev: &Event, ctx: &EncodeContext, out: &mut Vec<u8>) -> bool {
    if let Body::Transaction(t) = &ev.body {
        if !t.sampled && !ev.is_rum_agent() {
            return false;
        }
    }
    let (ty, dataset) = route(ev);
    out.extend_from_slice(b"{\"create\":{\"_index\":\"");
    out.extend_from_slice(ty.as_bytes());
    out.push(b'-');
    for part in [dataset.as_ref(), "-", ctx.namespace.as_str()] {
        if part.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            out.extend_from_slice(part.as_bytes());
        } else {
            let start = out.len();
            escape_into(out, part);
            out.pop();
            out.remove(start);
        }
    }
    out.extend_from_slice(b"\"}}\n");
    let mut w = W::new(out);
    {
        w.key("@timestamp");
        write_timestamp(w.out, ev.timestamp_ns);
    }
    if matches!(
        ev.body,
        Body::Transaction(_) | Body::Span(_) | Body::Error(_)
    ) {
        w.open("timestamp");
        w.i64("us", ev.timestamp_ns.div_euclid(1000));
        w.close();
    }
    w.open("data_stream");
    w.str("type", ty);
    w.str("dataset", &dataset);
    w.str("namespace", &ctx.namespace);
    w.close();
    w.open("observer");
    w.str("hostname", &ctx.observer_hostname);
    w.str("type", "apm-server");
    w.str("version", &ctx.observer_version);
    w.close();
    common(&mut w, ev);
    match &ev.body {
        Body::Transaction(t) => transaction(&mut w, ev, t),
        Body::Span(s) => span(&mut w, ev, s),
        Body::Error(e) => error(&mut w, e),
        Body::Metricset(m) => metricset(&mut w, ev, m),
        Body::Log(l) => log(&mut w, l),
    }
    w.finish();
    out.push(b'\n');
    true
}

fn name_version(w: &mut W<'_>, k: &str, nv: &NameVersion) {
    w.open(k);
    w.str("name", &nv.name);
    w.str("version", &nv.version);
    w.close();
}

/// Encodes `f`'s fields into a standalone fragment (no surrounding braces).
fn fragment(f: impl FnOnce(&mut W<'_>)) -> Vec<u8> {
    let mut tmp = Vec::with_capacity(128);
    let mut w = W::new(&mut tmp);
    f(&mut w);
    w.finish();
    tmp.get(1..tmp.len().saturating_sub(1))
        .unwrap_or_default()
        .to_vec()
}

fn agent_part(w: &mut W<'_>, a: &Agent) {
    w.open("agent");
    w.str("name", &a.name);
    w.str("version", &a.version);
    w.str("ephemeral_id", &a.ephemeral_id);
    w.str("activation_method", &a.activation_method);
    w.close();
}

fn service_part(w: &mut W<'_>, s: &Service) {
    w.open("service");
    w.str("name", &s.name);
    w.str("version", &s.version);
    w.str("environment", &s.environment);
    w.open("node");
    w.str("name", &s.node_name);
    w.close();
    name_version(w, "language", &s.language);
    name_version(w, "runtime", &s.runtime);
    name_version(w, "framework", &s.framework);
    w.open("origin");
    w.str("id", &s.origin_id);
    w.str("name", &s.origin_name);
    w.str("version", &s.origin_version);
    w.close();
    if let Some((t, n)) = &s.target {
        w.open("target");
        w.str_always("type", t);
        w.str("name", n);
        w.close();
    }
    w.close();
}

fn common(w: &mut W<'_>, ev: &Event) {
    for frag in [
        ev.agent
            .encoded
            .get_or_init(|| fragment(|w| agent_part(w, &ev.agent))),
        ev.service
            .encoded
            .get_or_init(|| fragment(|w| service_part(w, &ev.service))),
    ] {
        if !frag.is_empty() {
            w.sep();
            w.out.extend_from_slice(frag);
        }
    }
    let sh = &ev.shared;
    let thread_name = match &ev.body {
        Body::Log(l) => l.thread_name.as_str(),
        _ => "",
    };
    let cloud_origin = match &ev.body {
        Body::Transaction(t) => t.cloud_origin.as_ref(),
        _ => None,
    };
    if thread_name.is_empty() && cloud_origin.is_none() {
        // identical for every event of the request: encode once, splice after
        let frag = sh.encoded.get_or_init(|| {
            let mut tmp = Vec::with_capacity(256);
            let mut w2 = W::new(&mut tmp);
            shared_part(&mut w2, sh, "", None);
            w2.finish();
            tmp.get(1..tmp.len().saturating_sub(1))
                .unwrap_or_default()
                .to_vec()
        });
        if !frag.is_empty() {
            w.sep();
            w.out.extend_from_slice(frag);
        }
    } else {
        shared_part(w, sh, thread_name, cloud_origin);
    }

    let u = &ev.user;
    if !(u.id.is_empty() && u.name.is_empty() && u.email.is_empty() && u.domain.is_empty()) {
        w.open("user");
        w.str("id", &u.id);
        w.str("name", &u.name);
        w.str("email", &u.email);
        w.str("domain", &u.domain);
        w.close();
    }

    if !ev.labels.is_empty() {
        w.open("labels");
        for (k, v) in &ev.labels.strings {
            w.str_always(&sanitize_key(k), v);
        }
        w.close();
        w.open("numeric_labels");
        for (k, v) in &ev.labels.numbers {
            w.f64(&sanitize_key(k), *v);
        }
        w.close();
    }

    let cl = &ev.client;
    if cl.client_ip.is_some()
        || cl.source_ip.is_some()
        || cl.nat_ip.is_some()
        || cl.source_port.is_some()
        || !cl.user_agent.is_empty()
    {
        w.open("client");
        w.ip("ip", cl.client_ip);
        if let Some(p) = cl.client_port {
            w.i64("port", p as i64);
        }
        w.close();
        w.open("source");
        w.ip("ip", cl.source_ip);
        if let Some(p) = cl.source_port {
            w.i64("port", p as i64);
        }
        w.open("nat");
        w.ip("ip", cl.nat_ip);
        w.close();
        w.close();
        w.open("user_agent");
        w.str("original", &cl.user_agent);
        w.close();
    }
    if let Some(h) = &ev.http {
        w.open("http");
        w.str("version", &h.version);
        w.open("request");
        w.str("method", &h.request_method);
        w.str("id", &h.request_id);
        w.str("referrer", &h.request_referrer);
        w.headers("headers", &h.request_headers);
        if let Some(j) = &h.request_cookies {
            w.json("cookies", j, false);
        }
        if let Some(j) = &h.request_env {
            w.json("env", j, false);
        }
        if let Some(j) = &h.request_body {
            w.open("body");
            w.json("original", j, false);
            w.close();
        }
        w.close();
        w.open("response");
        w.opt_i64("status_code", h.response_status_code);
        w.headers("headers", &h.response_headers);
        w.opt_bool("finished", h.response_finished);
        w.opt_bool("headers_sent", h.response_headers_sent);
        w.opt_i64("transfer_size", h.response_transfer_size);
        w.opt_i64("encoded_body_size", h.response_encoded_body_size);
        w.opt_i64("decoded_body_size", h.response_decoded_body_size);
        w.close();
        w.close();
    }
    if let Some(u) = &ev.url {
        w.open("url");
        w.str("original", &u.original);
        w.str("full", &u.full);
        w.str("domain", &u.domain);
        w.str("path", &u.path);
        w.str("query", &u.query);
        w.str("fragment", &u.fragment);
        w.str("scheme", &u.scheme);
        w.opt_i64("port", u.port);
        w.close();
    }
    if let Some(f) = &ev.faas {
        w.open("faas");
        w.str("id", &f.id);
        w.str("name", &f.name);
        w.str("version", &f.version);
        w.str("execution", &f.execution);
        w.opt_bool("coldstart", f.coldstart);
        w.open("trigger");
        w.str("type", &f.trigger_type);
        w.str("request_id", &f.trigger_request_id);
        w.close();
        w.close();
    }
    w.open("trace");
    w.str("id", &ev.trace_id);
    w.close();
    w.open("parent");
    w.str("id", &ev.parent_id);
    w.close();
}

/// host, process, container, kubernetes, cloud and network (metadata-only parts).
fn shared_part(w: &mut W<'_>, sh: &Shared, thread_name: &str, cloud_origin: Option<&[String; 4]>) {
    w.open("host");
    w.str("hostname", &sh.host_hostname);
    w.str("name", &sh.host_name);
    w.str("id", &sh.host_id);
    w.str("architecture", &sh.host_architecture);
    w.open("os");
    w.str("platform", &sh.host_os_platform);
    w.close();
    if let Some(ip) = sh.host_ip {
        w.key("ip");
        let _ = write!(w.out, "[\"{ip}\"]");
    }
    w.close();

    w.open("process");
    w.opt_i64("pid", sh.process_pid);
    w.open("parent");
    w.opt_i64("pid", sh.process_ppid);
    w.close();
    w.str("title", &sh.process_title);
    w.str_list("args", &sh.process_args);
    if !thread_name.is_empty() {
        w.open("thread");
        w.str("name", thread_name);
        w.close();
    }
    w.close();

    w.open("container");
    w.str("id", &sh.container_id);
    w.close();
    w.open("kubernetes");
    w.str("namespace", &sh.k8s_namespace);
    w.open("node");
    w.str("name", &sh.k8s_node_name);
    w.close();
    w.open("pod");
    w.str("name", &sh.k8s_pod_name);
    w.str("uid", &sh.k8s_pod_uid);
    w.close();
    w.close();

    let c = &sh.cloud;
    w.open("cloud");
    w.open("account");
    w.str("id", &c.account_id);
    w.str("name", &c.account_name);
    w.close();
    w.str("availability_zone", &c.availability_zone);
    w.open("instance");
    w.str("id", &c.instance_id);
    w.str("name", &c.instance_name);
    w.close();
    w.open("machine");
    w.str("type", &c.machine_type);
    w.close();
    w.open("project");
    w.str("id", &c.project_id);
    w.str("name", &c.project_name);
    w.close();
    w.str("provider", &c.provider);
    w.str("region", &c.region);
    w.open("service");
    w.str("name", &c.service_name);
    w.close();
    {
        if let Some([acc, prov, reg, svc]) = cloud_origin {
            w.open("origin");
            w.open("account");
            w.str("id", acc);
            w.close();
            w.str("provider", prov);
            w.str("region", reg);
            w.open("service");
            w.str("name", svc);
            w.close();
            w.close();
        }
    }
    w.close();

    w.open("network");
    w.open("connection");
    w.str("type", &sh.network_connection_type);
    w.close();
    w.close();
}

fn event_obj(w: &mut W<'_>, outcome: &str, duration_ns: i64) {
    w.open("event");
    w.str("outcome", outcome);
    if duration_ns != 0 {
        w.i64("duration", duration_ns);
    }
    w.close();
}

fn message(w: &mut W<'_>, m: &Option<Message>) {
    if let Some(m) = m {
        w.open("message");
        w.open("queue");
        w.str("name", &m.queue_name);
        w.close();
        w.open("age");
        w.opt_i64("ms", m.age_ms);
        w.close();
        w.str("body", &m.body);
        w.str("routing_key", &m.routing_key);
        w.headers("headers", &m.headers);
        w.close();
    }
}

fn links(w: &mut W<'_>, links: &[Link]) {
    if links.is_empty() {
        return;
    }
    w.open_arr("links");
    for (t, s) in links {
        w.open_elem();
        w.open("trace");
        w.str("id", t);
        w.close();
        w.open("span");
        w.str("id", s);
        w.close();
        w.close();
    }
    w.close_arr();
}

fn transaction(w: &mut W<'_>, _ev: &Event, t: &Transaction) {
    w.open("transaction");
    w.str("id", &t.id);
    w.str("name", &t.name);
    w.str("type", &t.type_);
    w.str("result", &t.result);
    if t.sampled {
        w.bool("sampled", true);
    }
    w.opt_f64("representative_count", t.representative_count);
    w.open("span_count");
    w.opt_i64("started", t.span_count_started);
    w.opt_i64("dropped", t.span_count_dropped);
    w.close();
    if !t.marks.is_empty() {
        w.open("marks");
        for (g, ms) in &t.marks {
            w.open(&sanitize_key(g));
            for (k, v) in ms {
                w.f64(&sanitize_key(k), *v);
            }
            w.close();
        }
        w.close();
    }
    if let Some(e) = &t.experience {
        w.open("experience");
        w.opt_f64("cls", e.cls);
        w.opt_f64("fid", e.fid);
        w.opt_f64("tbt", e.tbt);
        let (c, s, m) = e.longtask.unwrap_or((0.0, 0.0, 0.0));
        w.open("longtask");
        w.f64("count", c);
        w.f64("sum", s);
        w.f64("max", m);
        w.close();
        w.close();
    }
    if let Some(c) = &t.custom {
        w.json("custom", c, true);
    }
    message(w, &t.message);
    w.str_list("profiler_stack_trace_ids", &t.profiler_stack_trace_ids);
    w.close();
    w.open("span");
    if t.span_id_from_id {
        w.str("id", &t.id);
    }
    w.str("kind", &t.span_kind);
    links(w, &t.links);
    w.close();
    event_obj(w, &t.outcome, t.duration_ns);
    w.open("session");
    w.str("id", &t.session_id);
    if t.session_sequence != 0 {
        w.i64("sequence", t.session_sequence);
    }
    w.close();
}

fn frames(w: &mut W<'_>, k: &str, frames: &[Frame]) {
    if frames.is_empty() {
        return;
    }
    w.open_arr(k);
    for f in frames {
        w.open_elem();
        w.str("filename", &f.filename);
        w.str("abs_path", &f.abs_path);
        w.str("classname", &f.classname);
        w.str("module", &f.module);
        w.str("function", &f.function);
        w.open("line");
        w.opt_i64("number", f.lineno);
        w.opt_i64("column", f.colno);
        w.str("context", &f.context_line);
        w.close();
        w.open("context");
        w.str_list("pre", &f.pre_context);
        w.str_list("post", &f.post_context);
        w.close();
        if let Some(v) = &f.vars {
            w.json("vars", v, false);
        }
        if f.library_frame {
            w.bool("library_frame", true);
        }
        w.bool("exclude_from_grouping", f.exclude_from_grouping);
        w.open("sourcemap");
        if f.sourcemap_updated {
            w.bool("updated", true);
        }
        w.str("error", &f.sourcemap_error);
        w.close();
        if let Some(o) = &f.original {
            w.open("original");
            w.str("abs_path", &o.abs_path);
            w.str("filename", &o.filename);
            w.str("classname", &o.classname);
            w.str("function", &o.function);
            w.opt_i64("lineno", o.lineno);
            w.opt_i64("colno", o.colno);
            if o.library_frame == Some(true) {
                w.bool("library_frame", true);
            }
            w.close();
        }
        w.close();
    }
    w.close_arr();
}

fn span(w: &mut W<'_>, _ev: &Event, s: &Span) {
    w.open("span");
    w.str("id", &s.id);
    w.str("name", &s.name);
    w.str("type", &s.type_);
    w.str("subtype", &s.subtype);
    w.str("action", &s.action);
    w.str("kind", &s.span_kind);
    w.opt_bool("sync", s.sync);
    w.opt_f64("representative_count", s.representative_count);
    if let Some(c) = &s.composite {
        w.open("composite");
        w.str_always("compression_strategy", &c.strategy);
        w.i64("count", c.count);
        w.open("sum");
        w.i64("us", c.sum_us);
        w.close();
        w.close();
    }
    frames(w, "stacktrace", &s.stacktrace);
    links(w, &s.links);
    w.open("db");
    w.str("instance", &s.db_instance);
    w.str("statement", &s.db_statement);
    w.str("type", &s.db_type);
    w.open("user");
    w.str("name", &s.db_user);
    w.close();
    w.str("link", &s.db_link);
    w.opt_i64("rows_affected", s.db_rows_affected);
    w.close();
    if let Some((t, n, r)) = &s.destination_service {
        w.open("destination");
        w.open("service");
        w.str("type", t);
        w.str("name", n);
        w.str("resource", r);
        w.close();
        w.close();
    }
    message(w, &s.message);
    w.close();
    w.open("transaction");
    w.str("id", &s.transaction_id);
    w.close();
    if !s.child_ids.is_empty() {
        w.open("child");
        w.str_list("id", &s.child_ids);
        w.close();
    }
    w.open("destination");
    w.str("address", &s.destination_address);
    if let Ok(ip) = s.destination_address.parse::<IpAddr>() {
        w.ip("ip", Some(ip));
    }
    w.opt_i64("port", s.destination_port);
    w.close();
    event_obj(w, &s.outcome, s.duration_ns);
}

fn error(w: &mut W<'_>, e: &ErrorEvent) {
    w.open("error");
    w.str("id", &e.id);
    w.str("culprit", &e.culprit);
    w.str("grouping_key", &e.grouping_key);
    if !e.exceptions.is_empty() {
        w.open_arr("exception");
        for (i, x) in e.exceptions.iter().enumerate() {
            w.open_elem();
            w.str("message", &x.message);
            w.str("type", &x.type_);
            w.str("module", &x.module);
            w.str("code", &x.code);
            w.opt_bool("handled", x.handled);
            if let Some(a) = &x.attributes {
                w.json("attributes", a, false);
            }
            frames(w, "stacktrace", &x.stacktrace);
            if let Some(p) = x.parent {
                if p + 1 != i {
                    w.i64("parent", p as i64);
                }
            }
            w.close_keep();
        }
        w.close_arr();
    }
    if let Some(l) = &e.log {
        w.open("log");
        w.str("message", &l.message);
        w.str("level", &l.level);
        w.str("logger_name", &l.logger_name);
        w.str("param_message", &l.param_message);
        frames(w, "stacktrace", &l.stacktrace);
        w.close();
    }
    if let Some(c) = &e.custom {
        w.json("custom", c, true);
    }
    w.close();
    w.open("transaction");
    w.str("id", &e.transaction_id);
    w.str("name", &e.transaction_name);
    w.str("type", &e.transaction_type);
    if e.transaction_sampled == Some(true) {
        w.bool("sampled", true);
    }
    w.close();
    w.open("span");
    w.str("id", &e.span_id);
    w.close();
    w.str("message", &e.message);
}

fn metricset(w: &mut W<'_>, ev: &Event, m: &Metricset) {
    let erase = !m.has_refs && all_samples_internal(ev, m);
    w.open("metricset");
    w.str("name", &m.name);
    if !m.samples.is_empty() {
        w.open_arr("samples");
        for s in &m.samples {
            w.open_elem();
            w.str("name", &s.name);
            if s.type_ == "histogram" && !erase {
                w.str("type", "histogram");
                w.open_arr("values");
                for v in &s.values {
                    w.sep();
                    write_f64(w.out, *v);
                }
                w.close_arr();
                w.open_arr("counts");
                for c in &s.counts {
                    w.sep();
                    write_i64(w.out, *c);
                }
                w.close_arr();
            } else if s.type_ == "summary" && !erase {
                w.str("type", "summary");
                w.i64("value_count", 0);
                w.i64("sum", 0);
            } else {
                if !erase {
                    w.str("type", &s.type_);
                }
                w.f64("value", s.value);
            }
            if !erase {
                w.str("unit", &s.unit);
            }
            w.close();
        }
        w.close_arr();
    }
    w.close_keep();
    w.open("transaction");
    w.str("name", &m.transaction_name);
    w.str("type", &m.transaction_type);
    w.close();
    w.open("span");
    w.str("type", &m.span_type);
    w.str("subtype", &m.span_subtype);
    w.open("self_time");
    w.opt_i64("count", m.self_time_count);
    w.opt_i64("sum.us", m.self_time_sum_us);
    w.close();
    w.close();
}

fn log(w: &mut W<'_>, l: &LogEvent) {
    w.str("message", &l.message);
    w.open("log");
    w.str("level", &l.level);
    w.str("logger", &l.logger);
    if !l.origin_function.is_empty()
        || !l.origin_file_name.is_empty()
        || l.origin_file_line.is_some()
    {
        w.open("origin");
        w.open("file");
        w.str("name", &l.origin_file_name);
        w.opt_i64("line", l.origin_file_line);
        w.close_keep();
        w.str_always("function", &l.origin_function);
        w.close();
    }
    w.close();
    w.open("event");
    if !l.is_error() {
        w.str("kind", "event");
    }
    w.str("dataset", &l.event_dataset);
    w.close();
    w.open("transaction");
    w.str("id", &l.transaction_id);
    w.close();
    w.open("span");
    w.str("id", &l.span_id);
    w.close();
    if l.is_error() {
        w.open("error");
        w.str("type", &l.error_type);
        w.str("message", &l.error_message);
        w.str("stack_trace", &l.error_stack_trace);
        w.str("grouping_key", "ef46db3751d8e999");
        w.close();
    }
}

#[cfg(test)]
pub(crate) fn escape_for_test(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s)
}
