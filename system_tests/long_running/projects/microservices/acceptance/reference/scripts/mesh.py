#!/usr/bin/env python3
"""Reference ServiceMesh for the acceptance suite (not a product): registry, users, orders,
inventory and the gateway as subcommands of one standard-library script, honouring CONTRACT.md,
so the suite can be checked against an implementation that passes it."""

import argparse
import http.client
import itertools
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HEARTBEAT_SECS = 0.5
EXPIRY_SECS = 3.0
FAILURES_TO_OPEN = 3
OPEN_SECS = 2.0
TIMEOUT_SECS = 2.0


def http_json(method, url, body=None, headers=None, timeout=TIMEOUT_SECS):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.counters = {}
        self.gauges = {}
        self.kinds = {}

    def inc(self, name, labels, amount=1):
        with self.lock:
            self.kinds[name] = "counter"
            key = (name, tuple(sorted(labels.items())))
            self.counters[key] = self.counters.get(key, 0) + amount

    def set(self, name, labels, value):
        with self.lock:
            self.kinds[name] = "gauge"
            self.gauges[(name, tuple(sorted(labels.items())))] = value

    def render(self):
        lines = []
        with self.lock:
            for name, kind in sorted(self.kinds.items()):
                lines.append(f"# TYPE {name} {kind}")
                source = self.counters if kind == "counter" else self.gauges
                for (metric, labels), value in sorted(source.items()):
                    if metric != name:
                        continue
                    text = ",".join(f'{k}="{v}"' for k, v in labels)
                    suffix = "_total" if kind == "counter" and not name.endswith("_total") else ""
                    lines.append(f"{name}{suffix}{{{text}}} {value}")
        return ("\n".join(lines) + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    component = None  # set per server

    def log_message(self, *args):
        pass

    def body(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def reply(self, status, payload, headers=None, raw=None, content_type="application/json"):
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        self.component.metrics.inc("http_requests", {"method": self.command})
        if self.path == "/healthz":
            return self.reply(200, {"status": "ok"})
        if self.path == "/metrics":
            return self.reply(200, None, raw=self.component.metrics.render(), content_type="text/plain; version=0.0.4")
        return self.component.route(self)

    do_GET = do_POST = do_PUT = do_DELETE = handle_any


def serve(component, port):
    handler = type("H", (Handler,), {"component": component})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


# -- registry ---------------------------------------------------------------------------------
class Registry:
    def __init__(self):
        self.metrics = Metrics()
        self.lock = threading.Lock()
        self.instances = {}  # id -> dict(service, id, url, pid, seen)

    def live(self):
        now = time.monotonic()
        with self.lock:
            for key in [k for k, v in self.instances.items() if now - v["seen"] > EXPIRY_SECS]:
                del self.instances[key]
            out = {}
            for inst in self.instances.values():
                out.setdefault(inst["service"], []).append({k: inst[k] for k in ("id", "url", "pid")})
        for service in out.values():
            service.sort(key=lambda i: i["id"])
        return out

    def route(self, req):
        body = req.body() or {}
        if req.command == "GET" and req.path == "/services":
            return req.reply(200, self.live())
        if req.command == "POST" and req.path in ("/register", "/heartbeat"):
            with self.lock:
                entry = self.instances.get(body.get("id"))
                if req.path == "/register" or entry is None:
                    if not all(k in body for k in ("service", "id", "url", "pid")):
                        return req.reply(400 if req.path == "/register" else 404, {"error": "unknown instance"})
                    entry = dict(body)
                    self.instances[body["id"]] = entry
                entry["seen"] = time.monotonic()
            return req.reply(200, {"ok": True})
        if req.command == "POST" and req.path == "/deregister":
            with self.lock:
                self.instances.pop(body.get("id"), None)
            return req.reply(200, {"ok": True})
        return req.reply(404, {"error": "not found"})


# -- services ---------------------------------------------------------------------------------
class Service:
    def __init__(self, name, instance_id, registry, data_dir):
        self.name, self.id, self.registry = name, instance_id, registry
        self.metrics = Metrics()
        os.makedirs(data_dir, exist_ok=True)
        self.db_path = os.path.join(data_dir, f"{name}.sqlite")
        with self.db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS stock (item TEXT PRIMARY KEY, stock INTEGER)")
            db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY AUTOINCREMENT, user_id INTEGER, item TEXT, qty INTEGER)")

    def db(self):
        conn = sqlite3.connect(self.db_path, timeout=5, isolation_level=None)
        return conn

    def discover(self, service):
        status, services = http_json("GET", self.registry + "/services")
        for inst in services.get(service, []):
            return inst["url"]
        return None

    def route(self, req):
        rid = req.headers.get("x-request-id") or uuid.uuid4().hex
        headers = {"x-instance-id": self.id, "x-request-id": rid}
        self.metrics.inc("service_requests", {"service": self.name})
        parts = [p for p in req.path.split("?")[0].split("/") if p]
        if not parts or parts[0] != self.name:
            return req.reply(404, {"error": "not found"}, headers)
        status, payload = getattr(self, "handle_" + self.name)(req, parts[1:], rid)
        return req.reply(status, payload, headers)

    def handle_users(self, req, rest, rid):
        conn = self.db()
        try:
            if req.command == "POST" and not rest:
                body = req.body() or {}
                if not isinstance(body.get("name"), str):
                    return 400, {"error": "name is required"}
                cur = conn.execute("INSERT INTO users (name) VALUES (?)", (body["name"],))
                return 201, {"id": cur.lastrowid, "name": body["name"]}
            if req.command == "GET" and len(rest) == 1 and rest[0].isdigit():
                row = conn.execute("SELECT id, name FROM users WHERE id = ?", (int(rest[0]),)).fetchone()
                return (200, {"id": row[0], "name": row[1]}) if row else (404, {"error": "no such user"})
            return 404, {"error": "not found"}
        finally:
            conn.close()

    def handle_inventory(self, req, rest, rid):
        conn = self.db()
        try:
            if len(rest) == 1 and req.command == "PUT":
                body = req.body() or {}
                if not isinstance(body.get("stock"), int) or body["stock"] < 0:
                    return 400, {"error": "stock must be a non-negative integer"}
                conn.execute("INSERT OR REPLACE INTO stock VALUES (?, ?)", (rest[0], body["stock"]))
                return 200, {"item": rest[0], "stock": body["stock"]}
            if len(rest) == 1 and req.command == "GET":
                row = conn.execute("SELECT item, stock FROM stock WHERE item = ?", (rest[0],)).fetchone()
                return (200, {"item": row[0], "stock": row[1]}) if row else (404, {"error": "no such item"})
            if len(rest) == 2 and rest[1] == "reserve" and req.command == "POST":
                qty = (req.body() or {}).get("qty")
                if not isinstance(qty, int) or qty <= 0:
                    return 400, {"error": "qty must be a positive integer"}
                cur = conn.execute("UPDATE stock SET stock = stock - ? WHERE item = ? AND stock >= ?", (qty, rest[0], qty))
                if cur.rowcount != 1:
                    return 409, {"error": "not enough stock"}
                return 200, {"item": rest[0], "reserved": qty}
            return 404, {"error": "not found"}
        finally:
            conn.close()

    def handle_orders(self, req, rest, rid):
        conn = self.db()
        try:
            if req.command == "POST" and not rest:
                body = req.body() or {}
                user_id, item, qty = body.get("user_id"), body.get("item"), body.get("qty")
                if not isinstance(user_id, int) or not isinstance(item, str) or not isinstance(qty, int) or qty <= 0:
                    return 400, {"error": "user_id, item and qty are required"}
                users = self.discover("users")
                inventory = self.discover("inventory")
                if users is None or inventory is None:
                    return 503, {"error": "users or inventory unavailable"}
                status, _ = http_json("GET", f"{users}/users/{user_id}", headers={"x-request-id": rid})
                if status == 404:
                    return 422, {"error": "unknown user"}
                if status != 200:
                    return 503, {"error": "users failed"}
                status, _ = http_json("POST", f"{inventory}/inventory/{item}/reserve", {"qty": qty}, headers={"x-request-id": rid})
                if status in (404, 409):
                    return 409, {"error": "not enough stock"}
                if status != 200:
                    return 503, {"error": "inventory failed"}
                cur = conn.execute("INSERT INTO orders (user_id, item, qty) VALUES (?, ?, ?)", (user_id, item, qty))
                return 201, {"id": cur.lastrowid, "user_id": user_id, "item": item, "qty": qty}
            if req.command == "GET" and len(rest) == 1 and rest[0].isdigit():
                row = conn.execute("SELECT id, user_id, item, qty FROM orders WHERE id = ?", (int(rest[0]),)).fetchone()
                if not row:
                    return 404, {"error": "no such order"}
                return 200, dict(zip(("id", "user_id", "item", "qty"), row))
            return 404, {"error": "not found"}
        finally:
            conn.close()


# -- gateway ----------------------------------------------------------------------------------
class Breaker:
    def __init__(self):
        self.state, self.failures, self.opened_at, self.trial = "closed", 0, 0.0, False


class Gateway:
    SERVICES = ("users", "orders", "inventory")
    STATES = {"closed": 0, "open": 1, "half_open": 2}

    def __init__(self, registry):
        self.registry = registry
        self.metrics = Metrics()
        self.lock = threading.Lock()
        self.breakers = {}
        self.turn = itertools.count()

    def instances(self):
        try:
            status, services = http_json("GET", self.registry + "/services", timeout=1.0)
            return services if status == 200 else {}
        except OSError:
            return {}

    def set_state(self, service, inst_id, breaker, state):
        if breaker.state != state:
            breaker.state = state
            self.metrics.inc("gateway_circuit_transitions", {"service": service, "instance": inst_id, "to": state})
        self.metrics.set("gateway_circuit_state", {"service": service, "instance": inst_id}, self.STATES[state])

    def admit(self, service, inst_id):
        with self.lock:
            breaker = self.breakers.setdefault(inst_id, Breaker())
            if breaker.state == "open" and time.monotonic() - breaker.opened_at >= OPEN_SECS:
                self.set_state(service, inst_id, breaker, "half_open")
                breaker.trial = False
            if breaker.state == "closed":
                self.metrics.set("gateway_circuit_state", {"service": service, "instance": inst_id}, 0)
                return True
            if breaker.state == "half_open" and not breaker.trial:
                breaker.trial = True
                return True
            return False

    def record(self, service, inst_id, ok):
        with self.lock:
            breaker = self.breakers.setdefault(inst_id, Breaker())
            if ok:
                breaker.failures = 0
                self.set_state(service, inst_id, breaker, "closed")
            else:
                breaker.failures += 1
                if breaker.state == "half_open" or breaker.failures >= FAILURES_TO_OPEN:
                    breaker.opened_at = time.monotonic()
                    breaker.trial = False
                    self.set_state(service, inst_id, breaker, "open")

    def route(self, req):
        if req.path == "/healthz/all":
            return self.health_all(req)
        service = req.path.split("?")[0].split("/")[1] if req.path.count("/") else ""
        if service not in self.SERVICES:
            return req.reply(404, {"error": "no route"})
        rid = req.headers.get("x-request-id") or uuid.uuid4().hex
        body = req.rfile.read(int(req.headers.get("content-length") or 0))
        candidates = self.instances().get(service, [])
        idempotent = req.command in ("GET", "PUT", "DELETE")
        start = next(self.turn)
        ordered = [candidates[(start + i) % len(candidates)] for i in range(len(candidates))] if candidates else []
        last = (503, {"error": f"no healthy {service} instance"}, {})
        tried = 0
        for inst in ordered:
            if not self.admit(service, inst["id"]):
                continue
            tried += 1
            try:
                conn = http.client.HTTPConnection(inst["url"].split("//")[1], timeout=TIMEOUT_SECS)
                conn.request(req.command, req.path, body=body or None,
                             headers={"content-type": "application/json", "x-request-id": rid})
                response = conn.getresponse()
                data = response.read()
                headers = {k: v for k, v in response.getheaders() if k.lower() in ("x-instance-id",)}
                conn.close()
                ok = response.status < 500
                self.record(service, inst["id"], ok)
                last = (response.status, None, headers, data)
                if ok or not idempotent:
                    break
            except OSError:
                self.record(service, inst["id"], False)
                last = (502, {"error": f"{service} instance {inst['id']} unreachable"}, {})
                if not idempotent:
                    break
        status = last[0]
        self.metrics.inc("gateway_requests", {"service": service, "code": str(status)})
        headers = dict(last[2])
        headers["x-request-id"] = rid
        if len(last) == 4:
            return req.reply(status, None, headers, raw=last[3])
        return req.reply(status, last[1], headers)

    def health_all(self, req):
        result = {"gateway": "ok"}
        try:
            status, services = http_json("GET", self.registry + "/services", timeout=1.0)
            result["registry"] = "ok" if status == 200 else "down"
        except OSError:
            services, result["registry"] = {}, "down"
        for service in self.SERVICES:
            healthy = False
            for inst in services.get(service, []):
                try:
                    if http_json("GET", inst["url"] + "/healthz", timeout=1.0)[0] == 200:
                        healthy = True
                        break
                except OSError:
                    continue
            result[service] = "ok" if healthy else "down"
        return req.reply(200 if all(v == "ok" for v in result.values()) else 503, result)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("component", choices=["registry", "gateway", "users", "orders", "inventory"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--registry", default="")
    parser.add_argument("--id", default="")
    parser.add_argument("--data-dir", default="./data")
    args = parser.parse_args()
    stop = threading.Event()
    if args.component == "registry":
        component = Registry()
    elif args.component == "gateway":
        component = Gateway(args.registry)
    else:
        component = Service(args.component, args.id, args.registry, args.data_dir)
    server = serve(component, args.port)
    # The handler only flips a flag: taking a lock in a handler (Event.set) can deadlock with the
    # main thread when a second signal arrives while it holds that lock.
    signalled = []
    signal.signal(signal.SIGTERM, lambda *_: signalled.append(True))
    signal.signal(signal.SIGINT, lambda *_: signalled.append(True))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    if isinstance(component, Service):
        me = {"service": args.component, "id": args.id, "url": f"http://127.0.0.1:{args.port}", "pid": os.getpid()}
        http_json("POST", args.registry + "/register", me)

        def heartbeat():
            while not stop.wait(HEARTBEAT_SECS):
                try:
                    http_json("POST", args.registry + "/heartbeat", me, timeout=1.0)
                except OSError:
                    pass

        threading.Thread(target=heartbeat, daemon=True).start()
    while not signalled:
        time.sleep(0.1)
    stop.set()
    if isinstance(component, Service):
        try:
            http_json("POST", args.registry + "/deregister", {"id": args.id}, timeout=1.0)
        except OSError:
            pass
        time.sleep(0.3)  # requests routed before the deregistration finish
    server.shutdown()


if __name__ == "__main__":
    main()
