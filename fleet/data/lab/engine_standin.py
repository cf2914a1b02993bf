# The light lab's engine stand-in: Docker's Engine API on /var/run/docker.sock, answering
# what fleet's read-only commands ask (info, version, containers and images, listed and
# inspected) from answers recorded from a real lab engine running a framework version
# (engine_standin.json). The recorded framework's name is replaced by the one a request
# filters on, so any project's audit finds its framework running. Nothing runs: it lets
# audit, ps and facts, and the docker CLI, be measured at a scale no engine fits.
#
#   python3 engine_standin.py RECORDED.json [SOCKET]
import json
import os
import re
import socketserver
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler

with open(sys.argv[1], encoding="utf-8") as recorded:
    RECORDED = json.load(recorded)
SOCKET = sys.argv[2] if len(sys.argv) > 2 else "/var/run/docker.sock"
NAME = RECORDED["framework"]


def renamed(value, name):
    """The recorded answer with the framework's name replaced by NAME, in every string."""
    text = json.dumps(value)
    if name and name != NAME:
        text = text.replace(json.dumps(NAME)[1:-1], json.dumps(name)[1:-1])
    return json.loads(text)


def asked_name(query):
    """The framework a list filters on (label io.fleet.framework=NAME), else the recorded."""
    for raw in query.get("filters", []):
        try:
            labels = json.loads(raw).get("label", [])
        except ValueError:
            continue
        for label in labels if isinstance(labels, list) else list(labels):
            if label.startswith("io.fleet.framework="):
                return label.split("=", 1)[1]
    return ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    last_name = ""

    def log_message(self, *args):
        return None

    def answer(self, code, value):
        body = json.dumps(value).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Api-Version", RECORDED["version"].get("ApiVersion", "1.41"))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path = re.sub(r"^/v[0-9.]+", "", url.path)
        query = urllib.parse.parse_qs(url.query)
        name = asked_name(query)
        if path == "/_ping":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.send_header("Api-Version", RECORDED["version"].get("ApiVersion", "1.41"))
            self.end_headers()
            self.wfile.write(b"OK")
            return
        if path in ("/info", "/version"):
            return self.answer(200, RECORDED[path[1:]])
        if path in ("/containers/json", "/images/json"):
            if name:
                Handler.last_name = name
            return self.answer(200, renamed(RECORDED[path.split("/")[1]], name))
        found = re.match(r"^/(containers|images)/(.+)/json$", path)
        if found:
            kind = "container" if found.group(1) == "containers" else "image"
            key = urllib.parse.unquote(found.group(2))
            for ident, value in RECORDED[kind].items():
                if ident == key or ident.startswith(key) or "/" + key == value.get("Name"):
                    # As listed last: the hosts of one run ask for one framework.
                    return self.answer(200, renamed(value, Handler.last_name))
            return self.answer(404, {"message": f"No such {kind}: {key}"})
        self.answer(404, {"message": f"the lab's engine stand-in does not answer {path}"})


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # Every light host asks at once: a short backlog would refuse the late ones.
    request_queue_size = 4096

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)  # BaseHTTPRequestHandler wants an address pair


if os.path.exists(SOCKET):
    os.unlink(SOCKET)
os.makedirs(os.path.dirname(SOCKET), exist_ok=True)
server = Server(SOCKET, Handler)
os.chmod(SOCKET, 0o660)
server.serve_forever()
