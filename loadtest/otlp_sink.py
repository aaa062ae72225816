"""An OTLP/HTTP trace receiver that keeps nothing: it answers every export and counts the
spans (what a collector's cost would be is not ours to measure). For benchmarks of the cost of
tracing (docs/benchmarks.md#tracing): run it, point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at it.

    python -m loadtest.otlp_sink --port 4318   # prints the span count on SIGINT/SIGTERM
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

COUNTS = {"requests": 0, "spans": 0}
OK = ExportTraceServiceResponse().SerializeToString()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        req = ExportTraceServiceRequest.FromString(body)
        COUNTS["requests"] += 1
        COUNTS["spans"] += sum(len(ss.spans) for rs in req.resource_spans
                               for ss in rs.scope_spans)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(OK)))
        self.end_headers()
        self.wfile.write(OK)

    def log_message(self, *args: Any) -> None:
        pass


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, default=4318)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Sink)
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"OTLP_SINK_READY port={server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    print(f"otlp_sink: {COUNTS['requests']} requests, {COUNTS['spans']} spans", file=sys.stderr)


if __name__ == "__main__":
    main()
