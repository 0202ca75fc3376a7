"""Probe agent for the proxy tests: makes the model calls listed in $PROBE_PLAN through
megatest's endpoint (concurrently, one thread per call) and writes what it saw to
probe-<agent>-<task>.json in the workspace.

PROBE_PLAN is a JSON list of {"api": "chat"|"responses"|"messages", "stream": bool,
"usage": bool, "model": str, "max_tokens": int, "repeat": int, "until_402": bool}."""

import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

BASE = os.environ["OPENAI_BASE_URL"]
ROOT = os.environ["ANTHROPIC_BASE_URL"]
KEY = os.environ["OPENAI_API_KEY"]
PLAN = json.loads(os.environ["PROBE_PLAN"])
results = []
lock = threading.Lock()


def request(spec):
    api = spec["api"]
    body = {"model": spec.get("model", "gpt-fake")}
    headers = {"Content-Type": "application/json"}
    if api == "chat":
        url = BASE + "/chat/completions"
        body["messages"] = [{"role": "user", "content": spec.get("content", "hello")}]
        body["tools"] = [{"type": "function", "function": {"name": "finish", "parameters": {"type": "object"}}}]
        body["user"] = "probe-%s" % uuid.uuid4()
        if "max_tokens" in spec:
            body["max_tokens"] = spec["max_tokens"]
        headers["Authorization"] = "Bearer " + KEY
    elif api == "responses":
        url = BASE + "/responses"
        body["input"] = [{"role": "user", "content": "hello"}]
        body["tools"] = [{"type": "function", "name": "shell", "parameters": {"type": "object"}}]
        headers["Authorization"] = "Bearer " + KEY
    else:
        url = ROOT + "/v1/messages"
        body["messages"] = [{"role": "user", "content": "hello"}]
        body["max_tokens"] = spec.get("max_tokens", 256)
        body["tools"] = [{"name": "bash", "input_schema": {"type": "object"}}]
        headers["x-api-key"] = KEY
        headers["anthropic-version"] = "2023-06-01"
    if spec.get("stream"):
        body["stream"] = True
        if api == "chat" and spec.get("usage"):
            body["stream_options"] = {"include_usage": True}
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=60)
        status, raw, resp_headers = resp.status, resp.read().decode(), resp.headers
    except urllib.error.HTTPError as err:
        status, raw, resp_headers = err.code, err.read().decode(), err.headers
    record = {"api": api, "stream": bool(spec.get("stream")), "usage": bool(spec.get("usage")),
              "model": body["model"], "status": status,
              "overhead": resp_headers.get("x-megatest-overhead-ms") is not None}
    if status == 200 and spec.get("stream"):
        data = [line[len("data: "):] for line in raw.splitlines() if line.startswith("data: ")]
        parsed = [json.loads(d) for d in data if d != "[DONE]"]
        record["usage_chunks"] = sum(1 for c in parsed if c.get("usage") and c.get("choices") == [])
        record["done"] = data[-1] == "[DONE]" if api == "chat" else parsed[-1].get("type") in ("message_stop", "response.completed")
    return record


def report(spec):
    """Report tool calls the way agents without native tool calls do."""
    lines = "".join(json.dumps({"type": "tool_call", "name": n}) + "\n" for n in spec["names"])
    if spec["via"] == "file":
        with open(os.environ["MEGATEST_EVENTS_FILE"], "a") as out:
            out.write(lines)
        return {"api": "events", "status": 200, "overhead": True}
    req = urllib.request.Request(os.environ["MEGATEST_EVENTS_URL"], data=lines.encode(),
                                 headers={"Authorization": "Bearer " + KEY})
    resp = urllib.request.urlopen(req, timeout=30)
    return {"api": "events", "status": resp.status, "overhead": True, "accepted": json.load(resp)["accepted"]}


def run(spec):
    if spec["api"] == "events":
        record = report(spec)
        with lock:
            results.append(record)
        return
    if spec.get("until_402"):
        for _ in range(200):
            record = request(spec)
            with lock:
                results.append(record)
            if record["status"] == 402:
                return
            if record["status"] == 429:
                time.sleep(0.02)
        return
    record = request(spec)
    with lock:
        results.append(record)


threads = [threading.Thread(target=run, args=(spec,)) for spec in PLAN for _ in range(spec.get("repeat", 1))]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
name = "probe-%s-%s.json" % (os.environ["MEGATEST_AGENT_ID"], os.environ["MEGATEST_TASK_ID"])
with open(name, "w") as out:
    json.dump(results, out)
