"""The cauchy framework's service: a small HTTP server for deploys to check and audit.

    python cauchy_services.py --port 8339

GET /health   200 {"status": "ok", ...} when the vendored kernels (layer 2) work;
              503 when they do not, or when CAUCHY_FAIL_HEALTH=1 (or --fail-health) asks
              the service to fail its health check on purpose (for deploy tests)
GET /version  the image's build facts, passed in as environment variables by the
              Dockerfile: CAUCHY_VERSION, CAUCHY_TAG, CAUCHY_COMMIT, CAUCHY_BUILD_DATE
GET /cauchy?x=0.5&loc=0&scale=1   the density and distribution function at x

Standard library only, and compatible with Python 3.6: it runs on every upstream image.
"""

import argparse
import json
import os
import platform
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs, urlsplit

import cauchy_kernels

DEFAULT_PORT = 8339
_TRUE = {"1", "true", "yes", "on"}


class Service(ThreadingMixIn, HTTPServer):
    """The HTTP server; ``fail_health`` makes /health answer 503."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, fail_health=False):
        super().__init__(address, Handler)
        self.fail_health = fail_health


class Handler(BaseHTTPRequestHandler):
    server_version = "cauchy_services"

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/health":
            self._health()
        elif url.path == "/version":
            self._send(200, version_facts())
        elif url.path == "/cauchy":
            self._cauchy(parse_qs(url.query))
        else:
            self._send(404, {"error": "not found", "paths": ["/health", "/version", "/cauchy"]})

    def _health(self):
        if self.server.fail_health:
            self._send(503, {"status": "failing", "reason": "asked to fail (CAUCHY_FAIL_HEALTH)"})
        elif not cauchy_kernels.self_test():
            self._send(503, {"status": "failing", "reason": "cauchy_kernels self-test failed"})
        else:
            self._send(200, {"status": "ok", "kernels": cauchy_kernels.__version__})

    def _cauchy(self, query):
        try:
            x = float(query["x"][0])
            loc = float(query.get("loc", ["0"])[0])
            scale = float(query.get("scale", ["1"])[0])
            body = {
                "x": x,
                "pdf": cauchy_kernels.cauchy_pdf(x, loc, scale),
                "cdf": cauchy_kernels.cauchy_cdf(x, loc, scale),
            }
        except (KeyError, ValueError) as exc:
            usage = "expected ?x=NUMBER[&loc=NUMBER][&scale=NUMBER]"
            self._send(400, {"error": f"{usage}: {exc}"})
            return
        self._send(200, body)

    def _send(self, status, body):
        data = (json.dumps(body, sort_keys=True) + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def version_facts():
    """What this build is, from the environment the image was built with."""
    return {
        "name": "cauchy_services",
        "version": os.environ.get("CAUCHY_VERSION", "unknown"),
        "tag": os.environ.get("CAUCHY_TAG", "unknown"),
        "commit": os.environ.get("CAUCHY_COMMIT", "unknown"),
        "build_date": os.environ.get("CAUCHY_BUILD_DATE", "unknown"),
        "kernels": cauchy_kernels.__version__,
        "python": platform.python_version(),
    }


def parse_args(argv=None):
    """The service's options; CAUCHY_FAIL_HEALTH=1 in the environment sets --fail-health."""
    parser = argparse.ArgumentParser(description="The cauchy framework's HTTP service.")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    # Every interface: the lab runs the service with --network host for its clients.
    parser.add_argument("--host", default="0.0.0.0")  # noqa: S104
    parser.add_argument(
        "--fail-health",
        action="store_true",
        default=os.environ.get("CAUCHY_FAIL_HEALTH", "").lower() in _TRUE,
        help="answer /health with 503 (also CAUCHY_FAIL_HEALTH=1)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    server = Service((args.host, args.port), fail_health=args.fail_health)
    # As PID 1 in a container, SIGTERM is ignored unless handled: stop promptly instead.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    host, port = server.server_address[:2]
    sys.stderr.write(f"cauchy_services listening on {host}:{port}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
