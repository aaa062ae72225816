"""Serve a pod's Prometheus multi-process directory: the agent workers' metrics sidecar.

A worker has no HTTP port; with ``PROMETHEUS_MULTIPROC_DIR`` set it writes its samples
(turns, latencies, Redis errors) into that directory, and only a process that reads the same
directory can export them (ops/grafana/README.md). The chart runs this file, from a ConfigMap,
next to each worker on a shared emptyDir: ``/metrics`` is the aggregate, ``/healthz`` is ``ok``.
"""

from __future__ import annotations

import argparse
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector


def registry(path: str) -> CollectorRegistry:
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=path)
    return reg


class Handler(BaseHTTPRequestHandler):
    reg: CollectorRegistry

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/metrics":
            self.reply(200, generate_latest(self.reg), CONTENT_TYPE_LATEST)
        elif self.path == "/healthz":
            self.reply(200, b"ok\n", "text/plain")
        else:
            self.reply(404, b"not found\n", "text/plain")

    def reply(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=9100)
    a = p.parse_args()
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not os.path.isdir(path):
        raise SystemExit(f"PROMETHEUS_MULTIPROC_DIR={path!r} is not a directory")
    Handler.reg = registry(path)
    server = ThreadingHTTPServer((a.host, a.port), Handler)
    print(f"AGENTIA_METRICS_READY port={server.server_address[1]} dir={path}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
