//! Document encoding: writes the bulk action
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

/// A key known at compile time, already quoted: `"name":`.
#[derive(Clone, Copy)]
struct Q(&'static str);

/// `q!("name")` → the pre-quoted key `"name":`.
macro_rules! q {
    ($k:literal) => {
        Q(concat!("\"", $k, "\":"))
    };
}

/// Something that can be written as an object key.
trait KeyArg: Copy {
    fn write_key(self, out: &mut Vec<u8>);
}

impl KeyArg for Q {
    #[inline]
    fn write_key(self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.as_bytes());
    }
}

impl KeyArg for &str {
    fn write_key(self, out: &mut Vec<u8>) {
        escape_into(out, self);
        out.push(b':');
    }
}

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

/// Writes `f` as Go's `encoding/json` does: the shortest representation that
/// round-trips, in plain decimal inside `[1e-6, 1e21)` and in exponent form
/// (`1e+21`, `1.5e-7`) outside it, so `f64::MAX` is 23 bytes, not 309 digits.
/// Non-finite values (never produced by JSON input) are written as `0`.
fn write_f64(out: &mut Vec<u8>, f: f64) {
    if !f.is_finite() {
        out.push(b'0');
        return;
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        let start = out.len();
        let _ = write!(out, "{f:e}");
        // Rust writes `1e21` / `1e-7`; Go writes `1e+21` / `1e-7`.
        if let Some(e) = out[start..].iter().position(|&b| b == b'e') {
            let at = start + e + 1;
            if out.get(at) != Some(&b'-') {
                out.insert(at, b'+');
            }
        }
    } else {
        let _ = write!(out, "{f}");
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
    #[inline]
    fn key(&mut self, k: impl KeyArg) {
        self.sep();
        k.write_key(self.out);
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
    fn open(&mut self, k: impl KeyArg) {
        let start = self.out.len();
        let pe = self.stack.last().is_none_or(|l| l.empty);
        self.key(k);
        self.push_level(start, pe, b'{');
    }
    fn open_arr(&mut self, k: impl KeyArg) {
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
    fn str(&mut self, k: impl KeyArg, v: &str) {
        if !v.is_empty() {
            self.str_always(k, v);
        }
    }
    fn str_always(&mut self, k: impl KeyArg, v: &str) {
        self.key(k);
        escape_into(self.out, v);
    }
    fn elem_str(&mut self, v: &str) {
        self.sep();
        escape_into(self.out, v);
    }
    fn i64(&mut self, k: impl KeyArg, v: i64) {
        self.key(k);
        write_i64(self.out, v);
    }
    fn opt_i64(&mut self, k: impl KeyArg, v: Option<i64>) {
        if let Some(v) = v {
            self.i64(k, v);
        }
    }
    fn f64(&mut self, k: impl KeyArg, v: f64) {
        self.key(k);
        write_f64(self.out, v);
    }
    fn opt_f64(&mut self, k: impl KeyArg, v: Option<f64>) {
        if let Some(v) = v {
            self.f64(k, v);
        }
    }
    fn bool(&mut self, k: impl KeyArg, v: bool) {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
    }
    fn opt_bool(&mut self, k: impl KeyArg, v: Option<bool>) {
        if let Some(v) = v {
            self.bool(k, v);
        }
    }
    fn ip(&mut self, k: impl KeyArg, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.key(k);
            let _ = write!(self.out, "\"{ip}\"");
        }
    }
    fn str_list<S: AsRef<str>>(&mut self, k: impl KeyArg, v: &[S]) {
        if v.is_empty() {
            return;
        }
        self.open_arr(k);
        for s in v {
            self.elem_str(s.as_ref());
        }
        self.close_arr();
    }
    fn headers(&mut self, k: impl KeyArg, h: &Headers) {
        if h.is_empty() {
            return;
        }
        self.open(k);
        for (name, vals) in h {
            if !vals.is_empty() {
                self.key(name.as_str());
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
    fn json(&mut self, k: impl KeyArg, v: &Json, sanitize_top: bool) {
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
                        self.json(sanitize_key(ck).as_ref(), cv, false);
                    } else {
                        self.json(ck.as_str(), cv, false);
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
                    self.json(ck.as_str(), cv, false);
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
/// (an unsampled transaction from a backend agent is not indexed, as in
/// apm-server; RUM agents' unsampled transactions are).
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
        w.key(q!("@timestamp"));
        write_timestamp(w.out, ev.timestamp_ns);
    }
    // apm-data writes `timestamp.us` only for a non-zero timestamp
    // (TestDropUnsampled sends `"timestamp": 0`).
    if ev.timestamp_ns != 0
        && matches!(
            ev.body,
            Body::Transaction(_) | Body::Span(_) | Body::Error(_)
        )
    {
        w.open(q!("timestamp"));
        w.i64(q!("us"), ev.timestamp_ns.div_euclid(1000));
        w.close();
    }
    w.open(q!("data_stream"));
    w.str(q!("type"), ty);
    w.str(q!("dataset"), &dataset);
    w.str(q!("namespace"), &ctx.namespace);
    w.close();
    w.open(q!("observer"));
    w.str(q!("hostname"), &ctx.observer_hostname);
    w.str(q!("type"), "apm-server");
    w.str(q!("version"), &ctx.observer_version);
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

fn name_version(w: &mut W<'_>, k: Q, nv: &NameVersion) {
    w.open(k);
    w.str(q!("name"), &nv.name);
    w.str(q!("version"), &nv.version);
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
    w.open(q!("agent"));
    w.str(q!("name"), &a.name);
    w.str(q!("version"), &a.version);
    w.str(q!("ephemeral_id"), &a.ephemeral_id);
    w.str(q!("activation_method"), &a.activation_method);
    w.close();
}

fn service_part(w: &mut W<'_>, s: &Service) {
    w.open(q!("service"));
    w.str(q!("name"), &s.name);
    w.str(q!("version"), &s.version);
    w.str(q!("environment"), &s.environment);
    w.open(q!("node"));
    w.str(q!("name"), &s.node_name);
    w.close();
    name_version(w, q!("language"), &s.language);
    name_version(w, q!("runtime"), &s.runtime);
    name_version(w, q!("framework"), &s.framework);
    w.open(q!("origin"));
    w.str(q!("id"), &s.origin_id);
    w.str(q!("name"), &s.origin_name);
    w.str(q!("version"), &s.origin_version);
    w.close();
    w.close();
}

/// Writes the event's `service` object: the metadata's cached fragment, with
/// the event's own `service.target` (when it has one) added as its last key.
fn service_with_target(w: &mut W<'_>, service: &[u8], target: Option<&(SharedStr, SharedStr)>) {
    let Some((t, n)) = target else {
        if !service.is_empty() {
            w.sep();
            w.out.extend_from_slice(service);
        }
        return;
    };
    w.sep();
    match service.split_last() {
        // `"service":{…}` without its closing brace
        Some((b'}', open)) => {
            w.out.extend_from_slice(open);
            w.out.push(b',');
        }
        _ => w.out.extend_from_slice(b"\"service\":{"),
    }
    w.out.extend_from_slice(b"\"target\":{\"type\":");
    escape_into(w.out, t);
    if !n.is_empty() {
        w.out.extend_from_slice(b",\"name\":");
        escape_into(w.out, n);
    }
    w.out.extend_from_slice(b"}}");
}

fn common(w: &mut W<'_>, ev: &Event) {
    let agent = ev
        .agent
        .encoded
        .get_or_init(|| fragment(|w| agent_part(w, &ev.agent)));
    if !agent.is_empty() {
        w.sep();
        w.out.extend_from_slice(agent);
    }
    let service = ev
        .service
        .encoded
        .get_or_init(|| fragment(|w| service_part(w, &ev.service)));
    service_with_target(w, service, ev.service_target.as_ref());
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
        w.open(q!("user"));
        w.str(q!("id"), &u.id);
        w.str(q!("name"), &u.name);
        w.str(q!("email"), &u.email);
        w.str(q!("domain"), &u.domain);
        w.close();
    }

    if !ev.labels.is_empty() {
        w.open(q!("labels"));
        for (k, v) in &ev.labels.strings {
            w.str_always(sanitize_key(k).as_ref(), v);
        }
        for (k, v) in &ev.labels.string_lists {
            w.open_arr(sanitize_key(k).as_ref());
            for s in v {
                w.elem_str(s);
            }
            w.close_arr();
        }
        w.close();
        w.open(q!("numeric_labels"));
        for (k, v) in &ev.labels.numbers {
            w.f64(sanitize_key(k).as_ref(), *v);
        }
        for (k, v) in &ev.labels.number_lists {
            w.open_arr(sanitize_key(k).as_ref());
            for n in v {
                w.sep();
                write_f64(w.out, *n);
            }
            w.close_arr();
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
        w.open(q!("client"));
        w.ip(q!("ip"), cl.client_ip);
        if let Some(p) = cl.client_port {
            w.i64(q!("port"), p as i64);
        }
        w.close();
        w.open(q!("source"));
        w.ip(q!("ip"), cl.source_ip);
        if let Some(p) = cl.source_port {
            w.i64(q!("port"), p as i64);
        }
        w.open(q!("nat"));
        w.ip(q!("ip"), cl.nat_ip);
        w.close();
        w.close();
        w.open(q!("user_agent"));
        w.str(q!("original"), &cl.user_agent);
        w.close();
    }
    if let Some(h) = &ev.http {
        w.open(q!("http"));
        w.str(q!("version"), &h.version);
        w.open(q!("request"));
        w.str(q!("method"), &h.request_method);
        w.str(q!("id"), &h.request_id);
        w.str(q!("referrer"), &h.request_referrer);
        w.headers(q!("headers"), &h.request_headers);
        if let Some(j) = &h.request_cookies {
            w.json(q!("cookies"), j, false);
        }
        if let Some(j) = &h.request_env {
            w.json(q!("env"), j, false);
        }
        if let Some(j) = &h.request_body {
            w.open(q!("body"));
            w.json(q!("original"), j, false);
            w.close();
        }
        w.close();
        w.open(q!("response"));
        w.opt_i64(q!("status_code"), h.response_status_code);
        w.headers(q!("headers"), &h.response_headers);
        w.opt_bool(q!("finished"), h.response_finished);
        w.opt_bool(q!("headers_sent"), h.response_headers_sent);
        w.opt_i64(q!("transfer_size"), h.response_transfer_size);
        w.opt_i64(q!("encoded_body_size"), h.response_encoded_body_size);
        w.opt_i64(q!("decoded_body_size"), h.response_decoded_body_size);
        w.close();
        w.close();
    }
    if let Some(u) = &ev.url {
        w.open(q!("url"));
        w.str(q!("original"), &u.original);
        w.str(q!("full"), &u.full);
        w.str(q!("domain"), &u.domain);
        w.str(q!("path"), &u.path);
        w.str(q!("query"), &u.query);
        w.str(q!("fragment"), &u.fragment);
        w.str(q!("scheme"), &u.scheme);
        w.opt_i64(q!("port"), u.port);
        w.close();
    }
    if let Some(f) = &ev.faas {
        w.open(q!("faas"));
        w.str(q!("id"), &f.id);
        w.str(q!("name"), &f.name);
        w.str(q!("version"), &f.version);
        w.str(q!("execution"), &f.execution);
        w.opt_bool(q!("coldstart"), f.coldstart);
        w.open(q!("trigger"));
        w.str(q!("type"), &f.trigger_type);
        w.str(q!("request_id"), &f.trigger_request_id);
        w.close();
        w.close();
    }
    w.open(q!("trace"));
    w.str(q!("id"), &ev.trace_id);
    w.close();
    w.open(q!("parent"));
    w.str(q!("id"), &ev.parent_id);
    w.close();
}

/// host, process, container, kubernetes, cloud and network (metadata-only parts).
fn shared_part(w: &mut W<'_>, sh: &Shared, thread_name: &str, cloud_origin: Option<&[String; 4]>) {
    w.open(q!("host"));
    w.str(q!("hostname"), &sh.host_hostname);
    w.str(q!("name"), &sh.host_name);
    w.str(q!("id"), &sh.host_id);
    w.str(q!("architecture"), &sh.host_architecture);
    w.open(q!("os"));
    w.str(q!("platform"), &sh.host_os_platform);
    w.close();
    if let Some(ip) = sh.host_ip {
        w.key(q!("ip"));
        let _ = write!(w.out, "[\"{ip}\"]");
    }
    w.close();

    w.open(q!("process"));
    w.opt_i64(q!("pid"), sh.process_pid);
    w.open(q!("parent"));
    w.opt_i64(q!("pid"), sh.process_ppid);
    w.close();
    w.str(q!("title"), &sh.process_title);
    w.str_list(q!("args"), &sh.process_args);
    if !thread_name.is_empty() {
        w.open(q!("thread"));
        w.str(q!("name"), thread_name);
        w.close();
    }
    w.close();

    w.open(q!("container"));
    w.str(q!("id"), &sh.container_id);
    w.close();
    w.open(q!("kubernetes"));
    w.str(q!("namespace"), &sh.k8s_namespace);
    w.open(q!("node"));
    w.str(q!("name"), &sh.k8s_node_name);
    w.close();
    w.open(q!("pod"));
    w.str(q!("name"), &sh.k8s_pod_name);
    w.str(q!("uid"), &sh.k8s_pod_uid);
    w.close();
    w.close();

    let c = &sh.cloud;
    w.open(q!("cloud"));
    w.open(q!("account"));
    w.str(q!("id"), &c.account_id);
    w.str(q!("name"), &c.account_name);
    w.close();
    w.str(q!("availability_zone"), &c.availability_zone);
    w.open(q!("instance"));
    w.str(q!("id"), &c.instance_id);
    w.str(q!("name"), &c.instance_name);
    w.close();
    w.open(q!("machine"));
    w.str(q!("type"), &c.machine_type);
    w.close();
    w.open(q!("project"));
    w.str(q!("id"), &c.project_id);
    w.str(q!("name"), &c.project_name);
    w.close();
    w.str(q!("provider"), &c.provider);
    w.str(q!("region"), &c.region);
    w.open(q!("service"));
    w.str(q!("name"), &c.service_name);
    w.close();
    {
        if let Some([acc, prov, reg, svc]) = cloud_origin {
            w.open(q!("origin"));
            w.open(q!("account"));
            w.str(q!("id"), acc);
            w.close();
            w.str(q!("provider"), prov);
            w.str(q!("region"), reg);
            w.open(q!("service"));
            w.str(q!("name"), svc);
            w.close();
            w.close();
        }
    }
    w.close();

    w.open(q!("network"));
    w.open(q!("connection"));
    w.str(q!("type"), &sh.network_connection_type);
    w.close();
    w.close();
}

fn event_obj(w: &mut W<'_>, outcome: &str, duration_ns: i64) {
    w.open(q!("event"));
    w.str(q!("outcome"), outcome);
    if duration_ns != 0 {
        w.i64(q!("duration"), duration_ns);
    }
    w.close();
}

fn message(w: &mut W<'_>, m: &Option<Message>) {
    if let Some(m) = m {
        w.open(q!("message"));
        w.open(q!("queue"));
        w.str(q!("name"), &m.queue_name);
        w.close();
        w.open(q!("age"));
        w.opt_i64(q!("ms"), m.age_ms);
        w.close();
        w.str(q!("body"), &m.body);
        w.str(q!("routing_key"), &m.routing_key);
        w.headers(q!("headers"), &m.headers);
        w.close();
    }
}

fn links(w: &mut W<'_>, links: &[Link]) {
    if links.is_empty() {
        return;
    }
    w.open_arr(q!("links"));
    for (t, s) in links {
        w.open_elem();
        w.open(q!("trace"));
        w.str(q!("id"), t);
        w.close();
        w.open(q!("span"));
        w.str(q!("id"), s);
        w.close();
        w.close();
    }
    w.close_arr();
}

fn transaction(w: &mut W<'_>, _ev: &Event, t: &Transaction) {
    w.open(q!("transaction"));
    w.str(q!("id"), &t.id);
    w.str(q!("name"), &t.name);
    w.str(q!("type"), &t.type_);
    w.str(q!("result"), &t.result);
    if t.sampled {
        w.bool(q!("sampled"), true);
    }
    w.opt_f64(q!("representative_count"), t.representative_count);
    w.open(q!("span_count"));
    w.opt_i64(q!("started"), t.span_count_started);
    w.opt_i64(q!("dropped"), t.span_count_dropped);
    w.close();
    if !t.marks.is_empty() {
        w.open(q!("marks"));
        for (g, ms) in &t.marks {
            w.open(sanitize_key(g).as_ref());
            for (k, v) in ms {
                w.f64(sanitize_key(k).as_ref(), *v);
            }
            w.close();
        }
        w.close();
    }
    if let Some(e) = &t.experience {
        w.open(q!("experience"));
        w.opt_f64(q!("cls"), e.cls);
        w.opt_f64(q!("fid"), e.fid);
        w.opt_f64(q!("tbt"), e.tbt);
        let (c, s, m) = e.longtask.unwrap_or((0.0, 0.0, 0.0));
        w.open(q!("longtask"));
        w.f64(q!("count"), c);
        w.f64(q!("sum"), s);
        w.f64(q!("max"), m);
        w.close();
        w.close();
    }
    if let Some(c) = &t.custom {
        w.json(q!("custom"), c, true);
    }
    message(w, &t.message);
    w.str_list(q!("profiler_stack_trace_ids"), &t.profiler_stack_trace_ids);
    w.close();
    w.open(q!("span"));
    if t.span_id_from_id {
        w.str(q!("id"), &t.id);
    }
    w.str(q!("kind"), &t.span_kind);
    links(w, &t.links);
    w.close();
    event_obj(w, &t.outcome, t.duration_ns);
    w.open(q!("session"));
    w.str(q!("id"), &t.session_id);
    if t.session_sequence != 0 {
        w.i64(q!("sequence"), t.session_sequence);
    }
    w.close();
}

fn frames(w: &mut W<'_>, k: Q, frames: &[Frame]) {
    if frames.is_empty() {
        return;
    }
    w.open_arr(k);
    for f in frames {
        w.open_elem();
        w.str(q!("filename"), &f.filename);
        w.str(q!("abs_path"), &f.abs_path);
        w.str(q!("classname"), &f.classname);
        w.str(q!("module"), &f.module);
        w.str(q!("function"), &f.function);
        w.open(q!("line"));
        w.opt_i64(q!("number"), f.lineno);
        w.opt_i64(q!("column"), f.colno);
        w.str(q!("context"), &f.context_line);
        w.close();
        w.open(q!("context"));
        w.str_list(q!("pre"), &f.pre_context);
        w.str_list(q!("post"), &f.post_context);
        w.close();
        if let Some(v) = &f.vars {
            w.json(q!("vars"), v, false);
        }
        if f.library_frame {
            w.bool(q!("library_frame"), true);
        }
        w.bool(q!("exclude_from_grouping"), f.exclude_from_grouping);
        w.open(q!("sourcemap"));
        if f.sourcemap_updated {
            w.bool(q!("updated"), true);
        }
        w.str(q!("error"), &f.sourcemap_error);
        w.close();
        if let Some(o) = &f.original {
            w.open(q!("original"));
            w.str(q!("abs_path"), &o.abs_path);
            w.str(q!("filename"), &o.filename);
            w.str(q!("classname"), &o.classname);
            w.str(q!("function"), &o.function);
            w.opt_i64(q!("lineno"), o.lineno);
            w.opt_i64(q!("colno"), o.colno);
            if o.library_frame == Some(true) {
                w.bool(q!("library_frame"), true);
            }
            w.close();
        }
        w.close();
    }
    w.close_arr();
}

fn span(w: &mut W<'_>, _ev: &Event, s: &Span) {
    w.open(q!("span"));
    w.str(q!("id"), &s.id);
    w.str(q!("name"), &s.name);
    w.str(q!("type"), &s.type_);
    w.str(q!("subtype"), &s.subtype);
    w.str(q!("action"), &s.action);
    w.str(q!("kind"), &s.span_kind);
    w.opt_bool(q!("sync"), s.sync);
    w.opt_f64(q!("representative_count"), s.representative_count);
    if let Some(c) = &s.composite {
        w.open(q!("composite"));
        w.str_always(q!("compression_strategy"), &c.strategy);
        w.i64(q!("count"), c.count);
        w.open(q!("sum"));
        w.i64(q!("us"), c.sum_us);
        w.close();
        w.close();
    }
    frames(w, q!("stacktrace"), &s.stacktrace);
    links(w, &s.links);
    w.open(q!("db"));
    w.str(q!("instance"), &s.db_instance);
    w.str(q!("statement"), &s.db_statement);
    w.str(q!("type"), &s.db_type);
    w.open(q!("user"));
    w.str(q!("name"), &s.db_user);
    w.close();
    w.str(q!("link"), &s.db_link);
    w.opt_i64(q!("rows_affected"), s.db_rows_affected);
    w.close();
    if let Some((t, n, r)) = &s.destination_service {
        w.open(q!("destination"));
        w.open(q!("service"));
        w.str(q!("type"), t);
        w.str(q!("name"), n);
        w.str(q!("resource"), r);
        w.close();
        w.close();
    }
    message(w, &s.message);
    w.close();
    w.open(q!("transaction"));
    w.str(q!("id"), &s.transaction_id);
    w.close();
    if !s.child_ids.is_empty() {
        w.open(q!("child"));
        w.str_list(q!("id"), &s.child_ids);
        w.close();
    }
    w.open(q!("destination"));
    w.str(q!("address"), &s.destination_address);
    if let Ok(ip) = s.destination_address.parse::<IpAddr>() {
        w.ip(q!("ip"), Some(ip));
    }
    w.opt_i64(q!("port"), s.destination_port);
    w.close();
    event_obj(w, &s.outcome, s.duration_ns);
}

fn error(w: &mut W<'_>, e: &ErrorEvent) {
    w.open(q!("error"));
    w.str(q!("id"), &e.id);
    w.str(q!("culprit"), &e.culprit);
    w.str(q!("grouping_key"), &e.grouping_key);
    if !e.exceptions.is_empty() {
        w.open_arr(q!("exception"));
        for (i, x) in e.exceptions.iter().enumerate() {
            w.open_elem();
            w.str(q!("message"), &x.message);
            w.str(q!("type"), &x.type_);
            w.str(q!("module"), &x.module);
            w.str(q!("code"), &x.code);
            w.opt_bool(q!("handled"), x.handled);
            if let Some(a) = &x.attributes {
                w.json(q!("attributes"), a, false);
            }
            frames(w, q!("stacktrace"), &x.stacktrace);
            if let Some(p) = x.parent {
                if p + 1 != i {
                    w.i64(q!("parent"), p as i64);
                }
            }
            w.close_keep();
        }
        w.close_arr();
    }
    if let Some(l) = &e.log {
        w.open(q!("log"));
        w.str(q!("message"), &l.message);
        w.str(q!("level"), &l.level);
        w.str(q!("logger_name"), &l.logger_name);
        w.str(q!("param_message"), &l.param_message);
        frames(w, q!("stacktrace"), &l.stacktrace);
        w.close();
    }
    if let Some(c) = &e.custom {
        w.json(q!("custom"), c, true);
    }
    w.str(q!("stack_trace"), &e.stack_trace);
    w.close();
    w.open(q!("transaction"));
    w.str(q!("id"), &e.transaction_id);
    w.str(q!("name"), &e.transaction_name);
    w.str(q!("type"), &e.transaction_type);
    if e.transaction_sampled == Some(true) {
        w.bool(q!("sampled"), true);
    }
    w.close();
    w.open(q!("span"));
    w.str(q!("id"), &e.span_id);
    w.close();
    w.str(q!("message"), &e.message);
}

fn metricset(w: &mut W<'_>, ev: &Event, m: &Metricset) {
    let erase = !m.has_refs && all_samples_internal(ev, m);
    w.open(q!("metricset"));
    w.str(q!("name"), &m.name);
    if !m.samples.is_empty() {
        w.open_arr(q!("samples"));
        for s in &m.samples {
            w.open_elem();
            w.str(q!("name"), &s.name);
            if s.type_ == "histogram" && !erase {
                w.str(q!("type"), "histogram");
                w.open_arr(q!("values"));
                for v in &s.values {
                    w.sep();
                    write_f64(w.out, *v);
                }
                w.close_arr();
                w.open_arr(q!("counts"));
                for c in &s.counts {
                    w.sep();
                    write_i64(w.out, *c);
                }
                w.close_arr();
            } else if s.type_ == "summary" && !erase {
                w.str(q!("type"), "summary");
                match s.summary {
                    Some((count, sum)) => {
                        w.i64(q!("value_count"), i64::try_from(count).unwrap_or(i64::MAX));
                        w.f64(q!("sum"), sum);
                    }
                    None => {
                        w.i64(q!("value_count"), 0);
                        w.i64(q!("sum"), 0);
                    }
                }
            } else {
                if !erase {
                    w.str(q!("type"), &s.type_);
                }
                w.f64(q!("value"), s.value);
            }
            if !erase {
                w.str(q!("unit"), &s.unit);
            }
            w.close();
        }
        w.close_arr();
    }
    w.close_keep();
    w.open(q!("transaction"));
    w.str(q!("name"), &m.transaction_name);
    w.str(q!("type"), &m.transaction_type);
    w.close();
    w.open(q!("span"));
    w.str(q!("type"), &m.span_type);
    w.str(q!("subtype"), &m.span_subtype);
    w.open(q!("self_time"));
    w.opt_i64(q!("count"), m.self_time_count);
    w.opt_i64(q!("sum.us"), m.self_time_sum_us);
    w.close();
    w.close();
}

fn log(w: &mut W<'_>, l: &LogEvent) {
    w.str(q!("message"), &l.message);
    w.open(q!("log"));
    w.str(q!("level"), &l.level);
    w.str(q!("logger"), &l.logger);
    if !l.origin_function.is_empty()
        || !l.origin_file_name.is_empty()
        || l.origin_file_line.is_some()
    {
        w.open(q!("origin"));
        w.open(q!("file"));
        w.str(q!("name"), &l.origin_file_name);
        w.opt_i64(q!("line"), l.origin_file_line);
        w.close_keep();
        w.str_always(q!("function"), &l.origin_function);
        w.close();
    }
    w.close();
    w.open(q!("event"));
    match l.otlp_severity {
        Some(n) => w.i64(q!("severity"), n),
        None if !l.is_error() => w.str(q!("kind"), "event"),
        None => {}
    }
    w.str(q!("dataset"), &l.event_dataset);
    w.close();
    w.open(q!("transaction"));
    w.str(q!("id"), &l.transaction_id);
    w.close();
    w.open(q!("span"));
    w.str(q!("id"), &l.span_id);
    w.close();
    if l.is_error() {
        w.open(q!("error"));
        w.str(q!("type"), &l.error_type);
        w.str(q!("message"), &l.error_message);
        w.str(q!("stack_trace"), &l.error_stack_trace);
        w.str(q!("grouping_key"), "ef46db3751d8e999");
        w.close();
    }
}

#[cfg(test)]
pub(crate) fn escape_for_test(out: &mut Vec<u8>, s: &str) {
    escape_into(out, s)
}

#[cfg(test)]
mod float_tests {
    use super::write_f64;

    fn f(v: f64) -> String {
        let mut out = Vec::new();
        write_f64(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_are_written_like_go_encoding_json() {
        // Expected strings are what Go's json.Marshal(float64) prints.
        assert_eq!(f(f64::MAX), "1.7976931348623157e+308");
        assert_eq!(f(-1.5e300), "-1.5e+300");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1e20), "100000000000000000000");
        assert_eq!(f(1e-6), "0.000001");
        assert_eq!(f(1e-7), "1e-7");
        assert_eq!(f(1.25e-10), "1.25e-10");
        assert_eq!(f(5e-324), "5e-324");
        assert_eq!(f(0.0), "0");
        assert_eq!(f(-0.0), "-0");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(123.456), "123.456");
        assert_eq!(f(3.0), "3");
        assert_eq!(f(f64::NAN), "0");
        for v in [f64::MAX, 1e21, 1e-7, 5e-324, -2.5e-9] {
            assert_eq!(f(v).parse::<f64>().unwrap(), v, "round trip {v}");
        }
    }
}
