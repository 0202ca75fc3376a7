"""Agent using the official SDKs, unchanged, against megatest's endpoint. SDK_MODE selects
openai (chat, chat streamed with and without usage, responses, responses streamed, models) or
anthropic (messages, messages streamed). Writes the usage each SDK parsed to
sdk-<agent>-<task>.json."""

import json
import os
import traceback

MODE = os.environ["SDK_MODE"]
out = []


def openai_calls():
    from openai import OpenAI

    client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"], max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    tools = [{"type": "function", "function": {"name": "finish", "parameters": {"type": "object", "properties": {}}}}]
    r = client.chat.completions.create(model="gpt-fake", messages=messages, tools=tools)
    out.append({"kind": "chat", "prompt": r.usage.prompt_tokens, "completion": r.usage.completion_tokens,
                "tools": [t.function.name for t in r.choices[0].message.tool_calls]})
    usage, names = None, []
    for chunk in client.chat.completions.create(model="gpt-fake", messages=messages, tools=tools, stream=True,
                                                stream_options={"include_usage": True}):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function and call.function.name:
                    names.append(call.function.name)
    out.append({"kind": "chat-stream", "prompt": usage.prompt_tokens, "completion": usage.completion_tokens, "tools": names})
    chunks = list(client.chat.completions.create(model="gpt-fake", messages=messages, stream=True))
    out.append({"kind": "chat-stream-no-usage", "usage_chunks": sum(1 for c in chunks if c.usage), "chunks": len(chunks)})
    rtools = [{"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {}}}]
    r = client.responses.create(model="gpt-fake", input="hello", tools=rtools)
    out.append({"kind": "responses", "prompt": r.usage.input_tokens, "completion": r.usage.output_tokens,
                "tools": [item.name for item in r.output if item.type == "function_call"]})
    final = None
    for event in client.responses.create(model="gpt-fake", input="hello", tools=rtools, stream=True):
        if event.type == "response.completed":
            final = event.response
    out.append({"kind": "responses-stream", "prompt": final.usage.input_tokens, "completion": final.usage.output_tokens,
                "tools": [item.name for item in final.output if item.type == "function_call"]})
    out.append({"kind": "models", "ids": [m.id for m in client.models.list()]})


def anthropic_calls():
    import anthropic

    client = anthropic.Anthropic(base_url=os.environ["ANTHROPIC_BASE_URL"], api_key=os.environ["ANTHROPIC_API_KEY"], max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    tools = [{"name": "bash", "input_schema": {"type": "object", "properties": {}}}]
    r = client.messages.create(model="gpt-fake", max_tokens=100, messages=messages, tools=tools)
    prompt = r.usage.input_tokens + (r.usage.cache_read_input_tokens or 0) + (r.usage.cache_creation_input_tokens or 0)
    out.append({"kind": "messages", "prompt": prompt, "completion": r.usage.output_tokens,
                "tools": [b.name for b in r.content if b.type == "tool_use"]})
    with client.messages.stream(model="gpt-fake", max_tokens=100, messages=messages, tools=tools) as stream:
        final = stream.get_final_message()
    prompt = final.usage.input_tokens + (final.usage.cache_read_input_tokens or 0) + (final.usage.cache_creation_input_tokens or 0)
    out.append({"kind": "messages-stream", "prompt": prompt, "completion": final.usage.output_tokens,
                "tools": [b.name for b in final.content if b.type == "tool_use"]})


try:
    openai_calls() if MODE == "openai" else anthropic_calls()
except Exception:
    out.append({"kind": "error", "trace": traceback.format_exc()})
name = "sdk-%s-%s.json" % (os.environ["MEGATEST_AGENT_ID"], os.environ["MEGATEST_TASK_ID"])
with open(name, "w") as handle:
    json.dump(out, handle)
