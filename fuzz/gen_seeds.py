#!/usr/bin/env python3
"""Writes the fuzz seed corpus to fuzz/seeds/<target>/ (deterministic).

The seeds are hand-written shapes of valid and invalid intake events (not
copies of the upstream corpus): every event type with its common nested
objects, plus type mismatches, missing required fields, extreme numbers,
odd escapes and truncations. Input formats are documented in src/fuzzing.rs.

    python3 fuzz/gen_seeds.py        # from the repository root
"""
import gzip
import json
import os
import shutil
import zlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def j(v):
    return json.dumps(v, separators=(",", ":")).encode()


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ndjson(*lines):
    return b"\n".join(x if isinstance(x, bytes) else j(x) for x in lines) + b"\n"


# ---------------------------------------------------------------------------
# v2

TRACE = "0123456789abcdef0123456789abcdef"
ID1, ID2, ID3 = "0123456789abcdef", "fedcba9876543210", "00112233aabbccdd"

META = {
    "metadata": {
        "service": {
            "name": "fuzz-svc",
            "version": "1.2.3",
            "environment": "staging",
            "agent": {"name": "python", "version": "6.0.0", "ephemeral_id": "e1"},
            "language": {"name": "python", "version": "3.12"},
            "runtime": {"name": "CPython", "version": "3.12.1"},
            "framework": {"name": "django", "version": "5.0"},
            "node": {"configured_name": "node-1"},
        },
        "process": {"pid": 1234, "ppid": 1, "title": "app", "argv": ["app", "-v"]},
        "system": {
            "architecture": "x86_64",
            "detected_hostname": "host-a",
            "configured_hostname": "host-b",
            "platform": "linux",
            "container": {"id": "c0ffee"},
            "kubernetes": {"namespace": "ns", "node": {"name": "n1"}, "pod": {"name": "p", "uid": "u"}},
        },
        "cloud": {
            "provider": "aws",
            "region": "eu-west-1",
            "availability_zone": "eu-west-1a",
            "instance": {"id": "i-1", "name": "web"},
            "machine": {"type": "t3.micro"},
            "account": {"id": "42", "name": "acct"},
            "project": {"id": "p1", "name": "proj"},
            "service": {"name": "ec2"},
        },
        "user": {"id": 99, "username": "bob", "email": "b@example.com", "domain": "ex"},
        "network": {"connection": {"type": "wifi"}},
        "labels": {"tier": "web", "n": 1.5, "ok": True, "none": None},
    }
}
META_MIN = {"metadata": {"service": {"name": "svc", "agent": {"name": "go", "version": "2.0"}}}}

STACK = [
    {"filename": "app.py", "lineno": 10, "function": "handler", "module": "app",
     "abs_path": "/srv/app.py", "context_line": "x = 1", "pre_context": ["a"],
     "post_context": ["b"], "library_frame": False, "vars": {"x": 1}},
    {"classname": "Foo", "function": "bar", "lineno": 0, "colno": 3, "filename": "Foo.java"},
]
CONTEXT = {
    "request": {
        "method": "POST",
        "url": {"full": "https://ex.com:8443/p?q=1#f", "protocol": "https:", "hostname": "ex.com",
                "port": "8443", "pathname": "/p", "search": "?q=1", "hash": "#f"},
        "headers": {"User-Agent": ["curl/8"], "Cookie": "a=b", "X-Multi": ["1", "2"]},
        "cookies": {"a": "b"},
        "env": {"REMOTE_ADDR": "10.0.0.1"},
        "body": {"k": [1, 2, {"z": None}]},
        "http_version": "1.1",
        "socket": {"remote_address": "192.0.2.1"},
    },
    "response": {"status_code": 200, "headers": {"Content-Type": "text/plain"},
                 "finished": True, "headers_sent": True, "transfer_size": 10,
                 "encoded_body_size": 5, "decoded_body_size": 7},
    "user": {"id": "u1", "email": "e@x", "username": "x"},
    "tags": {"a.b": "dots", "c*d": 2, 'q"k': False},
    "custom": {"nested": {"deep": [1, "two", 3.5e-7]}, "big": 1e300},
    "service": {"name": "override", "environment": "qa", "agent": {"ephemeral_id": "x"}},
    "page": {"url": "http://ex.com/page", "referer": "http://ref"},
    "message": {"queue": {"name": "q"}, "age": {"ms": 5}, "body": "m", "headers": {"h": "v"}},
    "cloud": {"origin": {"provider": "aws", "region": "r", "account": {"id": "1"}, "service": {"name": "s"}}},
}

TX = {"transaction": {
    "id": ID1, "trace_id": TRACE, "parent_id": ID2, "name": "GET /", "type": "request",
    "duration": 32.59, "result": "HTTP 2xx", "outcome": "success", "sampled": True,
    "timestamp": 1496170407154000, "sample_rate": 0.5,
    "span_count": {"started": 3, "dropped": 1},
    "marks": {"navigationTiming": {"domComplete": 5.1, "a.b": 1}},
    "context": CONTEXT,
    "experience": {"cls": 0.1, "fid": 2.5, "tbt": 3.0, "longtask": {"count": 2, "sum": 9.5, "max": 6}},
    "dropped_spans_stats": [{"destination_service_resource": "mysql", "service_target_type": "mysql",
                             "outcome": "success", "duration": {"count": 2, "sum": {"us": 100}}}],
    "links": [{"trace_id": TRACE, "span_id": ID3}],
    "session": {"id": "s1", "sequence": 2},
    "faas": {"coldstart": True, "execution": "ex", "trigger": {"type": "http", "request_id": "r"},
             "id": "arn:aws:lambda:f", "name": "f", "version": "1"},
    "otel": {"span_kind": "SERVER", "attributes": {"http.method": "GET", "n": 1, "arr": [1, 2]}},
}}
SPAN = {"span": {
    "id": ID2, "transaction_id": ID1, "parent_id": ID1, "trace_id": TRACE, "name": "SELECT",
    "type": "db.mysql.query", "subtype": "mysql", "action": "query", "start": 1.5, "duration": 3.25,
    "timestamp": 1496170407154000, "sync": False, "outcome": "failure", "sample_rate": 1,
    "child_ids": [ID3], "stacktrace": STACK,
    "composite": {"count": 3, "sum": 10.5, "compression_strategy": "exact_match"},
    "context": {
        "db": {"instance": "db1", "statement": "SELECT 1", "type": "sql", "user": "root",
               "link": "l", "rows_affected": 2},
        "http": {"url": "http://x/y", "status_code": 503, "method": "GET",
                 "response": {"status_code": 503, "headers": {"a": "b"}, "transfer_size": 1}},
        "destination": {"address": "db.local", "port": 3306,
                        "service": {"name": "mysql", "resource": "mysql", "type": "db"}},
        "service": {"target": {"type": "mysql", "name": "db1"}},
        "message": {"queue": {"name": "jobs"}},
        "tags": {"k": "v"},
    },
}}
ERR = {"error": {
    "id": ID3, "trace_id": TRACE, "transaction_id": ID1, "parent_id": ID1,
    "timestamp": 1496170407154000, "culprit": "app.handler",
    "transaction": {"sampled": True, "type": "request", "name": "GET /"},
    "exception": {"message": "boom", "type": "ValueError", "module": "builtins", "code": 42,
                  "handled": False, "attributes": {"k": "v"}, "stacktrace": STACK,
                  "cause": [{"message": "inner", "type": "KeyError", "cause": [{"type": "Deep"}]}]},
    "log": {"message": "failed %s", "param_message": "failed %s", "level": "error",
            "logger_name": "root", "stacktrace": STACK[:1]},
    "context": {"request": CONTEXT["request"], "custom": {"x": 1}},
}}
METRIC = {"metricset": {
    "timestamp": 1496170422281000,
    "samples": {"byte_counter": {"value": 1}, "dotted.gauge": {"value": 3.5, "type": "gauge", "unit": "byte"},
                "latency": {"type": "histogram", "values": [1.5, 2.5, 1e10], "counts": [1, 2, 3]},
                "span.self_time.count": {"value": 2}, "span.self_time.sum.us": {"value": 12}},
    "tags": {"code": 200, "success": True, "name": "x"},
    "span": {"type": "db", "subtype": "mysql"},
    "transaction": {"type": "request", "name": "GET /"},
    "service": {"name": "svc", "version": "2"},
    "faas": {"coldstart": False},
}}
LOG = {"log": {
    "@timestamp": "2024-01-02T03:04:05.678Z", "message": "hello", "log.level": "warn",
    "log.logger": "app", "trace.id": TRACE, "transaction.id": ID1, "span.id": ID2,
    "service.name": "logsvc", "event.dataset": "app.log",
    "error": {"type": "E", "message": "m", "stack_trace": "at x"},
    "labels": {"a": "b"}, "process.thread.name": "main",
}}

V2 = {
    "full-metadata-only": ndjson(META),
    "transaction": ndjson(META, TX),
    "span": ndjson(META, SPAN),
    "error": ndjson(META, ERR),
    "metricset": ndjson(META, METRIC),
    "log": ndjson(META, LOG),
    "all-types-min-meta": ndjson(META_MIN, TX, SPAN, ERR, METRIC, LOG),
    "unsampled-tx": ndjson(META_MIN, {"transaction": {"id": ID1, "trace_id": TRACE, "type": "t",
                                                        "duration": 0, "sampled": False,
                                                        "span_count": {"started": 0}}}),
    "missing-required": ndjson(META_MIN, {"transaction": {"id": ID1}}, {"span": {"name": "s"}},
                               {"error": {}}, {"metricset": {"samples": {}}}),
    "type-mismatches": ndjson(META_MIN, {"transaction": {"id": 5, "trace_id": [], "duration": "1"}},
                              {"span": {"id": ID1, "start": {}, "duration": None}},
                              {"error": {"exception": "boom"}}),
    "extreme-numbers": ndjson(META_MIN, {"transaction": {
        "id": ID1, "trace_id": TRACE, "type": "t", "duration": 1.7976931348623157e308,
        "span_count": {"started": 9223372036854775807, "dropped": -1},
        "timestamp": 18446744073709551615, "sample_rate": 5e-324,
        "experience": {"cls": -0.0, "fid": 1e-7, "tbt": 1e21}}}),
    "f64-max-metric": ndjson(META_MIN, {"metricset": {"samples": {
        "m": {"value": 1.7976931348623157e308}, "n": {"value": -2.2250738585072014e-308}}}}),
    "long-strings": ndjson(META_MIN, {"span": {
        "id": ID1, "trace_id": TRACE, "parent_id": ID1, "name": "é" * 1100, "type": "x" * 1025,
        "start": 0, "duration": 1}}),
    "escapes-unicode": b'{"metadata":{"service":{"name":"svc","agent":{"name":"\\u0067o","version":"1"}}}}\n'
                       b'{"error":{"id":"\\u0000\\ud83d\\ude00","log":{"message":"tab\\tnl\\n\\"q\\" \\\\ \\/"},'
                       b'"context":{"tags":{"\\u2028k":"\\ud800"}}}}\n',
    "invalid-json": b'{"metadata":{"service":{"name":"svc","agent":{"name":"go","version":"1"}}}}\n'
                    b'{"span":{"id":"a",}\n{"transaction":\n{"error":{"id":"x"}} trailing garbage\n'
                    b'{"log":{"message":"x"}}}}}\n\n{"unknown":{}}\n[1,2]\n"span"\n{\'span\':1}\n',
    "metadata-errors": ndjson({"metadata": {"service": {"name": "bad name!", "agent": {"name": "", "version": 1}}}}),
    "metadata-not-first": ndjson(TX, META),
    "duplicate-keys": b'{"metadata":{"service":{"name":"a","name":"b","agent":{"name":"go","version":"1"}}}}\n'
                      b'{"transaction":{"id":"1","id":"2","trace_id":"t","type":"a","duration":1,"span_count":{"started":1}}}\n',
    "deep-nesting": ndjson(META_MIN, b'{"error":{"id":"x","exception":{"message":"m","cause":'
                           + b'[{"cause":' * 40 + b"[]" + b"}]" * 40 + b'},"context":{"custom":{"a":'
                           + b"[" * 64 + b"]" * 64 + b"}}}}"),
    "otel-attributes": ndjson(META_MIN, {"span": {
        "id": ID2, "trace_id": TRACE, "parent_id": ID1, "name": "n", "type": "app", "start": 0,
        "duration": 1, "otel": {"span_kind": "CLIENT", "attributes": {
            "messaging.system": "kafka", "db.system": "redis", "http.status_code": 500,
            "net.peer.name": "p", "rpc.service": "s", "f": 1.5, "b": True, "l": ["a", "b"]}}}}),
}

# ---------------------------------------------------------------------------
# RUM v3

M3 = {"m": {"se": {"n": "rum-app", "ve": "1.0", "en": "prod", "a": {"n": "rum-js", "ve": "5.1.0"},
                   "la": {"n": "javascript", "ve": "es6"}, "ru": {"n": "v8", "ve": "9"},
                   "fw": {"n": "react", "ve": "18"}},
            "u": {"id": 7, "un": "ann", "em": "a@x", "ud": "d"}, "l": {"k": "v", "n": 2},
            "n": {"c": {"t": "4g"}}}}
M3_MIN = {"m": {"se": {"n": "rum", "a": {"n": "rum-js", "ve": "5"}}}}
X3 = {"x": {
    "id": ID1, "tid": TRACE, "pid": ID2, "n": "page-load /", "t": "page-load", "d": 295.5,
    "sm": True, "sr": 0.1, "o": "success", "rt": "success",
    "yc": {"sd": 3, "dd": 1},
    "k": {"a": {"fb": 5.5, "di": 10, "dc": 11}, "nt": {"fs": 0, "ls": 1.5}},
    "exp": {"cls": 0.01, "fid": 3, "tbt": 4, "lt": {"count": 1, "sum": 50, "max": 50}},
    "ses": {"id": "sess", "seq": 3},
    "c": {"p": {"rf": "http://r/", "url": "http://ex.com/a?b"}, "u": {"id": "u"},
          "cu": {"x": {"y": 1}}, "g": {"t": "g"},
          "r": {"ts": 100, "ebs": 90, "dbs": 95, "hve": "1.1"},
          "q": {"mt": "GET", "hve": "1.1", "he": {"Accept": "*/*"}, "env": {"e": 1}},
          "se": {"n": "other", "ve": "2", "a": {"n": "a", "ve": "v"}}},
    "me": [{"y": {"t": "Request"}, "sa": {"ysc": {"v": 1}, "yss": {"v": 2.5}}},
           {"sa": {"xdc": {"v": 1}, "xds": {"v": 3}, "xbc": {"v": 1}}, "x": {"n": "t", "t": "p"}}],
    "y": [{"id": ID3, "n": "GET /api", "t": "external", "su": "http", "ac": "fetch", "s": 4.5,
           "d": 2.25, "pi": 0, "sy": True, "o": "failure", "sr": 1,
           "c": {"h": {"url": "http://api/x", "sc": 500, "mt": "GET",
                       "r": {"ts": 1, "ebs": 2, "dbs": 3}},
                 "dt": {"se": {"n": "http://api", "rc": "api:80", "t": "external"}, "ad": "api", "po": 80},
                 "g": {"k": "v"}},
           "st": [{"f": "a.js", "fn": "f", "li": 1, "co": 2, "ap": "http://x/a.js", "cli": "x()",
                   "poc": ["p"], "prc": ["q"], "mo": "m", "lf": False}]},
          {"id": ID2, "n": "child", "t": "resource", "s": 5, "d": 1, "pi": 0}],
}}
E3 = {"e": {
    "id": ID3, "tid": TRACE, "pid": ID1, "xid": ID1, "cl": "app.js", "timestamp": 1496170407154000,
    "x": {"t": "page-load", "sm": True, "n": "name"},
    "ex": {"mg": "Uncaught Error", "t": "Error", "hd": False, "cd": "E1", "mo": "m", "at": {"a": 1},
           "st": [{"ap": "http://x/app.js", "f": "app.js", "fn": "gen", "li": 76, "co": 9}],
           "ca": [{"mg": "cause", "t": "T"}]},
    "log": {"mg": "log msg", "pmg": "p", "lv": "error", "ln": "console",
            "st": [{"f": "b.js", "li": 1}]},
    "c": {"p": {"url": "http://ex.com/"}, "u": {"id": 5}, "cu": {"k": [1]}, "g": {"t": True}},
}}

V3 = {
    "metadata-only": ndjson(M3),
    "transaction-spans-breakdown": ndjson(M3, X3),
    "error": ndjson(M3, E3),
    "min-meta-all": ndjson(M3_MIN, X3, E3),
    "missing-required": ndjson(M3_MIN, {"x": {"id": ID1}}, {"e": {}}, {"x": {"y": [{}]}}),
    "type-mismatches": ndjson(M3_MIN, {"x": {"id": ID1, "tid": TRACE, "t": "a", "d": "1", "yc": {"sd": "x"}}},
                              {"e": {"ex": [], "log": 1}}, {"x": {"y": "not-array", "me": {}}}),
    "extreme-numbers": ndjson(M3_MIN, {"x": {
        "id": ID1, "tid": TRACE, "t": "a", "d": 1.7976931348623157e308, "yc": {"sd": 1},
        "y": [{"id": ID2, "n": "s", "t": "t", "s": 1e308, "d": 1e-300, "pi": 99999}],
        "me": [{"sa": {"ysc": {"v": 1e300}}}]}}),
    "bad-metadata": ndjson({"m": {"se": {"n": "", "a": {"n": "rum-js"}}, "l": {"a.b": {"nested": 1}}}}),
    "v2-meta-v3-events": ndjson(META_MIN, X3, E3),
    "span-parent-index": ndjson(M3_MIN, {"x": {"id": ID1, "tid": TRACE, "t": "a", "d": 1,
                                               "yc": {"sd": 2},
                                               "y": [{"id": ID2, "n": "a", "t": "t", "s": 0, "d": 1, "pi": 1},
                                                     {"id": ID3, "n": "b", "t": "t", "s": 0, "d": 1, "pi": -1}]}}),
    "escapes-truncation": b'{"m":{"se":{"n":"r","a":{"n":"rum-js","ve":"5"}}}}\n'
                          b'{"e":{"id":"\\ud83d","ex":{"mg":"\\u00e9\\n"}}}\n{"x":{"id":"1","tid":\n{"e"\n',
}

# ---------------------------------------------------------------------------
# framer: [mode, max_idx, chunk_idx, body...]; see MAX_SIZES / CHUNKS

BODY = ndjson(META_MIN, TX, SPAN)
LINES = b"line1\nline2\n01234567890123456789\nline4\nline5"
FRAMER = {
    "plain-events-max5000-chunk64": bytes([0, 7, 4]) + BODY,
    "plain-limits-max16-chunk3": bytes([0, 4, 2]) + LINES,
    "plain-crlf-empty-max7-chunk1": bytes([0, 3, 0]) + b"a\r\n\n\nbcdefgh\r\nx\n",
    "plain-x-not-zlib": bytes([0, 5, 7]) + b"xyz\n{\"a\":1}\n",
    "plain-feed-boundary-max4095": bytes([0, 6, 6]) + b"a" * 4094 + b"\n" + b"b" * 4100 + b"\nc",
    "gzip-own-chunk5": bytes([1, 5, 3]) + BODY,
    "zlib-own-chunk2": bytes([2, 4, 1]) + LINES,
    "zlib-own-sniffed": bytes([2 | 8, 5, 4]) + LINES,
    "raw-gzip-valid": bytes([3, 5, 4]) + gzip.compress(b"a\nbb\nccc\n", mtime=0),
    "raw-gzip-truncated": bytes([3, 5, 4]) + gzip.compress(LINES, mtime=0)[:-4],
    "raw-zlib-valid": bytes([4, 1, 2]) + zlib.compress(b"ab\n\ncd"),
    "raw-sniffed-gzip-multimember": bytes([5, 5, 5]) + gzip.compress(b"a\n", mtime=0)
    + gzip.compress(b"b\n", mtime=0),
    "raw-not-gzip-under-gzip": bytes([3, 5, 7]) + b"a\nbb\n",
}

# ---------------------------------------------------------------------------
# client IP: [mode, peer_idx, lines...]; line = [name_sel, value...]
# name_sel % 4: 0 forwarded, 1 x-real-ip, 2 x-forwarded-for, 3 x-other
# peer_idx % 6: none, 10.0.0.1:5555, 203.0.113.7:80, [::1]:0, [2001:db8::5]:443, [::ffff:10.1.1.1]:1


def hdrs(*pairs):
    return b"\n".join(bytes([sel]) + v for sel, v in pairs)


CLIENT_IP = {
    "plain-xff": bytes([0, 2]) + hdrs((2, b"123.0.0.1, 127.0.0.1")),
    "forwarded-quoted-v6": bytes([0, 1]) + hdrs((0, b'for="[2001:db8:cafe::17]:4711";proto=https, for=1.1.1.1')),
    "precedence": bytes([0, 2]) + hdrs((2, b"3.3.3.3"), (1, b"2.2.2.2"), (0, b"for=1.1.1.1")),
    "invalid-then-valid": bytes([0, 0]) + hdrs((0, b"invalid"), (1, b"bogus:99"), (2, b"182.0.0.9:80")),
    "escapes": bytes([0, 3]) + hdrs((0, b'by=x;For="a\\"b";host="h\\q"'), (1, b"[::1]")),
    "trusted-chain": bytes([1, 1]) + hdrs((2, b"6.6.6.6, 198.51.100.9, 10.0.0.2"), (2, b"10.9.9.9:1")),
    "trusted-forwarded": bytes([1, 4]) + hdrs((0, b"for=6.6.6.6, for=198.51.100.9;proto=https, for=10.1.1.1")),
    "trusted-garbage": bytes([1, 5]) + hdrs((2, b"6.6.6.6, garbage, 10.6.6.6")),
    "untrusted-peer": bytes([1, 2]) + hdrs((1, b"1.1.1.1")),
    "custom-cidr": bytes([2, 1]) + b"10.0.0.0/30\n" + hdrs((2, b"::ffff:10.0.0.1, 10.0.0.3")),
    "bad-cidr": bytes([3, 1]) + b"10.0.0.0/33\n" + hdrs((1, b"1.2.3.4:0")),
}


def keys(v, out):
    """Every object key in `v` (recursively)."""
    if isinstance(v, dict):
        for k, x in v.items():
            out.add(k)
            keys(x, out)
    elif isinstance(v, list):
        for x in v:
            keys(x, out)
    return out


def write_dict(name, tokens):
    """A libFuzzer dictionary: `"key":` entries plus JSON/header tokens."""
    path = os.path.join(os.path.dirname(ROOT), "dict", name + ".dict")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for t in sorted(tokens):
            esc = "".join(c if c.isalnum() or c in "._-:/[]{}, =;@*+" else "\\x%02x" % ord(c)
                          for c in t)
            f.write('"%s"\n' % esc)


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    json_tokens = {"true", "false", "null", "1e308", "-0", "\\u0000", "\\ud83d", "[]", "{}", '""'}
    v2_keys = keys([META, TX, SPAN, ERR, METRIC, LOG], set())
    v3_keys = keys([M3, X3, E3], set())
    write_dict("decode_v2", {'"%s":' % k for k in v2_keys} | json_tokens)
    write_dict("decode_v3", {'"%s":' % k for k in v3_keys} | json_tokens)
    write_dict("client_ip", {"for=", "by=", "host=", "proto=", ";", ",", '"', "\\", "[", "]:",
                             "::ffff:", "10.0.0.1", "2001:db8::1", "127.0.0.1:80", "/8", "/128"})
    for target, seeds in (("decode_v2", V2), ("decode_v3", V3), ("ndjson_framer", FRAMER),
                          ("client_ip", CLIENT_IP)):
        for name, data in seeds.items():
            write(target, name, data)
    n = sum(len(s) for s in (V2, V3, FRAMER, CLIENT_IP))
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(ROOT) for f in fs)
    print(f"{n} seeds, {size} bytes in {ROOT}")


if __name__ == "__main__":
    main()
