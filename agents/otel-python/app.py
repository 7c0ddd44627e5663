"""Sends traces, metrics and logs with the OpenTelemetry Python SDK over
OTLP/HTTP (protobuf, the default) or OTLP/gRPC (`--grpc`), for
tests/otlp_sdk.rs.

Environment: ENDPOINT (http://host:port), TOKEN (secret token), SERVICE.
Prints one line per signal, "<signal> <SUCCESS|FAILURE>", and exits 0.
"""
import logging
import os
import sys

GRPC = "--grpc" in sys.argv[1:]

if GRPC:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.exporter import Compression
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
else:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

endpoint = os.environ["ENDPOINT"]
headers = {"authorization": "Bearer " + os.environ["TOKEN"]}


def exporter(cls, path):
    """The exporter `cls` for signal `path` (OTLP/HTTP: one URL per signal;
    OTLP/gRPC: the server address, plaintext, gzip-compressed)."""
    if GRPC:
        return cls(endpoint=endpoint, insecure=True, headers=headers, compression=Compression.Gzip, timeout=10)
    return cls(endpoint=endpoint + path, headers=headers)

resource = Resource.create({"service.name": os.environ["SERVICE"], "deployment.environment": "test"})

# traces: collected in memory, then exported once so the result is known
spans = InMemorySpanExporter()
tp = TracerProvider(resource=resource)
tp.add_span_processor(SimpleSpanProcessor(spans))
tracer = tp.get_tracer("otlp-sdk-test")
with tracer.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
    root.set_attribute("http.request.method", "GET")
    root.set_attribute("http.response.status_code", 500)
    with tracer.start_as_current_span("SELECT orders", kind=SpanKind.CLIENT) as db:
        db.set_attribute("db.system", "postgresql")
        db.set_attribute("db.statement", "SELECT * FROM orders")
    try:
        raise ValueError("checkout failed")
    except ValueError as e:
        root.record_exception(e)
result = exporter(OTLPSpanExporter, "/v1/traces").export(spans.get_finished_spans())
print("traces", result.name, flush=True)

# metrics: one collection of a counter and a histogram
reader = InMemoryMetricReader()
mp = MeterProvider(resource=resource, metric_readers=[reader])
meter = mp.get_meter("otlp-sdk-test")
meter.create_counter("orders.placed").add(3, {"region": "eu"})
meter.create_histogram("checkout.duration", unit="ms").record(42.0, {"region": "eu"})
data = reader.get_metrics_data()
result = exporter(OTLPMetricExporter, "/v1/metrics").export(data)
print("metrics", result.name, flush=True)

# logs: through the logging bridge
lp = LoggerProvider(resource=resource)
lp.add_log_record_processor(
    SimpleLogRecordProcessor(exporter(OTLPLogExporter, "/v1/logs"))
)
log = logging.getLogger("otlp-sdk-test")
log.propagate = False
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=lp))
log.setLevel(logging.INFO)
log.warning("stock is low")
lp.force_flush()
print("logs SENT", flush=True)
