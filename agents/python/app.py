"""A small program instrumented with the published Python agent (elastic-apm).

Configured from the environment by tests/agents.rs:
  APM_URL, SERVICE_NAME, and SECRET_TOKEN or API_KEY (optional).
Produces two transactions with spans, a captured error, labels and a custom
metric, then closes the client (which flushes). Every WARNING or worse the
agent logs is printed as `AGENT-PROBLEM ...` and makes the exit status 1.
"""

import logging
import os
import sys
import time

import urllib3

import elasticapm
from elasticapm.metrics.base_metrics import MetricSet

problems = []


def problem(msg):
    msg = "AGENT-PROBLEM " + msg
    problems.append(msg)
    print(msg, file=sys.stderr, flush=True)


# The agent logs failed config fetches only at DEBUG level, so every answer it
# gets is checked here, where its transport (a urllib3 PoolManager) sends.
_urlopen = urllib3.PoolManager.urlopen


def urlopen(self, method, url, *args, **kwargs):
    response = _urlopen(self, method, url, *args, **kwargs)
    line = "%s %s -> %d" % (method, urllib3.util.parse_url(url).path, response.status)
    print("apm-rs: " + line, flush=True)
    if not (200 <= response.status < 300 or response.status == 304):
        problem("non-2xx answer: " + line)
    return response


urllib3.PoolManager.urlopen = urlopen


class Collect(logging.Handler):
    def emit(self, record):
        problem("%s %s: %s" % (record.levelname, record.name, record.getMessage()))


logging.basicConfig(level=logging.INFO, stream=sys.stderr)
agent_log = logging.getLogger("elasticapm")
agent_log.addHandler(Collect(level=logging.WARNING))


class AppMetrics(MetricSet):
    """A custom metric: a gauge the agent reads at each collection."""

    def before_collect(self):
        self.gauge("apmrs_test.queue_depth").val = 42


def main():
    config = {
        "SERVICE_NAME": os.environ["SERVICE_NAME"],
        "SERVER_URL": os.environ["APM_URL"],
        "ENVIRONMENT": "test",
        "CLOUD_PROVIDER": "none",
        "METRICS_INTERVAL": "1s",
        "CENTRAL_CONFIG": True,
        "LOG_LEVEL": "info",
    }
    if os.environ.get("SECRET_TOKEN"):
        config["SECRET_TOKEN"] = os.environ["SECRET_TOKEN"]
    if os.environ.get("API_KEY"):
        config["API_KEY"] = os.environ["API_KEY"]
    client = elasticapm.Client(config)
    client.metrics.register(AppMetrics)

    for i in range(2):
        client.begin_transaction("request")
        elasticapm.label(run="agents-test", iteration=i)
        with elasticapm.capture_span("SELECT FROM orders", span_type="db", span_subtype="postgresql", span_action="query"):
            time.sleep(0.01)
        with elasticapm.capture_span("compute", span_type="app"):
            time.sleep(0.005)
        if i == 1:
            try:
                raise ValueError("agents-test boom")
            except ValueError:
                client.capture_exception(handled=True)
        client.end_transaction("GET /hello", "HTTP 2xx")

    time.sleep(1.5)  # at least one metrics collection on its own interval
    client.close()  # stops the metrics timer (collects once more), flushes the transport
    if problems:
        print("AGENT-FAILED %d problem(s)" % len(problems), file=sys.stderr, flush=True)
        sys.exit(1)
    print("AGENT-OK", flush=True)


if __name__ == "__main__":
    main()
