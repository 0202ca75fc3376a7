"""A stand-in for what moto does not do, in front of a moto server: a loopback HTTP proxy that
passes every request through, except

    python aws_standin.py UPSTREAM_URL refuse OPERATION PASSES MESSAGE
        ECS OPERATION is answered, after PASSES calls went through, with the error the real API
        gives (JSON 1.1 protocol: status 400, `x-amzn-ErrorType`, `{"__type", "message"}`);
    python aws_standin.py UPSTREAM_URL task-times SECONDS
        DescribeTasks answers carry the times ECS reports and moto does not: every task's image
        pull started at a fixed instant, the task started 20 s later and stopped SECONDS after
        the pull started (lastStatus STOPPED).

Prints `listening http://127.0.0.1:PORT` on its first line, then serves until killed.
"""

import http.server
import json
import sys
import threading
import urllib.error
import urllib.request

ECS = "AmazonEC2ContainerServiceV20141113."
UPSTREAM, MODE = sys.argv[1], sys.argv[2]
if MODE == "refuse":
    TARGET, PASSES, MESSAGE = ECS + sys.argv[3], int(sys.argv[4]), sys.argv[5]
elif MODE == "task-times":
    TARGET, SECONDS = ECS + "DescribeTasks", float(sys.argv[3])
    PULL_STARTED = 1_800_000_000.0
else:
    sys.exit(f"unknown mode {MODE!r}")
HOP = {"host", "content-length", "transfer-encoding", "connection"}
lock = threading.Lock()
passed = 0


def read_body(handler):
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        body = b""
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return body
            body += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length", "0")))


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, headers, body):
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def relay(self):
        global passed
        body = read_body(self)
        targeted = self.headers.get("X-Amz-Target") == TARGET
        if targeted and MODE == "refuse":
            with lock:
                refuse = passed >= PASSES
                passed += 1
            if refuse:
                error = json.dumps({"__type": "ClientException", "message": MESSAGE}).encode()
                headers = [
                    ("Content-Type", "application/x-amz-json-1.1"),
                    ("x-amzn-ErrorType", "ClientException"),
                    ("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000"),
                ]
                return self.answer(400, headers, error)
        request = urllib.request.Request(
            UPSTREAM + self.path,
            data=body if body or self.command in ("POST", "PUT") else None,
            method=self.command,
            headers={k: v for k, v in self.headers.items() if k.lower() not in HOP},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = response.read()
                if targeted and MODE == "task-times":
                    document = json.loads(answer)
                    for task in document.get("tasks", []):
                        task["pullStartedAt"] = PULL_STARTED
                        task["startedAt"] = PULL_STARTED + 20
                        task["stoppedAt"] = PULL_STARTED + SECONDS
                        task["lastStatus"] = "STOPPED"
                    answer = json.dumps(document).encode()
                self.answer(response.status, response.getheaders(), answer)
        except urllib.error.HTTPError as err:
            self.answer(err.code, err.headers.items(), err.read())

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = relay


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
print(f"listening http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
