"""Drives a running gateway with the official `anthropic` Python SDK, only the base URL
changed: Messages as JSON and as a stream, tools both ways, count_tokens, structured output
(`output_config`), extended thinking and server tools (only an Anthropic model takes them), the
models list (paged as Anthropic's Models API pages it), and errors in Anthropic's shapes. The
gateway key goes in `x-api-key`, as the SDK sends it.

usage: check_anthropic_sdk.py BASE_URL KEY MODE
  MODE cloud: the gateway's `cloud` model is a fake OpenAI upstream; `tool` routes to one that
              calls get_weather (tag header), `local` names the on-box model
  MODE native: as cloud, but `auto` goes to a fake Anthropic upstream (`kind: anthropic`) that
              answers as `claude-sonnet-test`, passed through as it came
  MODE local: `local` is a real on-box GGUF model
"""
import json
import sys
import urllib.request

import anthropic
from anthropic import Anthropic

base, key, mode = sys.argv[1], sys.argv[2], sys.argv[3]
client = Anthropic(base_url=base, api_key=key, max_retries=0, timeout=60)
model = "local" if mode == "local" else "auto"
messages = [{"role": "user", "content": "What is the capital of Italy?"}]

raw = client.messages.with_raw_response.create(
    model=model, max_tokens=16, temperature=0,
    system=[{"type": "text", "text": "You are concise.", "cache_control": {"type": "ephemeral"}}],
    messages=messages,
)
msg = raw.parse()
assert msg.type == "message" and msg.role == "assistant", msg
assert msg.model == ("claude-sonnet-test" if mode == "native" else model), msg.model
text = "".join(b.text for b in msg.content if b.type == "text")
assert text.strip(), msg
assert msg.stop_reason in ("end_turn", "max_tokens"), msg.stop_reason
assert msg.usage.input_tokens > 0 and 0 < msg.usage.output_tokens <= 16, msg.usage
route = raw.headers["x-switchyard-route"]
assert route == ("local" if mode == "local" else "cloud"), dict(raw.headers)

started, pieces = None, []
with client.messages.stream(model=model, max_tokens=16, temperature=0, messages=messages) as stream:
    for event in stream:
        if event.type == "message_start":
            started = event.message.usage.input_tokens
        elif event.type == "text":
            pieces.append(event.text)
    final = stream.get_final_message()
streamed = "".join(pieces)
assert streamed.strip(), streamed
assert "".join(b.text for b in final.content if b.type == "text") == streamed
assert final.usage.output_tokens > 0, final.usage
# message_start says the prompt's size before any token (the on-box model's own count, else the
# gateway's estimate when the stream is translated); the final message has the exact count of
# message_delta.
assert started is not None and started > 0, started
assert final.usage.input_tokens > 0, final.usage
if mode == "local":
    assert started == final.usage.input_tokens, (started, final.usage)
assert final.stop_reason in ("end_turn", "max_tokens"), final.stop_reason

if mode == "local":
    # A stop sequence the answer reaches: the on-box engine says which one, as Anthropic does.
    ask = [{"role": "user", "content": "Describe the sea in one sentence."}]
    msg = client.messages.create(model=model, max_tokens=64, temperature=0,
                                 stop_sequences=["zq", "e"], messages=ask)
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "e", msg
    assert "e" not in "".join(b.text for b in msg.content if b.type == "text"), msg
    with client.messages.stream(model=model, max_tokens=64, temperature=0,
                                stop_sequences=["zq", "e"], messages=ask) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "stop_sequence" and final.stop_sequence == "e", final

if mode == "local":
    # Structured output (`output_config.format`): the on-box model decodes under the schema, so
    # the answer parses and has the schema's members; top-level automatic caching is accepted.
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    msg = client.messages.create(
        model=model, max_tokens=64, temperature=0, messages=messages,
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
        extra_body={"cache_control": {"type": "ephemeral"}},
    )
    answer = json.loads("".join(b.text for b in msg.content if b.type == "text"))
    assert set(answer) == {"city", "population"}, answer
    assert isinstance(answer["city"], str) and isinstance(answer["population"], int), answer

count = client.messages.count_tokens(model=model, messages=messages)
assert count.input_tokens > 0, count
# An Anthropic model's count is the provider's own (the fake upstream's counts 4321).
assert (mode == "native") == (count.input_tokens == 4321), (mode, count)

# Extended thinking and a server tool: only an Anthropic model can take them. In native mode
# `auto` is one and gets the request as it came; elsewhere the gateway names the field that no
# model of the route can serve.
for extra in ({"thinking": {"type": "enabled", "budget_tokens": 1024}},
              {"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}]}):
    try:
        msg = client.messages.create(model=model, max_tokens=2048, messages=messages, **extra)
        assert mode == "native" and msg.model == "claude-sonnet-test", ("answered by a model that cannot", msg)
    except anthropic.BadRequestError as e:
        assert mode != "native" and e.body["error"]["type"] == "invalid_request_error", e.body
        field = "thinking" if "thinking" in extra else "tools[0]"
        assert f"needs `messages` (set by `{field}`)" in e.body["error"]["message"], e.body

try:
    client.messages.create(model="no-such-model", max_tokens=8, messages=messages)
    raise AssertionError("an unknown model was answered")
except anthropic.NotFoundError as e:
    assert e.body["type"] == "error" and e.body["error"]["type"] == "not_found_error", e.body

if mode in ("cloud", "native"):
    tools = [{"name": "get_weather", "description": "Weather of a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    tagged = {"x-switchyard-tags": "tool"}
    msg = client.messages.create(model="auto", max_tokens=64, tools=tools, messages=ask, extra_headers=tagged)
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert msg.stop_reason == "tool_use" and uses and uses[0].name == "get_weather", msg
    assert uses[0].input == {"city": "Paris"}, uses[0].input
    with client.messages.stream(model="auto", max_tokens=64, tools=tools, messages=ask, extra_headers=tagged) as stream:
        final = stream.get_final_message()
    uses = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and uses[0].input == {"city": "Paris"}, final
    # The tool's result goes back as the next user turn.
    follow = ask + [{"role": "assistant", "content": msg.content},
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "18 C, sunny"}]}]
    answer = client.messages.create(model="auto", max_tokens=64, tools=tools, messages=follow)
    assert answer.content and answer.content[0].type == "text", answer
    try:
        Anthropic(base_url=base, api_key="wrong-key", max_retries=0).messages.create(
            model="auto", max_tokens=8, messages=messages)
        raise AssertionError("a wrong key was let in")
    except anthropic.AuthenticationError as e:
        assert e.body["error"]["type"] == "authentication_error", e.body
# The models list, one model a page: the SDK follows `has_more` and `last_id` through every
# page, and gets the models OpenAI's shape lists on the same path, in the same order.
first = client.models.list(limit=1)
assert len(first.data) == 1 and first.has_more and first.data[0].type == "model", first
paged = [m.id for m in client.models.list(limit=1)]
plain = urllib.request.Request(base + "/v1/models", headers={"authorization": f"Bearer {key}"})
with urllib.request.urlopen(plain) as r:
    listed = [m["id"] for m in json.load(r)["data"]]
assert paged == listed and paged[0] == "auto", (paged, listed)
assert client.models.retrieve(paged[-1]).id == paged[-1]
try:
    client.models.retrieve("no-such-model")
    raise AssertionError("an unknown model was found")
except anthropic.NotFoundError as e:
    assert e.body["error"]["type"] == "not_found_error", e.body
print("ok")
