// Sends OTLP/HTTP (protobuf) traces, metrics and logs with the OpenTelemetry
// Node.js SDK, for tests/otlp_sdk.rs.
//
// Environment: ENDPOINT (http://host:port), TOKEN (secret token), SERVICE.
// Prints one line per signal, "<signal> SUCCESS" or "<signal> FAILURE [<HTTP
// status>]", and exits 0.
'use strict';

const { context, trace, SpanKind } = require('@opentelemetry/api');
const { SeverityNumber } = require('@opentelemetry/api-logs');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-proto');
const { OTLPLogExporter } = require('@opentelemetry/exporter-logs-otlp-proto');
const { defaultResource, resourceFromAttributes } = require('@opentelemetry/resources');
const {
  BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor,
} = require('@opentelemetry/sdk-trace-base');
const { MeterProvider, MetricReader } = require('@opentelemetry/sdk-metrics');
const {
  LoggerProvider, InMemoryLogRecordExporter, SimpleLogRecordProcessor,
} = require('@opentelemetry/sdk-logs');

const endpoint = process.env.ENDPOINT;
const headers = { Authorization: 'Bearer ' + process.env.TOKEN };
// The SDK's own attributes (telemetry.sdk.*) plus the service's, as the
// NodeSDK builds it.
const resource = defaultResource().merge(resourceFromAttributes({
  'service.name': process.env.SERVICE,
  'deployment.environment': 'test',
}));
const options = (path) => ({ url: endpoint + path, headers, timeoutMillis: 10000 });

// Exports once, so the result is known; resolves to SUCCESS, or FAILURE
// with the HTTP status when the server answered.
const exportOnce = (exporter, items) => new Promise((resolve) => {
  exporter.export(items, (r) => resolve(
    r.code === 0 ? 'SUCCESS' : `FAILURE ${(r.error && r.error.code) || ''}`.trim(),
  ));
});

// A reader that collects on demand (the SDK's readers are abstract).
class OnDemandReader extends MetricReader {
  async onForceFlush() {}
  async onShutdown() {}
}

async function main() {
  // traces: a server transaction with a database span and an exception event
  const spans = new InMemorySpanExporter();
  const tp = new BasicTracerProvider({ resource, spanProcessors: [new SimpleSpanProcessor(spans)] });
  const tracer = tp.getTracer('otlp-node-test');
  const root = tracer.startSpan('GET /checkout', {
    kind: SpanKind.SERVER,
    attributes: { 'http.request.method': 'GET', 'http.response.status_code': 500 },
  });
  const db = tracer.startSpan('SELECT orders', {
    kind: SpanKind.CLIENT,
    attributes: { 'db.system': 'postgresql', 'db.statement': 'SELECT * FROM orders' },
  }, trace.setSpan(context.active(), root));
  db.end();
  root.recordException(new TypeError('checkout failed'));
  root.end();
  const traceExporter = new OTLPTraceExporter(options('/v1/traces'));
  console.log('traces', await exportOnce(traceExporter, spans.getFinishedSpans()));

  // metrics: one collection of a counter and a histogram
  const reader = new OnDemandReader();
  const mp = new MeterProvider({ resource, readers: [reader] });
  const meter = mp.getMeter('otlp-node-test');
  meter.createCounter('orders.placed').add(3, { region: 'eu' });
  meter.createHistogram('checkout.duration', { unit: 'ms' }).record(42, { region: 'eu' });
  const { resourceMetrics } = await reader.collect();
  const metricExporter = new OTLPMetricExporter(options('/v1/metrics'));
  console.log('metrics', await exportOnce(metricExporter, resourceMetrics));

  // logs: one record through the logs API
  const records = new InMemoryLogRecordExporter();
  const lp = new LoggerProvider({ resource, processors: [new SimpleLogRecordProcessor(records)] });
  lp.getLogger('otlp-node-test').emit({
    severityNumber: SeverityNumber.WARN,
    severityText: 'WARN',
    body: 'stock is low',
  });
  const logExporter = new OTLPLogExporter(options('/v1/logs'));
  console.log('logs', await exportOnce(logExporter, records.getFinishedLogRecords()));

  await Promise.all([traceExporter.shutdown(), metricExporter.shutdown(), logExporter.shutdown()]);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
