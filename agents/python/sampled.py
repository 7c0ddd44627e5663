"""Transactions at a sample rate, from the published Python agent (elastic-apm).

Configured from the environment by tests/agents_aggregation.rs: APM_URL,
SERVICE_NAME, COUNT (transactions to end) and SAMPLE_RATE. Ends COUNT
transactions named `GET /sampled`, closes the client (which flushes), and
prints `AGENT-SENT <count>`. Every WARNING or worse the agent logs is printed
as `AGENT-PROBLEM ...` and makes the exit status 1.
"""

import logging
import os
import sys

import elasticapm

problems = []


class Collect(logging.Handler):
    def emit(self, record):
        msg = "AGENT-PROBLEM %s %s: %s" % (record.levelname, record.name, record.getMessage())
        problems.append(msg)
        print(msg, file=sys.stderr, flush=True)


logging.basicConfig(level=logging.INFO, stream=sys.stderr)
logging.getLogger("elasticapm").addHandler(Collect(level=logging.WARNING))


def main():
    count = int(os.environ.get("COUNT", "1000"))
    client = elasticapm.Client(
        {
            "SERVICE_NAME": os.environ["SERVICE_NAME"],
            "SERVER_URL": os.environ["APM_URL"],
            "ENVIRONMENT": "test",
            "CLOUD_PROVIDER": "none",
            "CENTRAL_CONFIG": False,
            "METRICS_INTERVAL": "0s",
            "TRANSACTION_SAMPLE_RATE": os.environ.get("SAMPLE_RATE", "0.1"),
        }
    )
    for _ in range(count):
        client.begin_transaction("request")
        client.end_transaction("GET /sampled", "HTTP 2xx")
    client.close()
    print("AGENT-SENT %d" % count, flush=True)
    if problems:
        sys.exit(1)
    print("AGENT-OK", flush=True)


if __name__ == "__main__":
    main()
