//! The per-test recipes of the upstream system tests: which payload goes to which
//! endpoint with which headers and configuration, and, per approval file,
//! which documents the upstream query selects and which fields are dynamic.
//! Also the approvals that are deliberately not reproduced, with reasons.

use crate::emulate::Fields;
use serde_json::Value;
use std::path::Path;

/// One HTTP request of a recipe.
pub struct Send {
    pub path: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    /// The HTTP status a successful request answers with.
    pub status: u16,
    /// Sent as an OTLP/gRPC export of this signal instead of an HTTP POST
    /// (`headers` become the call's metadata, `status` is not used).
    pub grpc: Option<crate::otlp_recipes::Signal>,
}

/// Selects documents the way the recipe's ES query does.
pub type Query = Box<dyn Fn(&str, &Fields) -> bool>;

/// One approval file checked against the documents of a recipe.
pub struct Check {
    /// Approval name: path under `approvals/` without `.approved.json`.
    pub approval: String,
    pub query: Query,
    /// Per-test dynamic fields (on top of [`crate::compare::DEFAULT_DYNAMIC`]).
    pub dynamic: Vec<&'static str>,
}

/// A server configuration, the requests sent to it, and the approvals that
/// the written documents are compared with.
pub struct Recipe {
    pub config: Vec<&'static str>,
    pub sends: Vec<Send>,
    pub checks: Vec<Check>,
    /// Printed with a failure: why the recipe cannot pass yet.
    pub note: Option<&'static str>,
    /// A source map stored in `.apm-source-map` before the server starts.
    pub sourcemap: Option<SourceMap>,
}

/// A source map as Kibana stores it (see docs/sourcemaps.md).
pub struct SourceMap {
    pub service_name: &'static str,
    pub service_version: &'static str,
    /// Bundle path as Kibana stores it (absolute URLs normalised).
    pub bundle_filepath: &'static str,
    /// The map (`sourcemap/bundle.js.map`).
    pub content: Vec<u8>,
}

impl SourceMap {
    /// `(document id, document)` of the `.apm-source-map` entry: `content`
    /// is base64 of the zlib-compressed map, `content_sha256` the hex
    /// SHA-256 of the compressed bytes.
    pub fn document(&self) -> Result<(String, Value), String> {
        use base64::Engine;
        use sha2::Digest;
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&self.content)
            .and_then(|_| z.finish())
            .map_err(|e| format!("zlib: {e}"))
            .map(|compressed| {
                let id = format!(
                    "{}-{}-{}",
                    self.service_name, self.service_version, self.bundle_filepath
                );
                let doc = serde_json::json!({
                    "service": {"name": self.service_name, "version": self.service_version},
                    "file": {"path": self.bundle_filepath},
                    "content": base64::engine::general_purpose::STANDARD.encode(&compressed),
                    "content_sha256": hex::encode(sha2::Sha256::digest(&compressed)),
                });
                (id, doc)
            })
    }
}

/// The Go test client's user agent; the approvals' `user_agent.*` of RUM
/// documents come from it.
const GO_UA: &str = "Go-http-client/1.1";

fn send(path: &'static str, body: Vec<u8>) -> Send {
    Send {
        grpc: None,
        path,
        body,
        headers: vec![
            ("content-type", "application/x-ndjson".into()),
            ("user-agent", GO_UA.into()),
        ],
        status: 202,
    }
}

fn read(corpus: &Path, rel: &str) -> Result<Vec<u8>, String> {
    std::fs::read(corpus.join(rel)).map_err(|e| format!("{rel}: {e}"))
}

/// Index-pattern match with `*` wildcards, comma-separated alternatives.
pub fn index_matches(patterns: &str, index: &str) -> bool {
    patterns
        .split(',')
        .any(|p| glob(p.as_bytes(), index.as_bytes()))
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && glob(rest, &s[1..]),
    }
}

fn first_str<'a>(d: &'a Fields, k: &str) -> Option<&'a str> {
    d.get(k).and_then(|v| v.first()).and_then(Value::as_str)
}

/// `match_phrase`: the phrase's lower-cased word tokens occur consecutively
/// in the field's tokens (standard analyzer, approximately).
fn match_phrase(text: &str, phrase: &str) -> bool {
    let toks = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .map(str::to_lowercase)
            .collect()
    };
    let (t, p) = (toks(text), toks(phrase));
    !p.is_empty() && t.windows(p.len()).any(|w| w == p.as_slice())
}

const GEO_DYNAMIC: &[&str] = &[
    "client.geo.city_name",
    "client.geo.location",
    "client.geo.region_iso_code",
    "client.geo.region_name",
];

/// All reproducible recipes of §18.4.
pub fn recipes(corpus: &Path) -> Result<Vec<Recipe>, String> {
    let mut out = Vec::new();

    // TestIntake/*: one server per payload, backend endpoint.
    for (name, file) in [
        ("Errors", "errors.ndjson"),
        ("ErrorsTxID", "errors_transaction_id.ndjson"),
        ("Events", "events.ndjson"),
        ("Metricsets", "metricsets.ndjson"),
        ("Spans", "spans.ndjson"),
        ("Transactions", "transactions.ndjson"),
        ("TransactionsHugeTraces", "transactions-huge_traces.ndjson"),
        ("UnknownSpanType", "unknown-span-type.ndjson"),
        ("MinimalEvents", "minimal.ndjson"),
    ] {
        let mut dynamic = GEO_DYNAMIC.to_vec();
        if name == "MinimalEvents" {
            dynamic.extend(["@timestamp", "timestamp.us"]);
        }
        out.push(Recipe {
            config: vec![],
            sends: vec![send(
                "/intake/v2/events?verbose=true",
                read(corpus, &format!("intake-v2/{file}"))?,
            )],
            checks: vec![Check {
                approval: format!("TestIntake/{name}"),
                query: Box::new(|idx, d| {
                    index_matches("traces-apm*,metrics-apm*,logs-apm*", idx)
                        && !d.contains_key("metricset.interval")
                }),
                dynamic,
            }],
            note: None,
            sourcemap: None,
        });
    }

    // TestIntakeLog/<case>: logs.ndjson once, one query per case.
    let log_cases: [(&str, &str, &str); 7] = [
        (
            "without_timestamp",
            "1234_service_12a3",
            "test log message without timestamp",
        ),
        (
            "with_timestamp_as_str",
            "1234_service_12a3",
            "test log message with string timestamp",
        ),
        (
            "with_timestamp",
            "1234_service_12a3",
            "test log message with timestamp",
        ),
        (
            "with_faas",
            "1234_service_12a3",
            "test log message with faas",
        ),
        (
            "with_flat_ecs_fields",
            "testsvc",
            "test log message with ecs fields",
        ),
        (
            "with_nested_ecs_fields",
            "testsvc",
            "test log message with nested ecs fields",
        ),
        (
            "with_nested_ecs_fields_overrides_flat_fields",
            "testsvc",
            "test log message with override of flat ecs fields by nested ecs fields",
        ),
    ];
    out.push(Recipe {
        config: vec![],
        sends: vec![send(
            "/intake/v2/events?verbose=true",
            read(corpus, "intake-v2/logs.ndjson")?,
        )],
        checks: log_cases
            .iter()
            .map(|&(case, svc, msg)| Check {
                approval: format!("TestIntakeLog/{case}"),
                query: Box::new(move |idx, d| {
                    index_matches(&format!("logs-apm.app.{svc}-*"), idx)
                        && first_str(d, "message").is_some_and(|m| match_phrase(m, msg))
                }),
                dynamic: if case == "without_timestamp" {
                    vec!["@timestamp"]
                } else {
                    vec![]
                },
            })
            .collect(),
        note: None,
        sourcemap: None,
    });

    // TestErrorIngest
    out.push(Recipe {
        config: vec![],
        sends: vec![send(
            "/intake/v2/events?verbose=true",
            read(corpus, "intake-v2/errors.ndjson")?,
        )],
        checks: vec![Check {
            approval: "TestErrorIngest".into(),
            query: Box::new(|idx, d| {
                index_matches("logs-apm.error*", idx) && d.contains_key("transaction.name")
            }),
            dynamic: vec![],
        }],
        note: None,
        sourcemap: None,
    });

    // TestApprovedMetrics
    out.push(Recipe {
        config: vec![],
        sends: vec![send(
            "/intake/v2/events?verbose=true",
            read(corpus, "intake-v2/metricsets.ndjson")?,
        )],
        checks: vec![Check {
            approval: "TestApprovedMetrics".into(),
            query: Box::new(|idx, d| {
                index_matches("metrics-apm*", idx)
                    && first_str(d, "processor.event") == Some("metric")
                    && first_str(d, "metricset.name") != Some("transaction")
                    && !d.contains_key("metricset.interval")
            }),
            dynamic: vec![],
        }],
        note: None,
        sourcemap: None,
    });

    // TestRUMRoutingIntegration: RUM v3.
    out.push(Recipe {
        config: vec!["apm-server.rum.enabled=true"],
        sends: vec![send(
            "/intake/v3/rum/events",
            read(corpus, "intake-v3/rum_events.ndjson")?,
        )],
        checks: vec![Check {
            approval: "TestRUMRoutingIntegration".into(),
            query: Box::new(|idx, _| index_matches("traces-apm.rum*", idx)),
            dynamic: vec![
                "@timestamp",
                "timestamp.us",
                "source.port",
                "source.ip",
                "client.ip",
            ],
        }],
        note: None,
        sourcemap: None,
    });

    // TestRUMXForwardedFor: inline payload, X-Forwarded-For.
    let xff = concat!(
        r#"{"metadata":{"service":{"name":"rum-js-test","agent":{"name":"rum-js","version":"5.5.0"}}}}"#,
        "\n",
        r#"{"transaction":{"trace_id":"611f4fa950f04631aaaaaaaaaaaaaaaa","id":"611f4fa950f04631","type":"page-load","duration":643,"span_count":{"started":0}}}"#,
        "\n",
        r#"{"metricset":{"samples":{"transaction.breakdown.count":{"value":12},"transaction.duration.sum.us":{"value":12},"transaction.duration.count":{"value":2},"transaction.self_time.sum.us":{"value":10},"transaction.self_time.count":{"value":2},"span.self_time.count":{"value":1},"span.self_time.sum.us":{"value":633.288}},"transaction":{"type":"request","name":"GET /"},"span":{"type":"external","subtype":"http"},"timestamp": 1496170422281000}}"#,
        "\n"
    );
    let mut s = send("/intake/v2/rum/events", xff.as_bytes().to_vec());
    s.headers.push(("x-forwarded-for", "220.244.41.16".into()));
    out.push(Recipe {
        config: vec!["apm-server.rum.enabled=true"],
        sends: vec![s],
        checks: vec![Check {
            approval: "TestRUMXForwardedFor".into(),
            query: Box::new(|idx, d| {
                index_matches("traces-apm*,metrics-apm*", idx)
                    && matches!(
                        first_str(d, "processor.event"),
                        Some("transaction" | "metric")
                    )
                    && !d.contains_key("metricset.interval")
            }),
            dynamic: [
                &["@timestamp", "timestamp.us", "source.port"][..],
                GEO_DYNAMIC,
            ]
            .concat(),
        }],
        note: None,
        sourcemap: None,
    });

    // Server-side aggregation (aggregation_test.go). The Go agent's
    // transactions and spans for the upstream tests, timestamped
    // 2006-01-02T15:04:05.999999Z, with the tracer environment of the
    // approvals (service `systemtest`, host `beowulf`). Metrics are written
    // when the server shuts down after the sends.
    let go_tx = |name: &str, ty: &str, n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"transaction\":{{\"trace_id\":\"{i:032x}\",\"id\":\"{i:016x}\",\"name\":\"{name}\",\"type\":\"{ty}\",\"timestamp\":1136214245999999,\"duration\":1000,\"outcome\":\"success\",\"sampled\":true,\"span_count\":{{\"started\":0,\"dropped\":0}}}}}}\n"
                )
            })
            .collect()
    };
    let go = |labels: &str, events: String| -> Vec<u8> {
        format!(
            "{{\"metadata\":{{\"service\":{{\"name\":\"systemtest\",\"agent\":{{\"name\":\"go\",\"version\":\"0.0.0\"}},\"language\":{{\"name\":\"go\",\"version\":\"2.0\"}},\"runtime\":{{\"name\":\"gc\",\"version\":\"2.0\"}}}},\"process\":{{\"pid\":1,\"title\":\"systemtest.test\"}},\"system\":{{\"architecture\":\"i386\",\"detected_hostname\":\"beowulf\",\"platform\":\"minix\"}}{labels}}}}}\n{events}"
        )
        .into_bytes()
    };
    let metricset = |name: &'static str| -> Query {
        Box::new(move |idx, d| {
            index_matches("metrics-apm*", idx) && first_str(d, "metricset.name") == Some(name)
        })
    };
    // TestTransactionAggregation: Go transactions with an HTTP request
    // context, plus the FaaS payload the upstream test sends literally (read
    // from the upstream test source in the corpus).
    let test_src = String::from_utf8(read(
        corpus,
        "upstream/apm-server-systemtest/aggregation_test.go",
    )?)
    .map_err(|e| format!("aggregation_test.go: {e}"))?;
    let faas = test_src
        .split_once("faasPayload := `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(payload, _)| payload.to_owned())
        .ok_or("aggregation_test.go: no faasPayload literal")?;
    let with_request = |name: &str, n: usize| {
        go_tx(name, "backend", n).replace(
            "\"sampled\":true,",
            "\"sampled\":true,\"context\":{\"request\":{\"method\":\"GET\",\"url\":{\"full\":\"/\",\"pathname\":\"/\"},\"headers\":{}}},",
        )
    };
    out.push(Recipe {
        config: vec![],
        sends: vec![
            send(
                "/intake/v2/events",
                go(
                    "",
                    format!("{}{}", with_request("abc", 5), with_request("def", 10)),
                ),
            ),
            send("/intake/v2/events", faas.into_bytes()),
        ],
        checks: vec![Check {
            approval: "TestTransactionAggregation".into(),
            query: Box::new(|idx, d| {
                index_matches("metrics-apm.transaction*", idx)
                    && d.contains_key("transaction.duration.histogram")
            }),
            dynamic: vec![],
        }],
        note: None,
        sourcemap: None,
    });
    out.push(Recipe {
        config: vec![],
        sends: vec![send("/intake/v2/events", go("", go_tx("name", "type", 1)))],
        checks: vec![Check {
            approval: "TestTransactionAggregationShutdown".into(),
            query: Box::new(|idx, d| {
                index_matches("metrics-apm.transaction*", idx)
                    && d.contains_key("transaction.duration.histogram")
            }),
            dynamic: vec![],
        }],
        note: None,
        sourcemap: None,
    });
    out.push(Recipe {
        config: vec![],
        sends: vec![send(
            "/intake/v2/events",
            go(
                "",
                ["type1", "type2"]
                    .iter()
                    .flat_map(|ty| ["name1", "name2"].map(|n| go_tx(n, ty, 1)))
                    .collect(),
            ),
        )],
        checks: vec![Check {
            approval: "TestServiceTransactionMetricsAggregation".into(),
            query: metricset("service_transaction"),
            dynamic: vec![],
        }],
        note: None,
        sourcemap: None,
    });
    out.push(Recipe {
        config: vec![],
        sends: vec![send("/intake/v2/events", go("", go_tx("name", "type", 2)))],
        checks: vec![Check {
            approval: "TestServiceSummaryMetricsAggregation".into(),
            query: metricset("service_summary"),
            dynamic: vec![],
        }],
        note: None,
        sourcemap: None,
    });
    // TestServiceSummaryMetricsAggregationOverflow: four tracers that differ
    // only in their environment, each flushing one transaction in its own
    // request, with room for two services: the two seen last keep their
    // groups and the first two are counted in `_other`.
    out.push(Recipe {
        config: vec!["apm-server.aggregation.max_services=2"],
        sends: ["dev", "staging", "prod", "test"]
            .iter()
            .map(|env| {
                let body = String::from_utf8_lossy(&go("", go_tx("name", "type", 1))).replace(
                    "\"name\":\"systemtest\",",
                    &format!("\"name\":\"systemtest\",\"environment\":\"{env}\","),
                );
                send("/intake/v2/events", body.into_bytes())
            })
            .collect(),
        checks: vec![Check {
            approval: "TestServiceSummaryMetricsAggregationOverflow".into(),
            query: metricset("service_summary"),
            // Ignored upstream too: the `_other` documents carry the window start.
            dynamic: vec!["@timestamp"],
        }],
        note: None,
        sourcemap: None,
    });
    // TestTransactionDroppedSpansStats*: a Go transaction that started no
    // spans and dropped 54 exit spans, which the agent reports as
    // dropped_spans_stats per destination (4 to elasticsearch, 50 to redis).
    // The transaction document does not carry them; the service_destination
    // metrics count them.
    let huge = "{\"transaction\":{\"trace_id\":\"000000000000000000000000000000bb\",\"id\":\"00000000000000bb\",\"name\":\"huge-traces\",\"type\":\"type\",\"timestamp\":1136214245999999,\"duration\":30,\"outcome\":\"success\",\"sampled\":true,\"span_count\":{\"started\":0,\"dropped\":54},\"dropped_spans_stats\":[{\"destination_service_resource\":\"elasticsearch\",\"service_target_type\":\"elasticsearch\",\"outcome\":\"success\",\"duration\":{\"count\":4,\"sum\":{\"us\":3600}}},{\"destination_service_resource\":\"redis\",\"service_target_type\":\"redis\",\"outcome\":\"success\",\"duration\":{\"count\":50,\"sum\":{\"us\":5000}}}]}}\n";
    out.push(Recipe {
        config: vec![],
        sends: vec![send("/intake/v2/events", go("", huge.to_owned()))],
        checks: vec![
            Check {
                approval: "TestTransactionDroppedSpansStatsMetrics".into(),
                query: metricset("service_destination"),
                // The approval was made from live agent traffic, so the
                // time and ids are ignored upstream.
                dynamic: vec!["@timestamp"],
            },
            Check {
                approval: "TestTransactionDroppedSpansStatsTransaction".into(),
                query: Box::new(|idx, d| {
                    index_matches("traces-apm*", idx)
                        && first_str(d, "processor.event") == Some("transaction")
                }),
                dynamic: vec![
                    "@timestamp",
                    "timestamp.us",
                    "trace.id",
                    "transaction.id",
                    "span.id",
                ],
            },
        ],
        note: None,
        sourcemap: None,
    });
    // ELASTIC_APM_GLOBAL_LABELS become metadata labels; the transaction's
    // own label is not a dimension.
    let spans: String = (0..5)
        .map(|i| {
            format!(
                "{{\"span\":{{\"trace_id\":\"{:032x}\",\"id\":\"{i:016x}\",\"parent_id\":\"00000000000000aa\",\"transaction_id\":\"00000000000000aa\",\"name\":\"name\",\"type\":\"type\",\"timestamp\":1136214245999999,\"duration\":1000,\"outcome\":\"success\",\"context\":{{\"destination\":{{\"service\":{{\"name\":\"name\",\"resource\":\"resource\",\"type\":\"\"}}}}}}}}}}\n",
                0xaa
            )
        })
        .collect();
    let tx = "{\"transaction\":{\"trace_id\":\"000000000000000000000000000000aa\",\"id\":\"00000000000000aa\",\"name\":\"name\",\"type\":\"type\",\"duration\":5000,\"outcome\":\"success\",\"sampled\":true,\"span_count\":{\"started\":5},\"context\":{\"tags\":{\"mylabel\":\"myvalue\"}}}}\n";
    out.push(Recipe {
        config: vec![],
        sends: vec![send(
            "/intake/v2/events",
            go(
                ",\"labels\":{\"department_name\":\"apm\",\"organization\":\"observability\",\"company\":\"elastic\"}",
                format!("{spans}{tx}"),
            ),
        )],
        checks: vec![Check {
            approval: "TestServiceDestinationAggregation".into(),
            query: Box::new(|idx, d| {
                index_matches("metrics-apm.service_destination*", idx)
                    && d.contains_key("span.destination.service.response_time.count")
            }),
            dynamic: vec![],
        }],
        note: None,
        sourcemap: None,
    });

    // TestDropUnsampled: (a) a sampled Go-agent transaction, (b) an
    // unsampled backend transaction (dropped), (c) an unsampled RUM
    // transaction (kept). (a) is what the Go agent sends for the upstream
    // test's `StartTransactionOptions("sampled", "TestDropUnsampled",
    // {Start: time.Unix(0, 0)})` with a one-second duration: note the
    // explicit `"timestamp":0`. Its metadata (service `systemtest`, host
    // `beowulf`, …) is taken from the approval; the agent reports it from
    // the test's fixed tracer environment.
    let go = concat!(
        r#"{"metadata":{"service":{"name":"systemtest","agent":{"name":"go","version":"0.0.0"},"language":{"name":"go","version":"2.0"},"runtime":{"name":"gc","version":"2.0"}},"process":{"pid":1,"title":"systemtest.test"},"system":{"architecture":"i386","detected_hostname":"beowulf","platform":"minix"}}}"#,
        "\n",
        r#"{"transaction":{"trace_id":"0123456789abcdef0123456789abcdef","id":"0123456789abcdef","name":"sampled","type":"TestDropUnsampled","timestamp":0,"duration":1000,"outcome":"success","sampled":true,"span_count":{"started":0,"dropped":0}}}"#,
        "\n"
    );
    let unsampled = |agent: &str, trace: &str, id: &str| {
        format!(
            "{{\"metadata\":{{\"service\":{{\"name\":\"allowed\",\"version\":\"1.0.0\",\"agent\":{{\"name\":\"{agent}\",\"version\":\"0.0.0\"}}}}}}}}\n\
             {{\"transaction\":{{\"trace_id\":\"{trace}\",\"id\":\"{id}\",\"type\":\"TestDropUnsampled\",\"duration\":0,\"sampled\":false,\"span_count\":{{\"started\":1}},\"context\":{{\"service\":{{\"name\":\"allowed\"}}}}}}}}\n"
        )
    };
    out.push(Recipe {
        config: vec!["apm-server.rum.enabled=true"],
        sends: vec![
            send("/intake/v2/events?verbose=true", go.as_bytes().to_vec()),
            send(
                "/intake/v2/events?verbose=true",
                unsampled("backend", "xyz", "yz").into_bytes(),
            ),
            send(
                "/intake/v2/rum/events",
                unsampled("rum-js", "x", "y").into_bytes(),
            ),
        ],
        checks: vec![Check {
            approval: "TestDropUnsampled".into(),
            query: Box::new(|idx, d| {
                index_matches("traces-apm*", idx)
                    && first_str(d, "transaction.type") == Some("TestDropUnsampled")
            }),
            dynamic: vec![
                "@timestamp",
                "timestamp.us",
                "source.port",
                "trace.id",
                "transaction.id",
                "span.id",
            ],
        }],
        note: None,
        sourcemap: None,
    });

    // Source-map recipes: the map is stored in the double's
    // `.apm-source-map` the way Kibana stores an upload (absolute bundle
    // URLs normalised, relative paths verbatim), then the RUM payload is
    // posted.
    const SM_NOTE: &str = "needs source mapping of RUM error frames (docs/sourcemaps.md)";
    let map = read(corpus, "sourcemap/bundle.js.map")?;
    for (case, path) in [
        (
            "absolute_bundle_filepath",
            // uploaded as http://localhost:8000/test/e2e/../e2e/general-usecase/bundle.js.map
            "http://localhost:8000/test/e2e/general-usecase/bundle.js.map",
        ),
        (
            "relative_bundle_filepath",
            "/test/e2e/general-usecase/bundle.js.map",
        ),
    ] {
        out.push(Recipe {
            config: vec!["apm-server.rum.enabled=true"],
            sends: vec![send(
                "/intake/v2/rum/events",
                read(corpus, "intake-v2/errors_rum.ndjson")?,
            )],
            checks: vec![Check {
                approval: format!("TestRUMErrorSourcemapping/{case}/standalone"),
                query: Box::new(|idx, _| index_matches("logs-apm.error-*", idx)),
                dynamic: vec![
                    "@timestamp",
                    "timestamp.us",
                    "client.ip",
                    "source.ip",
                    "source.port",
                ],
            }],
            note: Some(SM_NOTE),
            sourcemap: Some(SourceMap {
                service_name: "apm-agent-js",
                service_version: "1.0.1",
                bundle_filepath: path,
                content: map.clone(),
            }),
        });
    }
    // Span source mapping only changes `span.stacktrace`, which is not
    // indexed, so these approvals cannot tell mapped from unmapped frames.
    for (approval, config, version) in [
        (
            "TestRUMSpanSourcemapping/minimal_config",
            vec!["apm-server.rum.enabled=true"],
            "1.0.0",
        ),
        (
            "TestRUMSpanSourcemapping/max_source_map_size_specified",
            vec![
                "apm-server.rum.enabled=true",
                "apm-server.rum.source_mapping.max_sourcemap_size=10MiB",
            ],
            "1.0.0",
        ),
        // A map for another version: no map matches.
        (
            "TestNoMatchingSourcemap",
            vec!["apm-server.rum.enabled=true"],
            "2.0",
        ),
    ] {
        out.push(Recipe {
            config,
            sends: vec![send(
                "/intake/v2/rum/events",
                read(corpus, "intake-v2/transactions_spans_rum_2.ndjson")?,
            )],
            checks: vec![Check {
                approval: approval.into(),
                query: Box::new(|idx, d| {
                    index_matches("traces-apm*", idx)
                        && first_str(d, "processor.event") == Some("span")
                }),
                dynamic: vec!["@timestamp", "timestamp.us", "source.port"],
            }],
            note: None,
            sourcemap: Some(SourceMap {
                service_name: "apm-agent-js",
                service_version: version,
                bundle_filepath: "http://localhost:8000/test/e2e/general-usecase/bundle.js.map",
                content: map.clone(),
            }),
        });
    }
    crate::otlp_recipes::recipes(&mut out);
    Ok(out)
}

/// Approvals the suite does not reproduce, with the reason (the corpus'
/// SOURCES.md lists where each approval comes from).
pub fn skipped(approval: &str) -> Option<&'static str> {
    const ORPHANED: &str = "orphaned upstream: no current test writes or reads it; \
                            pre-8.0 document shape";
    if approval.ends_with("/data_streams_disabled")
        || approval == "TestSourcemapUploadInvalidElasticsearchConfig"
    {
        return Some(ORPHANED);
    }
    match approval {
        "TestAgentConfig" => Some("agent configuration documents, not intake"),
        "TestCompressedSpans" => {
            Some("produced by live Go-agent traffic; no payload in the corpus")
        }
        _ => None,
    }
}
