"""A stand-in model provider that drives real agent CLIs through a megatest task.

    python3 provider.py --key KEY [--log DIR]

prints `listening http://127.0.0.1:PORT` and serves OpenAI chat completions
(`/v1/chat/completions`), the OpenAI Responses API (`/v1/responses`) and Anthropic Messages
(`/v1/messages`), JSON or SSE, plus `GET /stats` (the usage it sent, summed, and what it saw).

Every answer is decided from the request alone (no state per conversation): the task id comes
from megatest's prompt header (`… phase — task <id>`), the step from the number of tool results
already in the conversation. Step 0 runs one shell command through whatever tool the agent
declared (`bash`, `shell`, `exec_command`, `Bash`, …) or, for an agent without tools (aider), a
whole-file edit; the command writes `done-<task>.txt` and `key-seen-<task>.txt` (how many
environment variables hold the provider key: must be 0). Codex also gets an `apply_patch`
freeform (custom) tool call. Then the agent is told to finish in its own way.

Usage per answer: prompt = 100 + 10 × step, completion = 20 + step; it requires the provider key
(counted in `stats.bad_key` otherwise, and answered 401).
"""

import argparse
import json
import os
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TASK = re.compile(r"phase \u2014 task (\S+)")
LOCK = threading.Lock()
STATS = {
    "calls": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "bad_key": 0,
    "by_api": {},
    "tool_calls": 0,
    "tasks": [],
}


def strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def task_of(body):
    for text in strings(body.get("messages", body.get("input", []))):
        match = TASK.search(text)
        if match:
            return match.group(1)
    for text in strings(body.get("system", "")):
        match = TASK.search(text)
        if match:
            return match.group(1)
    return None


def shell_command(task, key):
    return (
        f"echo {task} > done-{task}.txt; "
        f"env | grep -c -- '{key}' > key-seen-{task}.txt; true"
    )


def tool_names(body):
    names = []
    for tool in body.get("tools") or []:
        if "function" in tool and isinstance(tool["function"], dict):
            names.append(tool["function"].get("name"))
        else:
            names.append(tool.get("name"))
    return [n for n in names if n]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    key = ""
    log_dir = None

    def log_message(self, *args):
        pass

    def send_json(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_sse(self, events):
        text = "".join(
            (f"event: {name}\n" if name else "") + f"data: {json.dumps(data) if not isinstance(data, str) else data}\n\n"
            for name, data in events
        )
        data = text.encode()
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.startswith("/stats"):
            with LOCK:
                self.send_json(200, STATS)
        elif self.path.startswith("/v1/models"):
            self.send_json(200, {"object": "list", "data": []})
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self.send_json(400, {"error": {"message": "not json"}})
            return
        given = self.headers.get("x-api-key") or (self.headers.get("authorization") or "").removeprefix("Bearer ")
        path = self.path.split("?")[0]
        if given != self.key:
            with LOCK:
                STATS["bad_key"] += 1
            self.send_json(401, {"error": {"message": "bad key"}})
            return
        if self.log_dir:
            with LOCK:
                n = STATS["calls"]
            with open(os.path.join(self.log_dir, f"{n:03}-{path.strip('/').replace('/', '_')}.json"), "w") as f:
                json.dump({"headers": dict(self.headers), "body": body}, f, indent=1)
        if path == "/v1/messages/count_tokens":
            self.send_json(200, {"input_tokens": 10})
            return
        api = {"/v1/chat/completions": "chat", "/v1/responses": "responses", "/v1/messages": "messages"}.get(path)
        if api is None:
            self.send_json(404, {"error": {"message": f"no route {path}"}})
            return
        task = task_of(body)
        model = body.get("model", "m")
        if api == "chat":
            step = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
            if not tool_names(body) and step == 0:
                # aider (no tools): as many assistant turns as already answered.
                step = sum(1 for m in body.get("messages", []) if m.get("role") == "assistant" and task and task in json.dumps(m))
        elif api == "responses":
            step = sum(
                1
                for item in body.get("input", [])
                if isinstance(item, dict) and item.get("type") in ("function_call_output", "custom_tool_call_output")
            )
        else:
            step = sum(
                1
                for m in body.get("messages", [])
                if isinstance(m.get("content"), list) and any(b.get("type") == "tool_result" for b in m["content"])
            )
        prompt, completion = 100 + 10 * step, 20 + step
        actions = self.plan(api, body, task, step)
        with LOCK:
            STATS["calls"] += 1
            STATS["prompt_tokens"] += prompt
            STATS["completion_tokens"] += completion
            STATS["by_api"][api] = STATS["by_api"].get(api, 0) + 1
            STATS["tool_calls"] += sum(1 for a in actions if a[0] in ("tool", "custom"))
            if task and task not in STATS["tasks"]:
                STATS["tasks"].append(task)
        stream = bool(body.get("stream"))
        getattr(self, f"answer_{api}")(body, model, actions, prompt, completion, stream)

    def plan(self, api, body, task, step):
        """The answer as actions: ("text", str), ("tool", name, arguments dict), ("custom", name, input str)."""
        if task is None:
            return [("text", "OK")]
        names = tool_names(body)
        command = shell_command(task, self.key)
        if api == "chat":
            if not names:
                if step == 0:
                    return [("text", f"done-{task}.txt\n```\n{task}\n```\n")]
                return [("text", "Done.")]
            if "bash" in names:  # mini-swe-agent
                if step == 0:
                    return [("tool", "bash", {"command": command})]
                return [("tool", "bash", {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"})]
            shell = next((n for n in ("shell_exec", "shell", "bash_exec", "run_command") if n in names), None)
            # Selfware runs a mutating call only beside a `FILES:` line naming what it changes,
            # accepts completion only after a few steps (min_completion_steps = 3) and after a
            # verification run it recognises (a test or compile command) since the last edit.
            if step == 0 and "file_write" in names:
                return [("text", f"FILES: done-{task}.txt"), ("tool", "file_write", {"path": f"done-{task}.txt", "content": f"{task}\n"})]
            if step == 0 and shell:
                return [("text", f"FILES: done-{task}.txt key-seen-{task}.txt"), ("tool", shell, {"command": command})]
            if step == 1 and shell:
                key_check = f"env | grep -c -- '{self.key}' > key-seen-{task}.txt; true"
                return [("text", f"FILES: key-seen-{task}.txt"), ("tool", shell, {"command": key_check})]
            if step == 2 and shell:
                return [("tool", shell, {"command": f"python3 -m py_compile done-{task}.txt"})]
            return [("text", "The task is done.")]
        if api == "responses":
            if step == 0 and "apply_patch" in names:
                patch = f"*** Begin Patch\n*** Add File: patched-{task}.txt\n+{task}\n*** End Patch\n"
                return [("custom", "apply_patch", patch)]
            shell = next((n for n in ("shell", "shell_command", "exec_command", "local_shell") if n in names), None)
            if step <= 1 and shell:
                if shell == "shell":
                    args = {"command": ["bash", "-lc", command]}
                elif shell == "exec_command":
                    args = {"cmd": command}
                else:
                    args = {"command": command}
                if step == 1 or "apply_patch" not in names:
                    return [("tool", shell, args)]
            return [("text", "The task is done.")]
        # Anthropic Messages (Claude Code)
        if step == 0 and "Bash" in names:
            return [("tool", "Bash", {"command": command, "description": "Mark the task done"})]
        return [("text", "The task is done.")]

    def answer_chat(self, body, model, actions, prompt, completion, stream):
        n = STATS["calls"]
        message = {"role": "assistant", "content": None}
        calls = []
        for i, action in enumerate(actions):
            if action[0] == "text":
                message["content"] = action[1]
            else:
                calls.append({"id": f"call_{n}_{i}", "type": "function", "function": {"name": action[1], "arguments": json.dumps(action[2])}})
        if calls:
            message["tool_calls"] = calls
        finish = "tool_calls" if calls else "stop"
        usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        if not stream:
            self.send_json(200, {"id": f"chatcmpl-{n}", "object": "chat.completion", "created": 0, "model": model,
                                 "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage})
            return

        def chunk(delta, finish_reason=None):
            return (None, {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 0, "model": model,
                           "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})

        events = [chunk({"role": "assistant", "content": ""})]
        if message["content"]:
            events.append(chunk({"content": message["content"]}))
        for i, call in enumerate(calls):
            events.append(chunk({"tool_calls": [dict(call, index=i)]}))
        events.append(chunk({}, finish))
        events.append((None, {"id": f"chatcmpl-{n}", "object": "chat.completion.chunk", "created": 0, "model": model,
                              "choices": [], "usage": usage}))
        events.append((None, "[DONE]"))
        self.send_sse(events)

    def answer_responses(self, body, model, actions, prompt, completion, stream):
        n = STATS["calls"]
        output = []
        for i, action in enumerate(actions):
            if action[0] == "text":
                output.append({"type": "message", "id": f"msg_{n}_{i}", "status": "completed", "role": "assistant",
                               "content": [{"type": "output_text", "text": action[1], "annotations": []}]})
            elif action[0] == "tool":
                output.append({"type": "function_call", "id": f"fc_{n}_{i}", "call_id": f"call_{n}_{i}", "status": "completed",
                               "name": action[1], "arguments": json.dumps(action[2])})
            else:
                output.append({"type": "custom_tool_call", "id": f"ctc_{n}_{i}", "call_id": f"call_{n}_{i}", "status": "completed",
                               "name": action[1], "input": action[2]})
        usage = {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": completion,
                 "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + completion}
        response = {"id": f"resp_{n}", "object": "response", "created_at": 0, "model": model, "status": "completed",
                    "output": output, "usage": usage}
        if not stream:
            self.send_json(200, response)
            return
        events = [("response.created", {"type": "response.created", "sequence_number": 0,
                                        "response": dict(response, status="in_progress", output=[], usage=None)})]
        for i, item in enumerate(output):
            events.append(("response.output_item.added", {"type": "response.output_item.added", "output_index": i, "item": item}))
            if item["type"] == "message":
                text = item["content"][0]["text"]
                events.append(("response.output_text.delta", {"type": "response.output_text.delta", "item_id": item["id"],
                                                               "output_index": i, "content_index": 0, "delta": text}))
            events.append(("response.output_item.done", {"type": "response.output_item.done", "output_index": i, "item": item}))
        events.append(("response.completed", {"type": "response.completed", "response": response}))
        self.send_sse(events)

    def answer_messages(self, body, model, actions, prompt, completion, stream):
        n = STATS["calls"]
        content = []
        for i, action in enumerate(actions):
            if action[0] == "text":
                content.append({"type": "text", "text": action[1]})
            else:
                content.append({"type": "tool_use", "id": f"toolu_{n}_{i}", "name": action[1], "input": action[2]})
        stop = "tool_use" if any(b["type"] == "tool_use" for b in content) else "end_turn"
        usage = {"input_tokens": prompt, "output_tokens": completion, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        message = {"id": f"msg_{n}", "type": "message", "role": "assistant", "model": model, "content": content,
                   "stop_reason": stop, "stop_sequence": None, "usage": usage}
        if not stream:
            self.send_json(200, message)
            return
        events = [("message_start", {"type": "message_start", "message": dict(message, content=[], stop_reason=None,
                                                                               usage=dict(usage, output_tokens=1))})]
        for i, block in enumerate(content):
            if block["type"] == "text":
                events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": block["text"]}}))
            else:
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": dict(block, input={})}))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        events.append(("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                         "usage": {"output_tokens": completion}}))
        events.append(("message_stop", {"type": "message_stop"}))
        self.send_sse(events)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--log")
    args = parser.parse_args()
    Handler.key = args.key
    Handler.log_dir = args.log
    if args.log:
        os.makedirs(args.log, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"listening http://127.0.0.1:{server.server_address[1]}", flush=True)
    sys.stdout.close()
    server.serve_forever()


if __name__ == "__main__":
    main()
